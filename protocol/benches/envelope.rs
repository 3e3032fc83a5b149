//! Costs of the envelope's operations on a 20 KB payload: sign, parse,
//! verify (fresh signatures each time; sequoia caches verified ones).
//! Run with `cargo bench -p penguindome-protocol`.

use std::time::{Duration, Instant};

use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::Message;
use penguindome_protocol::{Envelope, Freshness, SecretKey};
use serde_json::{Value, json};

/// A report-sized body.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
struct Body(Value);

impl Message for Body {
    const KIND: &'static str = "bench";
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let key = SecretKey::generate("bench").unwrap();
    let public = key.public();
    let packages: Vec<Value> = (0..200)
        .map(|i| json!({"name": format!("package-{i:04}"), "installed": "1.2.3-1", "candidate": "1.2.4-1"}))
        .collect();
    let body = Body(json!({"plugins": {"os_updates": {"pending": packages}}}));
    let n = 2000;

    let mut sign = Vec::new();
    let mut envelopes = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let e = Envelope::seal_at(&key, "client", chrono::Utc::now(), new_nonce(), None, &body)
            .unwrap();
        sign.push(t.elapsed());
        envelopes.push(e);
    }
    let size = envelopes[0].payload().len();

    let mut raw_sign = Vec::new();
    let payload = envelopes[0].payload().to_vec();
    for _ in 0..n {
        let t = Instant::now();
        let _ = key.sign(&payload).unwrap();
        raw_sign.push(t.elapsed());
    }

    let mut parse = Vec::new();
    let mut verify = Vec::new();
    let mut open = Vec::new();
    let fresh = Freshness::now(Duration::from_secs(900));
    for e in &envelopes {
        let header = e.signature_header();
        let t = Instant::now();
        let w = Envelope::from_wire(e.payload().to_vec(), Some(header.as_bytes())).unwrap();
        parse.push(t.elapsed());
        let t = Instant::now();
        w.verify(&public).unwrap();
        verify.push(t.elapsed());
        let w = Envelope::from_wire(e.payload().to_vec(), Some(header.as_bytes())).unwrap();
        let t = Instant::now();
        let _: penguindome_protocol::Signed<Body> = w.open(&public, "client", &fresh).unwrap();
        open.push(t.elapsed());
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("payload {size} bytes, {n} iterations, median µs:");
    println!("  seal (serialize + sign)         {:8.1}", us(median(sign)));
    println!(
        "  sign only                       {:8.1}",
        us(median(raw_sign))
    );
    println!(
        "  parse signature header          {:8.1}",
        us(median(parse))
    );
    println!(
        "  verify (fresh signature)        {:8.1}",
        us(median(verify))
    );
    println!(
        "  open (verify, parse JSON, check) {:7.1}  (second verification of the same signature is cached)",
        us(median(open))
    );
}
