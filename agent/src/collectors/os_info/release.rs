//! Whether the installed release is supported and the newest: from
//! os-release's SUPPORT_END, Debian's distro-info-data tables (Debian and
//! Ubuntu) and osinfo-db (Fedora). Rolling releases have no end and no
//! newer release. Anything else is unknown, and the server then consults
//! its own table.

use chrono::NaiveDate;
use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::os_info::ReleaseSupport;
use penguindome_protocol::facts::os_info::releases;

use crate::host::Host;

/// What os-release says, as far as release support goes.
pub struct OsRelease<'a> {
    /// `ID`.
    pub id: Option<&'a str>,
    /// `ID_LIKE`, split.
    pub id_like: &'a [String],
    /// `VERSION_ID`.
    pub version_id: Option<&'a str>,
    /// `VERSION_CODENAME`.
    pub codename: Option<&'a str>,
    /// `SUPPORT_END` (systemd's os-release field).
    pub support_end: Option<&'a str>,
    /// `BUILD_ID` (`rolling` on Arch).
    pub build_id: Option<&'a str>,
}

/// Judges the installed release on `today`.
pub fn support(host: &Host, os: &OsRelease<'_>, today: NaiveDate) -> ReleaseSupport {
    let mut answer = match os.id {
        Some(id @ ("debian" | "ubuntu")) => from_distro_info(host, id, os, today),
        Some("fedora") => from_osinfo(host, os, today),
        _ if is_rolling(os) => ReleaseSupport {
            support_ends: Known::Value(None),
            newer_release: Known::Value(None),
            evidence: vec!["a rolling release: no end of support, no newer release".into()],
        },
        other => unknown(format!(
            "no release data for {:?} on this machine",
            other.unwrap_or("this distribution")
        )),
    };
    // The distribution's own word on its end of support wins.
    if let Some(end) = os.support_end {
        match NaiveDate::parse_from_str(end, "%Y-%m-%d") {
            Ok(d) => {
                answer.support_ends = Known::Value(Some(d));
                answer
                    .evidence
                    .push(format!("SUPPORT_END={end} in os-release"));
            }
            Err(_) => answer
                .evidence
                .push(format!("SUPPORT_END={end:?} in os-release is not a date")),
        }
    }
    answer
}

fn unknown(why: String) -> ReleaseSupport {
    ReleaseSupport {
        support_ends: Known::UNKNOWN,
        newer_release: Known::UNKNOWN,
        evidence: vec![why],
    }
}

fn is_rolling(os: &OsRelease<'_>) -> bool {
    os.build_id == Some("rolling")
        || os.id == Some("arch")
        || os.id_like.iter().any(|l| l == "arch")
}

/// Debian and Ubuntu publish their releases in distro-info-data.
fn from_distro_info(host: &Host, id: &str, os: &OsRelease<'_>, today: NaiveDate) -> ReleaseSupport {
    let path = format!("/usr/share/distro-info/{id}.csv");
    let text = match host.read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return unknown(format!("{path}: {e} (install distro-info-data)")),
    };
    let table = match releases::parse(&text) {
        Ok(t) => t,
        Err(e) => return unknown(format!("{path}: {e}")),
    };
    match releases::find(&table, os.version_id, os.codename) {
        Some(current) => releases::judge(&table, current, today, &path),
        None => unknown(format!(
            "{path} does not list version {:?} ({:?}): testing, unstable, or a newer release \
             than the table knows",
            os.version_id.unwrap_or(""),
            os.codename.unwrap_or("")
        )),
    }
}

/// Fedora: osinfo-db has a file per release with its release and end of
/// life dates.
fn from_osinfo(host: &Host, os: &OsRelease<'_>, today: NaiveDate) -> ReleaseSupport {
    const DIR: &str = "/usr/share/osinfo/os/fedoraproject.org";
    let names = host.list_dir(DIR);
    if names.is_empty() {
        return unknown(format!("{DIR} is missing (install osinfo-db)"));
    }
    let table: Vec<releases::Release> = names
        .iter()
        .filter_map(|n| n.strip_prefix("fedora-")?.strip_suffix(".xml"))
        .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
        .map(|v| {
            let xml = host
                .read_to_string(&format!("{DIR}/fedora-{v}.xml"))
                .unwrap_or_default();
            releases::Release {
                version: v.to_string(),
                lts: false,
                series: String::new(),
                released: xml_date(&xml, "release-date"),
                eol: xml_date(&xml, "eol-date"),
            }
        })
        .collect();
    match releases::find(&table, os.version_id, None) {
        Some(current) => releases::judge(&table, current, today, DIR),
        None => unknown(format!(
            "{DIR} has no file for Fedora {}",
            os.version_id.unwrap_or("?")
        )),
    }
}

