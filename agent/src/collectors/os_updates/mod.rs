//! os_updates: pending updates, which of them fix security problems, how
//! fresh the package lists are and whether a reboot is needed, through a
//! backend per package manager. Every backend answers in the same shape.
//!
//! Each pending update carries `first_seen_at`, kept in the agent's cache,
//! so the server can tell how long a security fix has been waiting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use penguindome_protocol::envelope::utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CollectError, Collector, Context};
use crate::host::Host;

pub mod apt;
pub mod dnf;
pub mod pacman;

/// One package with a newer version waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpdate {
    /// Package name.
    pub name: String,
    /// Architecture, where the package manager has several per name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The installed version.
    pub installed: String,
    /// The version the package manager would install.
    pub candidate: String,
    /// True when the candidate comes from a security source or advisory.
    pub security: bool,
    /// Held back by the admin (apt-mark hold and the like).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Where the candidate comes from (suite, repository).
    pub source: String,
}

/// What a backend found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateCheck {
    /// Pending updates, any order (sorted on output).
    pub pending: Vec<PendingUpdate>,
    /// When the package lists were last refreshed.
    pub lists_refreshed_at: Option<DateTime<Utc>>,
    /// Whether the machine waits for a reboot; `None` when unknowable.
    pub reboot_required: Option<bool>,
    /// Why a reboot is (or is not) needed.
    pub reboot_evidence: String,
    /// Packages left half-installed or half-configured.
    pub broken: Vec<String>,
    /// How security updates were told apart, or why they could not be.
    pub security_evidence: String,
    /// Whether security updates could be told apart at all (otherwise
    /// the security count is "unknown", not a reassuring zero).
    pub security_classified: bool,
    /// Files and programs the answer was based on.
    pub evidence: Vec<String>,
}

/// A package manager's view of pending updates.
pub trait UpdateBackend: Send + Sync {
    /// Backend name in the report (`apt`, `pacman`, `dnf`).
    fn name(&self) -> &'static str;
    /// True when this package manager runs the machine.
    fn detect(&self, host: &Host) -> bool;
    /// Reads pending updates.
    fn check(&self, ctx: &Context<'_>) -> Result<UpdateCheck, CollectError>;
}

/// A file's identity for memoising: path, size and modification time in
/// nanoseconds (-1 when the file is missing).
pub(super) fn path_stamp(path: &std::path::Path) -> (String, u64, i64) {
    let (size, mtime) = std::fs::metadata(path)
        .map(|m| {
            let ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            (m.len(), ns)
        })
        .unwrap_or((0, -1));
    (path.display().to_string(), size, mtime)
}

/// [`path_stamp`] of an absolute path of the machine.
pub(super) fn file_stamp(host: &Host, absolute: &str) -> (String, u64, i64) {
    let (_, size, mtime) = path_stamp(&host.path(absolute));
    (absolute.to_string(), size, mtime)
}

/// Every backend, in detection order.
pub fn backends() -> Vec<Box<dyn UpdateBackend>> {
    vec![
        Box::new(apt::Apt),
        Box::new(pacman::Pacman),
        Box::new(dnf::Dnf),
    ]
}

/// The collector.
pub struct OsUpdates;

const FIRST_SEEN_KEY: &str = "os_updates.first_seen";

impl Collector for OsUpdates {
    fn name(&self) -> &'static str {
        "os_updates"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let all = backends();
        let Some(backend) = all.iter().find(|b| b.detect(ctx.host)) else {
            let names: Vec<&str> = all.iter().map(|b| b.name()).collect();
            return Ok(json!({
                "backend": "unknown",
                "evidence": [format!("none of the supported package managers ({}) was found", names.join(", "))],
            }));
        };
        let check = backend.check(ctx)?;
        Ok(render(backend.name(), check, ctx))
    }
}

