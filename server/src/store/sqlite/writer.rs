//! The writer thread: every write is a job in its queue; it runs each job
//! of a batch in its own savepoint of one transaction, commits once, then
//! answers them all.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use penguindome_protocol::actions::ActionReport;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::audit::Lease;
use super::nonces::{NonceLog, Nonces};
use super::{actions, admin, audit, backend_err, enroll, migration, request, submit, tokens, ts};
use crate::store::{
    Delivered, EnrollOutcome, Enrollment, Issue, NewAction, Parameter, Record, RequestMeta,
    StoreError, StoreResult, Submission, SubmitOutcome,
};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;
/// WAL length (frames of one page) past which the writer restarts the WAL
/// from its beginning. Under constant writes a passive checkpoint never lets
/// the WAL restart on its own, and a long WAL makes page lookups slower.
const WAL_FRAMES_LIMIT: i64 = 16_384;

/// Where a job's answer goes.
pub(super) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// A write that answers its caller itself: given the connection it runs,
/// given the database's refusal it answers with that.
pub(super) type WriteFn = Box<
    dyn for<'a, 'b> FnOnce(
            Result<(&'a Connection, &'a mut NonceLog<'b>), &'a str>,
        ) -> (Finisher, bool)
        + Send,
>;

/// Wraps a write on the connection as a [`Job::Write`] answering `reply`.
pub(super) fn write_job<T: Send + 'static>(
    reply: Reply<T>,
    f: impl FnOnce(&Connection, &mut NonceLog<'_>) -> StoreResult<T> + Send + 'static,
) -> Job {
    Job::Write(Box::new(move |conn| match conn {
        Ok((c, n)) => finisher(reply, f(c, n)),
        Err(msg) => finisher(
            reply,
            Err(StoreError::Backend(format!(
                "the database refused the write: {msg}"
            ))),
        ),
    }))
}

/// A write for the writer thread, with where its answer goes.
pub(super) enum Job {
    Enroll(Enrollment, Reply<EnrollOutcome>),
    Touch(RequestMeta, Reply<()>),
    Submit(Box<Submission>, Reply<SubmitOutcome>),
    AddAction(Box<NewAction>, Reply<()>),
    Deliver(RequestMeta, DateTime<Utc>, Reply<Delivered>),
    ReportAction(RequestMeta, ActionReport, Reply<()>),
    CancelAction(String, String, DateTime<Utc>, Reply<Vec<String>>),
    Revoke(String, DateTime<Utc>, Reply<bool>),
    AllowReenroll(String, Reply<()>),
    PruneNonces(DateTime<Utc>, Reply<u64>),
    Import(Vec<Record>, Reply<()>),
    PutIssues(Vec<Issue>, Reply<()>),
    PutParameter(Parameter, Reply<()>),
    TakeLease(Lease, Reply<bool>),
    ReleaseLease(String, String, Reply<()>),
    Clear(Reply<()>),
    /// A small real write, to learn whether the writer still commits.
    Probe(Reply<()>),
    /// A write without a variant of its own; see [`WriteFn`].
    Write(WriteFn),
    /// Ends the writer thread as a crash would (tests).
    #[cfg(test)]
    Crash,
    Shutdown(oneshot::Sender<()>),
}

/// The result of the writer's latest commit, for health checks.
#[derive(Default)]
pub(super) struct WriterHealth {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl WriterHealth {
    /// Notes a commit's result.
    pub(super) fn record(&self, result: Result<(), String>) {
        *self.last.lock().expect("writer health lock") = Some((Instant::now(), result));
    }

    /// The latest commit's result, if it is younger than `age`.
    pub(super) fn recent(&self, age: std::time::Duration) -> Option<Result<(), String>> {
        let last = self.last.lock().expect("writer health lock");
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < age)
            .map(|(_, r)| r.clone())
    }
}

/// Answers one job after the batch's commit (or its failure).
pub(super) type Finisher = Box<dyn FnOnce(Option<&str>) + Send>;

fn finisher<T: Send + 'static>(reply: Reply<T>, result: StoreResult<T>) -> (Finisher, bool) {
    let ok = result.is_ok();
    let f = Box::new(move |commit_error: Option<&str>| {
        let result = match (result, commit_error) {
            (Ok(_), Some(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
            (r, _) => r,
        };
        let _ = reply.send(result);
    });
    (f, ok)
}

/// Batch statistics, logged at debug level every ten seconds of activity.
struct WriterStats {
    since: Instant,
    jobs: usize,
    batches: usize,
    execute: std::time::Duration,
    commit: std::time::Duration,
}

impl WriterStats {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            jobs: 0,
            batches: 0,
            execute: Default::default(),
            commit: Default::default(),
        }
    }

    fn record(&mut self, jobs: usize, execute: std::time::Duration, commit: std::time::Duration) {
        self.jobs += jobs;
        self.batches += 1;
        self.execute += execute;
        self.commit += commit;
        if self.since.elapsed() >= std::time::Duration::from_secs(10) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.jobs > 0 {
            log::debug!(
                "store writer: {} jobs in {} batches ({:.1} per batch), {:.0} µs executing per job, {:.2} ms per commit",
                self.jobs,
                self.batches,
                self.jobs as f64 / self.batches as f64,
                self.execute.as_secs_f64() * 1e6 / self.jobs.max(1) as f64,
                self.commit.as_secs_f64() * 1e3 / self.batches as f64
            );
        }
        *self = Self::new();
    }
}