/// The date in `<tag>YYYY-MM-DD</tag>`.
fn xml_date(xml: &str, tag: &str) -> Option<NaiveDate> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find('<')?;
    NaiveDate::parse_from_str(xml[start..end].trim(), "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::fixture::tree;

    const DEBIAN: &str = "version,codename,series,created,release,eol,eol-lts,eol-elts\n\
        11,Bullseye,bullseye,2019-07-06,2021-08-14,2024-08-14,2026-08-31,2031-06-30\n\
        12,Bookworm,bookworm,2021-08-14,2023-06-10,2026-06-10,2028-06-30,2033-06-30\n\
        13,Trixie,trixie,2023-06-10,2025-08-09,2028-08-09\n\
        14,Forky,forky,2025-08-09\n\
        ,Sid,sid,1993-08-16\n";

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn os<'a>(id: &'a str, version: Option<&'a str>, codename: Option<&'a str>) -> OsRelease<'a> {
        OsRelease {
            id: Some(id),
            id_like: &[],
            version_id: version,
            codename,
            support_end: None,
            build_id: None,
        }
    }

    #[test]
    fn debian_from_distro_info_data() {
        let d = tree(&[("/usr/share/distro-info/debian.csv", DEBIAN)]);
        let host = Host::fixture(d.path(), vec![]);
        let bookworm = support(&host, &os("debian", Some("12"), None), day("2026-12-03"));
        assert_eq!(
            bookworm.newer_release,
            Known::Value(Some("13 (trixie)".into()))
        );
        assert_eq!(bookworm.support_ends, Known::Value(Some(day("2026-06-10"))));
        assert!(bookworm.evidence[0].contains("/usr/share/distro-info/debian.csv"));
        let trixie = support(&host, &os("debian", Some("13"), None), day("2026-12-03"));
        assert_eq!(trixie.newer_release, Known::Value(None), "forky is not out");
        // Testing has no version: the table cannot say.
        let sid = support(&host, &os("debian", None, Some("forky")), day("2026-12-03"));
        assert_eq!(sid.newer_release, Known::Value(None));
        assert!(sid.support_ends.is_unknown(), "{sid:?}");
        let none = support(&host, &os("debian", None, None), day("2026-12-03"));
        assert!(none.newer_release.is_unknown());
    }

    #[test]
    fn fedora_from_osinfo_and_support_end_from_os_release() {
        let xml = |v: &str, rel: &str, eol: &str| {
            format!(
                "<libosinfo><os id=\"http://fedoraproject.org/fedora/{v}\"><release-date>{rel}</release-date><eol-date>{eol}</eol-date></os></libosinfo>"
            )
        };
        let (f40, f41) = (
            xml("40", "2024-04-23", "2025-05-13"),
            xml("41", "2024-10-29", "2025-12-15"),
        );
        let dir = "/usr/share/osinfo/os/fedoraproject.org";
        let d = tree(&[
            (&format!("{dir}/fedora-40.xml") as &str, f40.as_str()),
            (&format!("{dir}/fedora-41.xml"), f41.as_str()),
            (&format!("{dir}/fedora-rawhide.xml"), "<libosinfo/>"),
        ]);
        let host = Host::fixture(d.path(), vec![]);
        let mut f = os("fedora", Some("40"), None);
        let j = support(&host, &f, day("2025-06-01"));
        assert_eq!(j.newer_release, Known::Value(Some("41".into())));
        assert_eq!(j.support_ends, Known::Value(Some(day("2025-05-13"))));
        f.support_end = Some("2025-05-14");
        let j = support(&host, &f, day("2025-06-01"));
        assert_eq!(j.support_ends, Known::Value(Some(day("2025-05-14"))));
        assert!(
            j.evidence
                .iter()
                .any(|e| e == "SUPPORT_END=2025-05-14 in os-release")
        );
    }

    #[test]
    fn rolling_and_unknown_distributions() {
        let d = tree::<&str>(&[]);
        let host = Host::fixture(d.path(), vec![]);
        let arch = support(&host, &os("arch", None, None), day("2026-12-03"));
        assert_eq!(arch.support_ends, Known::Value(None));
        assert_eq!(arch.newer_release, Known::Value(None));
        let other = support(&host, &os("gentoo", None, None), day("2026-12-03"));
        assert!(other.support_ends.is_unknown() && other.newer_release.is_unknown());
    }
}
