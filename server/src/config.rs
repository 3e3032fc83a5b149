//! server.toml: what the server and pdome-admin read at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use penguindome_protocol::config_file::{self, ConfigFileError};
use penguindome_protocol::logging::LogTarget;
use serde::{Deserialize, Serialize};

/// Default configuration directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/penguindome";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/penguindome";
/// File name of the server configuration inside the configuration directory.
pub const SERVER_CONFIG_FILE: &str = "server.toml";
/// File name of the agent configuration written for the site's clients.
pub const AGENT_CONFIG_FILE: &str = "agent.toml";

/// Errors from reading server.toml.
pub type ConfigError = ConfigFileError;

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// General settings.
    pub server: ServerSection,
    /// One or more listeners.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// The database.
    pub store: StoreConfig,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Defaults written into agent.toml.
    #[serde(default)]
    pub agent: AgentDefaults,
    /// Issues audit settings.
    #[serde(default)]
    pub audit: AuditConfig,
    /// What one peer or client may hold of the server (written only when
    /// changed: examples/server.toml shows them).
    #[serde(default, skip_serializing_if = "LimitsConfig::is_default")]
    pub limits: LimitsConfig,
    /// The remote shell relay (written only when changed).
    #[serde(default, skip_serializing_if = "ShellConfig::is_default")]
    pub shell: ShellConfig,
    /// The read-only web view (written only when changed).
    #[serde(default, skip_serializing_if = "WebConfig::is_default")]
    pub web: WebConfig,
    /// Directory the file was read from; relative paths resolve against it.
    #[serde(skip)]
    pub config_dir: PathBuf,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The URL clients use to reach the server.
    pub url: String,
    /// Where the database and other state live.
    pub data_dir: PathBuf,
    /// The server's OpenPGP secret key (0600), relative to the config dir.
    pub signing_key: PathBuf,
    /// SHA-256 (hex) of the site-wide enrollment credential older site
    /// packages carry. Deprecated: clients enroll with tokens; remove it
    /// to refuse the shared credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_credential_sha256: Option<String>,
    /// Accepted distance between a request's timestamp and the server clock.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub request_window: Duration,
    /// Largest request body accepted.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long shutdown waits for requests in flight.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Refuse requests whose signature does not name their kind of message
    /// (agents from before kinds were named); a request naming the wrong
    /// kind is refused either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_message_kinds: bool,
    /// How long a published apt Release stays valid (`Valid-Until`): apt
    /// refuses it after that, so a frozen or replayed copy of the
    /// repository is noticed. The running server signs it anew once half
    /// of that has passed.
    #[serde(
        default = "default_apt_valid_for",
        with = "humantime_serde",
        skip_serializing_if = "is_default_apt_valid_for"
    )]
    pub apt_valid_for: Duration,
}

fn default_apt_valid_for() -> Duration {
    crate::release::publish::APT_VALID_FOR
}

fn is_default_apt_valid_for(d: &Duration) -> bool {
    *d == default_apt_valid_for()
}

fn default_window() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_body() -> usize {
    8 * 1024 * 1024
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}

/// `[limits]`: bounds that keep slow or flooding peers from starving the
/// fleet. Counts apply to each listener and each server process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time a peer has to send a request's headers, and how long an idle
    /// connection stays open.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a peer has to send a request's body once its headers arrived.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Open connections per listener; past it new ones are closed at once.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Requests handled at once per listener; past it they get 503 and a
    /// Retry-After instead of waiting.
    #[serde(default = "default_requests")]
    pub requests: usize,
    /// Signed requests one client key may make per minute (a client
    /// normally makes two or three); past it they get 429.
    #[serde(default = "default_client_requests_per_minute")]
    pub client_requests_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            connections: default_connections(),
            requests: default_requests(),
            client_requests_per_minute: default_client_requests_per_minute(),
        }
    }
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connections() -> usize {
    4096
}
fn default_requests() -> usize {
    256
}
fn default_client_requests_per_minute() -> u32 {
    60
}

