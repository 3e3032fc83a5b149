//! `pdome-admin secrets`: selected fields are sealed by the agent before
//! they are spooled, travel and rest as ciphertext, show in the audit trail
//! as changes without values, and open only with a quorum of shares.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use penguindome_agent::transport::Transport;
use penguindome_protocol::sealing::{generate_key, public_armored};
use penguindome_protocol::wire::paths;
use penguindome_tests::proxy::Proxy;
use penguindome_tests::{AgentHost, Backend, SimClient, Site, on_both_stores, text};
use serde_json::Value;

on_both_stores!(
    sealed_fields_are_ciphertext_everywhere_and_open_with_a_quorum,
    stored_plaintext_is_sealed_and_no_copy_is_left,
);

const FIRST: &str = "Ada Lovelace 1815";
const SECOND: &str = "Grace Hopper 1906";
const THIRD: &str = "Hedy Lamarr 1914";

/// Past the server's re-reading of `secrets.json`.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(6);

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

/// Everything the site's store holds, as bytes to scan: the SQLite files
/// (database, WAL, shared memory), or every document of every MongoDB
/// collection.
fn stored_bytes(site: &Site, backend: &Backend) -> Vec<(String, Vec<u8>)> {
    match backend {
        Backend::Sqlite => all_bytes(&site.data_dir)
            .into_iter()
            .map(|(p, b)| (p.display().to_string(), b))
            .collect(),
        Backend::Mongodb(uri) => {
            let toml = std::fs::read_to_string(site.config_dir.join("server.toml")).unwrap();
            let db = toml
                .lines()
                .find_map(|l| l.trim().strip_prefix("database = \""))
                .map(|l| l.trim_end_matches('"').to_string())
                .expect("server.toml names the MongoDB database");
            mongo_documents(uri, &db)
        }
    }
}

fn mongo_documents(uri: &str, db: &str) -> Vec<(String, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ::mongodb::Client::with_uri_str(uri).await.unwrap();
        let db = client.database(db);
        let mut out = Vec::new();
        for name in db.list_collection_names().await.unwrap() {
            let coll = db.collection::<::mongodb::bson::Document>(&name);
            let mut cursor = coll.find(::mongodb::bson::doc! {}).await.unwrap();
            let mut text = String::new();
            while cursor.advance().await.unwrap() {
                text.push_str(&cursor.deserialize_current().unwrap().to_string());
            }
            out.push((name, text.into_bytes()));
        }
        out
    })
}

fn holding<'a>(stored: &'a [(String, Vec<u8>)], value: &str) -> Vec<&'a str> {
    stored
        .iter()
        .filter(|(_, b)| contains(b, value))
        .map(|(n, _)| n.as_str())
        .collect()
}

