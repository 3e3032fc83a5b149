//! HAProxy (Debian's package) in front of several servers, as a site's load
//! balancer: TLS ends at the balancer with the site's own certificate (the
//! one agents pin), requests go on over plain HTTP with `X-Forwarded-For`,
//! and a server that fails its health check is out within a second.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use penguindome_protocol::wire::paths;

use crate::{Site, free_port};

/// A running HAProxy; stopped when dropped.
pub struct Balancer {
    child: Child,
    /// The URL agents use.
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// Starts HAProxy on a free port in front of `backends` (addresses of
    /// the servers' plain listeners), presenting `site`'s certificate.
    pub fn start(site: &Site, backends: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("site.pem");
        let read = |f: &str| std::fs::read_to_string(site.config_dir.join(f)).unwrap();
        std::fs::write(&pem, read("tls/server.crt") + &read("tls/server.key")).unwrap();
        let port = free_port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_text(port, &pem, backends)).unwrap();
        let log = dir.path().join("haproxy.log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("haproxy runs (apt install haproxy)");
        let balancer = Self {
            child,
            url: format!("https://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        balancer.wait_until_listening(port);
        balancer
    }

    fn wait_until_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not start:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Round robin, health checked every 300 ms; a request whose connection
/// failed, or that got no answer at all, is sent to another server (a
/// replayed submission is then refused by its nonce, never stored twice).
fn config_text(port: u16, pem: &std::path::Path, backends: &[String]) -> String {
    let mut lines = vec![
        "global".to_string(),
        "    maxconn 4000".into(),
        "defaults".into(),
        "    mode http".into(),
        "    timeout connect 1s".into(),
        "    timeout client 30s".into(),
        "    timeout server 30s".into(),
        "    timeout check 1s".into(),
        "    retries 3".into(),
        "    option redispatch".into(),
        "    retry-on conn-failure empty-response".into(),
        "frontend site".into(),
        format!("    bind 127.0.0.1:{port} ssl crt {}", pem.display()),
        "    default_backend servers".into(),
        "backend servers".into(),
        "    balance roundrobin".into(),
        "    option forwardfor".into(),
        format!("    option httpchk GET {}", paths::HEALTH),
    ];
    for (i, b) in backends.iter().enumerate() {
        lines.push(format!(
            "    server s{i} {b} check inter 300ms fall 1 rise 2"
        ));
    }
    lines.join("\n") + "\n"
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
