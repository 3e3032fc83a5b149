//! Harness for end-to-end tests: a site in a temporary directory, the real
//! `penguindome-server`, `pdome-admin` and `penguindome-agent` binaries, and
//! simulated clients that sign requests with their own keys.

pub mod balancer;
pub mod container;
pub mod http;
pub mod proxy;
pub mod terminal;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use penguindome_agent::session::{Authority, Session};
use penguindome_agent::transport::{Reply, Transport};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::{Report, paths};
use penguindome_protocol::{Envelope, SecretKey};

use serde_json::Value;

/// Path of a workspace binary, built by `cargo build` before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A small stand-in for a workspace binary: a script that runs the real
/// one. Packaging runs it for the man pages and completions, but packs only
/// the script, so tests need not compress a large debug build.
pub fn stand_in(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let script = format!("#!/bin/sh\nexec '{}' \"$@\"\n", bin(name).display());
    std::fs::write(&path, script).expect("write a stand-in binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the stand-in executable");
    path
}

/// A free TCP port on loopback, never the same twice in one test process.
///
/// Ports come from 20000-31999, below Linux's ephemeral range, so neither
/// another `free_port` call nor an outgoing connection can take one between
/// this check and the caller's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Each test binary starts at its own offset: they run one at a time,
    // but a server from an earlier one may still be closing.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 997) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free TCP port on loopback in {FIRST}-{}",
        FIRST + SPAN - 1
    )
}

/// A certificate for `names` issued by a new private CA, all PEM.
pub struct PrivateCa {
    /// The CA's certificate.
    pub ca_pem: String,
    /// The issued certificate.
    pub cert_pem: String,
    /// The issued certificate's key.
    pub key_pem: String,
}

impl PrivateCa {
    /// Makes a CA named `ca_name` and a certificate for `names` from it.
    pub fn issue(ca_name: &str, names: &[&str]) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Self {
            ca_pem,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Output as text, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The store a test site runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded SQLite store.
    Sqlite,
    /// A MongoDB-protocol server at this URI (a fresh database per site).
    Mongodb(String),
}

impl Backend {
    /// The test MongoDB server: PENGUINDOME_TEST_MONGODB_URI, which
    /// scripts/test sets after starting FerretDB. Without it a MongoDB test
    /// fails, unless [`skipping_mongodb`] says to skip it.
    pub fn mongodb() -> Option<Self> {
        match std::env::var("PENGUINDOME_TEST_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => Some(Self::Mongodb(uri)),
            _ if skipping_mongodb() => None,
            _ => panic!(
                "PENGUINDOME_TEST_MONGODB_URI is not set: start one with \
                 `scripts/ferretdb start DIR PORT` and set it to mongodb://127.0.0.1:PORT/, \
                 run the suite through scripts/test, or set PENGUINDOME_SKIP_MONGODB=1 to skip"
            ),
        }
    }

    /// The database several servers of one site share in the cluster
    /// tests: PENGUINDOME_TEST_CLUSTER_MONGODB_URI, FerretDB on its
    /// PostgreSQL handler, which scripts/test starts. Missing, as for
    /// [`Backend::mongodb`].
    pub fn cluster() -> Option<Self> {
        match std::env::var("PENGUINDOME_TEST_CLUSTER_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => Some(Self::Mongodb(uri)),
            _ if skipping_mongodb() => None,
            _ => panic!(
                "PENGUINDOME_TEST_CLUSTER_MONGODB_URI is not set: start PostgreSQL with \
                 `scripts/postgres start DIR`, FerretDB on it with `scripts/ferretdb start DIR2 \
                 PORT postgres://…/DB`, and set it to mongodb://127.0.0.1:PORT/, or run the \
                 suite through scripts/test"
            ),
        }
    }

    /// Arguments for `pdome-admin init`.
    fn init_args(&self) -> Vec<String> {
        match self {
            Self::Sqlite => vec![],
            Self::Mongodb(uri) => vec![
                "--store".into(),
                "mongodb".into(),
                "--mongodb-uri".into(),
                uri.clone(),
                "--mongodb-database".into(),
                format!("pde2e_{}", new_nonce()),
            ],
        }
    }
}

/// Defines each named test twice: `sqlite::NAME` and `mongodb::NAME`, calling
/// `NAME(backend)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name($crate::Backend::Sqlite)
            })*
        }
        mod mongodb {
            $(#[test]
            fn $name() {
                if let Some(b) = $crate::Backend::mongodb() {
                    super::$name(b)
                }
            })*
        }
    };
}

