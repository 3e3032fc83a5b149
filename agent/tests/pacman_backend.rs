//! The pacman backend against the real pacman: packages installed into a
//! test root with `pacman -U`, a newer repository made by `repo-add`, and
//! pacman's own `-Qu` on a checkupdates-style copy as the reference.
#![cfg(feature = "pacman")]

mod common;
use common::{stub_program, write};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use penguindome_agent::collectors::os_updates::{UpdateBackend, UpdateCheck, pacman::Pacman};
use penguindome_agent::collectors::{Context, MemoryCache};
use penguindome_agent::host::Host;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot start ({e}); scripts/test installs pacman-package-manager, libarchive-tools and zstd"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct World {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    repo: PathBuf,
    pkgs: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let repo = base.join("repo");
        let pkgs = base.join("pkgs");
        for d in [
            "var/lib/pacman",
            "var/cache/pacman/pkg",
            "var/log",
            "etc/pacman.d/hooks",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(&pkgs).unwrap();
        write(
            &root.join("etc/pacman.conf"),
            format!(
                "[options]\nArchitecture = auto\nIgnorePkg = pd-ignored pd-glob*\nIgnoreGroup = pd-held-*\nSigLevel = Never\nLocalFileSigLevel = Never\n\n[site]\nServer = file://{}\n",
                repo.display()
            ),
        );
        // What the collector checks before choosing this backend.
        stub_program(&root, "usr/bin/pacman");
        let arch = run(Command::new("uname").arg("-m"));
        write(&root.join("proc/sys/kernel/arch"), &arch);
        write(&root.join("proc/sys/kernel/osrelease"), "6.12.1-arch1-1\n");
        Self {
            _dir: dir,
            base,
            root,
            repo,
            pkgs,
        }
    }

    /// Builds NAME-VERSION-1-any.pkg.tar.zst by hand (.PKGINFO + payload).
    fn build(&self, name: &str, version: &str) -> PathBuf {
        self.build_in(name, version, None)
    }

    /// Builds a package that belongs to `group`, if given.
    fn build_in(&self, name: &str, version: &str, group: Option<&str>) -> PathBuf {
        let group = group.map(|g| format!("group = {g}\n")).unwrap_or_default();
        let src = self.base.join(format!("src/{name}-{version}"));
        write(&src.join(format!("usr/share/doc/{name}/VERSION")), version);
        write(
            &src.join(".PKGINFO"),
            format!(
                "pkgname = {name}\npkgbase = {name}\npkgver = {version}-1\npkgdesc = test package\nurl = https://example.test/\nbuilddate = 1764000000\npackager = Test <t@example.test>\nsize = 8\narch = any\nlicense = custom\n{group}"
            ),
        );
        let out = self
            .pkgs
            .join(format!("{name}-{version}-1-any.pkg.tar.zst"));
        run(Command::new("sh").arg("-c").arg(format!(
            "cd '{}' && bsdtar --uid 0 --gid 0 --uname root --gname root -cf - .PKGINFO usr | zstd -q -c > '{}'",
            src.display(),
            out.display()
        )));
        out
    }

    fn pacman(&self, dbpath: &Path, args: &[&str]) -> String {
        run(Command::new("pacman")
            .arg("--root")
            .arg(&self.root)
            .arg("--dbpath")
            .arg(dbpath)
            .arg("--config")
            .arg(self.root.join("etc/pacman.conf"))
            .arg("--cachedir")
            .arg(self.root.join("var/cache/pacman/pkg"))
            .arg("--logfile")
            .arg(self.root.join("var/log/pacman.log"))
            .arg("--noconfirm")
            .args(args))
    }

    fn publish(&self, pkgs: &[PathBuf]) {
        let db = self.repo.join("site.db.tar.gz");
        let _ = std::fs::remove_file(&db);
        let _ = std::fs::remove_file(self.repo.join("site.db"));
        let mut cmd = Command::new("repo-add");
        cmd.arg("--quiet").arg(&db).args(pkgs);
        run(&mut cmd);
    }

    /// What pacman itself says is pending, refreshing a copy of the dbs.
    fn pacman_pending(&self) -> BTreeSet<(String, String, String)> {
        self.pacman_pending_marked()
            .into_iter()
            .map(|(n, o, c, _)| (n, o, c))
            .collect()
    }

    /// Like [`World::pacman_pending`], with pacman's `[ignored]` mark.
    fn pacman_pending_marked(&self) -> BTreeSet<(String, String, String, bool)> {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            self.root.join("var/lib/pacman/local"),
            tmp.path().join("local"),
        )
        .unwrap();
        self.pacman(tmp.path(), &["-Sy"]);
        // pacman -Qu exits 1 when nothing is pending; here something is.
        self.pacman(tmp.path(), &["-Qu"])
            .lines()
            .filter_map(|l| {
                // NAME OLD -> NEW [ignored]
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[2] == "->").then(|| {
                    let ignored = f.get(4) == Some(&"[ignored]");
                    (
                        f[0].to_string(),
                        f[1].to_string(),
                        f[3].to_string(),
                        ignored,
                    )
                })
            })
            .collect()
    }

    fn collector_says(&self) -> UpdateCheck {
        let host = Host::fixture(&self.root, vec![]);
        assert!(Pacman.detect(&host), "pacman backend not detected");
        Pacman
            .check(&Context::new(&host, &MemoryCache::default()))
            .unwrap()
    }
}

