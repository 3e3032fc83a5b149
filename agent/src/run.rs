//! One `penguindome-agent run`, as the timer starts it every minute:
//! enroll if needed, ask for updates, collect when due, submit when due.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::facts::{self, Timestamp};
use penguindome_protocol::wire::{Problem, Report};

use crate::actions;
use crate::actions::journal::Leftover;
use crate::collectors::{self, Cache, Context, PluginSettings};
use crate::host::Host;
use crate::moved;
use crate::repo_access;
use crate::server_keys::ServerKeys;
use crate::server_trust;
use crate::session::{Authority, Delivery, Session, SessionError};
use crate::spool::{Spool, SpoolError};
use crate::state::{AgentState, LastError, StateDir};
use crate::transport::{Transport, TransportError};
use crate::upgrade;
use penguindome_protocol::actions::{Action, ActionReport, ActionState, ConfigureTask};
use penguindome_protocol::key_rotation::SignedKeyCertification;
use penguindome_protocol::sealing::SealingPolicy;
use penguindome_protocol::{PublicKey, SecretKey};

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
    /// Where the package managers' configuration lives (`/`; tests give
    /// another root).
    pub package_root: std::path::PathBuf,
    /// The move `config` reflects, if an administrator moved this agent.
    pub moved: Option<moved::Moved>,
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
    /// The server's certificate was refused: the URL and why.
    pub refused: Option<(String, String)>,
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
fn agent_facts(
    state_dir: &Path,
    host: &Host,
    state: &AgentState,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let last_upgrade = upgrade::last_outcome(state_dir).map(|o| facts::agent::UpgradeOutcome {
        finished_at: o.finished_at.map(Timestamp::from),
        package_manager: o.package_manager,
        from_version: o.from_version,
        to_version: o.to_version,
        error: o.error,
    });
    facts::to_value(&facts::agent::Agent {
        version: env!("CARGO_PKG_VERSION").to_string(),
        package_version: upgrade::installed_agent_version(host),
        latest_release: state.latest_release,
        upgrade: last_upgrade,
        certificate_refused: state.certificate_refused.clone().filter(|r| {
            (now - r.at.0)
                .to_std()
                .is_ok_and(|age| age < REFUSAL_REPORTED_FOR)
        }),
    })
}

/// The host name the report carries.
pub fn hostname() -> String {
    penguindome_protocol::files::host_name()
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
        facts_version: facts::FACTS_VERSION,
        plugins,
    })
}

impl RunOutcome {
    fn fail(&mut self, e: &SessionError, what: &str) {
        let msg = format!("{what}: {e}");
        if let SessionError::Transport(TransportError::Untrusted { url, message }) = e {
            self.refused = Some((url.clone(), message.clone()));
        }
        if e.is_offline() {
            log::warn!("{msg}");
            self.offline.push(msg);
        } else {
            log::error!("{msg}");
            self.errors.push(msg);
        }
    }
}

/// Asks the server for a new repository credential and writes it for each
/// package manager present; returns the files written.
pub fn fetch_repo_credential(
    session: &Session<'_>,
    host_name: &str,
    agent: &Agent,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let credential = session.repo_credential(host_name)?;
    Ok(repo_access::write(
        &agent.package_root,
        &repo_urls(agent),
        &credential,
    )?)
}

