//! One `penguindome-agent run`, as the timer starts it every minute:
//! enroll if needed, ask for updates, collect when due, submit when due.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::Report;

use crate::collectors::{self, Cache, Context, PluginSettings};
use crate::host::Host;
use crate::session::{Delivery, Session, SessionError};
use crate::spool::{Spool, SpoolError};
use crate::state::{AgentState, LastError, StateDir};
use crate::transport::Transport;
use crate::upgrade;

/// Runs are started every minute give or take the timer's random delay, so
/// a stamp counts as due slightly before its interval has fully passed.
const DUE_SLACK: Duration = Duration::from_secs(30);
/// Clock skew worth a warning.
const SKEW_WARNING_SECONDS: i64 = 120;

/// Everything a run needs.
pub struct Agent {
    /// agent.toml.
    pub config: AgentConfig,
    /// The state directory.
    pub state: StateDir,
    /// This machine's id.
    pub machine_id: String,
    /// The machine collectors look at.
    pub host: Host,
}

/// Options of `run`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions {
    /// Collect even if the collect interval has not passed.
    pub force_collect: bool,
    /// Submit even if the submit interval has not passed.
    pub force_submit: bool,
}

/// How a run went.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Another run held the lock; nothing was done.
    pub skipped: bool,
    /// A report was collected and spooled.
    pub collected: bool,
    /// Reports delivered.
    pub delivered: usize,
    /// Reports still waiting.
    pub pending: usize,
    /// Failures that are the agent's or the server's problem.
    pub errors: Vec<String>,
    /// Failures to reach the server (expected on an offline laptop).
    pub offline: Vec<String>,
}

fn is_due(last: Option<DateTime<Utc>>, interval: Duration, now: DateTime<Utc>) -> bool {
    let Some(last) = last else { return true };
    let wait = interval.saturating_sub(DUE_SLACK.min(interval / 4));
    match (now - last).to_std() {
        Ok(elapsed) => elapsed >= wait,
        // The clock went backwards: collect rather than wait for it.
        Err(_) => true,
    }
}

/// The agent's own facts: its version, the installed package, the newest
/// release and how the last self-upgrade went, so failures reach the server.
fn agent_facts(agent: &Agent, state: &AgentState) -> serde_json::Value {
    let outcome = upgrade::last_outcome(agent.state.root());
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "package_version": upgrade::installed_agent_version(&agent.host),
        "latest_release": state.latest_release,
        "upgrade": outcome.map(|o| serde_json::json!({
            "finished_at": o.finished_at.map(|t| penguindome_protocol::envelope::utc::format(&t)),
            "package_manager": o.package_manager,
            "from_version": o.from_version,
            "to_version": o.to_version,
            "error": o.error,
        })),
    })
}

