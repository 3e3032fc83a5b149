//! The pacman repository: NAME.db and NAME.files (gzip'd tars of desc
//! entries) with detached binary signatures, beside the signed packages.

use penguindome_protocol::keys::SecretKey;

use super::BuildError;
use super::arch::metadata::{self, field};
use super::archive::{TarMember, gzip, write_tar};
use super::spec::PackageRecord;

/// The repository name clients put in brackets in pacman.conf.
pub const REPO_NAME: &str = "penguindome";
/// The architecture folder.
pub const ARCH_DIR: &str = "x86_64";

/// Index files to write, relative to the arch folder, with their contents.
pub fn index(
    records: &[&PackageRecord],
    key: &SecretKey,
    mtime: u64,
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    super::record_check::check_all(records)?;
    let mut files = Vec::new();
    for (suffix, with_files) in [("db", false), ("files", true)] {
        let descs = records
            .iter()
            .map(|r| {
                let dir = format!("{}-{}", r.name, r.version);
                let files = with_files.then(|| files_entry(r)).transpose()?;
                Ok((dir, desc(r)?, files))
            })
            .collect::<Result<Vec<(String, String, Option<String>)>, BuildError>>()?;
        let mut members = Vec::new();
        for (dir, desc, files) in &descs {
            members.push(TarMember {
                path: format!("{dir}/"),
                mode: 0o755,
                data: None,
            });
            members.push(TarMember {
                path: format!("{dir}/desc"),
                mode: 0o644,
                data: Some(desc.as_bytes()),
            });
            if let Some(f) = files {
                members.push(TarMember {
                    path: format!("{dir}/files"),
                    mode: 0o644,
                    data: Some(f.as_bytes()),
                });
            }
        }
        let db = gzip(&write_tar(&members, mtime)?)?;
        let sig = key.sign(&db).map_err(|e| BuildError::Sign(e.to_string()))?;
        // pacman fetches NAME.db; repo-add makes it a link to NAME.db.tar.gz,
        // and a plain copy serves the same over HTTP.
        files.push((
            format!("{ARCH_DIR}/{REPO_NAME}.{suffix}.tar.gz.sig"),
            sig.clone(),
        ));
        files.push((format!("{ARCH_DIR}/{REPO_NAME}.{suffix}.sig"), sig));
        files.push((
            format!("{ARCH_DIR}/{REPO_NAME}.{suffix}.tar.gz"),
            db.clone(),
        ));
        files.push((format!("{ARCH_DIR}/{REPO_NAME}.{suffix}"), db));
    }
    Ok(files)
}

/// The entry's desc, through alpm-repo-db's typed model (version 2, as
/// repo-add writes today, but with the signature inline so pacman needs no
/// second download per package).
fn desc(r: &PackageRecord) -> Result<String, BuildError> {
    use alpm_repo_db::desc::RepoDescFileV2;
    let desc = RepoDescFileV2 {
        file_name: field("filename", &r.file_name)?,
        name: field("name", &r.name)?,
        base: field("base", &r.name)?,
        version: field("version", &r.version)?,
        description: alpm_types::PackageDescription::new(r.summary.lines().next().unwrap_or("")),
        groups: Vec::new(),
        compressed_size: r.size,
        installed_size: r.installed_size,
        sha256_checksum: field("sha256sum", &r.sha256)?,
        pgp_signature: r
            .signature
            .as_deref()
            .map(|s| field("pgpsig", s))
            .transpose()?,
        url: Some(field("url", metadata::URL)?),
        license: vec![field("license", metadata::LICENSE)?],
        arch: field("arch", &r.arch)?,
        build_date: i64::try_from(r.built_at).unwrap_or(i64::MAX),
        packager: field("packager", metadata::PACKAGER)?,
        replaces: Vec::new(),
        conflicts: Vec::new(),
        provides: Vec::new(),
        dependencies: r
            .depends
            .iter()
            .map(|d| field("depends", d))
            .collect::<Result<_, _>>()?,
        optional_dependencies: Vec::new(),
        make_dependencies: Vec::new(),
        check_dependencies: Vec::new(),
    };
    Ok(desc.to_string())
}

/// The entry's files list: every installed path and the directories that
/// hold them (alpm-repo-files wants each parent listed).
fn files_entry(r: &PackageRecord) -> Result<String, BuildError> {
    use std::path::{Path, PathBuf};
    let mut all = std::collections::BTreeSet::new();
    for p in &r.paths {
        all.insert(PathBuf::from(p));
        let mut parent = Path::new(p).parent();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            all.insert(PathBuf::from(format!("{}/", d.display())));
            parent = d.parent();
        }
    }
    let files = alpm_repo_db::files::RepoFilesV1::try_from(all.into_iter().collect::<Vec<_>>())?;
    Ok(files.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::spec::Family;

    fn record() -> PackageRecord {
        PackageRecord {
            family: Family::Arch,
            name: "penguindome-agent".into(),
            version: "1.2.3-7".into(),
            release: 7,
            arch: "x86_64".into(),
            file_name: "penguindome-agent-1.2.3-7-x86_64.pkg.tar.zst".into(),
            location: "x86_64/penguindome-agent-1.2.3-7-x86_64.pkg.tar.zst".into(),
            size: 4096,
            sha256: "ab".repeat(32),
            summary: "The agent".into(),
            description: String::new(),
            depends: vec!["penguindome-site".into()],
            installed_size: 8192,
            paths: vec![
                "usr/bin/penguindome-agent".into(),
                "etc/penguindome/a".into(),
            ],
            built_at: 1_700_000_000,
            control: None,
            rpm_header_range: None,
            signature: Some("iQ==".into()),
        }
    }

    #[test]
    fn desc_reads_back_with_the_signature_inline() {
        use alpm_repo_db::desc::RepoDescFileV2;
        use std::str::FromStr;
        let text = desc(&record()).unwrap();
        let parsed = RepoDescFileV2::from_str(&text).unwrap();
        assert_eq!(parsed.file_name.to_string(), record().file_name);
        assert_eq!(parsed.compressed_size, 4096);
        assert!(text.contains("%PGPSIG%\niQ==\n"), "{text}");
        assert!(text.contains("%DEPENDS%\npenguindome-site\n"), "{text}");
    }

    #[test]
    fn files_list_every_parent_directory_once() {
        let text = files_entry(&record()).unwrap();
        assert_eq!(
            text,
            "%FILES%\netc/\netc/penguindome/\netc/penguindome/a\nusr/\nusr/bin/\nusr/bin/penguindome-agent\n"
        );
    }

    #[test]
    fn a_record_pacman_would_refuse_is_an_error_not_a_database() {
        let mut bad = record();
        bad.sha256 = "not hex".into();
        let err = desc(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::ArchField {
                    field: "sha256sum",
                    ..
                }
            ),
            "{err}"
        );
    }
}
