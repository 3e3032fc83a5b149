//! pdome-loadgen: signed submissions from many simulated clients, to
//! measure the server's throughput and latency.
//!
//! It shares the machine with the server, so everything expensive happens
//! before the clock starts: clients enroll, and every request is built and
//! signed (each with its own nonce). The timed phase only sends. With
//! `--chunk`, requests are signed and sent in rounds, so a slow store never
//! receives a signature older than the server's freshness window.

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use penguindome_agent::transport::Transport;
use penguindome_protocol::Envelope;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::wire::paths;
use penguindome_tests::SimClient;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    about = "Send signed submissions from simulated clients and report throughput and latency"
)]
struct Args {
    /// The site's agent.toml (server URL, pinned certificate, credential).
    #[arg(long)]
    agent_config: PathBuf,
    /// Simulated clients.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Submissions in the timed phase.
    #[arg(long, default_value_t = 40_000)]
    requests: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Size of each report, in KiB.
    #[arg(long, default_value_t = 20)]
    payload_kib: usize,
    /// Pause on each connection between requests, in milliseconds: agents
    /// at a cadence rather than a flood (0: as fast as the server answers).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Sign and send in rounds of this many requests (0: one round); only
    /// the sending is timed.
    #[arg(long, default_value_t = 0)]
    chunk: usize,
    /// What to send: signed reports, or update requests (the timer's
    /// question "anything for me?").
    #[arg(long, value_enum, default_value = "submit")]
    kind: Kind,
    /// Keep the enrolled clients' ids and keys here, and reuse them when
    /// the file exists (several phases against the same clients).
    #[arg(long)]
    clients_file: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Writes the clients' ids and armored keys, one JSON pair per line.
fn save_clients(path: &std::path::Path, clients: &[SimClient]) -> anyhow::Result<()> {
    let mut text = String::new();
    for c in clients {
        let key = String::from_utf8(c.key.to_armored()?)?;
        text.push_str(&serde_json::to_string(&(&c.id, key))?);
        text.push('\n');
    }
    Ok(std::fs::write(path, text)?)
}

/// Reads what [`save_clients`] wrote.
fn load_clients(path: &std::path::Path) -> anyhow::Result<Vec<SimClient>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|line| {
            let (id, key): (String, String) = serde_json::from_str(line)?;
            let key = penguindome_protocol::SecretKey::from_bytes(key.as_bytes())?;
            Ok(SimClient { id, key })
        })
        .collect()
}

/// What the load is made of.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Kind {
    /// `/submit` with ~payload_kib reports.
    Submit,
    /// `/update` requests.
    Update,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Submit => paths::SUBMIT,
            Kind::Update => paths::UPDATE,
        }
    }
}

/// A report of about `kib` KiB in the facts types, as an agent sends it: a
/// long package list fills it; `seq` changes one field so each is a real
/// change; every tenth client's firewall is off, so the audit has work.
fn plugins(client: usize, seq: usize, kib: usize) -> Value {
    use penguindome_protocol::facts::{Known, firewall, fixtures, to_value};
    let mut out = fixtures::compliant();
    let mut os = fixtures::os_info("2028-08-09", None);
    os.hostname = format!("bench-{client}");
    out["os_info"] = to_value(&os);
    if client.is_multiple_of(10) {
        let off = fixtures::firewall(firewall::Status::Off, "no input chain drops by default");
        out["firewall"] = to_value(&off);
    }
    out["bench"] = json!({"seq": seq});
    let mut updates = fixtures::updates(0, Known::Value(0));
    let mut size = out.to_string().len();
    while size < kib * 1024 {
        let p = fixtures::pending(&format!("package-{:04}", updates.pending.len()), false);
        size += serde_json::to_string(&p).map_or(0, |t| t.len() + 1);
        updates.pending.push(p);
    }
    if let Some(counts) = updates.counts.as_mut() {
        counts.pending = updates.pending.len() as u64;
    }
    out["os_updates"] = to_value(&updates);
    out
}

/// TLS to the site's server, trusting what agent.toml trusts.
fn tls_connector(config: &AgentConfig) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = config
        .ca_certificate
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("agent.toml pins no certificate"))?;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)))
}

