//! The MongoDB backend end to end: outages, and moving a site between
//! stores.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use penguindome_agent::session::{Authority, Session, SessionError};
use penguindome_agent::transport::Transport;
use penguindome_protocol::SecretKey;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_tests::{Backend, FerretDb, Postgres, SimClient, Site, bin, text};
use serde_json::json;

#[test]
fn a_database_outage_is_reported_and_survived() {
    use std::os::unix::net::UnixDatagram;
    let Some(ferretdb) = penguindome_tests::ferretdb() else {
        return;
    };
    let port = penguindome_tests::free_port();
    // The site's database is not running yet.
    let site = Site::init_on(&Backend::Mongodb(format!("mongodb://127.0.0.1:{port}/")));
    let socket_path = site.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let server = site.start_unhealthy(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buf = [0u8; 4096];
    let mut said = String::new();
    while !said.contains("STATUS=store unhealthy") {
        let n = socket
            .recv(&mut buf)
            .expect("the server reports its store's health");
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(said.contains("cannot reach"), "{said}");

    // An agent meanwhile keeps its report and does not fail.
    let agent = site.agent("patient");
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("temporarily unavailable"),
        "{}",
        text(&out)
    );
    assert_eq!(agent.status()["spool_reports"], 1);

    // The database comes up; the server notices and serves again.
    let _db = penguindome_tests::FerretDb::start(&ferretdb, port);
    while !said.contains("store healthy") {
        let n = socket
            .recv(&mut buf)
            .expect("the server reports the recovery");
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let out = agent.cmd(&["run", "--force-submit"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        server.log_text()
    );
    assert_eq!(agent.status()["spool_reports"], 0);
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert!(doc["plugins"]["os_info"]["kernel"].is_string());
}

/// On a terminal, `store migrate` draws a bar per kind of record.
fn migrate_again_on_a_terminal(site: &Site, target: &str) {
    let mut cmd = std::process::Command::new(bin("pdome-admin"));
    cmd.arg("--config-dir")
        .arg(&site.config_dir)
        .args(["store", "migrate", "--force", "--to", target]);
    let mut term = penguindome_tests::terminal::Terminal::spawn(cmd, 120, 40);
    let status = term.wait_exit(std::time::Duration::from_secs(120));
    let screen = term.screen();
    assert!(status.success(), "{screen}");
    assert!(
        screen.contains("client keys") && screen.contains("1/1") && screen.contains("=]"),
        "progress bars on a terminal: {screen}"
    );
}

#[test]
fn a_site_moves_from_the_embedded_store_to_mongodb_and_back() {
    let Some(Backend::Mongodb(uri)) = Backend::mongodb() else {
        return;
    };
    let site = Site::init();
    let server = site.start();
    let agent = site.agent("mover");
    assert!(agent.cmd(&["run"]).status.success());
    assert!(server.stop().success());
    let before = site.admin_json(&["clients", "history", &agent.machine_id, "--json"]);
    let doc_before = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);

    let target = format!("{uri}pdmig_{}", penguindome_protocol::envelope::new_nonce());
    let out = site.admin(&["store", "migrate", "--to", &target]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Copied and verified: 1 clients, 1 client keys"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\r') && !stderr.contains("[="),
        "no progress bar when stderr is not a terminal: {stderr:?}"
    );
    migrate_again_on_a_terminal(&site, &target);
    // Copying again into the now non-empty target needs --force.
    let again = site.admin(&["store", "migrate", "--to", &target]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        text(&again)
    );

    // Point the server at MongoDB, as the command says.
    let toml = site.config_dir.join("server.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    let sqlite_section = "[store]\nbackend = \"sqlite\"\npath = \"penguindome.db\"\n";
    assert!(config.contains(sqlite_section), "{config}");
    std::fs::write(
        &toml,
        config.replace(
            sqlite_section,
            &format!("[store]\nbackend = \"mongodb\"\nuri = \"{target}\"\n"),
        ),
    )
    .unwrap();
    let server = site.start();
    assert_eq!(
        site.admin_json(&["clients", "history", &agent.machine_id, "--json"]),
        before
    );
    assert_eq!(
        site.admin_json(&["clients", "show", &agent.machine_id, "--json"]),
        doc_before
    );
    // The agent's key and enrollment carry over: it just goes on reporting.
    let out = agent.cmd(&["run", "--force-collect"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        server.log_text()
    );
    let after = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_ne!(after["collected_at"], doc_before["collected_at"]);
    assert!(server.stop().success());

    // And back to a new embedded database.
    let back = site.dir.path().join("data/back.db");
    let out = site.admin(&[
        "store",
        "migrate",
        "--to",
        &format!("sqlite:{}", back.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backend = \"sqlite\""));
}

/// A number from the operating system's randomness, below `bound`.
fn random_below(bound: u64) -> u64 {
    let hex = &penguindome_protocol::envelope::new_nonce()[..16];
    u64::from_str_radix(hex, 16).unwrap() % bound
}

/// Enrolls a new machine, retrying through outages until it is in: an
/// interrupted enrollment must never lock the machine out.
fn enroll_until_enrolled(config: &AgentConfig, transport: &Transport, n: usize) -> SimClient {
    let id = penguindome_protocol::envelope::new_nonce();
    let key = SecretKey::generate(&format!("kill {id}")).unwrap();
    let session = Session::new(config, transport, &key, id.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match session.enroll(
            &format!("joiner-{n}"),
            Authority::SiteCredential(&config.enrollment_credential),
        ) {
            Ok(_) => break,
            Err(e) if e.is_offline() || matches!(e, SessionError::Transport(_)) => {}
            Err(e) => panic!("machine {id} cannot enroll after an outage: {e}"),
        }
        assert!(Instant::now() < deadline, "not enrolled within 180 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    SimClient { id, key }
}

#[test]
fn killing_the_database_during_a_burst_loses_no_acknowledged_submission() {
    let Some(binary) = penguindome_tests::ferretdb() else {
        return;
    };
    let port = penguindome_tests::free_port();
    let db_dir = tempfile::tempdir().unwrap();
    let mut db = Some(FerretDb::start_in(&binary, port, db_dir.path()));
    let site = Site::init_on(&Backend::Mongodb(format!("mongodb://127.0.0.1:{port}/")));
    burst_through_outages(&site, || {
        drop(db.take());
        std::thread::sleep(Duration::from_millis(100 + random_below(700)));
        db = Some(FerretDb::start_in(&binary, port, db_dir.path()));
    });
}

/// The same with FerretDB on PostgreSQL, where it is PostgreSQL that
/// crashes (an immediate stop: no checkpoint, crash recovery on start) and
/// comes back while FerretDB and the server stay up.
#[test]
fn crashing_postgresql_under_ferretdb_during_a_burst_loses_no_acknowledged_submission() {
    let Some(binary) = penguindome_tests::ferretdb() else {
        return;
    };
    let postgres = Postgres::start();
    postgres.create_database("burst");
    let port = penguindome_tests::free_port();
    let state = tempfile::tempdir().unwrap();
    let _db = FerretDb::start_on_postgres(&binary, port, state.path(), &postgres, "burst");
    let site = Site::init_on(&Backend::Mongodb(format!("mongodb://127.0.0.1:{port}/")));
    burst_through_outages(&site, || {
        postgres.crash();
        std::thread::sleep(Duration::from_millis(100 + random_below(700)));
        postgres.resume();
    });
}

/// Six simulated agents send 30 reports each, resending until one is
/// acknowledged, while machines keep enrolling; `outage` takes the
/// database down and brings it back at four random moments spread over
/// the burst. Every acknowledged report must be stored exactly once, and
/// every machine that enrolled must be able to report.
fn burst_through_outages(site: &Site, mut outage: impl FnMut()) {
    const CLIENTS: usize = 6;
    const PER_CLIENT: u64 = 30;
    const KILLS: usize = 4;
    site.allow_bursts();
    let server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let clients: Vec<SimClient> = (0..CLIENTS)
        .map(|i| SimClient::enroll(&config, &transport, &format!("kill-{i}")).unwrap())
        .collect();

    let acked = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let joiners: Mutex<Vec<SimClient>> = Mutex::default();
    std::thread::scope(|scope| {
        for (i, client) in clients.iter().enumerate() {
            let (config, acked) = (&config, &acked);
            scope.spawn(move || {
                let transport = Transport::new(config).unwrap();
                for n in 1..=PER_CLIENT {
                    let report =
                        SimClient::report(&format!("kill-{i}"), json!({"burst": {"n": n}}));
                    client.submit_until_stored(&transport, &report);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let (config, done, joiners) = (&config, &done, &joiners);
        scope.spawn(move || {
            let transport = Transport::new(config).unwrap();
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let joiner = enroll_until_enrolled(config, &transport, n);
                joiners.lock().unwrap().push(joiner);
                n += 1;
            }
        });
        // Kill the database at random moments spread over the burst, and
        // bring it back on the same data.
        let total = CLIENTS as u64 * PER_CLIENT;
        for k in 1..=KILLS as u64 {
            let deadline = Instant::now() + Duration::from_secs(180);
            while acked.load(Ordering::SeqCst) < k * total / (KILLS as u64 + 1) {
                assert!(Instant::now() < deadline, "the burst stalled");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(random_below(300)));
            outage();
        }
        while acked.load(Ordering::SeqCst) < total {
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::SeqCst);
    });

    // Every acknowledged report is in the audit trail, each exactly once.
    for client in &clients {
        let mut stored = site.burst_history(&client.id);
        stored.sort_unstable();
        let expected: Vec<u64> = (1..=PER_CLIENT).collect();
        assert_eq!(stored, expected, "client {}", client.id);
    }
    // Every machine that enrolled during the outages can report.
    let joiners = joiners.into_inner().unwrap();
    assert!(!joiners.is_empty());
    for (n, joiner) in joiners.iter().enumerate() {
        let report = SimClient::report(&format!("joiner-{n}"), json!({"joined": true}));
        joiner.submit_until_stored(&transport, &report);
    }
    drop(server);
}
