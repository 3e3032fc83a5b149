//! The pacman backend (Arch, Manjaro, EndeavourOS...), through libalpm.
//!
//! Like checkupdates, it never touches the system's own sync databases:
//! it keeps a private database directory (its `local` is a link to the
//! system's), seeds it from the system's sync databases when those are
//! newer, and refreshes it from the configured mirrors at most every
//! [`REFRESH_EVERY`]. The original ran `pacman -Sy` on the live system,
//! which invites partial upgrades.
//!
//! Security: Arch publishes advisories at security.archlinux.org; this
//! backend does not fetch them yet and says so in `security_evidence`.
//!
//! libalpm's ABI changes with pacman releases: the `pacman` feature uses
//! the `alpm` crate 2.x, which matches libalpm 13 (pacman 6.0); the
//! `pacman-libalpm16` feature uses `alpm` 5.x for current Arch (pacman 7).
//! The code below is the same for both.

use std::time::Duration;

use super::{UpdateBackend, UpdateCheck};
use crate::collectors::{CollectError, Context};
use crate::host::Host;

/// How stale the private sync databases may get before a refresh.
pub const REFRESH_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Where the private databases live (CacheDirectory= of the agent unit).
#[cfg(any(feature = "pacman", feature = "pacman-libalpm16"))]
const PRIVATE_DBPATH: &str = "/var/cache/penguindome-agent/pacman";

/// The backend.
pub struct Pacman;

/// A repository from pacman.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// Section name (`core`, `extra`...).
    pub name: String,
    /// Server URLs with `$repo` and `$arch` filled in.
    pub servers: Vec<String>,
    /// The SigLevel words of the section (or of [options]).
    pub sig_level: Vec<String>,
}

/// What pacman.conf says that matters here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacmanConf {
    /// DBPath (default /var/lib/pacman/).
    pub db_path: String,
    /// GPGDir (default /etc/pacman.d/gnupg/).
    pub gpg_dir: String,
    /// Repositories in order.
    pub repos: Vec<Repo>,
    /// IgnorePkg entries (glob patterns): pending updates of matching
    /// packages are "held", as `pacman -Qu` marks them `[ignored]`.
    pub ignore: Vec<String>,
    /// IgnoreGroup entries (glob patterns): every member of a matching
    /// group is held too.
    pub ignore_groups: Vec<String>,
}

/// Takes one `[options]` setting.
fn option(
    conf: &mut PacmanConf,
    default_sig: &mut Vec<String>,
    arch: &mut String,
    key: &str,
    value: &str,
) {
    let words = || value.split_whitespace().map(String::from);
    match key {
        "DBPath" => conf.db_path = value.to_string(),
        "GPGDir" => conf.gpg_dir = value.to_string(),
        "SigLevel" => *default_sig = words().collect(),
        "IgnorePkg" => conf.ignore.extend(words()),
        "IgnoreGroup" => conf.ignore_groups.extend(words()),
        "Architecture" => {
            if let Some(a) = value.split_whitespace().find(|a| *a != "auto") {
                *arch = a.to_string();
            }
        }
        _ => {}
    }
}

/// Parses pacman.conf and its Include files (read through the host).
pub fn parse_conf(host: &Host, path: &str, arch: &str) -> Result<PacmanConf, CollectError> {
    let text = host
        .read_to_string(path)
        .map_err(|e| CollectError(format!("cannot read {path}: {e}")))?;
    let mut conf = PacmanConf {
        db_path: "/var/lib/pacman/".into(),
        gpg_dir: "/etc/pacman.d/gnupg/".into(),
        ..Default::default()
    };
    let mut default_sig: Vec<String> = vec!["Required".into(), "DatabaseOptional".into()];
    let mut section = String::new();
    let mut arch = arch.to_string();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            if section != "options" {
                conf.repos.push(Repo {
                    name: section.clone(),
                    servers: vec![],
                    sig_level: default_sig.clone(),
                });
            }
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        if section == "options" {
            if key == "Include" {
                // pacman allows options in included files as well.
                let included = host.read_to_string(value).unwrap_or_default();
                for l in included.lines() {
                    let l = l.split('#').next().unwrap_or("").trim();
                    if let Some((k, v)) = l.split_once('=') {
                        option(&mut conf, &mut default_sig, &mut arch, k.trim(), v.trim());
                    }
                }
            } else {
                option(&mut conf, &mut default_sig, &mut arch, key, value);
            }
            continue;
        }
        let Some(repo) = conf.repos.last_mut() else {
            continue;
        };
        let expand = |url: &str| url.replace("$repo", &repo.name).replace("$arch", &arch);
        match key {
            "Server" => {
                let url = expand(value);
                repo.servers.push(url);
            }
            "Include" => {
                // Mirror lists: only their Server lines matter.
                let included = host.read_to_string(value).unwrap_or_default();
                for l in included.lines() {
                    let l = l.split('#').next().unwrap_or("").trim();
                    if let Some((k, v)) = l.split_once('=')
                        && k.trim() == "Server"
                    {
                        let url = expand(v.trim());
                        repo.servers.push(url);
                    }
                }
            }
            "SigLevel" => repo.sig_level = value.split_whitespace().map(String::from).collect(),
            _ => {}
        }
    }
    Ok(conf)
}

