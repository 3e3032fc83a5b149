//! The apt backend (Debian, Ubuntu, Mint...): installed versions from the
//! dpkg status file against the versions in apt's downloaded package
//! lists, chosen the way apt chooses a candidate (pin priority, then
//! version), without running apt.
//!
//! The lists can be large (Debian main is ~70 MB uncompressed), so the
//! answer is memoised in the cache and recomputed only when the status
//! file, a list or a Release file changed size or modification time.
//!
//! Not read: /etc/apt/preferences pins (default priorities only).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use chrono::{DateTime, Utc};
use debian_packaging::control::{ControlParagraph, ControlParagraphReader};
use debian_packaging::package_version::PackageVersion;
use serde::{Deserialize, Serialize};

use super::{PendingUpdate, UpdateBackend, UpdateCheck, file_stamp};
use crate::collectors::{CollectError, Context};
use crate::host::Host;

const STATUS: &str = "/var/lib/dpkg/status";
const LISTS: &str = "/var/lib/apt/lists";
const MEMO_KEY: &str = "os_updates.apt.memo";

/// The backend.
pub struct Apt;

impl UpdateBackend for Apt {
    fn name(&self) -> &'static str {
        "apt"
    }

    fn detect(&self, host: &Host) -> bool {
        host.exists(STATUS) && host.find_program("apt-get").is_some()
    }

    fn check(&self, ctx: &Context<'_>) -> Result<UpdateCheck, CollectError> {
        let host = ctx.host;
        let inputs = Inputs::scan(host);
        let memo: Option<Memo> = ctx
            .cache
            .get(MEMO_KEY)
            .and_then(|v| serde_json::from_value(v).ok());
        let computed = match memo {
            Some(m) if m.inputs == inputs.stamps => m.result,
            _ => {
                let result = compute(host, &inputs)?;
                let memo = Memo {
                    inputs: inputs.stamps.clone(),
                    result: result.clone(),
                };
                if let Ok(v) = serde_json::to_value(&memo) {
                    ctx.cache.put(MEMO_KEY, &v);
                }
                result
            }
        };
        let (reboot_required, reboot_evidence) = reboot(host, &computed.kernels);
        let mut evidence = vec![STATUS.to_string()];
        evidence.extend(inputs.lists.iter().map(|l| format!("{LISTS}/{}", l.file)));
        let refreshed = if inputs.lists.is_empty() {
            evidence.push(format!(
                "apt has no package lists in {LISTS}: nothing is known about updates until `apt update` runs"
            ));
            None
        } else {
            lists_refreshed_at(host)
        };
        Ok(UpdateCheck {
            pending: computed.pending,
            lists_refreshed_at: refreshed,
            reboot_required: Some(reboot_required),
            reboot_evidence,
            broken: computed.broken,
            security_evidence: computed.security_evidence,
            security_classified: computed.security_classified,
            evidence,
        })
    }
}

/// What is worth remembering between runs: the expensive part.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Computed {
    pending: Vec<PendingUpdate>,
    broken: Vec<String>,
    security_evidence: String,
    security_classified: bool,
    /// Installed kernel image releases (`6.1.0-27-amd64`).
    kernels: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Memo {
    inputs: Vec<(String, u64, i64)>,
    result: Computed,
}

/// One package index and the Release file that describes its source.
#[derive(Debug, Clone)]
struct ListFile {
    file: String,
    release: Option<String>,
}

/// The files the answer depends on, with their sizes and times.
struct Inputs {
    lists: Vec<ListFile>,
    stamps: Vec<(String, u64, i64)>,
}

