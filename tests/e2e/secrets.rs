//! `pdome-admin secrets`: selected fields are sealed by the agent before
//! they are spooled, travel and rest as ciphertext, show in the audit trail
//! as changes without values, and open only with a quorum of shares.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use penguindome_protocol::sealing::{generate_key, public_armored};
use penguindome_protocol::wire::paths;
use penguindome_tests::proxy::Proxy;
use penguindome_tests::{AgentHost, Backend, Site, on_both_stores, text};
use serde_json::Value;

on_both_stores!(sealed_fields_are_ciphertext_everywhere_and_open_with_a_quorum);

const FIRST: &str = "Ada Lovelace 1815";
const SECOND: &str = "Grace Hopper 1906";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// An administrator's own OpenPGP key pair: (secret key file, certificate).
fn admin_identity(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let tsk = generate_key(&format!("{name} <{name}@example.org>")).unwrap();
    let (public, _) = public_armored(&tsk).unwrap();
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.asc")),
    );
    std::fs::write(&key, &tsk).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&cert, public).unwrap();
    (key, cert)
}

fn owner_plugin(agent: &AgentHost, owner: &str) {
    agent.plugin(
        "asset.sh",
        &format!("echo '{{\"owner\": \"{owner}\", \"room\": \"B12\"}}'"),
    );
}

/// Every file's bytes below `dir`, for scans.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn access(site: &Site, args: &[&str]) -> std::process::Output {
    let mut all = vec!["secrets", "access"];
    all.extend_from_slice(args);
    site.admin(&all)
}

