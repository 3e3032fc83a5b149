//! Enrollment tokens and per-client repository credentials, end to end
//! with the real binaries: `pdome-admin tokens`, `penguindome-agent
//! enroll`, the repository's answers to each credential, revocation and
//! rotation.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use penguindome_agent::session::{Authority, Session, SessionError};
use penguindome_agent::transport::Transport;
use penguindome_protocol::SecretKey;
use penguindome_protocol::envelope::new_nonce;
use penguindome_tests::{AgentHost, Backend, Site, http, on_both_stores, text};
use serde_json::Value;

on_both_stores!(tokens_enroll_machines_and_each_gets_its_own_repository_credential,);

/// A repository file: 404 (no release here) once past the credential
/// check, 401 when the credential is refused.
const PROBE: &str = "/penguindome/v1/repo/apt/dists/stable/InRelease";

fn fetch(site: &Site, user: &str, password: &str) -> u16 {
    let ca = site.config_dir.join("tls/server.crt");
    http::get(&format!("{}{PROBE}", site.url), &ca, Some((user, password))).status
}

/// A machine whose agent.toml is the site package's: no shared secret.
fn machine(site: &Site, name: &str) -> AgentHost {
    let mut a = site.agent(name);
    let mut config = site.agent_config();
    config.enrollment_credential.clear();
    let path = a.root.join("agent.toml");
    std::fs::write(&path, config.to_toml().unwrap()).unwrap();
    a.config = path;
    std::fs::create_dir_all(a.package_root().join("etc/apt")).unwrap();
    a
}

fn new_token(site: &Site, args: &[&str]) -> Value {
    let mut all = vec!["tokens", "create", "--json"];
    all.extend_from_slice(args);
    site.admin_json(&all)
}

/// `penguindome-agent enroll URL -` with the token on standard input.
fn enroll(site: &Site, agent: &AgentHost, token: &str) -> std::process::Output {
    let mut child = Command::new(penguindome_tests::bin("penguindome-agent"))
        .arg("--config")
        .arg(&agent.config)
        .arg("--state-dir")
        .arg(agent.state_dir())
        .arg("--machine-id-file")
        .arg(agent.root.join("machine-id"))
        .arg("--package-root")
        .arg(agent.package_root())
        .args(["enroll", &site.url, "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    child.wait_with_output().unwrap()
}

/// The (user, password) the agent wrote for apt.
fn apt_credential(site: &Site, agent: &AgentHost) -> (String, String) {
    let path = agent
        .package_root()
        .join("etc/apt/auth.conf.d/penguindome-client.conf");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().find(|l| l.starts_with("machine ")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1], format!("{}/penguindome/v1/repo", site.url));
    (words[3].to_string(), words[5].to_string())
}

fn refused(out: &std::process::Output, why: &str) {
    assert!(
        !out.status.success(),
        "enrollment should fail: {}",
        text(out)
    );
    assert!(text(out).contains(why), "{why:?} not in: {}", text(out));
}

fn tokens_enroll_machines_and_each_gets_its_own_repository_credential(backend: Backend) {
    let site = Site::init_tokens_only(&backend);
    // A new site holds no site-wide secret to hand out.
    let server_toml = std::fs::read_to_string(site.config_dir.join("server.toml")).unwrap();
    assert!(
        !server_toml.contains("enrollment_credential"),
        "{server_toml}"
    );
    assert!(!site.config_dir.join("repo-password").exists());
    assert_eq!(site.agent_config().enrollment_credential, "");
    let _server = site.start();
    let token = new_token(&site, &["--uses", "2", "--expires", "1h", "--label", "lab"]);
    let (id, text_token) = (
        token["id"].as_str().unwrap().to_string(),
        token["token"].as_str().unwrap().to_string(),
    );
    let secret = text_token.split('.').nth(2).unwrap().to_string();

    // Without a token the agent says how to enroll.
    let a = machine(&site, "a");
    let out = a.cmd(&["run"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("penguindome-agent enroll"),
        "{}",
        text(&out)
    );

    let out = enroll(&site, &a, &text_token);
    assert!(out.status.success(), "{}", text(&out));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["client_id"], a.machine_id.as_str());
    assert_eq!(done["status"], "enrolled");
    let (user_a, pass_a) = apt_credential(&site, &a);
    assert_eq!(user_a, a.machine_id);
    assert_eq!(
        fetch(&site, &user_a, &pass_a),
        404,
        "its own credential opens the repository"
    );
    assert_eq!(fetch(&site, &user_a, "wrong"), 401);
    assert_eq!(
        fetch(&site, &format!("pdt1.{id}"), &secret),
        404,
        "a live token opens it too"
    );

    // The machine reports; its history names the token.
    let out = a.cmd(&["run", "--force-collect", "--force-submit"]);
    assert!(out.status.success(), "{}", text(&out));
    let history = site.admin_json(&["clients", "history", &a.machine_id, "--json"]);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["field"] == "enrollment_token" && r["new"] == id.as_str()),
        "{history}"
    );

    let b = machine(&site, "b");
    assert!(enroll(&site, &b, &text_token).status.success());
    let (user_b, pass_b) = apt_credential(&site, &b);
    assert_ne!(pass_a, pass_b, "each client has its own credential");
    let c = machine(&site, "c");
    refused(&enroll(&site, &c, &text_token), "used-up");
    assert_eq!(
        fetch(&site, &format!("pdt1.{id}"), &secret),
        401,
        "a used-up token opens nothing"
    );

    a_stolen_credential_enrolls_nothing(&site, &c, &pass_a);
    revocation_and_rotation(&site, (&a, &user_a, &pass_a), (&b, &user_b, &pass_b));
    revoked_and_expired_tokens_are_refused(&site, &c);
    let listed = site.admin_json(&["tokens", "list", "--json"]);
    let t = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (t["uses"].as_u64(), t["state"].as_str()),
        (Some(2), Some("used-up"))
    );
    assert!(
        t.get("secret_sha256").is_none(),
        "lists never show the hash"
    );
}