fn set(c: &UpdateCheck) -> BTreeSet<(String, String, String)> {
    c.pending
        .iter()
        .map(|p| (p.name.clone(), p.installed.clone(), p.candidate.clone()))
        .collect()
}

#[test]
fn pending_updates_match_pacman_and_the_system_dbs_stay_untouched() {
    let w = World::new();
    let installed = [
        w.build("pd-hello", "1.0"),
        w.build("pd-same", "1.0"),
        w.build("pd-ignored", "1.0"),
    ];
    let mut args = vec!["-U"];
    let paths: Vec<String> = installed.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    w.pacman(&w.root.join("var/lib/pacman"), &args);
    w.publish(&[
        w.build("pd-hello", "2.0"),
        installed[1].clone(),
        w.build("pd-ignored", "1.5"),
    ]);

    let reference = w.pacman_pending();
    assert_eq!(
        reference.len(),
        2,
        "pacman sees pd-hello and pd-ignored: {reference:?}"
    );
    let ours = w.collector_says();
    assert_eq!(set(&ours), reference);
    let ignored = ours
        .pending
        .iter()
        .find(|p| p.name == "pd-ignored")
        .unwrap();
    assert!(ignored.held, "IgnorePkg is reported as held");
    assert_eq!(
        ours.pending
            .iter()
            .find(|p| p.name == "pd-hello")
            .unwrap()
            .source,
        "site"
    );
    assert!(
        !w.root.join("var/lib/pacman/sync/site.db").exists(),
        "the system's own sync databases must never be written"
    );
    assert!(ours.lists_refreshed_at.is_some());
    assert_eq!(
        ours.reboot_required,
        Some(true),
        "no modules dir for the running kernel"
    );

    // 3.0 is published; the private copy is fresh, so nothing changes
    // until the system's own databases are synced (by the admin here).
    w.publish(&[w.build("pd-hello", "3.0"), installed[1].clone()]);
    w.pacman(&w.root.join("var/lib/pacman"), &["-Sy"]);
    let ours = w.collector_says();
    let hello = ours.pending.iter().find(|p| p.name == "pd-hello").unwrap();
    assert_eq!(
        hello.candidate, "3.0-1",
        "a newer system sync db is copied in"
    );
}

#[test]
fn held_updates_follow_pacmans_ignore_rules() {
    let w = World::new();
    let installed = [
        w.build("pd-plain", "1.0"),
        w.build("pd-globbed", "1.0"),
        w.build_in("pd-member", "1.0", Some("pd-held-group")),
        w.build_in("pd-other-member", "1.0", Some("pd-free-group")),
    ];
    let mut args = vec!["-U"];
    let paths: Vec<String> = installed.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    w.pacman(&w.root.join("var/lib/pacman"), &args);
    w.publish(&[
        w.build("pd-plain", "2.0"),
        w.build("pd-globbed", "2.0"),
        w.build_in("pd-member", "2.0", Some("pd-held-group")),
        w.build_in("pd-other-member", "2.0", Some("pd-free-group")),
    ]);
    let reference = w.pacman_pending_marked();
    let held: BTreeSet<&str> = reference
        .iter()
        .filter(|p| p.3)
        .map(|p| p.0.as_str())
        .collect();
    assert_eq!(
        held,
        BTreeSet::from(["pd-globbed", "pd-member"]),
        "pacman's own view: {reference:?}"
    );
    let ours: BTreeSet<(String, String, String, bool)> = w
        .collector_says()
        .pending
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.installed.clone(),
                p.candidate.clone(),
                p.held,
            )
        })
        .collect();
    assert_eq!(ours, reference);
}