impl UpdateBackend for Pacman {
    fn name(&self) -> &'static str {
        "pacman"
    }

    fn detect(&self, host: &Host) -> bool {
        host.exists("/var/lib/pacman/local") && host.find_program("pacman").is_some()
    }

    #[cfg(not(any(feature = "pacman", feature = "pacman-libalpm16")))]
    fn check(&self, _ctx: &Context<'_>) -> Result<UpdateCheck, CollectError> {
        Err(CollectError(
            "this agent was built without pacman support; install the Arch package of penguindome-agent (built with --features pacman)".into(),
        ))
    }

    #[cfg(any(feature = "pacman", feature = "pacman-libalpm16"))]
    fn check(&self, ctx: &Context<'_>) -> Result<UpdateCheck, CollectError> {
        with_alpm::check(ctx, PRIVATE_DBPATH)
    }
}

/// The running kernel's modules are gone once a newer kernel package
/// replaced them: Arch's sign that a reboot is due.
pub fn reboot(host: &Host) -> (Option<bool>, String) {
    let Ok(running) = host.read_to_string("/proc/sys/kernel/osrelease") else {
        return (None, "/proc/sys/kernel/osrelease is not readable".into());
    };
    let running = running.trim();
    let dir = format!("/usr/lib/modules/{running}");
    if host.exists(&dir) {
        (
            Some(false),
            format!("{dir} exists: the running kernel is the installed one"),
        )
    } else {
        (
            Some(true),
            format!("{dir} is missing: the kernel was upgraded since boot"),
        )
    }
}

#[cfg(all(feature = "pacman", feature = "pacman-libalpm16"))]
compile_error!("enable one of the features pacman (libalpm 13) and pacman-libalpm16, not both");

#[cfg(any(feature = "pacman", feature = "pacman-libalpm16"))]
mod with_alpm {
    use std::path::Path;
    use std::time::SystemTime;

    #[cfg(feature = "pacman")]
    use alpm::{Alpm, SigLevel};
    #[cfg(all(feature = "pacman-libalpm16", not(feature = "pacman")))]
    use alpm5::{Alpm, SigLevel};
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::collectors::os_updates::PendingUpdate;

    fn sig_level(words: &[String]) -> SigLevel {
        let mut pkg = SigLevel::PACKAGE;
        let mut db = SigLevel::DATABASE_OPTIONAL;
        for w in words {
            match w.as_str() {
                "Never" => {
                    pkg = SigLevel::NONE;
                    db = SigLevel::NONE;
                }
                "Optional" => {
                    pkg = SigLevel::PACKAGE_OPTIONAL;
                    db = SigLevel::DATABASE_OPTIONAL;
                }
                "Required" => {
                    pkg = SigLevel::PACKAGE;
                    db = SigLevel::DATABASE;
                }
                "PackageNever" => pkg = SigLevel::NONE,
                "PackageOptional" => pkg = SigLevel::PACKAGE_OPTIONAL,
                "PackageRequired" => pkg = SigLevel::PACKAGE,
                "DatabaseNever" => db = SigLevel::NONE,
                "DatabaseOptional" => db = SigLevel::DATABASE_OPTIONAL,
                "DatabaseRequired" => db = SigLevel::DATABASE,
                _ => {}
            }
        }
        pkg | db
    }

    fn mtime(p: &Path) -> Option<SystemTime> {
        std::fs::metadata(p).and_then(|m| m.modified()).ok()
    }