impl LimitsConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn validate(&self) -> Result<(), String> {
        if self.header_timeout < Duration::from_secs(1)
            || self.body_timeout < Duration::from_secs(1)
        {
            return Err("limits.header_timeout and limits.body_timeout must be at least 1s".into());
        }
        if self.connections == 0 || self.requests == 0 || self.client_requests_per_minute == 0 {
            return Err(
                "limits.connections, limits.requests and limits.client_requests_per_minute \
                 must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `[web]`: the read-only web view under `/web/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Whether the listeners serve it at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A login lasts at most this long.
    #[serde(default = "default_web_lifetime", with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// A login unused for this long ends.
    #[serde(default = "default_web_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_lifetime: default_web_lifetime(),
            idle_timeout: default_web_idle(),
        }
    }
}

impl WebConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_true() -> bool {
    true
}
fn default_web_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_web_idle() -> Duration {
    Duration::from_secs(30 * 60)
}

/// `[shell]`: the relay between `pdome-admin shell` and agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellConfig {
    /// The Unix socket administrators on this host open shells through
    /// (relative paths are below the data directory).
    #[serde(default = "default_shell_socket")]
    pub socket: PathBuf,
    /// Group allowed to use the socket besides root and the server's
    /// user (mode 0660); none: mode 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// A session ends after this long without a keystroke or output.
    #[serde(default = "default_shell_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends after this long whatever happens.
    #[serde(default = "default_shell_max", with = "humantime_serde")]
    pub max_duration: Duration,
    /// Sessions open or waiting for their client at once, per server.
    #[serde(default = "default_shell_sessions")]
    pub max_sessions: usize,
    /// What the agent runs on the PTY; empty: root's login shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// This server's own URL as the other servers of the site reach it
    /// (one of its listeners, not the balancer): an agent's connection
    /// that reaches another server is passed on to it. Unset: sessions
    /// opened here are met only by agents that reach this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_url: Option<String>,
    /// The CA (or certificate) to check the other servers' `peer_url`
    /// certificates against, when they are https:// and the system does
    /// not trust them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ca_file: Option<PathBuf>,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            socket: default_shell_socket(),
            socket_group: None,
            idle_timeout: default_shell_idle(),
            max_duration: default_shell_max(),
            max_sessions: default_shell_sessions(),
            command: Vec::new(),
            peer_url: None,
            peer_ca_file: None,
        }
    }
}

fn default_shell_socket() -> PathBuf {
    PathBuf::from("/run/penguindome-server/shell.sock")
}
fn default_shell_idle() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_shell_max() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_shell_sessions() -> usize {
    32
}

impl ShellConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn validate(&self) -> Result<(), String> {
        if self.idle_timeout < Duration::from_secs(1) || self.max_duration < self.idle_timeout {
            return Err(
                "shell.idle_timeout must be at least 1s and shell.max_duration at least as long"
                    .into(),
            );
        }
        if self.max_sessions == 0 {
            return Err("shell.max_sessions must be at least 1".into());
        }
        if let Some(url) = &self.peer_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| format!("shell.peer_url {url:?} is not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!(
                    "shell.peer_url {url:?} must be http:// or https:// with a host"
                ));
            }
        }
        Ok(())
    }
}

/// `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name recorded with each client's last contact.
    pub name: String,
    /// Address and port to bind.
    pub address: SocketAddr,
    /// TLS certificate and key; absent means plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For` names
    /// the client; from anyone else the header is ignored.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "proxy_nets"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Being retired: it still serves, but a client whose signed requests
    /// arrive here gets a `deprecated-port` issue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
}

/// Reads `trusted_proxies` with [`parse_proxy_net`].
fn proxy_nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse_proxy_net(t).map_err(serde::de::Error::custom))
        .collect()
}