/// The repositories' address, and after a move the old one too.
fn repo_urls(agent: &Agent) -> Vec<String> {
    let repo = |base: &str| format!("{base}{}", penguindome_protocol::paths::REPO);
    let mut urls = vec![repo(agent.config.base_url())];
    if let Some(m) = &agent.moved {
        // The package's apt sources still name agent.toml's address.
        for old in [&m.from, &m.package_url] {
            let u = repo(old.trim_end_matches('/'));
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
    }
    urls
}

fn list_paths(files: &[std::path::PathBuf]) -> String {
    if files.is_empty() {
        return "no file (no apt, dnf or pacman here)".into();
    }
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long the agent reports a refused server certificate.
const REFUSAL_REPORTED_FOR: Duration = Duration::from_secs(7 * 86_400);

/// What every step of a run shares.
struct Step<'a> {
    agent: &'a Agent,
    key: &'a SecretKey,
    session: &'a Session<'a>,
    host_name: &'a str,
    now: DateTime<Utc>,
}

/// Performs one run: enroll once, ask the server for news, collect when
/// due, submit when due, and remember how it went.
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
    let trusting = server_trust::with_announced(config, agent.state.root());
    let transport = Transport::new(&trusting)?;
    let session = Session::new(config, &transport, &key, agent.machine_id.clone())?
        .trusting(ServerKeys::for_agent(config, agent.state.root())?);
    let host_name = hostname();
    let step = Step {
        agent,
        key: &key,
        session: &session,
        host_name: &host_name,
        now: Utc::now(),
    };
    let enrolled = step.enroll(&mut state, &mut outcome, key.fingerprint());
    if enrolled {
        // Outcomes a crash left unreported first, then today's actions,
        // then their outcomes.
        step.report_actions(&mut outcome);
        step.check_for_news(&mut state, &mut outcome);
        step.report_actions(&mut outcome);
    }
    // A collection that cannot be spooled (a full disk) must not keep the
    // reports already waiting from being sent, nor the state from being
    // saved.
    if let Err(e) = step.collect_when_due(&spool, &mut state, &mut outcome, opts) {
        let msg = format!("{e:#}");
        log::error!("{msg}");
        outcome.errors.push(msg);
    }
    if enrolled {
        step.submit_when_due(&spool, &mut state, &mut outcome, opts)?;
    }
    outcome.pending = spool.entries()?.len();
    remember(&mut state, &outcome, step.now);
    agent.state.save(&state)?;
    Ok(outcome)
}