/// The writer thread's own state: its connection and the seen nonces.
struct Writer {
    conn: Connection,
    nonces: Nonces,
}

/// The writer thread: batches jobs, commits, answers, until shut down.
pub(super) fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    wal_frames: Arc<std::sync::atomic::AtomicI64>,
    health: &WriterHealth,
) {
    let nonces = match Nonces::load(&conn, Utc::now().timestamp()) {
        Ok(n) => n,
        Err(e) => {
            log::error!("cannot load the seen nonces: {e}; refusing writes");
            // Answer every job with the error rather than accept replays.
            while let Some(job) = rx.blocking_recv() {
                match job {
                    Job::Shutdown(done) => {
                        let _ = done.send(());
                        break;
                    }
                    job => fail_job(job, &e.to_string())(None),
                }
            }
            return;
        }
    };
    let mut w = Writer { conn, nonces };
    let mut stats = WriterStats::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut shutdown = None;
        let mut finishers: Vec<Finisher> = Vec::with_capacity(batch.len());
        let mut added: Vec<u128> = Vec::new();
        let mut executed = started;
        let commit_error = match w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(txn) => {
                for job in batch.drain(..) {
                    match job {
                        Job::Shutdown(done) => shutdown = Some(done),
                        #[cfg(test)]
                        Job::Crash => panic!("the writer crashes (test)"),
                        job => {
                            finishers.push(run_in_savepoint(&txn, &mut w.nonces, &mut added, job))
                        }
                    }
                }
                executed = Instant::now();
                txn.commit().err().map(|e| e.to_string())
            }
            Err(e) => {
                let msg = e.to_string();
                for job in batch.drain(..) {
                    match job {
                        Job::Shutdown(done) => shutdown = Some(done),
                        job => finishers.push(fail_job(job, &msg)),
                    }
                }
                Some(msg)
            }
        };
        if let Some(e) = &commit_error {
            log::error!(
                "SQLite commit failed, {} requests not stored: {e}",
                finishers.len()
            );
            // Their nonces were not stored either.
            w.nonces.forget(&added);
        }
        health.record(commit_error.clone().map_or(Ok(()), Err));
        stats.record(finishers.len(), executed - started, executed.elapsed());
        crate::metrics::global().store_batch("sqlite", finishers.len(), started.elapsed());
        for f in finishers {
            f(commit_error.as_deref());
        }
        if wal_frames.load(std::sync::atomic::Ordering::Relaxed) > WAL_FRAMES_LIMIT {
            wal_frames.store(0, std::sync::atomic::Ordering::Relaxed);
            match w
                .conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
            {
                Ok(0) => log::debug!("restarted the WAL"),
                Ok(_) => log::debug!("the WAL could not restart yet: readers are busy"),
                Err(e) => log::warn!("cannot restart the WAL: {e}"),
            }
        }
        if let Some(done) = shutdown {
            let _ = done.send(());
            break;
        }
    }
    stats.flush();
    // Leave a small WAL behind for the next start.
    let _ = w.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

