//! Entry points of the server's fuzz targets (tests/fuzz, run with
//! scripts/fuzz) and of the test that replays their corpora on every
//! build. Each feeds untrusted bytes to one parser or builder and panics
//! when an output breaks what the input's consumers rely on: an index that
//! lists other packages than its records, markup that does not parse, a
//! re-signed Release that changed more than its dates, a client address
//! that the client itself chose.
//!
//! Inputs of several parts are split at NUL bytes, in the order each
//! function names.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use penguindome_protocol::fuzzing::Target;
use penguindome_protocol::keys::SecretKey;

use crate::http::TrustedProxies;
use crate::release::spec::{Family, PackageRecord};
use crate::release::{apt_repo, dnf_repo, pacman_repo};

/// Index files as the builders return them.
type Files = Vec<(String, Vec<u8>)>;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("fuzz").expect("a signing key"))
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The parts of a multi-part input.
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    out.resize(n, b"");
    out
}

fn number(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

/// A record as a release writes it, for the family's index to hold beside
/// the hostile one.
fn genuine(family: Family) -> PackageRecord {
    let (arch, file_name, location) = match family {
        Family::Deb => (
            "amd64",
            "a_1.0-1_amd64.deb",
            "pool/main/a/a/a_1.0-1_amd64.deb",
        ),
        Family::Rpm => (
            "x86_64",
            "a-1.0-1.x86_64.rpm",
            "Packages/a-1.0-1.x86_64.rpm",
        ),
        Family::Arch => (
            "x86_64",
            "a-1.0-1-x86_64.pkg.tar.zst",
            "x86_64/a-1.0-1-x86_64.pkg.tar.zst",
        ),
    };
    PackageRecord {
        family,
        name: "a".into(),
        version: "1.0-1".into(),
        release: 1,
        arch: arch.into(),
        file_name: file_name.into(),
        location: location.into(),
        size: 10,
        sha256: "0".repeat(64),
        summary: "A package".into(),
        description: "It does\nthings.".into(),
        depends: vec!["b".into()],
        installed_size: 20,
        paths: vec!["/usr/bin/a".into()],
        built_at: 1_700_000_000,
        control: (family == Family::Deb).then(|| "Package: a\nVersion: 1.0-1\n".into()),
        rpm_header_range: (family == Family::Rpm).then_some((1, 2)),
        signature: (family == Family::Arch).then(|| "iQ==".into()),
    }
}

/// A record from the input's thirteen parts: flags (family, sizes), name,
/// version, arch, file name, location, sha256, summary, description,
/// depends and paths (a line each), control paragraph, signature.
fn hostile(data: &[u8]) -> PackageRecord {
    let p = parts(data, 13);
    let flags = p[0];
    let family = Family::ALL[usize::from(flags.first().copied().unwrap_or(0)) % 3];
    let lines = |b: &[u8]| text(b).split('\n').map(str::to_string).collect();
    PackageRecord {
        family,
        name: text(p[1]),
        version: text(p[2]),
        release: 2,
        arch: text(p[3]),
        file_name: text(p[4]),
        location: text(p[5]),
        size: number(flags.get(1..).unwrap_or_default()),
        sha256: text(p[6]),
        summary: text(p[7]),
        description: text(p[8]),
        depends: lines(p[9]),
        installed_size: number(flags.get(9..).unwrap_or_default()),
        paths: lines(p[10]),
        built_at: number(flags.get(17..).unwrap_or_default()),
        control: (!p[11].is_empty()).then(|| text(p[11])),
        rpm_header_range: Some((number(p[0]), number(p[0].get(4..).unwrap_or_default()))),
        signature: (!p[12].is_empty()).then(|| text(p[12])),
    }
}

/// The repository index of the hostile record's family, built over it and
/// a genuine record; when the builder accepts it, the index must describe
/// exactly those records.
pub fn repo_index(data: &[u8]) {
    let bad = hostile(data);
    let family = bad.family;
    let good = genuine(family);
    let records = [&good, &bad];
    let built = match family {
        Family::Deb => apt_repo::index(&records, key(), now(), Duration::from_secs(86_400)),
        Family::Rpm => dnf_repo::index(&records, key(), now(), 7),
        Family::Arch => pacman_repo::index(&records, key(), 0),
    };
    let Ok(files) = built else { return };
    match family {
        Family::Deb => apt_lists_exactly(&files, &records),
        Family::Rpm => dnf_lists_exactly(&files, &records),
        Family::Arch => pacman_lists_exactly(&files, &records),
    }
}

fn file<'a>(files: &'a Files, suffix: &str) -> &'a [u8] {
    files
        .iter()
        .find(|(p, _)| p.ends_with(suffix))
        .map(|(_, b)| b.as_slice())
        .unwrap_or_else(|| panic!("the index has no {suffix}"))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("an index the builder wrote decompresses");
    out
}

