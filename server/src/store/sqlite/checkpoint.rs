//! The checkpointer thread: copies the WAL into the database so that the
//! writer's commits never pay for it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::backend_err;
use crate::store::{StoreError, StoreResult};

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Copies the WAL into the database on its own thread and connection, so
/// that the writer's commits never pay for a checkpoint. It publishes the
/// WAL's length; the writer restarts the WAL between batches when it is long
/// (by then nearly every frame is already copied, so that is quick).
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    pub(super) fn start(
        path: &Path,
        wal_frames: Arc<std::sync::atomic::AtomicI64>,
    ) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(backend_err)?;
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().expect("checkpointer lock");
                loop {
                    stopped = cv
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .expect("checkpointer lock")
                        .0;
                    if *stopped {
                        break;
                    }
                    let frames: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        });
                    match frames {
                        Ok((_, log, _)) => {
                            wal_frames.store(log, std::sync::atomic::Ordering::Relaxed)
                        }
                        Err(e) => log::warn!("checkpoint failed: {e}"),
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { stop, handle })
    }

    pub(super) fn stop(self) {
        *self.stop.0.lock().expect("checkpointer lock") = true;
        self.stop.1.notify_all();
        let _ = self.handle.join();
    }
}
