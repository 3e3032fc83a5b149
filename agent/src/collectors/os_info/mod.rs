//! os_info: distribution, version, kernel, architecture, host name, boot time.
//!
//! Uptime is reported as `booted_at`, which stays the same between reports
//! (uptime in seconds would make every report a change). The kernel's boot
//! time in /proc/stat can move by a second when the clock is adjusted, so a
//! cached value within a few seconds is kept.

use chrono::{DateTime, Utc};
use penguindome_protocol::envelope::utc;
use penguindome_protocol::facts::os_info::OsInfo as Facts;
use penguindome_protocol::facts::{Timestamp, to_value};
use serde_json::{Map, Value};

use super::{CollectError, Collector, Context};
use crate::host::Host;

mod release;

/// Boot times closer than this to the cached one are the same boot.
const BOOT_JITTER_SECONDS: i64 = 10;

/// The collector.
pub struct OsInfo;

/// Parses os-release(5): KEY=value lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let unquoted = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            let inner = &value[1..value.len() - 1];
            inner
                .replace("\\\"", "\"")
                .replace("\\$", "$")
                .replace("\\`", "`")
                .replace("\\\\", "\\")
        } else {
            value.to_string()
        };
        out.insert(key.trim().to_string(), Value::String(unquoted));
    }
    out
}

fn boot_time(text: &str) -> Option<DateTime<Utc>> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
}

/// os-release, parsed, and the file it was read from.
fn os_release(host: &Host) -> Result<(Map<String, Value>, &'static str), CollectError> {
    if let Ok(t) = host.read_to_string("/etc/os-release") {
        return Ok((parse_os_release(&t), "/etc/os-release"));
    }
    let t = host.read_to_string("/usr/lib/os-release").map_err(|e| {
        CollectError(format!(
            "neither /etc/os-release nor /usr/lib/os-release is readable: {e}"
        ))
    })?;
    Ok((parse_os_release(&t), "/usr/lib/os-release"))
}

impl Collector for OsInfo {
    fn name(&self) -> &'static str {
        "os_info"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let (release, release_file) = os_release(host)?;
        let field = |k: &str| release.get(k).and_then(Value::as_str).map(String::from);
        let id_like: Vec<String> = field("ID_LIKE")
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let kernel = host
            .read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_string();
        let hostname = host
            .read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_string();
        let architecture = host.machine()?;
        let support = release::support(
            host,
            &release::OsRelease {
                id: field("ID").as_deref(),
                id_like: &id_like,
                version_id: field("VERSION_ID").as_deref(),
                codename: field("VERSION_CODENAME").as_deref(),
                support_end: field("SUPPORT_END").as_deref(),
                build_id: field("BUILD_ID").as_deref(),
            },
            ctx.now.date_naive(),
        );
        let architecture_source = if host.is_live() {
            "uname(2)"
        } else {
            "/proc/sys/kernel/arch"
        };
        Ok(to_value(&Facts {
            id: field("ID"),
            id_like,
            name: field("NAME"),
            pretty_name: field("PRETTY_NAME"),
            version_id: field("VERSION_ID"),
            version_codename: field("VERSION_CODENAME"),
            kernel,
            architecture,
            hostname,
            booted_at: booted_at(ctx).map(Timestamp::from),
            release: Some(support),
            evidence: vec![
                format!("distribution: {release_file}"),
                "kernel: /proc/sys/kernel/osrelease".into(),
                "hostname: /proc/sys/kernel/hostname".into(),
                "booted_at: /proc/stat btime".into(),
                format!("architecture: {architecture_source}"),
            ],
        }))
    }
}

/// The boot time, kept from the cache while /proc/stat's stays within
/// [`BOOT_JITTER_SECONDS`] of it.
fn booted_at(ctx: &Context<'_>) -> Option<DateTime<Utc>> {
    let booted = ctx
        .host
        .read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(boot_time);
    let cached = ctx
        .cache
        .get("os_info.booted_at")
        .and_then(|v| {
            v.as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        })
        .map(|t| t.with_timezone(&Utc));
    match (booted, cached) {
        (Some(now), Some(old)) if (now - old).num_seconds().abs() <= BOOT_JITTER_SECONDS => {
            Some(old)
        }
        (Some(now), _) => {
            ctx.cache
                .put("os_info.booted_at", &Value::String(utc::format(&now)));
            Some(now)
        }
        (None, old) => old,
    }
}

#[cfg(test)]
mod tests {
    use penguindome_protocol::facts::{FACTS_VERSION, read};

