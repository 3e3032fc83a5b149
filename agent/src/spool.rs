//! The spool: collected reports waiting to be submitted.
//!
//! Each report is one file, written to a temporary name, fsynced, renamed
//! into place and the directory fsynced, so a crash at any moment leaves
//! either no file or a whole one. Names sort by collection time, so the
//! oldest is sent first. A file is removed only after the server answered
//! 200. The total size is bounded; past it the oldest reports are dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::Report;

const TMP_PREFIX: &str = ".tmp-";
const REJECTED_DIR: &str = "rejected";

/// Errors reading a spooled report.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Filesystem trouble.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a report (disk damage, or written by something else).
    #[error("spool file {path} is not a report: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One spooled report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// The steps of writing one report, for crash tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The temporary file exists, empty.
    Created,
    /// Its bytes are written (maybe not on disk).
    Written,
    /// The bytes are on disk.
    Synced,
    /// The file has its final name.
    Renamed,
    /// The directory entry is on disk.
    DirSynced,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool and removes leftovers of
    /// interrupted writes.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        for entry in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// A view of an existing spool that changes nothing: no directory is
    /// made, no mode set and no temporary file removed, so that reading
    /// the status never destroys a report another run is writing.
    pub fn inspect(dir: &Path, max_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            max_bytes,
        }
    }

    /// Writes a report durably. Returns its entry.
    pub fn push<P: serde::Serialize>(&self, report: &Report<P>) -> Result<Entry, SpoolError> {
        self.push_until(report, None)
    }

    /// Like [`Spool::push`], but stops after `crash_after` as if the process
    /// died there (tests simulate crashes with it).
    pub fn push_until<P: serde::Serialize>(
        &self,
        report: &Report<P>,
        crash_after: Option<Step>,
    ) -> Result<Entry, SpoolError> {
        let bytes = serde_json::to_vec(report).map_err(|e| SpoolError::Corrupt {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        let micros = report.collected_at.timestamp_micros().max(0);
        let name = format!("{micros:020}-{}.json", &new_nonce()[..8]);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        let path = self.dir.join(&name);
        let stop = |s: Step| crash_after == Some(s);
        let entry = Entry {
            path: path.clone(),
            size: bytes.len() as u64,
        };

        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        if stop(Step::Created) {
            return Ok(entry);
        }
        // A full disk must not keep half a report around: it would take the
        // space the next attempt needs.
        let dropped = |e: std::io::Error| {
            let _ = fs::remove_file(&tmp);
            io_err(&tmp)(e)
        };
        f.write_all(&bytes).map_err(dropped)?;
        if stop(Step::Written) {
            return Ok(entry);
        }
        f.sync_all().map_err(dropped)?;
        drop(f);
        if stop(Step::Synced) {
            return Ok(entry);
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if stop(Step::Renamed) {
            return Ok(entry);
        }
        sync_dir(&self.dir)?;
        if stop(Step::DirSynced) {
            return Ok(entry);
        }
        self.enforce_bound(&path)?;
        Ok(entry)
    }

    /// Drops the oldest reports (never `keep`) until the spool fits.
    /// Reports set aside count too, and go first: they will never be sent.
    fn enforce_bound(&self, keep: &Path) -> Result<(), SpoolError> {
        let rejected = self.listing(&self.dir.join(REJECTED_DIR))?;
        let entries = self.entries()?;
        let mut total: u64 = rejected.iter().chain(&entries).map(|e| e.size).sum();
        for e in rejected.iter().chain(&entries) {
            if total <= self.max_bytes {
                break;
            }
            if e.path == keep {
                continue;
            }
            log::warn!(
                "spool is over its limit of {} bytes: dropping the oldest report {}",
                self.max_bytes,
                e.path.display()
            );
            self.remove(e)?;
            total -= e.size;
        }
        Ok(())
    }

    /// Every complete report, oldest first.
    pub fn entries(&self) -> Result<Vec<Entry>, SpoolError> {
        self.listing(&self.dir)
    }

    /// The complete reports in `dir`, oldest first (none if it is missing).
    fn listing(&self, dir: &Path) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::new();
        let read = match fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.dir => return Ok(out),
            Err(e) => return Err(io_err(dir)(e)),
        };
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                out.push(Entry {
                    path: entry.path(),
                    size: meta.len(),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Reads a spooled report.
    pub fn read(&self, e: &Entry) -> Result<Report, SpoolError> {
        let bytes = fs::read(&e.path).map_err(io_err(&e.path))?;
        serde_json::from_slice(&bytes).map_err(|err| SpoolError::Corrupt {
            path: e.path.clone(),
            message: err.to_string(),
        })
    }

    /// Removes a delivered report, durably.
    pub fn remove(&self, e: &Entry) -> Result<(), SpoolError> {
        match fs::remove_file(&e.path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(&e.path)(err)),
        }
        sync_dir(&self.dir)
    }

    /// Moves a report the server refused, or that cannot be read, aside.
    pub fn reject(&self, e: &Entry) -> Result<PathBuf, SpoolError> {
        let dir = self.dir.join(REJECTED_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let target = dir.join(e.path.file_name().unwrap_or_default());
        fs::rename(&e.path, &target).map_err(io_err(&e.path))?;
        sync_dir(&self.dir)?;
        Ok(target)
    }

    /// Number of reports and their total size.
    pub fn usage(&self) -> Result<(usize, u64), SpoolError> {
        let entries = self.entries()?;
        Ok((entries.len(), entries.iter().map(|e| e.size).sum()))
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};
    use std::collections::BTreeMap;

    fn report(n: i64) -> Report {
        Report {
            report_id: format!("r{n}"),
            hostname: "h".into(),
            collected_at: Utc::now() - Duration::minutes(100 - n),
            agent_version: "t".into(),
            facts_version: penguindome_protocol::facts::FACTS_VERSION,
            plugins: BTreeMap::from([("counter".to_string(), serde_json::json!(n))]),
        }
    }

    fn ids(spool: &Spool) -> Vec<String> {
        spool
            .entries()
            .unwrap()
            .iter()
            .map(|e| spool.read(e).unwrap().report_id)
            .collect()
    }

    #[test]
    fn oldest_first_and_removal() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 1 << 20).unwrap();
        s.push(&report(3)).unwrap();
        s.push(&report(1)).unwrap();
        s.push(&report(2)).unwrap();
        assert_eq!(ids(&s), vec!["r1", "r2", "r3"]);
        let first = s.entries().unwrap().remove(0);
        s.remove(&first).unwrap();
        s.remove(&first).unwrap();
        assert_eq!(ids(&s), vec!["r2", "r3"]);
        let mode = fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    /// A crash at each step leaves the spool with the earlier reports intact
    /// and either no trace of the new one or all of it, never a partial file.
    #[test]
    fn crash_at_every_step_loses_nothing_written() {
        for step in [
            Step::Created,
            Step::Written,
            Step::Synced,
            Step::Renamed,
            Step::DirSynced,
        ] {
            let d = tempfile::tempdir().unwrap();
            let s = Spool::open(d.path(), 1 << 20).unwrap();
            s.push(&report(1)).unwrap();
            s.push_until(&report(2), Some(step)).unwrap();
            // The process "restarts".
            let s = Spool::open(d.path(), 1 << 20).unwrap();
            let got = ids(&s);
            if step >= Step::Renamed {
                assert_eq!(got, vec!["r1", "r2"], "crash after {step:?}");
            } else {
                assert_eq!(got, vec!["r1"], "crash after {step:?}");
            }
            let leftovers = fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
                .count();
            assert_eq!(leftovers, 0, "temp files are cleaned after {step:?}");
        }
    }

    #[test]
    fn inspecting_leaves_a_report_being_written_alone() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 1 << 20).unwrap();
        s.push(&report(1)).unwrap();
        // Another run is half way through writing report 2.
        s.push_until(&report(2), Some(Step::Written)).unwrap();
        let view = Spool::inspect(d.path(), 1 << 20);
        assert_eq!(view.usage().unwrap().0, 1);
        let temps = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .count();
        assert_eq!(temps, 1, "the report being written is still there");
    }

    #[test]
    fn reports_set_aside_count_and_go_first() {
        let d = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&report(1)).unwrap().len() as u64;
        let s = Spool::open(d.path(), one * 3 + one / 2).unwrap();
        s.push(&report(1)).unwrap();
        let first = s.entries().unwrap().remove(0);
        let aside = s.reject(&first).unwrap();
        for n in 2..=4 {
            s.push(&report(n)).unwrap();
        }
        assert!(!aside.exists(), "the rejected report went first");
        assert_eq!(ids(&s), vec!["r2", "r3", "r4"]);
    }

    #[test]
    fn bound_drops_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&report(1)).unwrap().len() as u64;
        let s = Spool::open(d.path(), one * 3 + one / 2).unwrap();
        for n in 1..=5 {
            s.push(&report(n)).unwrap();
        }
        assert_eq!(ids(&s), vec!["r3", "r4", "r5"]);
    }

    #[test]
    fn corrupt_files_are_reported_and_can_be_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 1 << 20).unwrap();
        fs::write(
            d.path().join("00000000000000000001-deadbeef.json"),
            b"{\"half",
        )
        .unwrap();
        s.push(&report(1)).unwrap();
        let entries = s.entries().unwrap();
        let err = s.read(&entries[0]).unwrap_err();
        assert!(matches!(err, SpoolError::Corrupt { .. }));
        let moved = s.reject(&entries[0]).unwrap();
        assert!(moved.exists());
        assert_eq!(ids(&s), vec!["r1"]);
    }
}