fn stored_plaintext_is_sealed_and_no_copy_is_left(backend: Backend) {
    let site = Site::init_on(&backend);
    let _server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let client = SimClient::enroll(&config, &transport, "desk").unwrap();
    let submit = |owner: &str| {
        let report = SimClient::report(
            "desk",
            serde_json::json!({"asset": {"owner": owner, "room": "B12"}}),
        );
        let reply = client.submit(&transport, &report);
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    // Reported in the clear before anything was selected: in the client's
    // document and in the audit trail (the scan finds them, so it works).
    submit(FIRST);
    submit(SECOND);
    let before = stored_bytes(&site, &backend);
    assert!(
        !holding(&before, FIRST).is_empty(),
        "the scan must see plaintext"
    );

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
    assert!(
        site.admin(&["secrets", "select", "asset.owner"])
            .status
            .success()
    );
    // A client that has not learned the policy yet still sends the field in
    // the clear: the server seals it before anything is stored.
    std::thread::sleep(REFRESH);
    submit(THIRD);
    let doc = site.admin_json(&["clients", "show", &client.id, "--json"]);
    assert!(
        doc["plugins"]["asset"]["owner"]["sealed"].is_object(),
        "{doc}"
    );

    let done = site.admin_json(&["secrets", "encrypt", "--json"]);
    assert!(done["audit_records"].as_u64().unwrap() >= 2, "{done}");
    let again = site.admin_json(&["secrets", "encrypt", "--json"]);
    assert_eq!(again["audit_records"], 0, "nothing left to seal: {again}");
    let after = stored_bytes(&site, &backend);
    for value in [FIRST, SECOND, THIRD] {
        assert!(
            holding(&after, value).is_empty(),
            "{value} in {:?}",
            holding(&after, value)
        );
    }
    assert!(
        !holding(&after, "B12").is_empty(),
        "fields not selected stay readable"
    );

    a_migration_copies_the_ciphertext(&site, &client.id);
    let opened = site.admin_json(&[
        "secrets",
        "access",
        &client.id,
        "--share",
        shares.join("share-1.txt").to_str().unwrap(),
        "--share",
        shares.join("share-2.txt").to_str().unwrap(),
        "--audit-trail",
        "--json",
    ]);
    let values = opened.to_string();
    for value in [FIRST, SECOND, THIRD] {
        assert!(values.contains(value), "{value} does not open: {opened}");
    }
    replaced_keys_hand_their_values_over(&site, &client.id, &shares);
}

/// `--replace`: shares of the old key move every value to a new key; the
/// old shares then open nothing, the new ones everything.
fn replaced_keys_hand_their_values_over(site: &Site, id: &str, old: &Path) {
    let old_key = site.admin_json(&["secrets", "show", "--json"])["key"].clone();
    let new = site.dir.path().join("new-shares");
    let share = |dir: &Path, n: u8| {
        dir.join(format!("share-{n}.txt"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let out = site.admin(&[
        "secrets",
        "enable",
        "--replace",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--out",
        new.to_str().unwrap(),
        "--old-share",
        &share(old, 1),
        "--old-share",
        &share(old, 2),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Re-encrypted"), "{}", text(&out));
    let shown = site.admin_json(&["secrets", "show", "--json"]);
    assert_ne!(shown["key"], old_key);
    assert_eq!(shown["selectors"], serde_json::json!(["asset.owner"]));
    let doc = site.admin_json(&["clients", "show", id, "--json"]);
    assert_eq!(
        doc["plugins"]["asset"]["owner"]["sealed"]["key"],
        shown["key"]
    );

    let open = |a: &str, b: &str| {
        site.admin(&[
            "secrets",
            "access",
            id,
            "--share",
            a,
            "--share",
            b,
            "--audit-trail",
            "--json",
        ])
    };
    let with_new = open(&share(&new, 3), &share(&new, 1));
    assert!(with_new.status.success(), "{}", text(&with_new));
    let opened = String::from_utf8_lossy(&with_new.stdout);
    for value in [FIRST, SECOND, THIRD] {
        assert!(
            opened.contains(value),
            "{value} not under the new key: {opened}"
        );
    }
    let with_old = open(&share(old, 1), &share(old, 2));
    assert!(with_old.status.success(), "{}", text(&with_old));
    assert_eq!(String::from_utf8_lossy(&with_old.stdout).trim(), "[]");
    assert!(
        text(&with_old).contains("sealed to another key"),
        "{}",
        text(&with_old)
    );
}

/// `store migrate` copies sealed values as they are.
fn a_migration_copies_the_ciphertext(site: &Site, id: &str) {
    let doc = site.admin_json(&["clients", "show", id, "--json"]);
    let ciphertext = doc["plugins"]["asset"]["owner"]["sealed"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_string();
    let copy = site.dir.path().join("copy.db");
    let out = site.admin(&[
        "store",
        "migrate",
        "--to",
        &format!("sqlite:{}", copy.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let copied: Vec<u8> = all_bytes(site.dir.path())
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("copy.db"))
        .flat_map(|(_, b)| b)
        .collect();
    assert!(
        contains(&copied, &ciphertext),
        "the ciphertext is copied as it is"
    );
    for value in [FIRST, SECOND, THIRD] {
        assert!(
            !contains(&copied, value),
            "{value} in the migrated database"
        );
    }
}
