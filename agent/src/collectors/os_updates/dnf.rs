//! The dnf backend (Fedora, RHEL, Rocky, Alma...): installed packages from
//! `rpm -qa`, available versions and security advisories from the metadata
//! dnf keeps in its cache (primary and updateinfo of each enabled
//! repository), so no Python process runs. The cache is refreshed by dnf
//! itself (dnf-makecache.timer); `lists_refreshed_at` says how fresh it is.
//!
//! Like the apt backend, the answer is memoised until the rpm database or
//! a repository's metadata changes. Not applied: excludepkgs= and the
//! versionlock plugin (an excluded update is reported as pending).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Read};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use serde::{Deserialize, Serialize};

use super::{PendingUpdate, UpdateBackend, UpdateCheck, file_stamp, path_stamp};
use crate::collectors::{CollectError, Context};
use crate::host::Host;

const MEMO_KEY: &str = "os_updates.dnf.memo";
/// dnf 4 and dnf 5 (libdnf5) cache directories.
const CACHE_DIRS: &[&str] = &["/var/cache/dnf", "/var/cache/libdnf5"];
/// Where the rpm database may live.
const RPMDBS: &[&str] = &[
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
];
const RPM_QUERY: &str =
    "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{INSTALLTIME}\\n";
/// Packages whose update needs a reboot (as dnf needs-restarting -r).
const REBOOT_PACKAGES: &[&str] = &[
    "kernel",
    "kernel-core",
    "kernel-rt",
    "glibc",
    "linux-firmware",
    "systemd",
    "dbus",
    "dbus-broker",
    "dbus-daemon",
    "openssl-libs",
    "gnutls",
    "microcode_ctl",
];

/// The backend.
pub struct Dnf;

/// An rpm version: epoch, version, release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evr {
    /// Epoch (0 when absent).
    pub epoch: u64,
    /// Upstream version.
    pub version: String,
    /// Package release.
    pub release: String,
}

impl Evr {
    fn text(&self) -> String {
        if self.epoch == 0 {
            format!("{}-{}", self.version, self.release)
        } else {
            format!("{}:{}-{}", self.epoch, self.version, self.release)
        }
    }
}

impl Ord for Evr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| vercmp(&self.version, &other.version))
            .then_with(|| vercmp(&self.release, &other.release))
    }
}

impl PartialOrd for Evr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// rpm's version comparison (rpmvercmp): alternating runs of digits and
/// letters, separators ignored, `~` sorts before anything (pre-releases),
/// `^` after the end but before anything else (post-release snapshots).
pub fn vercmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    if a == b {
        return Equal;
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while let Some((_, rest)) = a.split_first().filter(|(c, _)| sep(**c)) {
            a = rest;
        }
        while let Some((_, rest)) = b.split_first().filter(|(c, _)| sep(**c)) {
            b = rest;
        }
        match (a.first(), b.first()) {
            (Some(b'~'), Some(b'~')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'~'), _) => return Less,
            (_, Some(b'~')) => return Greater,
            (Some(b'^'), Some(b'^')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'^'), None) => return Greater,
            (None, Some(b'^')) => return Less,
            (Some(b'^'), _) => return Less,
            (_, Some(b'^')) => return Greater,
            (None, None) => return Equal,
            (None, _) => return Less,
            (_, None) => return Greater,
            _ => {}
        }
        let numeric = a[0].is_ascii_digit();
        let take = |s: &[u8]| -> usize {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (na, nb) = (take(a), take(b));
        if nb == 0 {
            // Different kinds of segment: numbers are newer than letters.
            return if numeric { Greater } else { Less };
        }
        let (sa, sb) = (&a[..na], &b[..nb]);
        let ord = if numeric {
            let ta = trim_zeros(sa);
            let tb = trim_zeros(sb);
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            sa.cmp(sb)
        };
        if ord != Equal {
            return ord;
        }
        a = &a[na..];
        b = &b[nb..];
    }
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| **c == b'0').count();
    &s[n..]
}

/// An installed package.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Installed {
    name: String,
    arch: String,
    evr: Evr,
    installed_at: i64,
}

pub(crate) fn parse_rpm_qa(text: &str) -> Vec<Installed> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 6 || f[0] == "gpg-pubkey" {
                return None;
            }
            Some(Installed {
                name: f[0].to_string(),
                arch: f[4].to_string(),
                evr: Evr {
                    epoch: f[1].parse().unwrap_or(0),
                    version: f[2].to_string(),
                    release: f[3].to_string(),
                },
                installed_at: f[5].trim().parse().unwrap_or(0),
            })
        })
        .collect()
}