impl Step<'_> {
    /// Enrolls this key with this server, once. Returns whether it is.
    fn enroll(&self, state: &mut AgentState, outcome: &mut RunOutcome, fingerprint: &str) -> bool {
        let server = self.agent.config.base_url();
        if state.enrolled_fingerprint.as_deref() == Some(fingerprint)
            && enrolled_here(self.agent, state)
        {
            state.enrolled_server = Some(server.to_string());
            return true;
        }
        let credential = &self.agent.config.enrollment_credential;
        if credential.is_empty() {
            let msg = format!(
                "this machine is not enrolled with {server}: run `penguindome-agent enroll {server} -` \
                 with a token from `pdome-admin tokens create` (the bootstrap does)"
            );
            log::error!("{msg}");
            outcome.errors.push(msg);
            return false;
        }
        match self
            .session
            .enroll(self.host_name, Authority::SiteCredential(credential))
        {
            Ok(r) => {
                log::info!(client_id:% = self.agent.machine_id; "enrolled with {server} as {} ({})", r.client_id, r.status);
                state.enrolled_fingerprint = Some(fingerprint.to_string());
                state.enrolled_server = Some(server.to_string());
                true
            }
            Err(e) => {
                outcome.fail(&e, "enrollment failed");
                false
            }
        }
    }

    /// Asks the server what to do; the answer is server-signed.
    fn check_for_news(&self, state: &mut AgentState, outcome: &mut RunOutcome) {
        let (u, signer) = match self.session.update(self.host_name) {
            Ok(a) => (a.update, a.signer),
            Err(e) => {
                if matches!(e, SessionError::NotEnrolled(_)) {
                    state.enrolled_fingerprint = None;
                }
                outcome.fail(&e, "update check failed");
                return;
            }
        };
        state.last_update_at = Some(self.now);
        let skew = (u.server_time - Utc::now()).num_seconds();
        state.clock_skew_seconds = Some(skew);
        if skew.abs() > SKEW_WARNING_SECONDS {
            log::warn!(
                "this machine's clock is {skew} s away from the server's; requests fail beyond 15 minutes"
            );
        }
        state.latest_release = u.latest_release;
        self.remember_server_keys(&u.server_keys, &signer, outcome);
        self.remember_certificates(&u.server_certificates, outcome);
        self.remember_sealing(u.sealing.as_ref(), outcome);
        self.refresh_repo_credential(u.needs_repo_credential, outcome);
        self.consider_upgrade(state, outcome, u.latest_release);
        if !u.actions.is_empty() {
            self.act(&u.actions, outcome);
        }
    }

    /// Keeps the server key certifications and the key that signed, so a
    /// rotation is followed and then the old key refused.
    fn remember_server_keys(
        &self,
        offered: &[SignedKeyCertification],
        signer: &PublicKey,
        outcome: &mut RunOutcome,
    ) {
        let keys = self.session.server_keys();
        match keys.remember(self.agent.state.root(), offered, signer) {
            Ok(true) => {
                let accepted: Vec<String> = keys
                    .accepted(offered)
                    .iter()
                    .map(|k| k.fingerprint().to_string())
                    .collect();
                log::info!(
                    "the server signs with key {}; accepting {}",
                    signer.fingerprint(),
                    accepted.join(" and ")
                );
            }
            Ok(false) => {}
            Err(e) => {
                log::error!("{e}");
                outcome.errors.push(e);
            }
        }
    }

    /// Keeps the certificates the server announced, for the next runs.
    fn remember_certificates(&self, pems: &[String], outcome: &mut RunOutcome) {
        match server_trust::remember(self.agent.state.root(), pems) {
            Ok(true) => log::info!(
                "the server announced {} certificate(s); trusting them from the next run on",
                pems.len()
            ),
            Ok(false) => {}
            Err(e) => {
                log::error!("{e}");
                outcome.errors.push(e);
            }
        }
    }

    /// Keeps what the server asks to seal, for this run's collection and
    /// the next ones.
    fn remember_sealing(&self, policy: Option<&SealingPolicy>, outcome: &mut RunOutcome) {
        match crate::sealing::remember(self.agent.state.root(), policy) {
            Ok(true) => match policy {
                Some(p) => log::info!(
                    "sealing {} with key {} from now on",
                    p.selectors.join(", "),
                    p.fingerprint
                ),
                None => log::info!("the server asks to seal nothing any more"),
            },
            Ok(false) => {}
            Err(e) => {
                log::error!("{e}");
                outcome.errors.push(e);
            }
        }
    }

    /// Fetches a new repository credential when the server holds none for
    /// this client (new, rotated) or a package manager's file is missing.
    fn refresh_repo_credential(&self, server_has_none: bool, outcome: &mut RunOutcome) {
        let root = &self.agent.package_root;
        let now = &repo_urls(self.agent)[0];
        if !server_has_none && !repo_access::missing(root, now) {
            return;
        }
        match fetch_repo_credential(self.session, self.host_name, self.agent) {
            Ok(files) => {
                log::info!(
                    "new repository credential written to {}",
                    list_paths(&files)
                );
            }
            Err(e) => {
                let msg = format!("cannot renew the repository credential: {e:#}");
                log::error!("{msg}");
                outcome.errors.push(msg);
            }
        }
    }

    /// The action runner of this client; `started` hears each action start.
    fn runner<'r>(
        &'r self,
        started: &'r dyn Fn(&ActionReport),
        mover: &'r dyn Fn(&str, &ConfigureTask) -> actions::exec::Outcome,
        shell: &'r dyn Fn(&Action) -> Result<Leftover, String>,
    ) -> std::io::Result<actions::Runner<'r>> {
        Ok(actions::Runner {
            journal: actions::journal::Journal::open(&self.agent.state.actions_dir())?,
            client_id: &self.agent.machine_id,
            patch_roots: self.agent.config.all_patch_roots(),
            executor: actions::exec::Executor::detect(),
            started,
            mover,
            shell,
        })
    }

    /// A `shell` action: its session starts in a process of its own.
    fn start_shell(&self, action: &Action) -> Result<Leftover, String> {
        let request = crate::shell::SessionRequest {
            action: action.clone(),
            config: self.agent.config.clone(),
            machine_id: self.agent.machine_id.clone(),
            key_path: self.agent.state.key_path(),
        };
        crate::shell::start(
            actions::exec::Executor::detect(),
            &self.agent.state.actions_dir(),
            &request,
        )
    }

    /// A `configure` action: one signed update at the new address with the
    /// new pin; only if it answers is the move recorded (next runs use it).
    fn try_move(&self, action_id: &str, task: &ConfigureTask) -> actions::exec::Outcome {
        use actions::exec::Outcome;
        let outcome = |state, detail: String| Outcome {
            state,
            detail,
            output: None,
        };
        let config = &self.agent.config;
        let candidate = match moved::candidate(config, task) {
            Ok(c) => c,
            Err(e) => return outcome(ActionState::Refused, e),
        };
        // The server's announced certificates count there too (a move right
        // after a renewal).
        let trusting = server_trust::with_announced(&candidate, self.agent.state.root());
        let tried = Transport::new(&trusting)
            .map_err(anyhow::Error::from)
            .and_then(|t| {
                let s = Session::new(&candidate, &t, self.key, self.agent.machine_id.clone())?
                    .trusting(self.session.server_keys().clone());
                s.update(self.host_name)?;
                Ok(())
            });
        if let Err(e) = tried {
            return outcome(
                ActionState::Failed,
                format!(
                    "kept {}: {} did not answer as this server: {e:#}",
                    config.server_url, candidate.server_url
                ),
            );
        }
        let record = moved::Moved {
            server_url: candidate.server_url.clone(),
            ca_certificate: candidate.ca_certificate.clone(),
            from: config.base_url().to_string(),
            package_url: self
                .agent
                .moved
                .as_ref()
                .map_or_else(|| config.server_url.clone(), |m| m.package_url.clone()),
            action_id: action_id.to_string(),
            moved_at: Utc::now(),
        };
        match moved::save(self.agent.state.root(), &record) {
            Ok(()) => outcome(
                ActionState::Succeeded,
                format!(
                    "now using {} (was {}); the repositories follow once a release carries the new address",
                    candidate.server_url, config.server_url
                ),
            ),
            Err(e) => outcome(
                ActionState::Failed,
                format!("kept {}: cannot record the move: {e}", config.server_url),
            ),
        }
    }

    /// Runs the actions of a verified answer.
    fn act(&self, list: &[penguindome_protocol::actions::SealedAction], outcome: &mut RunOutcome) {
        // Best effort: the final report follows from the journal anyway.
        let started = |report: &ActionReport| {
            if let Err(e) = self.session.report_action(report) {
                log::warn!(
                    "cannot tell the server action {} started: {e}",
                    report.action_id
                );
            }
        };
        let mover = |id: &str, task: &ConfigureTask| self.try_move(id, task);
        let shell = |action: &Action| self.start_shell(action);
        match self.runner(&started, &mover, &shell) {
            Ok(runner) => {
                runner.handle_all(list, Utc::now());
            }
            Err(e) => {
                let msg = format!("cannot open the action journal, so no action runs: {e}");
                log::error!("{msg}");
                outcome.errors.push(msg);
            }
        }
    }

    /// Tells the server how actions went, until it has stored each state;
    /// first marks those a crashed run left started as interrupted.
    fn report_actions(&self, outcome: &mut RunOutcome) {
        let dir = self.agent.state.actions_dir();
        let settle =
            |e: &actions::journal::Entry| crate::shell::settle(&dir, &e.id, e.leftover.as_ref());
        let pending = self.runner(&|_| {}, &actions::no_mover, &actions::no_shell).and_then(|r| {
            for id in r.journal.recover(&actions::exec::stop_leftover, &settle)? {
                log::warn!(action_id:% = id; "action {id} was cut short by a crash; reporting it as interrupted");
            }
            for e in r.journal.entries()? {
                if e.detached && e.state.is_final() {
                    crate::shell::forget(&dir, &e.id);
                }
            }
            r.journal.prune(self.now)?;
            Ok((r.journal.unreported()?, r))
        });
        let (pending, runner) = match pending {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("cannot read the action journal: {e}");
                log::error!("{msg}");
                outcome.errors.push(msg);
                return;
            }
        };
        for entry in pending {
            match self.session.report_action(&entry.report()) {
                Ok(known) => {
                    if !known {
                        log::warn!(action_id:% = entry.id; "the server does not know action {}; its outcome is kept here only", entry.id);
                    }
                    if let Err(e) = runner.journal.mark_reported(&entry.id, entry.state) {
                        log::error!("cannot update the action journal: {e}");
                    }
                }
                Err(e) => {
                    outcome.fail(&e, "reporting an action failed");
                    return;
                }
            }
        }
    }

    /// Starts the self-upgrade unit when a newer release is published.
    fn consider_upgrade(
        &self,
        state: &mut AgentState,
        outcome: &mut RunOutcome,
        latest: Option<u64>,
    ) {
        let installed = upgrade::installed_agent_version(&self.agent.host);
        let last = upgrade::LastAttempt {
            at: state.last_upgrade_attempt_at,
            target: state.last_upgrade_target,
        };
        match upgrade::decide(installed.as_deref(), latest, last, self.now) {
            upgrade::Decision::Start { installed, latest } => {
                log::info!(
                    "release {latest} is published and release {installed} is installed; starting {}",
                    upgrade::UPGRADE_UNIT
                );
                state.last_upgrade_attempt_at = Some(self.now);
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
    }

    /// Collects when due, and spools the report before anything is sent.
    fn collect_when_due(
        &self,
        spool: &Spool,
        state: &mut AgentState,
        outcome: &mut RunOutcome,
        opts: RunOptions,
    ) -> anyhow::Result<()> {
        let config = &self.agent.config;
        if !(opts.force_collect || is_due(state.last_collect_at, config.collect_interval, self.now))
        {
            return Ok(());
        }
        // A refusal this run saw is reported with this very collection.
        note_refusal(state, outcome, self.now);
        let policy = crate::sealing::load(self.agent.state.root(), &self.agent.package_root)?;
        let file_cache = self.agent.state.cache();
        let cache = crate::sealing::SealedCache::new(&file_cache, policy.as_ref());
        let settings = PluginSettings {
            dir: config.plugins_dir.clone(),
            timeout: config.plugin_timeout,
            collectors: config.collectors.clone(),
        };
        let mut report = collect_report(&self.agent.host, &cache, &settings, None)
            .context("collection failed")?;
        let own = agent_facts(self.agent.state.root(), &self.agent.host, state, self.now);
        report.plugins.insert("agent".into(), own);
        if let Some(policy) = &policy {
            self.seal(&mut report, policy)?;
        }
        spool.push(&report).context("cannot spool the report")?;
        if let Err(e) = file_cache.save() {
            log::warn!("cannot save the collector cache: {e}");
        }
        state.last_collect_at = Some(self.now);
        outcome.collected = true;
        log::info!(
            "collected {} plugins into report {}",
            report.plugins.len(),
            report.report_id
        );
        Ok(())
    }

    /// Seals what the site's policy selects. A policy that cannot be
    /// applied stops the collection: nothing selected is spooled in the
    /// clear.
    fn seal(&self, report: &mut Report, policy: &SealingPolicy) -> anyhow::Result<()> {
        let n = crate::sealing::seal(report, policy, self.key)
            .context("cannot seal the report's selected fields; it was not spooled")?;
        if n > 0 {
            log::debug!("sealed {n} values of report {}", report.report_id);
        }
        Ok(())
    }

    /// Submits when due: oldest first, stopping at the first failure.
    fn submit_when_due(
        &self,
        spool: &Spool,
        state: &mut AgentState,
        outcome: &mut RunOutcome,
        opts: RunOptions,
    ) -> anyhow::Result<()> {
        let pending = spool.entries()?;
        let due = outcome.collected
            || opts.force_submit
            || is_due(
                state.last_submit_attempt_at,
                self.agent.config.submit_interval,
                self.now,
            );
        if pending.is_empty() || !due {
            return Ok(());
        }
        state.last_submit_attempt_at = Some(self.now);
        for entry in &pending {
            if !self.submit_one(spool, entry, state, outcome)? {
                break;
            }
        }
        if outcome.delivered > 0 {
            log::info!("delivered {} reports", outcome.delivered);
        }
        Ok(())
    }

    /// Sends one spooled report. Returns whether to go on with the next.
    fn submit_one(
        &self,
        spool: &Spool,
        entry: &crate::spool::Entry,
        state: &mut AgentState,
        outcome: &mut RunOutcome,
    ) -> anyhow::Result<bool> {
        let report = match spool.read(entry) {
            Ok(r) => r,
            Err(SpoolError::Corrupt { path, message }) => {
                let moved = spool.reject(entry)?;
                log::error!(
                    "spool file {} is damaged ({message}); moved to {}",
                    path.display(),
                    moved.display()
                );
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        match self.session.submit(&report) {
            Ok(Delivery::Delivered(problems)) => {
                spool.remove(entry)?;
                state.last_submit_at = Some(Utc::now());
                outcome.delivered += 1;
                tell_problems(state, problems, &report);
                Ok(true)
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
                Ok(true)
            }
            Err(e) => {
                if matches!(e, SessionError::NotEnrolled(_)) {
                    state.enrolled_fingerprint = None;
                }
                outcome.fail(&e, "submission failed");
                Ok(false)
            }
        }
    }
}

/// Logs what the server's checks find wrong with the newest delivered
/// report, and keeps it for `status`.
fn tell_problems(state: &mut AgentState, problems: Vec<Problem>, report: &Report) {
    if state
        .problems_as_of
        .is_some_and(|t| t > report.collected_at)
    {
        return;
    }
    for p in &problems {
        log::warn!(check = p.check.as_str(); "the server finds a problem on this machine: {}: {}", p.check, p.detail);
    }
    state.problems_as_of = Some(report.collected_at);
    state.problems = problems;
}

/// Keeps a certificate refusal this run met, for the reports to carry.
fn note_refusal(state: &mut AgentState, outcome: &RunOutcome, now: DateTime<Utc>) {
    if let Some((url, error)) = &outcome.refused {
        state.certificate_refused = Some(facts::agent::CertificateRefusal {
            at: Timestamp::from(now),
            url: url.clone(),
            error: error.clone(),
        });
    }
}

/// Records the run's last failure (and any certificate refusal).
fn remember(state: &mut AgentState, outcome: &RunOutcome, now: DateTime<Utc>) {
    note_refusal(state, outcome, now);
    state.last_error = outcome
        .errors
        .iter()
        .chain(outcome.offline.iter())
        .last()
        .map(|m| LastError {
            at: Utc::now(),
            message: m.clone(),
        });
}

/// What `status` shows.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// Machine id.
    pub client_id: String,
    /// Server URL.
    pub server_url: String,
    /// The administrator's move that set it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved: Option<moved::Moved>,
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

/// Whether the state's enrollment is with the server this agent uses: at
/// its address, or at the one an administrator's move left (the same
/// server, elsewhere).
fn enrolled_here(agent: &Agent, state: &AgentState) -> bool {
    let Some(enrolled) = state.enrolled_server.as_deref() else {
        return false;
    };
    enrolled == agent.config.base_url() || agent.moved.as_ref().is_some_and(|m| m.from == enrolled)
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
        && enrolled_here(agent, &state);
    let spool = Spool::inspect(&agent.state.spool_dir(), agent.config.spool_max_bytes);
    let (spool_reports, spool_bytes) = spool.usage().unwrap_or((0, 0));
    Ok(Status {
        client_id: agent.machine_id.clone(),
        server_url: agent.config.base_url().to_string(),
        moved: agent.moved.clone(),
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
    fn agent_facts_carry_the_last_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::fixture(dir.path(), vec![]);
        let state = AgentState {
            latest_release: Some(7),
            ..Default::default()
        };
        let read = |v: &serde_json::Value| -> facts::agent::Agent {
            facts::read(Some(v), facts::FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}"))
        };
        let never = agent_facts(dir.path(), &host, &state, Utc::now());
        assert_eq!(never["upgrade"], serde_json::Value::Null, "{never}");
        assert_eq!(read(&never).latest_release, Some(7));

        let finished = Utc::now();
        let outcome = upgrade::UpgradeOutcome {
            finished_at: Some(finished),
            package_manager: Some("apt".into()),
            from_version: Some("0.1.0-6".into()),
            to_version: None,
            error: Some("apt-get exited with status 100".into()),
        };
        std::fs::write(
            dir.path().join("upgrade.json"),
            serde_json::to_vec(&outcome).unwrap(),
        )
        .unwrap();
        let facts = read(&agent_facts(dir.path(), &host, &state, Utc::now()));
        assert_eq!(
            facts,
            facts::agent::Agent {
                version: env!("CARGO_PKG_VERSION").into(),
                package_version: None,
                latest_release: Some(7),
                upgrade: Some(facts::agent::UpgradeOutcome {
                    finished_at: Some(Timestamp::from(finished)),
                    package_manager: Some("apt".into()),
                    from_version: Some("0.1.0-6".into()),
                    to_version: None,
                    error: Some("apt-get exited with status 100".into()),
                }),
                certificate_refused: None,
            }
        );
    }

    #[test]
    fn a_refused_certificate_is_reported_for_a_week() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::fixture(dir.path(), vec![]);
        let now = Utc::now();
        let mut state = AgentState::default();
        let outcome = RunOutcome {
            refused: Some(("https://pd.example.com".into(), "UnknownIssuer".into())),
            ..Default::default()
        };
        remember(&mut state, &outcome, now);
        let read = |at| -> facts::agent::Agent {
            facts::read(
                Some(&agent_facts(dir.path(), &host, &state, at)),
                facts::FACTS_VERSION,
            )
            .unwrap()
        };
        let refusal = read(now).certificate_refused.unwrap();
        assert_eq!(refusal.error, "UnknownIssuer");
        assert_eq!(refusal.at, Timestamp::from(now));
        let later = now + chrono::Duration::days(8);
        assert_eq!(read(later).certificate_refused, None);
    }

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
