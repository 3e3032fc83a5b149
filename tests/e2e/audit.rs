//! The issues audit end to end: the real server and pdome-admin, simulated
//! clients and this machine's real agent, and mail through a real SMTP
//! server (aiosmtpd from Debian, writing a Maildir).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use penguindome_agent::transport::Transport;
use penguindome_protocol::facts::fixtures as fx;
use penguindome_protocol::facts::{Known, firewall, sshd, to_value};
use penguindome_tests::{SimClient, Site, free_port, text};
use serde_json::{Value, json};

/// aiosmtpd on a loopback port, storing what it receives in a Maildir.
struct Smtp {
    child: Child,
    maildir: tempfile::TempDir,
    port: u16,
}

/// aiosmtpd that takes mail only after AUTH PLAIN or LOGIN with one user
/// and password (over plain SMTP: the test runs on loopback).
const AUTH_SERVER: &str = r#"
import sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword
port, box, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode()
def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user and data.password == password
    return AuthResult(success=ok)
Controller(Mailbox(box), hostname="127.0.0.1", port=port, authenticator=check,
           auth_required=True, auth_require_tls=False).start()
while True:
    time.sleep(3600)
"#;

/// aiosmtpd that takes mail only after STARTTLS, with the certificate and
/// key it is given.
const TLS_SERVER: &str = r#"
import ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
port, box, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
Controller(Mailbox(box), hostname="127.0.0.1", port=port, tls_context=ctx,
           require_starttls=True).start()
while True:
    time.sleep(3600)
"#;

impl Smtp {
    fn start() -> Self {
        Self::spawn(|port, maildir| {
            let mut c = Command::new("/usr/bin/python3");
            c.args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(maildir);
            c
        })
    }

    /// A relay that wants `user` and `password`.
    fn start_with_auth(user: &str, password: &str) -> Self {
        Self::spawn(|port, maildir| {
            let mut c = Command::new("/usr/bin/python3");
            c.args(["-c", AUTH_SERVER])
                .arg(port.to_string())
                .arg(maildir)
                .args([user, password]);
            c
        })
    }

    /// A relay that wants STARTTLS and shows a certificate for 127.0.0.1
    /// issued by a private CA; returns the CA's certificate too.
    fn start_with_private_ca() -> (Self, String) {
        let pki = penguindome_tests::PrivateCa::issue("Mail CA", &["127.0.0.1"]);
        let files = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (
            files.path().join("relay.crt"),
            files.path().join("relay.key"),
        );
        std::fs::write(&cert_file, &pki.cert_pem).unwrap();
        std::fs::write(&key_file, &pki.key_pem).unwrap();
        let smtp = Self::spawn(|port, maildir| {
            let mut c = Command::new("/usr/bin/python3");
            c.args(["-c", TLS_SERVER])
                .arg(port.to_string())
                .arg(maildir)
                .arg(&cert_file)
                .arg(&key_file);
            c
        });
        (smtp, pki.ca_pem)
    }

