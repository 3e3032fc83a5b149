//! A real PTY to drive interactive programs (pdome-admin shell) the way a
//! person at a terminal would: type, resize, read what the screen got.

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Site, text};

/// Longest a fenced answer may take.
const ANSWER: Duration = Duration::from_secs(30);

/// A program running on a PTY of its own, with its output collected.
pub struct Terminal {
    pty: Arc<pty_process::blocking::Pty>,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Terminal {
    /// Starts `command` as the session leader of a new PTY of this size.
    pub fn spawn(command: Command, cols: u16, rows: u16) -> Self {
        let (pty, pts) = pty_process::blocking::open().unwrap();
        pty.resize(pty_process::Size::new(rows, cols)).unwrap();
        let child = pty_process::blocking::Command::from(command)
            .spawn(pts)
            .unwrap();
        let pty = Arc::new(pty);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (reader, sink) = (pty.clone(), output.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the program and everything it started closed the PTY.
            while let Ok(n) = (&*reader).read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            pty,
            child,
            output,
            reader,
        }
    }

    /// Types `keys`.
    pub fn type_keys(&self, keys: &str) {
        (&*self.pty).write_all(keys.as_bytes()).unwrap();
    }

    /// Everything the terminal received so far, as text.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// How many bytes the terminal received so far (to wait for what
    /// comes after a point).
    pub fn mark(&self) -> usize {
        self.output.lock().unwrap().len()
    }

    /// Waits until the output after `mark` holds `needle`; returns it.
    pub fn wait_for_after(&self, mark: usize, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let after = {
                let out = self.output.lock().unwrap();
                String::from_utf8_lossy(&out[mark.min(out.len())..]).into_owned()
            };
            if after.contains(needle) {
                return after;
            }
            assert!(
                start.elapsed() < limit,
                "{needle:?} did not appear within {limit:?}; the terminal shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the whole output holds `needle`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        self.wait_for_after(0, needle, limit)
    }

    /// Types a command whose answer is fenced, and returns what is between.
    pub fn ask(&self, command: &str) -> String {
        let mark = self.mark();
        self.type_keys(&format!("echo \"<<$({command})>>\"\r"));
        let after = self.wait_for_after(mark, ">>\r\n", ANSWER);
        let start = after.rfind("<<").expect("the fence opened") + 2;
        let end = after.rfind(">>").expect("the fence closed");
        after[start..end].to_string()
    }

    /// Changes the window size (the program gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) {
        self.pty.resize(pty_process::Size::new(rows, cols)).unwrap();
    }

    /// Waits for the program to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // A child of the program may keep the PTY open: give the
                // reader two seconds at most.
                self.drain(Instant::now() + Duration::from_secs(2));
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "the program did not exit within {limit:?}; the terminal shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (until `deadline`) for the reader to take what the program
    /// wrote before it exited: the exit can be seen before its last words
    /// are read.
    fn drain(&self, deadline: Instant) {
        while !self.reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The session's transcript replays what the terminal showed, and rests
/// sealed: no keystroke or output is readable in the stored file.
pub fn check_transcript(site: &Site, client_id: &str, screen: &str, shares: &[&str]) {
    let sessions = site.admin_json(&["shell", "log", client_id, "--json"]);
    let sid = sessions[0]["session_id"].as_str().unwrap().to_string();
    let stored = std::fs::read_to_string(
        site.data_dir
            .join("transcripts")
            .join(client_id)
            .join(format!("{sid}.json")),
    )
    .unwrap();
    assert!(
        !stored.contains("<<") && !stored.contains("echo"),
        "{stored}"
    );
    let mut args = vec!["shell", "log", client_id, "--session", &sid];
    for s in shares {
        args.extend(["--share", s]);
    }
    let out = site.admin(&args);
    assert!(out.status.success(), "{}", text(&out));
    let cast = String::from_utf8(out.stdout).unwrap();
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (header["version"].as_u64(), header["width"].as_u64()),
        (Some(2), Some(80))
    );
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let stream = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e[1] == kind)
            .map(|e| e[2].as_str().unwrap())
            .collect()
    };
    let (shown, typed) = (stream("o"), stream("i"));
    assert!(
        shown.contains("<<0>>") || shown.contains("<<up>>"),
        "{shown}"
    );
    assert!(typed.contains("echo \"<<"), "{typed}");
    assert!(
        screen.contains(&shown),
        "the transcript's output is exactly what the terminal showed:\n{shown:?}\n{screen:?}"
    );
    let trail: Vec<Value> = site
        .admin_json(&["clients", "history", client_id, "--json"])
        .as_array()
        .unwrap()
        .clone();
    assert!(
        trail.iter().any(|r| r["field"] == "shell.transcript_read"),
        "reading a transcript is on the audit trail"
    );
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
