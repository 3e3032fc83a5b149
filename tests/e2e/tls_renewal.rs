//! `pdome-admin tls renew`: agents learn a renewed certificate through
//! their signed update answers before the server presents it.

use std::time::Duration;

use penguindome_tests::http::get;
use penguindome_tests::{AgentHost, Site, text};

const HEALTH: &str = "/penguindome/v1/health";

fn run_ok(agent: &AgentHost) {
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "agent run: {}", text(&out));
}

fn certificates_in(pem: &str) -> usize {
    pem.matches("BEGIN CERTIFICATE").count()
}

#[test]
fn a_renewed_certificate_reaches_agents_before_it_is_served() {
    let site = Site::init();
    let server = site.start();
    // Each machine keeps the agent.toml it was installed with.
    let (a, b) = (site.agent_with_plugins("a"), site.agent_with_plugins("b"));
    run_ok(&a);
    run_ok(&b);
    let announced = std::fs::read_to_string(a.state_dir().join("server-certificates.pem")).unwrap();
    assert_eq!(certificates_in(&announced), 1, "the current one");

    let out = site.admin(&["tls", "renew"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Staged"), "{}", text(&out));
    let bundle = site.agent_config().ca_certificate.unwrap();
    assert_eq!(certificates_in(&bundle), 2, "releases ship both meanwhile");
    let again = site.admin(&["tls", "renew"]);
    assert!(text(&again).contains("already staged"), "{}", text(&again));

    // Past the server's refresh, a's next run learns the new certificate;
    // b stays away.
    std::thread::sleep(Duration::from_secs(6));
    run_ok(&a);
    let announced = std::fs::read_to_string(a.state_dir().join("server-certificates.pem")).unwrap();
    assert_eq!(certificates_in(&announced), 2, "current and staged");
    let status = site.admin_json(&["tls", "status", "--json"]);
    assert_eq!(status["learned"], 1, "{status}");
    assert_eq!(
        status["waiting"][0]["client_id"],
        b.machine_id.as_str(),
        "{status}"
    );

    // Finishing would strand b: refused unless forced.
    let out = site.admin(&["tls", "renew", "--finish"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&b.machine_id) && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    // A --finish that stopped after moving the key (as a crash would
    // leave it) is completed by the next one.
    let tls = site.config_dir.join("tls");
    for f in ["crt", "key"] {
        std::fs::copy(
            tls.join(format!("server.{f}")),
            tls.join(format!("server.previous.{f}")),
        )
        .unwrap();
    }
    std::fs::rename(tls.join("server.next.key"), tls.join("server.key")).unwrap();
    let out = site.admin(&["tls", "renew", "--finish"]);
    assert!(out.status.success(), "{}", text(&out));
    let previous = site.config_dir.join("tls/server.previous.crt");
    let current = site.config_dir.join("tls/server.crt");
    assert!(previous.exists() && !site.config_dir.join("tls/server.next.crt").exists());
    server.reload();

    let url = format!("{}{HEALTH}", site.url);
    assert_eq!(
        get(&url, &current, None).status,
        200,
        "the new certificate is served"
    );
    assert_eq!(get(&url, &previous, None).status, 0, "the old one is not");
    // a trusts it though its agent.toml pins only the old one; b cannot.
    run_ok(&a);
    let out = b.cmd(&["run"]);
    assert!(!out.status.success(), "b was left behind: {}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "and says why: {}",
        text(&out)
    );
    // New installations pin the new certificate alone.
    let pinned = site.agent_config().ca_certificate.unwrap();
    assert_eq!(
        pinned.trim(),
        std::fs::read_to_string(&current).unwrap().trim()
    );
}