/// A package version offered by a repository.
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    arch: String,
    evr: Evr,
    repo: String,
}

/// A security advisory's fix for one package.
#[derive(Debug, Clone)]
pub(crate) struct Fix {
    id: String,
    arch: String,
    evr: Evr,
}

/// One enabled repository's cached metadata.
#[derive(Debug, Clone)]
struct RepoCache {
    id: String,
    repodata: PathBuf,
}

/// Enabled repository ids from /etc/yum.repos.d/*.repo (and dnf.conf).
fn enabled_repos(host: &Host) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut files: Vec<String> = host
        .list_dir("/etc/yum.repos.d")
        .into_iter()
        .filter(|n| n.ends_with(".repo"))
        .map(|n| format!("/etc/yum.repos.d/{n}"))
        .collect();
    files.push("/etc/dnf/dnf.conf".into());
    for f in files {
        let Ok(text) = host.read_to_string(&f) else {
            continue;
        };
        let mut section: Option<String> = None;
        let mut enabled = true;
        let mut flush = |section: &Option<String>, enabled: bool| {
            if let Some(s) = section.as_ref().filter(|s| *s != "main" && enabled) {
                out.insert(s.clone());
            }
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                flush(&section, enabled);
                section = Some(name.trim().to_string());
                enabled = true;
            } else if let Some((k, v)) = line.split_once('=')
                && k.trim() == "enabled"
            {
                enabled = matches!(v.trim(), "1" | "true" | "True" | "yes");
            }
        }
        flush(&section, enabled);
    }
    out
}

/// Cache directories of enabled repositories: `<id>-<hash>/repodata`.
fn repo_caches(host: &Host, enabled: &BTreeSet<String>) -> Vec<RepoCache> {
    let mut out = Vec::new();
    for dir in CACHE_DIRS {
        for name in host.list_dir(dir) {
            let Some((id, hash)) = name.rsplit_once('-') else {
                continue;
            };
            if hash.len() != 16
                || !hash.bytes().all(|b| b.is_ascii_hexdigit())
                || !enabled.contains(id)
            {
                continue;
            }
            let repodata = host.path(&format!("{dir}/{name}/repodata"));
            if repodata.join("repomd.xml").exists() {
                out.push(RepoCache {
                    id: id.to_string(),
                    repodata,
                });
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The file names repomd.xml gives for each metadata type.
fn repomd_locations(repodata: &std::path::Path) -> Result<HashMap<String, PathBuf>, CollectError> {
    let path = repodata.join("repomd.xml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CollectError(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.name().as_ref() {
                "data" => {
                    current = attr(&e, "type");
                }
                "location" => {
                    let href = attr(&e, "href");
                    if let (Some(t), Some(h)) = (current.clone(), href) {
                        // href is relative to the repository root.
                        let file = h.rsplit('/').next().unwrap_or(&h).to_string();
                        out.insert(t, repodata.join(file));
                    }
                }
                _ => {}
            },
            Ok(Event::Eof) => break,
            Err(e) => {
                return Err(CollectError(format!(
                    "{} is not valid XML: {e}",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Opens a metadata file, decompressing by its extension.
fn open_metadata(path: &std::path::Path) -> Result<Box<dyn BufRead>, CollectError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CollectError(format!("cannot read {}: {e}", path.display())))?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| CollectError(format!("{}: {e}", path.display())))?,
        )
    } else if name.ends_with(".xml") {
        Box::new(file)
    } else {
        return Err(CollectError(format!(
            "{} uses a compression this agent does not read (gz, zst or none)",
            path.display()
        )));
    };
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, reader)))
}

fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name).ok().flatten().and_then(|a| {
        a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .ok()
            .map(|v| v.into_owned())
    })
}

fn evr_of(e: &quick_xml::events::BytesStart<'_>, v: &str, r: &str) -> Option<Evr> {
    Some(Evr {
        epoch: attr(e, "epoch").and_then(|s| s.parse().ok()).unwrap_or(0),
        version: attr(e, v)?,
        release: attr(e, r)?,
    })
}

/// Versions of installed package names offered in primary.xml.
fn read_primary(
    path: &std::path::Path,
    repo: &str,
    wanted: &BTreeSet<&str>,
    offers: &mut HashMap<String, Vec<Offer>>,
) -> Result<(), CollectError> {
    read_primary_from(open_metadata(path)?, path, repo, wanted, offers)
}

