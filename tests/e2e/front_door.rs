//! The front door under slow and flooding peers: header and body time,
//! connection and request limits, per-client rates, and signers refused
//! before their bodies are read. Raw sockets go to a plain loopback
//! listener, so the bytes on the wire are exactly the test's; the
//! combined flood sends the agents there too.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use penguindome_agent::transport::Transport;
use penguindome_protocol::Envelope;
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::paths;
use penguindome_tests::{SimClient, Site, free_port};
use serde_json::json;

/// A site with `limits` as its `[limits]` table and a plain listener on
/// loopback; returns the plain listener's port.
fn limited_site(limits: &str) -> (Site, u16) {
    let site = Site::init();
    let plain = free_port();
    site.append_server_config(&format!(
        "[[listener]]\nname = \"plain\"\naddress = \"127.0.0.1:{plain}\"\n\n[limits]\n{limits}\n"
    ));
    (site, plain)
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Sends `head` (request line and headers) and the first `partial` bytes
/// of a body, then waits for the answer: (status, whole answer).
fn stalled_request(port: u16, head: &str, partial: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(partial).unwrap();
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head and whatever body arrives with it.
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed without answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, text)
}

/// A submission's head for `envelope`, announcing the whole body.
fn submit_head(envelope: &Envelope) -> String {
    submit_head_claiming(envelope, envelope.payload().len())
}

/// A submission's head for `envelope` announcing a body of `length` bytes.
fn submit_head_claiming(envelope: &Envelope, length: usize) -> String {
    format!(
        "POST {} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         penguindome-signature: {}\r\ncontent-length: {length}\r\n\r\n",
        paths::SUBMIT,
        envelope.signature_header(),
    )
}

#[test]
fn slow_peers_are_cut_off_while_agents_keep_reporting() {
    let (site, plain) = limited_site("header_timeout = \"2s\"\nbody_timeout = \"2s\"");
    let _server = site.start();
    let transport = Transport::new(&site.agent_config()).unwrap();
    let sim = SimClient::enroll(&site.agent_config(), &transport, "slow").unwrap();
    // Give up long before anyone waits this long for a healthy server.
    let patience = Duration::from_secs(30);

    // Connected, saying nothing: on the plain listener and, before the
    // TLS handshake, on the TLS one.
    let mut silent = TcpStream::connect(("127.0.0.1", plain)).unwrap();
    let mut silent_tls = TcpStream::connect(("127.0.0.1", site.port)).unwrap();
    assert!(
        closed_within(&mut silent, patience),
        "idle plain connection kept"
    );
    assert!(
        closed_within(&mut silent_tls, patience),
        "TLS handshake never bounded"
    );

    // Headers trickled a line a second never finish.
    let mut trickle = TcpStream::connect(("127.0.0.1", plain)).unwrap();
    trickle
        .write_all(b"POST /penguindome/v1/submit HTTP/1.1\r\n")
        .unwrap();
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < patience {
        std::thread::sleep(Duration::from_secs(1));
        if trickle.write_all(b"x-slow: 1\r\n").is_err()
            || closed_within(&mut trickle, Duration::from_millis(10))
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a peer trickling headers held its connection for {patience:?}"
    );

    // A body that stops half way gets 408, not a handler waiting forever.
    let envelope = sim.seal(&SimClient::report("slow", json!({})));
    let half = &envelope.payload()[..envelope.payload().len() / 2];
    let (status, answer) = stalled_request(plain, &submit_head(&envelope), half);
    assert_eq!(status, 408, "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");

    // None of it got in the way of a real agent.
    let agent = site.agent("steady");
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", penguindome_tests::text(&out));
    let status = agent.status();
    assert_eq!(status["spool_reports"], 0, "{status}");
}

