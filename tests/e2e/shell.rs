//! Remote shells end to end: `pdome-admin shell` on a real PTY, the real
//! agent picking the signed request up on its run and opening a root shell,
//! the server relaying sealed frames; and what the relay and the agent must
//! refuse.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use penguindome_agent::shell::connect;
use penguindome_protocol::shell::{
    Ephemeral, Frame, OpenShell, RelayEvent, SessionKeys, ShellHello, Side,
};
use penguindome_protocol::wire::paths;
use penguindome_tests::terminal::Terminal;
use penguindome_tests::{AgentHost, Site, bin, text};
use serde_json::Value;
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const LONG: Duration = Duration::from_secs(30);

fn run(agent: &AgentHost) {
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "agent run failed: {}", text(&out));
}

fn shell_terminal(site: &Site, host: &str) -> Terminal {
    let mut cmd = std::process::Command::new(bin("pdome-admin"));
    cmd.arg("--config-dir")
        .arg(&site.config_dir)
        .args(["shell", host, "--wait", "60s"])
        .env("TERM", "xterm");
    Terminal::spawn(cmd, 80, 24)
}

/// Types a command whose answer is fenced, and returns what is between.
fn ask(t: &Terminal, command: &str) -> String {
    let mark = t.mark();
    t.type_keys(&format!("echo \"<<$({command})>>\"\r"));
    let after = t.wait_for_after(mark, ">>\r\n", LONG);
    let start = after.rfind("<<").expect("the fence opened") + 2;
    let end = after.rfind(">>").expect("the fence closed");
    after[start..end].to_string()
}

fn history(site: &Site, host: &str) -> Vec<Value> {
    let v = site.admin_json(&["clients", "history", host, "--json"]);
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["field"] == "shell.session")
        .map(|r| r["new"].clone())
        .collect()
}

#[test]
fn an_administrator_gets_a_root_shell_on_a_real_terminal() {
    let site = Site::init();
    let _server = site.start();
    let agent = site.agent("shelled");
    run(&agent);

    let mut t = shell_terminal(&site, &agent.machine_id);
    t.wait_for("to check in", LONG);
    run(&agent);
    t.wait_for("Connected to", LONG);
    assert_eq!(ask(&t, "id -u"), "0");
    assert_eq!(ask(&t, "stty size"), "24 80");
    t.resize(100, 30);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ask(&t, "stty size"), "30 100", "the window size follows");
    t.type_keys("exit 3\r");
    let status = t.wait_exit(LONG);
    assert_eq!(status.code(), Some(3), "{}", t.screen());
    assert!(
        t.screen().contains("exited with status 3"),
        "{}",
        t.screen()
    );

    // The next run reports the session's end; the audit trail has both ends.
    run(&agent);
    let screen = t.screen();
    check_transcript(&site, &agent, &screen, &[]);
    let trail = history(&site, &agent.machine_id);
    assert!(trail.iter().any(|r| r["event"] == "opened"), "{trail:?}");
    let closed = trail.iter().find(|r| r["event"] == "closed").unwrap();
    assert!(closed["by"].as_str().unwrap().contains("root"), "{closed}");

    // `~.` at a line start ends a session; the remote shell goes with it.
    let mut t = shell_terminal(&site, &agent.machine_id);
    t.wait_for("to check in", LONG);
    run(&agent);
    t.wait_for("Connected to", LONG);
    assert_eq!(ask(&t, "echo $$ > /dev/null; echo alive"), "alive");
    t.type_keys("\r~.");
    let status = t.wait_exit(LONG);
    assert_eq!(status.code(), Some(255), "{}", t.screen());
    assert!(t.screen().contains("ended with ~."), "{}", t.screen());
    let settled = wait_for_final_states(&agent, 2);
    assert!(
        settled.iter().all(|e| e["state"] == "succeeded"),
        "{settled:?}"
    );
}

