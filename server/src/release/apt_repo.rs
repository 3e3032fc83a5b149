//! The apt repository: pool, Packages(.gz), and a Release file signed both
//! inline (InRelease) and detached (Release.gpg).

use std::time::Duration;

use chrono::{DateTime, Utc};
use penguindome_protocol::keys::SecretKey;

use super::BuildError;
use super::archive::{gzip, sha256_hex};
use super::spec::PackageRecord;

/// The suite clients name in their .sources file.
pub const SUITE: &str = "stable";
/// The one component.
pub const COMPONENT: &str = "main";
/// Architectures indexed (architecture-independent packages are listed
/// under each of them).
pub const ARCHITECTURES: &[&str] = &["amd64"];

/// A file to write, relative to the apt folder, and its contents.
pub type IndexFile = (String, Vec<u8>);

/// Index files to write, relative to the apt folder, with their contents.
/// Each index is also written under `by-hash/SHA256/`, so a client that
/// read the previous Release while a new one was switched in still finds
/// the files it names (publishing carries the previous ones over).
pub fn index(
    records: &[&PackageRecord],
    key: &SecretKey,
    now: DateTime<Utc>,
    valid_for: Duration,
) -> Result<Vec<IndexFile>, BuildError> {
    super::record_check::check_all(records)?;
    let mut files = Vec::new();
    let mut hashed = Vec::new();
    for arch in ARCHITECTURES {
        let packages = packages_file(records, arch);
        let gz = gzip(packages.as_bytes())?;
        let base = format!("{COMPONENT}/binary-{arch}/Packages");
        let by_hash = format!("dists/{SUITE}/{COMPONENT}/binary-{arch}/by-hash/SHA256");
        for (name, bytes) in [
            (base.clone(), packages.into_bytes()),
            (format!("{base}.gz"), gz),
        ] {
            let hash = sha256_hex(&bytes);
            hashed.push((name.clone(), hash.clone(), bytes.len()));
            files.push((format!("{by_hash}/{hash}"), bytes.clone()));
            files.push((format!("dists/{SUITE}/{name}"), bytes));
        }
    }
    let release = release_file(&hashed, now, valid_for);
    files.extend(signed_release(&release, key)?);
    Ok(files)
}

/// The Release file and its two signed forms, relative to the apt folder.
fn signed_release(release: &str, key: &SecretKey) -> Result<Vec<IndexFile>, BuildError> {
    let inrelease = key
        .sign_cleartext(release.as_bytes())
        .map_err(|e| BuildError::Sign(e.to_string()))?;
    let detached = key
        .sign_armored(release.as_bytes())
        .map_err(|e| BuildError::Sign(e.to_string()))?;
    Ok(vec![
        (format!("dists/{SUITE}/InRelease"), inrelease),
        (format!("dists/{SUITE}/Release.gpg"), detached),
        (
            format!("dists/{SUITE}/Release"),
            release.as_bytes().to_vec(),
        ),
    ])
}

/// Where the by-hash copies live, relative to the apt folder.
pub fn by_hash_dirs() -> Vec<String> {
    ARCHITECTURES
        .iter()
        .map(|arch| format!("dists/{SUITE}/{COMPONENT}/binary-{arch}/by-hash/SHA256"))
        .collect()
}

/// A Release file dated `now` again, valid for another `valid_for`, signed
/// anew, when less than half of its validity is left; none otherwise.
/// The running server calls this, so a site that publishes no release for
/// weeks keeps a repository apt accepts, while a frozen or replayed copy
/// expires.
pub fn refreshed(
    release: &str,
    key: &SecretKey,
    now: DateTime<Utc>,
    valid_for: Duration,
) -> Result<Option<Vec<IndexFile>>, BuildError> {
    let Some(until) = release
        .lines()
        .find_map(|l| l.strip_prefix("Valid-Until: "))
        .and_then(|v| DateTime::parse_from_rfc2822(&v.replace(" UTC", " +0000")).ok())
    else {
        return Ok(None);
    };
    let left = until.with_timezone(&Utc) - now;
    let half = chrono::Duration::from_std(valid_for / 2).unwrap_or(chrono::Duration::MAX);
    if left > half {
        return Ok(None);
    }
    // Every other line is kept byte for byte, its line end included.
    let text: String = release
        .split_inclusive('\n')
        .map(|l| {
            if l.starts_with("Date: ") {
                format!("Date: {}\n", apt_date(now))
            } else if l.starts_with("Valid-Until: ") {
                format!("Valid-Until: {}\n", apt_date(until_from(now, valid_for)))
            } else {
                l.to_string()
            }
        })
        .collect();
    signed_release(&text, key).map(Some)
}

