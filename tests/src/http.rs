//! Plain HTTPS requests made with curl, the way an administrator would probe
//! the server: only the status and headers matter to the tests that use it.

use std::path::Path;
use std::process::Command;

/// What a GET answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status; 0 when curl got no answer at all.
    pub status: u16,
    /// The response headers as sent, for tests that look at them.
    pub headers: String,
}

/// A GET trusting only one certificate. The path is sent as written (`../`
/// included) so the server, not curl, judges it.
pub struct Get {
    cmd: Command,
}

impl Get {
    /// A GET of `url` trusting `ca` (plain HTTP URLs ignore it).
    pub fn new(url: &str, ca: &Path) -> Self {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--path-as-is", "--output", "/dev/null"])
            .args(["--dump-header", "-", "--write-out", "%{http_code}"])
            .arg("--cacert")
            .arg(ca)
            .arg(url);
        Get { cmd }
    }

    /// With Basic credentials.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.cmd.arg("--user").arg(format!("{user}:{password}"));
        self
    }

    /// With one more request header, `Name: value`.
    pub fn header(mut self, line: &str) -> Self {
        self.cmd.arg("--header").arg(line);
        self
    }

    /// Sends it.
    pub fn send(mut self) -> Answer {
        let out = self.cmd.output().expect("curl runs (apt install curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text.lines().last().unwrap_or_default().trim().parse();
        Answer {
            status: status.unwrap_or(0),
            headers: text,
        }
    }
}

/// GETs `url` trusting only `ca`, with optional Basic credentials.
pub fn get(url: &str, ca: &Path, auth: Option<(&str, &str)>) -> Answer {
    let g = Get::new(url, ca);
    match auth {
        Some((user, password)) => g.auth(user, password).send(),
        None => g.send(),
    }
}
