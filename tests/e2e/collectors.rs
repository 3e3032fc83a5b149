//! The agent's collectors on real systems: this machine, and Debian 12 and 13
//! booted with systemd under systemd-nspawn (real systemd, D-Bus, sshd,
//! apt lists with a security suite). Every collector must answer, and the
//! central ones with real readings, not "unknown".

use penguindome_protocol::SecretKey;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_tests::bin;
use penguindome_tests::container::{BootedDebian, Suite};
use serde_json::Value;

/// No collector may fail outright.
fn assert_no_errors(plugins: &Value) {
    for (name, v) in plugins.as_object().expect("plugins object") {
        assert!(v.get("error").is_none(), "{name} failed: {v}");
    }
}

fn common_answers(p: &Value) {
    assert_eq!(p["os_updates"]["backend"], "apt", "{}", p["os_updates"]);
    assert!(p["os_updates"]["counts"]["pending"].is_u64());
    assert!(
        p["hd_encryption"]["encrypted"].is_boolean(),
        "{}",
        p["hd_encryption"]
    );
    let fw = p["firewall"]["status"].as_str().unwrap();
    assert!(fw == "on" || fw == "off", "firewall: {}", p["firewall"]);
    assert!(p["users"]["accounts"].is_array());
    assert_ne!(
        p["users"]["root_password"], "unknown",
        "running as root, /etc/shadow is readable"
    );
    assert!(p["sshd"]["status"].is_string());
}

#[test]
fn collect_on_this_machine() {
    let out = std::process::Command::new(bin("penguindome-agent"))
        .args(["--state-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .args(["collect", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &report["plugins"];
    assert_no_errors(p);
    common_answers(p);
}

#[test]
fn collect_inside_booted_debian_12_and_13() {
    // One after the other: containers share the host's network, and only
    // one sshd can listen on port 22.
    for suite in [Suite::Bookworm, Suite::Trixie] {
        collect_inside(suite);
    }
}

fn collect_inside(suite: Suite) {
    let key = SecretKey::generate("Test Server <s@example.test>").unwrap();
    let mut config = AgentConfig::new(
        "https://pd.example.test".into(),
        key.public().to_armored().unwrap(),
        "credential".into(),
    );
    config.collectors.required_packages = vec!["openssh-server".into(), "not-a-package".into()];
    config.collectors.required_services = vec!["ssh".into()];
    let agent = bin("penguindome-agent");
    let ct = BootedDebian::boot_on(suite, |root| {
        std::fs::copy(&agent, root.join("usr/local/bin/penguindome-agent")).unwrap();
        std::fs::create_dir_all(root.join("etc/penguindome")).unwrap();
        std::fs::write(
            root.join("etc/penguindome/agent.toml"),
            config.to_toml().unwrap(),
        )
        .unwrap();
    });
    let out = ct.exec(&["/usr/local/bin/penguindome-agent", "collect", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &report["plugins"];
    if std::env::var_os("PENGUINDOME_SHOW_REPORT").is_some() {
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    }
    assert_no_errors(p);
    common_answers(p);

    // Fresh lists with the security suite: real candidates and a real
    // security evidence line, from the container's own apt state.
    let u = &p["os_updates"];
    assert!(u["lists_refreshed_at"].is_string(), "{u}");
    assert!(
        u["security_evidence"]
            .as_str()
            .unwrap()
            .contains("-security"),
        "{u}"
    );
    let lists = format!("dists_{}-security_main", suite.name());
    assert!(u["evidence"].to_string().contains(&lists), "{u}");
    // sshd runs under the container's systemd; its settings come from sshd -T.
    assert_eq!(p["sshd"]["status"], "running", "{}", p["sshd"]);
    assert!(
        p["sshd"]["config"]["permitrootlogin"].is_string(),
        "{}",
        p["sshd"]
    );
    assert!(
        p["sshd"]["evidence"].to_string().contains("-T"),
        "{}",
        p["sshd"]
    );
    // systemd answered over the container's D-Bus.
    let s = &p["software"];
    assert_eq!(s["services"][0]["name"], "ssh.service", "{s}");
    assert_eq!(s["services"][0]["running"], true, "{s}");
    assert_eq!(s["services"][0]["enabled"], true, "{s}");
    assert_eq!(s["packages"][0]["name"], "not-a-package");
    assert_eq!(s["packages"][0]["installed"], false);
    assert_eq!(s["packages"][1]["installed"], true);
    assert_eq!(s["compliant"], false, "a required package is missing");
    // logind over D-Bus: a booted system with no graphical session.
    assert!(
        p["screenlock"]["sessions"].as_array().unwrap().is_empty(),
        "{}",
        p["screenlock"]
    );
    assert_eq!(p["guest_session"]["enabled"], false);
}
