//! Man pages and shell completions made from a binary's clap definition.
//!
//! Each binary writes its own with a hidden `generate-docs DIR` command, so
//! what the packages install always matches the binary they carry. The
//! layout of DIR is what the package builders read:
//! `man/NAME[-SUB...].1`, `bash/NAME.bash`, `zsh/_NAME` and `fish/NAME.fish`.

use std::fs;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Writing the documents failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct DocsError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Subfolders of the output and the shells whose completions go in each.
const SHELLS: [(&str, Shell); 3] = [
    ("bash", Shell::Bash),
    ("zsh", Shell::Zsh),
    ("fish", Shell::Fish),
];

/// Writes the man pages (one per visible subcommand) and completions for
/// `cmd` below `dir`.
pub fn write(cmd: clap::Command, dir: &Path) -> Result<(), DocsError> {
    let man = dir.join("man");
    create(&man)?;
    clap_mangen::generate_to(cmd.clone(), &man).map_err(|source| DocsError {
        path: man.clone(),
        source,
    })?;
    for (folder, shell) in SHELLS {
        let out = dir.join(folder);
        create(&out)?;
        let mut cmd = cmd.clone();
        let name = cmd.get_name().to_string();
        clap_complete::generate_to(shell, &mut cmd, name, &out)
            .map_err(|source| DocsError { path: out, source })?;
    }
    Ok(())
}

fn create(dir: &Path) -> Result<(), DocsError> {
    fs::create_dir_all(dir).map_err(|source| DocsError {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    #[test]
    fn writes_a_page_per_visible_subcommand_and_three_completions() {
        let cmd = Command::new("tool")
            .about("Does things")
            .subcommand(Command::new("show").about("Shows").arg(Arg::new("what")))
            .subcommand(Command::new("secret").hide(true));
        let dir = tempfile::tempdir().unwrap();
        write(cmd, dir.path()).unwrap();
        let mut pages: Vec<String> = fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        pages.sort();
        assert_eq!(pages, ["tool-show.1", "tool.1"]);
        let page = fs::read_to_string(dir.path().join("man/tool.1")).unwrap();
        assert!(page.contains("Does things"), "{page}");
        assert!(!page.contains("secret"), "{page}");
        for f in ["bash/tool.bash", "zsh/_tool", "fish/tool.fish"] {
            let text = fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.contains("show"), "{f}: {text}");
        }
    }
}
