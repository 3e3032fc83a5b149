//! Several servers on one MongoDB database (FerretDB on PostgreSQL, see
//! [`Backend::cluster`]), as behind a load balancer: a
//! release published from any host is served by every server, switches for
//! all of them at once, and outlives the server that published it; a web
//! login, a spent nonce, a revocation and the issues lease hold on all; a
//! shell opened on one server meets its agent on another.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use penguindome_agent::transport::Transport;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::facts::{Known, fixtures, to_value};
use penguindome_protocol::wire::paths;
use penguindome_tests::balancer::Balancer;
use penguindome_tests::{AgentHost, Backend, Server, SimClient, Site, free_port, stand_in, text};
use serde_json::json;

const IN_RELEASE: &str = "apt/dists/stable/InRelease";
const PACKAGES: &str = "apt/dists/stable/main/binary-amd64/Packages";

/// `pdome-admin release` from `site`'s host, with a script for the agent.
fn release(site: &Site) -> String {
    let agent = stand_in(site.dir.path(), "penguindome-agent");
    let agent = agent.display().to_string();
    let out = site.admin(&["release", "--agent-binary", &agent]);
    assert!(out.status.success(), "pdome-admin release: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GETs `path` from the server at `url` (the repository's user and
/// password): the status and the body.
fn fetch(site: &Site, url: &str, path: &str) -> (u16, Vec<u8>) {
    let password = std::fs::read_to_string(site.config_dir.join("repo-password")).unwrap();
    let body = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["--silent", "--write-out", "%{http_code}", "--output"])
        .arg(body.path())
        .arg("--cacert")
        .arg(site.ca_file())
        .arg("--user")
        .arg(format!("agent:{}", password.trim()))
        .arg(format!("{url}{path}"))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (status, std::fs::read(body.path()).unwrap())
}

fn repo_file(site: &Site, url: &str, rel: &str) -> (u16, Vec<u8>) {
    fetch(site, url, &format!("{}/{rel}", paths::REPO))
}

/// The publishing host's copy of a file of its current release.
fn local(site: &Site, rel: &str) -> Vec<u8> {
    std::fs::read(site.data_dir.join("repo/current").join(rel)).unwrap()
}

/// The agent .deb of the current release, by its path in the repository.
fn agent_deb(site: &Site) -> String {
    let packages = String::from_utf8(local(site, PACKAGES)).unwrap();
    let newest = packages
        .split("\n\n")
        .filter(|p| p.contains("Package: penguindome-agent\n"))
        .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("Filename: ")))
        .max()
        .unwrap();
    format!("apt/{newest}")
}

#[test]
fn every_server_serves_the_release_any_host_published() {
    let Some(backend) = Backend::cluster() else {
        return;
    };
    let site = Site::init_on(&backend);
    let peer = site.peer();
    let a = site.start();
    let _b = peer.start();
    let urls = [site.url.clone(), peer.url.clone()];
    for url in &urls {
        assert_eq!(
            repo_file(&site, url, IN_RELEASE).0,
            404,
            "nothing published"
        );
    }

    let out = release(&site);
    assert!(out.contains("Published release 1"), "{out}");
    let deb = agent_deb(&site);
    for url in &urls {
        assert_eq!(
            repo_file(&site, url, IN_RELEASE),
            (200, local(&site, IN_RELEASE))
        );
        assert_eq!(repo_file(&site, url, &deb), (200, local(&site, &deb)));
        let (status, script) = fetch(&site, url, &format!("{}?format=deb", paths::BOOTSTRAP));
        assert_eq!(status, 200, "{url}: the bootstrap script");
        assert!(script.starts_with(b"#!/bin/sh"));
    }

    // From the other host, which never saw release 1: it is mirrored there
    // first, so release 2's indexes still carry release 1's packages, and
    // both servers answer from release 2 the moment the command returns.
    let out = release(&peer);
    assert!(out.contains("Published release 2"), "{out}");
    for url in &urls {
        assert_eq!(
            repo_file(&peer, url, IN_RELEASE),
            (200, local(&peer, IN_RELEASE))
        );
        let (_, packages) = repo_file(&peer, url, PACKAGES);
        let packages = String::from_utf8(packages).unwrap();
        let v = env!("CARGO_PKG_VERSION");
        for version in [format!("{v}-1"), format!("{v}-2")] {
            assert!(
                packages.contains(&format!("Version: {version}\n")),
                "{url}: {version} missing from\n{packages}"
            );
        }
    }

    // The first server and its host's release folder are gone; the other
    // still serves every file, and the next release is published from it.
    let in_release = local(&peer, IN_RELEASE);
    a.kill();
    std::fs::remove_dir_all(site.data_dir.join("repo")).unwrap();
    assert_eq!(repo_file(&peer, &peer.url, IN_RELEASE), (200, in_release));
    assert_eq!(repo_file(&peer, &peer.url, &deb).0, 200);
    let out = release(&peer);
    assert!(out.contains("Published release 3"), "{out}");
    assert_eq!(
        repo_file(&peer, &peer.url, IN_RELEASE),
        (200, local(&peer, IN_RELEASE))
    );
}