/// A server site in a temporary directory.
pub struct Site {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// Configuration directory.
    pub config_dir: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Port of the TLS listener.
    pub port: u16,
    /// URL clients use.
    pub url: String,
}

impl Site {
    /// Runs `pdome-admin init --non-interactive` in a new directory.
    pub fn init() -> Self {
        Self::init_with(|_| Vec::new())
    }

    /// Runs `pdome-admin init` for a site on `backend`.
    pub fn init_on(backend: &Backend) -> Self {
        Self::init_with(|_| backend.init_args())
    }

    /// A site as `pdome-admin init` sets one up today: machines enroll only
    /// with tokens, repositories open only to clients' own credentials.
    pub fn init_tokens_only(backend: &Backend) -> Self {
        Self::init_in(tempfile::tempdir().unwrap(), backend.init_args())
    }

    /// Like [`Site::init`], with extra `init` arguments made from the site's
    /// directory (to place certificates there first).
    ///
    /// Sites made here also accept the deprecated site-wide enrollment
    /// credential and shared repository user, so most tests can enroll
    /// simulated clients without a token each; [`Site::init_tokens_only`]
    /// makes a site without them.
    pub fn init_with(extra: impl FnOnce(&Path) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = extra(dir.path());
        extra.push("--shared-credential".into());
        Self::init_in(dir, extra)
    }

    fn init_in(dir: tempfile::TempDir, extra: Vec<String>) -> Self {
        let config_dir = dir.path().join("etc");
        let data_dir = dir.path().join("data");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let out = Command::new(bin("pdome-admin"))
            .arg("--config-dir")
            .arg(&config_dir)
            .args([
                "init",
                "--non-interactive",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--url",
                &url,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--log-target", "stderr", "--log-level", "debug"])
            .args(&extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "init failed: {}", text(&out));
        // Each test site's shell socket is its own, not the host's.
        let server_toml = config_dir.join("server.toml");
        let mut toml = std::fs::read_to_string(&server_toml).unwrap();
        toml.push_str("\n[shell]\nsocket = \"shell.sock\"\n");
        std::fs::write(&server_toml, toml).unwrap();
        Self {
            dir,
            config_dir,
            data_dir,
            port,
            url,
        }
    }

    /// Another server of this site, as a second host behind the site's
    /// balancer runs one: the same configuration and keys (the store must be
    /// MongoDB for them to share anything), its own port, data directory and
    /// shell socket.
    pub fn peer(&self) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("etc");
        let data_dir = dir.path().join("data");
        copy_tree(&self.config_dir, &config_dir);
        std::fs::create_dir_all(&data_dir).unwrap();
        let port = free_port();
        // Its agent.toml names it, so that `start` waits for this server.
        for file in ["server.toml", "agent.toml"] {
            let path = config_dir.join(file);
            let toml = std::fs::read_to_string(&path)
                .unwrap()
                .replace(
                    &self.data_dir.display().to_string(),
                    &data_dir.display().to_string(),
                )
                .replace(
                    &format!("127.0.0.1:{}", self.port),
                    &format!("127.0.0.1:{port}"),
                );
            std::fs::write(&path, toml).unwrap();
        }
        Site {
            dir,
            config_dir,
            data_dir,
            port,
            url: format!("https://127.0.0.1:{port}"),
        }
    }

    /// The server's shell socket.
    pub fn shell_socket(&self) -> PathBuf {
        self.data_dir.join("shell.sock")
    }

    /// Appends `text` (TOML tables) to server.toml.
    pub fn append_server_config(&self, text: &str) {
        let path = self.config_dir.join("server.toml");
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml.push('\n');
        toml.push_str(text);
        std::fs::write(&path, toml).unwrap();
    }

    /// Lifts the per-client request rate, for tests that make one client
    /// send far more than an agent would.
    pub fn allow_bursts(&self) {
        self.append_server_config("[limits]\nclient_requests_per_minute = 1000000\n");
    }

    /// The agent.toml init wrote.
    pub fn agent_toml(&self) -> PathBuf {
        self.config_dir.join("agent.toml")
    }

    /// The parsed agent configuration.
    pub fn agent_config(&self) -> AgentConfig {
        AgentConfig::load(&self.agent_toml()).unwrap()
    }

    /// Starts the server and waits until it answers.
    pub fn start(&self) -> Server {
        self.start_with_env(&[])
    }

    /// Starts the server when agent.toml pins nothing: the harness trusts
    /// `ca` to check that it answers.
    pub fn start_with_ca(&self, ca: &Path) -> Server {
        let mut config = self.agent_config();
        config.ca_certificate = Some(std::fs::read_to_string(ca).unwrap());
        self.spawn(&[], &config)
    }

    /// Starts the server with extra environment variables.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Server {
        self.spawn(env, &self.agent_config())
    }