/// A trusted proxy: a network, or a bare address (that one host). IPv4-mapped
/// IPv6 networks become IPv4 ones, since peers are compared in IPv4 form.
pub fn parse_proxy_net(text: &str) -> Result<ipnet::IpNet, String> {
    use ipnet::{IpNet, Ipv4Net};
    let t = text.trim();
    let net = t
        .parse::<IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "trusted_proxies: {text:?} is neither an address nor a network such as \
                 10.0.0.0/8 or 2001:db8::/32"
            )
        })?;
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        let v4 = Ipv4Net::new(v4, v6.prefix_len() - 96).expect("a prefix of at most 32");
        return Ok(IpNet::V4(v4.trunc()));
    }
    Ok(net.trunc())
}

/// PEM files for one TLS listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub certificate: PathBuf,
    /// Private key, PEM (0600).
    pub key: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// The embedded SQLite database.
    Sqlite {
        /// Database file, relative to the data directory.
        #[serde(default = "default_sqlite_path")]
        path: PathBuf,
    },
    /// A MongoDB (or MongoDB-protocol) database.
    Mongodb(Box<MongoConfig>),
}

/// `[store]` with `backend = "mongodb"`: either a URI, or hosts and the rest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// A full connection string (`mongodb://` or `mongodb+srv://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replica set members or the single server, `host[:port]` (27017).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Replica set name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_set: Option<String>,
    /// Database name (default: the URI's, else `penguindome`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (0600), relative to the config directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Connect with TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// CA certificate(s) for the database's TLS certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key, PEM in one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate_key_file: Option<PathBuf>,
    /// How long to wait for a usable server before a request fails.
    #[serde(default = "default_selection_timeout", with = "humantime_serde")]
    pub server_selection_timeout: Duration,
    /// How long a write may wait for a replica set's majority (`wtimeout`):
    /// past it the request fails with 503 and the agent retries, instead
    /// of every request hanging while a majority is lost.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: None,
            hosts: Vec::new(),
            replica_set: None,
            database: None,
            username: None,
            password_file: None,
            tls: false,
            tls_ca_file: None,
            tls_certificate_key_file: None,
            server_selection_timeout: default_selection_timeout(),
            write_timeout: default_write_timeout(),
        }
    }
}

fn default_selection_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}

impl MongoConfig {
    /// Checks that the connection is described exactly once.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.uri, self.hosts.is_empty()) {
            (Some(_), false) => Err("store: give either uri or hosts, not both".into()),
            (None, true) => Err("store: the mongodb backend needs uri or hosts".into()),
            (Some(u), true)
                if !(u.starts_with("mongodb://") || u.starts_with("mongodb+srv://")) =>
            {
                Err(format!(
                    "store.uri {u:?} must start with mongodb:// or mongodb+srv://"
                ))
            }
            _ => Ok(()),
        }
    }
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("penguindome.db")
}

/// `[logging]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// auto, journal or stderr.
    #[serde(default)]
    pub target: LogTarget,
    /// error, warn, info, debug or trace.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            target: LogTarget::Auto,
            level: default_level(),
        }
    }
}

/// `[agent]`: defaults for the site's agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefaults {
    /// How often agents collect.
    #[serde(default = "default_collect", with = "humantime_serde")]
    pub collect_interval: Duration,
    /// How often agents retry submitting.
    #[serde(default = "default_submit", with = "humantime_serde")]
    pub submit_interval: Duration,
}

fn default_collect() -> Duration {
    Duration::from_secs(300)
}
fn default_submit() -> Duration {
    Duration::from_secs(60)
}

impl Default for AgentDefaults {
    fn default() -> Self {
        Self {
            collect_interval: default_collect(),
            submit_interval: default_submit(),
        }
    }
}