/// The session's transcript replays what the terminal showed, and rests
/// sealed: no keystroke or output is readable in the stored file.
fn check_transcript(site: &Site, agent: &AgentHost, screen: &str, shares: &[&str]) {
    let sessions = site.admin_json(&["shell", "log", &agent.machine_id, "--json"]);
    let sid = sessions[0]["session_id"].as_str().unwrap().to_string();
    let stored = std::fs::read_to_string(
        site.data_dir
            .join("transcripts")
            .join(&agent.machine_id)
            .join(format!("{sid}.json")),
    )
    .unwrap();
    assert!(
        !stored.contains("<<") && !stored.contains("echo"),
        "{stored}"
    );
    let mut args = vec!["shell", "log", &agent.machine_id, "--session", &sid];
    for s in shares {
        args.extend(["--share", s]);
    }
    let out = site.admin(&args);
    assert!(out.status.success(), "{}", text(&out));
    let cast = String::from_utf8(out.stdout).unwrap();
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (header["version"].as_u64(), header["width"].as_u64()),
        (Some(2), Some(80))
    );
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let stream = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e[1] == kind)
            .map(|e| e[2].as_str().unwrap())
            .collect()
    };
    let (shown, typed) = (stream("o"), stream("i"));
    assert!(
        shown.contains("<<0>>") || shown.contains("<<up>>"),
        "{shown}"
    );
    assert!(typed.contains("echo \"<<"), "{typed}");
    assert!(
        screen.contains(&shown),
        "the transcript's output is exactly what the terminal showed:\n{shown:?}\n{screen:?}"
    );
    let trail: Vec<Value> = site
        .admin_json(&["clients", "history", &agent.machine_id, "--json"])
        .as_array()
        .unwrap()
        .clone();
    assert!(
        trail.iter().any(|r| r["field"] == "shell.transcript_read"),
        "reading a transcript is on the audit trail"
    );
}

/// Runs the agent until `n` shell actions reached a final state in its
/// journal; returns their entries.
fn wait_for_final_states(agent: &AgentHost, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        run(agent);
        let dir = agent.state_dir().join("actions");
        let entries: Vec<Value> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "json")
                    .then(|| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            })
            .filter(|e: &Value| e["detached"] == true)
            .collect();
        let done: Vec<Value> = entries
            .iter()
            .filter(|e| e["state"] != "started")
            .cloned()
            .collect();
        if done.len() >= n {
            let leftovers = std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().contains(".shell-")
                })
                .count();
            assert_eq!(leftovers, 0, "request and result files are cleaned up");
            return done;
        }
        assert!(
            start.elapsed() < LONG,
            "sessions did not settle: {entries:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

type AdminSocket = WebSocketStream<UnixStream>;

/// An administrator's side written here, to do what pdome-admin would not.
async fn admin_open(site: &Site, host: &str) -> (AdminSocket, Ephemeral, RelayEvent) {
    let stream = UnixStream::connect(site.shell_socket()).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://localhost{}", paths::SHELL_ADMIN), stream)
            .await
            .unwrap();
    let ephemeral = Ephemeral::new();
    let open = OpenShell {
        host: host.into(),
        admin_key: ephemeral.public_b64(),
        wait_secs: 60,
        term: "xterm".into(),
        cols: 80,
        rows: 24,
        operator: None,
    };
    ws.send(Message::Text(serde_json::to_string(&open).unwrap().into()))
        .await
        .unwrap();
    let queued = next_event(&mut ws).await;
    (ws, ephemeral, queued)
}

async fn next_event(ws: &mut AdminSocket) -> RelayEvent {
    loop {
        match tokio::time::timeout(LONG, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Binary(_))) => continue,
            other => panic!("the relay said {other:?}"),
        }
    }
}

/// Sends a hello on a fresh agent connection; returns the relay's refusal.
async fn refused_hello(
    agent: &AgentHost,
    make: impl FnOnce(&str) -> penguindome_protocol::shell::SignedText,
) -> String {
    let config = penguindome_protocol::agent_config::AgentConfig::load(&agent.config).unwrap();
    let mut socket = connect::open(&config).await.unwrap();
    let challenge = connect::read_challenge(&mut socket).await.unwrap();
    let hello = make(&challenge);
    socket
        .send(Message::Text(serde_json::to_string(&hello).unwrap().into()))
        .await
        .unwrap();
    match tokio::time::timeout(LONG, socket.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => f.reason.to_string(),
        other => panic!("the relay accepted the hello: {other:?}"),
    }
}

fn hello_for(session_id: &str, action_id: &str, admin_key: &str) -> ShellHello {
    ShellHello {
        session_id: session_id.into(),
        action_id: action_id.into(),
        admin_key: admin_key.into(),
        agent_key: Ephemeral::new().public_b64(),
        transcript_keys: String::new(),
    }
}

