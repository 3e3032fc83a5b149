//! Running the machine's programs, or replaying their captured output.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wait_timeout::ChildExt;

/// Longest a collector's helper program may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Programs started through [`Host::run`] by this process (for benchmarks).
static SPAWNED: AtomicUsize = AtomicUsize::new(0);

/// What a finished program printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub status: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// True when the program exited 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs programs on the machine, or replays what they printed.
pub trait CommandRunner: Send + Sync {
    /// Runs `program` with `args`; `NotFound` when it is not installed.
    fn run(&self, program: &str, args: &[&str]) -> io::Result<CommandOutput>;
}

/// Programs started so far by collectors in this process.
pub fn programs_spawned() -> usize {
    SPAWNED.load(Ordering::Relaxed)
}

/// Runs real programs: C locale, no stdin, system directories on PATH,
/// killed after [`COMMAND_TIMEOUT`].
pub(super) struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
        let mut child = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        SPAWNED.fetch_add(1, Ordering::Relaxed);
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });
        let mut out_pipe = child.stdout.take().expect("stdout is piped");
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out_pipe.read_to_end(&mut buf);
            buf
        });
        let status = match child.wait_timeout(COMMAND_TIMEOUT)? {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{program} did not finish within {COMMAND_TIMEOUT:?}"),
                ));
            }
        };
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        Ok(CommandOutput {
            status: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }
}

/// Replays captured output: `<dir>/<command line>` holds what the program
/// printed, `<command line>.status` its exit code (0 when absent) and
/// `<command line>.stderr` its standard error. The command line is the
/// program's base name and its arguments joined by spaces, with `/`
/// written as `%`. A command without a capture is "not installed".
pub struct FixtureRunner {
    dir: PathBuf,
}

impl FixtureRunner {
    /// Replays captures from `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The capture file name of a command line.
    pub fn capture_name(program: &str, args: &[&str]) -> String {
        let base = program.rsplit('/').next().unwrap_or(program);
        std::iter::once(base)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
            .replace('/', "%")
    }
}

impl CommandRunner for FixtureRunner {
    fn run(&self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
        let name = Self::capture_name(program, args);
        let path = self.dir.join(&name);
        let stdout = std::fs::read_to_string(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("no captured output for `{name}`: {e}"))
        })?;
        let status = match std::fs::read_to_string(self.dir.join(format!("{name}.status"))) {
            Ok(s) => s.trim().parse().ok(),
            Err(_) => Some(0),
        };
        let stderr =
            std::fs::read_to_string(self.dir.join(format!("{name}.stderr"))).unwrap_or_default();
        Ok(CommandOutput {
            status,
            stdout,
            stderr,
        })
    }
}