/// `[audit]`: the periodic issues audit (`pdome-admin issues audit`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Who receives the audit output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Also mail each client's user (its `user_email` parameter).
    #[serde(default)]
    pub email_users: bool,
    /// Sender address; default `PenguinDome <penguindome@HOST>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_from: Option<String>,
    /// Mail relay: `smtp://host[:port]` (plain, for a local relay, the
    /// default `smtp://localhost:25`), `smtp+starttls://host[:port]` or
    /// `smtps://host[:port]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<String>,
    /// User for the relay's authentication (with `smtp_password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_user: Option<String>,
    /// File holding the relay password (0600, or 0640 root:penguindome),
    /// relative to the configuration directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_password_file: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signed the relay's certificate,
    /// relative to the configuration directory; replaces the system's roots
    /// for `smtp+starttls://` and `smtps://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_ca_file: Option<PathBuf>,
    /// IANA time zone of business hours; default the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Business days; default Monday to Friday.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_days: Option<Vec<String>>,
    /// Business hours, `HH:MM-HH:MM`; default `09:00-17:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<String>,
    /// Days off that do not count as business time: `YYYY-MM-DD` for one
    /// date, `MM-DD` for the same date every year.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    /// A client is not reporting after this much business time without a
    /// report; default one business day (`1d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_reporting_after: Option<String>,
    /// Longest screen-lock delay accepted; default 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenlock_max_delay: Option<String>,
    /// Per-check settings, by check name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, CheckConfig>,
}

/// `[audit.checks.NAME]`: overrides for one check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Run this check (each check has its own default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Business time an issue stays open before anyone is told (`4h`, `2d`:
    /// hours count business hours, days count business days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    /// Wall-clock time before an issue already told is told again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realert: Option<String>,
}

impl ServerConfig {
    /// The deprecated site-wide credential's SHA-256, if the site still
    /// accepts it.
    pub fn shared_credential_sha256(&self) -> Option<[u8; 32]> {
        let hash = self.server.enrollment_credential_sha256.as_deref()?;
        hex::decode(hash).ok()?.try_into().ok()
    }