#[test]
fn connections_and_requests_past_the_limits_are_refused_at_once() {
    let (site, plain) = limited_site(
        "header_timeout = \"60s\"\nbody_timeout = \"60s\"\nconnections = 3\nrequests = 1",
    );
    let server = site.start();
    let transport = Transport::new(&site.agent_config()).unwrap();
    let sim = SimClient::enroll(&site.agent_config(), &transport, "greedy").unwrap();

    // One request in flight, stalled in its body, holds the only slot: the
    // next request is refused with 503 and a Retry-After, not queued.
    let envelope = sim.seal(&SimClient::report("greedy", json!({})));
    let mut holder = TcpStream::connect(("127.0.0.1", plain)).unwrap();
    holder.write_all(submit_head(&envelope).as_bytes()).unwrap();
    holder.write_all(&envelope.payload()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (status, answer) = stalled_request(
        plain,
        &format!("GET {} HTTP/1.1\r\nhost: test\r\n\r\n", paths::HEALTH),
        b"",
    );
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("server_busy"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 30"),
        "{answer}"
    );

    // With the holder and two idle peers the listener has its three
    // connections (once the server has seen the last one close): a fourth
    // is closed before it can say anything.
    std::thread::sleep(Duration::from_millis(500));
    let _idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", plain)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut fourth = TcpStream::connect(("127.0.0.1", plain)).unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_secs(10)),
        "a connection past the limit was kept: {}",
        server.log_text()
    );

    // The holder finishes its body: it is answered and frees the slot.
    holder.write_all(&envelope.payload()[10..]).unwrap();
    let (status, answer) = read_answer(&mut holder);
    assert_eq!(status, 200, "{answer}");
    drop(holder);
    drop(_idle);
    // The other listener has limits of its own and was never full.
    let r = transport.get(paths::HEALTH).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_past_its_rate_gets_429_and_forgeries_spend_nothing() {
    let (site, _plain) = limited_site("client_requests_per_minute = 3");
    let _server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let noisy = SimClient::enroll(&config, &transport, "noisy").unwrap();
    let quiet = SimClient::enroll(&config, &transport, "quiet").unwrap();

    for i in 0..3 {
        let r = noisy.submit(&transport, &SimClient::report("noisy", json!({})));
        assert_eq!(r.status, 200, "request {i}: {}", r.describe());
    }
    let r = noisy.submit(&transport, &SimClient::report("noisy", json!({})));
    assert_eq!(r.status, 429, "{}", r.describe());
    assert_eq!(r.api_error().unwrap().code, "rate_limited");

    // Someone replaying the quiet client's signature over other bytes is
    // refused, and does not spend the quiet client's budget.
    let good = quiet.seal(&SimClient::report("quiet", json!({})));
    for _ in 0..5 {
        let mut payload = good.payload().to_vec();
        payload[0] = b' ';
        let forged =
            Envelope::from_wire(payload, Some(good.signature_header().as_bytes())).unwrap();
        let r = transport.post(paths::SUBMIT, &forged).unwrap();
        assert_eq!(r.status, 401, "{}", r.describe());
    }
    for i in 0..3 {
        let r = quiet.submit(&transport, &SimClient::report("quiet", json!({})));
        assert_eq!(r.status, 200, "request {i}: {}", r.describe());
    }

    // An agent that meets the limit keeps its report for the next run.
    let agent = site.agent("agent");
    for _ in 0..2 {
        let _ = agent.cmd(&["run", "--force-collect", "--force-submit"]);
    }
    let status = agent.status();
    assert!(
        status["spool_reports"].as_u64().unwrap() >= 1,
        "a refused report was dropped: {status}"
    );
}

#[test]
fn unknown_and_revoked_signers_are_refused_before_their_bodies_are_read() {
    let (site, plain) = limited_site("body_timeout = \"60s\"");
    let server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let stranger = SimClient {
        id: "0123456789abcdef0123456789abcdef".into(),
        key: penguindome_protocol::SecretKey::generate("stranger").unwrap(),
    };
    // Only the head and a few bytes of a large body: the answer comes at
    // once, without the server waiting for the rest.
    let envelope = stranger.seal(&SimClient::report("stranger", json!({})));
    let head = submit_head_claiming(&envelope, 4_000_000);
    let (status, answer) = stalled_request(plain, &head, &envelope.payload()[..10]);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("unknown_key"), "{answer}");

    let victim = SimClient::enroll(&config, &transport, "revoked").unwrap();
    let out = site.admin(&["clients", "revoke", &victim.id]);
    assert!(out.status.success(), "{}", penguindome_tests::text(&out));
    let envelope = victim.seal(&SimClient::report("revoked", json!({})));
    let head = submit_head_claiming(&envelope, 4_000_000);
    let (status, answer) = stalled_request(plain, &head, &envelope.payload()[..10]);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("revoked"), "{answer}");
    drop(server);
}

