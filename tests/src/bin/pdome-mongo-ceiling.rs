//! pdome-mongo-ceiling: what a MongoDB-protocol server sustains for the
//! writes one submission causes, driven by a plain driver loop, so that the
//! server's own overhead above the database can be seen.
//!
//! Per submission the server reads the client's state and writes a nonce,
//! an audit record and the client document. This tool does the same against
//! documents shaped like the server's (a ~20 KB plugins subdocument), either
//! one submission per round trip (`--batch 1`) or grouped like the server's
//! batches (`insert_many` and a multi-statement `update`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::{Client, Collection};

#[derive(Parser)]
#[command(about = "Measure a MongoDB-protocol server's throughput for the server's writes")]
struct Args {
    /// Connection string.
    #[arg(long)]
    uri: String,
    /// Client documents to spread the writes over.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Submissions to simulate.
    #[arg(long, default_value_t = 3000)]
    submissions: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Submissions per round trip (1: unbatched).
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

fn hex(n: u128) -> String {
    format!("{n:032x}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::with_uri_str(&args.uri).await?;
    let db = client.database(&format!("pdceiling_{}", std::process::id()));
    let clients: Collection<Document> = db.collection("clients");
    let wc = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build();
    let packages: String = (0..150)
        .map(|i| {
            format!(r#"{{"name":"package-{i:04}","installed":"1.2.3-1","candidate":"1.2.4-1"}}"#)
        })
        .collect::<Vec<_>>()
        .join(",");
    let big = format!(r#"{{"pending":[{packages}]}}"#);
    let docs: Vec<Document> = (0..args.clients)
        .map(|c| doc! {"_id": hex(c as u128), "hostname": format!("h{c}"), "plugins": {"os_updates": &big, "bench": "0"}, "last_report_id": Bson::Null})
        .collect();
    clients.insert_many(docs).write_concern(wc.clone()).await?;

    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let db = db.clone();
        let next = next.clone();
        let wc = wc.clone();
        let (total, batch, nclients) = (args.submissions, args.batch, args.clients);
        tasks.spawn(async move {
            let clients: Collection<Document> = db.collection("clients");
            let nonces: Collection<Document> = db.collection("nonces");
            let audit: Collection<Document> = db.collection("audit_trail");
            let mut latencies = Vec::new();
            loop {
                let start = next.fetch_add(batch, Ordering::SeqCst);
                if start >= total {
                    break;
                }
                let range: Vec<usize> = (start..(start + batch).min(total)).collect();
                let ids: Vec<String> = range.iter().map(|s| hex((s % nclients) as u128)).collect();
                let t = Instant::now();
                // Read the clients' state, as the server does.
                let mut cursor = clients
                    .find(doc! {"_id": {"$in": &ids}})
                    .projection(doc! {"hostname": 1, "last_report_id": 1})
                    .await?;
                while cursor.advance().await? {}
                let nonce_docs: Vec<Document> = range.iter().map(|s| doc! {"_id": format!("n{s}"), "expires_at": mongodb::bson::DateTime::now()}).collect();
                let audit_docs: Vec<Document> = range
                    .iter()
                    .map(|s| doc! {"_id": format!("a{s}"), "client_id": hex((s % nclients) as u128), "field": "plugins.bench", "action": "change", "old": "1", "new": "2", "recorded_at": mongodb::bson::DateTime::now(), "n": *s as i64})
                    .collect();
                let updates: Vec<Document> = range
                    .iter()
                    .map(|s| doc! {"q": {"_id": hex((s % nclients) as u128)}, "u": {"$set": {"plugins.bench": s.to_string(), "last_report_id": format!("r{s}"), "last_seen_at": mongodb::bson::DateTime::now()}}})
                    .collect();
                if batch == 1 {
                    nonces.insert_one(nonce_docs[0].clone()).write_concern(wc.clone()).await?;
                    audit.insert_one(audit_docs[0].clone()).write_concern(wc.clone()).await?;
                    let u = &updates[0];
                    clients
                        .update_one(u.get_document("q")?.clone(), u.get_document("u")?.clone())
                        .write_concern(wc.clone())
                        .await?;
                } else {
                    nonces.insert_many(nonce_docs).ordered(false).write_concern(wc.clone()).await?;
                    audit.insert_many(audit_docs).ordered(false).write_concern(wc.clone()).await?;
                    db.run_command(doc! {"update": "clients", "updates": updates, "ordered": false, "writeConcern": {"w": "majority", "j": true}})
                        .await?;
                }
                latencies.push((t.elapsed(), range.len()));
            }
            anyhow::Ok(latencies)
        });
    }
    let mut done = 0usize;
    let mut lat: Vec<Duration> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        for (d, n) in r?? {
            done += n;
            lat.push(d);
        }
    }
    let elapsed = t0.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "{done} submissions' writes (batch {}, {} workers) in {:.2} s: {:.0}/s; round trip p50 {:.1} ms, p99 {:.1} ms",
        args.batch,
        args.concurrency,
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    // The database is left behind: dropping one makes FerretDB 1.24's
    // PostgreSQL handler hang later requests now and then, and the benchmark
    // throws its whole data directory away afterwards.
    Ok(())
}