fn enable(site: &Site, admin_cert: &Path, shares: &Path) -> String {
    let out = site.admin(&[
        "secrets",
        "enable",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--share-to",
        admin_cert.to_str().unwrap(),
        "--out",
        shares.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mode(shares), 0o700);
    for f in ["share-1.asc", "share-2.txt", "share-3.txt"] {
        assert_eq!(mode(&shares.join(f)), 0o600, "{f}");
    }
    let encrypted = std::fs::read_to_string(shares.join("share-1.asc")).unwrap();
    assert!(encrypted.contains("BEGIN PGP MESSAGE") && !encrypted.contains("pdsh1"));
    let file = std::fs::read_to_string(site.config_dir.join("secrets.json")).unwrap();
    assert!(
        !file.contains("PRIVATE KEY"),
        "the secret key is never written whole"
    );
    assert_eq!(mode(&site.config_dir.join("secrets.json")), 0o600);

    let refused = site.admin(&["secrets", "select", "users.accounts"]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("logged_in"), "{}", text(&refused));
    let out = site.admin(&[
        "secrets",
        "select",
        "plugins.asset.owner",
        "users.logged_in",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = site.admin_json(&["secrets", "show", "--json"]);
    assert_eq!(
        shown["selectors"],
        serde_json::json!(["asset.owner", "users.logged_in"])
    );
    shown["key"].as_str().unwrap().to_string()
}

fn run(agent: &AgentHost, args: &[&str]) -> String {
    let out = agent.cmd(args);
    let t = text(&out);
    assert!(
        !t.contains(FIRST) && !t.contains(SECOND),
        "plaintext in the agent's log: {t}"
    );
    t
}

fn sealed_fields_are_ciphertext_everywhere_and_open_with_a_quorum(backend: Backend) {
    let site = Site::init_on(&backend);
    let dir = site.dir.path();
    let (admin_key, admin_cert) = admin_identity(dir, "one");
    let (stranger_key, _) = admin_identity(dir, "stranger");
    let shares = dir.join("shares");
    let key = enable(&site, &admin_cert, &shares);

    let server = site.start();
    let proxy = Proxy::start(&site.agent_config(), &site.config_dir.join("tls"));
    let agent = site.agent_behind("laptop", &proxy.url);
    let id = agent.machine_id.clone();
    owner_plugin(&agent, FIRST);
    run(&agent, &["run"]);

    // Stored sealed; the field beside it is not.
    let doc = site.admin_json(&["clients", "show", &id, "--json"]);
    assert_eq!(
        doc["plugins"]["asset"]["owner"]["sealed"]["key"],
        key.as_str()
    );
    assert_eq!(doc["plugins"]["asset"]["room"], "B12");
    // Sent sealed.
    let submits: Vec<Vec<u8>> = proxy
        .requests()
        .into_iter()
        .filter(|(p, _)| p == paths::SUBMIT)
        .map(|(_, b)| b)
        .collect();
    assert!(!submits.is_empty());
    for body in &submits {
        assert!(!contains(body, FIRST) && contains(body, "\"sealed\""));
    }

    // Spooled sealed, while the server is away.
    assert!(server.stop().success());
    owner_plugin(&agent, SECOND);
    run(&agent, &["run", "--force-collect"]);
    let spooled = all_bytes(&agent.state_dir().join("spool"));
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    assert!(!contains(&spooled[0].1, SECOND) && contains(&spooled[0].1, "\"sealed\""));
    let _server = site.start();
    run(&agent, &["run", "--force-submit"]);
    // The same value again: no change on the trail.
    run(&agent, &["run", "--force-collect", "--force-submit"]);

    let history = site.admin_json(&["clients", "history", &id, "--json"]);
    let records = history.as_array().unwrap();
    let on =
        |field: &str| -> Vec<&Value> { records.iter().filter(|r| r["field"] == field).collect() };
    // The plugin's first report is one record of the whole output; then
    // one change of the sealed field, with digests and no values.
    let added = on("plugins.asset");
    let changed = on("plugins.asset.owner");
    assert_eq!((added.len(), changed.len()), (1, 1), "{history}");
    let digest = |v: &Value| v["sealed"]["digest"].as_str().unwrap().to_string();
    assert_eq!(changed[0]["action"], "change");
    assert_eq!(
        digest(&added[0]["new"]["owner"]),
        digest(&changed[0]["old"])
    );
    assert_ne!(digest(&changed[0]["old"]), digest(&changed[0]["new"]));
    let trail = history.to_string();
    assert!(!trail.contains(FIRST) && !trail.contains(SECOND));

    refused_without_a_quorum(&site, &id, &shares, &stranger_key);
    opened_with_a_quorum(&site, &id, &shares, &admin_key);

    // Both accesses are on the client's trail and in the access log.
    let history = site.admin_json(&["clients", "history", &id, "--json"]);
    let accesses: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["field"] == "secrets.access")
        .collect();
    assert_eq!(accesses.len(), 2, "{accesses:?}");
    assert!(accesses[0]["new"]["by"].is_string());
    assert_eq!(accesses[1]["new"]["audit_trail"], true);
    let log = std::fs::read_to_string(site.data_dir.join("secrets-access.log")).unwrap();
    assert_eq!(log.lines().count(), 2);

    // Nothing of either value anywhere in the server's files.
    for (path, bytes) in all_bytes(&site.data_dir)
        .into_iter()
        .chain(all_bytes(&site.config_dir))
    {
        assert!(
            !contains(&bytes, FIRST) && !contains(&bytes, SECOND),
            "plaintext in {}",
            path.display()
        );
    }
}

fn refused_without_a_quorum(site: &Site, id: &str, shares: &Path, stranger: &Path) {
    let share = |n: &str| shares.join(n).to_str().unwrap().to_string();
    let one = access(site, &[id, "--share", &share("share-2.txt")]);
    assert!(!one.status.success());
    assert!(
        text(&one).contains("2 shares are needed, 1 given"),
        "{}",
        text(&one)
    );

    let good = std::fs::read_to_string(shares.join("share-3.txt")).unwrap();
    let line = good.lines().find(|l| l.starts_with("pdsh1")).unwrap();
    let at = line.len() - 12;
    let swapped = if &line[at..=at] == "A" { "B" } else { "A" };
    let typo = format!("{}{swapped}{}\n", &line[..at], &line[at + 1..]);
    let bad = shares.join("typo.txt");
    std::fs::write(&bad, typo).unwrap();
    let out = access(
        site,
        &[
            id,
            "--share",
            &share("share-2.txt"),
            "--share",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("typo.txt line 1") && text(&out).contains("checksum"),
        "{}",
        text(&out)
    );

    let enc = share("share-1.asc");
    let out = access(
        site,
        &[id, "--share", &enc, "--share", &share("share-2.txt")],
    );
    assert!(text(&out).contains("--identity"), "{}", text(&out));
    let out = access(
        site,
        &[
            id,
            "--share",
            &enc,
            "--share",
            &share("share-2.txt"),
            "--identity",
            stranger.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not encrypted to the --identity key"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(SECOND));
}

fn opened_with_a_quorum(site: &Site, id: &str, shares: &Path, admin_key: &Path) {
    let share = |n: &str| shares.join(n).to_str().unwrap().to_string();
    let now = site.admin_json(&[
        "secrets",
        "access",
        id,
        "--share",
        &share("share-1.asc"),
        "--identity",
        admin_key.to_str().unwrap(),
        "--share",
        &share("share-2.txt"),
        "--json",
    ]);
    // The site plugin's field, and the built-in collector's typed one.
    assert_eq!(
        now[0],
        serde_json::json!({"field": "plugins.asset.owner", "value": SECOND})
    );
    assert_eq!(now[1]["field"], "plugins.users.logged_in");
    assert!(now[1]["value"].is_array(), "{now}");
    let trail = site.admin_json(&[
        "secrets",
        "access",
        id,
        "--share",
        &share("share-3.txt"),
        "--share",
        &share("share-2.txt"),
        "--selector",
        "asset.owner",
        "--audit-trail",
        "--json",
    ]);
    let values: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["value"].as_str())
        .collect();
    assert!(
        values.contains(&FIRST) && values.contains(&SECOND),
        "{trail}"
    );
}