/// Builds the report shape and keeps `first_seen_at` across runs.
fn render(backend: &str, mut check: UpdateCheck, ctx: &Context<'_>) -> Value {
    check
        .pending
        .sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    check.broken.sort();
    let seen_before: BTreeMap<String, String> = ctx
        .cache
        .get(FIRST_SEEN_KEY)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mut seen_now = BTreeMap::new();
    let now = utc::format(&ctx.now);
    let pending: Vec<Value> = check
        .pending
        .iter()
        .map(|p| {
            // Keyed by the installed version: a package that keeps getting
            // newer fixes without being upgraded stays as old as its first
            // one, which is what "how long has this been pending" means.
            let key = format!(
                "{} {} {}",
                p.name,
                p.arch.as_deref().unwrap_or(""),
                p.installed
            );
            let first = seen_before
                .get(&key)
                .cloned()
                .unwrap_or_else(|| now.clone());
            seen_now.insert(key, first.clone());
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            v["first_seen_at"] = Value::String(first);
            v
        })
        .collect();
    if seen_now != seen_before {
        ctx.cache.put(
            FIRST_SEEN_KEY,
            &serde_json::to_value(&seen_now).unwrap_or(Value::Null),
        );
    }
    let security = if check.security_classified {
        json!(check.pending.iter().filter(|p| p.security).count())
    } else {
        json!("unknown")
    };
    json!({
        "backend": backend,
        "counts": {
            "pending": check.pending.len(),
            "security": security,
            "held": check.pending.iter().filter(|p| p.held).count(),
            "broken": check.broken.len(),
        },
        "pending": pending,
        "lists_refreshed_at": check.lists_refreshed_at.map(|t| utc::format(&t)),
        "reboot_required": check.reboot_required.map(Value::Bool).unwrap_or_else(|| Value::String("unknown".into())),
        "reboot_evidence": check.reboot_evidence,
        "broken": check.broken,
        "security_evidence": check.security_evidence,
        "evidence": check.evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::MemoryCache;

    fn update(name: &str, candidate: &str, security: bool) -> PendingUpdate {
        PendingUpdate {
            name: name.into(),
            arch: Some("amd64".into()),
            installed: "1.0".into(),
            candidate: candidate.into(),
            security,
            held: false,
            source: "stable".into(),
        }
    }

    #[test]
    fn a_backend_that_cannot_classify_says_unknown_not_zero() {
        let cache = MemoryCache::default();
        let host = Host::fixture("/nonexistent", vec![]);
        let ctx = Context::new(&host, &cache);
        let unclassified = render(
            "pacman",
            UpdateCheck {
                pending: vec![update("c", "2", false)],
                ..Default::default()
            },
            &ctx,
        );
        assert_eq!(unclassified["counts"]["security"], "unknown");
        assert_eq!(unclassified["counts"]["pending"], 1);
    }

    #[test]
    fn first_seen_is_kept_until_the_update_is_installed() {
        let cache = MemoryCache::default();
        let host = Host::fixture("/nonexistent", vec![]);
        let mut ctx = Context::new(&host, &cache);
        let t0 = ctx.now;
        let check = |pending| UpdateCheck {
            pending,
            security_classified: true,
            ..Default::default()
        };
        let v = render(
            "apt",
            check(vec![update("b", "2", true), update("a", "2", false)]),
            &ctx,
        );
        assert_eq!(v["pending"][0]["name"], "a", "sorted by name");
        assert_eq!(v["counts"]["security"], 1);
        assert_eq!(v["reboot_required"], "unknown");

        ctx.now = t0 + chrono::Duration::days(3);
        let v = render(
            "apt",
            check(vec![update("a", "2", false), update("b", "3", true)]),
            &ctx,
        );
        assert_eq!(v["pending"][0]["first_seen_at"], utc::format(&t0));
        assert_eq!(
            v["pending"][1]["first_seen_at"],
            utc::format(&t0),
            "a newer candidate for the same installed version is no fresh start"
        );

        // Gone once installed; seen again later counts from then.
        render("apt", check(vec![]), &ctx);
        ctx.now = t0 + chrono::Duration::days(5);
        let v = render("apt", check(vec![update("a", "2", false)]), &ctx);
        assert_eq!(v["pending"][0]["first_seen_at"], utc::format(&ctx.now));
    }
}