    use super::*;
    use crate::collectors::fixture::tree;
    use crate::collectors::{Cache, NoCache};

    const PROC: &[(&str, &str)] = &[
        ("/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n"),
        ("/proc/sys/kernel/hostname", "lap-01\n"),
        ("/proc/sys/kernel/arch", "x86_64\n"),
        ("/proc/stat", "cpu  1 2 3\nbtime 1764000000\nprocesses 99\n"),
    ];

    /// The collector's answer, read back as the server reads it.
    fn collect(host: &Host, cache: &dyn Cache) -> Result<Facts, CollectError> {
        let v = OsInfo.collect(&Context::new(host, cache))?;
        Ok(read(Some(&v), FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}")))
    }

    /// Runs the collector on the /proc fixture plus `release` (path, text).
    fn collect_with(
        release: Option<(&str, &str)>,
        cache: &dyn Cache,
    ) -> (tempfile::TempDir, Result<Facts, CollectError>) {
        let mut files = PROC.to_vec();
        files.extend(release);
        let d = tree(&files);
        let v = collect(&Host::fixture(d.path(), vec![]), cache);
        (d, v)
    }

    #[test]
    fn debian_fixture() {
        let release = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                       VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        let v = collect_with(Some(("/etc/os-release", release)), &NoCache)
            .1
            .unwrap();
        let some = |s: &str| Some(s.to_string());
        let booted = DateTime::parse_from_rfc3339("2025-11-24T16:00:00Z").unwrap();
        let expected = Facts {
            id: some("debian"),
            id_like: vec![],
            name: some("Debian GNU/Linux"),
            pretty_name: some("Debian GNU/Linux 12 (bookworm)"),
            version_id: some("12"),
            version_codename: some("bookworm"),
            kernel: "6.1.0-28-amd64".into(),
            architecture: "x86_64".into(),
            hostname: "lap-01".into(),
            booted_at: Some(Timestamp::from(booted.with_timezone(&Utc))),
            release: v.release.clone(),
            evidence: [
                "distribution: /etc/os-release",
                "kernel: /proc/sys/kernel/osrelease",
                "hostname: /proc/sys/kernel/hostname",
                "booted_at: /proc/stat btime",
                "architecture: /proc/sys/kernel/arch",
            ]
            .map(String::from)
            .to_vec(),
        };
        assert_eq!(v, expected);
        let release = v.release.unwrap();
        assert!(release.newer_release.is_unknown());
        assert!(
            release.evidence[0].contains("install distro-info-data"),
            "{release:?}"
        );
    }

    #[test]
    fn fedora_fixture_uses_usr_lib_and_id_like() {
        let release = "NAME=\"Fedora Linux\"\nVERSION_ID=41\nID=fedora\nPRETTY_NAME=\"Fedora Linux 41 (Workstation Edition)\"\n";
        let v = collect_with(Some(("/usr/lib/os-release", release)), &NoCache)
            .1
            .unwrap();
        assert_eq!(v.id.as_deref(), Some("fedora"));
        assert_eq!(v.evidence[0], "distribution: /usr/lib/os-release");
        assert_eq!(v.version_codename, None);

        let mint = "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\nVERSION_ID=\"22\"\n";
        let v = collect_with(Some(("/etc/os-release", mint)), &NoCache)
            .1
            .unwrap();
        assert_eq!(v.id_like, ["ubuntu", "debian"]);
    }

    #[test]
    fn boot_time_jitter_does_not_flap() {
        let cache = crate::collectors::MemoryCache::default();
        let (d, first) = collect_with(Some(("/etc/os-release", "ID=arch\n")), &cache);
        let first = first.unwrap();
        let host = Host::fixture(d.path(), vec![]);
        let again = |btime: &str| {
            std::fs::write(d.path().join("proc/stat"), format!("btime {btime}\n")).unwrap();
            collect(&host, &cache).unwrap().booted_at
        };
        assert!(first.booted_at.is_some());
        assert_eq!(first.booted_at, again("1764000001"));
        assert_ne!(first.booted_at, again("1764090000"));
    }

    #[test]
    fn missing_os_release_says_which_files() {
        let e = collect_with(None, &NoCache).1.unwrap_err();
        assert!(e.0.contains("/usr/lib/os-release"), "{e}");
    }

    #[test]
    fn os_release_quoting() {
        let m = parse_os_release("A=\"x \\\"y\\\"\"\nB='single'\n# c\nC=plain\n");
        assert_eq!(m["A"], "x \"y\"");
        assert_eq!(m["B"], "single");
        assert_eq!(m["C"], "plain");
    }
}
