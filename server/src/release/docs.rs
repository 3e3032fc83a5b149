//! Man pages and shell completions for the packages, made by running each
//! binary's hidden `generate-docs` command, so they describe exactly the
//! binary the package carries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::{Compression, GzBuilder};

use super::BuildError;
use super::spec::{Family, PackageFile};

/// How a binary is asked for its documents: pdome-admin and the agent have
/// a hidden subcommand, penguindome-server (no subcommands) a hidden flag.
#[derive(Debug, Clone, Copy)]
pub enum Ask {
    /// `BINARY generate-docs DIR`.
    Subcommand,
    /// `BINARY --generate-docs DIR`.
    Flag,
}

/// The documents of the binary at `binary`, as package files for every
/// family (zsh's folder differs on Debian).
pub fn generate(binary: &Path, ask: Ask) -> Result<Vec<PackageFile>, BuildError> {
    let dir = tempfile::tempdir()?;
    run_generator(binary, ask, dir.path())?;
    let mut files = Vec::new();
    for page in sorted_entries(&dir.path().join("man"))? {
        files.push(man_page(&page)?);
    }
    for script in sorted_entries(&dir.path().join("bash"))? {
        // bash-completion loads a command's file by the command's name.
        let file = installed(&script, "/usr/share/bash-completion/completions")?;
        let path = file.path.trim_end_matches(".bash").to_string();
        files.push(PackageFile { path, ..file });
    }
    for script in sorted_entries(&dir.path().join("zsh"))? {
        files.push(installed(&script, "/usr/share/zsh/vendor-completions")?.only_in(Family::Deb));
        for family in [Family::Rpm, Family::Arch] {
            files.push(installed(&script, "/usr/share/zsh/site-functions")?.only_in(family));
        }
    }
    for script in sorted_entries(&dir.path().join("fish"))? {
        files.push(installed(&script, "/usr/share/fish/vendor_completions.d")?);
    }
    if !files.iter().any(|f| f.path.starts_with("/usr/share/man/")) {
        return Err(BuildError::Spec(format!(
            "{} wrote no man page",
            binary.display()
        )));
    }
    Ok(files)
}

fn run_generator(binary: &Path, ask: Ask, out: &Path) -> Result<(), BuildError> {
    let arg = match ask {
        Ask::Subcommand => "generate-docs",
        Ask::Flag => "--generate-docs",
    };
    let output = Command::new(binary)
        .arg(arg)
        .arg(out)
        .output()
        .map_err(|e| {
            BuildError::Spec(format!(
                "cannot run {} to make its man pages: {e}; give a binary built for this machine",
                binary.display()
            ))
        })?;
    if !output.status.success() {
        return Err(BuildError::Spec(format!(
            "{} {arg} failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut paths = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    paths.sort();
    Ok(paths)
}

/// A man page, gzip'd without a name or time so that builds repeat.
fn man_page(page: &Path) -> Result<PackageFile, BuildError> {
    let text = std::fs::read(page)?;
    let mut gz = GzBuilder::new().write(Vec::new(), Compression::best());
    gz.write_all(&text)?;
    let name = file_name(page)?;
    Ok(PackageFile::new(
        &format!("/usr/share/man/man1/{name}.gz"),
        0o644,
        gz.finish()?,
    ))
}

fn installed(script: &Path, folder: &str) -> Result<PackageFile, BuildError> {
    let name = file_name(script)?;
    Ok(PackageFile::new(
        &format!("{folder}/{name}"),
        0o644,
        std::fs::read(script)?,
    ))
}

fn file_name(path: &Path) -> Result<String, BuildError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| BuildError::Spec(format!("odd document name {}", path.display())))
}