    /// Reads `<dir>/server.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(SERVER_CONFIG_FILE);
        let text = config_file::read(
            &path,
            "run `pdome-admin init` to create it, or pass --config-dir",
        )?;
        let mut config = Self::parse(&text, &path)?;
        config.config_dir = dir.to_path_buf();
        Ok(config)
    }

    /// Parses and validates configuration text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = config_file::parse(text, path, "server configuration")?;
        let invalid = |message: String| config_file::invalid(path, message);
        if config.listeners.is_empty() {
            return Err(invalid(
                "no [[listener]] is configured; add one with a name and an address".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut addresses = std::collections::HashSet::new();
        for l in &config.listeners {
            if !names.insert(&l.name) {
                return Err(invalid(format!("two listeners are named {:?}", l.name)));
            }
            if !addresses.insert(l.address) {
                return Err(invalid(format!(
                    "two listeners bind {}; give each its own address or port",
                    l.address
                )));
            }
        }
        let url = url::Url::parse(&config.server.url).map_err(|e| {
            invalid(format!(
                "server.url {:?} is not a URL: {e}",
                config.server.url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(format!(
                "server.url {:?} must be an http:// or https:// URL with a host",
                config.server.url
            )));
        }
        if let Some(hash) = &config.server.enrollment_credential_sha256
            && (hash.len() != 64 || hex::decode(hash).is_err())
        {
            return Err(invalid(
                "server.enrollment_credential_sha256 must be 64 hex characters".into(),
            ));
        }
        if config.server.max_body_bytes < 1024 {
            return Err(invalid(
                "server.max_body_bytes must be at least 1024".into(),
            ));
        }
        if config.server.request_window < Duration::from_secs(10) {
            return Err(invalid("server.request_window must be at least 10s".into()));
        }
        if let StoreConfig::Mongodb(m) = &config.store {
            m.validate().map_err(invalid)?;
        }
        config.limits.validate().map_err(invalid)?;
        config.shell.validate().map_err(invalid)?;
        config
            .logging
            .level
            .parse::<log::LevelFilter>()
            .map_err(|_| {
                invalid(format!(
                    "logging.level {:?} is not one of error, warn, info, debug, trace",
                    config.logging.level
                ))
            })?;
        Ok(config)
    }

    /// Resolves a path from the file against the configuration directory.
    pub fn config_path(&self, p: &Path) -> PathBuf {
        self.config_dir.join(p)
    }

    /// The shell relay's Unix socket.
    pub fn shell_socket(&self) -> PathBuf {
        self.data_path(&self.shell.socket)
    }

    /// Resolves a path below the data directory.
    pub fn data_path(&self, p: &Path) -> PathBuf {
        self.config_dir.join(&self.server.data_dir).join(p)
    }

    /// The log level as a filter (validated at load).
    pub fn log_level(&self) -> log::LevelFilter {
        self.logging.level.parse().unwrap_or(log::LevelFilter::Info)
    }
}

#[cfg(test)]
mod tests {

    /// examples/server.toml, with its MongoDB block in place of [store]
    /// when `mongodb` is set.
    fn example(mongodb: bool) -> ServerConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/server.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = if mongodb {
            let (before, rest) = text.split_once("[store]\nbackend = \"sqlite\"").unwrap();
            let (_, rest) = rest.split_once("# --- mongodb").unwrap();
            let (block, after) = rest.split_once("# --- end mongodb ---").unwrap();
            let block: String = block
                .lines()
                .skip_while(|l| !l.starts_with("# [store]"))
                .map(|l| l.strip_prefix("# ").unwrap_or(l).to_string() + "\n")
                .collect();
            format!("{before}{block}{after}")
        } else {
            text
        };
        ServerConfig::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_annotated_example_parses_with_either_store() {
        let c = example(false);
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].trusted_proxies.len(), 2);
        assert!(matches!(c.store, StoreConfig::Sqlite { .. }));
        assert_eq!(c.audit.checks["no-location"].enabled, Some(false));
        assert_eq!(
            c.shell,
            ShellConfig::default(),
            "the example shows the defaults"
        );
        crate::audit::Settings::from_config(&c.audit).unwrap();
        let StoreConfig::Mongodb(m) = example(true).store else {
            panic!("the MongoDB block did not replace [store]");
        };
        assert_eq!(m.replica_set.as_deref(), Some("rs0"));
        assert_eq!(m.write_timeout, Duration::from_secs(10));
        assert!(m.tls_certificate_key_file.is_some());
    }
    use super::*;

    const GOOD: &str = r#"
[server]
url = "https://pd.example.com:8443"
data_dir = "/var/lib/penguindome"
signing_key = "server-key.asc"
enrollment_credential_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[[listener]]
name = "main"
address = "0.0.0.0:8443"
tls = { certificate = "tls/server.crt", key = "tls/server.key" }

[[listener]]
name = "local"
address = "127.0.0.1:8080"

[store]
backend = "sqlite"
"#;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(text, Path::new("server.toml"))
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks() {
        let with = |list: &str| {
            parse(&GOOD.replace(
                "address = \"127.0.0.1:8080\"",
                &format!("address = \"127.0.0.1:8080\"\ntrusted_proxies = [{list}]"),
            ))
        };
        let c = with(
            r#""127.0.0.1", "10.0.0.0/8", "2001:db8::1", "::ffff:192.0.2.0/120", "10.1.2.3/16""#,
        )
        .unwrap();
        let nets: Vec<String> = c.listeners[1]
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            nets,
            [
                "127.0.0.1/32",
                "10.0.0.0/8",
                "2001:db8::1/128",
                "192.0.2.0/24",
                "10.1.0.0/16"
            ]
        );
        assert!(c.listeners[0].trusted_proxies.is_empty());
        let e = with(r#""the proxy""#).unwrap_err().to_string();
        assert!(e.contains("the proxy") && e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn good_config_gets_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners[0].tls.is_some());
        assert!(c.listeners[1].tls.is_none());
        assert_eq!(c.server.request_window, Duration::from_secs(900));
        assert_eq!(c.server.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(c.agent.collect_interval, Duration::from_secs(300));
        assert!(
            matches!(c.store, StoreConfig::Sqlite { ref path } if path == Path::new("penguindome.db"))
        );
        assert_eq!(c.logging.target, LogTarget::Auto);
    }

    #[test]
    fn durations_are_human() {
        let c = parse(&GOOD.replace(
            "[store]",
            "[agent]\ncollect_interval = \"2m\"\nsubmit_interval = \"30s\"\n[store]",
        ))
        .unwrap();
        assert_eq!(c.agent.collect_interval, Duration::from_secs(120));
        assert_eq!(c.agent.submit_interval, Duration::from_secs(30));
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = parse(&GOOD.replace("address = \"0.0.0.0:8443\"", "address = \"nowhere\""))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("server.toml") && msg.contains("line"), "{msg}");

        let e = parse(&GOOD.replace("[store]", "[store]\nbogus = 1")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");

        let e = parse(&GOOD.replace("https://pd.example.com:8443", "ftp://x")).unwrap_err();
        assert!(e.to_string().contains("http:// or https://"), "{e}");

        let e = parse(&GOOD.replace("name = \"local\"", "name = \"main\"")).unwrap_err();
        assert!(e.to_string().contains("two listeners"), "{e}");

        let e = parse(&GOOD.replace("backend = \"sqlite\"", "backend = \"oracle\"")).unwrap_err();
        assert!(e.to_string().contains("oracle"), "{e}");

        let e =
            parse(&GOOD.replace("[store]", "[logging]\nlevel = \"loud\"\n[store]")).unwrap_err();
        assert!(e.to_string().contains("loud"), "{e}");

        let peer = |url: &str| {
            GOOD.replace(
                "[store]",
                &format!("[shell]\npeer_url = \"{url}\"\n[store]"),
            )
        };
        let e = parse(&peer("10.0.0.5:8080")).unwrap_err();
        assert!(e.to_string().contains("shell.peer_url"), "{e}");
        let c = parse(&peer("http://10.0.0.5:8080")).unwrap();
        assert_eq!(c.shell.peer_url.as_deref(), Some("http://10.0.0.5:8080"));
    }

    #[test]
    fn mongodb_store_settings() {
        let c = parse(&GOOD.replace(
            "backend = \"sqlite\"",
            "backend = \"mongodb\"\nhosts = [\"db1\", \"db2:27018\"]\nreplica_set = \"rs0\"\nusername = \"pd\"\npassword_file = \"mongodb-password\"\ntls = true",
        ))
        .unwrap();
        let StoreConfig::Mongodb(m) = c.store else {
            panic!("not mongodb")
        };
        assert_eq!(m.hosts, vec!["db1", "db2:27018"]);
        assert_eq!(m.replica_set.as_deref(), Some("rs0"));
        assert!(m.tls);
        assert_eq!(m.server_selection_timeout, Duration::from_secs(10));

        let e = parse(&GOOD.replace("backend = \"sqlite\"", "backend = \"mongodb\"")).unwrap_err();
        assert!(e.to_string().contains("uri or hosts"), "{e}");
        let e = parse(&GOOD.replace(
            "backend = \"sqlite\"",
            "backend = \"mongodb\"\nuri = \"mongodb://a\"\nhosts = [\"b\"]",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = parse(&GOOD.replace(
            "backend = \"sqlite\"",
            "backend = \"mongodb\"\nuri = \"postgres://x\"",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("mongodb://"), "{e}");
    }

    #[test]
    fn missing_file_says_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = ServerConfig::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("pdome-admin init"), "{e}");
    }
}
