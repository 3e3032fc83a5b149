//! Applying a patch: one file written or deleted below a patch root,
//! resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) so that no
//! `..` and no symbolic link anywhere below the root can lead elsewhere.
//! Writes are atomic: a temporary file in the same directory, owner and
//! mode set, fsync, rename, fsync of the directory.

use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};
use penguindome_protocol::actions::{MAX_PATCH_BYTES, PatchTask};
use sha2::{Digest, Sha256};

/// Why a patch was refused or failed; nothing was written in either case.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The path is relative, names `..` or `.`, or is a root itself.
    #[error("{0:?} is not an absolute path of a file without `.` or `..` components")]
    BadPath(String),
    /// The path lies outside every patch root.
    #[error(
        "{path:?} is outside the patch roots ({roots}); add a root to agent.toml's patch_roots"
    )]
    OutsideRoots {
        /// The path asked for.
        path: String,
        /// The roots, comma-separated.
        roots: String,
    },
    /// A component below the root is a symbolic link (or leaves the root).
    #[error("{0:?} goes through a symbolic link below its patch root; refusing to follow it")]
    Symlink(String),
    /// The content is not base64, too large, or not what its digest says.
    #[error("the patch content is unusable: {0}")]
    Content(String),
    /// The owner or group does not exist here.
    #[error("no {kind} named {name:?} on this machine")]
    NoSuchAccount {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The mode has bits beyond the permission bits.
    #[error("mode {0:o} is not a file mode (at most 7777)")]
    BadMode(u32),
    /// A system call failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// The error.
        source: Errno,
    },
}

impl PatchError {
    /// True when the patch was refused on its own terms (rather than
    /// failing on this machine): reported as `refused`.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Io { .. })
    }
}

/// Writes or deletes the patch's file. Returns what was done.
pub fn apply(task: &PatchTask, roots: &[PathBuf]) -> Result<String, PatchError> {
    let (root, relative) = locate(&task.path, roots)?;
    let (parent, name) = split(&relative, &task.path)?;
    if task.deletes() {
        return delete(&task.path, root, &parent, name);
    }
    if task.mode > 0o7777 {
        return Err(PatchError::BadMode(task.mode));
    }
    let content = decode(task)?;
    let (uid, gid) = owner(task)?;
    let dir = open_beneath(root, &parent, true, &task.path)?;
    write_file(&dir, name, &content, uid, gid, task.mode, &task.path)?;
    Ok(format!(
        "wrote {} ({} bytes, mode {:04o})",
        task.path,
        content.len(),
        task.mode
    ))
}

/// The root the path lies below, and the path relative to it.
fn locate<'r>(path: &str, roots: &'r [PathBuf]) -> Result<(&'r Path, PathBuf), PatchError> {
    let p = Path::new(path);
    let plain = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Err(PatchError::BadPath(path.to_string()));
    }
    roots
        .iter()
        .find_map(|root| {
            let rel = p.strip_prefix(root).ok()?;
            (!rel.as_os_str().is_empty()).then(|| (root.as_path(), rel.to_path_buf()))
        })
        .ok_or_else(|| PatchError::OutsideRoots {
            path: path.to_string(),
            roots: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn split<'a>(relative: &'a Path, path: &str) -> Result<(PathBuf, &'a str), PatchError> {
    let name = relative
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PatchError::BadPath(path.to_string()))?;
    let parent = relative.parent().unwrap_or(Path::new("")).to_path_buf();
    Ok((parent, name))
}

fn decode(task: &PatchTask) -> Result<Vec<u8>, PatchError> {
    let content = base64::engine::general_purpose::STANDARD
        .decode(&task.content)
        .map_err(|e| PatchError::Content(format!("not base64: {e}")))?;
    if content.len() > MAX_PATCH_BYTES {
        return Err(PatchError::Content(format!(
            "{} bytes, more than {MAX_PATCH_BYTES}",
            content.len()
        )));
    }
    let digest = hex::encode(Sha256::digest(&content));
    if !task.sha256.is_empty() && task.sha256 != digest {
        return Err(PatchError::Content(format!(
            "its SHA-256 is {digest}, not {}",
            task.sha256
        )));
    }
    Ok(content)
}