#[test]
fn a_signature_for_one_kind_of_message_is_refused_by_every_other_endpoint() {
    let (site, _plain) = limited_site("");
    let server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let sim = SimClient::enroll(&config, &transport, "bound").unwrap();

    // A signed report's fields would also read as an update request.
    let report = sim.seal(&SimClient::report("bound", json!({})));
    for path in [paths::UPDATE, paths::ACTION_REPORT] {
        let r = transport.post(path, &report).unwrap();
        assert_eq!(r.status, 400, "{path}: {}", r.describe());
        assert_eq!(r.api_error().unwrap().code, "wrong_message_kind", "{path}");
    }
    assert_eq!(transport.post(paths::SUBMIT, &report).unwrap().status, 200);

    // What agents signed before kinds were named is still served...
    let unbound = |hostname: &str| {
        let payload = serde_json::to_vec(&json!({
            "sender": sim.id,
            "issued_at": penguindome_protocol::envelope::utc::format(&chrono::Utc::now()),
            "nonce": penguindome_protocol::envelope::new_nonce(),
            "body": {"hostname": hostname, "agent_version": "old"},
        }))
        .unwrap();
        let signature = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            sim.key.sign(&payload).unwrap(),
        );
        Envelope::from_wire(payload, Some(signature.as_bytes())).unwrap()
    };
    let r = transport.post(paths::UPDATE, &unbound("bound")).unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());

    // ...until the site requires kinds.
    drop(server);
    let path = site.config_dir.join("server.toml");
    let toml = std::fs::read_to_string(&path).unwrap().replacen(
        "[server]\n",
        "[server]\nrequire_message_kinds = true\n",
        1,
    );
    std::fs::write(&path, toml).unwrap();
    let _server = site.start();
    let r = transport.post(paths::UPDATE, &unbound("bound")).unwrap();
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_eq!(r.api_error().unwrap().code, "unbound_signature");
    let r = transport
        .post(
            paths::SUBMIT,
            &sim.seal(&SimClient::report("bound", json!({}))),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
}

/// Connections the combined flood holds open at once, half silent, half
/// trickling headers.
const SLOW_PEERS: u32 = 150;

/// Hostile peers of the combined flood, and what the server did to them.
#[derive(Default)]
struct Attack {
    stop: AtomicBool,
    /// Silent connections the server closed.
    silent_cut: AtomicU32,
    /// Connections trickling headers the server closed.
    trickling_cut: AtomicU32,
    /// Garbage POSTs answered with a refusal.
    garbage_refused: AtomicU32,
    /// Wrong passwords answered with a refusal.
    guesses_refused: AtomicU32,
}