impl Inputs {
    fn scan(host: &Host) -> Self {
        let names = host.list_dir(LISTS);
        let releases: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with("_InRelease") || n.ends_with("_Release"))
            .collect();
        let mut lists = Vec::new();
        for n in &names {
            let base = n
                .trim_end_matches(".lz4")
                .trim_end_matches(".gz")
                .trim_end_matches(".xz");
            if !base.ends_with("_Packages") {
                continue;
            }
            // The Release file whose name is the longest prefix of ours.
            let release = releases
                .iter()
                .filter_map(|r| {
                    let prefix = r
                        .strip_suffix("InRelease")
                        .or_else(|| r.strip_suffix("Release"))?;
                    n.starts_with(prefix).then_some((prefix.len(), r))
                })
                .max_by_key(|(len, r)| (*len, r.ends_with("_InRelease")))
                .map(|(_, r)| (*r).clone());
            lists.push(ListFile {
                file: n.clone(),
                release,
            });
        }
        let mut stamps = vec![file_stamp(host, STATUS)];
        for l in &lists {
            stamps.push(file_stamp(host, &format!("{LISTS}/{}", l.file)));
            if let Some(r) = &l.release {
                stamps.push(file_stamp(host, &format!("{LISTS}/{r}")));
            }
        }
        Self { lists, stamps }
    }
}

/// An installed package from the dpkg status file.
#[derive(Debug)]
pub(crate) struct Installed {
    version: String,
    parsed: PackageVersion,
    held: bool,
}

/// A version offered by one source.
#[derive(Debug)]
struct Offer {
    version: PackageVersion,
    text: String,
    priority: i32,
    security: bool,
    source: String,
}

/// Offers of installed packages by (name, arch).
type Offers = HashMap<(String, String), Vec<Offer>>;

fn compute(host: &Host, inputs: &Inputs) -> Result<Computed, CollectError> {
    let status = host
        .read_to_string(STATUS)
        .map_err(|e| CollectError(format!("cannot read {STATUS}: {e}")))?;
    let (installed, broken, kernels) = parse_status(&status)?;
    let (offers, security_sources) = collect_offers(host, inputs, &installed)?;
    let pending = installed
        .iter()
        .filter_map(|((name, arch), inst)| {
            candidate(name, arch, inst, &offers_for(&offers, name, arch))
        })
        .collect();
    Ok(Computed {
        pending,
        broken,
        security_classified: !security_sources.is_empty(),
        security_evidence: security_evidence(&security_sources),
        kernels,
    })
}

/// Every version the lists offer for installed packages, and the labels
/// of the security sources among the lists.
fn collect_offers(
    host: &Host,
    inputs: &Inputs,
    installed: &BTreeMap<(String, String), Installed>,
) -> Result<(Offers, Vec<String>), CollectError> {
    let mut offers = Offers::new();
    let mut security_sources = Vec::new();
    let mut release_cache: HashMap<String, Release> = HashMap::new();
    for list in &inputs.lists {
        let release = list_release(host, list, &mut release_cache);
        if release.security && !security_sources.contains(&release.label()) {
            security_sources.push(release.label());
        }
        let path = format!("{LISTS}/{}", list.file);
        let input = open_list(host, &path)?;
        scan_packages(input, &path, installed, |name, arch, version| {
            let Ok(parsed) = PackageVersion::parse(version) else {
                return;
            };
            offers
                .entry((name.to_string(), arch.to_string()))
                .or_default()
                .push(Offer {
                    version: parsed,
                    text: version.to_string(),
                    priority: release.priority(),
                    security: release.security,
                    source: release.label(),
                });
        })?;
    }
    Ok((offers, security_sources))
}

/// The Release file describing a list's source; each is read once.
fn list_release(host: &Host, list: &ListFile, cache: &mut HashMap<String, Release>) -> Release {
    match &list.release {
        Some(r) => cache
            .entry(r.clone())
            .or_insert_with(|| {
                host.read_to_string(&format!("{LISTS}/{r}"))
                    .map(|t| Release::parse(&t))
                    .unwrap_or_default()
            })
            .clone(),
        None => Release::default(),
    }
}

