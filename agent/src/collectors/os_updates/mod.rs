//! os_updates: pending updates, which of them fix security problems, how
//! fresh the package lists are and whether a reboot is needed, through a
//! backend per package manager. Every backend answers in the same shape.
//!
//! Each pending update carries `first_seen_at`, kept in the agent's cache,
//! so the server can tell how long a security fix has been waiting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use penguindome_protocol::facts::os_updates::{self as facts, Counts};
use penguindome_protocol::facts::{Known, Timestamp, to_value};
use serde::Serialize;
use serde_json::Value;

use super::{CollectError, Collector, Context};
use crate::host::Host;

pub mod apt;
pub mod dnf;
pub mod pacman;

/// One package with a newer version waiting: the protocol's type, so
/// backends build what the report carries (`first_seen_at` is left to
/// [`OsUpdates`]).
pub use penguindome_protocol::facts::os_updates::PendingUpdate;

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
            return Ok(to_value(&no_backend(&names)));
        };
        let check = backend.check(ctx)?;
        Ok(to_value(&render(backend.name(), check, ctx)))
    }
}

/// The answer on a machine that none of the backends `names` runs.
fn no_backend(names: &[&str]) -> facts::OsUpdates {
    facts::OsUpdates {
        backend: "unknown".into(),
        counts: None,
        pending: Vec::new(),
        lists_refreshed_at: None,
        reboot_required: Known::UNKNOWN,
        reboot_evidence: String::new(),
        broken: Vec::new(),
        security_evidence: String::new(),
        evidence: vec![format!(
            "none of the supported package managers ({}) was found",
            names.join(", ")
        )],
    }
}

/// Builds the report from a backend's answer, sorted, with `first_seen_at`.
fn render(backend: &str, mut check: UpdateCheck, ctx: &Context<'_>) -> facts::OsUpdates {
    check
        .pending
        .sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    check.broken.sort();
    stamp_first_seen(&mut check.pending, ctx);
    let count =
        |pick: fn(&PendingUpdate) -> bool| check.pending.iter().filter(|p| pick(p)).count() as u64;
    let counts = Counts {
        pending: check.pending.len() as u64,
        security: if check.security_classified {
            Known::Value(count(|p| p.security))
        } else {
            Known::UNKNOWN
        },
        held: count(|p| p.held),
        broken: check.broken.len() as u64,
    };
    facts::OsUpdates {
        backend: backend.to_string(),
        counts: Some(counts),
        pending: check.pending,
        lists_refreshed_at: check.lists_refreshed_at.map(Timestamp::from),
        reboot_required: Known::from(check.reboot_required),
        reboot_evidence: check.reboot_evidence,
        broken: check.broken,
        security_evidence: check.security_evidence,
        evidence: check.evidence,
    }
}

/// Sets each update's `first_seen_at` from the cache, which keeps it
/// across runs while the update stays pending.
fn stamp_first_seen(pending: &mut [PendingUpdate], ctx: &Context<'_>) {
    let seen_before: BTreeMap<String, Timestamp> = ctx
        .cache
        .get(FIRST_SEEN_KEY)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let now = Timestamp::from(ctx.now);
    let mut seen_now = BTreeMap::new();
    for p in pending.iter_mut() {
        // Keyed by the installed version: a package that keeps getting
        // newer fixes without being upgraded stays as old as its first
        // one, which is what "how long has this been pending" means.
        let key = format!(
            "{} {} {}",
            p.name,
            p.arch.as_deref().unwrap_or(""),
            p.installed
        );
        let first = seen_before.get(&key).copied().unwrap_or(now);
        seen_now.insert(key, first);
        p.first_seen_at = Some(first);
    }
    if seen_now != seen_before {
        ctx.cache.put(
            FIRST_SEEN_KEY,
            &serde_json::to_value(&seen_now).unwrap_or(Value::Null),
        );
    }
}

#[cfg(test)]
mod tests {
    use penguindome_protocol::facts::{FACTS_VERSION, read};

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
            first_seen_at: None,
        }
    }

    /// The report as the server reads it from the wire.
    fn on_the_wire(v: &facts::OsUpdates) -> facts::OsUpdates {
        read(Some(&to_value(v)), FACTS_VERSION).unwrap()
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
        let wire = to_value(&unclassified);
        assert_eq!(wire["counts"]["security"], "unknown");
        assert_eq!(wire["reboot_required"], "unknown");
        let counts = on_the_wire(&unclassified).counts.unwrap();
        assert!(counts.security.is_unknown());
        assert_eq!(counts.pending, 1);
    }

    #[test]
    fn no_backend_has_no_counts() {
        let v = no_backend(&["apt", "dnf"]);
        let wire = to_value(&v);
        assert_eq!(wire["backend"], "unknown");
        assert!(wire.get("counts").is_none(), "{wire}");
        assert!(wire["evidence"][0].as_str().unwrap().contains("apt, dnf"));
        assert_eq!(on_the_wire(&v), v);
    }

    #[test]
    fn first_seen_is_kept_until_the_update_is_installed() {
        let cache = MemoryCache::default();
        let host = Host::fixture("/nonexistent", vec![]);
        let mut ctx = Context::new(&host, &cache);
        let t0 = Timestamp::from(ctx.now);
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
        assert_eq!(v.pending[0].name, "a", "sorted by name");
        assert_eq!(v.counts.as_ref().unwrap().security, Known::Value(1));
        assert_eq!(on_the_wire(&v), v);

        ctx.now = t0.0 + chrono::Duration::days(3);
        let v = render(
            "apt",
            check(vec![update("a", "2", false), update("b", "3", true)]),
            &ctx,
        );
        assert_eq!(v.pending[0].first_seen_at, Some(t0));
        assert_eq!(
            v.pending[1].first_seen_at,
            Some(t0),
            "a newer candidate for the same installed version is no fresh start"
        );

        // Gone once installed; seen again later counts from then.
        render("apt", check(vec![]), &ctx);
        ctx.now = t0.0 + chrono::Duration::days(5);
        let v = render("apt", check(vec![update("a", "2", false)]), &ctx);
        assert_eq!(v.pending[0].first_seen_at, Some(Timestamp::from(ctx.now)));
    }
}
