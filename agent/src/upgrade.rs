//! Self-upgrade through the native package manager. The server's signed
//! update answer names the newest release; when the installed package is
//! older, the agent starts penguindome-upgrade.service, which runs
//! `penguindome-agent upgrade` outside the agent's sandbox and upgrades the
//! penguindome packages only, from the site's repository only. The package
//! managers verify every signature; the agent never installs a file itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::collectors::packages::installed_versions;
use crate::host::Host;
use crate::state::write_atomic;

/// The unit that performs upgrades (systemd/penguindome-upgrade.service).
pub const UPGRADE_UNIT: &str = "penguindome-upgrade.service";
/// The packages an upgrade touches.
pub const PACKAGES: [&str; 2] = ["penguindome-agent", "penguindome-site"];
/// How long to wait before trying a failed or unfinished upgrade again.
pub const RETRY_AFTER: Duration = Duration::from_secs(10 * 60);
const OUTCOME_FILE: &str = "upgrade.json";

/// The outcome of the last upgrade, written by `penguindome-agent upgrade`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UpgradeOutcome {
    /// When the upgrade finished.
    #[serde(default, with = "penguindome_protocol::envelope::utc::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Package manager used.
    #[serde(default)]
    pub package_manager: Option<String>,
    /// Installed agent package version before and after.
    #[serde(default)]
    pub from_version: Option<String>,
    /// Installed agent package version after the upgrade.
    #[serde(default)]
    pub to_version: Option<String>,
    /// What failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// Reads the last outcome from the state directory.
pub fn last_outcome(state_dir: &Path) -> Option<UpgradeOutcome> {
    let bytes = std::fs::read(state_dir.join(OUTCOME_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The site release number of a package version: our packages are
/// versioned UPSTREAM-RELEASE ("0.1.0-7" is release 7).
pub fn release_of(version: &str) -> Option<u64> {
    version.rsplit_once('-')?.1.parse().ok()
}

/// The installed agent package's version, if a package manager installed it.
pub fn installed_agent_version(host: &Host) -> Option<String> {
    let (versions, _) = installed_versions(host, &[PACKAGES[0].to_string()]).ok()?;
    versions.get(PACKAGES[0]).cloned()
}

/// What the run decided about upgrading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing published, or not installed from a package.
    NotApplicable,
    /// The installed release is the newest.
    Current,
    /// Behind, but an attempt was made recently.
    Waiting,
    /// Behind: start the upgrade unit.
    Start {
        /// Installed release.
        installed: u64,
        /// Newest release.
        latest: u64,
    },
}

/// The last upgrade this agent started: when, and to which release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastAttempt {
    /// When it started.
    pub at: Option<DateTime<Utc>>,
    /// The release it aimed at.
    pub target: Option<u64>,
}

/// Decides whether to start an upgrade now: at once for a release not
/// tried before, and again after [`RETRY_AFTER`] for one that was (a
/// failed or unfinished attempt).
pub fn decide(
    installed_version: Option<&str>,
    latest: Option<u64>,
    last: LastAttempt,
    now: DateTime<Utc>,
) -> Decision {
    let (Some(latest), Some(installed)) = (latest, installed_version.and_then(release_of)) else {
        return Decision::NotApplicable;
    };
    if installed >= latest {
        return Decision::Current;
    }
    if last.target == Some(latest)
        && let Some(at) = last.at
        && (now - at).to_std().is_ok_and(|d| d < RETRY_AFTER)
    {
        return Decision::Waiting;
    }
    Decision::Start { installed, latest }
}

/// Starts the upgrade unit without waiting for it.
pub fn start_unit() -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .args(["start", "--no-block", UPGRADE_UNIT])
        .output()
        .context("cannot run systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl start {UPGRADE_UNIT} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The package manager families the upgrade knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Apt,
    Dnf,
    Pacman,
}

fn detect(host: &Host) -> Option<Manager> {
    if host.exists("/var/lib/dpkg/status") && host.find_program("apt-get").is_some() {
        Some(Manager::Apt)
    } else if host.find_program("dnf").is_some() {
        Some(Manager::Dnf)
    } else if host.exists("/var/lib/pacman/local") && host.find_program("pacman").is_some() {
        Some(Manager::Pacman)
    } else {
        None
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    log::info!("running {cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            error_lines(&stderr)
        );
    }
    Ok(())
}

/// The lines that say what went wrong: apt's `E:`, dnf's `Error:`,
/// pacman's `error:`; the last lines when there are none.
fn error_lines(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("E: ") || l.starts_with("Error") || l.starts_with("error:"))
        .take(5)
        .collect();
    let lines = if errors.is_empty() {
        let all: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        all[all.len().saturating_sub(5)..].to_vec()
    } else {
        errors
    };
    lines.join(" / ")
}

/// The pacman configuration an upgrade uses: the site's repository only,
/// so the system's other sync databases are never refreshed (no partial
/// upgrades of the rest of the system).
const PACMAN_CONF: &str = "[options]\nSigLevel = Required DatabaseRequired TrustedOnly\n\n\
                           [penguindome]\nInclude = /etc/pacman.d/penguindome.conf\n";

