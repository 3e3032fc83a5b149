//! Helpers shared by the update backends' tests against real package managers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes a file, making its directories first.
pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("directory");
    std::fs::write(path, content).expect("file");
}

/// Puts an executable stand-in for a program at `root/relative`, so that
/// the collector's detection (which looks for the program) picks the backend.
pub fn stub_program(root: &Path, relative: &str) {
    let path = root.join(relative);
    write(&path, "#!/bin/sh\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