fn owner(task: &PatchTask) -> Result<(Uid, Gid), PatchError> {
    let user =
        match &task.owner {
            None => None,
            Some(name) => Some(User::from_name(name).ok().flatten().ok_or_else(|| {
                PatchError::NoSuchAccount {
                    kind: "user",
                    name: name.clone(),
                }
            })?),
        };
    let uid = user.as_ref().map_or(Uid::from_raw(0), |u| u.uid);
    let gid = match &task.group {
        None => user.as_ref().map_or(Gid::from_raw(0), |u| u.gid),
        Some(name) => {
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| PatchError::NoSuchAccount {
                    kind: "group",
                    name: name.clone(),
                })?
                .gid
        }
    };
    Ok((uid, gid))
}

fn io<'p>(what: &'static str, path: &'p str) -> impl FnOnce(Errno) -> PatchError + 'p {
    move |source| PatchError::Io {
        what,
        path: path.to_string(),
        source,
    }
}

/// Opens the directory `parent` below `root` without following any link;
/// with `create`, missing directories are made (0755, root's).
fn open_beneath(
    root: &Path,
    parent: &Path,
    create: bool,
    path: &str,
) -> Result<OwnedFd, PatchError> {
    if create {
        std::fs::create_dir_all(root).map_err(|e| PatchError::Io {
            what: "create the patch root",
            path: root.display().to_string(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    }
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open the patch root of", path))?;
    let mut dir = root_fd;
    for component in parent.components() {
        let name = component.as_os_str();
        dir = match beneath(&dir, name) {
            Err(Errno::ENOENT) if create => {
                match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io("create a directory for", path)(e)),
                }
                beneath(&dir, name)
            }
            other => other,
        }
        .map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR => PatchError::Symlink(path.to_string()),
            e => io("open a directory of", path)(e),
        })?;
    }
    Ok(dir)
}

/// One directory below `dir`, refusing links and escapes.
fn beneath(dir: &OwnedFd, name: &std::ffi::OsStr) -> nix::Result<OwnedFd> {
    openat2(
        dir.as_fd(),
        name,
        OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS),
    )
}