/// The offers that could replace the installed `name:arch`.
fn offers_for<'a>(offers: &'a Offers, name: &str, arch: &str) -> Vec<&'a Offer> {
    let mut mine: Vec<&Offer> = Vec::new();
    for key in [
        (name.to_string(), arch.to_string()),
        (name.to_string(), "all".to_string()),
    ] {
        if let Some(o) = offers.get(&key) {
            mine.extend(o.iter());
        }
    }
    if arch == "all" {
        // An arch:all package may become arch-specific in a new version.
        for (_, o) in offers.iter().filter(|((n, a), _)| n == name && a != "all") {
            mine.extend(o.iter());
        }
    }
    mine
}

/// The update apt would pick for one installed package, if any.
fn candidate(name: &str, arch: &str, inst: &Installed, mine: &[&Offer]) -> Option<PendingUpdate> {
    if mine.is_empty() {
        return None;
    }
    // apt's choice: versions newer than the installed one (below pin
    // priority 1000 apt never downgrades), the highest pin priority
    // first, then the highest version. The installed version keeps
    // at least priority 100 and wins ties against newer versions of
    // lower priority.
    let priority_of = |v: &PackageVersion| {
        let from_sources = mine
            .iter()
            .filter(|o| &o.version == v)
            .map(|o| o.priority)
            .max();
        let installed = (v == &inst.parsed).then_some(100);
        from_sources.max(installed).unwrap_or(0)
    };
    let best = mine
        .iter()
        .filter(|o| o.version > inst.parsed)
        .max_by(|a, b| {
            (priority_of(&a.version), &a.version).cmp(&(priority_of(&b.version), &b.version))
        })?;
    if priority_of(&best.version) < priority_of(&inst.parsed) {
        return None;
    }
    let security = mine.iter().any(|o| o.version == best.version && o.security);
    let source = mine
        .iter()
        .filter(|o| o.version == best.version)
        .map(|o| o.source.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ");
    Some(PendingUpdate {
        name: name.to_string(),
        arch: Some(arch.to_string()),
        installed: inst.version.clone(),
        candidate: best.text.clone(),
        security,
        held: inst.held,
        source,
        first_seen_at: None,
    })
}

/// What the evidence says about how security updates are recognised.
fn security_evidence(security_sources: &[String]) -> String {
    if security_sources.is_empty() {
        "no security source is configured (no list from a suite ending in -security or labelled Debian-Security); no update can be told to be a security fix".to_string()
    } else {
        format!(
            "an update is a security fix when its candidate version is offered by a security suite: {}",
            security_sources.join(", ")
        )
    }
}

type StatusParse = (
    BTreeMap<(String, String), Installed>,
    Vec<String>,
    Vec<String>,
);

/// Installed packages by (name, arch), broken ones, installed kernel releases.
pub(crate) fn parse_status(text: &str) -> Result<StatusParse, CollectError> {
    let mut installed = BTreeMap::new();
    let mut broken = Vec::new();
    let mut kernels = Vec::new();
    for p in ControlParagraphReader::new(std::io::Cursor::new(text.as_bytes())) {
        let p: ControlParagraph =
            p.map_err(|e| CollectError(format!("{STATUS} is not a valid control file: {e}")))?;
        let (Some(name), Some(status)) = (p.field_str("Package"), p.field_str("Status")) else {
            continue;
        };
        let words: Vec<&str> = status.split_whitespace().collect();
        let [want, flag, state] = words[..] else {
            continue;
        };
        let version = p.field_str("Version").unwrap_or("");
        let arch = p.field_str("Architecture").unwrap_or("all");
        if flag == "reinstreq"
            || matches!(
                state,
                "half-installed" | "unpacked" | "half-configured" | "triggers-awaited"
            )
        {
            broken.push(format!("{name}:{arch} {version} ({state})"));
        }
        if state != "installed" {
            continue;
        }
        if let Some(release) = name
            .strip_prefix("linux-image-")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        {
            kernels.push(release.to_string());
        }
        let Ok(parsed) = PackageVersion::parse(version) else {
            continue;
        };
        installed.insert(
            (name.to_string(), arch.to_string()),
            Installed {
                version: version.to_string(),
                parsed,
                held: want == "hold",
            },
        );
    }
    Ok((installed, broken, kernels))
}

/// What a Release file says about its source.
#[derive(Debug, Clone, Default)]
struct Release {
    origin: String,
    suite: String,
    codename: String,
    label: String,
    not_automatic: bool,
    but_automatic_upgrades: bool,
    security: bool,
}

impl Release {
    fn parse(text: &str) -> Self {
        // InRelease is a cleartext-signed Release; apt verified it already.
        let body = match text.find("\n\n") {
            Some(i) if text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") => &text[i + 2..],
            _ => text,
        };
        let body = body
            .split("\n-----BEGIN PGP SIGNATURE-----")
            .next()
            .unwrap_or(body);
        let para = ControlParagraphReader::new(std::io::Cursor::new(body.as_bytes()))
            .next()
            .and_then(|r| r.ok());
        let Some(p) = para else {
            return Self::default();
        };
        let f = |k: &str| p.field_str(k).unwrap_or("").trim().to_string();
        let mut r = Self {
            origin: f("Origin"),
            suite: f("Suite"),
            codename: f("Codename"),
            label: f("Label"),
            not_automatic: f("NotAutomatic").eq_ignore_ascii_case("yes"),
            but_automatic_upgrades: f("ButAutomaticUpgrades").eq_ignore_ascii_case("yes"),
            security: false,
        };
        r.security = r.suite.ends_with("-security")
            || r.codename.ends_with("-security")
            || r.label.eq_ignore_ascii_case("Debian-Security");
        r
    }

    /// apt's default pin priority for this source.
    fn priority(&self) -> i32 {
        match (self.not_automatic, self.but_automatic_upgrades) {
            (true, true) => 100,
            (true, false) => 1,
            _ => 500,
        }
    }

    fn label(&self) -> String {
        let suite = if self.suite.is_empty() {
            &self.codename
        } else {
            &self.suite
        };
        match (self.origin.is_empty(), suite.is_empty()) {
            (false, false) => format!("{}:{}", self.origin, suite),
            (true, false) => suite.to_string(),
            (false, true) => self.origin.clone(),
            (true, true) => "unknown source".to_string(),
        }
    }
}

/// Opens a package list, decompressing what apt may have kept compressed.
fn open_list(host: &Host, path: &str) -> Result<Box<dyn Read>, CollectError> {
    let file = std::fs::File::open(host.path(path))
        .map_err(|e| CollectError(format!("cannot read {path}: {e}")))?;
    if path.ends_with(".lz4") {
        Ok(Box::new(lz4_flex::frame::FrameDecoder::new(file)))
    } else if path.ends_with(".gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(file)))
    } else if path.ends_with(".xz") {
        Err(CollectError(format!(
            "{path} is xz-compressed, which this agent does not read; set Acquire::GzipIndexes to lz4 or gz, or leave lists uncompressed"
        )))
    } else {
        Ok(Box::new(file))
    }
}

/// Calls `found(name, arch, version)` for each paragraph of a Packages
/// file that names an installed package. The list is read in chunks (a
/// list can be 70 MB) and paragraphs of packages that are not installed
/// are skipped after their first field.
pub(crate) fn scan_packages(
    mut input: impl Read,
    path: &str,
    installed: &BTreeMap<(String, String), Installed>,
    mut found: impl FnMut(&str, &str, &str),
) -> Result<(), CollectError> {
    const CHUNK: usize = 1 << 20;
    let names: std::collections::HashSet<&str> =
        installed.keys().map(|(n, _)| n.as_str()).collect();
    let finder = memchr::memmem::Finder::new(b"\n\n");
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    let mut eof = false;
    while !eof {
        let start = buf.len();
        buf.resize(start + CHUNK, 0);
        let n = input
            .read(&mut buf[start..])
            .map_err(|e| CollectError(format!("{path} cannot be read: {e}")))?;
        buf.truncate(start + n);
        eof = n == 0;
        // Whole paragraphs only; the tail waits for the next chunk.
        let mut pos = 0;
        loop {
            let end = match finder.find(&buf[pos..]) {
                Some(i) => pos + i,
                None if eof && pos < buf.len() => buf.len(),
                None => break,
            };
            let para = &buf[pos..end];
            pos = (end + 2).min(buf.len());
            if let Some(name) = field(para, b"Package")
                && names.contains(name)
                && let (Some(version), Some(arch)) =
                    (field(para, b"Version"), field(para, b"Architecture"))
            {
                found(name, arch, version);
            }
            if pos >= buf.len() {
                break;
            }
        }
        buf.drain(..pos);
    }
    Ok(())
}

/// The value of a single-line field of one paragraph.
fn field<'a>(para: &'a [u8], name: &[u8]) -> Option<&'a str> {
    for line in para.split(|&b| b == b'\n') {
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
        {
            return std::str::from_utf8(&line[name.len() + 1..])
                .ok()
                .map(str::trim);
        }
    }
    None
}

