//! The foundation end to end: init, server, agent, pdome-admin, with the
//! real binaries on loopback.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use penguindome_agent::transport::Transport;
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::paths;
use penguindome_protocol::{Envelope, SecretKey};
use penguindome_tests::http::Get;
use penguindome_tests::{Backend, SimClient, Site, on_both_stores, text};
use serde_json::{Value, json};

mod actions;
mod cluster;
mod enrollment;
mod front_door;
mod key_rotation;
mod listeners;
mod metrics;
mod moving;
mod secrets;
mod shell;
mod tls_renewal;
mod web;

on_both_stores!(
    agent_reports_reach_the_server,
    tampered_and_replayed_requests_change_nothing,
    revoked_client_is_refused,
    collections_made_while_the_server_is_down_arrive_in_order,
    sigkill_during_a_burst_loses_no_acknowledged_submission,
);

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn plugin_values(history: &Value, field: &str) -> Vec<Value> {
    history
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["field"] == field)
        .map(|r| r["new"].clone())
        .collect()
}

fn agent_reports_reach_the_server(backend: Backend) {
    let site = Site::init_on(&backend);
    // Secrets are private; the certificate is public.
    assert_eq!(mode(&site.config_dir.join("server-key.asc")), 0o600);
    assert_eq!(mode(&site.config_dir.join("agent.toml")), 0o600);
    assert_eq!(mode(&site.config_dir.join("tls/server.key")), 0o600);
    assert_eq!(mode(&site.config_dir.join("tls/server.crt")), 0o644);
    // A second init refuses to overwrite the site.
    let again = site.admin(&[
        "init",
        "--non-interactive",
        "--listen",
        "127.0.0.1:1",
        "--url",
        "https://x",
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        text(&again)
    );

    let server = site.start();
    let agent = site.agent("laptop");
    let out = agent.cmd(&["run"]);
    assert!(
        out.status.success(),
        "agent run failed: {}\nserver log:\n{}",
        text(&out),
        server.log_text()
    );
    assert_eq!(mode(&agent.state_dir().join("client-key.asc")), 0o600);

    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(doc["client_id"], agent.machine_id.as_str());
    assert_eq!(doc["plugins"]["os_info"]["kernel"], kernel.trim());
    assert_eq!(doc["plugins"]["os_info"]["id"], "debian");
    assert!(doc["plugins"]["ip_addresses"]["interfaces"].is_array());
    assert_eq!(doc["last_address"], "127.0.0.1");
    assert_eq!(doc["last_listener"], "main");
    assert_eq!(doc["keys"][0]["fingerprint"], agent.key().fingerprint());
    assert!(doc["collected_at"].as_str().unwrap().ends_with('Z'));

    let list = site.admin_json(&["clients", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let table = site.admin(&["clients", "list"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains(&agent.machine_id),
        "{}",
        text(&table)
    );
    // The host name selects the client too.
    let hostname = doc["hostname"].as_str().unwrap().to_string();
    let by_name = site.admin_json(&["clients", "show", &hostname, "--json"]);
    assert_eq!(by_name["client_id"], agent.machine_id.as_str());

    let status = agent.status();
    assert_eq!(status["enrolled"], true);
    assert_eq!(status["spool_reports"], 0);
    assert!(status["last_submit_at"].is_string());
    assert!(
        status["last_update_at"].is_string(),
        "the signed update round trip worked"
    );
    assert_eq!(status["last_error"], Value::Null);

    // A second run within the intervals collects nothing new.
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    let history = site.admin_json(&["clients", "history", &agent.machine_id, "--json"]);
    let mut fields: Vec<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap().to_string())
        .collect();
    fields.sort();
    // Only the first report's additions: the key and each collector once.
    let mut expected = vec!["key".to_string()];
    expected.extend(
        doc["plugins"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| format!("plugins.{k}")),
    );
    expected.sort();
    assert!(
        expected.len() > 10,
        "every built-in collector reported: {expected:?}"
    );
    assert_eq!(fields, expected);

    assert!(server.stop().success());
}

fn tampered_and_replayed_requests_change_nothing(backend: Backend) {
    let site = Site::init_on(&backend);
    let server = site.start();
    let agent = site.agent("victim");
    assert!(agent.cmd(&["run"]).status.success());
    let before = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);

    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let key = agent.key();
    let sim = SimClient {
        id: agent.machine_id.clone(),
        key,
    };
    let report = SimClient::report("victim", json!({"os_info": "owned"}));
    let good = sim.seal(&report);

    // One byte of the payload changed after signing.
    let mut payload = good.payload().to_vec();
    let at = payload.windows(5).position(|w| w == b"owned").unwrap();
    payload[at] = b'p';
    let tampered = Envelope::from_wire(payload, Some(good.signature_header().as_bytes())).unwrap();
    let r = transport.post(paths::SUBMIT, &tampered).unwrap();
    assert_eq!(r.status, 401, "{}", r.describe());
    assert_eq!(r.api_error().unwrap().code, "bad_signature");

    // Signed by a key the server never enrolled, claiming the victim's id.
    let stranger = SimClient {
        id: agent.machine_id.clone(),
        key: SecretKey::generate("x").unwrap(),
    };
    let r = transport
        .post(paths::SUBMIT, &stranger.seal(&report))
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.api_error().unwrap().code, "unknown_key");

    // A timestamp outside the window.
    let stale = Envelope::seal_at(
        &sim.key,
        &sim.id,
        Utc::now() - chrono::Duration::minutes(20),
        new_nonce(),
        None,
        &report,
    )
    .unwrap();
    let r = transport.post(paths::SUBMIT, &stale).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.api_error().unwrap().code, "stale_request");

    // A body that is not JSON, correctly signed.
    let raw = b"this is not json".to_vec();
    let sig = base64::engine::general_purpose::STANDARD.encode(sim.key.sign(&raw).unwrap());
    let r = transport
        .post(
            paths::SUBMIT,
            &Envelope::from_wire(raw, Some(sig.as_bytes())).unwrap(),
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.api_error().unwrap().code, "malformed_payload");

    // Garbage in the signature header, and no header at all.
    let garbled = raw_post(&site, paths::SUBMIT, good.payload(), Some("AAAA"));
    assert_eq!(garbled.0, 400, "{}", garbled.1);
    assert!(
        garbled.1.contains("bad_signature_encoding"),
        "{}",
        garbled.1
    );
    let unsigned = raw_post(&site, paths::SUBMIT, good.payload(), None);
    assert_eq!(unsigned.0, 401);
    assert!(unsigned.1.contains("missing_signature"));

    // A body over the limit is refused before it is read.
    let big = vec![b' '; 9 * 1024 * 1024];
    let r = raw_post(&site, paths::SUBMIT, &big, Some(&good.signature_header()));
    assert_eq!(r.0, 413, "{}", r.1);
    assert!(r.1.contains("body_too_large"), "{}", r.1);

    let after = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(
        before["plugins"], after["plugins"],
        "refused requests changed nothing"
    );
    assert_eq!(before["last_seen_at"], after["last_seen_at"]);

    // The genuine request is accepted once; its replay is refused.
    let r = transport.post(paths::SUBMIT, &good).unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = transport.post(paths::SUBMIT, &good).unwrap();
    assert_eq!(r.status, 409, "{}", r.describe());
    assert_eq!(r.api_error().unwrap().code, "replayed_request");
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(doc["plugins"], json!({"os_info": "owned"}));
    drop(server);
}

