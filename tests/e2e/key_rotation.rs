//! `pdome-admin keys rotate`: agents follow a new server signing key, the
//! one online during the transition and the one offline through all of it,
//! and refuse the old key once the new one has signed.

use std::time::Duration;

use penguindome_protocol::PublicKey;
use penguindome_tests::{AgentHost, Site, text};

/// Past the server's re-reading of its key files.
const REFRESH: Duration = Duration::from_secs(6);

fn run_ok(agent: &AgentHost) {
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "agent run: {}", text(&out));
}

fn pinned_key(site: &Site) -> String {
    let config = site.agent_config();
    PublicKey::from_bytes(config.server_public_key.as_bytes())
        .unwrap()
        .fingerprint()
        .to_string()
}

/// What the agent remembers about the server's keys.
fn remembered(agent: &AgentHost) -> serde_json::Value {
    let file = agent.state_dir().join("server-keys.json");
    serde_json::from_slice(&std::fs::read(&file).unwrap_or_default()).unwrap_or_default()
}

#[test]
fn agents_follow_a_rotated_key_even_when_offline_through_it() {
    let site = Site::init();
    let _server = site.start();
    // Both were installed before the rotation; b then stays away.
    let (a, b) = (site.agent_with_plugins("a"), site.agent_with_plugins("b"));
    run_ok(&a);
    run_ok(&b);
    let old = pinned_key(&site);
    assert_eq!(
        remembered(&a),
        serde_json::Value::Null,
        "nothing to remember yet"
    );

    let out = site.admin(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Staged"), "{}", text(&out));
    let again = site.admin(&["keys", "rotate"]);
    assert!(text(&again).contains("already staged"), "{}", text(&again));
    assert_eq!(
        pinned_key(&site),
        old,
        "agent.toml changes only at --finish"
    );

    std::thread::sleep(REFRESH);
    run_ok(&a);
    let learned = remembered(&a);
    assert_eq!(learned["chain"].as_array().unwrap().len(), 1, "{learned}");
    assert!(
        learned["signer"].is_null(),
        "the old key still signs: {learned}"
    );
    let status = site.admin_json(&["keys", "status", "--json"]);
    assert_eq!(status["current"], old.as_str(), "{status}");
    assert_eq!(status["learned"], 1, "{status}");
    assert_eq!(status["waiting"][0]["client_id"], b.machine_id.as_str());

    let out = site.admin(&["keys", "rotate", "--finish"]);
    assert!(out.status.success(), "{}", text(&out));
    let new = pinned_key(&site);
    assert_ne!(
        new, old,
        "agent.toml pins the new key for new installations"
    );
    assert!(site.config_dir.join("server-key.previous.asc").exists());
    std::thread::sleep(REFRESH);

    // a, whose agent.toml still pins the old key, accepts the new signer;
    // b, offline through the whole window, walks the certification.
    for agent in [&a, &b] {
        run_ok(agent);
        assert_eq!(
            remembered(agent)["signer"],
            new.as_str(),
            "{}",
            agent.machine_id
        );
    }

    // From now on an answer signed with the old key is refused: a server
    // left on it, or someone who kept a copy.
    std::fs::copy(
        site.config_dir.join("server-key.previous.asc"),
        site.config_dir.join("server-key.asc"),
    )
    .unwrap();
    std::thread::sleep(REFRESH);
    let out = a.cmd(&["run"]);
    assert!(!out.status.success(), "old key accepted: {}", text(&out));
    assert!(
        text(&out).contains("does not trust"),
        "and says why: {}",
        text(&out)
    );
}
