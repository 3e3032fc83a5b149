//! The user story on a real client: a debootstrapped Debian booted under
//! systemd-nspawn runs the server's bootstrap script, apt installs the
//! agent from the site's signed repository over HTTPS (pinned certificate,
//! Basic auth), the timer runs it, its report reaches the server, its log
//! is in the journal, and the next release reaches it through apt by
//! itself.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use penguindome_tests::container::BootedDebian;
use penguindome_tests::{Site, bin, text};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn release(site: &Site) -> String {
    let agent = bin("penguindome-agent");
    let out = site.admin(&[
        "release",
        "--formats",
        "deb",
        "--agent-binary",
        &agent.display().to_string(),
    ]);
    assert!(out.status.success(), "pdome-admin release: {}", text(&out));
    stdout(&out)
}

/// Polls `check` every two seconds until it holds or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "gave up waiting for {what} after {limit:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn apt_installs_and_upgrades_the_agent_in_a_booted_debian() {
    let site = Site::init();
    let out = release(&site);
    assert!(out.contains("Published release 1"), "{out}");
    let _server = site.start();
    let password = std::fs::read_to_string(site.config_dir.join("repo-password")).unwrap();
    let ca = site.dir.path().join("ca.pem");
    std::fs::write(&ca, site.agent_config().ca_certificate.unwrap()).unwrap();

    // What an admin hands to a new machine: the bootstrap script.
    let script = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(&ca)
        .arg("--user")
        .arg(format!("agent:{}", password.trim()))
        .arg(format!(
            "{}/penguindome/v1/download_release?format=deb&bootstrap=1",
            site.url
        ))
        .output()
        .unwrap();
    assert!(script.status.success(), "{}", text(&script));
    assert!(script.stdout.starts_with(b"#!/bin/sh"));
    let c = BootedDebian::boot(|root: &Path| {
        std::fs::write(root.join("root/bootstrap.sh"), &script.stdout).unwrap();
    });

    let out = c.exec(&["sh", "/root/bootstrap.sh"]);
    assert!(out.status.success(), "bootstrap: {}", text(&out));
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-enabled", "penguindome.timer"])),
        "enabled"
    );
    let status = c.exec(&["systemctl", "status", "--no-pager", "penguindome.timer"]);
    assert!(
        stdout(&status).contains("Active: active (waiting)"),
        "{}",
        text(&status)
    );
    assert_eq!(
        stdout(&c.exec(&["stat", "-c", "%a %U", "/etc/penguindome/agent.toml"])),
        "600 root"
    );
    let v = env!("CARGO_PKG_VERSION");
    let installed = || stdout(&c.exec(&["dpkg-query", "-W", "-f=${Version}", "penguindome-agent"]));
    assert_eq!(installed(), format!("{v}-1"));

    // The timer's first run enrolls and reports.
    let client = wait_for(Duration::from_secs(150), "the first report", || {
        let list = site.admin_json(&["clients", "list", "--json"]);
        let clients = list.as_array()?;
        (clients.len() == 1 && !clients[0]["collected_at"].is_null())
            .then(|| clients[0].to_string())
    });
    let journal = c.exec(&[
        "journalctl",
        "--no-pager",
        "-u",
        "penguindome-agent.service",
    ]);
    let journal = stdout(&journal);
    assert!(
        journal.contains("penguindome-agent["),
        "no agent log in the journal: {journal}"
    );
    assert!(journal.contains("enrolled with"), "{journal}");

    // A new release reaches the client through apt, by itself.
    let out = release(&site);
    assert!(out.contains("Published release 2"), "{out}");
    wait_for(Duration::from_secs(240), "the upgrade to release 2", || {
        (installed() == format!("{v}-2")).then_some(String::new())
    });
    let upgrade_log = stdout(&c.exec(&[
        "journalctl",
        "--no-pager",
        "-u",
        "penguindome-upgrade.service",
    ]));
    assert!(
        upgrade_log.contains(&format!("{v}-1 -> {v}-2")),
        "{upgrade_log}"
    );
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-active", "penguindome.timer"])),
        "active"
    );
    assert!(!client.is_empty());
}