/// The host name the report carries.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One line of resource figures for `collect --stats` (benchmarks).
pub fn collect_stats(started: std::time::Instant) -> String {
    use nix::sys::resource::{UsageWho, getrusage};
    let cpu_ms = |who| {
        getrusage(who)
            .map(|u| {
                let t = |tv: nix::sys::time::TimeVal| {
                    tv.tv_sec() as f64 * 1e3 + tv.tv_usec() as f64 / 1e3
                };
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or(0.0)
    };
    let peak_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "collect stats: wall_ms={:.1} cpu_ms={:.1} peak_rss_kb={peak_kb} programs_spawned={}",
        started.elapsed().as_secs_f64() * 1e3,
        cpu_ms(UsageWho::RUSAGE_SELF) + cpu_ms(UsageWho::RUSAGE_CHILDREN),
        crate::host::programs_spawned(),
    )
}

/// Runs the collectors and builds a report.
pub fn collect_report(
    host: &Host,
    cache: &dyn Cache,
    plugins: &PluginSettings,
    only: Option<&str>,
) -> Result<Report, collectors::CollectError> {
    let ctx = Context::new(host, cache).with_settings(&plugins.collectors);
    let plugins = collectors::collect_all(&ctx, plugins, only)?;
    Ok(Report {
        report_id: new_nonce(),
        hostname: hostname(),
        collected_at: Utc::now(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        plugins,
    })
}

impl RunOutcome {
    fn fail(&mut self, e: &SessionError, what: &str) {
        let msg = format!("{what}: {e}");
        if e.is_offline() {
            log::warn!("{msg}");
            self.offline.push(msg);
        } else {
            log::error!("{msg}");
            self.errors.push(msg);
        }
    }
}

/// Performs one run.
pub fn run(agent: &Agent, opts: RunOptions) -> anyhow::Result<RunOutcome> {
    let mut outcome = RunOutcome::default();
    let Some(_lock) = agent.state.try_lock()? else {
        log::info!("another penguindome-agent run is in progress; skipping this one");
        outcome.skipped = true;
        return Ok(outcome);
    };
    let config = &agent.config;
    let mut state = agent.state.load();
    let spool = Spool::open(&agent.state.spool_dir(), config.spool_max_bytes)?;
    let key = agent.state.load_or_create_key(&agent.machine_id)?;
    let transport = Transport::new(config)?;
    let session = Session::new(config, &transport, &key, agent.machine_id.clone())?;
    let host_name = hostname();
    let now = Utc::now();

    // 1. Enrollment, once per key and server.
    let mut enrolled = state.enrolled_fingerprint.as_deref() == Some(key.fingerprint())
        && state.enrolled_server.as_deref() == Some(config.base_url());
    if !enrolled {
        match session.enroll(&host_name, &config.enrollment_credential) {
            Ok(r) => {
                log::info!(client_id:% = agent.machine_id; "enrolled with {} as {} ({})", config.base_url(), r.client_id, r.status);
                state.enrolled_fingerprint = Some(key.fingerprint().to_string());
                state.enrolled_server = Some(config.base_url().to_string());
                enrolled = true;
            }
            Err(e) => outcome.fail(&e, "enrollment failed"),
        }
    }

    // 2. Ask the server what to do; the answer is server-signed.
    if enrolled {
        match session.update(&host_name) {
            Ok(u) => {
                state.last_update_at = Some(now);
                let skew = (u.server_time - Utc::now()).num_seconds();
                state.clock_skew_seconds = Some(skew);
                if skew.abs() > SKEW_WARNING_SECONDS {
                    log::warn!(
                        "this machine's clock is {skew} s away from the server's; requests fail beyond 15 minutes"
                    );
                }
                state.latest_release = u.latest_release;
                let installed = upgrade::installed_agent_version(&agent.host);
                match upgrade::decide(
                    installed.as_deref(),
                    u.latest_release,
                    upgrade::LastAttempt {
                        at: state.last_upgrade_attempt_at,
                        target: state.last_upgrade_target,
                    },
                    now,
                ) {
                    upgrade::Decision::Start { installed, latest } => {
                        log::info!(
                            "release {latest} is published and release {installed} is installed; starting {}",
                            upgrade::UPGRADE_UNIT
                        );
                        state.last_upgrade_attempt_at = Some(now);
                        state.last_upgrade_target = Some(latest);
                        if let Err(e) = upgrade::start_unit() {
                            let msg = format!("cannot start the upgrade: {e:#}");
                            log::error!("{msg}");
                            outcome.errors.push(msg);
                        }
                    }
                    upgrade::Decision::Waiting => {
                        log::info!("an upgrade started recently; waiting before trying again")
                    }
                    upgrade::Decision::Current | upgrade::Decision::NotApplicable => {}
                }
                if !u.patches.is_empty() {
                    log::info!(
                        "{} patches are queued; this agent version does not apply patches yet",
                        u.patches.len()
                    );
                }
            }
            Err(e) => {
                if matches!(e, SessionError::NotEnrolled(_)) {
                    state.enrolled_fingerprint = None;
                }
                outcome.fail(&e, "update check failed");
            }
        }
    }

    // 3. Collect when due, and spool before anything is sent.
    if opts.force_collect || is_due(state.last_collect_at, config.collect_interval, now) {
        let cache = agent.state.cache();
        let settings = PluginSettings {
            dir: config.plugins_dir.clone(),
            timeout: config.plugin_timeout,
            collectors: config.collectors.clone(),
        };
        let mut report =
            collect_report(&agent.host, &cache, &settings, None).context("collection failed")?;
        report
            .plugins
            .insert("agent".into(), agent_facts(agent, &state));
        spool.push(&report).context("cannot spool the report")?;
        if let Err(e) = cache.save() {
            log::warn!("cannot save the collector cache: {e}");
        }
        state.last_collect_at = Some(now);
        outcome.collected = true;
        log::info!(
            "collected {} plugins into report {}",
            report.plugins.len(),
            report.report_id
        );
    }

    // 4. Submit when due: oldest first, stopping at the first failure.
    let pending = spool.entries()?;
    let submit_due = outcome.collected
        || opts.force_submit
        || is_due(state.last_submit_attempt_at, config.submit_interval, now);
    if enrolled && !pending.is_empty() && submit_due {
        state.last_submit_attempt_at = Some(now);
        for entry in &pending {
            let report = match spool.read(entry) {
                Ok(r) => r,
                Err(SpoolError::Corrupt { path, message }) => {
                    let moved = spool.reject(entry)?;
                    log::error!(
                        "spool file {} is damaged ({message}); moved to {}",
                        path.display(),
                        moved.display()
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match session.submit(&report) {
                Ok(Delivery::Delivered) => {
                    spool.remove(entry)?;
                    state.last_submit_at = Some(Utc::now());
                    outcome.delivered += 1;
                }
                Ok(Delivery::Rejected(why)) => {
                    let moved = spool.reject(entry)?;
                    let msg = format!(
                        "the server rejected report {} ({why}); moved it to {}",
                        report.report_id,
                        moved.display()
                    );
                    log::error!("{msg}");
                    outcome.errors.push(msg);
                }
                Err(e) => {
                    if matches!(e, SessionError::NotEnrolled(_)) {
                        state.enrolled_fingerprint = None;
                    }
                    outcome.fail(&e, "submission failed");
                    break;
                }
            }
        }
        if outcome.delivered > 0 {
            log::info!("delivered {} reports", outcome.delivered);
        }
    }
    outcome.pending = spool.entries()?.len();

    state.last_error = outcome
        .errors
        .iter()
        .chain(outcome.offline.iter())
        .last()
        .map(|m| LastError {
            at: Utc::now(),
            message: m.clone(),
        });
    agent.state.save(&state)?;
    Ok(outcome)
}

/// What `status` shows.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// Machine id.
    pub client_id: String,
    /// Server URL.
    pub server_url: String,
    /// Key fingerprint, if a key exists.
    pub key_fingerprint: Option<String>,
    /// True when enrolled with this key and server.
    pub enrolled: bool,
    /// Reports waiting.
    pub spool_reports: usize,
    /// Their size.
    pub spool_bytes: u64,
    /// The remembered state.
    #[serde(flatten)]
    pub state: AgentState,
}

/// Reads the status without changing anything.
pub fn status(agent: &Agent) -> anyhow::Result<Status> {
    let state = agent.state.load();
    let key_fingerprint = std::fs::read(agent.state.key_path())
        .ok()
        .and_then(|b| penguindome_protocol::SecretKey::from_bytes(&b).ok())
        .map(|k| k.fingerprint().to_string());
    let enrolled = key_fingerprint.is_some()
        && state.enrolled_fingerprint == key_fingerprint
        && state.enrolled_server.as_deref() == Some(agent.config.base_url());
    let (spool_reports, spool_bytes) =
        match Spool::open(&agent.state.spool_dir(), agent.config.spool_max_bytes) {
            Ok(s) => s.usage()?,
            Err(_) => (0, 0),
        };
    Ok(Status {
        client_id: agent.machine_id.clone(),
        server_url: agent.config.base_url().to_string(),
        key_fingerprint,
        enrolled,
        spool_reports,
        spool_bytes,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_rules() {
        let now = Utc::now();
        let five = Duration::from_secs(300);
        assert!(is_due(None, five, now));
        assert!(!is_due(
            Some(now - chrono::Duration::seconds(200)),
            five,
            now
        ));
        assert!(is_due(
            Some(now - chrono::Duration::seconds(275)),
            five,
            now
        ));
        assert!(is_due(
            Some(now + chrono::Duration::seconds(600)),
            five,
            now
        ));
        let one = Duration::from_secs(60);
        assert!(is_due(Some(now - chrono::Duration::seconds(46)), one, now));
        assert!(!is_due(Some(now - chrono::Duration::seconds(40)), one, now));
    }
}