fn apt_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S UTC").to_string()
}

fn until_from(now: DateTime<Utc>, valid_for: Duration) -> DateTime<Utc> {
    let span = chrono::Duration::from_std(valid_for).unwrap_or(chrono::Duration::days(3650));
    // A validity past the calendar's end is as good as forever.
    now.checked_add_signed(span)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The Packages index for one architecture: each package's control
/// paragraph plus where to find it and its hash.
fn packages_file(records: &[&PackageRecord], arch: &str) -> String {
    let mut out = String::new();
    for r in records.iter().filter(|r| r.arch == arch || r.arch == "all") {
        let control = r.control.as_deref().unwrap_or_default();
        out.push_str(control.trim_end_matches('\n'));
        out.push_str(&format!(
            "\nFilename: {}\nSize: {}\nSHA256: {}\n\n",
            r.location, r.size, r.sha256
        ));
    }
    out
}

fn release_file(
    hashed: &[(String, String, usize)],
    now: DateTime<Utc>,
    valid_for: Duration,
) -> String {
    let mut out = format!(
        "Origin: PenguinDome\nLabel: PenguinDome\nSuite: {SUITE}\nCodename: {SUITE}\n\
         Date: {}\nValid-Until: {}\nArchitectures: {}\nComponents: {COMPONENT}\n\
         Acquire-By-Hash: yes\n\
         Description: PenguinDome agent packages for this site\nSHA256:\n",
        apt_date(now),
        apt_date(until_from(now, valid_for)),
        ARCHITECTURES.join(" "),
    );
    for (path, hash, size) in hashed {
        out.push_str(&format!(" {hash} {size:>16} {path}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release_of(files: &[IndexFile]) -> String {
        let (_, bytes) = files.iter().find(|(p, _)| p.ends_with("/Release")).unwrap();
        String::from_utf8(bytes.clone()).unwrap()
    }

    #[test]
    fn a_release_is_resigned_once_half_its_validity_has_passed() {
        let key = SecretKey::generate("t").unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let week = Duration::from_secs(7 * 86_400);
        let files = index(&[], &key, t0, week).unwrap();
        let release = release_of(&files);
        assert!(
            release.contains("Valid-Until: Thu, 08 Jan 2026 00:00:00 UTC"),
            "{release}"
        );
        assert!(release.contains("Acquire-By-Hash: yes"));
        assert!(files.iter().any(|(p, _)| p.contains("/by-hash/SHA256/")));
        let day = chrono::Duration::days(1);
        assert!(
            refreshed(&release, &key, t0 + day * 3, week)
                .unwrap()
                .is_none()
        );
        let again = refreshed(&release, &key, t0 + day * 4, week)
            .unwrap()
            .unwrap();
        let text = release_of(&again);
        assert!(
            text.contains("Date: Mon, 05 Jan 2026 00:00:00 UTC"),
            "{text}"
        );
        assert!(
            text.contains("Valid-Until: Mon, 12 Jan 2026 00:00:00 UTC"),
            "{text}"
        );
        // Everything but the two dates is kept.
        let rest = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with("Date") && !l.starts_with("Valid"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(rest(&release), rest(&text));
        let sig = again
            .iter()
            .find(|(p, _)| p.ends_with("Release.gpg"))
            .unwrap();
        assert!(String::from_utf8_lossy(&sig.1).contains("BEGIN PGP SIGNATURE"));
    }
}
