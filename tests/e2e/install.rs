//! The user story on a real client: a debootstrapped Debian booted under
//! systemd-nspawn runs the server's bootstrap script, apt installs the
//! agent from the site's signed repository over HTTPS (pinned certificate,
//! Basic auth), the timer runs it, its report reaches the server, its log
//! is in the journal, and the next release reaches it through apt by
//! itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use penguindome_tests::container::{BootedDebian, Suite, on_each_suite};
use penguindome_tests::terminal::{Terminal, check_transcript};
use penguindome_tests::{Site, bin, http, text};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn release(site: &Site) -> String {
    let agent = bin("penguindome-agent");
    let out = site.admin(&[
        "release",
        "--formats",
        "deb",
        "--agent-binary",
        &agent.display().to_string(),
    ]);
    assert!(out.status.success(), "pdome-admin release: {}", text(&out));
    stdout(&out)
}

/// Polls `check` every two seconds until it holds or `limit` passes.
fn wait_for(limit: Duration, what: &str, check: impl FnMut() -> Option<String>) -> String {
    wait_or_explain(limit, what, check, String::new)
}

/// Like [`wait_for`], for something the agent's timer brings about: on
/// timeout the failure carries the timer's state and the agent's and the
/// upgrade's journals, which say where the run stopped.
fn wait_in(
    c: &BootedDebian,
    limit: Duration,
    what: &str,
    check: impl FnMut() -> Option<String>,
) -> String {
    wait_or_explain(limit, what, check, || {
        let timers = stdout(&c.exec(&["systemctl", "list-timers", "--all", "--no-pager"]));
        let journal = stdout(&c.exec(&[
            "journalctl",
            "--no-pager",
            "-n",
            "200",
            "-u",
            "penguindome-agent.service",
            "-u",
            "penguindome-upgrade.service",
        ]));
        format!("\n{timers}\n{journal}")
    })
}

fn wait_or_explain(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<String>,
    explain: impl FnOnce() -> String,
) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() >= limit {
            panic!("gave up waiting for {what} after {limit:?}{}", explain());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Waits up to a minute until `unit`'s journal holds every one of `needles`:
/// journald stores lines asynchronously, a moment after they were written.
fn wait_for_journal(c: &BootedDebian, unit: &str, needles: &[&str]) {
    let mut journal = String::new();
    let start = Instant::now();
    while !needles.iter().all(|n| journal.contains(n)) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{needles:?} not in the journal of {unit}:\n{journal}"
        );
        std::thread::sleep(Duration::from_millis(500));
        journal = stdout(&c.exec(&["journalctl", "--no-pager", "-u", unit]));
    }
}

