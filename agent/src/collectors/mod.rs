//! Collectors: each finds out one thing about the machine. Built-in ones
//! are Rust modules behind [`Collector`]; external ones are executables in
//! the plugins directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
pub use penguindome_protocol::agent_config::CollectorSettings;
use serde_json::{Value, json};

use crate::host::Host;

pub mod auto_updates;
pub mod external;
pub mod firewall;
#[cfg(test)]
pub(crate) mod fixture;
pub mod geolocation;
pub mod guest_session;
pub mod hardware;
pub mod hd_encryption;
pub mod ip_addresses;
pub mod network;
pub mod os_info;
pub mod os_updates;
pub mod packages;
pub mod screenlock;
pub mod software;
pub mod sshd;
pub mod unit_files;
pub mod users;

/// A reading that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CollectError(pub String);

impl From<std::io::Error> for CollectError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// Small JSON values a collector may keep between runs, so that a value
/// that jitters (or cannot be read right now) does not flap in reports.
pub trait Cache: Send + Sync {
    /// The value stored under `key`.
    fn get(&self, key: &str) -> Option<Value>;
    /// Stores `value` under `key`.
    fn put(&self, key: &str, value: &Value);
}

/// A cache that keeps nothing (fixtures, `collect` without a state dir).
pub struct NoCache;

impl Cache for NoCache {
    fn get(&self, _: &str) -> Option<Value> {
        None
    }
    fn put(&self, _: &str, _: &Value) {}
}

/// A cache held in memory only (tests, one-off collections).
#[derive(Default)]
pub struct MemoryCache(std::sync::Mutex<BTreeMap<String, Value>>);

impl Cache for MemoryCache {
    fn get(&self, key: &str) -> Option<Value> {
        self.0.lock().ok()?.get(key).cloned()
    }
    fn put(&self, key: &str, value: &Value) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_string(), value.clone());
        }
    }
}

/// What a collector may use.
pub struct Context<'a> {
    /// The machine.
    pub host: &'a Host,
    /// Values kept between runs.
    pub cache: &'a dyn Cache,
    /// The time of this collection (one clock, so tests can set it).
    pub now: DateTime<Utc>,
    /// What the site asks of the collectors (agent.toml `[collectors]`).
    pub settings: &'a CollectorSettings,
}

/// Settings when agent.toml has none.
static NO_SETTINGS: CollectorSettings = CollectorSettings {
    required_packages: Vec::new(),
    required_services: Vec::new(),
    geolocation: None,
};

impl<'a> Context<'a> {
    /// A context at the current time with default settings.
    pub fn new(host: &'a Host, cache: &'a dyn Cache) -> Self {
        Self {
            host,
            cache,
            now: Utc::now(),
            settings: &NO_SETTINGS,
        }
    }

    /// The same context with the site's settings.
    pub fn with_settings(mut self, settings: &'a CollectorSettings) -> Self {
        self.settings = settings;
        self
    }
}

/// One built-in collector.
pub trait Collector: Send + Sync {
    /// Name under `plugins.` in the report.
    fn name(&self) -> &'static str;
    /// Reads the machine.
    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError>;
}

/// Every built-in collector.
pub fn builtin() -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(os_info::OsInfo),
        Box::new(ip_addresses::IpAddresses),
        Box::new(os_updates::OsUpdates),
        Box::new(hardware::Hardware),
        Box::new(users::Users),
        Box::new(sshd::Sshd),
        Box::new(auto_updates::AutoUpdates),
        Box::new(network::Network),
        Box::new(software::Software),
        Box::new(geolocation::Geolocation),
        Box::new(hd_encryption::HdEncryption),
        Box::new(firewall::Firewall),
        Box::new(screenlock::ScreenLock),
        Box::new(guest_session::GuestSession),
    ]
}

/// Where external plugins live and how long they may run, and what the
/// site asks of the built-in collectors.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Directory of executables.
    pub dir: PathBuf,
    /// Longest run.
    pub timeout: Duration,
    /// The `[collectors]` table of agent.toml.
    pub collectors: CollectorSettings,
}

/// Runs the collectors (only `only`, if given) and returns their outputs.
pub fn collect_all(
    ctx: &Context<'_>,
    plugins: &PluginSettings,
    only: Option<&str>,
) -> Result<BTreeMap<String, Value>, CollectError> {
    let builtins = builtin();
    let mut out = BTreeMap::new();
    let builtin_names: Vec<&str> = builtins.iter().map(|c| c.name()).collect();
    let externals = external::discover(&plugins.dir, &builtin_names);
    if let Some(name) = only
        && !builtin_names.contains(&name)
        && !externals.iter().any(|p| p.name == name)
    {
        let mut known: Vec<String> = builtin_names.iter().map(|s| s.to_string()).collect();
        known.extend(externals.iter().map(|p| p.name.clone()));
        return Err(CollectError(format!(
            "no collector named {name:?}; known: {}",
            known.join(", ")
        )));
    }
    let wanted = |n: &str| only.is_none_or(|o| o == n);
    let selected: Vec<_> = externals.iter().filter(|p| wanted(&p.name)).collect();
    std::thread::scope(|scope| {
        let external_run = scope.spawn(|| external::run_all(&selected, plugins.timeout));
        // Collectors wait on files, programs and D-Bus far more than on
        // the CPU: running them side by side keeps the wall time short.
        let running: Vec<_> = builtins
            .iter()
            .filter(|c| wanted(c.name()))
            .map(|c| (c.name(), scope.spawn(move || c.collect(ctx))))
            .collect();
        for (name, handle) in running {
            let value = match handle.join() {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    log::warn!(collector = name; "collector failed: {e}");
                    json!({"error": e.to_string()})
                }
                Err(_) => {
                    log::error!(collector = name; "collector panicked; please report this bug");
                    json!({"error": "the collector crashed; see the agent's log"})
                }
            };
            out.insert(name.to_string(), value);
        }
        for (name, value) in external_run.join().expect("plugin runner thread") {
            out.insert(name, value);
        }
    });
    Ok(out)
}