/// When `apt update` last succeeded: the periodic stamp that
/// apt.systemd.daily and update-notifier write, else the newest change in
/// the lists directory (apt renames fresh lists into place).
fn lists_refreshed_at(host: &Host) -> Option<DateTime<Utc>> {
    let mtime = |p: &str| {
        std::fs::metadata(host.path(p))
            .and_then(|m| m.modified())
            .ok()
            .map(DateTime::<Utc>::from)
    };
    mtime("/var/lib/apt/periodic/update-success-stamp").or_else(|| mtime(LISTS))
}

/// Debian's convention (/run/reboot-required), else a newer kernel image
/// installed than the one running.
fn reboot(host: &Host, kernels: &[String]) -> (bool, String) {
    if host.exists("/run/reboot-required") {
        let pkgs = host
            .read_to_string("/run/reboot-required.pkgs")
            .map(|t| {
                let mut v: Vec<&str> = t.split_whitespace().collect();
                v.sort();
                v.dedup();
                v.join(", ")
            })
            .unwrap_or_default();
        return (
            true,
            if pkgs.is_empty() {
                "/run/reboot-required exists".to_string()
            } else {
                format!("/run/reboot-required exists, for {pkgs}")
            },
        );
    }
    let running = host
        .read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let version = |release: &str| {
        // 6.1.0-27-amd64 -> 6.1.0-27, compared as a Debian version.
        let numeric: String = release
            .split('-')
            .take_while(|p| p.starts_with(|c: char| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join("-");
        PackageVersion::parse(&numeric).ok()
    };
    let flavour = |release: &str| {
        release
            .split('-')
            .skip_while(|p| p.starts_with(|c: char| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join("-")
    };
    let running_version = version(&running);
    let newest = kernels
        .iter()
        .filter(|k| flavour(k) == flavour(&running))
        .filter_map(|k| version(k).map(|v| (v, k)))
        .max();
    match (newest, running_version) {
        (Some((newest_v, newest)), Some(run_v)) if newest_v > run_v => (
            true,
            format!("kernel {newest} is installed but {running} is running"),
        ),
        (Some(_), _) => (
            false,
            format!(
                "no /run/reboot-required; the running kernel {running} is the newest installed"
            ),
        ),
        (None, _) => (
            false,
            format!(
                "no /run/reboot-required; no installed linux-image package matches the running kernel {running} (a container, or a kernel not from a package)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::{Cache, MemoryCache};
    use serde_json::Value;

    const STATUS_TEXT: &str = "\
Package: hello
Status: install ok installed
Architecture: amd64
Version: 1.0-1

Package: libfoo1
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2:1.2-3
Description: a library
 with a long description
 .
 over lines

Package: libfoo1
Status: install ok installed
Architecture: i386
Version: 2:1.2-3

Package: pinned
Status: hold ok installed
Architecture: all
Version: 1.0

Package: broken
Status: install reinstreq half-configured
Architecture: amd64
Version: 0.9

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1

Package: linux-image-6.1.0-26-amd64
Status: install ok installed
Architecture: amd64
Version: 6.1.112-1

Package: linux-image-6.1.0-27-amd64
Status: install ok installed
Architecture: amd64
Version: 6.1.115-1
";

    const MAIN_RELEASE: &str = "-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: Debian
Label: Debian
Suite: stable
Codename: bookworm
SHA256:
 0000 1 main/binary-amd64/Packages
-----BEGIN PGP SIGNATURE-----

iQ==
-----END PGP SIGNATURE-----
";

    const SECURITY_RELEASE: &str = "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: bookworm-security\n";
    const BACKPORTS_RELEASE: &str = "Origin: Debian Backports\nLabel: Debian Backports\nSuite: stable-backports\nCodename: bookworm-backports\nNotAutomatic: yes\nButAutomaticUpgrades: yes\n";

    fn tree(extra: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let main = "Package: hello\nVersion: 1.1-1\nArchitecture: amd64\n\nPackage: notinstalled\nVersion: 9\nArchitecture: amd64\n\nPackage: libfoo1\nVersion: 2:1.2-3\nArchitecture: amd64\n\nPackage: pinned\nVersion: 2.0\nArchitecture: all\n";
        let security = "Package: libfoo1\nVersion: 2:1.2-3+deb12u1\nArchitecture: amd64\n\nPackage: libfoo1\nVersion: 2:1.2-3+deb12u1\nArchitecture: i386\n";
        let backports = "Package: hello\nVersion: 3.0-1~bpo12+1\nArchitecture: amd64\n";
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut lz4, security.as_bytes()).unwrap();
        let security_lz4 = lz4.finish().unwrap();
        let mut files: Vec<(&str, &[u8])> = vec![
            ("var/lib/dpkg/status", STATUS_TEXT.as_bytes()),
            ("usr/bin/apt-get", b"#!/bin/sh\n"),
            ("proc/sys/kernel/osrelease", b"6.1.0-26-amd64\n"),
            (
                "var/lib/apt/lists/deb.example_debian_dists_bookworm_InRelease",
                MAIN_RELEASE.as_bytes(),
            ),
            (
                "var/lib/apt/lists/deb.example_debian_dists_bookworm_main_binary-amd64_Packages",
                main.as_bytes(),
            ),
            (
                "var/lib/apt/lists/deb.example_debian-security_dists_bookworm-security_Release",
                SECURITY_RELEASE.as_bytes(),
            ),
            (
                "var/lib/apt/lists/deb.example_debian-security_dists_bookworm-security_main_binary-amd64_Packages.lz4",
                &security_lz4,
            ),
            (
                "var/lib/apt/lists/deb.example_debian_dists_bookworm-backports_Release",
                BACKPORTS_RELEASE.as_bytes(),
            ),
            (
                "var/lib/apt/lists/deb.example_debian_dists_bookworm-backports_main_binary-amd64_Packages",
                backports.as_bytes(),
            ),
        ];
        files.extend_from_slice(extra);
        for (p, c) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, c).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            d.path().join("usr/bin/apt-get"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        d
    }

    #[test]
    fn candidates_security_holds_and_kernels() {
        let d = tree(&[]);
        let host = Host::fixture(d.path(), vec![]);
        assert!(Apt.detect(&host));
        let cache = MemoryCache::default();
        let c = Apt.check(&Context::new(&host, &cache)).unwrap();
        let got: Vec<(String, String, String, bool, bool)> = {
            let mut v: Vec<_> = c
                .pending
                .iter()
                .map(|p| {
                    (
                        format!("{}:{}", p.name, p.arch.as_deref().unwrap()),
                        p.installed.clone(),
                        p.candidate.clone(),
                        p.security,
                        p.held,
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            got,
            vec![
                // Backports (priority 100) loses to the 500 of stable.
                (
                    "hello:amd64".into(),
                    "1.0-1".into(),
                    "1.1-1".into(),
                    false,
                    false
                ),
                (
                    "libfoo1:amd64".into(),
                    "2:1.2-3".into(),
                    "2:1.2-3+deb12u1".into(),
                    true,
                    false
                ),
                (
                    "libfoo1:i386".into(),
                    "2:1.2-3".into(),
                    "2:1.2-3+deb12u1".into(),
                    true,
                    false
                ),
                ("pinned:all".into(), "1.0".into(), "2.0".into(), false, true),
            ]
        );
        assert_eq!(c.broken, vec!["broken:amd64 0.9 (half-configured)"]);
        assert_eq!(c.reboot_required, Some(true));
        assert!(
            c.reboot_evidence.contains("6.1.0-27-amd64"),
            "{}",
            c.reboot_evidence
        );
        assert!(
            c.security_evidence.contains("Debian:stable-security"),
            "{}",
            c.security_evidence
        );
        assert!(c.lists_refreshed_at.is_some());
        assert!(cache.get(MEMO_KEY).is_some(), "the answer is memoised");
    }

    #[test]
    fn backports_upgrade_what_came_from_backports() {
        // hello installed from backports: only backports offers newer.
        let status = STATUS_TEXT.replace("Version: 1.0-1", "Version: 2.0-1~bpo12+1");
        let d = tree(&[("var/lib/dpkg/status", status.as_bytes())]);
        let host = Host::fixture(d.path(), vec![]);
        let c = Apt
            .check(&Context::new(&host, &MemoryCache::default()))
            .unwrap();
        let hello = c.pending.iter().find(|p| p.name == "hello").unwrap();
        assert_eq!(hello.candidate, "3.0-1~bpo12+1");
        assert_eq!(hello.source, "Debian Backports:stable-backports");
    }

    #[test]
    fn memo_is_used_until_an_input_changes() {
        let d = tree(&[]);
        let host = Host::fixture(d.path(), vec![]);
        let cache = MemoryCache::default();
        let first = Apt.check(&Context::new(&host, &cache)).unwrap();
        // Poison the memo's result: a hit must return it unchanged.
        let mut memo = cache.get(MEMO_KEY).unwrap();
        memo["result"]["pending"] = Value::Array(vec![]);
        cache.put(MEMO_KEY, &memo);
        let hit = Apt.check(&Context::new(&host, &cache)).unwrap();
        assert!(hit.pending.is_empty(), "unchanged inputs reuse the memo");
        // A changed status file invalidates it.
        let status = d.path().join("var/lib/dpkg/status");
        std::fs::write(&status, format!("{STATUS_TEXT}\n")).unwrap();
        let again = Apt.check(&Context::new(&host, &cache)).unwrap();
        assert_eq!(again.pending, first.pending);
    }

    #[test]
    fn reboot_required_file_wins() {
        let d = tree(&[
            ("run/reboot-required", b"*** System restart required ***\n"),
            ("run/reboot-required.pkgs", b"libc6\nlinux-base\nlibc6\n"),
        ]);
        let host = Host::fixture(d.path(), vec![]);
        let c = Apt
            .check(&Context::new(&host, &MemoryCache::default()))
            .unwrap();
        assert_eq!(c.reboot_required, Some(true));
        assert!(
            c.reboot_evidence.ends_with("for libc6, linux-base"),
            "{}",
            c.reboot_evidence
        );
    }

    #[test]
    fn damaged_inputs_are_named() {
        let d = tree(&[(
            "var/lib/apt/lists/x_dists_y_main_binary-amd64_Packages.lz4",
            b"not lz4 at all",
        )]);
        let host = Host::fixture(d.path(), vec![]);
        let e = Apt
            .check(&Context::new(&host, &MemoryCache::default()))
            .unwrap_err();
        assert!(
            e.0.contains("x_dists_y_main_binary-amd64_Packages.lz4"),
            "{e}"
        );
    }
}