/// Posts raw bytes with an optional signature header, pinning the site's
/// certificate. `Expect: 100-continue` lets a refused body go unsent.
fn raw_post(site: &Site, path: &str, body: &[u8], signature: Option<&str>) -> (u16, String) {
    let config = site.agent_config();
    let pem = config.ca_certificate.unwrap();
    let cert = ureq::tls::Certificate::from_pem(pem.as_bytes()).unwrap();
    let agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut req = agent
        .post(&format!("{}{path}", site.url))
        .header("expect", "100-continue");
    if let Some(sig) = signature {
        req = req.header("penguindome-signature", sig);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn revoked_client_is_refused(backend: Backend) {
    let site = Site::init_on(&backend);
    let server = site.start();
    let agent = site.agent("stolen");
    assert!(agent.cmd(&["run"]).status.success());

    let out = site.admin(&["clients", "revoke", &agent.machine_id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Revoked"));

    let out = agent.cmd(&["run", "--force-collect"]);
    assert!(!out.status.success(), "a revoked agent's run fails visibly");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked"),
        "{}",
        text(&out)
    );
    let status = agent.status();
    assert_eq!(status["spool_reports"], 1, "the refused report is kept");
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert!(doc["revoked_at"].is_string());
    assert!(doc["keys"][0]["revoked_at"].is_string());
    // Enrolling again with the site credential does not undo a revocation.
    std::fs::remove_dir_all(agent.state_dir()).unwrap();
    let out = agent.cmd(&["run"]);
    assert!(!out.status.success());
    // The administrator lets it back in.
    assert!(
        site.admin(&["clients", "reenroll", &agent.machine_id])
            .status
            .success()
    );
    let out = agent.cmd(&["run", "--force-collect"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        server.log_text()
    );
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(doc["revoked_at"], Value::Null);
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
}

/// A plugin reporting `{"n": N}`, N read from the returned file (0 now).
fn counter_plugin(agent: &penguindome_tests::AgentHost) -> std::path::PathBuf {
    let counter = agent.root.join("counter");
    std::fs::write(&counter, "0").unwrap();
    agent.plugin(
        "counter.sh",
        &format!(
            "n=$(cat {c}); echo \"{{\\\"n\\\": $n}}\"",
            c = counter.display()
        ),
    );
    counter
}

fn collections_made_while_the_server_is_down_arrive_in_order(backend: Backend) {
    let site = Site::init_on(&backend);
    let server = site.start();
    let agent = site.agent_with_plugins("roaming");
    let counter = counter_plugin(&agent);
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.stop().success());

    for n in 1..=3 {
        std::fs::write(&counter, n.to_string()).unwrap();
        let out = agent.cmd(&["run", "--force-collect"]);
        assert!(
            out.status.success(),
            "an offline run is not a failure: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"),
            "{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(agent.status()["spool_reports"], 3);

    let server = site.start();
    let out = agent.cmd(&["run", "--force-submit"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        server.log_text()
    );
    assert_eq!(agent.status()["spool_reports"], 0);
    let history = site.admin_json(&["clients", "history", &agent.machine_id, "--json"]);
    assert_eq!(
        plugin_values(&history, "plugins.counter.n"),
        vec![json!(1), json!(2), json!(3)],
        "{history:#}"
    );
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(doc["plugins"]["counter"], json!({"n": 3}));
}

#[test]
fn forged_server_answers_are_not_believed() {
    let site = Site::init();
    let _server = site.start();
    let agent = site.agent("paranoid");
    // The agent expects another server key than the one that signs.
    let mut config = site.agent_config();
    config.server_public_key = SecretKey::generate("impostor")
        .unwrap()
        .public()
        .to_armored()
        .unwrap();
    let path = agent.root.join("agent.toml");
    std::fs::write(&path, config.to_toml().unwrap()).unwrap();
    let agent = penguindome_tests::AgentHost {
        config: path,
        ..agent
    };
    let out = agent.cmd(&["run"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed verification"),
        "{}",
        text(&out)
    );
    assert_eq!(agent.status()["last_update_at"], Value::Null);
}

fn sigkill_during_a_burst_loses_no_acknowledged_submission(backend: Backend) {
    const CLIENTS: usize = 10;
    const PER_CLIENT: usize = 100;
    let site = Site::init_on(&backend);
    site.allow_bursts();
    let server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let clients: Vec<SimClient> = (0..CLIENTS)
        .map(|i| SimClient::enroll(&config, &transport, &format!("burst-{i}")).unwrap())
        .collect();

    let acked: Arc<Mutex<HashMap<String, BTreeSet<u64>>>> = Arc::default();
    let total_acked = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        for (i, client) in clients.iter().enumerate() {
            let acked = acked.clone();
            let total = total_acked.clone();
            let dead = dead.clone();
            let config = config.clone();
            scope.spawn(move || {
                let transport = Transport::new(&config).unwrap();
                for n in 1..=PER_CLIENT as u64 {
                    let report =
                        SimClient::report(&format!("burst-{i}"), json!({"burst": {"n": n}}));
                    match transport.post(paths::SUBMIT, &client.seal(&report)) {
                        Ok(r) if r.status == 200 => {
                            acked
                                .lock()
                                .unwrap()
                                .entry(client.id.clone())
                                .or_default()
                                .insert(n);
                            total.fetch_add(1, Ordering::SeqCst);
                        }
                        _ if dead.load(Ordering::SeqCst) => break,
                        // A busy store may ask for a retry: not an
                        // acknowledgement, so nothing is owed.
                        Ok(r) if r.status == 503 => {}
                        Ok(r) => panic!("unexpected answer before the crash: {}", r.describe()),
                        Err(e) => panic!("unexpected failure before the crash: {e}"),
                    }
                }
            });
        }
        // Crash the server in the middle of the burst.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while total_acked.load(Ordering::SeqCst) < 300 {
            if std::time::Instant::now() > deadline {
                // Stop the senders before failing, so the scope can end.
                dead.store(true, Ordering::SeqCst);
                server.kill();
                panic!("the server acknowledged too few submissions in 120 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        dead.store(true, Ordering::SeqCst);
        server.kill();
    });
    let acked = acked.lock().unwrap().clone();
    let count: usize = acked.values().map(BTreeSet::len).sum();
    assert!(
        (300..CLIENTS * PER_CLIENT).contains(&count),
        "the crash came mid-burst ({count} acknowledged)"
    );

    let _server = site.start();
    for (client, numbers) in &acked {
        let stored: BTreeSet<u64> = site.burst_history(client).into_iter().collect();
        let missing: Vec<_> = numbers.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "client {client}: acknowledged but lost: {missing:?}"
        );
    }
}

#[test]
fn server_speaks_the_systemd_notify_protocol() {
    use std::os::unix::net::UnixDatagram;
    let site = Site::init();
    let socket_path = site.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = site.start_with_env(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !(messages.iter().any(|m: &String| m.contains("READY=1"))
        && messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = socket.recv(&mut buf).expect("the server keeps notifying");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = messages.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains(&format!(
            "STATUS=listening on https://127.0.0.1:{}",
            site.port
        )),
        "{ready}"
    );
    assert!(server.stop().success());
    let mut rest = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if rest.last().unwrap().contains("STOPPING=1") {
            break;
        }
    }
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
}

#[test]
fn a_broken_store_writer_fails_health_and_stops_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let site = Site::init();
    assert!(site.start().stop().success());
    // A seen nonce the writer cannot load makes it refuse every write.
    let db = site.data_dir.join("penguindome.db");
    let script = format!(
        "import sqlite3; c = sqlite3.connect({:?}); \
         c.execute(\"INSERT INTO nonces (client_id, nonce, expires_at) VALUES (x'00ff', 'n', {})\"); \
         c.commit()",
        db.display().to_string(),
        Utc::now().timestamp() + 3600
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let socket_path = site.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _server = site.start_unhealthy(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    // Three seconds of what the server says: at a 400 ms watchdog a
    // healthy server would ping several times.
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("STATUS=store unhealthy")),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("WATCHDOG=1")),
        "{messages:?}"
    );
}

#[test]
fn several_listeners_record_where_clients_came_in() {
    let site = Site::init();
    let plain_port = penguindome_tests::free_port();
    let toml = site.config_dir.join("server.toml");
    let mut server_toml = std::fs::read_to_string(&toml).unwrap();
    server_toml.push_str(&format!(
        "\n[[listener]]\nname = \"local\"\naddress = \"127.0.0.1:{plain_port}\"\n"
    ));
    std::fs::write(&toml, server_toml).unwrap();
    let server = site.start();
    // The listeners answer a moment before the line naming them is logged.
    server.wait_for_log(&format!("http://127.0.0.1:{plain_port} (local)"));

    // An agent that talks plain HTTP to the loopback listener, by consent.
    let agent = site.agent("local-agent");
    let mut config = site.agent_config();
    config.server_url = format!("http://127.0.0.1:{plain_port}");
    config.ca_certificate = None;
    let path = agent.root.join("agent.toml");
    std::fs::write(&path, config.to_toml().unwrap()).unwrap();
    let refused = penguindome_tests::AgentHost {
        config: path.clone(),
        ..site.agent("no-consent")
    };
    let out = refused.cmd(&["run"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_plain_http"),
        "{}",
        text(&out)
    );

    config.allow_plain_http = true;
    std::fs::write(&path, config.to_toml().unwrap()).unwrap();
    let agent = penguindome_tests::AgentHost {
        config: path,
        ..agent
    };
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(doc["last_listener"], "local");

    let tls_agent = site.agent("tls-agent");
    assert!(tls_agent.cmd(&["run"]).status.success());
    let doc = site.admin_json(&["clients", "show", &tls_agent.machine_id, "--json"]);
    assert_eq!(doc["last_listener"], "main");
}

#[test]
fn a_ca_signed_certificate_is_checked_against_the_system_roots() {
    // A private CA stands in for a public one; SSL_CERT_FILE stands in for
    // the system's trust store, which the agent reads when nothing is pinned.
    let pki = penguindome_tests::PrivateCa::issue("Test Root CA", &["127.0.0.1"]);

    let site = Site::init_with(|dir| {
        std::fs::write(dir.join("server.crt"), &pki.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &pki.key_pem).unwrap();
        std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
        vec![
            "--tls-cert".into(),
            dir.join("server.crt").display().to_string(),
            "--tls-key".into(),
            dir.join("server.key").display().to_string(),
        ]
    });
    assert_eq!(
        site.agent_config().ca_certificate,
        None,
        "nothing is pinned for a CA-signed certificate"
    );
    let _server = site.start_with_ca(&site.dir.path().join("ca.pem"));

    let agent = site.agent("ca-client");
    // Without the CA among the trusted roots the server is not believed.
    let empty = site.dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    // A refused certificate is not an offline laptop: the run fails.
    let out = agent.cmd_with_env(&["run"], &[("SSL_CERT_FILE", &empty)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr.contains("refused the certificate") && stderr.contains("UnknownIssuer"),
        "{}",
        text(&out)
    );
    assert_eq!(agent.status()["enrolled"], false);
    // With it, the agent enrolls and reports.
    let out = agent.cmd_with_env(
        &["run"],
        &[("SSL_CERT_FILE", &site.dir.path().join("ca.pem"))],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(agent.status()["enrolled"], true);
}

#[test]
fn a_trusted_proxy_names_the_client_and_nobody_else_can() {
    let site = Site::init();
    let proxy_port = penguindome_tests::free_port();
    let toml = site.config_dir.join("server.toml");
    let mut server_toml = std::fs::read_to_string(&toml).unwrap();
    server_toml.push_str(&format!(
        "\n[[listener]]\nname = \"behind-proxy\"\naddress = \"127.0.0.1:{proxy_port}\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n"
    ));
    std::fs::write(&toml, server_toml).unwrap();
    let out = site.admin(&["access", "allow-ip", "repo", "10.0.0.0/8"]);
    assert!(out.status.success(), "{}", text(&out));
    let server = site.start();

    // The HTTP status of a repository request, as curl saw it.
    let status = |base: &str, forwarded: Option<&str>| {
        let url = format!("{base}/penguindome/v1/repo/apt/dists/stable/InRelease");
        let get = Get::new(&url, &site.config_dir.join("tls/server.crt"));
        match forwarded {
            Some(f) => get.header(&format!("X-Forwarded-For: {f}")).send(),
            None => get.send(),
        }
        .status
    };
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    // Through the proxy, a client in 10.0.0.0/8 passes the access rules
    // (and finds nothing published yet); one outside does not, and the
    // refusal is logged with its address.
    assert_eq!(status(&proxy, Some("10.1.2.3")), 404);
    assert_eq!(status(&proxy, Some("10.1.2.3, 192.0.2.9")), 401);
    assert_eq!(status(&proxy, None), 401);
    // A proxy's garbage is refused, not guessed at.
    assert_eq!(status(&proxy, Some("10.1.2.3, unknown")), 400);
    // The same header sent straight to a listener without trusted proxies
    // proves nothing.
    assert_eq!(status(&site.url, Some("10.1.2.3")), 401);

    // A signed submission through the proxy records the client's address.
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let client = SimClient::enroll(&config, &transport, "proxied").unwrap();
    let sealed = client.seal(&SimClient::report("proxied", json!({})));
    let body = site.dir.path().join("proxied-report.json");
    std::fs::write(&body, sealed.payload()).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--output",
            "/dev/null",
        ])
        .args(["--header", "content-type: application/json"])
        .args([
            "--header",
            &format!(
                "{}: {}",
                penguindome_protocol::SIGNATURE_HEADER,
                sealed.signature_header()
            ),
        ])
        .args(["--header", "X-Forwarded-For: 198.51.100.4"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("{proxy}{}", paths::SUBMIT))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let doc = site.admin_json(&["clients", "show", &client.id, "--json"]);
    assert_eq!(doc["last_address"], "198.51.100.4", "{doc:#}");
    assert_eq!(doc["last_listener"], "behind-proxy");
    server.wait_for_log("192.0.2.9");
}

#[test]
fn client_text_reaches_the_terminal_without_escapes() {
    let site = Site::init();
    let _server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let hostile = "evil\u{1b}[2J\u{202e}host";
    let client = SimClient::enroll(&config, &transport, hostile).unwrap();
    let report = SimClient::report(
        hostile,
        json!({"site": {"k\u{1b}]0;title\u{7}": "v\u{202e}alue\u{1b}[31m"}}),
    );
    assert_eq!(client.submit(&transport, &report).status, 200);
    for args in [
        vec!["clients", "list"],
        vec!["clients", "show", &client.id],
        vec!["clients", "history", &client.id],
    ] {
        let out = site.admin(&args);
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("evil"), "{args:?}: {stdout}");
        assert!(
            !stdout.contains('\u{1b}') && !stdout.contains('\u{202e}') && !stdout.contains('\u{7}'),
            "{args:?} printed client-controlled escapes: {stdout:?}"
        );
    }
}

#[test]
fn a_refused_server_certificate_fails_the_run_and_reaches_the_audit() {
    let site = Site::init();
    let _server = site.start();
    let agent = site.agent("pinned");
    assert!(agent.cmd(&["run"]).status.success());
    // The certificate the agent now sees is not the one it pins, as under
    // an interception: its pin is another CA's. (An interceptor's
    // certificate is none of those the server announced either.)
    std::fs::remove_file(agent.state_dir().join("server-certificates.pem")).unwrap();
    let mut config = site.agent_config();
    config.ca_certificate = Some(penguindome_tests::PrivateCa::issue("Interceptor", &["x"]).ca_pem);
    let wrong = agent.root.join("agent.toml");
    std::fs::write(&wrong, config.to_toml().unwrap()).unwrap();
    let intercepted = penguindome_tests::AgentHost {
        config: wrong,
        root: agent.root.clone(),
        machine_id: agent.machine_id.clone(),
    };
    let out = intercepted.cmd(&["run", "--force-collect"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused the certificate") && stderr.contains("ERROR"),
        "{}",
        text(&out)
    );
    let status = intercepted.status();
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the certificate"),
        "{status}"
    );
    // With the right pin again, the report spooled meanwhile tells the
    // server, and the audit raises it.
    let out = agent.cmd(&["run", "--force-submit"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    let refusal = &doc["plugins"]["agent"]["certificate_refused"];
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .contains("invalid peer certificate"),
        "{doc}"
    );
    let out = site.admin(&["issues", "audit", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let issues = site.admin_json(&["issues", "list", "--json"]);
    assert!(
        issues
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "server-certificate-refused"
                && i["client_id"] == agent.machine_id.as_str()),
        "{issues}"
    );
}

/// A tmpfs mounted over a directory for one test, unmounted after.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", text(&out));
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills a file system: writes to `path` until the disk refuses.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = [0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_still_sends_what_waits_and_saves_the_state() {
    let site = Site::init();
    let server = site.start();
    let agent = site.agent_with_plugins("full");
    let state = agent.state_dir();
    let _disk = Tmpfs::mount(&state, "512k");
    let counter = counter_plugin(&agent);
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.stop().success());
    for n in 1..=2 {
        std::fs::write(&counter, n.to_string()).unwrap();
        let out = agent.cmd(&["run", "--force-collect"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(agent.status()["spool_reports"], 2);
    let saved = |key: &str| -> Value {
        let bytes = std::fs::read(state.join("state.json")).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()[key].clone()
    };
    let submitted_before = saved("last_submit_at");

    fill(&state.join("filler"));
    let _server = site.start();
    std::fs::write(&counter, "3").unwrap();
    let out = agent.cmd(&["run", "--force-collect", "--force-submit"]);
    // The new collection had no room: the run says so...
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("cannot spool the report"),
        "{}",
        text(&out)
    );
    // ...but what waited was sent, and the state was saved.
    assert_eq!(agent.status()["spool_reports"], 0);
    let history = site.admin_json(&["clients", "history", &agent.machine_id, "--json"]);
    assert_eq!(
        plugin_values(&history, "plugins.counter.n"),
        vec![json!(1), json!(2)],
        "{history:#}"
    );
    assert_ne!(saved("last_submit_at"), submitted_before);
    let leftovers: Vec<_> = std::fs::read_dir(state.join("spool"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with('.')),
        "{leftovers:?}"
    );
}