type Outcome = (Vec<Duration>, Vec<String>);

/// One keep-alive connection sending its share of the requests in order.
async fn send_all(
    path: &'static str,
    url: &url::Url,
    tls: tokio_rustls::TlsConnector,
    requests: &[(Bytes, String)],
    work: &[usize],
    pause: Duration,
    start_after: Duration,
) -> anyhow::Result<Outcome> {
    // Paced connections start spread over one pause, as agents' timers
    // are, rather than all in the same millisecond.
    tokio::time::sleep(start_after).await;
    use http_body_util::{BodyExt, Full};
    let host = url.host_str().unwrap_or("localhost").to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())?;
    let stream = tls.connect(name, tcp).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut lat = Vec::with_capacity(work.len());
    let mut failures = Vec::new();
    for &r in work {
        let (body, sig) = &requests[r];
        let req = hyper::Request::post(path)
            .header("host", &host)
            .header("content-type", "application/json")
            .header(penguindome_protocol::SIGNATURE_HEADER, sig.as_str())
            .body(Full::new(body.clone()))?;
        let t = Instant::now();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status == 200 {
            lat.push(t.elapsed());
        } else {
            failures.push(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok((lat, failures))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = AgentConfig::load(&args.agent_config)?;
    let transport = Transport::new(&config)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);

    let clients = match &args.clients_file {
        Some(f) if f.exists() => load_clients(f)?,
        other => {
            eprintln!("enrolling {} clients", args.clients);
            let clients = enroll(&args, &config, &transport, threads);
            if let Some(f) = other {
                save_clients(f, &clients)?;
            }
            clients
        }
    };
    let chunk = if args.chunk == 0 {
        args.requests
    } else {
        args.chunk
    };
    let (mut lat, mut failures, mut elapsed, mut bytes) =
        (Vec::new(), Vec::new(), Duration::ZERO, 0);
    for first in (0..args.requests).step_by(chunk.max(1)) {
        let round = first..(first + chunk).min(args.requests);
        eprintln!(
            "signing submissions {}..{} of ~{} KiB",
            round.start, round.end, args.payload_kib
        );
        let started = Instant::now();
        let envelopes = sign(&args, &clients, threads, round.clone());
        bytes = envelopes[0].payload().len();
        eprintln!(
            "signed in {:.1} s; payload {} bytes",
            started.elapsed().as_secs_f64(),
            bytes
        );
        let (l, f, e) = send(&args, &config, clients.len(), round, envelopes)?;
        lat.extend(l);
        failures.extend(f);
        elapsed += e;
    }
    lat.sort();
    print_result(&args, bytes, &lat, failures.len(), elapsed);
    if let Some(f) = failures.first() {
        eprintln!("first failure: {f}");
    }
    anyhow::ensure!(failures.is_empty(), "{} submissions failed", failures.len());
    Ok(())
}

/// Enrolls `args.clients` clients on `threads` threads, in order of their number.
fn enroll(
    args: &Args,
    config: &AgentConfig,
    transport: &Transport,
    threads: usize,
) -> Vec<SimClient> {
    let next = AtomicUsize::new(0);
    let enrolled = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(4) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= args.clients {
                        break;
                    }
                    let c = enroll_one(config, transport, &format!("bench-{i}"));
                    enrolled.lock().unwrap().push((i, c));
                }
            });
        }
    });
    let mut clients = enrolled.into_inner().unwrap();
    clients.sort_by_key(|(i, _)| *i);
    clients.into_iter().map(|(_, c)| c).collect()
}

