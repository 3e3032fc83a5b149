//! The apt backend against the real apt: a signed local repository with a
//! regular suite and a security suite, fetched by `apt-get update` into a
//! private root. What the collector reports pending must be exactly what
//! `apt-get -s dist-upgrade` would install, security flags included.

mod common;
use common::{stub_program, write};

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use penguindome_agent::collectors::os_updates::{UpdateBackend, apt::Apt};
use penguindome_agent::collectors::{Context, MemoryCache};
use penguindome_agent::host::Host;
use penguindome_protocol::keys::SecretKey;
use sha2::{Digest, Sha256};

struct Pkg<'a> {
    name: &'a str,
    version: &'a str,
    arch: &'a str,
}

const fn pkg<'a>(name: &'a str, version: &'a str, arch: &'a str) -> Pkg<'a> {
    Pkg {
        name,
        version,
        arch,
    }
}

fn host_arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg is needed for this test (Debian's dpkg package)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A private apt world: a root with dpkg status and sources, and a repository.
struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    key: SecretKey,
    arch: String,
}

impl World {
    fn new(installed: &[(Pkg<'_>, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let repo = dir.path().join("repo");
        let arch = host_arch();
        for d in [
            "etc/apt/sources.list.d",
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/keyrings",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/info",
            "var/log/apt",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut status = String::new();
        for (p, state) in installed {
            let arch = if p.arch == "any" { &arch } else { p.arch };
            writeln!(
                status,
                "Package: {}\nStatus: {state}\nPriority: optional\nSection: misc\nMaintainer: Test <t@example.test>\nArchitecture: {arch}\nVersion: {}\nDescription: test package\n",
                p.name, p.version
            )
            .unwrap();
        }
        write(&root.join("var/lib/dpkg/status"), status);
        // The collector looks for apt-get before it picks this backend.
        stub_program(&root, "usr/bin/apt-get");
        let key = SecretKey::generate("Test Repository <repo@example.test>").unwrap();
        write(
            &root.join("etc/apt/keyrings/test.asc"),
            key.public().to_armored().unwrap(),
        );
        write(
            &root.join("etc/apt/sources.list.d/test.sources"),
            format!(
                "Types: deb\nURIs: file:{}\nSuites: stable stable-security\nComponents: main\nSigned-By: {}\n",
                repo.display(),
                root.join("etc/apt/keyrings/test.asc").display()
            ),
        );
        Self {
            _dir: dir,
            root,
            repo,
            key,
            arch,
        }
    }

    /// Writes a suite's Packages and a signed Release for it.
    fn publish(&self, suite: &str, label: &str, pkgs: &[Pkg<'_>]) {
        let dist = self.repo.join("dists").join(suite);
        let mut packages = String::new();
        for p in pkgs {
            let arch = if p.arch == "any" { &self.arch } else { p.arch };
            let filename = format!("pool/main/{}_{}_{arch}.deb", p.name, p.version);
            let fake = format!("{filename} contents");
            writeln!(
                packages,
                "Package: {}\nVersion: {}\nArchitecture: {arch}\nMaintainer: Test <t@example.test>\nFilename: {filename}\nSize: {}\nSHA256: {:x}\nDescription: test package\n",
                p.name,
                p.version,
                fake.len(),
                Sha256::digest(fake.as_bytes())
            )
            .unwrap();
        }
        let rel_path = format!("main/binary-{}/Packages", self.arch);
        write(&dist.join(&rel_path), &packages);
        let release = format!(
            "Origin: PenguinDome Test\nLabel: {label}\nSuite: {suite}\nCodename: {suite}\nDate: {}\nArchitectures: {}\nComponents: main\nSHA256:\n {:x} {} {rel_path}\n",
            chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S UTC"),
            self.arch,
            Sha256::digest(packages.as_bytes()),
            packages.len(),
        );
        write(&dist.join("Release"), &release);
        write(
            &dist.join("Release.gpg"),
            self.key.sign_armored(release.as_bytes()).unwrap(),
        );
    }

    fn apt(&self, args: &[&str]) -> String {
        let r = |p: &str| format!("{}", self.root.join(p).display());
        let opts = [
            format!("Dir={}", self.root.display()),
            format!("Dir::State::status={}", r("var/lib/dpkg/status")),
            format!("Dir::Etc={}", r("etc/apt")),
            format!("Dir::Etc::SourceParts={}", r("etc/apt/sources.list.d")),
            format!("Dir::Etc::SourceList={}", r("etc/apt/sources.list")),
            format!("Dir::Etc::Parts={}", r("etc/apt/apt.conf.d")),
            format!("Dir::Etc::PreferencesParts={}", r("etc/apt/preferences.d")),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            "APT::Sandbox::User=root".to_string(),
            "Debug::NoLocking=1".to_string(),
            "Acquire::Languages=none".to_string(),
        ];
        let mut cmd = Command::new("apt-get");
        for o in &opts {
            cmd.arg("-o").arg(o);
        }
        let out = cmd
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .expect("apt-get is needed for this test");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "apt-get {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// (name, installed, candidate, from security) for each `Inst` line.
    fn apt_would_install(&self) -> BTreeSet<(String, String, String, bool)> {
        self.apt(&["-s", "dist-upgrade"])
            .lines()
            .filter_map(|l| l.strip_prefix("Inst "))
            .map(|l| {
                // Inst NAME [OLD] (NEW ORIGIN:SUITE [ARCH])
                let name = l.split_whitespace().next().unwrap().to_string();
                let old = l
                    .split('[')
                    .nth(1)
                    .unwrap()
                    .split(']')
                    .next()
                    .unwrap()
                    .to_string();
                let new_part = l.split('(').nth(1).unwrap();
                let new = new_part.split_whitespace().next().unwrap().to_string();
                (name, old, new, new_part.contains("stable-security"))
            })
            .collect()
    }

    fn collector_says(
        &self,
        cache: &MemoryCache,
    ) -> penguindome_agent::collectors::os_updates::UpdateCheck {
        let host = Host::fixture(&self.root, vec![]);
        assert!(Apt.detect(&host));
        Apt.check(&Context::new(&host, cache)).unwrap()
    }
}

fn pending_set(
    check: &penguindome_agent::collectors::os_updates::UpdateCheck,
) -> BTreeSet<(String, String, String, bool)> {
    check
        .pending
        .iter()
        .filter(|p| !p.held)
        .map(|p| {
            (
                p.name.clone(),
                p.installed.clone(),
                p.candidate.clone(),
                p.security,
            )
        })
        .collect()
}

#[test]
fn pending_updates_match_what_apt_would_install() {
    let ok = "install ok installed";
    let world = World::new(&[
        (pkg("pd-hello", "1.0-1", "any"), ok),
        (pkg("pd-libssl", "3.0.11-1", "any"), ok),
        (pkg("pd-same", "1.0", "any"), ok),
        (pkg("pd-doc", "1.0", "all"), ok),
        (pkg("pd-held", "1.0", "any"), "hold ok installed"),
        (pkg("pd-local", "0.1", "any"), ok),
    ]);
    world.publish(
        "stable",
        "Test",
        &[
            pkg("pd-hello", "1.0-2", "any"),
            pkg("pd-libssl", "3.0.11-1", "any"),
            pkg("pd-same", "1.0", "any"),
            pkg("pd-doc", "1.1", "all"),
            pkg("pd-held", "2.0", "any"),
            pkg("pd-other", "5.0", "any"),
        ],
    );
    world.publish(
        "stable-security",
        "Test-Security",
        &[pkg("pd-libssl", "3.0.11-1~deb12u1+sec1", "any")],
    );
    world.apt(&["update"]);

    let apt = world.apt_would_install();
    // The fixture is only meaningful if apt itself sees the updates.
    assert_eq!(
        apt.len(),
        2,
        "apt should upgrade pd-hello and pd-doc: {apt:?}"
    );

    let cache = MemoryCache::default();
    let ours = world.collector_says(&cache);
    // pd-libssl's "security" version is older than the installed one
    // (~ sorts first), so it is no update; check that apt agrees.
    assert_eq!(pending_set(&ours), apt);
    let held: Vec<_> = ours.pending.iter().filter(|p| p.held).collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].name, "pd-held");
    assert!(
        ours.security_evidence.contains("stable-security"),
        "{}",
        ours.security_evidence
    );

    // A real security fix arrives; apt update; the memo must notice.
    world.publish(
        "stable-security",
        "Test-Security",
        &[pkg("pd-libssl", "3.0.11-1+deb12u1", "any")],
    );
    world.apt(&["update"]);
    let apt = world.apt_would_install();
    assert_eq!(apt.len(), 3, "{apt:?}");
    assert!(apt.iter().any(|(n, _, _, sec)| n == "pd-libssl" && *sec));
    let ours = world.collector_says(&cache);
    assert_eq!(pending_set(&ours), apt);
}
