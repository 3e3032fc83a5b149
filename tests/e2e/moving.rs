//! `pdome-admin clients configure`: a signed move to another address and
//! certificate, tried once by the agent and rolled back when it fails.

use penguindome_tests::{AgentHost, Site, free_port, text};
use serde_json::Value;

fn run_ok(agent: &AgentHost) {
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "agent run: {}", text(&out));
}

/// The action's (state, detail) on the agent's client.
fn outcome(site: &Site, agent: &AgentHost, id: &str) -> (String, String) {
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    let a = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("action {id} not shown: {doc}"));
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (s(&a["state"]), s(&a["detail"]))
}

fn configure(site: &Site, agent: &AgentHost, url: &str, cert: &str) -> String {
    let queued = site.admin_json(&[
        "clients",
        "configure",
        &agent.machine_id,
        "--url",
        url,
        "--certificate",
        cert,
        "--json",
    ]);
    queued["id"].as_str().unwrap().to_string()
}

#[test]
fn a_client_moves_to_a_new_address_and_a_failed_move_is_rolled_back() {
    let site = Site::init();
    let server = site.start();
    let port = free_port();
    let out = site.admin(&[
        "listeners",
        "add",
        "new",
        "--address",
        &format!("127.0.0.1:{port}"),
        "--tls",
        "self-signed",
        "localhost",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    server.reload();
    let agent = site.agent_with_plugins("laptop");
    run_ok(&agent);
    let cert = site.config_dir.join("tls/new.crt");
    let cert = cert.to_str().unwrap();

    let bad = site.admin(&[
        "clients",
        "configure",
        &agent.machine_id,
        "--url",
        "http://x",
    ]);
    assert!(
        !bad.status.success() && text(&bad).contains("https"),
        "{}",
        text(&bad)
    );

    // Nothing answers there: the agent keeps its configuration.
    let nowhere = format!("https://localhost:{}", free_port());
    let id = configure(&site, &agent, &nowhere, cert);
    let _ = agent.cmd(&["run"]);
    let (state, detail) = outcome(&site, &agent, &id);
    assert_eq!(state, "failed", "{detail}");
    assert!(detail.contains(&format!("kept {}", site.url)), "{detail}");
    run_ok(&agent);
    assert!(!agent.state_dir().join("moved.json").exists());

    // The new listener answers with the new pin: the agent moves.
    let new_url = format!("https://localhost:{port}");
    let id = configure(&site, &agent, &new_url, cert);
    run_ok(&agent);
    let (state, detail) = outcome(&site, &agent, &id);
    assert_eq!(state, "succeeded", "{detail}");
    assert!(detail.contains(&format!("now using {new_url}")), "{detail}");
    let status = agent.status();
    assert_eq!(status["server_url"], new_url.as_str());
    assert_eq!(status["moved"]["from"], site.url.as_str());
    assert_eq!(status["enrolled"], true, "the same server, elsewhere");

    // From the next run on it reports there, even once the old listener
    // is gone, and stays enrolled.
    let out = site.admin(&["listeners", "remove", "main"]);
    assert!(out.status.success(), "{}", text(&out));
    server.reload();
    let out = agent.cmd(&["run", "--force-collect", "--force-submit"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(doc["last_listener"], "new", "{doc}");
    assert_eq!(agent.status()["enrolled"], true);
}
