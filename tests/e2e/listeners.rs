//! `pdome-admin listeners` and reloading them into a running server.

use std::path::Path;
use std::process::{Command, Stdio};

use penguindome_tests::http::get;
use penguindome_tests::{Server, Site, free_port, text};

const HEALTH: &str = "/penguindome/v1/health";

fn health(port: u16, ca: &Path) -> u16 {
    get(&format!("https://127.0.0.1:{port}{HEALTH}"), ca, None).status
}

fn admin_ok(site: &Site, args: &[&str]) -> String {
    let out = site.admin(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

fn admin_fails(site: &Site, args: &[&str], why: &str) {
    let out = site.admin(args);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(text(&out).contains(why), "{why:?} not in: {}", text(&out));
}

/// Twelve health requests over one kept-alive connection, a quarter second
/// apart, started now; `connections` reads how many connections they took.
struct KeptAlive {
    child: std::process::Child,
}

impl KeptAlive {
    fn start(port: u16, ca: &Path) -> Self {
        let url = format!("https://127.0.0.1:{port}{HEALTH}");
        let child = Command::new("curl")
            .args(["--silent", "--rate", "4/s"])
            .args(["--write-out", "%{http_code} %{num_connects}\\n", "--cacert"])
            .arg(ca)
            // Each URL needs its own --output.
            .args((0..12).flat_map(|_| ["--output", "/dev/null", &url]))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        Self { child }
    }

    /// (status, new connections) of each request.
    fn finish(self) -> Vec<(u16, u32)> {
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let mut w = l.split_whitespace().map(|x| x.parse::<u32>().unwrap_or(99));
                (w.next().unwrap_or(0) as u16, w.next().unwrap_or(99))
            })
            .collect()
    }
}

