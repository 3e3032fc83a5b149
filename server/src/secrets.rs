//! Files that hold secrets: written 0600 atomically, refused when others can
//! read them.

use std::path::Path;

use anyhow::Context;
use penguindome_protocol::files::{self, Readers};

/// Writes `data` to `path` with the given mode, atomically, making its
/// directory if needed.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    files::write_atomic(path, data, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a secret (mode 0600).
pub fn write_secret(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    write_file(path, data, 0o600)
}

/// Reads a secret, refusing it if others may read it or anyone but its
/// owner may write it. Group read is allowed on root's files only: that is
/// how `pdome-admin init` shares the server's key with its service user.
pub fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(files::read_private(path, Readers::RootsGroup)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_secret(&p, b"s3cret").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret(&p).unwrap(), b"s3cret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // Group-writable is never accepted; group-readable only on root's
        // files (shared with the service user).
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert!(read_secret(&p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_secret(&p).is_ok(), nix::unistd::geteuid().is_root());
        // Overwriting keeps no temp file behind.
        write_secret(&p, b"again").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