    /// Starts the server while its store is down: waits until the health
    /// endpoint answers 503.
    pub fn start_unhealthy(&self, env: &[(&str, &str)]) -> Server {
        self.spawn_until(env, &self.agent_config(), 503)
    }

    fn spawn(&self, env: &[(&str, &str)], probe: &AgentConfig) -> Server {
        self.spawn_until(env, probe, 200)
    }

    fn spawn_until(&self, env: &[(&str, &str)], probe: &AgentConfig, status: u16) -> Server {
        let log = self.dir.path().join("server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(bin("penguindome-server"))
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(["--log-target", "stderr"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let server = Server {
            child: Some(child),
            log,
        };
        let transport = Transport::new(probe).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if health(&transport) == Some(status) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs pdome-admin with arguments.
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("pdome-admin"))
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// Makes `user` a server-wide user with `password`
    /// (`pdome-admin password set USER --password-stdin`).
    pub fn set_password(&self, user: &str, password: &str) {
        use std::io::Write as _;
        let mut set = Command::new(bin("pdome-admin"))
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(["password", "set", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = set.stdin.take().unwrap();
        stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
        drop(stdin);
        assert!(
            set.wait().unwrap().success(),
            "pdome-admin password set {user}"
        );
    }

    /// The site's pinned certificate as a file, for curl and browsers.
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("site-ca.pem");
        let pem = self
            .agent_config()
            .ca_certificate
            .expect("init pins a self-signed certificate");
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// Runs pdome-admin and parses its JSON output, failing on error.
    pub fn admin_json(&self, args: &[&str]) -> Value {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "pdome-admin {args:?} failed: {}",
            text(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
    }

    /// The `burst.n` values of a client's stored reports, oldest first, as
    /// its audit trail shows them (the first report adds the whole plugin,
    /// later ones change `n`): a report stored twice shows as a value going
    /// back, a lost one as a gap.
    pub fn burst_history(&self, client_id: &str) -> Vec<u64> {
        let history = self.admin_json(&[
            "clients", "history", client_id, "--json", "--limit", "100000",
        ]);
        history
            .as_array()
            .expect("a history is a list")
            .iter()
            .filter_map(|r| match r["field"].as_str() {
                Some("plugins.burst") => r["new"]["n"].as_u64(),
                Some("plugins.burst.n") => r["new"].as_u64(),
                _ => None,
            })
            .collect()
    }

    /// A client machine using this site's agent.toml as written.
    pub fn agent(&self, name: &str) -> AgentHost {
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        let machine_id = new_nonce();
        std::fs::write(root.join("machine-id"), format!("{machine_id}\n")).unwrap();
        AgentHost {
            root,
            config: self.agent_toml(),
            machine_id,
        }
    }

    /// A client machine with its own plugins directory that reaches the
    /// server through `url` (a proxy).
    pub fn agent_behind(&self, name: &str, url: &str) -> AgentHost {
        let agent = self.agent_with_plugins(name);
        let mut config = AgentConfig::load(&agent.config).unwrap();
        config.server_url = url.to_string();
        std::fs::write(&agent.config, config.to_toml().unwrap()).unwrap();
        agent
    }

    /// A client machine whose agent.toml has its own plugins directory.
    pub fn agent_with_plugins(&self, name: &str) -> AgentHost {
        let mut a = self.agent(name);
        let plugins = a.root.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let mut config = self.agent_config();
        config.plugins_dir = plugins;
        config.plugin_timeout = Duration::from_secs(10);
        let path = a.root.join("agent.toml");
        std::fs::write(&path, config.to_toml().unwrap()).unwrap();
        a.config = path;
        a
    }
}

/// Copies a folder and everything in it, modes included.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The status of the health endpoint, if the server answers at all.
pub fn health(t: &Transport) -> Option<u16> {
    t.get(paths::HEALTH).ok().map(|r| r.status)
}

/// The FerretDB binary scripts/test built (PENGUINDOME_TEST_FERRETDB), for
/// tests that start and stop a database themselves. Like [`Backend::mongodb`],
/// its absence fails the test unless [`skipping_mongodb`].
pub fn ferretdb() -> Option<PathBuf> {
    match std::env::var_os("PENGUINDOME_TEST_FERRETDB") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if skipping_mongodb() => None,
        _ => panic!(
            "PENGUINDOME_TEST_FERRETDB is not set: run the suite through scripts/test, or \
             set PENGUINDOME_SKIP_MONGODB=1 to skip the tests that start FerretDB"
        ),
    }
}

/// Whether the MongoDB tests are skipped on purpose
/// (PENGUINDOME_SKIP_MONGODB=1; never under CI): a missing database must
/// not look like a pass.
pub fn skipping_mongodb() -> bool {
    std::env::var_os("CI").is_none()
        && std::env::var("PENGUINDOME_SKIP_MONGODB").as_deref() == Ok("1")
}

/// A FerretDB started by a test on a given port; killed when dropped.
pub struct FerretDb {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl FerretDb {
    /// Starts FerretDB (SQLite handler) on 127.0.0.1:`port` with a fresh
    /// data directory and waits for it.
    pub fn start(binary: &Path, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Self::start_in(binary, port, dir.path());
        db._dir = Some(dir);
        db
    }

    /// Starts FerretDB on 127.0.0.1:`port` with its data (and its state
    /// file) in `dir`, which outlives it, so a test can kill and restart
    /// the same database.
    pub fn start_in(binary: &Path, port: u16, dir: &Path) -> Self {
        let sqlite = format!("--sqlite-url=file:{}/", dir.display());
        Self::start_with(binary, port, dir, &["--handler=sqlite", &sqlite])
    }

    /// Starts FerretDB on 127.0.0.1:`port` with its PostgreSQL handler on
    /// `postgres`'s database `name`, its state file in `dir`.
    pub fn start_on_postgres(
        binary: &Path,
        port: u16,
        dir: &Path,
        postgres: &Postgres,
        name: &str,
    ) -> Self {
        let url = format!("--postgresql-url={}/{name}", postgres.url);
        Self::start_with(binary, port, dir, &["--handler=postgresql", &url])
    }

    fn start_with(binary: &Path, port: u16, dir: &Path, handler: &[&str]) -> Self {
        let child = Command::new(binary)
            .args(handler)
            .arg(format!("--state-dir={}", dir.display()))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .args([
                "--log-level=warn",
                "--telemetry=disable",
                "--debug-addr=127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "FerretDB did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, _dir: None }
    }
}

/// A throwaway PostgreSQL cluster (scripts/postgres, as root), for
/// FerretDB's PostgreSQL handler; stopped and removed when dropped.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates and starts a cluster.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Self::script(&["start", &Self::data(&dir)]);
        let url = String::from_utf8(out).unwrap().trim().to_string();
        Self { url, dir }
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        Self::script(&["createdb", &Self::data(&self.dir), name]);
    }

    /// Stops the cluster at once, as a crash would.
    pub fn crash(&self) {
        Self::script(&["crash", &Self::data(&self.dir)]);
    }

    /// Starts it again on the same port (crash recovery first).
    pub fn resume(&self) {
        Self::script(&["resume", &Self::data(&self.dir)]);
    }

    fn data(dir: &tempfile::TempDir) -> String {
        dir.path().join("pg").display().to_string()
    }

    fn script(args: &[&str]) -> Vec<u8> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres");
        let out = Command::new(script).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "scripts/postgres {args:?}: {}",
            text(&out)
        );
        out.stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres"))
            .args(["stop", &Self::data(&self.dir)])
            .output();
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running server; killed when dropped.
pub struct Server {
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to ten seconds for `needle` in the log (lines are written a
    /// moment after the requests they describe are answered).
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} is not in the server log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGHUP (what `systemctl reload` does) and waits until the
    /// server has logged the outcome; returns that log line.
    pub fn reload(&self) -> String {
        let done = |t: &str| t.matches("reloaded: ").count() + t.matches("reload refused").count();
        let before = done(&self.log_text());
        let pid = self.child.as_ref().unwrap().id() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while done(&self.log_text()) == before {
            assert!(
                Instant::now() < deadline,
                "the server did not finish reloading:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log_text();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("reloaded: ") || l.contains("reload refused"));
        line.unwrap_or_default().to_string()
    }

    /// Stops with SIGTERM and waits.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap()
    }

    /// Kills with SIGKILL (a crash) and waits.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One client machine: its own state directory, machine id and config.
pub struct AgentHost {
    /// Its directory.
    pub root: PathBuf,
    /// The agent.toml it uses.
    pub config: PathBuf,
    /// Its machine id.
    pub machine_id: String,
}

impl AgentHost {
    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Runs `penguindome-agent ARGS` for this machine.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_with_env(args, &[])
    }

    /// Runs `penguindome-agent ARGS` with extra environment variables.
    pub fn cmd_with_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        self.command(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Starts `penguindome-agent ARGS` without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("penguindome-agent"));
        c.arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--machine-id-file")
            .arg(self.root.join("machine-id"))
            .arg("--package-root")
            .arg(self.package_root())
            // Actions run in this process's reach, never in host units.
            .env_remove("INVOCATION_ID")
            .args(args);
        c
    }

    /// Where this machine's package managers keep their configuration
    /// (the repository credential goes there, never on the test host).
    pub fn package_root(&self) -> PathBuf {
        self.root.join("package-root")
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        let out = self.cmd(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The client key the agent made.
    pub fn key(&self) -> SecretKey {
        SecretKey::from_bytes(&std::fs::read(self.state_dir().join("client-key.asc")).unwrap())
            .unwrap()
    }

    /// Installs an executable plugin script.
    pub fn plugin(&self, file: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.root.join("plugins").join(file);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A client simulated in-process: its own key, enrolled with the site.
pub struct SimClient {
    /// Machine id.
    pub id: String,
    /// Its key.
    pub key: SecretKey,
}

impl SimClient {
    /// Makes a key and enrolls it.
    pub fn enroll(
        config: &AgentConfig,
        transport: &Transport,
        hostname: &str,
    ) -> anyhow::Result<Self> {
        let id = new_nonce();
        let key = SecretKey::generate(&format!("sim {id}"))?;
        Session::new(config, transport, &key, id.clone())?.enroll(
            hostname,
            Authority::SiteCredential(&config.enrollment_credential),
        )?;
        Ok(Self { id, key })
    }

    /// A report with the given plugins, collected now.
    pub fn report(hostname: &str, plugins: Value) -> Report {
        Report {
            report_id: new_nonce(),
            hostname: hostname.into(),
            collected_at: Utc::now(),
            agent_version: "sim".into(),
            facts_version: penguindome_protocol::facts::FACTS_VERSION,
            plugins: plugins.as_object().unwrap().clone().into_iter().collect(),
        }
    }

    /// Signs a submission.
    pub fn seal(&self, report: &Report) -> Envelope {
        Envelope::seal(&self.key, &self.id, None, report).unwrap()
    }

    /// Signs an update request.
    pub fn seal_update(&self, hostname: &str) -> Envelope {
        let body = penguindome_protocol::wire::UpdateRequest {
            hostname: hostname.into(),
            agent_version: "sim".into(),
        };
        Envelope::seal(&self.key, &self.id, None, &body).unwrap()
    }

    /// Signs and sends a submission.
    pub fn submit(&self, transport: &Transport, report: &Report) -> Reply {
        transport.post(paths::SUBMIT, &self.seal(report)).unwrap()
    }

    /// Sends `report` until the server acknowledges it, as an agent retries
    /// its spool, each attempt a new request with a new nonce: a refusal
    /// for load or an outage (503, 429, a balancer's 502 or a request it
    /// passed on twice) or a cut connection is tried again
    /// for up to three minutes; any other answer fails the test. Returns
    /// how many attempts it took.
    pub fn submit_until_stored(&self, transport: &Transport, report: &Report) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(180);
        for attempt in 1.. {
            match transport.post(paths::SUBMIT, &self.seal(report)) {
                Ok(r) if r.status == 200 => return attempt,
                Ok(r) if matches!(r.status, 502 | 503 | 429) => {}
                // A balancer passed the request to a second server after
                // the first died with it: stored or not, send it anew.
                Ok(r) if r.api_error().is_some_and(|e| e.code == "replayed_request") => {}
                Err(_) => {}
                Ok(r) => panic!("a submission was refused: {}", r.describe()),
            }
            assert!(Instant::now() < deadline, "not stored within 180 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        unreachable!("attempts are unbounded")
    }
}