#[test]
fn servers_agree_on_the_apt_release_they_sign_anew() {
    let Some(backend) = Backend::cluster() else {
        return;
    };
    let site = Site::init_on(&backend);
    let server_toml = site.config_dir.join("server.toml");
    let toml = std::fs::read_to_string(&server_toml).unwrap();
    let toml = toml.replacen("[server]\n", "[server]\napt_valid_for = \"6s\"\n", 1);
    std::fs::write(&server_toml, toml).unwrap();
    let peer = site.peer();
    release(&site);
    let _a = site.start();
    let _b = peer.start();
    let first = repo_file(&site, &site.url, IN_RELEASE).1;

    // Past half its validity both servers try to sign it anew; one wins the
    // database's switch, and both serve what it signed. (It is signed anew
    // every half validity, and a server's first password check takes a
    // while, so a pair of reads may straddle a signing: then the first
    // server's two reads differ, and the pair is read again.)
    std::thread::sleep(std::time::Duration::from_secs(8));
    let from_a = (0..10)
        .find_map(|_| {
            let from_a = repo_file(&site, &site.url, IN_RELEASE);
            let from_b = repo_file(&site, &peer.url, IN_RELEASE);
            let again = repo_file(&site, &site.url, IN_RELEASE);
            (from_a == again).then(|| {
                assert_eq!(
                    from_a, from_b,
                    "both servers serve the same re-signed Release"
                );
                from_a
            })
        })
        .expect("a quiet moment between signings");
    assert_eq!(from_a.0, 200);
    assert_ne!(from_a.1, first, "the Release was signed anew");
    let until = |r: &[u8]| {
        String::from_utf8_lossy(r)
            .lines()
            .find_map(|l| l.strip_prefix("Valid-Until: ").map(str::to_string))
            .unwrap()
    };
    assert_ne!(until(&from_a.1), until(&first));
    let release_file = repo_file(&site, &peer.url, "apt/dists/stable/Release").1;
    let signature = repo_file(&site, &peer.url, "apt/dists/stable/Release.gpg").1;
    assert!(!signature.is_empty());
    assert!(
        String::from_utf8_lossy(&from_a.1).contains(&until(&release_file)),
        "Release and InRelease are of one signing"
    );
}

/// (status, headers) of a request to the server at `url`.
fn web(site: &Site, url: &str, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["--silent", "--output", "/dev/null", "--dump-header", "-"])
        .args(["--write-out", "%{http_code}", "--cacert"])
        .arg(site.ca_file())
        .args(args)
        .arg(format!("{url}{path}"))
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = t.lines().last().unwrap_or_default().trim().parse();
    (status.unwrap_or(0), t)
}

#[test]
fn a_web_login_is_good_on_every_server_until_it_ends_on_one() {
    let Some(backend) = Backend::cluster() else {
        return;
    };
    let site = Site::init_on(&backend);
    site.set_password("auditor", "web pass 1");
    let out = site.admin(&["access", "grant", "web_fleet", "auditor"]);
    assert!(out.status.success(), "{}", text(&out));
    let peer = site.peer();
    let _a = site.start();
    let _b = peer.start();

    let login = [
        "--data-urlencode",
        "user=auditor",
        "--data-urlencode",
        "password=web pass 1",
    ];
    let (status, headers) = web(&site, &site.url, &login, "/web/login");
    assert_eq!(status, 303, "{headers}");
    let cookie = headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let with_cookie = ["--header", &format!("Cookie: {cookie}")];
    assert_eq!(web(&site, &site.url, &with_cookie, "/web/").0, 200);
    assert_eq!(
        web(&site, &peer.url, &with_cookie, "/web/").0,
        200,
        "the other server knows the login"
    );
    // Logged out through the other server: over on both.
    let mut logout = with_cookie.to_vec();
    logout.extend(["--request", "POST"]);
    let (status, headers) = web(&site, &peer.url, &logout, "/web/logout");
    assert_eq!(status, 303, "{headers}");
    for url in [&site.url, &peer.url] {
        let (status, headers) = web(&site, url, &with_cookie, "/web/");
        assert_eq!(status, 303, "{url}: {headers}");
        assert!(headers.contains("location: /web/login?next="), "{headers}");
    }
}