/// One stanza per record, each with one Filename: its location.
fn apt_lists_exactly(files: &Files, records: &[&PackageRecord]) {
    let packages = text(file(files, "binary-amd64/Packages"));
    let stanzas: Vec<&str> = packages.split("\n\n").filter(|s| !s.is_empty()).collect();
    let expected: Vec<&&PackageRecord> = records
        .iter()
        .filter(|r| r.arch == "amd64" || r.arch == "all")
        .collect();
    assert_eq!(stanzas.len(), expected.len(), "{packages:?}");
    for (stanza, r) in stanzas.iter().zip(expected) {
        let names: Vec<&str> = stanza
            .lines()
            .filter_map(|l| l.strip_prefix("Filename: "))
            .collect();
        assert_eq!(names, [r.location.as_str()], "{stanza:?}");
        assert!(stanza.starts_with("Package: "), "{stanza:?}");
    }
}

/// Every XML file parses, and primary, filelists and other hold one
/// package element per record.
fn dnf_lists_exactly(files: &Files, records: &[&PackageRecord]) {
    xml_elements(file(files, "repomd.xml"), "data");
    for kind in ["primary", "filelists", "other"] {
        let xml = gunzip(file(files, &format!("-{kind}.xml.gz")));
        assert_eq!(xml_elements(&xml, "package"), records.len(), "{kind}");
    }
}

/// How many elements named `name` a well-formed document holds.
fn xml_elements(xml: &[u8], name: &str) -> usize {
    use quick_xml::XmlVersion;
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut count = 0;
    loop {
        match reader
            .read_event()
            .expect("the builder wrote well-formed XML")
        {
            Event::Eof => return count,
            Event::Start(e) | Event::Empty(e) => {
                for a in e.attributes() {
                    a.expect("well-formed attributes")
                        .normalized_value(XmlVersion::Implicit1_0)
                        .expect("escaped attribute values");
                }
                count += usize::from(e.name().0 == name);
            }
            Event::Text(t) => {
                quick_xml::escape::unescape(&t).expect("escaped text");
            }
            _ => {}
        }
    }
}

/// The sync database holds one desc per record, each naming its record.
fn pacman_lists_exactly(files: &Files, records: &[&PackageRecord]) {
    use alpm_repo_db::desc::RepoDescFileV2;
    let tar = gunzip(file(files, "penguindome.db"));
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut names = Vec::new();
    for entry in archive.entries().expect("a tar the builder wrote") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").display().to_string();
        if path.ends_with("/desc") {
            let mut desc = String::new();
            entry.read_to_string(&mut desc).expect("desc in UTF-8");
            let parsed = RepoDescFileV2::from_str(&desc).expect("a desc alpm-repo-db reads");
            names.push((parsed.name.to_string(), parsed.file_name.to_string()));
        }
    }
    let expected: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.name.clone(), r.file_name.clone()))
        .collect();
    assert_eq!(names, expected);
}

/// A Release file to re-sign: two parts, the validity in seconds (up to
/// eight bytes, big-endian) and the Release text. A re-signed one differs
/// only in its Date and Valid-Until.
pub fn release_refresh(data: &[u8]) {
    let p = parts(data, 2);
    let valid_for = Duration::from_secs(number(p[0]));
    let release = text(p[1]);
    let Ok(Some(files)) = apt_repo::refreshed(&release, key(), now(), valid_for) else {
        return;
    };
    let new = text(file(&files, "/Release"));
    let rest = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("Date: ") && !l.starts_with("Valid-Until: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(rest(&release), rest(&new));
    assert!(new.contains("\nValid-Until: ") || new.starts_with("Valid-Until: "));
}

/// The networks the forwarded target's listener trusts.
fn proxies() -> Vec<IpNet> {
    ["10.0.0.0/8", "127.0.0.0/8", "::1/128", "fd00::/8"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn trusted(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip.to_canonical()))
}

/// A request's X-Forwarded-For headers: two parts, the peer's address (16
/// bytes IPv6, 4 IPv4, else a trusted proxy) and the header values, a line
/// each. The peer's own address stands unless it is trusted; a client's
/// own entries, left of the first address no trusted proxy wrote, never
/// change the answer.
pub fn forwarded(data: &[u8]) {
    let p = parts(data, 2);
    let peer = peer(p[0]);
    let mut headers = HeaderMap::new();
    for line in p[1].split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", v);
        }
    }
    let nets = proxies();
    let proxies = TrustedProxies::new(&nets);
    let answer = proxies.client_address(peer, &headers);
    if !trusted(&nets, peer) {
        assert_eq!(answer, Ok(peer));
        return;
    }
    let Ok(client) = answer else { return };
    if trusted(&nets, client) {
        return;
    }
    // The client prepends an entry of its own choosing.
    let mut forged = HeaderMap::new();
    for (i, v) in headers.get_all("x-forwarded-for").iter().enumerate() {
        let mut bytes = if i == 0 {
            b"198.51.100.7, ".to_vec()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(v.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            forged.append("x-forwarded-for", v);
        }
    }
    assert_eq!(proxies.client_address(peer, &forged), Ok(client));
}

