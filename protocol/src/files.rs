//! Files both binaries write and read the same way: atomically replaced
//! files, private files that others must not be able to read, and this
//! machine's host name.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes a file atomically with `mode`: a temporary file in the same
/// directory, fsync, rename, fsync of the directory. A crash leaves either
/// the old file or the new one, never a part.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Who besides the owner may read a private file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Nobody.
    OwnerOnly,
    /// The group too, when root owns the file: how the server's key is
    /// shared with its service user.
    RootsGroup,
}

/// Why a private file was not read.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// Others may read it (or the group write it).
    #[error("{} holds a secret but has mode {mode:04o}; run `chmod 600 {}`", path.display(), path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Reads a file that holds a secret, refusing it when anyone but its owner
/// (and, with [`Readers::RootsGroup`], the group of a root-owned file) may
/// read it, or anyone but its owner may write it.
pub fn read_private(path: &Path, readers: Readers) -> Result<Vec<u8>, PrivateFileError> {
    let io = |source| PrivateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    let group_may_read = readers == Readers::RootsGroup && meta.uid() == 0 && mode & 0o070 == 0o040;
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !group_may_read) {
        return Err(PrivateFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read(path).map_err(io)
}

/// This machine's host name (`localhost` when it has none).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_written_atomically_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_atomic(&p, b"s3cret", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_private(&p, Readers::OwnerOnly).unwrap(), b"s3cret");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_private(&p, Readers::OwnerOnly).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let root = nix::unistd::geteuid().is_root();
        assert_eq!(read_private(&p, Readers::RootsGroup).is_ok(), root);
        write_atomic(&p, b"again", 0o600).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