#[test]
fn listeners_change_on_reload_and_untouched_ones_keep_their_connections() {
    let site = Site::init();
    let server = site.start();
    let main_ca = site.config_dir.join("tls/server.crt");
    let listed = site.admin_json(&["listeners", "list", "--json"]);
    assert_eq!(listed[0]["name"], "main");
    assert_eq!(listed[0]["scheme"], "https");
    assert!(listed[0]["not_after"].as_str().unwrap().ends_with('Z'));
    assert_eq!(listed[0]["sha256"].as_str().unwrap().len(), 43);

    refusals(&site);

    // A new listener appears while a connection to "main" stays open.
    let extra = free_port();
    let kept = KeptAlive::start(site.port, &main_ca);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let out = admin_ok(
        &site,
        &[
            "listeners",
            "add",
            "extra",
            "--address",
            &format!("127.0.0.1:{extra}"),
            "--tls",
            "self-signed",
            "127.0.0.1",
        ],
    );
    assert!(out.contains("systemctl reload"), "{out}");
    let line = server.reload();
    assert!(line.contains("(extra)"), "{line}");
    let extra_ca = site.config_dir.join("tls/extra.crt");
    assert_eq!(health(extra, &extra_ca), 200);
    let answers = kept.finish();
    assert_eq!(answers.len(), 12, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(
        answers.iter().map(|(_, c)| c).sum::<u32>(),
        1,
        "one connection served all twelve across the reload: {answers:?}"
    );

    moved_and_broken(&site, &server, extra, &extra_ca);
    certificate_swapped_in_place(&site, &server, &main_ca);

    assert!(
        !server.log_text().contains("next `systemctl restart"),
        "only listeners changed: {}",
        server.log_text()
    );
    // The header init wrote is still there: edits keep the file's comments.
    let toml = std::fs::read_to_string(site.config_dir.join("server.toml")).unwrap();
    assert!(
        toml.starts_with("# PenguinDome server configuration"),
        "{toml}"
    );
}

/// What `listeners` refuses to write.
fn refusals(site: &Site) {
    let addr = format!("127.0.0.1:{}", free_port());
    admin_fails(
        site,
        &["listeners", "add", "x", "--address", &addr],
        "--plain",
    );
    admin_fails(
        site,
        &["listeners", "add", "main", "--address", &addr, "--plain"],
        "already named",
    );
    admin_fails(
        site,
        &["listeners", "add", "../x", "--address", &addr, "--plain"],
        "listener name",
    );
    let taken = format!("127.0.0.1:{}", site.port);
    admin_fails(
        site,
        &["listeners", "add", "twin", "--address", &taken, "--plain"],
        "two listeners bind",
    );
    admin_fails(site, &["listeners", "remove", "main"], "only listener");
    admin_fails(
        site,
        &["listeners", "set", "nope", "--deprecated"],
        "no listener",
    );
    let missing = site.dir.path().join("missing.crt");
    admin_fails(
        site,
        &[
            "listeners",
            "set",
            "main",
            "--certificate",
            missing.to_str().unwrap(),
            "--key",
            missing.to_str().unwrap(),
            "--force",
        ],
        "missing.crt",
    );
}

/// A listener moves to another port; a hand-made broken edit changes
/// nothing; a removed listener stops answering.
fn moved_and_broken(site: &Site, server: &Server, extra: u16, extra_ca: &Path) {
    let moved = free_port();
    admin_ok(
        site,
        &[
            "listeners",
            "set",
            "extra",
            "--address",
            &format!("127.0.0.1:{moved}"),
            "--deprecated",
        ],
    );
    let line = server.reload();
    assert!(
        line.contains(&format!("127.0.0.1:{moved} (extra)")),
        "{line}"
    );
    assert_eq!(health(moved, extra_ca), 200);
    assert_eq!(health(extra, extra_ca), 0, "the old port is closed");
    let listed = admin_ok(site, &["listeners", "list"]);
    assert!(
        listed.contains("extra") && listed.contains("yes"),
        "{listed}"
    );

    // A certificate that does not load: the reload changes nothing.
    let toml_path = site.config_dir.join("server.toml");
    let good = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, good.replace("tls/extra.crt", "tls/gone.crt")).unwrap();
    let line = server.reload();
    assert!(
        line.contains("reload refused") && line.contains("gone.crt"),
        "{line}"
    );
    assert_eq!(health(moved, extra_ca), 200);
    std::fs::write(&toml_path, good).unwrap();

    // Its new port is taken: it keeps serving where it was, and the log
    // says what was not applied.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    admin_ok(site, &["listeners", "set", "extra", "--address", &busy]);
    let line = server.reload();
    assert!(
        line.contains("not applied") && line.contains("extra"),
        "{line}"
    );
    assert_eq!(health(moved, extra_ca), 200, "still on its old port");
    drop(taken);

    admin_ok(site, &["listeners", "remove", "extra"]);
    server.reload();
    assert_eq!(health(moved, extra_ca), 0, "a removed listener closes");
    assert_eq!(
        health(site.port, &site.config_dir.join("tls/server.crt")),
        200
    );
}

/// A new certificate on an unchanged listener: new connections get it, a
/// connection made before keeps working.
fn certificate_swapped_in_place(site: &Site, server: &Server, old_ca: &Path) {
    let kept = KeptAlive::start(site.port, old_ca);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let swap = [
        "listeners",
        "set",
        "main",
        "--tls",
        "self-signed",
        "127.0.0.1",
    ];
    admin_fails(site, &swap, "tls renew");
    admin_ok(site, &[&swap[..], &["--force"]].concat());
    server.reload();
    let new_ca = site.config_dir.join("tls/main.crt");
    assert_eq!(health(site.port, &new_ca), 200);
    assert_eq!(health(site.port, old_ca), 0, "the old certificate is gone");
    let answers = kept.finish();
    assert!(
        answers.iter().all(|(s, _)| *s == 200) && answers.iter().map(|(_, c)| c).sum::<u32>() == 1,
        "{answers:?}"
    );
}