/// A transport to the server at `url`, pinning the site's certificate.
fn transport_to(site: &Site, url: &str) -> Transport {
    let mut config = site.agent_config();
    config.server_url = url.to_string();
    Transport::new(&config).unwrap()
}

#[test]
fn nonces_revocations_and_the_issues_lease_hold_across_servers() {
    let Some(backend) = Backend::cluster() else {
        return;
    };
    let site = Site::init_on(&backend);
    let peer = site.peer();
    let _a = site.start();
    let _b = peer.start();
    let to_a = transport_to(&site, &site.url);
    let to_b = transport_to(&site, &peer.url);
    let config = site.agent_config();

    let mut plain = fixtures::compliant();
    plain["hd_encryption"] = to_value(&fixtures::disks(
        vec![fixtures::filesystem("/", Known::Value(false))],
        vec![],
    ));
    let laptop = SimClient::enroll(&config, &to_a, "laptop-07").unwrap();
    let report = SimClient::report("laptop-07", plain);

    // Accepted by one server; the same signed request is refused by the other.
    let sealed = laptop.seal(&report);
    assert_eq!(to_a.post(paths::SUBMIT, &sealed).unwrap().status, 200);
    let r = to_b.post(paths::SUBMIT, &sealed).unwrap();
    assert_eq!(r.status, 409, "{}", r.describe());
    assert_eq!(r.api_error().unwrap().code, "replayed_request");

    // Two audits at once, from the two hosts: each issue is opened once.
    let audit = |s: &Site| {
        Command::new(penguindome_tests::bin("pdome-admin"))
            .arg("--config-dir")
            .arg(&s.config_dir)
            .args(["issues", "audit"])
            .output()
    };
    let (one, two) = std::thread::scope(|scope| {
        let one = scope.spawn(|| audit(&site).unwrap());
        let two = scope.spawn(|| audit(&peer).unwrap());
        (one.join().unwrap(), two.join().unwrap())
    });
    assert!(one.status.success(), "{}", text(&one));
    assert!(two.status.success(), "{}", text(&two));
    let issues = site.admin_json(&["issues", "list", "--host", "laptop-07", "--json"]);
    let names: Vec<&str> = issues
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert!(!names.is_empty(), "the audit found the unencrypted disk");
    assert_eq!(
        names.len(),
        unique.len(),
        "an issue opened twice: {names:?}"
    );

    // Warm the second server's key cache, revoke (no server involved), and
    // its very next request is refused.
    assert_eq!(
        to_b.post(paths::UPDATE, &laptop.seal_update("laptop-07"))
            .unwrap()
            .status,
        200
    );
    let out = site.admin(&["clients", "revoke", &laptop.id]);
    assert!(out.status.success(), "{}", text(&out));
    for t in [&to_b, &to_a] {
        let r = t
            .post(paths::UPDATE, &laptop.seal_update("laptop-07"))
            .unwrap();
        assert_eq!(r.status, 403, "{}", r.describe());
        assert_eq!(r.api_error().unwrap().code, "revoked");
    }
}