fn upgrade_with(manager: Manager, work: &Path) -> anyhow::Result<()> {
    match manager {
        Manager::Apt => {
            // A previously interrupted dpkg blocks every later install.
            if let Err(e) = run(Command::new("dpkg").args(["--configure", "-a"])) {
                log::warn!("dpkg --configure -a: {e}");
            }
            run(Command::new("apt-get").args([
                "-o",
                "Dir::Etc::SourceList=/etc/apt/sources.list.d/penguindome.sources",
                "-o",
                "Dir::Etc::SourceParts=-",
                "-o",
                "APT::Get::List-Cleanup=0",
                "update",
            ]))?;
            run(Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args([
                    "install",
                    "-y",
                    "--only-upgrade",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                ])
                .args(PACKAGES))
        }
        Manager::Dnf => run(Command::new("dnf")
            .args([
                "-y",
                "--refresh",
                "--disablerepo=*",
                "--enablerepo=penguindome",
                "upgrade",
            ])
            .args(PACKAGES)),
        Manager::Pacman => {
            let conf = work.join("pacman.conf");
            std::fs::write(&conf, PACMAN_CONF)
                .with_context(|| format!("cannot write {}", conf.display()))?;
            run(Command::new("pacman")
                .arg("--config")
                .arg(&conf)
                .args(["-Sy", "--noconfirm", "--needed"])
                .args(PACKAGES))
        }
    }
}

/// `penguindome-agent upgrade`: upgrades the penguindome packages and
/// records the outcome for the next run's report.
pub fn upgrade(host: &Host, state_dir: &Path) -> anyhow::Result<UpgradeOutcome> {
    let manager = detect(host).context("no apt, dnf or pacman here to upgrade with")?;
    let from = installed_agent_version(host);
    let work: PathBuf = state_dir.join("upgrade");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = upgrade_with(manager, &work);
    let outcome = UpgradeOutcome {
        finished_at: Some(Utc::now()),
        package_manager: Some(format!("{manager:?}").to_lowercase()),
        from_version: from,
        to_version: installed_agent_version(host),
        error: result.as_ref().err().map(|e| format!("{e:#}")),
    };
    let bytes = serde_json::to_vec_pretty(&outcome)?;
    write_atomic(&state_dir.join(OUTCOME_FILE), &bytes, 0o600).with_context(|| {
        format!(
            "cannot record the upgrade outcome in {}",
            state_dir.display()
        )
    })?;
    result.map(|()| outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_quote_the_error_lines() {
        let apt = "Reading package lists...\nE: Failed to fetch https://x/a.deb  Hash Sum mismatch\n   Hashes of expected file:\n    - SHA256:00\nE: Unable to fetch some archives\n";
        assert_eq!(
            error_lines(apt),
            "E: Failed to fetch https://x/a.deb  Hash Sum mismatch / E: Unable to fetch some archives"
        );
        assert_eq!(error_lines("a\nb\n\nc\n"), "a / b / c");
    }

    #[test]
    fn releases_come_from_the_package_revision() {
        assert_eq!(release_of("0.1.0-7"), Some(7));
        assert_eq!(release_of("1:0.1.0-12"), Some(12));
        assert_eq!(release_of("0.1.0"), None);
        assert_eq!(release_of("0.1.0-rc1"), None);
    }

    #[test]
    fn upgrades_start_when_behind_and_retry_after_a_pause() {
        let now = Utc::now();
        let never = LastAttempt::default();
        assert_eq!(
            decide(Some("0.1.0-3"), None, never, now),
            Decision::NotApplicable
        );
        assert_eq!(decide(None, Some(3), never, now), Decision::NotApplicable);
        assert_eq!(
            decide(Some("0.1.0-3"), Some(3), never, now),
            Decision::Current
        );
        assert_eq!(
            decide(Some("0.1.0-4"), Some(3), never, now),
            Decision::Current
        );
        assert_eq!(
            decide(Some("0.1.0-3"), Some(5), never, now),
            Decision::Start {
                installed: 3,
                latest: 5
            }
        );
        let recent = |target| LastAttempt {
            at: Some(now - chrono::Duration::minutes(2)),
            target: Some(target),
        };
        assert_eq!(
            decide(Some("0.1.0-3"), Some(5), recent(5), now),
            Decision::Waiting
        );
        // A newer release than the one that failed is tried at once.
        assert_eq!(
            decide(Some("0.1.0-3"), Some(6), recent(5), now),
            Decision::Start {
                installed: 3,
                latest: 6
            }
        );
        let old = LastAttempt {
            at: Some(now - chrono::Duration::minutes(11)),
            target: Some(5),
        };
        assert_eq!(
            decide(Some("0.1.0-3"), Some(5), old, now),
            Decision::Start {
                installed: 3,
                latest: 5
            }
        );
    }
}
