//! A debootstrapped Debian (12 or 13) booted with systemd under
//! systemd-nspawn, for tests that need a real systemd, D-Bus and package
//! manager. The root comes from `scripts/debian-root` (built once, cached).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a boot may take: generous, since both install tests boot at
/// once while the other builds packages on the same two cores.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// A Debian release the booted tests run on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Suite {
    /// Debian 12: apt 2.6 verifying with gpgv, systemd 252.
    Bookworm,
    /// Debian 13: apt 3 verifying with sqv, systemd 257.
    Trixie,
}

impl Suite {
    /// The suite's code name, as the mirror spells it.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }
}

/// Runs `test` on Debian 12 and 13 at once (booted tests mostly wait on
/// timers, so two containers cost little more time than one); fails with
/// the first suite's panic after both have finished.
pub fn on_each_suite(test: impl Fn(Suite) + Sync) {
    let results: Vec<(Suite, std::thread::Result<()>)> = std::thread::scope(|s| {
        let runs: Vec<_> = [Suite::Bookworm, Suite::Trixie]
            .into_iter()
            .map(|suite| {
                let test = &test;
                let run = std::thread::Builder::new()
                    .name(suite.name().into())
                    .spawn_scoped(s, move || test(suite))
                    .expect("a test thread");
                (suite, run)
            })
            .collect();
        runs.into_iter()
            .map(|(suite, run)| (suite, run.join()))
            .collect()
    });
    for (suite, result) in results {
        if let Err(panic) = result {
            eprintln!("the test failed on Debian {}", suite.name());
            std::panic::resume_unwind(panic);
        }
    }
}

/// A booted container; powered off (or killed) when dropped.
pub struct BootedDebian {
    _dir: tempfile::TempDir,
    root: PathBuf,
    nspawn: Child,
    leader: u32,
}

fn pids_of_children(pid: u32, name: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string(), "-x", name])
        .output()
        .expect("pgrep (procps) is needed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

impl BootedDebian {
    /// Debian 12, as [`BootedDebian::boot_on`] boots it.
    pub fn boot(prepare: impl FnOnce(&Path)) -> Self {
        Self::boot_on(Suite::Bookworm, prepare)
    }

    /// Unpacks the cached root of `suite`, lets `prepare` add files, and
    /// boots it.
    pub fn boot_on(suite: Suite, prepare: impl FnOnce(&Path)) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/debian-root");
        let out = Command::new(&script)
            .args(["build", suite.name()])
            .output()
            .expect("scripts/debian-root cannot run");
        assert!(
            out.status.success(),
            "scripts/debian-root build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tarball = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-xf")
            .arg(&tarball)
            .status()
            .unwrap();
        assert!(status.success(), "unpacking {tarball} failed");
        prepare(&root);
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&root)
            .args(["--boot", "--register=no", "--keep-unit", "--console=pipe"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn is needed (Debian's systemd-container package)");
        let started = Instant::now();
        let leader = loop {
            if let Some(inner) = pids_of_children(nspawn.id(), "systemd").first() {
                break *inner;
            }
            assert!(
                started.elapsed() < BOOT_LIMIT,
                "the container's systemd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let c = Self {
            _dir: dir,
            root,
            nspawn,
            leader,
        };
        loop {
            let state = c.exec(&["systemctl", "is-system-running"]);
            let s = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if s == "running" || s == "degraded" {
                break;
            }
            assert!(
                started.elapsed() < BOOT_LIMIT,
                "the container did not finish booting: {s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// The container's root directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs a command in all of the container's namespaces.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args(args)
            .output()
            .expect("nsenter (util-linux) is needed")
    }
}

impl Drop for BootedDebian {
    fn drop(&mut self) {
        let _ = self.exec(&["systemctl", "poweroff"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