/// Enrolls one client, trying again for a while as an agent would: a
/// fresh database may answer 503 while it sets itself up.
fn enroll_one(config: &AgentConfig, transport: &Transport, name: &str) -> SimClient {
    let mut tries = 0;
    loop {
        match SimClient::enroll(config, transport, name) {
            Ok(c) => return c,
            Err(e) if tries < 30 => {
                tries += 1;
                if tries == 1 {
                    eprintln!("enrolling {name} failed, trying again: {e:#}");
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => panic!("cannot enroll {name}: {e:#}"),
        }
    }
}

/// Builds and signs the requests in `round` on `threads` threads.
fn sign(
    args: &Args,
    clients: &[SimClient],
    threads: usize,
    round: std::ops::Range<usize>,
) -> Vec<Envelope> {
    // Request r belongs to client r % clients and is that client's
    // (r / clients)-th report; each worker later sends its clients' reports
    // in order, so every report is newer than the one stored.
    let slots: Vec<Mutex<Option<Envelope>>> = round.clone().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(round.start);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let r = next.fetch_add(1, Ordering::SeqCst);
                    if r >= round.end {
                        break;
                    }
                    let c = r % clients.len();
                    let sealed = match args.kind {
                        Kind::Submit => clients[c].seal(&SimClient::report(
                            &format!("bench-{c}"),
                            plugins(c, r / clients.len(), args.payload_kib),
                        )),
                        Kind::Update => clients[c].seal_update(&format!("bench-{c}")),
                    };
                    *slots[r - round.start].lock().unwrap() = Some(sealed);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap().unwrap())
        .collect()
}

/// The timed phase: sends the requests of `round` (signed as `envelopes`)
/// over `args.concurrency` connections; returns the latencies of accepted
/// requests, the failures and how long it took.
fn send(
    args: &Args,
    config: &AgentConfig,
    clients: usize,
    round: std::ops::Range<usize>,
    envelopes: Vec<Envelope>,
) -> anyhow::Result<(Vec<Duration>, Vec<String>, Duration)> {
    // Connection w sends the requests of the clients with c % concurrency == w.
    let per_worker: Vec<Vec<usize>> = (0..args.concurrency)
        .map(|w| {
            round
                .clone()
                .filter(|r| (r % clients) % args.concurrency == w)
                .map(|r| r - round.start)
                .collect()
        })
        .collect();
    let requests: std::sync::Arc<Vec<(Bytes, String)>> = std::sync::Arc::new(
        envelopes
            .into_iter()
            .map(|e| {
                let sig = e.signature_header();
                (Bytes::from(e.into_payload()), sig)
            })
            .collect(),
    );
    eprintln!("sending with {} connections", args.concurrency);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = tls_connector(config)?;
    let url = url::Url::parse(config.base_url())?;
    let pause = Duration::from_millis(args.pause_ms);
    let t0 = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (w, work) in per_worker.into_iter().enumerate() {
            let requests = requests.clone();
            let tls = tls.clone();
            let url = url.clone();
            let start_after = pause * w as u32 / args.concurrency as u32;
            let path = args.kind.path();
            tasks.spawn(async move {
                send_all(path, &url, tls, &requests, &work, pause, start_after).await
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.push(r.expect("connection task"));
        }
        all
    });
    let mut lat = Vec::with_capacity(args.requests);
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok((l, f)) => {
                lat.extend(l);
                failures.extend(f);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    Ok((lat, failures, t0.elapsed()))
}

/// Prints throughput and latency (`lat` sorted), as text or JSON.
fn print_result(args: &Args, bytes: usize, lat: &[Duration], failed: usize, elapsed: Duration) {
    let ok = lat.len();
    let rate = ok as f64 / elapsed.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let result = json!({
        "clients": args.clients,
        "concurrency": args.concurrency,
        "payload_bytes": bytes,
        "requests": args.requests,
        "ok": ok,
        "failed": failed,
        "seconds": elapsed.as_secs_f64(),
        "submissions_per_second": rate,
        "latency_ms": {"p50": ms(percentile(lat, 0.50)), "p90": ms(percentile(lat, 0.90)),
                       "p99": ms(percentile(lat, 0.99)), "max": ms(lat.last().copied().unwrap_or_default())},
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "{ok} signed {} of {bytes} bytes from {} clients over {} connections in {:.2} s: \
             {rate:.0}/s, latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} failed",
            match args.kind {
                Kind::Submit => "submissions",
                Kind::Update => "update requests",
            },
            args.clients,
            args.concurrency,
            elapsed.as_secs_f64(),
            ms(percentile(lat, 0.50)),
            ms(percentile(lat, 0.90)),
            ms(percentile(lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
            failed
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_reaches_the_requested_size() {
        let p = plugins(1, 2, 20).to_string();
        assert!(p.len() >= 20 * 1024 && p.len() < 21 * 1024, "{}", p.len());
    }
}