/// [`read_primary`] on an open (uncompressed) file; `path` names it in errors.
pub(crate) fn read_primary_from(
    input: impl BufRead,
    path: &std::path::Path,
    repo: &str,
    wanted: &BTreeSet<&str>,
    offers: &mut HashMap<String, Vec<Offer>>,
) -> Result<(), CollectError> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let (mut in_name, mut in_arch) = (false, false);
    let (mut name, mut arch, mut evr): (String, String, Option<Evr>) = Default::default();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| CollectError(format!("{} is not valid XML: {e}", path.display())))?;
        match ev {
            Event::Start(e) => match e.name().as_ref() {
                "package" => {
                    name.clear();
                    arch.clear();
                    evr = None;
                }
                "name" => in_name = true,
                "arch" => in_arch = true,
                _ => {}
            },
            Event::Empty(e) if e.name().as_ref() == "version" => evr = evr_of(&e, "ver", "rel"),
            Event::Text(t) if in_name => name.push_str(t.as_ref()),
            Event::Text(t) if in_arch => arch.push_str(t.as_ref()),
            Event::End(e) => match e.name().as_ref() {
                "name" => in_name = false,
                "arch" => in_arch = false,
                "package" => {
                    if wanted.contains(name.as_str())
                        && arch != "src"
                        && let Some(evr) = evr.take()
                    {
                        offers.entry(name.clone()).or_default().push(Offer {
                            arch: arch.clone(),
                            evr,
                            repo: repo.to_string(),
                        });
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(())
}

/// Security advisories' fixed versions, by package name.
fn read_updateinfo(
    path: &std::path::Path,
    wanted: &BTreeSet<&str>,
    fixes: &mut HashMap<String, Vec<Fix>>,
) -> Result<(), CollectError> {
    read_updateinfo_from(open_metadata(path)?, path, wanted, fixes)
}

/// [`read_updateinfo`] on an open (uncompressed) file.
pub(crate) fn read_updateinfo_from(
    input: impl BufRead,
    path: &std::path::Path,
    wanted: &BTreeSet<&str>,
    fixes: &mut HashMap<String, Vec<Fix>>,
) -> Result<(), CollectError> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let (mut security, mut in_id, mut id) = (false, false, String::new());
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| CollectError(format!("{} is not valid XML: {e}", path.display())))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                "update" => {
                    security = attr(&e, "type").as_deref() == Some("security");
                    id.clear();
                }
                "id" => in_id = true,
                "package" if security => {
                    let (Some(name), Some(evr)) =
                        (attr(&e, "name"), evr_of(&e, "version", "release"))
                    else {
                        continue;
                    };
                    if wanted.contains(name.as_str()) {
                        fixes.entry(name).or_default().push(Fix {
                            id: id.clone(),
                            arch: attr(&e, "arch").unwrap_or_default(),
                            evr,
                        });
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_id => id.push_str(t.as_ref()),
            Event::End(e) if e.name().as_ref() == "id" => in_id = false,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Computed {
    pending: Vec<PendingUpdate>,
    /// Only the packages whose update needs a reboot: the memo stays small.
    reboot_relevant: Vec<Installed>,
    security_evidence: String,
    security_classified: bool,
    refreshed_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct Memo {
    inputs: Vec<(String, u64, i64)>,
    result: Computed,
}

fn compute(host: &Host, repos: &[RepoCache]) -> Result<Computed, CollectError> {
    let installed = rpm_installed(host)?;
    let wanted: BTreeSet<&str> = installed.iter().map(|i| i.name.as_str()).collect();
    let meta = RepoMetadata::read(repos, &wanted)?;
    let pending = newest_only(&installed)
        .into_iter()
        .filter_map(|inst| meta.update_for(inst))
        .collect();
    Ok(Computed {
        pending,
        reboot_relevant: installed
            .into_iter()
            .filter(|i| REBOOT_PACKAGES.contains(&i.name.as_str()))
            .collect(),
        security_classified: !meta.with_updateinfo.is_empty(),
        security_evidence: meta.security_evidence(),
        refreshed_at: meta.refreshed.into_iter().min(),
    })
}

/// The installed packages, from `rpm -qa`.
fn rpm_installed(host: &Host) -> Result<Vec<Installed>, CollectError> {
    let out = host
        .run("rpm", &["-qa", "--qf", RPM_QUERY])
        .map_err(|e| CollectError(format!("cannot run rpm -qa: {e}")))?;
    if !out.success() {
        return Err(CollectError(format!(
            "rpm -qa failed: {}",
            out.stderr.lines().next().unwrap_or("no message")
        )));
    }
    Ok(parse_rpm_qa(&out.stdout))
}

/// The installed packages that are the newest installed version of their
/// name and arch: with several installed versions (kernels) only that counts.
fn newest_only(installed: &[Installed]) -> Vec<&Installed> {
    let mut newest: HashMap<(&str, &str), &Evr> = HashMap::new();
    for i in installed {
        let e = newest
            .entry((i.name.as_str(), i.arch.as_str()))
            .or_insert(&i.evr);
        if i.evr > **e {
            *e = &i.evr;
        }
    }
    installed
        .iter()
        .filter(|i| newest.get(&(i.name.as_str(), i.arch.as_str())) == Some(&&i.evr))
        .collect()
}

/// What the enabled repositories' metadata says about installed packages.
#[derive(Default)]
struct RepoMetadata {
    offers: HashMap<String, Vec<Offer>>,
    fixes: HashMap<String, Vec<Fix>>,
    /// Ids of the repositories that publish updateinfo.
    with_updateinfo: Vec<String>,
    /// When each repository's metadata was fetched.
    refreshed: Vec<DateTime<Utc>>,
}

impl RepoMetadata {
    /// Reads every repository's metadata about the `wanted` package names.
    fn read(repos: &[RepoCache], wanted: &BTreeSet<&str>) -> Result<Self, CollectError> {
        let mut meta = Self::default();
        for repo in repos {
            meta.add_repo(repo, wanted)?;
        }
        Ok(meta)
    }

    fn add_repo(&mut self, repo: &RepoCache, wanted: &BTreeSet<&str>) -> Result<(), CollectError> {
        let locations = repomd_locations(&repo.repodata)?;
        if let Ok(t) =
            std::fs::metadata(repo.repodata.join("repomd.xml")).and_then(|m| m.modified())
        {
            self.refreshed.push(t.into());
        }
        let primary = locations.get("primary").ok_or_else(|| {
            CollectError(format!(
                "{}/repomd.xml lists no primary metadata",
                repo.repodata.display()
            ))
        })?;
        read_primary(primary, &repo.id, wanted, &mut self.offers)?;
        if let Some(ui) = locations.get("updateinfo").filter(|p| p.exists()) {
            read_updateinfo(ui, wanted, &mut self.fixes)?;
            self.with_updateinfo.push(repo.id.clone());
        }
        Ok(())
    }

    /// The newest offered version of `inst`, with the advisories it fixes.
    fn update_for(&self, inst: &Installed) -> Option<PendingUpdate> {
        // Same architecture, or noarch on either side (packages move).
        let fits = |arch: &str| arch == inst.arch || arch == "noarch" || inst.arch == "noarch";
        let best = self
            .offers
            .get(&inst.name)
            .into_iter()
            .flatten()
            .filter(|o| fits(&o.arch) && o.evr > inst.evr)
            .max_by(|a, b| a.evr.cmp(&b.evr))?;
        let advisories: BTreeSet<String> = self
            .fixes
            .get(&inst.name)
            .into_iter()
            .flatten()
            .filter(|f| fits(&f.arch) && f.evr > inst.evr && f.evr <= best.evr)
            .map(|f| f.id.clone())
            .collect();
        Some(PendingUpdate {
            name: inst.name.clone(),
            arch: Some(inst.arch.clone()),
            installed: inst.evr.text(),
            candidate: best.evr.text(),
            security: !advisories.is_empty(),
            held: false,
            source: if advisories.is_empty() {
                best.repo.clone()
            } else {
                format!(
                    "{} ({})",
                    best.repo,
                    advisories.into_iter().collect::<Vec<_>>().join(", ")
                )
            },
            first_seen_at: None,
        })
    }

    /// What the evidence says about how security updates are recognised.
    fn security_evidence(&self) -> String {
        if self.with_updateinfo.is_empty() {
            "no enabled repository publishes updateinfo: no update can be told to be a security fix"
                .into()
        } else {
            format!(
                "an update is a security fix when a security advisory in updateinfo fixes it: {}",
                self.with_updateinfo.join(", ")
            )
        }
    }
}

/// A newer kernel than the running one, or a core package updated since boot.
fn reboot(host: &Host, installed: &[Installed]) -> (Option<bool>, String) {
    let boot = host.read_to_string("/proc/stat").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
    });
    let Some(boot) = boot else {
        return (None, "/proc/stat has no boot time".into());
    };
    let mut since_boot: Vec<&str> = installed
        .iter()
        .filter(|i| REBOOT_PACKAGES.contains(&i.name.as_str()) && i.installed_at > boot)
        .map(|i| i.name.as_str())
        .collect();
    since_boot.sort();
    since_boot.dedup();
    if since_boot.is_empty() {
        (
            Some(false),
            "no kernel or core library package was updated since boot".into(),
        )
    } else {
        (
            Some(true),
            format!("updated since boot: {}", since_boot.join(", ")),
        )
    }
}

impl UpdateBackend for Dnf {
    fn name(&self) -> &'static str {
        "dnf"
    }

    fn detect(&self, host: &Host) -> bool {
        (host.find_program("dnf").is_some() || host.find_program("dnf5").is_some())
            && host.find_program("rpm").is_some()
    }

    fn check(&self, ctx: &Context<'_>) -> Result<UpdateCheck, CollectError> {
        let host = ctx.host;
        let repos = repo_caches(host, &enabled_repos(host));
        let mut inputs: Vec<(String, u64, i64)> =
            RPMDBS.iter().map(|p| file_stamp(host, p)).collect();
        for r in &repos {
            inputs.push(path_stamp(&r.repodata.join("repomd.xml")));
        }
        let memo: Option<Memo> = ctx
            .cache
            .get(MEMO_KEY)
            .and_then(|v| serde_json::from_value(v).ok());
        let computed = match memo {
            Some(m) if m.inputs == inputs => m.result,
            _ => {
                let result = compute(host, &repos)?;
                if let Ok(v) = serde_json::to_value(Memo {
                    inputs,
                    result: result.clone(),
                }) {
                    ctx.cache.put(MEMO_KEY, &v);
                }
                result
            }
        };
        let (reboot_required, reboot_evidence) = reboot(host, &computed.reboot_relevant);
        let mut evidence = vec!["rpm -qa".to_string()];
        evidence.extend(
            repos
                .iter()
                .map(|r| format!("{}/repomd.xml", r.repodata.display())),
        );
        if repos.is_empty() {
            evidence.push(
                "no cached metadata of an enabled repository: run dnf makecache (dnf-makecache.timer does this)".into(),
            );
        }
        Ok(UpdateCheck {
            pending: computed.pending,
            lists_refreshed_at: computed.refreshed_at,
            reboot_required,
            reboot_evidence,
            broken: vec![],
            security_evidence: computed.security_evidence,
            security_classified: computed.security_classified,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn vercmp_follows_rpm() {
        // Expectations from rpm's own test suite semantics.
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("1.0010", "1.9", Greater),
            ("1.05", "1.5", Equal),
            ("1.0a", "1.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("2a", "2.0", Less),
            ("1.el8", "1.el8_1", Less),
            ("5.5p1", "5.5p10", Less),
            ("abc", "abd", Less),
            ("1.fc41", "1.fc41", Equal),
        ] {
            assert_eq!(vercmp(a, b), want, "{a} vs {b}");
            assert_eq!(vercmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn vercmp_agrees_with_the_real_rpm() {
        let pairs = [
            ("1.0", "1.0.0"),
            ("1_0", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0^", "1.0"),
            ("1.0^^", "1.0^"),
            ("a", "1"),
            ("10b2", "10a1"),
            ("4.999.9", "5.0"),
            ("2.0.0", "2_0_0"),
            ("1.0~rc1^git", "1.0~rc1"),
            ("0001", "1"),
            ("6.11.4-301.fc41", "6.11.10-300.fc41"),
        ];
        for (a, b) in pairs {
            let out = std::process::Command::new("rpm")
                .arg("--eval")
                .arg(format!("%{{lua: print(rpm.vercmp(\"{a}\", \"{b}\"))}}"))
                .output()
                .expect("rpm is needed for this test (scripts/test installs it)");
            let rpm: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            assert_eq!(vercmp(a, b) as i32, rpm.signum(), "{a} vs {b}");
        }
    }

    #[test]
    fn rpm_query_lines() {
        let got = parse_rpm_qa(
            "bash\t0\t5.2.26\t3.fc41\tx86_64\t1730000000\ngpg-pubkey\t0\te99d6ad1\t64d2612c\t(none)\t1\nbroken line\n",
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].evr.text(), "5.2.26-3.fc41");
    }
}