fn fail_job(job: Job, msg: &str) -> Finisher {
    fn fail<T: Send + 'static>(r: Reply<T>, msg: &str) -> Finisher {
        finisher(
            r,
            Err(StoreError::Backend(format!(
                "the database refused the write: {msg}"
            ))),
        )
        .0
    }
    match job {
        Job::Enroll(_, r) => fail(r, msg),
        Job::Touch(_, r) => fail(r, msg),
        Job::Submit(_, r) => fail(r, msg),
        Job::AddAction(_, r) => fail(r, msg),
        Job::Deliver(_, _, r) => fail(r, msg),
        Job::ReportAction(_, _, r) => fail(r, msg),
        Job::CancelAction(_, _, _, r) => fail(r, msg),
        Job::Revoke(_, _, r) => fail(r, msg),
        Job::AllowReenroll(_, r) => fail(r, msg),
        Job::PruneNonces(_, r) => fail(r, msg),
        Job::Import(_, r) => fail(r, msg),
        Job::PutIssues(_, r) => fail(r, msg),
        Job::PutParameter(_, r) => fail(r, msg),
        Job::TakeLease(_, r) => fail(r, msg),
        Job::ReleaseLease(_, _, r) => fail(r, msg),
        Job::Clear(r) => fail(r, msg),
        Job::Probe(r) => fail(r, msg),
        Job::Write(f) => f(Err(msg)).0,
        #[cfg(test)]
        Job::Crash => Box::new(|_| {}),
        Job::Shutdown(_) => Box::new(|_| {}),
    }
}

/// Runs one job inside a savepoint of the batch's transaction, so that a
/// refused job leaves nothing behind. The savepoint statements are prepared
/// once and reused: this runs for every request.
fn run_in_savepoint(
    conn: &Connection,
    nonces: &mut Nonces,
    added: &mut Vec<u128>,
    job: Job,
) -> Finisher {
    let exec = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(|_| ())
    };
    if let Err(e) = exec("SAVEPOINT job") {
        return fail_job(job, &e.to_string());
    }
    let mut n = NonceLog { nonces, added };
    let (finish, ok) = match job {
        Job::Enroll(e, r) => finisher(r, enroll::enroll(conn, &mut n, &e)),
        Job::Touch(m, r) => finisher(r, request::touch(conn, &mut n, &m)),
        Job::Submit(s, r) => finisher(r, submit::submit(conn, &mut n, &s)),
        Job::AddAction(a, r) => finisher(r, actions::add(conn, &a)),
        Job::Deliver(m, now, r) => finisher(
            r,
            request::touch(conn, &mut n, &m).and_then(|()| deliver(conn, &m.client_id, &now)),
        ),
        Job::ReportAction(m, rep, r) => finisher(r, actions::report(conn, &mut n, &m, &rep)),
        Job::CancelAction(id, by, at, r) => finisher(r, actions::cancel(conn, &id, &by, &at)),
        Job::Revoke(id, at, r) => finisher(r, admin::revoke(conn, &id, &at)),
        Job::AllowReenroll(id, r) => finisher(r, admin::allow_reenroll(conn, &id)),
        Job::PruneNonces(now, r) => finisher(r, request::prune(conn, n.nonces, &now)),
        Job::Import(records, r) => finisher(r, migration::import(conn, &mut n, &records)),
        Job::PutIssues(issues, r) => finisher(r, audit::put_issues(conn, &issues)),
        Job::PutParameter(p, r) => finisher(r, admin::put_parameter(conn, &p)),
        Job::TakeLease(l, r) => finisher(r, audit::take_lease(conn, &l)),
        Job::ReleaseLease(name, holder, r) => {
            finisher(r, audit::release_lease(conn, &name, &holder))
        }
        Job::Clear(r) => finisher(r, migration::clear(conn, n.nonces)),
        Job::Probe(r) => finisher(r, probe(conn)),
        Job::Write(f) => f(Ok((conn, &mut n))),
        #[cfg(test)]
        Job::Crash => unreachable!("handled by the writer loop"),
        Job::Shutdown(_) => unreachable!("handled by the writer loop"),
    };
    let end = if ok {
        exec("RELEASE job")
    } else {
        exec("ROLLBACK TO job").and_then(|_| exec("RELEASE job"))
    };
    if let Err(e) = end {
        // The batch's commit reports the failure to every job in it.
        log::error!("cannot end a savepoint: {e}");
    }
    finish
}

/// Writes one row that nothing reads, so that the batch's commit really
/// touches the disk.
fn probe(conn: &Connection) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO leases (name, holder, until) VALUES ('health-probe', '', ?1) \
         ON CONFLICT (name) DO UPDATE SET until = excluded.until",
    )
    .and_then(|mut st| st.execute([ts(&Utc::now())]))
    .map(|_| ())
    .map_err(backend_err)
}

/// An update request's answer, read inside its write.
fn deliver(conn: &Connection, client_id: &str, now: &DateTime<Utc>) -> StoreResult<Delivered> {
    Ok(Delivered {
        actions: actions::deliver(conn, client_id, now)?,
        needs_repo_credential: tokens::repo_credential(conn, client_id)
            .map_err(backend_err)?
            .is_none(),
    })
}