impl Attack {
    fn on(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    /// Whether every kind of attacker has been cut or refused a few times:
    /// each silent and trickling connection at least once, garbage and
    /// guesses a few times each.
    fn felt(&self) -> bool {
        let n = |c: &AtomicU32| c.load(Ordering::SeqCst);
        n(&self.silent_cut) >= SLOW_PEERS / 2
            && n(&self.trickling_cut) >= SLOW_PEERS / 2
            && n(&self.garbage_refused) >= 20
            && n(&self.guesses_refused) >= 4
    }

    fn summary(&self) -> String {
        let n = |c: &AtomicU32| c.load(Ordering::SeqCst);
        format!(
            "silent connections cut {}, trickling cut {}, garbage refused {}, guesses refused {}",
            n(&self.silent_cut),
            n(&self.trickling_cut),
            n(&self.garbage_refused),
            n(&self.guesses_refused)
        )
    }

    /// Connects and says nothing, again whenever the server cuts it.
    fn silent(&self, port: u16) {
        while self.on() {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            while self.on() {
                if closed_within(&mut s, Duration::from_millis(200)) {
                    self.silent_cut.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    }

    /// Sends a header line every half second, forever.
    fn trickle(&self, port: u16) {
        while self.on() {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let mut line: &[u8] = b"POST /penguindome/v1/submit HTTP/1.1\r\n";
            while self.on() {
                if s.write_all(line).is_err() || closed_within(&mut s, Duration::from_millis(500)) {
                    self.trickling_cut.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                line = b"x-slow: 1\r\n";
            }
        }
    }

    /// Posts 64 KiB of noise under a signature header of noise.
    fn garbage(&self, port: u16) {
        while self.on() {
            let noise = new_nonce();
            let body = noise.repeat(64 * 1024 / noise.len());
            let head = format!(
                "POST {} HTTP/1.1\r\nhost: x\r\npenguindome-signature: {noise}{noise}\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                paths::SUBMIT,
                body.len()
            );
            if let Some(status) = exchange(port, head.as_bytes(), body.as_bytes()) {
                assert!(refusal(status), "a garbage POST got {status}");
                self.garbage_refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Asks for the repository with a new wrong password each time.
    fn guess(&self, port: u16, user: &str) {
        let mut n = 0;
        while self.on() {
            n += 1;
            let credential = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:wrong-{n}"),
            );
            let head = format!(
                "GET {}/deb/dists/stable/InRelease HTTP/1.1\r\nhost: x\r\n\
                 authorization: Basic {credential}\r\nconnection: close\r\n\r\n",
                paths::REPO
            );
            if let Some(status) = exchange(port, head.as_bytes(), b"") {
                assert!(refusal(status), "a wrong password got {status}");
                self.guesses_refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// A refusal of the request itself or for load, never a success or a
/// server error.
fn refusal(status: u16) -> bool {
    (400..500).contains(&status) || status == 503
}

/// Sends one request; its status, or `None` when the server cut it.
fn exchange(port: u16, head: &[u8], body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(head).ok()?;
    // The server may answer before the body is read and close.
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn agents_keep_reporting_through_slow_peers_garbage_and_wrong_passwords_at_once() {
    const AGENTS: usize = 10;
    const PER_AGENT: u64 = 20;
    let (site, plain) = limited_site(
        "header_timeout = \"2s\"\nbody_timeout = \"2s\"\nclient_requests_per_minute = 100000",
    );
    site.set_password("flooded", "the right one");
    let server = site.start();
    // The agents share the attackers' listener and so its limits.
    let mut config = site.agent_config();
    config.server_url = format!("http://127.0.0.1:{plain}");
    config.allow_plain_http = true;
    let transport = Transport::new(&config).unwrap();
    let agents: Vec<SimClient> = (0..AGENTS)
        .map(|i| SimClient::enroll(&config, &transport, &format!("flood-{i}")).unwrap())
        .collect();

    let attack = Attack::default();
    let retries = AtomicU32::new(0);
    std::thread::scope(|scope| {
        let a = &attack;
        for i in 0..SLOW_PEERS {
            scope.spawn(move || {
                if i % 2 == 0 {
                    a.silent(plain)
                } else {
                    a.trickle(plain)
                }
            });
        }
        for _ in 0..4 {
            scope.spawn(move || a.garbage(plain));
            scope.spawn(move || a.guess(plain, "flooded"));
        }
        std::thread::sleep(Duration::from_secs(1));
        let agent_threads: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let (config, retries) = (&config, &retries);
                scope.spawn(move || {
                    let transport = Transport::new(config).unwrap();
                    for n in 1..=PER_AGENT {
                        let report =
                            SimClient::report(&format!("flood-{i}"), json!({"burst": {"n": n}}));
                        let attempts = agent.submit_until_stored(&transport, &report);
                        retries.fetch_add(attempts - 1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(250));
                    }
                })
            })
            .collect();
        for t in agent_threads {
            t.join().unwrap();
        }
        // Password checks are slow by design: let a few finish.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !attack.felt() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        attack.stop.store(true, Ordering::SeqCst);
    });

    // Every report was acknowledged (above) and is stored once, in order.
    let expected: Vec<u64> = (1..=PER_AGENT).collect();
    for agent in &agents {
        assert_eq!(site.burst_history(&agent.id), expected, "{}", agent.id);
    }
    // The attackers were really there, and were refused or cut.
    let summary = format!(
        "{}, agent retries {}",
        attack.summary(),
        retries.load(Ordering::SeqCst)
    );
    eprintln!("{summary}");
    assert!(attack.felt(), "{summary}");
    // The server is healthy once they are gone.
    assert_eq!(transport.get(paths::HEALTH).unwrap().status, 200);
    drop(server);
}
