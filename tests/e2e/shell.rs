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
use penguindome_tests::terminal::{Terminal, check_transcript};
use penguindome_tests::{AgentHost, Site, bin, text};
use serde_json::Value;
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub(crate) const LONG: Duration = Duration::from_secs(30);

pub(crate) fn run(agent: &AgentHost) {
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "agent run failed: {}", text(&out));
}

pub(crate) fn shell_terminal(site: &Site, host: &str) -> Terminal {
    let mut cmd = std::process::Command::new(bin("pdome-admin"));
    cmd.arg("--config-dir")
        .arg(&site.config_dir)
        .args(["shell", host, "--wait", "60s"])
        .env("TERM", "xterm");
    Terminal::spawn(cmd, 80, 24)
}

pub(crate) fn history(site: &Site, host: &str) -> Vec<Value> {
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
    assert_eq!(t.ask("id -u"), "0");
    assert_eq!(t.ask("stty size"), "24 80");
    t.resize(100, 30);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.ask("stty size"), "30 100", "the window size follows");
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
    check_transcript(&site, &agent.machine_id, &screen, &[]);
    let trail = history(&site, &agent.machine_id);
    assert!(trail.iter().any(|r| r["event"] == "opened"), "{trail:?}");
    let closed = trail.iter().find(|r| r["event"] == "closed").unwrap();
    assert!(closed["by"].as_str().unwrap().contains("root"), "{closed}");

    // `~.` at a line start ends a session; the remote shell goes with it.
    let mut t = shell_terminal(&site, &agent.machine_id);
    t.wait_for("to check in", LONG);
    run(&agent);
    t.wait_for("Connected to", LONG);
    assert_eq!(t.ask("echo $$ > /dev/null; echo alive"), "alive");
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
    let mut socket = connect::open(&config, None).await.unwrap();
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
    let toml = site.config_dir.join("server.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace(
        "socket = \"shell.sock\"\n",
        "socket = \"shell.sock\"\nmax_sessions = 1\n",
    );
    std::fs::write(&toml, text).unwrap();
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

        // One session at a time on this server: a second one is refused.
        let (_, _, second) = admin_open(&site, &mallory.machine_id).await;
        assert!(
            matches!(&second, RelayEvent::Ended { reason } if reason.contains("max_sessions")),
            "{second:?}"
        );

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
    remote_shells_need_a_granted_user(&site, &alice);
}

/// Over HTTPS, pdome-admin reaches the relay as a user the access rules
/// grant `shell`; a wrong password gets nothing, an address alone never.
fn remote_shells_need_a_granted_user(site: &Site, alice: &AgentHost) {
    let refused = site.admin(&["access", "allow-ip", "shell", "127.0.0.0/8"]);
    assert!(
        !refused.status.success(),
        "an address alone never opens shells"
    );
    site.set_password("op", "correct horse");
    let out = site.admin(&["access", "grant", "shell", "op"]);
    assert!(out.status.success(), "{}", text(&out));
    let remote = |user: &str, password: &str| {
        let mut cmd = std::process::Command::new(bin("pdome-admin"));
        cmd.args([
            "shell",
            &alice.machine_id,
            "--wait",
            "60s",
            "--server",
            &site.url,
        ])
        .args(["--user", user, "--ca"])
        .arg(site.config_dir.join("tls/server.crt"))
        .env("TERM", "xterm");
        let t = Terminal::spawn(cmd, 80, 24);
        t.wait_for(&format!("Password of {user}"), LONG);
        t.type_keys(&format!("{password}\r"));
        t
    };
    let mut wrong = remote("op", "battery staple");
    assert_eq!(wrong.wait_exit(LONG).code(), Some(255));
    assert!(wrong.screen().contains("401"), "{}", wrong.screen());
    // The repository user's password is in every site package: never a shell.
    let repo_password = std::fs::read_to_string(site.config_dir.join("repo-password")).unwrap();
    let mut agent_user = remote("agent", repo_password.trim());
    assert_eq!(agent_user.wait_exit(LONG).code(), Some(255));
    assert!(
        agent_user.screen().contains("401"),
        "{}",
        agent_user.screen()
    );

    let mut t = remote("op", "correct horse");
    t.wait_for("to check in", LONG);
    run(alice);
    t.wait_for("Connected to", LONG);
    assert_eq!(t.ask("id -u"), "0");
    t.type_keys("exit 4\r");
    assert_eq!(t.wait_exit(LONG).code(), Some(4), "{}", t.screen());
    let trail = history(site, &alice.machine_id);
    assert!(
        trail.iter().any(|r| r["by"] == "op (remote, 127.0.0.1)"),
        "{trail:?}"
    );
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
    assert_eq!(t.ask("echo up"), "up");
    let pid = t.ask("echo $$");
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
    check_transcript(
        &site,
        &agent.machine_id,
        &t.screen(),
        &[&share(1), &share(2)],
    );
}

#[test]
fn an_idle_session_ends_though_pings_keep_its_connections() {
    let site = Site::init();
    let toml = site.config_dir.join("server.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace(
        "socket = \"shell.sock\"\n",
        "socket = \"shell.sock\"\nidle_timeout = \"3s\"\n",
    );
    std::fs::write(&toml, text).unwrap();
    let _server = site.start();
    let agent = site.agent("idle");
    run(&agent);
    let mut t = shell_terminal(&site, &agent.machine_id);
    t.wait_for("to check in", LONG);
    run(&agent);
    t.wait_for("Connected to", LONG);
    assert_eq!(t.ask("echo up"), "up");
    // The relay pings both ends every second; that is not activity.
    assert_eq!(t.wait_exit(LONG).code(), Some(255), "{}", t.screen());
    assert!(t.screen().contains("idle for 3s"), "{}", t.screen());
}
