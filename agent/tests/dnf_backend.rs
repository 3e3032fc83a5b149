//! The dnf backend against the real dnf: rpms built with rpmbuild, a
//! repository made by createrepo_c with a security advisory added by
//! modifyrepo_c, installed into an --installroot by dnf and fetched by
//! `dnf makecache`. `dnf check-update` and `dnf updateinfo` are the
//! reference for what the collector must report.

mod common;
use common::{stub_program, write};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use penguindome_agent::collectors::os_updates::{UpdateBackend, UpdateCheck, dnf::Dnf};
use penguindome_agent::collectors::{Context, MemoryCache};
use penguindome_agent::host::{FixtureRunner, Host};

const RPM_QUERY: &str =
    "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{INSTALLTIME}\\n";

struct World {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    repo: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let repo = base.join("repo");
        std::fs::create_dir_all(repo.join("Packages")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        // Debian's rpm keeps its database in ~/.rpmdb unless told otherwise.
        write(
            &base.join("home/.rpmmacros"),
            format!(
                "%_topdir {}\n%_dbpath /var/lib/rpm\n",
                base.join("build").display()
            ),
        );
        write(
            &base.join("dnf.conf"),
            "[main]\ngpgcheck=0\nskip_if_unavailable=False\ninstall_weak_deps=False\nkeepcache=False\n",
        );
        write(
            &root.join("etc/yum.repos.d/site.repo"),
            format!(
                "[site]\nname=site\nbaseurl=file://{}\nenabled=1\ngpgcheck=0\nmetadata_expire=0\n\n[disabled-one]\nname=off\nbaseurl=file:///nonexistent\nenabled=0\n",
                repo.display()
            ),
        );
        // What the collector checks before choosing this backend.
        for p in ["usr/bin/dnf", "usr/bin/rpm"] {
            stub_program(&root, p);
        }
        write(&root.join("proc/stat"), "btime 1000\n");
        Self {
            _dir: dir,
            base,
            root,
            repo,
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("HOME", self.base.join("home")).env("LC_ALL", "C");
        c
    }

    fn run(&self, mut c: Command, ok: &[i32]) -> (i32, String) {
        let out = c.output().unwrap_or_else(|e| {
            panic!("{c:?} cannot start ({e}); scripts/test installs rpm, dnf and createrepo-c")
        });
        let code = out.status.code().unwrap_or(-1);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            ok.contains(&code),
            "{c:?} exited {code}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, text)
    }

    fn build(&self, name: &str, version: &str) {
        let spec = self.base.join(format!("{name}-{version}.spec"));
        write(
            &spec,
            format!(
                "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: test\nLicense: none\nBuildArch: noarch\nAutoReq: no\n%description\ntest\n%install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho {version} > %{{buildroot}}/usr/share/{name}/VERSION\n%files\n/usr/share/{name}/VERSION\n"
            ),
        );
        let mut c = self.cmd("rpmbuild");
        c.arg("-bb").arg("--quiet").arg(&spec);
        self.run(c, &[0]);
        let built = self
            .base
            .join(format!("build/RPMS/noarch/{name}-{version}-1.noarch.rpm"));
        std::fs::copy(
            &built,
            self.repo
                .join(format!("Packages/{name}-{version}-1.noarch.rpm")),
        )
        .unwrap();
    }

    fn createrepo(&self, advisory_for: Option<(&str, &str)>) {
        let mut c = self.cmd("createrepo_c");
        c.arg("--quiet").arg(&self.repo);
        self.run(c, &[0]);
        if let Some((name, version)) = advisory_for {
            let ui = self.base.join("updateinfo.xml");
            write(
                &ui,
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="security@example.test" status="stable" type="security" version="2.0">
    <id>SITE-2026-0001</id>
    <title>{name}: fix for CVE-2026-0001</title>
    <severity>Important</severity>
    <issued date="2026-11-20 10:00:00"/>
    <description>Security update.</description>
    <pkglist><collection short="site"><name>site</name>
      <package name="{name}" version="{version}" release="1" epoch="0" arch="noarch" src="{name}-{version}-1.src.rpm"><filename>{name}-{version}-1.noarch.rpm</filename></package>
    </collection></pkglist>
  </update>
  <update from="bugs@example.test" status="stable" type="bugfix" version="2.0">
    <id>SITE-2026-0002</id><title>bugfix</title>
    <pkglist><collection short="site"><name>site</name>
      <package name="pd-hello" version="2.0" release="1" epoch="0" arch="noarch" src="x.src.rpm"><filename>x.rpm</filename></package>
    </collection></pkglist>
  </update>
</updates>
"#
                ),
            );
            let mut c = self.cmd("modifyrepo_c");
            c.arg("--mdtype=updateinfo")
                .arg(&ui)
                .arg(self.repo.join("repodata"));
            self.run(c, &[0]);
        }
    }

