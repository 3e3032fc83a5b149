//! Release tables in distro-info's CSV form (`version,codename,series,
//! created,release,eol,...`), and the one rule both the agent (with the
//! machine's own distro-info-data) and the server (with the table it
//! ships, for agents that cannot tell) use to judge a release.

use chrono::NaiveDate;

use super::ReleaseSupport;
use crate::facts::Known;

/// One release of a distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Version number (`12`, `24.04`); empty for Debian's sid.
    pub version: String,
    /// Long-term support (Ubuntu's "LTS").
    pub lts: bool,
    /// Code name as os-release spells it (`bookworm`, `noble`).
    pub series: String,
    /// Release date; none for releases still in development.
    pub released: Option<NaiveDate>,
    /// End of regular security support, when announced.
    pub eol: Option<NaiveDate>,
}

impl Release {
    /// `12 (bookworm)`, or the version alone for releases without a name.
    pub fn label(&self) -> String {
        if self.series.is_empty() {
            self.version.clone()
        } else {
            format!("{} ({})", self.version, self.series)
        }
    }
}

/// Why a table could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct TableError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a distro-info CSV table (header line first).
pub fn parse(text: &str) -> Result<Vec<Release>, TableError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| TableError {
            line: n + 1,
            reason,
        };
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols.len() < 4 {
            return Err(err(format!("{} columns, at least 4 expected", cols.len())));
        }
        let date = |i: usize| -> Result<Option<NaiveDate>, TableError> {
            match cols.get(i).filter(|c| !c.is_empty()) {
                None => Ok(None),
                Some(c) => NaiveDate::parse_from_str(c, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|e| err(format!("{c:?} is not a date: {e}"))),
            }
        };
        let (version, lts) = match cols[0].strip_suffix(" LTS") {
            Some(v) => (v.to_string(), true),
            None => (cols[0].to_string(), false),
        };
        out.push(Release {
            version,
            lts,
            series: cols[2].to_ascii_lowercase(),
            released: date(4)?,
            eol: date(5)?,
        });
    }
    Ok(out)
}

/// Compares dotted version numbers (`9` < `10`, `22.04` < `22.10`).
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Finds the installed release by version, else by code name.
pub fn find<'a>(
    table: &'a [Release],
    version_id: Option<&str>,
    codename: Option<&str>,
) -> Option<&'a Release> {
    let by_version = version_id
        .filter(|v| !v.is_empty())
        .and_then(|v| table.iter().find(|r| r.version == v));
    by_version.or_else(|| {
        let c = codename.filter(|c| !c.is_empty())?.to_ascii_lowercase();
        table
            .iter()
            .find(|r| r.series == c && !r.version.is_empty())
    })
}

/// Judges `current` against the releases out by `today`: its support end,
/// and the newest release after it (an LTS is compared with LTS releases).
pub fn judge(
    table: &[Release],
    current: &Release,
    today: NaiveDate,
    source: &str,
) -> ReleaseSupport {
    let newer = table
        .iter()
        .filter(|r| !r.version.is_empty() && r.released.is_some_and(|d| d <= today))
        .filter(|r| !current.lts || r.lts)
        .filter(|r| version_key(&r.version) > version_key(&current.version))
        .max_by_key(|r| version_key(&r.version));
    let mut evidence = vec![format!("{} in {source}", current.label())];
    match current.eol {
        Some(eol) => evidence.push(format!("security support ends {eol}")),
        None => evidence.push("no end of security support announced".into()),
    }
    ReleaseSupport {
        // No announced end is not "never": the table may just be old.
        support_ends: current.eol.map(Some).into(),
        newer_release: Known::Value(newer.map(Release::label)),
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBUNTU: &str = "version,codename,series,created,release,eol,eol-server,eol-esm\n\
        22.04 LTS,Jammy Jellyfish,jammy,2021-10-14,2022-04-21,2027-06-01,2027-06-01,2032-04-21\n\
        23.10,Mantic Minotaur,mantic,2023-04-20,2023-10-12,2024-07-11\n\
        24.04 LTS,Noble Numbat,noble,2023-10-12,2024-04-25,2029-05-31,2029-05-31,2034-04-25\n\
        24.10,Oracular Oriole,oracular,2024-04-25,2024-10-10,2025-07-10\n\
        25.04,Plucky Puffin,plucky,2024-10-10\n";

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn lts_releases_are_compared_with_lts_releases() {
        let t = parse(UBUNTU).unwrap();
        let jammy = find(&t, Some("22.04"), None).unwrap();
        let j = judge(&t, jammy, day("2025-01-01"), "ubuntu.csv");
        assert_eq!(j.newer_release, Known::Value(Some("24.04 (noble)".into())));
        assert_eq!(j.support_ends, Known::Value(Some(day("2027-06-01"))));
        let mantic = find(&t, None, Some("Mantic")).unwrap();
        let m = judge(&t, mantic, day("2025-01-01"), "ubuntu.csv");
        assert_eq!(
            m.newer_release,
            Known::Value(Some("24.10 (oracular)".into()))
        );
        // 25.04 has no release date: not out.
        let oracular = find(&t, Some("24.10"), None).unwrap();
        let o = judge(&t, oracular, day("2025-01-01"), "ubuntu.csv");
        assert_eq!(o.newer_release, Known::Value(None));
    }

    #[test]
    fn versions_compare_as_numbers_and_bad_lines_are_named() {
        assert!(version_key("10") > version_key("9"));
        assert!(version_key("22.10") > version_key("22.04"));
        let e = parse("h\n12,Bookworm,bookworm,2021-08-14,2023-06-1x\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("2023-06-1x"), "{e}");
        assert!(parse("h\n12,Bookworm\n").is_err());
    }
}
