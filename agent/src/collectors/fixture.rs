//! Fixture roots for collector tests: files and symbolic links under a
//! temporary directory that [`crate::host::Host::fixture`] reads as `/`.

use std::os::unix::fs::PermissionsExt;

/// A root with `files` (path, content) and `links` (path, target). Files
/// in a `bin/` or `sbin/` directory are made executable, so that
/// `Host::find_program` finds them.
pub fn tree_with_links<C: AsRef<[u8]>>(
    files: &[(&str, C)],
    links: &[(&str, &str)],
) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("temporary directory");
    for (p, c) in files {
        let p = d.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("fixture directory");
        std::fs::write(&p, c).expect("fixture file");
        let s = p.to_string_lossy();
        if s.contains("/bin/") || s.contains("/sbin/") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
    for (p, target) in links {
        let p = d.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("fixture directory");
        std::os::unix::fs::symlink(target, p).expect("fixture link");
    }
    d
}

/// A root with `files` only.
pub fn tree<C: AsRef<[u8]>>(files: &[(&str, C)]) -> tempfile::TempDir {
    tree_with_links(files, &[])
}
