//! Transcripts: the relay records every sealed frame it passes on, with
//! its time and direction, and keeps them with the session's keys as the
//! agent sealed them (to the site's secret-keeping key, or to the server's
//! own transcript key where the site keeps no secrets). Reading one takes
//! that key; the relay never could.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use penguindome_protocol::files::write_atomic;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::ServerConfig;

/// The most of a session's frames kept (past it, the rest is counted).
const MAX_RECORDED: usize = 64 * 1024 * 1024;

/// The server's own transcript key, beside the data it protects.
pub fn key_path(config: &ServerConfig) -> PathBuf {
    config.data_path(Path::new("shell-transcript-key.pgp"))
}

/// Where a client's transcripts are kept.
pub fn client_dir(config: &ServerConfig, client_id: &str) -> PathBuf {
    config.data_path(Path::new("transcripts")).join(client_id)
}

/// The server's transcript certificate (armored), made on first use; the
/// secret key stays in the data directory, mode 0600.
pub fn own_certificate(config: &ServerConfig) -> anyhow::Result<String> {
    let path = key_path(config);
    let tsk = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tsk = penguindome_protocol::sealing::generate_key("PenguinDome shell transcripts")?;
            write_atomic(&path, &tsk, 0o600)
                .with_context(|| format!("cannot write {}", path.display()))?;
            tsk
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (cert, _) = penguindome_protocol::sealing::public_armored(&tsk)?;
    Ok(cert)
}

/// One recorded frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedFrame {
    /// Milliseconds since the session began.
    pub ms: u64,
    /// `i` from the administrator, `o` from the client (asciicast's words).
    pub dir: char,
    /// The sealed frame as relayed, base64.
    pub data: String,
}

/// A session's transcript as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transcript {
    /// The session.
    pub session_id: String,
    /// The client.
    pub client_id: String,
    /// Its host name then.
    pub hostname: String,
    /// Who opened it.
    pub operator: String,
    /// When the agent attached.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub ended_at: DateTime<Utc>,
    /// Why it ended.
    pub ended_because: String,
    /// `TERM`, and the window size it began with.
    pub term: String,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// The session's keys, sealed by the agent (armored OpenPGP message).
    pub keys: String,
    /// The frames in the order relayed.
    pub frames: Vec<RecordedFrame>,
    /// Bytes of frames not kept past the cap.
    #[serde(default)]
    pub dropped_bytes: u64,
}

/// Frames as they pass.
pub struct Recorder {
    began: Instant,
    frames: Vec<RecordedFrame>,
    kept: usize,
    dropped: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            began: Instant::now(),
            frames: Vec::new(),
            kept: 0,
            dropped: 0,
        }
    }
}

impl Recorder {
    /// Records one frame going `dir` (`i` or `o`).
    pub fn record(&mut self, dir: char, wire: &[u8]) {
        if self.kept + wire.len() > MAX_RECORDED {
            self.dropped += wire.len() as u64;
            return;
        }
        self.kept += wire.len();
        self.frames.push(RecordedFrame {
            ms: self.began.elapsed().as_millis() as u64,
            dir,
            data: base64::engine::general_purpose::STANDARD.encode(wire),
        });
    }

    /// The frames and how many bytes were dropped.
    pub fn finish(self) -> (Vec<RecordedFrame>, u64) {
        (self.frames, self.dropped)
    }
}

/// Writes a transcript below the data directory (0600).
pub fn save(dir: &Path, t: &Transcript) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{}.json", t.session_id));
    write_atomic(&path, &serde_json::to_vec(t)?, 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Every transcript of a client, oldest first.
pub fn list(dir: &Path) -> anyhow::Result<Vec<Transcript>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let bytes = std::fs::read(&path)?;
            let t: Transcript = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged", path.display()))?;
            out.push(t);
        }
    }
    out.sort_by_key(|t| t.started_at);
    Ok(out)
}
