//! Acting on clients, end to end: patches queued with pdome-admin, handed
//! out in signed `/update` answers, applied by the real agent at most once,
//! and reported back; and everything an agent must refuse.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::Utc;
use penguindome_protocol::actions::{Action, PatchTask, SealedAction, Task};
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::UpdateResponse;
use penguindome_protocol::{Envelope, SERVER_SENDER, SecretKey, Signed};
use penguindome_tests::proxy::{Answer, Proxy};
use penguindome_tests::{AgentHost, Backend, Site, on_both_stores, text};
use serde_json::Value;

on_both_stores!(
    a_patch_delivers_a_plugin_the_next_collection_runs,
    commands_run_once_capped_and_timed_out,
);

fn run(agent: &AgentHost, args: &[&str]) -> String {
    let out = agent.cmd(args);
    assert!(
        out.status.success(),
        "agent {args:?} failed: {}",
        text(&out)
    );
    text(&out)
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn target_states(list: &Value, id: &str) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("patch {id} not listed: {list}"))["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["state"].as_str().unwrap().to_string(),
                t["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn a_patch_delivers_a_plugin_the_next_collection_runs(backend: Backend) {
    let site = Site::init_on(&backend);
    let server = site.start();
    let agent = site.agent_with_plugins("patched");
    let bystander = site.agent_with_plugins("bystander");
    run(&agent, &["run"]);
    run(&bystander, &["run"]);

    let plugin = agent.root.join("plugins/greeting");
    let src = script(
        site.dir.path(),
        "greeting.sh",
        "echo '{\"hello\": \"from a patch\"}'",
    );
    let target = plugin.to_str().unwrap();
    let queued = site.admin_json(&[
        "patch",
        "add",
        "--host",
        &agent.machine_id,
        "--json",
        target,
        src.to_str().unwrap(),
    ]);
    let id = queued["id"].as_str().unwrap().to_string();
    assert_eq!(queued["clients"], 1);
    // The same path cannot be queued twice for one host.
    let again = site.admin(&[
        "patch",
        "add",
        "--host",
        &agent.machine_id,
        target,
        src.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("still pending"), "{}", text(&again));

    let log = run(&agent, &["run", "--force-collect"]);
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(&src).unwrap(),
        "{log}"
    );
    assert_eq!(
        std::fs::metadata(&plugin).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(
        doc["plugins"]["greeting"]["hello"],
        "from a patch",
        "{}",
        server.log_text()
    );
    assert_eq!(doc["actions"][0]["id"], id.as_str());
    assert_eq!(doc["actions"][0]["state"], "succeeded");
    assert!(!doc["actions"][0]["queued_by"].as_str().unwrap().is_empty());
    let list = site.admin_json(&["patch", "list", "--json"]);
    let states = target_states(&list, &id);
    assert_eq!(states.len(), 1, "only the named host");
    assert_eq!(states[0].0, "succeeded");
    assert!(states[0].1.starts_with("wrote"), "{states:?}");
    let history = site.admin_json(&["clients", "history", &agent.machine_id, "--json"]);
    let steps: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["field"] == format!("actions.{id}"))
        .map(|r| &r["new"]["state"])
        .collect();
    assert_eq!(steps, ["queued", "started", "succeeded"]);
    // The other host never saw it.
    run(&bystander, &["run", "--force-collect"]);
    assert!(!bystander.root.join("plugins/greeting").exists());
    assert!(
        site.admin_json(&["clients", "show", &bystander.machine_id, "--json"])["actions"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    removed_then_cancelled(&site, &agent, &plugin, &src);
}

/// `patch rm` deletes the plugin; a patch cancelled before delivery never runs.
fn removed_then_cancelled(site: &Site, agent: &AgentHost, plugin: &Path, src: &Path) {
    let target = plugin.to_str().unwrap();
    let removed = site.admin_json(&["patch", "rm", "--host", &agent.machine_id, "--json", target]);
    run(agent, &["run", "--force-collect"]);
    assert!(!plugin.exists());
    let rm_id = removed["id"].as_str().unwrap();
    let list = site.admin_json(&["patch", "list", "--json"]);
    assert_eq!(target_states(&list, rm_id)[0].0, "succeeded");
    let doc = site.admin_json(&["clients", "show", &agent.machine_id, "--json"]);
    assert_eq!(doc["plugins"]["greeting"], Value::Null, "{doc}");

    // Cancelled before delivery: it never runs.
    let cancelled = site.admin_json(&[
        "patch",
        "add",
        "--host",
        &agent.machine_id,
        "--json",
        target,
        src.to_str().unwrap(),
    ]);
    let c_id = cancelled["id"].as_str().unwrap();
    let out = site.admin_json(&["patch", "cancel", target, "--json"]);
    assert_eq!(out[0]["cancelled_on"][0], agent.machine_id.as_str());
    run(agent, &["run"]);
    assert!(!plugin.exists());
    let list = site.admin_json(&["patch", "list", "--json"]);
    assert_eq!(target_states(&list, c_id)[0].0, "cancelled");
    assert!(
        site.admin_json(&["patch", "list", "--pending", "--json"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// An agent whose server URL is the proxy's.
fn behind(site: &Site, name: &str, proxy: &Proxy) -> AgentHost {
    site.agent_behind(name, &proxy.url)
}

fn server_key(site: &Site) -> SecretKey {
    SecretKey::from_bytes(&std::fs::read(site.config_dir.join("server-key.asc")).unwrap()).unwrap()
}

/// The answer with its actions changed by `f`, signed again by `key`.
fn resealed(key: &SecretKey, a: &Answer, f: impl FnOnce(&mut Vec<SealedAction>)) -> Answer {
    let signed: Signed<UpdateResponse> = serde_json::from_slice(&a.body).unwrap();
    let mut body = signed.body;
    f(&mut body.actions);
    let e = Envelope::seal_at(
        key,
        SERVER_SENDER,
        signed.issued_at,
        signed.nonce,
        signed.in_reply_to.as_deref(),
        &body,
    )
    .unwrap();
    Answer {
        signature: e.signature_header(),
        body: e.into_payload(),
    }
}

/// A patch action as a compromised server might send it.
fn crafted(client: &str, path: &str, expires_in: chrono::Duration) -> SealedAction {
    let content = b"#!/bin/sh\necho '{}'\n";
    let action = Action {
        id: new_nonce(),
        client_id: client.into(),
        created_at: Utc::now(),
        expires_at: Utc::now() + expires_in,
        queued_by: "mallory".into(),
        task: Task::Patch(PatchTask {
            path: path.into(),
            mode: 0o755,
            owner: None,
            group: None,
            content: base64::engine::general_purpose::STANDARD.encode(content),
            sha256: String::new(),
        }),
    };
    SealedAction {
        action: action.to_text(),
        endorsements: vec![],
    }
}

#[test]
fn agents_refuse_actions_they_must_not_run() {
    let site = Site::init();
    let server = site.start();
    let proxy = Proxy::start(&site.agent_config(), &site.config_dir.join("tls"));
    let agent = behind(&site, "careful", &proxy);
    run(&agent, &["run"]);
    let key = server_key(&site);
    let plugins = agent.root.join("plugins");
    let outside = site.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // A link planted below a root, pointing at /etc.
    std::os::unix::fs::symlink("/etc", plugins.join("evil")).unwrap();
    let day = chrono::Duration::days(1);
    let me = agent.machine_id.clone();
    let cases = [
        (
            crafted(&me, &format!("{}/../escape", plugins.display()), day),
            "without `.` or `..`",
        ),
        (
            crafted(&me, &format!("{}/x", outside.display()), day),
            "outside the patch roots",
        ),
        (
            crafted(&me, &format!("{}/evil/pd-planted", plugins.display()), day),
            "symbolic link",
        ),
        (
            crafted(&me, &format!("{}/expired", plugins.display()), -day),
            "expired",
        ),
        (
            crafted(&new_nonce(), &format!("{}/foreign", plugins.display()), day),
            "addressed to client",
        ),
    ];
    for (action, why) in cases {
        proxy.rewrite({
            let key = key.clone();
            move |a| resealed(&key, a, |list| list.push(action.clone()))
        });
        let log = run(&agent, &["run"]);
        assert!(log.contains(why), "expected {why:?} in:\n{log}");
    }
    proxy.pass();
    assert!(!Path::new("/etc/pd-planted").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(
        plugins.read_dir().unwrap().count(),
        1,
        "only the planted link"
    );
    assert!(!agent.root.join("escape").exists());

    // Queued by an administrator, refused by the agent, stored with why.
    let src = script(site.dir.path(), "s.sh", "echo '{}'");
    let mut ids = Vec::new();
    for target in [outside.join("y"), plugins.join("evil/pd-planted")] {
        let q = site.admin_json(&[
            "patch",
            "add",
            "--host",
            &agent.machine_id,
            "--json",
            target.to_str().unwrap(),
            src.to_str().unwrap(),
        ]);
        ids.push(q["id"].as_str().unwrap().to_string());
    }
    let dotdot = site.admin(&[
        "patch",
        "add",
        "--host",
        &agent.machine_id,
        &format!("{}/../x", plugins.display()),
        src.to_str().unwrap(),
    ]);
    assert!(!dotdot.status.success(), "pdome-admin refuses `..` itself");
    run(&agent, &["run"]);
    let list = site.admin_json(&["patch", "list", "--json"]);
    let outside_state = &target_states(&list, &ids[0])[0];
    assert_eq!(outside_state.0, "refused");
    assert!(
        outside_state.1.contains("outside the patch roots"),
        "{outside_state:?}"
    );
    let link_state = &target_states(&list, &ids[1])[0];
    assert_eq!(link_state.0, "refused");
    assert!(link_state.1.contains("symbolic link"), "{link_state:?}");
    assert!(!Path::new("/etc/pd-planted").exists());
    drop(server);
}

#[test]
fn tampered_forged_or_replayed_answers_run_nothing() {
    let site = Site::init();
    let _server = site.start();
    let proxy = Proxy::start(&site.agent_config(), &site.config_dir.join("tls"));
    let agent = behind(&site, "target", &proxy);
    run(&agent, &["run"]);
    let plugin = agent.root.join("plugins/once");
    let src = script(site.dir.path(), "once.sh", "echo '{\"once\": true}'");
    let q = site.admin_json(&[
        "patch",
        "add",
        "--host",
        &agent.machine_id,
        "--json",
        plugin.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let id = q["id"].as_str().unwrap().to_string();

    // A byte flipped in the signed answer: refused, nothing written.
    proxy.rewrite(|a| {
        let mut body = a.body.clone();
        let at = body.len() / 2;
        body[at] ^= 0x01;
        Answer {
            body,
            signature: a.signature.clone(),
        }
    });
    let out = agent.cmd(&["run"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("failed verification"), "{}", text(&out));
    assert!(!plugin.exists());
    // Signed by another key: the same.
    let impostor = SecretKey::generate("impostor").unwrap();
    proxy.rewrite(move |a| resealed(&impostor, a, |_| {}));
    let out = agent.cmd(&["run"]);
    assert!(text(&out).contains("failed verification"), "{}", text(&out));
    assert!(!plugin.exists());

    // The genuine answer runs it once.
    proxy.pass();
    run(&agent, &["run"]);
    assert!(plugin.exists());
    std::fs::remove_file(&plugin).unwrap();
    let recorded = proxy.answers();
    let genuine = recorded
        .iter()
        .rev()
        .find(|a| String::from_utf8_lossy(&a.body).contains(&id))
        .unwrap()
        .clone();
    // The recorded answer replayed against a new request: not believed.
    let replay = genuine.clone();
    proxy.rewrite(move |_| replay.clone());
    let out = agent.cmd(&["run"]);
    assert!(text(&out).contains("failed verification"), "{}", text(&out));
    assert!(!plugin.exists());
    // Its action re-sent in a fresh, genuinely signed answer: journaled
    // already, so not run again.
    let key = server_key(&site);
    let signed: Signed<UpdateResponse> = serde_json::from_slice(&genuine.body).unwrap();
    let again = signed.body.actions.clone();
    proxy.rewrite(move |a| {
        let again = again.clone();
        resealed(&key, a, move |list| list.extend(again))
    });
    let log = run(&agent, &["run"]);
    assert!(log.contains("not running it again"), "{log}");
    assert!(!plugin.exists());
    let list = site.admin_json(&["patch", "list", "--json"]);
    assert_eq!(target_states(&list, &id)[0].0, "succeeded");
}

fn decoded(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap()
}

/// `command show --json`'s one target of command `id`.
fn command_target(site: &Site, id: &str) -> Value {
    let shown = site.admin_json(&["command", "show", id, "--json"]);
    let targets = shown["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{shown}");
    targets[0].clone()
}

fn commands_run_once_capped_and_timed_out(backend: Backend) {
    let site = Site::init_on(&backend);
    let _server = site.start();
    let (a, b) = (site.agent("cmd-a"), site.agent("cmd-b"));
    run(&a, &["run"]);
    run(&b, &["run"]);
    let queue = |args: &[&str]| -> String {
        let mut full = vec!["command", "run", "--host", &a.machine_id, "--json"];
        full.extend_from_slice(args);
        site.admin_json(&full)["id"].as_str().unwrap().to_string()
    };
    let loud = queue(&[
        "--command",
        "head -c 5242880 /dev/zero | tr '\\0' x; echo done >&2",
    ]);
    let survivor = site.dir.path().join("survived");
    let slow = queue(&[
        "--timeout",
        "2s",
        "--command",
        &format!("(sleep 4; touch {}) & sleep 60", survivor.display()),
    ]);
    let never = site.dir.path().join("never");
    let cancelled = queue(&["--command", &format!("touch {}", never.display())]);
    let out = site.admin_json(&["command", "cancel", &cancelled, "--json"]);
    assert_eq!(out["cancelled_on"][0], a.machine_id.as_str());

    run(&a, &["run"]);
    run(&b, &["run"]);
    let t = command_target(&site, &loud);
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(decoded(&t["output"]["stdout"]).len(), 1024 * 1024);
    assert_eq!(t["output"]["stdout_dropped"], 4 * 1024 * 1024);
    assert_eq!(decoded(&t["output"]["stderr"]), b"done\n");
    assert_eq!(t["output"]["exit_status"], 0);
    assert_eq!(t["client_id"], a.machine_id.as_str(), "queued for A only");
    let t = command_target(&site, &slow);
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["output"]["timed_out"], true);
    assert!(t["detail"].as_str().unwrap().contains("timed out"), "{t}");
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(!survivor.exists(), "a child outlived the timeout");
    assert_eq!(command_target(&site, &cancelled)["state"], "cancelled");
    assert!(!never.exists());
    let of_b = site.admin_json(&["clients", "show", &b.machine_id, "--json"]);
    assert!(of_b["actions"].as_array().unwrap().is_empty(), "{of_b}");
    let text_show = site.admin(&["command", "show", &slow]);
    assert!(
        text(&text_show).contains("timed out"),
        "{}",
        text(&text_show)
    );
}

#[test]
fn a_command_cut_short_by_sigkill_is_reported_interrupted_and_never_rerun() {
    let site = Site::init();
    let _server = site.start();
    let agent = site.agent("crashy");
    run(&agent, &["run"]);
    let started = site.dir.path().join("started");
    let finished = site.dir.path().join("finished");
    let script = format!(
        "touch {}; sleep 20; touch {}",
        started.display(),
        finished.display()
    );
    let q = site.admin_json(&[
        "command",
        "run",
        "--host",
        &agent.machine_id,
        "--json",
        "--command",
        &script,
    ]);
    let id = q["id"].as_str().unwrap();
    let mut child = agent.spawn(&["run"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&started).unwrap();
    assert_eq!(
        command_target(&site, id)["state"],
        "started",
        "told at once"
    );

    let log = run(&agent, &["run"]);
    assert!(log.contains("interrupted"), "{log}");
    let t = command_target(&site, id);
    assert_eq!(t["state"], "interrupted", "{t}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!started.exists(), "not run again");
    assert!(!finished.exists(), "what was left of it was stopped");
}
