//! The apt repository: pool, Packages(.gz), and a Release file signed both
//! inline (InRelease) and detached (Release.gpg).

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

/// Index files to write, relative to the apt folder, with their contents.
pub fn index(
    records: &[&PackageRecord],
    key: &SecretKey,
    now: DateTime<Utc>,
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    let mut files = Vec::new();
    let mut hashed = Vec::new();
    for arch in ARCHITECTURES {
        let packages = packages_file(records, arch);
        let gz = gzip(packages.as_bytes())?;
        let base = format!("{COMPONENT}/binary-{arch}/Packages");
        hashed.push((
            base.clone(),
            sha256_hex(packages.as_bytes()),
            packages.len(),
        ));
        hashed.push((format!("{base}.gz"), sha256_hex(&gz), gz.len()));
        files.push((format!("dists/{SUITE}/{base}"), packages.into_bytes()));
        files.push((format!("dists/{SUITE}/{base}.gz"), gz));
    }
    let release = release_file(&hashed, now);
    let inrelease = key
        .sign_cleartext(release.as_bytes())
        .map_err(|e| BuildError::Sign(e.to_string()))?;
    let detached = key
        .sign_armored(release.as_bytes())
        .map_err(|e| BuildError::Sign(e.to_string()))?;
    files.push((format!("dists/{SUITE}/InRelease"), inrelease));
    files.push((format!("dists/{SUITE}/Release.gpg"), detached));
    files.push((format!("dists/{SUITE}/Release"), release.into_bytes()));
    Ok(files)
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

fn release_file(hashed: &[(String, String, usize)], now: DateTime<Utc>) -> String {
    let mut out = format!(
        "Origin: PenguinDome\nLabel: PenguinDome\nSuite: {SUITE}\nCodename: {SUITE}\n\
         Date: {}\nArchitectures: {}\nComponents: {COMPONENT}\n\
         Description: PenguinDome agent packages for this site\nSHA256:\n",
        now.format("%a, %d %b %Y %H:%M:%S UTC"),
        ARCHITECTURES.join(" "),
    );
    for (path, hash, size) in hashed {
        out.push_str(&format!(" {hash} {size:>16} {path}\n"));
    }
    out
}