#[test]
fn the_relay_and_the_agent_refuse_what_they_must() {
    let site = Site::init();
    let _server = site.start();
    let alice = site.agent("alice");
    let mallory = site.agent("mallory");
    run(&alice);
    run(&mallory);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut admin, ephemeral, queued) = admin_open(&site, &alice.machine_id).await;
        let RelayEvent::Queued {
            session_id,
            action_id,
            ..
        } = queued
        else {
            panic!("not queued: {queued:?}")
        };
        let admin_key = ephemeral.public_b64();
        let hello = hello_for(&session_id, &action_id, &admin_key);

        // A signature that is not over what it claims.
        let why = refused_hello(&alice, |c| {
            let mut signed =
                connect::sign_hello(&alice.key(), &alice.machine_id, c, &hello).unwrap();
            signed.payload = signed.payload.replace(&session_id, &"0".repeat(32));
            signed
        })
        .await;
        assert!(why.contains("signature"), "{why}");

        // A hello recorded on one connection, replayed on another.
        let mut recorded = None;
        let why = refused_hello(&alice, |c| {
            let s = connect::sign_hello(
                &alice.key(),
                &alice.machine_id,
                c,
                &hello_for(&"1".repeat(32), &action_id, &admin_key),
            )
            .unwrap();
            recorded = Some(s.clone());
            s
        })
        .await;
        assert!(why.contains("no shell session"), "{why}");
        let why = refused_hello(&alice, |_| recorded.unwrap()).await;
        assert!(why.contains("another challenge"), "{why}");

        // Another client cannot take alice's session.
        let why = refused_hello(&mallory, |c| {
            connect::sign_hello(&mallory.key(), &mallory.machine_id, c, &hello).unwrap()
        })
        .await;
        assert!(why.contains("not opened for this client"), "{why}");

        // Alice's own agent attaches; the session id is then spent.
        // The run only starts the session's own process.
        run(&alice);
        let RelayEvent::Attached { hello: signed, .. } = next_event(&mut admin).await else {
            panic!("the agent did not attach")
        };
        let why = refused_hello(&alice, |c| {
            connect::sign_hello(&alice.key(), &alice.machine_id, c, &hello).unwrap()
        })
        .await;
        assert!(why.contains("no shell session"), "{why}");

        // A frame altered on the way ends the session at the agent.
        let body: Value = serde_json::from_str(&signed.payload).unwrap();
        let agent_key = body["body"]["agent_key"].as_str().unwrap();
        let SessionKeys { mut sealer, .. } = ephemeral
            .agree(Side::Admin, agent_key, &session_id)
            .unwrap();
        let mut wire = sealer.seal(&Frame::Data(b"echo pwned > /tmp/x\r".to_vec()));
        *wire.last_mut().unwrap() ^= 0x40;
        admin.send(Message::Binary(wire.into())).await.unwrap();
        match next_event(&mut admin).await {
            RelayEvent::Ended { reason } => assert!(reason.contains("client"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    });
    let done = wait_for_final_states(&alice, 1);
    let detail = done[0]["detail"].as_str().unwrap();
    assert!(detail.contains("altered"), "{detail}");

    // No access rules for `shell`: no remote shells over HTTPS.
    let answer = penguindome_tests::http::Get::new(
        &format!("{}{}", site.url, paths::SHELL_ADMIN),
        &site.config_dir.join("tls/server.crt"),
    )
    .header("Connection: Upgrade")
    .header("Upgrade: websocket")
    .header("Sec-WebSocket-Version: 13")
    .header("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    .send();
    assert_eq!(answer.status, 403, "{}", answer.headers);
}

#[test]
fn a_server_restart_ends_the_session_on_both_sides() {
    let site = Site::init();
    let server = site.start();
    let agent = site.agent("restarted");
    run(&agent);
    // Sealed to the site's secret-keeping key once the site has one.
    let shares = site.dir.path().join("shares");
    let out = site.admin(&[
        "secrets",
        "enable",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--out",
        shares.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(6));
    let mut t = shell_terminal(&site, &agent.machine_id);
    t.wait_for("to check in", LONG);
    run(&agent);
    t.wait_for("Connected to", LONG);
    assert_eq!(ask(&t, "echo up"), "up");
    let pid = ask(&t, "echo $$");
    server.stop();
    let status = t.wait_exit(LONG);
    assert_eq!(status.code(), Some(255), "{}", t.screen());
    assert!(t.screen().contains("shutting down"), "{}", t.screen());
    // The shell on the client is gone too.
    let shell = std::path::PathBuf::from(format!("/proc/{pid}"));
    let start = std::time::Instant::now();
    while shell.exists() {
        assert!(start.elapsed() < LONG, "the remote shell {pid} still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _server = site.start();
    let done = wait_for_final_states(&agent, 1);
    let detail = done[0]["detail"].as_str().unwrap();
    assert!(detail.contains("shutting down"), "{detail}");

    let sessions = site.admin_json(&["shell", "log", &agent.machine_id, "--json"]);
    let sid = sessions[0]["session_id"].as_str().unwrap();
    let refused = site.admin(&["shell", "log", &agent.machine_id, "--session", sid]);
    assert!(!refused.status.success(), "no shares, no transcript");
    let share = |n: u32| shares.join(format!("share-{n}.txt")).display().to_string();
    check_transcript(&site, &agent, &t.screen(), &[&share(1), &share(2)]);
}
