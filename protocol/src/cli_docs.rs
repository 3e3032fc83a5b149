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

/// A section clap cannot know, appended to the binary's own page (FILES,
/// EXAMPLES, SEE ALSO).
pub struct ManSection {
    /// The heading, in capitals.
    pub title: &'static str,
    /// Each item: the term in bold (a path, a command), then what it is.
    pub items: &'static [(&'static str, &'static str)],
}

/// Writes the man pages (one per visible subcommand, `extra` appended to
/// the top one) and completions for `cmd` below `dir`.
pub fn write(cmd: clap::Command, dir: &Path, extra: &[ManSection]) -> Result<(), DocsError> {
    let man = dir.join("man");
    create(&man)?;
    clap_mangen::generate_to(cmd.clone(), &man).map_err(|source| DocsError {
        path: man.clone(),
        source,
    })?;
    if !extra.is_empty() {
        append(&man.join(format!("{}.1", cmd.get_name())), extra)?;
    }
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

/// Appends `sections` to a page as roff, each item an indented paragraph
/// under its term (the layout of FILES in most man pages).
fn append(page: &Path, sections: &[ManSection]) -> Result<(), DocsError> {
    let mut roff = roff::Roff::new();
    for section in sections {
        roff.control("SH", [section.title]);
        for (term, text) in section.items {
            roff.control("TP", []);
            roff.text([roff::bold(*term)]);
            roff.text([roff::roman(*text)]);
        }
    }
    let mut out = fs::OpenOptions::new()
        .append(true)
        .open(page)
        .map_err(|source| DocsError {
            path: page.to_path_buf(),
            source,
        })?;
    std::io::Write::write_all(&mut out, roff.to_roff().as_bytes()).map_err(|source| DocsError {
        path: page.to_path_buf(),
        source,
    })
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
        let files = ManSection {
            title: "FILES",
            items: &[("/etc/tool.toml", "The configuration; see \\fBtool\\fR(5).")],
        };
        write(cmd, dir.path(), &[files]).unwrap();
        let mut pages: Vec<String> = fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        pages.sort();
        assert_eq!(pages, ["tool-show.1", "tool.1"]);
        let page = fs::read_to_string(dir.path().join("man/tool.1")).unwrap();
        assert!(page.contains("Does things"), "{page}");
        assert!(!page.contains("secret"), "{page}");
        // Roff escapes are escaped again: the text is shown, never obeyed.
        assert!(
            page.contains(
                ".SH FILES\n.TP\n\\fB/etc/tool.toml\\fR\nThe configuration; see \\\\fBtool"
            ),
            "{page}"
        );
        let sub = fs::read_to_string(dir.path().join("man/tool-show.1")).unwrap();
        assert!(!sub.contains("FILES"), "{sub}");
        for f in ["bash/tool.bash", "zsh/_tool", "fish/tool.fish"] {
            let text = fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.contains("show"), "{f}: {text}");
        }
    }
}