/// Runs `args` in the container, which must succeed; returns its stdout.
fn ok(c: &BootedDebian, args: &[&str]) -> String {
    let out = c.exec(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    stdout(&out)
}

/// The version of penguindome-agent dpkg has installed.
fn installed_agent(c: &BootedDebian) -> String {
    stdout(&c.exec(&["dpkg-query", "-W", "-f=${Version}", "penguindome-agent"]))
}

#[test]
fn apt_installs_and_upgrades_the_agent_on_booted_debian_12_and_13() {
    on_each_suite(agent_lifecycle);
}

/// Bootstrap, enrollment, reports, actions, self-upgrade, removal.
fn agent_lifecycle(suite: Suite) {
    // Reports every minute, so that the agent's own facts arrive soon.
    let site = Site::init_with(|_| vec!["--collect-interval".into(), "1m".into()]);
    let out = release(&site);
    assert!(out.contains("Published release 1"), "{out}");
    let server = site.start();
    let token = site.admin_json(&["tokens", "create", "--json", "--label", "booted"]);
    let c = BootedDebian::boot_on(suite, |root: &Path| {
        let path = root.join("root/token");
        std::fs::write(&path, format!("{}\n", token["token"].as_str().unwrap())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    });
    let bootstrap = bootstrap_installs_and_enrolls(&c, &token);
    let client_id = the_first_run_enrolls_and_reports(&site, &c);
    no_site_wide_secret_on_the_machine(&site, &c, &token);
    a_spent_token_is_refused(&c, &token, &bootstrap);
    actions_run_in_units_of_their_own(&site, &c, &client_id);
    a_shell_opens_in_a_unit_of_its_own(&site, &c, &client_id);
    let _server = a_server_restart_ends_a_shell_on_both_sides(&site, &c, &client_id, server);
    a_wipe_ends_every_human_account(&site, &c, &client_id);

    // An admin's local change to the configuration survives upgrades.
    let out = c.exec(&[
        "sh",
        "-c",
        "echo '# local change' >>/etc/penguindome/agent.toml",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    a_damaged_release_fails_to_upgrade(&site, &c, &client_id);
    the_next_release_arrives_by_itself(&site, &c);
    revoking_the_client_closes_the_repository(&site, &c, &client_id);

    // Remove keeps the machine's key and spool; purge removes them.
    ok(&c, &["apt-get", "remove", "-y", "penguindome-agent"]);
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-active", "penguindome.timer"])),
        "inactive"
    );
    ok(
        &c,
        &["test", "-f", "/var/lib/penguindome-agent/client-key.asc"],
    );
    ok(&c, &["apt-get", "purge", "-y", "penguindome-agent"]);
    assert!(
        !c.exec(&["test", "-e", "/var/lib/penguindome-agent"])
            .status
            .success()
    );
}

/// What an admin pastes on a new machine: `tokens create` prints the
/// one-liner; the token comes from a file, as an automated install would
/// hand it over. Returns the one-liner.
fn bootstrap_installs_and_enrolls(c: &BootedDebian, token: &serde_json::Value) -> String {
    let line = token["bootstrap"]["deb"].as_str().unwrap().to_string();
    assert!(line.contains("sha256sum -c"), "{line}");
    let out = c.exec(&[
        "env",
        "PENGUINDOME_TOKEN_FILE=/root/token",
        "sh",
        "-c",
        &line,
    ]);
    assert!(out.status.success(), "bootstrap: {}", text(&out));
    assert!(stdout(&out).contains("Enrolled with"), "{}", text(&out));
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-enabled", "penguindome.timer"])),
        "enabled"
    );
    let status = c.exec(&["systemctl", "status", "--no-pager", "penguindome.timer"]);
    assert!(
        stdout(&status).contains("Active: active ("),
        "{}",
        text(&status)
    );
    assert_eq!(
        stdout(&c.exec(&["stat", "-c", "%a %U", "/etc/penguindome/agent.toml"])),
        "600 root"
    );
    assert_eq!(
        stdout(&c.exec(&[
            "stat",
            "-c",
            "%a %U",
            "/etc/apt/auth.conf.d/penguindome-client.conf"
        ])),
        "600 root"
    );
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(installed_agent(c), format!("{v}-1"));
    // A tampered script runs nothing: the one-liner checks its hash.
    let tampered = line.replacen("sha256sum", "sed s/0/1/ | sha256sum", 1);
    let out = c.exec(&["sh", "-c", &tampered]);
    assert!(
        !out.status.success(),
        "a wrong hash must stop it: {}",
        text(&out)
    );
    line
}

/// Neither the shared enrollment credential nor the shared repository
/// password is anywhere a user could read them: not in /etc, not in apt's
/// package cache, not in the agent's state; the spent token is not kept.
fn no_site_wide_secret_on_the_machine(site: &Site, c: &BootedDebian, token: &serde_json::Value) {
    let repo_password = std::fs::read_to_string(site.config_dir.join("repo-password")).unwrap();
    let credential = site.agent_config().enrollment_credential;
    let secret = token["token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(2)
        .unwrap()
        .to_string();
    ok(c, &["rm", "/root/token"]);
    for needle in [repo_password.trim(), credential.as_str(), secret.as_str()] {
        assert!(!needle.is_empty());
        let out = c.exec(&[
            "grep",
            "-rlF",
            "--",
            needle,
            "/etc",
            "/var/cache",
            "/var/lib/penguindome-agent",
            "/var/lib/apt",
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a site-wide secret is on the client: {}",
            text(&out)
        );
    }
    // The site package apt fetched carries none either.
    let out = c.exec(&[
        "sh",
        "-c",
        "for d in /var/cache/apt/archives/penguindome-site_*.deb; do dpkg-deb -x \"$d\" /tmp/site; done; \
         grep -rc enrollment_credential /tmp/site/etc/penguindome/agent.toml",
    ]);
    assert_eq!(stdout(&out), "0", "{}", text(&out));
}

/// The token was for one machine: run again, the same one-liner stops at
/// the repository, which the spent token no longer opens, and says why.
fn a_spent_token_is_refused(c: &BootedDebian, token: &serde_json::Value, line: &str) {
    let path = "/root/spent-token";
    ok(
        c,
        &[
            "sh",
            "-c",
            &format!(
                "umask 077; echo '{}' >{path}",
                token["token"].as_str().unwrap()
            ),
        ],
    );
    let out = c.exec(&[
        "env",
        &format!("PENGUINDOME_TOKEN_FILE={path}"),
        "sh",
        "-c",
        line,
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ask an administrator for a new one"),
        "{}",
        text(&out)
    );
    ok(c, &["rm", path]);
}

/// The timer's first run enrolls and reports; returns the client id.
fn the_first_run_enrolls_and_reports(site: &Site, c: &BootedDebian) -> String {
    let client_id = wait_in(c, Duration::from_secs(300), "the first report", || {
        let list = site.admin_json(&["clients", "list", "--json"]);
        let clients = list.as_array()?;
        (clients.len() == 1 && !clients[0]["collected_at"].is_null()).then(|| {
            clients[0]["client_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    });
    assert_eq!(client_id.len(), 32, "a machine id");
    wait_for_journal(c, "penguindome-agent.service", &["penguindome-agent["]);
    client_id
}

/// The sandboxed timer's agent runs a patch into /usr (read-only in its
/// sandbox) and a command, each in a transient unit of its own.
fn actions_run_in_units_of_their_own(site: &Site, c: &BootedDebian, client_id: &str) {
    let src = site.dir.path().join("pd-patched");
    std::fs::write(&src, "#!/bin/sh\necho '{\"patched\": true}'\n").unwrap();
    let target = "/usr/lib/penguindome/plugins/pd-patched";
    let patch = site.admin_json(&[
        "patch",
        "add",
        "--host",
        client_id,
        "--mode",
        "755",
        "--json",
        target,
        src.to_str().unwrap(),
    ]);
    let command = site.admin_json(&[
        "command",
        "run",
        "--host",
        client_id,
        "--json",
        "--command",
        "id -un; cat /proc/self/cgroup",
    ]);
    let state_of = |kind: &str, id: &str| -> Option<String> {
        let (list, key) = if kind == "patch" {
            (site.admin_json(&["patch", "list", "--json"]), "targets")
        } else {
            (
                site.admin_json(&["command", "show", id, "--json"]),
                "targets",
            )
        };
        let target = if kind == "patch" {
            list.as_array()?.iter().find(|p| p["id"] == id)?[key][0].clone()
        } else {
            list[key][0].clone()
        };
        let state = target["state"].as_str()?.to_string();
        matches!(state.as_str(), "succeeded" | "failed" | "refused").then(|| target.to_string())
    };
    let patched = wait_in(c, Duration::from_secs(300), "the patch", || {
        state_of("patch", patch["id"].as_str()?)
    });
    assert!(patched.contains("\"succeeded\""), "{patched}");
    assert_eq!(ok(c, &["stat", "-c", "%a %U", target]), "755 root");
    let ran = wait_in(c, Duration::from_secs(300), "the command", || {
        state_of("command", command["id"].as_str()?)
    });
    let ran: serde_json::Value = serde_json::from_str(&ran).unwrap();
    assert_eq!(ran["state"], "succeeded", "{ran}");
    let stdout_b64 = ran["output"]["stdout"].as_str().unwrap();
    let printed =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, stdout_b64).unwrap();
    let printed = String::from_utf8_lossy(&printed);
    assert!(printed.starts_with("root\n"), "{printed}");
    assert!(
        printed.contains("penguindome-action-"),
        "in a unit of its own: {printed}"
    );
}

/// `pdome-admin shell` on a real PTY reaches root's shell in a transient
/// unit of the packaged agent's, follows the window, passes the exit
/// status back, leaves a transcript that replays it, and leaves nothing
/// running on the machine.
fn a_shell_opens_in_a_unit_of_its_own(site: &Site, c: &BootedDebian, client_id: &str) {
    let mut t = booted_shell(site, c, client_id);
    assert_eq!(t.ask("id -u"), "0");
    let cgroup = t.ask("cat /proc/self/cgroup");
    assert!(cgroup.contains("penguindome-shell-"), "{cgroup}");
    assert_eq!(t.ask("stty size"), "24 80");
    t.resize(120, 40);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(t.ask("stty size"), "40 120");
    t.type_keys("exit 3\r");
    assert_eq!(
        t.wait_exit(Duration::from_secs(30)).code(),
        Some(3),
        "{}",
        t.screen()
    );
    check_transcript(site, client_id, &t.screen(), &[]);
    no_shell_unit_left(c);
    let trail = site.admin_json(&["clients", "history", client_id, "--json"]);
    let action_id = trail
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["field"] == "shell.session" && r["new"]["event"] == "closed")
        .map(|r| r["new"]["action_id"].as_str().unwrap().to_string())
        .expect("the session is on the audit trail");
    let reported = finished(site, c, &action_id);
    assert_eq!(reported["state"], "succeeded", "{reported}");
    assert_eq!(reported["output"]["exit_status"], 3, "{reported}");

    // `~.` at the start of a line ends a session, and its unit goes too.
    let mut t = booted_shell(site, c, client_id);
    assert_eq!(t.ask("echo alive"), "alive");
    t.type_keys("\r~.");
    assert_eq!(
        t.wait_exit(Duration::from_secs(30)).code(),
        Some(255),
        "{}",
        t.screen()
    );
    no_shell_unit_left(c);
}

/// pdome-admin shell on a PTY, connected to the booted machine's root
/// shell (the agent's run is started at once rather than on its timer).
fn booted_shell(site: &Site, c: &BootedDebian, client_id: &str) -> Terminal {
    let mut cmd = Command::new(bin("pdome-admin"));
    cmd.arg("--config-dir")
        .arg(&site.config_dir)
        .args(["shell", client_id, "--wait", "150s"])
        .env("TERM", "xterm");
    let t = Terminal::spawn(cmd, 80, 24);
    t.wait_for("to check in", Duration::from_secs(30));
    ok(
        c,
        &[
            "systemctl",
            "start",
            "--no-block",
            "penguindome-agent.service",
        ],
    );
    t.wait_for("Connected to", Duration::from_secs(150));
    t
}

/// Waits until no session unit is left on the machine, nor a shell.
fn no_shell_unit_left(c: &BootedDebian) {
    wait_for(Duration::from_secs(30), "the session's unit to go", || {
        let units = stdout(&c.exec(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "penguindome-shell-*",
        ]));
        units.is_empty().then_some(units)
    });
}

/// The server stops mid-session: pdome-admin says so and exits, the
/// session's unit and its shell end on the machine. Returns the server,
/// started again.
fn a_server_restart_ends_a_shell_on_both_sides(
    site: &Site,
    c: &BootedDebian,
    client_id: &str,
    server: penguindome_tests::Server,
) -> penguindome_tests::Server {
    let mut t = booted_shell(site, c, client_id);
    let pid = t.ask("echo $$");
    server.stop();
    assert_eq!(
        t.wait_exit(Duration::from_secs(30)).code(),
        Some(255),
        "{}",
        t.screen()
    );
    assert!(t.screen().contains("shutting down"), "{}", t.screen());
    no_shell_unit_left(c);
    assert!(
        !c.exec(&["test", "-e", &format!("/proc/{pid}")])
            .status
            .success(),
        "the remote shell {pid} is gone"
    );
    site.start()
}

/// The final state of action `id` on its one client, once it has one; on
/// timeout, what the machine's journal says about it.
fn finished(site: &Site, c: &BootedDebian, id: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let shown = site.admin_json(&["command", "show", id, "--json"]);
        let t = shown["targets"][0].clone();
        let state = t["state"].as_str().unwrap_or_default();
        if matches!(state, "succeeded" | "failed" | "refused" | "interrupted") {
            return t;
        }
        if start.elapsed() > Duration::from_secs(240) {
            let units = stdout(&c.exec(&["systemctl", "list-units", "--all", "penguindome*"]));
            let jobs = stdout(&c.exec(&["systemctl", "list-jobs"]));
            // minbase has no ps: each process's pid, wait channel and command.
            let procs = stdout(&c.exec(&[
                "sh",
                "-c",
                r#"for p in /proc/[0-9]*; do echo "${p#/proc/} $(cat $p/wchan) $(tr '\0' ' ' <$p/cmdline)"; done 2>/dev/null"#,
            ]));
            let journal = stdout(&c.exec(&["journalctl", "--no-pager", "-n", "60"]));
            panic!(
                "action {id} still {state:?} after 240 s: {shown}\n{units}\n{jobs}\n{procs}\n{journal}"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Two logged-in users lose sessions, processes, homes and accounts; root,
/// system accounts and the agent stay; a dry run removes nothing.
fn a_wipe_ends_every_human_account(site: &Site, c: &BootedDebian, client_id: &str) {
    for (name, uid) in [("alice", "1000"), ("bob", "1001")] {
        ok(c, &["useradd", "-m", "-u", uid, "-s", "/bin/bash", name]);
        let login = format!("setsid -f su - {name} -c 'exec sleep 600' </dev/null >/dev/null 2>&1");
        ok(c, &["sh", "-c", &login]);
    }
    let sessions = |name: &str| {
        stdout(&c.exec(&[
            "loginctl",
            "show-user",
            name,
            "--property=Sessions",
            "--value",
        ]))
    };
    wait_for(Duration::from_secs(30), "two logged-in users", || {
        (!sessions("alice").is_empty() && !sessions("bob").is_empty()).then(String::new)
    });
    let hostname = site.admin_json(&["clients", "show", client_id, "--json"])["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = site.admin(&["wipe", client_id, "--confirm", "not-this-one"]);
    assert!(!wrong.status.success(), "{}", text(&wrong));

    let dry = site.admin_json(&[
        "wipe",
        client_id,
        "--confirm",
        &hostname,
        "--dry-run",
        "--json",
    ]);
    let t = finished(site, c, dry["id"].as_str().unwrap());
    assert_eq!(t["state"], "succeeded", "{t}");
    assert!(
        t["detail"]
            .as_str()
            .unwrap()
            .contains("would wipe alice, bob"),
        "{t}"
    );
    ok(c, &["id", "alice"]);
    ok(c, &["test", "-d", "/home/bob"]);
    assert!(!sessions("alice").is_empty(), "a dry run ends nothing");

    let real = site.admin_json(&["wipe", client_id, "--confirm", &hostname, "--json"]);
    let t = finished(site, c, real["id"].as_str().unwrap());
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["detail"], "wiped alice, bob", "{t}");
    for (name, uid) in [("alice", "1000"), ("bob", "1001")] {
        assert!(!c.exec(&["id", name]).status.success(), "{name} is gone");
        assert!(
            !c.exec(&["test", "-e", &format!("/home/{name}")])
                .status
                .success()
        );
        let uids = stdout(&c.exec(&["sh", "-c", "grep -sh '^Uid:' /proc/[0-9]*/status"]));
        // Init, journald, logind, D-Bus at least: /proc was read. (sshd
        // may be missing: containers booted side by side share port 22.)
        assert!(uids.lines().count() > 3, "read the processes: {uids}");
        assert!(
            !uids
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(uid)),
            "{name} still has processes"
        );
        // logind may keep listing a session as closing once nothing is
        // left in it (seen on Debian 13 in containers); none may be active.
        let listed = stdout(&c.exec(&["loginctl", "list-sessions", "--no-legend"]));
        for line in listed.lines().filter(|l| l.contains(name)) {
            let id = line.split_whitespace().next().unwrap_or_default();
            let state = stdout(&c.exec(&[
                "loginctl",
                "show-session",
                id,
                "--property=State",
                "--value",
            ]));
            assert_eq!(
                state.trim(),
                "closing",
                "{name}'s session {id} is still {state}"
            );
        }
    }
    ok(c, &["id", "root"]);
    ok(c, &["id", "messagebus"]);
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-active", "penguindome.timer"])),
        "active"
    );
}

/// A release whose agent package is damaged: the upgrade fails, the
/// agent keeps working on the old release, and the failure reaches the
/// server in the agent's own report.
fn a_damaged_release_fails_to_upgrade(site: &Site, c: &BootedDebian, client_id: &str) {
    let v = env!("CARGO_PKG_VERSION");
    publish_a_damaged_release(site, c);
    let outcome = wait_in(c, Duration::from_secs(300), "the failed upgrade", || {
        let o = stdout(&c.exec(&["cat", "/var/lib/penguindome-agent/upgrade.json"]));
        o.contains("\"error\": \"").then_some(o)
    });
    assert!(outcome.contains("Hash Sum mismatch"), "{outcome}");
    assert_eq!(installed_agent(c), format!("{v}-1"));
    assert!(
        stdout(&c.exec(&["dpkg", "--audit"])).is_empty(),
        "dpkg is left consistent"
    );
    assert!(c.exec(&["penguindome-agent", "--version"]).status.success());
    let reported = wait_in(
        c,
        Duration::from_secs(300),
        "the failure in a report",
        || {
            let doc = site.admin_json(&["clients", "show", client_id, "--json"]);
            let agent = &doc["plugins"]["agent"];
            agent["upgrade"]["error"]
                .is_string()
                .then(|| agent.to_string())
        },
    );
    assert!(
        reported.contains(&format!("\"package_version\":\"{v}-1\"")),
        "{reported}"
    );
}

/// Publishes release 2 with a damaged agent package. The timer stays
/// stopped until the package is damaged, so no run can fetch the intact
/// one in between.
fn publish_a_damaged_release(site: &Site, c: &BootedDebian) {
    let out = c.exec(&["systemctl", "stop", "penguindome.timer"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(Duration::from_secs(120), "the agent's run to end", || {
        let state = stdout(&c.exec(&[
            "systemctl",
            "is-active",
            "penguindome-agent.service",
            "penguindome-upgrade.service",
        ]));
        (!state.contains("activating") && !state.lines().any(|l| l == "active")).then_some(state)
    });
    let out = release(site);
    assert!(out.contains("Published release 2"), "{out}");
    let v = env!("CARGO_PKG_VERSION");
    let damaged = site.data_dir.join(format!(
        "repo/current/apt/pool/main/p/penguindome-agent/penguindome-agent_{v}-2_amd64.deb"
    ));
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let out = c.exec(&["systemctl", "start", "penguindome.timer"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The next release reaches the client through apt, by itself, at once.
fn the_next_release_arrives_by_itself(site: &Site, c: &BootedDebian) {
    let v = env!("CARGO_PKG_VERSION");
    let out = release(site);
    assert!(out.contains("Published release 3"), "{out}");
    wait_in(
        c,
        Duration::from_secs(300),
        "the upgrade to release 3",
        || (installed_agent(c) == format!("{v}-3")).then_some(String::new()),
    );
    // dpkg shows the new version before the upgrade service logs its
    // summary.
    wait_for_journal(
        c,
        "penguindome-upgrade.service",
        &[&format!("{v}-1 -> {v}-3")],
    );
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-active", "penguindome.timer"])),
        "active"
    );
    let config = stdout(&c.exec(&["cat", "/etc/penguindome/agent.toml"]));
    assert!(config.contains("# local change"), "{config}");
}

#[test]
fn the_server_package_installs_runs_as_its_user_and_purges_cleanly_on_debian_12_and_13() {
    on_each_suite(server_lifecycle);
}

/// Install, init, serve, reload, release, audit unit, upgrade, purge.
fn server_lifecycle(suite: Suite) {
    let out_dir = tempfile::tempdir().unwrap();
    let deb_name = build_server_deb(out_dir.path());
    let deb = out_dir.path().join(&deb_name);
    let c = BootedDebian::boot_on(suite, |root: &Path| {
        std::fs::copy(&deb, root.join("root").join(&deb_name)).unwrap();
    });
    let deb_path = format!("/root/{deb_name}");
    the_package_waits_for_init(&c, &deb_path);
    let url = init_gives_the_service_user_its_files(&c);
    the_server_runs_as_its_user(&c, &url);
    releases_made_by_root_are_served(&c, &url);
    the_audit_unit_reports_to_the_journal(&c);
    upgrades_keep_the_audit_timer_choice(&c, &deb_path);

    // Remove keeps configuration and data; purge removes them.
    ok(&c, &["dpkg", "--remove", "penguindome-server"]);
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-active", "penguindome-server"])),
        "inactive"
    );
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-active", "penguindome-audit.timer"])),
        "inactive"
    );
    ok(&c, &["test", "-f", "/etc/penguindome/server.toml"]);
    ok(&c, &["test", "-d", "/var/lib/penguindome/repo"]);
    ok(&c, &["dpkg", "--purge", "penguindome-server"]);
    assert!(!c.exec(&["test", "-e", "/etc/penguindome"]).status.success());
    assert!(
        !c.exec(&["test", "-e", "/var/lib/penguindome"])
            .status
            .success()
    );
}

/// Builds the server's .deb into `out_dir`; returns its file name.
fn build_server_deb(out_dir: &Path) -> String {
    let bin_dir = bin("pdome-admin").parent().unwrap().to_path_buf();
    let out = Command::new(bin("pdome-admin"))
        .arg("build-packages")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out_dir)
        .args(["--formats", "deb"])
        .output()
        .unwrap();
    assert!(out.status.success(), "build-packages: {}", text(&out));
    let v = env!("CARGO_PKG_VERSION");
    format!("penguindome-server_{v}-1_amd64.deb")
}

/// Installed: the user exists, the server is enabled but waits for
/// `pdome-admin init`, the audit's timer runs from the start.
fn the_package_waits_for_init(c: &BootedDebian, deb_path: &str) {
    ok(c, &["dpkg", "-i", deb_path]);
    assert!(ok(c, &["id", "penguindome"]).contains("(penguindome)"));
    // Enabled, but waiting for `pdome-admin init`.
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-enabled", "penguindome-server"])),
        "enabled"
    );
    // The audit's timer runs from the start; its service waits for init too.
    assert_eq!(
        ok(c, &["systemctl", "is-enabled", "penguindome-audit.timer"]),
        "enabled"
    );
    assert_eq!(
        ok(c, &["systemctl", "is-active", "penguindome-audit.timer"]),
        "active"
    );
}

/// `pdome-admin init` as root; the service user gets its data and can
/// read its key. Returns the server's URL.
fn init_gives_the_service_user_its_files(c: &BootedDebian) -> String {
    let port = penguindome_tests::free_port();
    let url = format!("https://127.0.0.1:{port}");
    ok(
        c,
        &[
            "pdome-admin",
            "init",
            "--non-interactive",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--url",
            &url,
        ],
    );
    assert_eq!(
        ok(c, &["stat", "-c", "%U:%G %a", "/var/lib/penguindome"]),
        "penguindome:penguindome 750"
    );
    assert_eq!(
        ok(
            c,
            &["stat", "-c", "%U:%G %a", "/etc/penguindome/server-key.asc"]
        ),
        "root:penguindome 640"
    );
    assert_eq!(
        ok(c, &["stat", "-c", "%U %a", "/etc/penguindome/agent.toml"]),
        "root 600"
    );
    url
}

/// Active, and its main process runs as the service user; returns its pid.
fn main_pid(c: &BootedDebian) -> String {
    assert_eq!(
        ok(c, &["systemctl", "is-active", "penguindome-server"]),
        "active"
    );
    let pid = ok(
        c,
        &[
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "penguindome-server",
        ],
    );
    assert_eq!(ok(c, &["ps", "-o", "user=", "-p", &pid]), "penguindome");
    pid
}

/// The HTTP status of the server's health endpoint.
fn health(c: &BootedDebian, url: &str) -> u16 {
    let cert = c.root().join("etc/penguindome/tls/server.crt");
    http::get(&format!("{url}/penguindome/v1/health"), &cert, None).status
}

/// The server starts, answers and survives a restart.
fn the_server_runs_as_its_user(c: &BootedDebian, url: &str) {
    // Type=notify: start returns once the server said READY=1.
    ok(c, &["systemctl", "start", "penguindome-server"]);
    let main_pid_before = main_pid(c);
    assert_eq!(health(c, url), 200);

    // It survives a restart.
    ok(c, &["systemctl", "restart", "penguindome-server"]);
    let pid = main_pid(c);
    assert_ne!(pid, main_pid_before);
    assert_eq!(health(c, url), 200);
    a_listener_added_on_reload(c, &pid);
}

/// `systemctl reload` brings up a listener `pdome-admin listeners add` made,
/// in the same process, reading the new key as the service user.
fn a_listener_added_on_reload(c: &BootedDebian, pid: &str) {
    let port = penguindome_tests::free_port();
    let address = format!("127.0.0.1:{port}");
    ok(
        c,
        &[
            "pdome-admin",
            "listeners",
            "add",
            "lan",
            "--address",
            &address,
            "--tls",
            "self-signed",
            "127.0.0.1",
        ],
    );
    assert_eq!(
        ok(
            c,
            &["stat", "-c", "%U:%G %a", "/etc/penguindome/tls/lan.key"]
        ),
        "root:penguindome 640"
    );
    ok(c, &["systemctl", "reload", "penguindome-server"]);
    let cert = c.root().join("etc/penguindome/tls/lan.crt");
    let lan = format!("https://{address}/penguindome/v1/health");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while http::get(&lan, &cert, None).status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new listener does not answer: {}",
            ok(c, &["journalctl", "--no-pager", "-u", "penguindome-server"])
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(main_pid(c), pid, "reloaded, not restarted");
}

/// Releases made by root are readable by the server's user, which serves them.
fn releases_made_by_root_are_served(c: &BootedDebian, url: &str) {
    let out = c.exec(&["pdome-admin", "release", "--formats", "deb"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Published release 1"), "{}", text(&out));
    assert!(
        !text(&out).contains("deprecated"),
        "a new site has no shared secret to warn about: {}",
        text(&out)
    );
    assert_eq!(
        ok(
            c,
            &[
                "stat",
                "-c",
                "%U",
                "/var/lib/penguindome/repo/current/key.asc"
            ]
        ),
        "penguindome"
    );
    // A live token opens the repositories the bootstrap installs from.
    let token: serde_json::Value =
        serde_json::from_str(&ok(c, &["pdome-admin", "tokens", "create", "--json"])).unwrap();
    let secret = token["token"].as_str().unwrap().split('.').nth(2).unwrap();
    let user = format!("pdt1.{}", token["id"].as_str().unwrap());
    let cert = c.root().join("etc/penguindome/tls/server.crt");
    let in_release = format!("{url}/penguindome/v1/repo/apt/dists/stable/InRelease");
    assert_eq!(
        http::get(&in_release, &cert, Some((&user, secret))).status,
        200
    );
    assert_eq!(http::get(&in_release, &cert, None).status, 401);
    ok(
        c,
        &[
            "pdome-admin",
            "tokens",
            "revoke",
            token["id"].as_str().unwrap(),
        ],
    );
    assert_eq!(ok(c, &["pdome-admin", "clients", "list", "--json"]), "[]");
    let journal = ok(c, &["journalctl", "--no-pager", "-u", "penguindome-server"]);
    assert!(journal.contains("penguindome-server["), "{journal}");
}

/// The audit unit runs as the service user and reports to the journal:
/// an issue opened by hand (no check owns it) is due at once, and
/// telling it (here, the journal only: no mail configured) is recorded.
fn the_audit_unit_reports_to_the_journal(c: &BootedDebian) {
    ok(
        c,
        &[
            "pdome-admin",
            "issues",
            "open",
            "--host",
            "server:main",
            "--issue",
            "container-test",
            "--detail",
            "opened by the install test",
        ],
    );
    ok(c, &["systemctl", "start", "penguindome-audit.service"]);
    assert_eq!(
        ok(
            c,
            &[
                "systemctl",
                "show",
                "-p",
                "Result",
                "--value",
                "penguindome-audit.service"
            ]
        ),
        "success"
    );
    wait_for_journal(
        c,
        "penguindome-audit.service",
        &["container-test since", "opened by the install test"],
    );
    let issues: serde_json::Value =
        serde_json::from_str(&ok(c, &["pdome-admin", "issues", "list", "--json"])).unwrap();
    assert!(issues[0]["alerted_at"].is_string(), "{issues}");
    assert_eq!(
        ok(
            c,
            &[
                "systemctl",
                "show",
                "-p",
                "User",
                "--value",
                "penguindome-audit.service"
            ]
        ),
        "penguindome"
    );
}

/// Upgrades keep an administrator's choice about the timer, and enable it
/// on servers that come from a version without it (no marker yet).
fn upgrades_keep_the_audit_timer_choice(c: &BootedDebian, deb_path: &str) {
    ok(
        c,
        &["systemctl", "disable", "--now", "penguindome-audit.timer"],
    );
    ok(c, &["dpkg", "-i", deb_path]);
    assert_eq!(
        stdout(&c.exec(&["systemctl", "is-enabled", "penguindome-audit.timer"])),
        "disabled"
    );
    ok(c, &["rm", "/var/lib/penguindome/.audit-timer-enabled"]);
    ok(c, &["dpkg", "-i", deb_path]);
    assert_eq!(
        ok(c, &["systemctl", "is-enabled", "penguindome-audit.timer"]),
        "enabled"
    );
    assert_eq!(
        ok(c, &["systemctl", "is-active", "penguindome-audit.timer"]),
        "active"
    );
    let timers = ok(
        c,
        &[
            "systemctl",
            "list-timers",
            "--all",
            "--no-pager",
            "penguindome-audit.timer",
        ],
    );
    assert!(timers.contains("penguindome-audit.service"), "{timers}");
}

/// Revoking the client closes the repository to it at once: apt-get update
/// fails with 401.
fn revoking_the_client_closes_the_repository(site: &Site, c: &BootedDebian, client_id: &str) {
    ok(c, &["apt-get", "update"]);
    let out = site.admin(&["clients", "revoke", client_id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.exec(&["apt-get", "update"]);
    let all = text(&out);
    assert!(
        all.contains("401"),
        "apt-get update after revocation: {all}"
    );
}