/// Another client's repository password is no enrollment credential, in
/// either field.
fn a_stolen_credential_enrolls_nothing(site: &Site, thief: &AgentHost, stolen: &str) {
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let key = SecretKey::generate("thief").unwrap();
    let session = Session::new(&config, &transport, &key, thief.machine_id.clone()).unwrap();
    let e = session
        .enroll("thief", Authority::SiteCredential(stolen))
        .unwrap_err();
    assert!(matches!(e, SessionError::TokenRefused(_)), "{e}");
    let fake = format!("pdt1.{}.{stolen}.-.{}", &new_nonce()[..16], "A".repeat(40))
        .parse()
        .unwrap();
    let e = session
        .enroll("thief", Authority::Token(&fake))
        .unwrap_err();
    assert!(e.to_string().contains("not valid"), "{e}");
}

fn revocation_and_rotation(
    site: &Site,
    (a, user_a, pass_a): (&AgentHost, &str, &str),
    (b, user_b, pass_b): (&AgentHost, &str, &str),
) {
    let out = site.admin(&["clients", "revoke", &a.machine_id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fetch(site, user_a, pass_a),
        401,
        "revocation closes the repository"
    );
    assert_eq!(
        fetch(site, user_b, pass_b),
        404,
        "other clients keep theirs"
    );
    let rotated = site.admin_json(&["clients", "rotate-credentials", &b.machine_id, "--json"]);
    assert_eq!(rotated["credentials_revoked"], 1);
    assert_eq!(
        fetch(site, user_b, pass_b),
        401,
        "rotation closes the old one at once"
    );
    let out = b.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, new_pass) = apt_credential(site, b);
    assert_ne!(new_pass, pass_b);
    assert_eq!(
        fetch(site, user_b, &new_pass),
        404,
        "the next run fetched a new one"
    );
}

fn revoked_and_expired_tokens_are_refused(site: &Site, c: &AgentHost) {
    let t = new_token(site, &[]);
    let out = site.admin(&["tokens", "revoke", t["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    refused(&enroll(site, c, t["token"].as_str().unwrap()), "revoked");
    let t = new_token(site, &["--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    refused(&enroll(site, c, t["token"].as_str().unwrap()), "expired");
    // A token for another server's key is refused before anything is sent.
    let other = Site::init();
    let foreign = other.admin_json(&["tokens", "create", "--json"]);
    refused(
        &enroll(site, c, foreign["token"].as_str().unwrap()),
        "not from the site that made the token",
    );
}