    fn dnf(&self, args: &[&str], ok: &[i32]) -> (i32, String) {
        let mut c = self.cmd("/usr/bin/dnf");
        c.arg("-y")
            .arg(format!("--installroot={}", self.root.display()))
            .arg("--releasever=1")
            .arg(format!("--config={}", self.base.join("dnf.conf").display()))
            .arg(format!(
                "--setopt=reposdir={}",
                self.root.join("etc/yum.repos.d").display()
            ))
            .args(args);
        self.run(c, ok)
    }

    /// Saves what `rpm -qa` prints for the root where the collector's
    /// fixture runner replays it.
    fn capture_rpm_qa(&self) {
        let mut c = self.cmd("rpm");
        c.arg("--root")
            .arg(&self.root)
            .args(["-qa", "--qf", RPM_QUERY]);
        let (_, out) = self.run(c, &[0]);
        let name = FixtureRunner::capture_name("rpm", &["-qa", "--qf", RPM_QUERY]);
        write(&self.root.join(".commands").join(name), &out);
    }

    fn collector_says(&self, cache: &MemoryCache) -> UpdateCheck {
        self.capture_rpm_qa();
        let host = Host::fixture(&self.root, vec![]);
        assert!(Dnf.detect(&host), "dnf backend not detected");
        Dnf.check(&Context::new(&host, cache)).unwrap()
    }

    /// (name, candidate) from `dnf check-update`; advisories' packages.
    fn dnf_says(&self) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
        let (code, out) = self.dnf(&["--refresh", "-q", "check-update"], &[0, 100]);
        let updates: BTreeSet<(String, String)> = out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3).then(|| {
                    (
                        f[0].rsplit_once('.').unwrap().0.to_string(),
                        f[1].to_string(),
                    )
                })
            })
            .collect();
        assert_eq!(code == 100, !updates.is_empty());
        let (_, out) = self.dnf(&["-q", "updateinfo", "list", "--security"], &[0]);
        let security = out
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .map(|nevra| nevra.rsplitn(3, '-').last().unwrap().to_string())
            .collect();
        (updates, security)
    }
}

#[test]
fn pending_updates_and_advisories_match_dnf() {
    let w = World::new();
    w.build("pd-hello", "1.0");
    w.build("pd-lib", "1.0");
    w.build("pd-same", "1.0");
    w.createrepo(None);
    w.dnf(&["install", "pd-hello", "pd-lib", "pd-same"], &[0]);

    w.build("pd-hello", "2.0");
    w.build("pd-lib", "1.1");
    w.createrepo(Some(("pd-lib", "1.1")));
    let (updates, security) = w.dnf_says();
    assert_eq!(updates.len(), 2, "dnf sees two updates: {updates:?}");
    assert_eq!(security, BTreeSet::from(["pd-lib".to_string()]));

    let cache = MemoryCache::default();
    let ours = w.collector_says(&cache);
    let got: BTreeSet<(String, String)> = ours
        .pending
        .iter()
        .map(|p| (p.name.clone(), p.candidate.clone()))
        .collect();
    assert_eq!(got, updates);
    let sec: BTreeSet<String> = ours
        .pending
        .iter()
        .filter(|p| p.security)
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(sec, security);
    let lib = ours.pending.iter().find(|p| p.name == "pd-lib").unwrap();
    assert!(lib.source.contains("SITE-2026-0001"), "{}", lib.source);
    assert!(ours.security_evidence.contains("site"));
    assert!(ours.lists_refreshed_at.is_some());
    assert_eq!(ours.reboot_required, Some(false));

    // Upgrading changes the rpm database: the memo must not hide it.
    w.dnf(&["upgrade"], &[0]);
    let ours = w.collector_says(&cache);
    assert!(ours.pending.is_empty(), "{:?}", ours.pending);
}