    fn spawn(command: impl FnOnce(u16, &std::path::Path) -> Command) -> Self {
        let maildir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Debian's python3 has the aiosmtpd package (scripts/test installs it).
        let child = command(port, &maildir.path().join("box"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run /usr/bin/python3 with aiosmtpd (apt install python3-aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            maildir,
            port,
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received, oldest first.
    fn mails(&self) -> Vec<String> {
        let dir: PathBuf = self.maildir.path().join("box/new");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.mails();
            if mails.len() >= n || Instant::now() > deadline {
                return mails;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `[audit]` into server.toml: every hour of every day is business
/// time, so grace periods run on the wall clock in this test.
fn configure_audit(site: &Site, smtp: &str) {
    configure_audit_with(site, smtp, "");
}

/// [`configure_audit`] with more `[audit]` lines.
fn configure_audit_with(site: &Site, smtp: &str, extra: &str) {
    let path = site.config_dir.join("server.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let audit: toml::Table = format!(
        "email = \"admins@example.com\"\nemail_users = true\nsmtp = \"{smtp}\"\n\
         email_from = \"PenguinDome <pd@example.com>\"\ntimezone = \"UTC\"\n\
         business_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
         business_hours = \"00:00-23:59\"\n{extra}"
    )
    .parse()
    .unwrap();
    config.insert("audit".into(), toml::Value::Table(audit));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
}

/// A report every default check passes.
fn compliant() -> Value {
    fx::compliant()
}

fn noncompliant() -> Value {
    let mut v = compliant();
    let off = fx::firewall(firewall::Status::Off, "the nftables ruleset is empty");
    v["firewall"] = to_value(&off);
    v["sshd"] = to_value(&fx::sshd(sshd::Status::Running, "yes", "no"));
    let mut updates = fx::updates(1, Known::Value(1));
    updates.pending = vec![fx::pending("openssl", true)];
    v["os_updates"] = to_value(&updates);
    v
}

/// Runs pdome-admin, which must succeed; returns what it printed.
fn succeeds(site: &Site, args: &[&str]) -> String {
    let out = site.admin(args);
    assert!(
        out.status.success(),
        "pdome-admin {args:?} failed: {}",
        text(&out)
    );
    text(&out)
}

/// Runs pdome-admin, which must fail; returns what it printed.
fn refused(site: &Site, args: &[&str]) -> String {
    let out = site.admin(args);
    assert!(
        !out.status.success(),
        "pdome-admin {args:?} succeeded: {}",
        text(&out)
    );
    text(&out)
}

fn submit(c: &SimClient, t: &Transport, host: &str, plugins: Value) -> Vec<String> {
    let reply = c.submit(t, &SimClient::report(host, plugins));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    // The checks that fail on it, as the server answered at once.
    let ack: penguindome_protocol::wire::Ack = serde_json::from_slice(&reply.body).unwrap();
    ack.problems.into_iter().map(|p| p.check).collect()
}

/// Names of the due issues of one host.
fn due_of(outcome: &Value, host: &str) -> Vec<String> {
    outcome["due"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["hostname"] == host)
        .flat_map(|d| d["issues"].as_array().unwrap().iter())
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_audit_opens_issues_mails_people_and_closes_what_is_fixed() {
    let smtp = Smtp::start();
    let site = Site::init();
    configure_audit(&site, &smtp.url());
    let _server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let good = SimClient::enroll(&config, &transport, "good-host").unwrap();
    let bad = SimClient::enroll(&config, &transport, "bad-host").unwrap();
    assert!(submit(&good, &transport, "good-host", compliant()).is_empty());
    let mut told = submit(&bad, &transport, "bad-host", noncompliant());
    told.sort();
    assert_eq!(
        told,
        [
            "firewall-disabled",
            "os-security-updates",
            "ssh-password-authentication"
        ],
        "the agent hears what fails without waiting for the audit"
    );
    // This machine's real agent: its real report goes through the same checks.
    let agent = site.agent("real");
    let out = agent.cmd(&["run"]);
    assert!(out.status.success(), "{}", text(&out));
    let real_id = agent.machine_id.clone();

    set_user_email(&site);
    first_audit_opens_issues(&site, &good, &real_id);
    admins_and_users_are_mailed(&smtp);
    told_issues_wait_for_their_realert(&site, &smtp);
    snooze_and_list(&site);
    fixed_issues_are_closed_by_the_audit(&site, &bad, &transport);
    untold_issues_are_told_at_the_next_run(&site, smtp);
}

/// bad-host's user gets a mail address; a wrong one is refused.
fn set_user_email(site: &Site) {
    succeeds(
        site,
        &[
            "clients",
            "param",
            "set",
            "bad-host",
            "user_email",
            "bob@example.com",
        ],
    );
    let e = refused(
        site,
        &[
            "clients",
            "param",
            "set",
            "bad-host",
            "user_email",
            "not an address",
        ],
    );
    assert!(e.contains("not a mail address"), "{e}");
}

/// The first audit opens bad-host's issues and the real agent's disk
/// issue, none for good-host.
fn first_audit_opens_issues(site: &Site, good: &SimClient, real_id: &str) {
    let outcome = site.admin_json(&["issues", "audit", "--notify", "--json"]);
    let mut bad_due = due_of(&outcome, "bad-host");
    bad_due.sort();
    assert_eq!(
        bad_due,
        ["firewall-disabled", "ssh-password-authentication"],
        "security updates wait for their grace of one business day: {outcome:#}"
    );
    assert!(due_of(&outcome, "good-host").is_empty(), "{outcome:#}");
    let opened: Vec<&Value> = outcome["opened"].as_array().unwrap().iter().collect();
    assert!(
        opened.iter().all(|i| i["client_id"] != good.id.as_str()),
        "{outcome:#}"
    );
    // The real agent's disk verdict and its issue agree.
    let shown = site.admin_json(&["clients", "show", real_id, "--json"]);
    let encrypted = shown["plugins"]["hd_encryption"]["encrypted"] == true;
    let disk_issue = opened
        .iter()
        .any(|i| i["client_id"] == real_id && i["name"] == "unencrypted-hard-drive");
    assert_eq!(
        disk_issue, !encrypted,
        "{:#}",
        shown["plugins"]["hd_encryption"]
    );
}

/// One digest for the administrators, one mail for bad-host's user.
fn admins_and_users_are_mailed(smtp: &Smtp) {
    let mails = smtp.wait_for(2);
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let admin = mails
        .iter()
        .find(|m| m.contains("To: admins@example.com"))
        .expect("a mail to the administrators");
    assert!(admin.contains("Subject: PenguinDome audit:"), "{admin}");
    assert!(
        admin.contains("bad-host") && admin.contains("firewall-disabled"),
        "{admin}"
    );
    assert!(
        admin.contains("From: PenguinDome <pd@example.com>"),
        "{admin}"
    );
    let user = mails
        .iter()
        .find(|m| m.contains("To: bob@example.com"))
        .expect("a mail to bad-host's user");
    assert!(
        user.contains("bad-host") && user.contains("ssh-password-authentication"),
        "{user}"
    );
    assert!(!user.contains("good-host"), "{user}");
}

/// Told: the next run tells nothing and sends nothing; --full shows every
/// open issue, grace or not.
fn told_issues_wait_for_their_realert(site: &Site, smtp: &Smtp) {
    let again = site.admin_json(&["issues", "audit", "--notify", "--json"]);
    assert!(again["due"].as_array().unwrap().is_empty(), "{again:#}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.mails().len(), 2);
    let full = site.admin_json(&["issues", "audit", "--full", "--json"]);
    assert!(
        due_of(&full, "bad-host").contains(&"os-security-updates".to_string()),
        "{full:#}"
    );
}

/// Snooze, list, and the guard against closing everything by accident.
fn snooze_and_list(site: &Site) {
    let said = succeeds(
        site,
        &[
            "issues",
            "snooze",
            "--host",
            "bad-host",
            "--issue",
            "firewall-disabled",
            "--hours",
            "2",
        ],
    );
    assert!(said.contains("snoozed 1 issue(s)"), "{said}");
    let listed = site.admin_json(&["issues", "list", "--host", "bad-host", "--json"]);
    let fw = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "firewall-disabled")
        .unwrap();
    assert!(
        fw["unsnooze_at"].is_string() && fw["alerted_at"].is_string(),
        "{fw}"
    );
    let e = refused(site, &["issues", "close"]);
    assert!(e.contains("--all"), "{e}");
}

/// Fixed on the machine: the audit closes the issue itself.
fn fixed_issues_are_closed_by_the_audit(site: &Site, bad: &SimClient, transport: &Transport) {
    submit(bad, transport, "bad-host", compliant());
    let outcome = site.admin_json(&["issues", "audit", "--json"]);
    let closed: Vec<&str> = outcome["closed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["client_id"] == bad.id.as_str())
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(closed.len(), 3, "{outcome:#}");
    let history = site.admin_json(&["issues", "list", "--host", "bad-host", "--closed", "--json"]);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["closed_by"] == "audit"),
        "{history:#}"
    );
}

/// A relay that does not answer: the run fails and says so, and nothing
/// is marked as told, so the next run tells it.
fn untold_issues_are_told_at_the_next_run(site: &Site, smtp: Smtp) {
    succeeds(
        site,
        &[
            "issues",
            "open",
            "--host",
            "good-host",
            "--issue",
            "lost-laptop",
            "--detail",
            "left on a train",
        ],
    );
    drop(smtp);
    let e = refused(site, &["issues", "audit", "--notify"]);
    assert!(e.contains("did not take the mail"), "{e}");
    let open = site.admin_json(&["issues", "list", "--host", "good-host", "--json"]);
    assert_eq!(open.as_array().unwrap().len(), 1, "{open:#}");
    assert!(open[0]["alerted_at"].is_null(), "{open:#}");
    let smtp = Smtp::start();
    configure_audit(site, &smtp.url());
    let outcome = site.admin_json(&["issues", "audit", "--notify", "--json"]);
    assert_eq!(due_of(&outcome, "good-host"), ["lost-laptop"]);
    let mails = smtp.wait_for(1);
    assert!(
        mails
            .iter()
            .any(|m| m.contains("lost-laptop") && m.contains("left on a train")),
        "{mails:#?}"
    );
}

#[test]
fn admin_commands_for_issues_and_parameters() {
    let site = Site::init();
    let _server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let hosts = ["laptop", "desktop", "tablet"];
    let clients: Vec<SimClient> = hosts
        .iter()
        .map(|h| {
            let c = SimClient::enroll(&config, &transport, h).unwrap();
            submit(&c, &transport, h, compliant());
            c
        })
        .collect();
    let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    user_clients_are_kept_reciprocal(&site, &ids);
    the_checks_table_says_which_checks_run(&site);
    manual_issues(&site);
    the_checks_table_ends_with_business_time(&site);

    // A bad [audit] setting is a clear error naming the key.
    let path = site.config_dir.join("server.toml");
    let mut cfg: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    cfg.insert(
        "audit".into(),
        toml::Value::Table("timezone = \"Mars/Olympus\"".parse().unwrap()),
    );
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let e = refused(&site, &["issues", "audit"]);
    assert!(e.contains("IANA"), "{e}");
}

/// user_clients is kept reciprocal; the client itself is refused. `ids`
/// are laptop's, desktop's and tablet's.
fn user_clients_are_kept_reciprocal(site: &Site, ids: &[&str]) {
    succeeds(
        site,
        &[
            "clients",
            "param",
            "set",
            "laptop",
            "user_clients",
            "desktop",
            "tablet",
        ],
    );
    let params = site.admin_json(&["clients", "param", "list", "--json"]);
    let mut expect = vec![ids[0].to_string(), ids[1].to_string()];
    expect.sort();
    assert_eq!(
        user_clients_of(&params, ids[2]),
        expect,
        "tablet lists laptop and desktop"
    );
    let e = refused(
        site,
        &[
            "clients",
            "param",
            "set",
            "laptop",
            "user_clients",
            "laptop",
        ],
    );
    assert!(e.contains("itself"), "{e}");
    succeeds(
        site,
        &["clients", "param", "unset", "laptop", "user_clients"],
    );
    // The laptop leaves the group; the other two still belong together.
    let params = site.admin_json(&["clients", "param", "list", "--json"]);
    let peers_of = |id: &str| -> Vec<Value> {
        params
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["client_id"] == id)
            .map(|p| p["value"].clone())
            .collect()
    };
    assert!(peers_of(ids[0]).is_empty(), "{params:#}");
    assert_eq!(peers_of(ids[1]), [json!([ids[2]])], "{params:#}");
    assert_eq!(peers_of(ids[2]), [json!([ids[1]])], "{params:#}");
}

/// The user_clients parameter of one client, sorted (empty without one).
fn user_clients_of(params: &Value, id: &str) -> Vec<String> {
    params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["client_id"] == id && p["name"] == "user_clients")
        .map(|p| {
            let mut v: Vec<String> = p["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default()
}

/// The checks table names every check and says which run.
fn the_checks_table_says_which_checks_run(site: &Site) {
    let table = succeeds(site, &["issues", "checks"]);
    for name in [
        "not-reporting",
        "firewall-disabled",
        "unencrypted-hard-drive",
        "screenlock-disabled",
        "no-location",
    ] {
        assert!(table.contains(name), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("no-location") && l.contains(" no ")),
        "{table}"
    );
}

/// Manual issues: open, refuse bad names and duplicates, suspend hides.
fn manual_issues(site: &Site) {
    refused(
        site,
        &["issues", "open", "--host", "tablet", "--issue", "Bad Name"],
    );
    for _ in 0..2 {
        succeeds(
            site,
            &[
                "issues",
                "open",
                "--host",
                "tablet",
                "--issue",
                "cracked-screen",
            ],
        );
    }
    let listed = site.admin_json(&["issues", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    succeeds(site, &["issues", "suspend", "tablet"]);
    let outcome = site.admin_json(&["issues", "audit", "--json"]);
    assert!(
        due_of(&outcome, "tablet").is_empty(),
        "suspended: {outcome:#}"
    );
    succeeds(site, &["issues", "unsuspend", "tablet"]);
    let outcome = site.admin_json(&["issues", "audit", "--json"]);
    assert_eq!(due_of(&outcome, "tablet"), ["cracked-screen"]);
    let said = succeeds(site, &["issues", "close", "--issue", "cracked-screen"]);
    assert!(said.contains("closed 1 issue(s)"), "{said}");
    let listed = site.admin_json(&["issues", "list", "--json"]);
    assert!(listed.as_array().unwrap().is_empty(), "{listed:#}");
}

/// The checks table ends with the business time the audit counts.
fn the_checks_table_ends_with_business_time(site: &Site) {
    configure_audit_with(
        site,
        "smtp://127.0.0.1:25",
        "holidays = [\"2026-12-24\", \"12-25\"]\n",
    );
    let table = succeeds(site, &["issues", "checks"]);
    assert!(
        table.contains(
            "Business hours: Mon Tue Wed Thu Fri Sat Sun 00:00-23:59 UTC, except 12-25 2026-12-24;"
        ),
        "{table}"
    );
}

#[test]
fn a_relay_that_wants_a_password_gets_it_from_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let smtp = Smtp::start_with_auth("pd", "s3cret pass");
    let site = Site::init();
    let _server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let c = SimClient::enroll(&config, &transport, "lonely-host").unwrap();
    submit(&c, &transport, "lonely-host", noncompliant());
    let password = site.config_dir.join("smtp-password");
    std::fs::write(&password, "wrong\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Without credentials the relay refuses the mail, and nothing is told.
    configure_audit(&site, &smtp.url());
    let e = refused(&site, &["issues", "audit", "--notify"]);
    assert!(e.contains("did not take the mail"), "{e}");

    // A wrong password: refused too.
    let creds = "smtp_user = \"pd\"\nsmtp_password_file = \"smtp-password\"\n";
    configure_audit_with(&site, &smtp.url(), creds);
    refused(&site, &["issues", "audit", "--notify"]);

    // A password file others can read is refused before anything is sent.
    std::fs::write(&password, "s3cret pass\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = refused(&site, &["issues", "audit", "--notify"]);
    assert!(e.contains("chmod 600"), "{e}");
    assert!(smtp.mails().is_empty());

    // The right password, privately kept: the digest goes out.
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outcome = site.admin_json(&["issues", "audit", "--notify", "--json"]);
    assert!(!due_of(&outcome, "lonely-host").is_empty(), "{outcome:#}");
    let mails = smtp.wait_for(1);
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(mails[0].contains("To: admins@example.com") && mails[0].contains("lonely-host"));
}

#[test]
fn a_relay_with_a_private_ca_is_trusted_only_through_smtp_ca_file() {
    let (smtp, ca_pem) = Smtp::start_with_private_ca();
    let plain = Smtp::start();
    let site = Site::init();
    let _server = site.start();
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let c = SimClient::enroll(&config, &transport, "tls-host").unwrap();
    submit(&c, &transport, "tls-host", noncompliant());
    let starttls = format!("smtp+starttls://127.0.0.1:{}", smtp.port);

    // The system's roots do not know the relay's CA: nothing is sent, and
    // the error points at the setting.
    configure_audit(&site, &starttls);
    let e = refused(&site, &["issues", "audit", "--notify"]);
    assert!(e.contains("smtp_ca_file"), "{e}");

    // A relay that offers no STARTTLS is refused, not used in the clear.
    let ca_file = site.config_dir.join("mail-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let with_ca = "smtp_ca_file = \"mail-ca.pem\"\n";
    configure_audit_with(
        &site,
        &format!("smtp+starttls://127.0.0.1:{}", plain.port),
        with_ca,
    );
    let e = refused(&site, &["issues", "audit", "--notify"]);
    assert!(e.contains("STARTTLS"), "{e}");
    assert!(plain.mails().is_empty());

    // A CA file with another CA: the error says the file is the wrong one.
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_string()]).unwrap();
    std::fs::write(&ca_file, other.cert.pem()).unwrap();
    configure_audit_with(&site, &starttls, with_ca);
    let e = refused(&site, &["issues", "audit", "--notify"]);
    assert!(e.contains("does not hold the CA"), "{e}");

    // A file that holds no certificate is a configuration error.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let e = refused(&site, &["issues", "audit", "--notify"]);
    assert!(e.contains("holds no PEM certificate"), "{e}");
    assert!(smtp.mails().is_empty());

    // With the CA named, the digest goes out over TLS.
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let outcome = site.admin_json(&["issues", "audit", "--notify", "--json"]);
    assert!(!due_of(&outcome, "tls-host").is_empty(), "{outcome:#}");
    let mails = smtp.wait_for(1);
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(mails[0].contains("To: admins@example.com") && mails[0].contains("tls-host"));
}

/// Names of the open issues of one host.
fn open_issues(site: &Site, host: &str) -> Vec<String> {
    site.admin_json(&["issues", "list", "--host", host, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_deprecated_listener_raises_deprecated_port_until_the_client_moves() {
    let site = Site::init();
    let port = free_port();
    let path = site.config_dir.join("server.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str(&format!(
        "\n[[listener]]\nname = \"old\"\naddress = \"127.0.0.1:{port}\"\ndeprecated = true\n\n\
         [listener.tls]\ncertificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\n"
    ));
    std::fs::write(&path, toml).unwrap();
    let _server = site.start();
    let main = site.agent_config();
    let mut old = main.clone();
    old.server_url = format!("https://127.0.0.1:{port}");
    let (via_old, via_main) = (
        Transport::new(&old).unwrap(),
        Transport::new(&main).unwrap(),
    );
    let client = SimClient::enroll(&old, &via_old, "mover").unwrap();
    submit(&client, &via_old, "mover", compliant());
    succeeds(&site, &["issues", "audit"]);
    assert!(open_issues(&site, "mover").contains(&"deprecated-port".to_string()));
    // It still serves: the next request through the main listener moves it.
    submit(&client, &via_main, "mover", compliant());
    let outcome = site.admin_json(&["issues", "audit", "--json"]);
    let closed: Vec<&str> = outcome["closed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["client_id"] == client.id.as_str())
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(closed, ["deprecated-port"], "{outcome:#}");
    assert!(!open_issues(&site, "mover").contains(&"deprecated-port".to_string()));
}
