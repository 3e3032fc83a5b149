//! agent.toml: what a site's agents need. `pdome-admin init` writes it and
//! the agent reads it, so both use this one definition.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config_file::{self, ConfigFileError};
use crate::keys::PublicKey;

/// Default location on clients.
pub const DEFAULT_PATH: &str = "/etc/penguindome/agent.toml";
/// Default state directory on clients.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/penguindome-agent";
/// Default directory of external plugins.
pub const DEFAULT_PLUGINS_DIR: &str = "/usr/lib/penguindome/plugins";

/// The directory patches may always write below, besides the plugins.
pub const DEFAULT_PATCH_DIR: &str = "/etc/penguindome/patches.d";

/// Errors from reading agent.toml.
pub type AgentConfigError = ConfigFileError;

/// The agent's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Base URL of the server, e.g. `https://pd.example.com:8443`.
    pub server_url: String,
    /// PEM certificate(s) the server's TLS certificate must chain to; the
    /// site's self-signed certificate is pinned this way. Absent: the
    /// system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
    /// The server's OpenPGP public key, armored.
    pub server_public_key: String,
    /// The site-wide credential older site packages enroll with
    /// (deprecated; empty for clients enrolled with a token, see
    /// `penguindome-agent enroll`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub enrollment_credential: String,
    /// Allow an `http://` server URL. Off unless the site asks for it.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// How often to collect.
    #[serde(default = "default_collect", with = "humantime_serde")]
    pub collect_interval: Duration,
    /// How often to retry submitting.
    #[serde(default = "default_submit", with = "humantime_serde")]
    pub submit_interval: Duration,
    /// External plugins.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// More directories patches may write below, besides the plugin
    /// directory and [`DEFAULT_PATCH_DIR`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patch_roots: Vec<PathBuf>,
    /// Longest a plugin may run.
    #[serde(default = "default_plugin_timeout", with = "humantime_serde")]
    pub plugin_timeout: Duration,
    /// Largest total size of unsent reports; the oldest go first.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// Timeout of one HTTP request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Where the machine id is read from.
    #[serde(default = "default_machine_id_file")]
    pub machine_id_file: PathBuf,
    /// Log level: error, warn, info, debug, trace.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Settings of the built-in collectors (`[collectors]`).
    #[serde(default, skip_serializing_if = "CollectorSettings::is_default")]
    pub collectors: CollectorSettings,
}

/// What a site asks of the built-in collectors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSettings {
    /// Packages every machine must have installed (an EDR agent, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_packages: Vec<String>,
    /// systemd units that must be enabled and running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_services: Vec<String>,
    /// Where Wi-Fi access points are sent to find the machine; absent
    /// means geolocation is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geolocation: Option<GeolocationSettings>,
}

impl CollectorSettings {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// A geolocation service speaking the widespread `wifiAccessPoints` API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeolocationSettings {
    /// The API endpoint (HTTPS), e.g. a Google- or Mozilla-compatible one.
    pub url: String,
    /// The API key, sent as the `key` query parameter.
    pub api_key: String,
}

