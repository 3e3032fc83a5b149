//! Costs of sealed fields: what the agent adds to a collection per sealed
//! value (seal: encrypt to the site's key plus the keyed digest) and what
//! `secrets access` pays per value it opens.
//! Run with `cargo bench -p penguindome-protocol --bench sealing`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use penguindome_protocol::sealing::{
    DigestKey, Opener, Recipient, Sealed, Selector, generate_key, public_armored, seal_plugins,
};
use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let tsk = generate_key("bench").unwrap();
    let (public, _) = public_armored(&tsk).unwrap();
    let recipient = Recipient::from_bytes(public.as_bytes()).unwrap();
    let opener = Opener::from_bytes(&tsk).unwrap();
    let digests = DigestKey([7; 32]);
    let selectors = vec![Selector::parse("geolocation.location").unwrap()];
    let n = 2000;

    let mut seal = Vec::new();
    let mut markers = Vec::new();
    for i in 0..n {
        let mut plugins = BTreeMap::from([(
            "geolocation".to_string(),
            json!({"location": {"lat": 48.85 + f64::from(i) / 1e6, "lng": 2.35, "accuracy": 30.0}}),
        )]);
        let t = Instant::now();
        seal_plugins(&mut plugins, &selectors, &recipient, &digests).unwrap();
        seal.push(t.elapsed());
        markers.push(plugins["geolocation"]["location"].clone());
    }
    let size = markers[0].to_string().len();

    let mut open = Vec::new();
    for m in &markers {
        let sealed: Sealed = serde_json::from_value(m.clone()).unwrap();
        let t = Instant::now();
        let _ = opener.open(&sealed.sealed).unwrap();
        open.push(t.elapsed());
    }
    println!(
        "sealed field ({size} bytes as JSON): seal {:?}, open {:?} (medians of {n})",
        median(seal),
        median(open)
    );
}