    /// Prepares the private dbpath: `local` links to the system's, and
    /// each sync database is copied in when the system's copy is newer.
    fn prepare(host: &Host, conf: &PacmanConf, private: &Path) -> Result<(), CollectError> {
        let sync = private.join("sync");
        std::fs::create_dir_all(&sync)
            .map_err(|e| CollectError(format!("cannot create {}: {e}", sync.display())))?;
        let system_db = host.path(&conf.db_path);
        let local = private.join("local");
        let target = system_db.join("local");
        if std::fs::read_link(&local).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&local);
            std::os::unix::fs::symlink(&target, &local)
                .map_err(|e| CollectError(format!("cannot link {}: {e}", local.display())))?;
        }
        for repo in &conf.repos {
            let file = format!("{}.db", repo.name);
            let theirs = system_db.join("sync").join(&file);
            let ours = sync.join(&file);
            // Seed whenever the system's database changed since the last
            // seed (the admin ran pacman -Sy): libcurl stamps files with
            // whole seconds, so comparing times alone misses quick syncs.
            let Ok(meta) = std::fs::metadata(&theirs) else {
                continue;
            };
            let stamp = format!(
                "{} {:?}",
                meta.len(),
                meta.modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            );
            let stamp_file = sync.join(format!(".{file}.seeded-from"));
            if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
                && ours.exists()
            {
                continue;
            }
            // Write then rename: a reader never sees half a database.
            let tmp = sync.join(format!(".{file}.tmp"));
            std::fs::copy(&theirs, &tmp)
                .and_then(|_| std::fs::rename(&tmp, &ours))
                .and_then(|_| std::fs::write(&stamp_file, &stamp))
                .map_err(|e| CollectError(format!("cannot copy {}: {e}", theirs.display())))?;
        }
        Ok(())
    }

    pub(super) fn check(
        ctx: &Context<'_>,
        private_dbpath: &str,
    ) -> Result<UpdateCheck, CollectError> {
        let host = ctx.host;
        let arch = host.machine().unwrap_or_else(|_| "x86_64".into());
        let conf = parse_conf(host, "/etc/pacman.conf", &arch)?;
        let private = host.path(private_dbpath);
        prepare(host, &conf, &private)?;
        let mut handle = open_handle(host, &conf, &private)?;
        let db_dir = std::path::Path::new(&conf.db_path);
        let mut evidence = vec![
            "/etc/pacman.conf".to_string(),
            db_dir.join("local").display().to_string(),
            format!("{private_dbpath}/sync (private copy of the sync databases)"),
        ];
        evidence.extend(refresh_if_due(&mut handle, &private));
        let pending = pending_updates(&handle);
        let refreshed = refreshed_at(&conf, &private);
        let (reboot_required, reboot_evidence) = reboot(host);
        let lock = db_dir.join("db.lck");
        if host.exists(&lock.to_string_lossy()) {
            evidence.push(format!(
                "{} exists: pacman is running or was interrupted",
                lock.display()
            ));
        }
        Ok(UpdateCheck {
            pending,
            lists_refreshed_at: refreshed,
            reboot_required,
            reboot_evidence,
            broken: vec![],
            security_evidence: "Arch security advisories (security.archlinux.org) are not fetched by this agent yet: no update is marked as a security fix".into(),
            security_classified: false,
            evidence,
        })
    }

    /// A libalpm handle on the private dbpath, set up as pacman.conf says.
    fn open_handle(host: &Host, conf: &PacmanConf, private: &Path) -> Result<Alpm, CollectError> {
        let root = host.path("/");
        let mut handle = Alpm::new(
            root.to_string_lossy().as_bytes().to_vec(),
            private.to_string_lossy().as_bytes().to_vec(),
        )
        .map_err(|e| CollectError(format!("libalpm cannot open {}: {e}", private.display())))?;
        let _ = handle.set_gpgdir(
            host.path(&conf.gpg_dir)
                .to_string_lossy()
                .as_bytes()
                .to_vec(),
        );
        // libalpm matches these as pacman does (globs, group members).
        for pattern in &conf.ignore {
            let _ = handle.add_ignorepkg(pattern.as_bytes().to_vec());
        }
        for pattern in &conf.ignore_groups {
            let _ = handle.add_ignoregroup(pattern.as_bytes().to_vec());
        }
        for repo in &conf.repos {
            let db = handle
                .register_syncdb_mut(repo.name.as_bytes().to_vec(), sig_level(&repo.sig_level))
                .map_err(|e| {
                    CollectError(format!("cannot register repository {}: {e}", repo.name))
                })?;
            for s in repo.servers.iter().filter(|s| !s.contains('\0')) {
                let _ = db.add_server(s.as_bytes().to_vec());
            }
        }
        Ok(handle)
    }

    /// Refreshes the private sync databases from the mirrors when the last
    /// attempt is older than `REFRESH_EVERY`; returns what happened.
    fn refresh_if_due(handle: &mut Alpm, private: &Path) -> Option<String> {
        // libalpm stamps databases with the mirror's time, so when the
        // last attempt was is kept in a file of our own.
        let attempt = private.join(".last-refresh-attempt");
        let due = mtime(&attempt).is_none_or(|t| {
            SystemTime::now()
                .duration_since(t)
                .map(|age| age > REFRESH_EVERY)
                .unwrap_or(false)
        });
        if !due {
            return None;
        }
        let _ = std::fs::write(&attempt, b"");
        Some(match handle.syncdbs_mut().update(false) {
            Ok(_) => {
                let _ = std::fs::write(private.join(".last-refresh"), b"");
                "refreshed the private sync databases from the mirrors".into()
            }
            Err(e) => format!(
                "refreshing the private sync databases failed ({e}); using the copies as they are"
            ),
        })
    }

    /// Installed packages that a sync database has a newer version of.
    fn pending_updates(handle: &Alpm) -> Vec<PendingUpdate> {
        let mut pending = Vec::new();
        for pkg in handle.localdb().pkgs() {
            if let Some(new) = pkg.sync_new_version(handle.syncdbs()) {
                pending.push(PendingUpdate {
                    name: pkg.name().to_string(),
                    arch: None,
                    installed: pkg.version().to_string(),
                    candidate: new.version().to_string(),
                    security: false,
                    held: pkg.should_ignore(),
                    source: new.db().map(|d| d.name().to_string()).unwrap_or_default(),
                    first_seen_at: None,
                });
            }
        }
        pending
    }

    /// The newest of: our last successful refresh, a seed from the system.
    fn refreshed_at(conf: &PacmanConf, private: &Path) -> Option<DateTime<Utc>> {
        conf.repos
            .iter()
            .filter_map(|r| {
                mtime(
                    &private
                        .join("sync")
                        .join(format!(".{}.db.seeded-from", r.name)),
                )
            })
            .chain(mtime(&private.join(".last-refresh")))
            .max()
            .map(DateTime::<Utc>::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_with_includes_and_options() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, c: &str| {
            let p = d.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        };
        w(
            "/etc/pacman.conf",
            "[options]\nHoldPkg = pacman glibc\nArchitecture = auto\nIgnorePkg = linux-lts  firefox\nIgnoreGroup = kde-*\nInclude = /etc/pacman.d/options.conf\nSigLevel = Required DatabaseOptional\nLocalFileSigLevel = Optional\n\n#[testing]\n#Include = /etc/pacman.d/mirrorlist\n\n[core]\nInclude = /etc/pacman.d/mirrorlist\n\n[extra]\nInclude = /etc/pacman.d/mirrorlist\n\n[site]\nSigLevel = Never\nServer = file:///srv/repo/$repo/$arch\n",
        );
        w(
            "/etc/pacman.d/options.conf",
            "IgnorePkg = pd-glob*\nIgnoreGroup = gnome\n",
        );
        w(
            "/etc/pacman.d/mirrorlist",
            "## Germany\n#Server = https://a.example/$repo/os/$arch\nServer = https://mirror.example/archlinux/$repo/os/$arch\n",
        );
        let host = Host::fixture(d.path(), vec![]);
        let c = parse_conf(&host, "/etc/pacman.conf", "x86_64").unwrap();
        let names: Vec<&str> = c.repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["core", "extra", "site"]);
        assert_eq!(
            c.repos[0].servers,
            ["https://mirror.example/archlinux/core/os/x86_64"]
        );
        assert_eq!(c.repos[2].servers, ["file:///srv/repo/site/x86_64"]);
        assert_eq!(c.repos[2].sig_level, ["Never"]);
        assert_eq!(c.repos[1].sig_level, ["Required", "DatabaseOptional"]);
        assert_eq!(c.ignore, ["linux-lts", "firefox", "pd-glob*"]);
        assert_eq!(c.ignore_groups, ["kde-*", "gnome"]);
    }

    #[test]
    fn kernel_upgrade_needs_reboot() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(
            d.path().join("proc/sys/kernel/osrelease"),
            "6.12.1-arch1-1\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("usr/lib/modules/6.12.4-arch1-1")).unwrap();
        let host = Host::fixture(d.path(), vec![]);
        assert_eq!(reboot(&host).0, Some(true));
        std::fs::create_dir_all(d.path().join("usr/lib/modules/6.12.1-arch1-1")).unwrap();
        assert_eq!(reboot(&host).0, Some(false));
    }
}