#[test]
fn a_single_server_site_moves_onto_two_servers_with_its_release() {
    let Some(Backend::Mongodb(uri)) = Backend::cluster() else {
        return;
    };
    let site = Site::init();
    assert!(release(&site).contains("Published release 1"));
    let server = site.start();
    let mut agent = site.agent("settler");
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.stop().success());
    let before = site.admin_json(&["clients", "history", &agent.machine_id, "--json"]);
    let first_collected =
        site.admin_json(&["clients", "list", "--json"])[0]["collected_at"].clone();
    assert!(first_collected.is_string(), "{first_collected}");

    let target = format!(
        "{uri}pdmove_{}",
        penguindome_protocol::envelope::new_nonce()
    );
    let out = site.admin(&["store", "migrate", "--to", &target]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Copied release 1 into the target"), "{said}");
    let toml = site.config_dir.join("server.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    let sqlite = "[store]\nbackend = \"sqlite\"\npath = \"penguindome.db\"\n";
    assert!(config.contains(sqlite), "{config}");
    let mongodb = format!("[store]\nbackend = \"mongodb\"\nuri = \"{target}\"\n");
    std::fs::write(&toml, config.replace(sqlite, &mongodb)).unwrap();

    // A second server with nothing on its disk serves the migrated site.
    let peer = site.peer();
    let _a = site.start();
    let _b = peer.start();
    for url in [&site.url, &peer.url] {
        let (status, body) = repo_file(&site, url, IN_RELEASE);
        assert_eq!(status, 200, "{url}");
        assert_eq!(body, local(&site, IN_RELEASE), "{url}");
    }
    assert_eq!(
        peer.admin_json(&["clients", "history", &agent.machine_id, "--json"]),
        before
    );
    // The client's key came along: it reports through the new server.
    let mut config = AgentConfig::load(&agent.config).unwrap();
    config.server_url = peer.url.clone();
    agent.config = agent.root.join("agent.toml");
    std::fs::write(&agent.config, config.to_toml().unwrap()).unwrap();
    let out = agent.cmd(&["run", "--force-collect"]);
    assert!(out.status.success(), "{}", text(&out));
    let collected =
        |s: &Site| s.admin_json(&["clients", "list", "--json"])[0]["collected_at"].clone();
    assert_ne!(
        collected(&peer),
        first_collected,
        "the new report is stored"
    );

    // And back to one server with the embedded store, from the host that
    // never had the release on its disk: the release comes out of the
    // database into its release folder.
    drop((_a, _b));
    let back = peer.dir.path().join("back.db");
    let out = peer.admin(&[
        "store",
        "migrate",
        "--to",
        &format!("sqlite:{}", back.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Release 1 is in"), "{said}");
    let mirrored = peer.data_dir.join("repo/current").join(IN_RELEASE);
    assert_eq!(std::fs::read(mirrored).unwrap(), local(&site, IN_RELEASE));
}

/// Gives `site`'s server a plain listener its peers reach it on, named
/// as its `[shell] peer_url`.
fn reachable_by_peers(site: &Site) {
    let port = free_port();
    let toml = site.config_dir.join("server.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let socket = "[shell]\nsocket = \"shell.sock\"\n";
    assert!(text.contains(socket), "{text}");
    let named = format!("{socket}peer_url = \"http://127.0.0.1:{port}\"\n");
    std::fs::write(&toml, text.replace(socket, &named)).unwrap();
    site.append_server_config(&format!(
        "[[listener]]\nname = \"peers\"\naddress = \"127.0.0.1:{port}\"\n"
    ));
}

#[test]
fn a_shell_opened_on_one_server_meets_its_agent_on_another() {
    use crate::shell::{LONG, history, run, shell_terminal};
    let Some(backend) = Backend::cluster() else {
        return;
    };
    let site = Site::init_on(&backend);
    let peer = site.peer();
    reachable_by_peers(&site);
    reachable_by_peers(&peer);
    let _a = site.start();
    let b = peer.start();
    // The client reaches only the second server; the administrator waits
    // on the first.
    let agent = peer.agent("roamer");
    run(&agent);

    let mut t = shell_terminal(&site, &agent.machine_id);
    t.wait_for("to check in", LONG);
    run(&agent);
    t.wait_for("Connected to", LONG);
    assert_eq!(t.ask("id -u"), "0");
    b.wait_for_log("the agent is passed on to http://127.0.0.1:");
    t.type_keys("exit 4\r");
    let status = t.wait_exit(LONG);
    assert_eq!(status.code(), Some(4), "{}", t.screen());
    run(&agent);
    penguindome_tests::terminal::check_transcript(&site, &agent.machine_id, &t.screen(), &[]);
    let trail = history(&site, &agent.machine_id);
    assert!(trail.iter().any(|r| r["event"] == "closed"), "{trail:?}");

    // Once the session is taken, its route is gone: a second connection
    // for it, through either server, is refused.
    let session = trail[0]["session_id"].as_str().unwrap().to_string();
    for url in [&site.url, &peer.url] {
        let refusal = refused_agent(&agent, url, &session);
        assert!(refusal.contains("no shell session"), "{refusal}");
    }
}

/// Opens `agent`'s shell WebSocket for `session` at `url`, says a
/// signed hello for it, and returns the reason it is closed with.
fn refused_agent(agent: &AgentHost, url: &str, session: &str) -> String {
    use futures_util::{SinkExt as _, StreamExt as _};
    use penguindome_agent::shell::connect;
    use penguindome_protocol::shell::{Ephemeral, ShellHello};
    use tokio_tungstenite::tungstenite::Message;
    let mut config = AgentConfig::load(&agent.config).unwrap();
    config.server_url = url.to_string();
    let hello = ShellHello {
        session_id: session.to_string(),
        action_id: "0".repeat(32),
        admin_key: Ephemeral::new().public_b64(),
        agent_key: Ephemeral::new().public_b64(),
        transcript_keys: String::new(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut socket = connect::open(&config, Some(session)).await.unwrap();
        let challenge = connect::read_challenge(&mut socket).await.unwrap();
        let signed = connect::sign_hello(&agent.key(), &agent.machine_id, &challenge, &hello);
        let text = serde_json::to_string(&signed.unwrap()).unwrap();
        socket.send(Message::Text(text.into())).await.unwrap();
        match socket.next().await {
            Some(Ok(Message::Close(Some(frame)))) => frame.reason.to_string(),
            other => format!("{other:?}"),
        }
    })
}

/// Three servers of `site` (it and two peers) on the same database, each
/// with a plain listener for the balancer, which they trust to name the
/// client; returns the peers, the servers, the listeners' addresses and the
/// balancer.
fn three_servers_behind_a_balancer(site: &Site) -> (Vec<Site>, Vec<Server>, Vec<String>, Balancer) {
    let peers = vec![site.peer(), site.peer()];
    let mut backends = Vec::new();
    for s in std::iter::once(site).chain(&peers) {
        let port = free_port();
        s.append_server_config(&format!(
            "[[listener]]\nname = \"balancer\"\naddress = \"127.0.0.1:{port}\"\n\
             trusted_proxies = [\"127.0.0.1\"]\n"
        ));
        backends.push(format!("127.0.0.1:{port}"));
    }
    let servers = std::iter::once(site)
        .chain(&peers)
        .map(Site::start)
        .collect();
    let balancer = Balancer::start(site, &backends);
    (peers, servers, backends, balancer)
}

#[test]
fn a_server_killed_behind_the_balancer_loses_nothing_and_agents_fail_over() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: u64 = 60;
    let Some(backend) = Backend::cluster() else {
        return;
    };
    let site = Site::init_on(&backend);
    site.allow_bursts();
    let out = site.admin(&["access", "allow-ip", "metrics", "127.0.0.0/8"]);
    assert!(out.status.success(), "{}", text(&out));
    let (_peers, mut servers, backends, balancer) = three_servers_behind_a_balancer(&site);
    let mut config = site.agent_config();
    config.server_url = balancer.url.clone();
    let transport = Transport::new(&config).unwrap();
    let clients: Vec<SimClient> = (0..CLIENTS)
        .map(|i| SimClient::enroll(&config, &transport, &format!("burst-{i}")).unwrap())
        .collect();

    // Each simulated agent sends its reports in order, and like an agent
    // sends a report again (newly signed) until one answer acknowledges it.
    let acked = AtomicUsize::new(0);
    let killed = std::thread::scope(|scope| {
        for (i, client) in clients.iter().enumerate() {
            let (config, acked) = (&config, &acked);
            scope.spawn(move || {
                let transport = Transport::new(config).unwrap();
                for n in 1..=PER_CLIENT {
                    let report =
                        SimClient::report(&format!("burst-{i}"), json!({"burst": {"n": n}}));
                    client.submit_until_stored(&transport, &report);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // SIGKILL one server a third of the way through.
        while acked.load(Ordering::SeqCst) < CLIENTS * PER_CLIENT as usize / 3 {
            std::thread::sleep(Duration::from_millis(2));
        }
        servers.remove(0).kill();
        acked.load(Ordering::SeqCst)
    });
    assert!(
        killed < CLIENTS * PER_CLIENT as usize,
        "the kill came mid-burst"
    );
    // Each server took its share: the two left standing stored some, and
    // the killed one stored the rest before it died.
    let stored_by = |backend: &String| {
        let out = Command::new("curl")
            .args(["--silent", &format!("http://{backend}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("penguindome_reports_total{outcome=\"stored\"} "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as usize)
    };
    let survivors: Vec<usize> = backends[1..].iter().map(stored_by).collect();
    assert!(survivors.iter().all(|n| *n > 0), "{survivors:?}");
    let total = CLIENTS * PER_CLIENT as usize;
    assert!(
        survivors.iter().sum::<usize>() < total,
        "{survivors:?} of {total}"
    );

    // Every report is stored, each once and in order: a report stored
    // twice would show in the audit trail as a value going back.
    for client in &clients {
        let stored = site.burst_history(&client.id);
        let expected: Vec<u64> = (1..=PER_CLIENT).collect();
        assert_eq!(stored, expected, "{}: the reports as stored", client.id);
    }
}
