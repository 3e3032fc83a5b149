//! `xattr::set`, the only part of the xattr 0.2 API that async-tar calls
//! (when unpacking archives with extended attributes), built on rustix.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

/// Sets the extended attribute `name` of `path` (not following symlinks).
pub fn set<N, P>(path: P, name: N, value: &[u8]) -> io::Result<()>
where
    P: AsRef<Path>,
    N: AsRef<OsStr>,
{
    rustix::fs::lsetxattr(
        path.as_ref(),
        name.as_ref(),
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(io::Error::from)
}