fn peer(bytes: &[u8]) -> IpAddr {
    if let Ok(b) = <[u8; 16]>::try_from(bytes.get(..16).unwrap_or_default()) {
        IpAddr::V6(Ipv6Addr::from(b))
    } else if let Ok(b) = <[u8; 4]>::try_from(bytes.get(..4).unwrap_or_default()) {
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
    }
}

/// Every target, by the name of its corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("server_repo_index", repo_index),
    ("server_release_refresh", release_refresh),
    ("server_forwarded", forwarded),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use penguindome_protocol::fuzzing::replay;

    use super::*;

    /// The input that makes `hostile` return `r`.
    fn encode(r: &PackageRecord) -> Vec<u8> {
        // Bytes 1.. would be sizes; one byte each keeps them small.
        let mut data = vec![3 + r.family as u8, 1];
        for part in [
            &r.name,
            &r.version,
            &r.arch,
            &r.file_name,
            &r.location,
            &r.sha256,
            &r.summary,
            &r.description,
            &r.depends.join("\n"),
            &r.paths.join("\n"),
            r.control.as_deref().unwrap_or_default(),
            r.signature.as_deref().unwrap_or_default(),
        ] {
            data.push(0);
            data.extend_from_slice(part.as_bytes());
        }
        data
    }

    /// Valid inputs the fuzzers start from. Written to the corpus with
    /// PENGUINDOME_BLESS=1; checked to stay valid.
    fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
        let mut out = Vec::new();
        for family in Family::ALL {
            let r = genuine(family);
            let data = encode(&r);
            let back = hostile(&data);
            assert_eq!((back.family, &back.location), (family, &r.location));
            back.check().unwrap();
            out.push(("server_repo_index", format!("seed-{family:?}"), data));
        }
        let files = apt_repo::index(&[], key(), now(), Duration::from_secs(86_400)).unwrap();
        let mut release = b"\x03\xf4\x80\0".to_vec();
        release.extend_from_slice(file(&files, "/Release"));
        out.push(("server_release_refresh", "seed".into(), release));
        let mut forwarded = vec![127, 0, 0, 1, 0];
        forwarded.extend_from_slice(b"203.0.113.5, 10.1.2.3\n[2001:db8::1]:4711");
        out.push(("server_forwarded", "seed".into(), forwarded));
        out
    }

    #[test]
    fn seeds_are_valid_inputs() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus");
        let bless = std::env::var_os("PENGUINDOME_BLESS").is_some();
        for (name, file_name, bytes) in seeds() {
            let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).unwrap();
            target(&bytes);
            if bless {
                std::fs::create_dir_all(corpus.join(name)).unwrap();
                std::fs::write(corpus.join(name).join(file_name), &bytes).unwrap();
            }
        }
    }

    /// Every committed corpus input and every crash found, through its
    /// target: what the fuzzers found once stays fixed.
    #[test]
    fn corpora_and_regressions_replay_without_panicking() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz");
        for target in TARGETS {
            let one = std::slice::from_ref(target);
            let ran = replay(&fuzz.join("corpus"), one) + replay(&fuzz.join("regressions"), one);
            assert!(
                ran > 0,
                "{} has no corpus under {}",
                target.0,
                fuzz.display()
            );
        }
    }

    #[test]
    fn a_record_that_would_inject_a_stanza_is_refused_not_indexed() {
        let mut r = genuine(Family::Deb);
        r.control = Some("Package: a\n\nPackage: evil\nFilename: x\n".into());
        repo_index(&encode(&r));
        let evil = [&genuine(Family::Deb), &r];
        assert!(apt_repo::index(&evil, key(), now(), Duration::from_secs(60)).is_err());
    }
}