fn write_file(
    dir: &OwnedFd,
    name: &str,
    content: &[u8],
    uid: Uid,
    gid: Gid,
    mode: u32,
    path: &str,
) -> Result<(), PatchError> {
    let tmp = format!(".{name}.pd-patch-{}", std::process::id());
    let fd = openat2(
        dir.as_fd(),
        tmp.as_str(),
        OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS),
    );
    let fd = match fd {
        Err(Errno::EEXIST) => {
            // A crashed earlier attempt of this very process id.
            let _ = nix::unistd::unlinkat(
                dir.as_fd(),
                tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return write_file(dir, name, content, uid, gid, mode, path);
        }
        other => other.map_err(io("create a temporary file for", path))?,
    };
    let written = (|| {
        let mut file = std::fs::File::from(fd);
        file.write_all(content)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        nix::unistd::fchown(file.as_fd(), Some(uid), Some(gid))?;
        // After chown, which clears set-id bits.
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
        nix::unistd::fsync(file.as_fd())?;
        nix::fcntl::renameat(dir.as_fd(), tmp.as_str(), dir.as_fd(), name)?;
        nix::unistd::fsync(dir.as_fd())
    })();
    if let Err(e) = written {
        let _ = nix::unistd::unlinkat(
            dir.as_fd(),
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return Err(io("write", path)(e));
    }
    Ok(())
}

fn delete(path: &str, root: &Path, parent: &Path, name: &str) -> Result<String, PatchError> {
    let dir = match open_beneath(root, parent, false, path) {
        Err(PatchError::Io {
            source: Errno::ENOENT,
            ..
        }) => return Ok(format!("{path} was already absent")),
        other => other?,
    };
    match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Err(Errno::ENOENT) => Ok(format!("{path} was already absent")),
        Err(e) => Err(io("delete", path)(e)),
        Ok(()) => {
            nix::unistd::fsync(dir.as_fd()).map_err(io("sync the directory of", path))?;
            Ok(format!("deleted {path}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn task(path: &Path, content: &[u8], mode: u32) -> PatchTask {
        PatchTask {
            path: path.display().to_string(),
            mode,
            owner: None,
            group: None,
            content: base64::engine::general_purpose::STANDARD.encode(content),
            sha256: hex::encode(Sha256::digest(content)),
        }
    }

    struct Roots {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn roots() -> Roots {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        Roots {
            root,
            outside,
            _dir: dir,
        }
    }

    #[test]
    fn writes_with_mode_creates_directories_and_deletes() {
        let r = roots();
        let target = r.root.join("sub/dir/plugin");
        let roots = [r.root.clone()];
        let done = apply(&task(&target, b"#!/bin/sh\n", 0o750), &roots).unwrap();
        assert!(done.starts_with("wrote"), "{done}");
        assert_eq!(std::fs::read(&target).unwrap(), b"#!/bin/sh\n");
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
        if nix::unistd::geteuid().is_root() {
            assert_eq!((meta.uid(), meta.gid()), (0, 0));
        }
        // Replaced atomically, no temporary file left.
        apply(&task(&target, b"two", 0o644), &roots).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(target.parent().unwrap()).unwrap().count(),
            1
        );
        let gone = apply(&task(&target, b"", 0), &roots).unwrap();
        assert!(gone.starts_with("deleted"), "{gone}");
        assert!(!target.exists());
        let again = apply(&task(&target, b"", 0), &roots).unwrap();
        assert!(again.contains("already absent"), "{again}");
    }

    #[test]
    fn escapes_are_refused_and_nothing_is_written() {
        let r = roots();
        let roots = [r.root.clone()];
        let dotdot = format!("{}/../outside/x", r.root.display());
        let e = apply(&task(Path::new(&dotdot), b"x", 0o644), &roots).unwrap_err();
        assert!(matches!(e, PatchError::BadPath(_)), "{e}");
        let e = apply(&task(&r.outside.join("x"), b"x", 0o644), &roots).unwrap_err();
        assert!(matches!(e, PatchError::OutsideRoots { .. }), "{e}");
        assert!(e.is_refusal());
        let e = apply(&task(Path::new("relative/x"), b"x", 0o644), &roots).unwrap_err();
        assert!(matches!(e, PatchError::BadPath(_)), "{e}");
        let e = apply(&task(&r.root, b"x", 0o644), &roots).unwrap_err();
        assert!(
            matches!(e, PatchError::OutsideRoots { .. }),
            "the root itself: {e}"
        );
        assert_eq!(std::fs::read_dir(&r.outside).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_in_any_component_is_refused() {
        let r = roots();
        let roots = [r.root.clone()];
        std::os::unix::fs::symlink(&r.outside, r.root.join("link")).unwrap();
        std::fs::create_dir_all(r.root.join("real")).unwrap();
        std::os::unix::fs::symlink("../link", r.root.join("real/deeper")).unwrap();
        for path in ["link/x", "link/new/x", "real/deeper/x"] {
            let e = apply(&task(&r.root.join(path), b"x", 0o644), &roots).unwrap_err();
            assert!(matches!(e, PatchError::Symlink(_)), "{path}: {e}");
            let e = apply(&task(&r.root.join(path), b"", 0), &roots).unwrap_err();
            assert!(matches!(e, PatchError::Symlink(_)), "delete {path}: {e}");
        }
        assert_eq!(std::fs::read_dir(&r.outside).unwrap().count(), 0);
        // A link as the file itself is replaced, never written through.
        std::os::unix::fs::symlink(r.outside.join("victim"), r.root.join("file")).unwrap();
        apply(&task(&r.root.join("file"), b"x", 0o644), &roots).unwrap();
        assert!(!r.outside.join("victim").exists());
        assert!(
            !std::fs::symlink_metadata(r.root.join("file"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn bad_content_owner_or_mode_is_refused() {
        let r = roots();
        let roots = [r.root.clone()];
        let target = r.root.join("f");
        let mut t = task(&target, b"x", 0o644);
        t.sha256 = hex::encode(Sha256::digest(b"y"));
        assert!(matches!(apply(&t, &roots), Err(PatchError::Content(_))));
        let mut t = task(&target, b"x", 0o644);
        t.content = "not base64!".into();
        assert!(matches!(apply(&t, &roots), Err(PatchError::Content(_))));
        let mut t = task(&target, b"x", 0o644);
        t.owner = Some("no-such-user-pd".into());
        assert!(matches!(
            apply(&t, &roots),
            Err(PatchError::NoSuchAccount { .. })
        ));
        let t = task(&target, b"x", 0o17777);
        assert!(matches!(apply(&t, &roots), Err(PatchError::BadMode(_))));
        assert!(!target.exists());
    }
}
