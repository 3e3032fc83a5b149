//! The MongoDB backend end to end: outages, and moving a site between
//! stores.

use std::time::Duration;

use penguindome_tests::{Backend, Site, text};

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
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("clients"),
        "progress is shown"
    );
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