fn default_collect() -> Duration {
    Duration::from_secs(300)
}
fn default_submit() -> Duration {
    Duration::from_secs(60)
}
fn default_plugins_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PLUGINS_DIR)
}
fn default_plugin_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_spool_max() -> u64 {
    64 * 1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_machine_id_file() -> PathBuf {
    PathBuf::from("/etc/machine-id")
}
fn default_log_level() -> String {
    "info".into()
}

impl AgentConfig {
    /// A configuration with defaults for everything the site does not decide.
    pub fn new(
        server_url: String,
        server_public_key: String,
        enrollment_credential: String,
    ) -> Self {
        Self {
            server_url,
            ca_certificate: None,
            server_public_key,
            enrollment_credential,
            allow_plain_http: false,
            collect_interval: default_collect(),
            submit_interval: default_submit(),
            plugins_dir: default_plugins_dir(),
            patch_roots: Vec::new(),
            plugin_timeout: default_plugin_timeout(),
            spool_max_bytes: default_spool_max(),
            request_timeout: default_request_timeout(),
            machine_id_file: default_machine_id_file(),
            log_level: default_log_level(),
            collectors: CollectorSettings::default(),
        }
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = config_file::read(path, "install the site's agent.toml or pass --config")?;
        Self::parse(&text, path)
    }

    /// Parses and validates text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AgentConfigError> {
        let config: Self = config_file::parse(text, path, "agent configuration")?;
        config
            .validate()
            .map_err(|message| config_file::invalid(path, message))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let url = self.server_url.trim_end_matches('/');
        if let Some(rest) = url.strip_prefix("http://") {
            if !self.allow_plain_http {
                return Err(format!(
                    "server_url {url:?} is plain HTTP; use https://, or set allow_plain_http = true \
                     if the site really wants unencrypted transport"
                ));
            }
            if rest.is_empty() {
                return Err("server_url has no host".into());
            }
        } else if let Some(rest) = url.strip_prefix("https://") {
            if rest.is_empty() {
                return Err("server_url has no host".into());
            }
        } else {
            return Err(format!("server_url {url:?} must start with https://"));
        }
        PublicKey::from_bytes(self.server_public_key.as_bytes())
            .map_err(|e| format!("server_public_key: {e}"))?;
        if self.collect_interval < Duration::from_secs(60) {
            return Err("collect_interval must be at least 1m".into());
        }
        if self.submit_interval < Duration::from_secs(10) {
            return Err("submit_interval must be at least 10s".into());
        }
        if self.spool_max_bytes < 1024 * 1024 {
            return Err("spool_max_bytes must be at least 1 MiB".into());
        }
        if let Some(g) = &self.collectors.geolocation
            && !g.url.starts_with("https://")
            && !["http://127.0.0.1", "http://[::1]", "http://localhost"]
                .iter()
                .any(|p| g.url.starts_with(p))
        {
            return Err(format!(
                "collectors.geolocation.url {:?} must start with https:// (access points locate the machine; plain http only to a loopback service)",
                g.url
            ));
        }
        self.log_level.parse::<LevelName>().map_err(|_| {
            format!(
                "log_level {:?} is not error, warn, info, debug or trace",
                self.log_level
            )
        })?;
        Ok(())
    }

    /// Every directory patches may write below.
    pub fn all_patch_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.plugins_dir.clone(), PathBuf::from(DEFAULT_PATCH_DIR)];
        roots.extend(self.patch_roots.iter().cloned());
        roots
    }

    /// The server URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.server_url.trim_end_matches('/')
    }

    /// The configuration as TOML text with a header comment.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let body = toml::to_string(self)?;
        let secret = if self.enrollment_credential.is_empty() {
            ""
        } else {
            "# It holds the site's enrollment credential: keep it mode 0600.\n"
        };
        Ok(format!(
            "# PenguinDome agent configuration for {}.\n{secret}\n{body}",
            self.base_url()
        ))
    }
}

struct LevelName;

impl std::str::FromStr for LevelName {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(LevelName),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_annotated_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // The example shows where the site's key goes; a real one is needed
        // to parse it.
        let key = crate::SecretKey::generate("example").unwrap();
        let armored = key.public().to_armored().unwrap();
        let (head, rest) = text
            .split_once("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            .unwrap();
        let (_, tail) = rest
            .split_once("-----END PGP PUBLIC KEY BLOCK-----\n")
            .unwrap();
        let text = format!("{head}{armored}{tail}");
        let c = AgentConfig::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.collectors.required_services, ["falcon-sensor"]);
        assert!(c.collectors.geolocation.is_some());
        assert_eq!(c.spool_max_bytes, 64 * 1024 * 1024);
    }
    use super::*;
    use crate::keys::SecretKey;

    fn sample() -> AgentConfig {
        let key = SecretKey::generate("s").unwrap();
        AgentConfig::new(
            "https://pd.example.com:8443/".into(),
            key.public().to_armored().unwrap(),
            "cred".into(),
        )
    }

    #[test]
    fn round_trips_through_toml() {
        let c = sample();
        let text = c.to_toml().unwrap();
        assert!(text.starts_with("# PenguinDome agent configuration"));
        let back = AgentConfig::parse(&text, Path::new("agent.toml")).unwrap();
        assert_eq!(back.base_url(), "https://pd.example.com:8443");
        assert_eq!(back.collect_interval, Duration::from_secs(300));
        assert!(text.contains("collect_interval = \"5m\""), "{text}");
    }

    #[test]
    fn plain_http_needs_consent() {
        let mut c = sample();
        c.server_url = "http://pd.example.com".into();
        let text = c.to_toml().unwrap();
        let e = AgentConfig::parse(&text, Path::new("agent.toml")).unwrap_err();
        assert!(e.to_string().contains("allow_plain_http"), "{e}");
        c.allow_plain_http = true;
        AgentConfig::parse(&c.to_toml().unwrap(), Path::new("agent.toml")).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let c = sample();
        let text = c.to_toml().unwrap();
        let e = AgentConfig::parse(
            &text.replace("\"5m\"", "\"5 parsecs\""),
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("collect_interval"), "{e}");
        let e = AgentConfig::parse(&format!("{text}\nsurprise = 1\n"), Path::new("a.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("surprise"), "{e}");
        let mut bad = c.clone();
        bad.server_public_key = "not a key".into();
        let e = AgentConfig::parse(&bad.to_toml().unwrap(), Path::new("a.toml")).unwrap_err();
        assert!(e.to_string().contains("server_public_key"), "{e}");
        let e = AgentConfig::load(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert!(e.to_string().contains("--config"), "{e}");
    }
}
