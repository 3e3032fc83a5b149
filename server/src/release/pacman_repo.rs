//! The pacman repository: NAME.db and NAME.files (gzip'd tars of desc
//! entries) with detached binary signatures, beside the signed packages.

use penguindome_protocol::keys::SecretKey;

use super::BuildError;
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
    let mut files = Vec::new();
    for (suffix, with_files) in [("db", false), ("files", true)] {
        let descs: Vec<(String, String, Option<String>)> = records
            .iter()
            .map(|r| {
                let dir = format!("{}-{}", r.name, r.version);
                let files = with_files.then(|| files_entry(r));
                (dir, desc(r), files)
            })
            .collect();
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

fn desc(r: &PackageRecord) -> String {
    let mut out = String::new();
    let mut field = |name: &str, values: &[&str]| {
        if values.is_empty() {
            return;
        }
        out.push_str(&format!("%{name}%\n"));
        for v in values {
            out.push_str(v);
            out.push('\n');
        }
        out.push('\n');
    };
    let size = r.size.to_string();
    let isize = r.installed_size.to_string();
    let built = r.built_at.to_string();
    let deps: Vec<&str> = r.depends.iter().map(String::as_str).collect();
    field("FILENAME", &[&r.file_name]);
    field("NAME", &[&r.name]);
    field("BASE", &[&r.name]);
    field("VERSION", &[&r.version]);
    field("DESC", &[r.summary.lines().next().unwrap_or("")]);
    field("CSIZE", &[&size]);
    field("ISIZE", &[&isize]);
    field("SHA256SUM", &[&r.sha256]);
    if let Some(sig) = &r.signature {
        field("PGPSIG", &[sig]);
    }
    field("LICENSE", &["Apache-2.0"]);
    field("ARCH", &[&r.arch]);
    field("BUILDDATE", &[&built]);
    field("PACKAGER", &["PenguinDome <penguindome@localhost>"]);
    field("DEPENDS", &deps);
    out
}

fn files_entry(r: &PackageRecord) -> String {
    let mut dirs = std::collections::BTreeSet::new();
    for p in &r.paths {
        let mut parent = std::path::Path::new(p).parent();
        while let Some(d) = parent {
            if d.as_os_str().is_empty() {
                break;
            }
            dirs.insert(format!("{}/", d.display()));
            parent = d.parent();
        }
    }
    let mut all: Vec<String> = dirs.into_iter().chain(r.paths.iter().cloned()).collect();
    all.sort();
    format!("%FILES%\n{}\n\n", all.join("\n"))
}
