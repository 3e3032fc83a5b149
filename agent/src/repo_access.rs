//! This client's own repository credential, written where each package
//! manager on the machine reads it (0600, root only):
//!
//! - apt: `/etc/apt/auth.conf.d/penguindome-client.conf`;
//! - dnf: the variables `penguindome_repo_user` and
//!   `penguindome_repo_password` in `/etc/dnf/vars`, which the site's
//!   `.repo` names;
//! - pacman: `/etc/pacman.d/penguindome-server.conf`, the `Server` line the
//!   site's include file pulls in, with the credential in its URL.
//!
//! The server keeps only a hash; revoking the client or rotating its
//! credential closes the repositories to it at once.

use std::io;
use std::path::{Path, PathBuf};

use penguindome_protocol::files::write_atomic;
use penguindome_protocol::wire::RepoCredential;

/// apt's file, relative to the root.
const APT_FILE: &str = "etc/apt/auth.conf.d/penguindome-client.conf";
/// dnf's variables directory, relative to the root.
const DNF_VARS: &str = "etc/dnf/vars";
/// pacman's server include, relative to the root.
const PACMAN_FILE: &str = "etc/pacman.d/penguindome-server.conf";

/// The credential files of the package managers present under `root`.
/// `repo_urls` starts with the repositories' address now; after a move,
/// the old one follows (apt's sources name it until a release carries the
/// new one).
fn files(root: &Path, repo_urls: &[String], c: &RepoCredential) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Some(repo_url) = repo_urls.first() else {
        return out;
    };
    if root.join("etc/apt").is_dir() {
        let mut text =
            "# This client's own credential (penguindome-agent writes it).\n".to_string();
        for url in repo_urls {
            text.push_str(&format!(
                "machine {url} login {} password {}\n",
                c.user, c.password
            ));
        }
        out.push((root.join(APT_FILE), text));
    }
    if root.join("etc/dnf").is_dir() {
        let vars = root.join(DNF_VARS);
        out.push((vars.join("penguindome_repo_user"), format!("{}\n", c.user)));
        out.push((
            vars.join("penguindome_repo_password"),
            format!("{}\n", c.password),
        ));
    }
    if root.join("etc/pacman.d").is_dir()
        && let Some((scheme, rest)) = repo_url.split_once("://")
    {
        // Both are URL-safe: hex and base64url.
        out.push((
            root.join(PACMAN_FILE),
            format!(
                "# This client's own credential (penguindome-agent writes it).\n\
                 Server = {scheme}://{}:{}@{rest}/arch/$arch\n",
                c.user, c.password
            ),
        ));
    }
    out
}

/// Writes the credential for every package manager present; returns the
/// files written.
pub fn write(root: &Path, repo_urls: &[String], c: &RepoCredential) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (path, text) in files(root, repo_urls, c) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// Whether this machine lacks the credential file of a package manager it
/// has (a restored backup, a removed file): then the agent asks for a new
/// one even when the server holds one.
pub fn missing(root: &Path, repo_url: &str) -> bool {
    let probe = RepoCredential {
        user: String::new(),
        password: String::new(),
    };
    let stale = |path: &Path| {
        // apt's file names the address; after a move it must name the new one.
        path.ends_with(APT_FILE)
            && std::fs::read_to_string(path)
                .is_ok_and(|t| !t.contains(&format!("machine {repo_url} ")))
    };
    files(root, &["https://x".to_string()], &probe)
        .iter()
        .any(|(path, _)| !path.exists() || stale(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> RepoCredential {
        RepoCredential {
            user: "0123456789abcdef0123456789abcdef".into(),
            password: "s3cr3t-_".into(),
        }
    }

    #[test]
    fn each_package_manager_gets_its_own_file_readable_by_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        for d in ["etc/apt", "etc/dnf", "etc/pacman.d"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let url = "https://pd.example.com:8443/penguindome/v1/repo";
        assert!(missing(root.path(), url));
        let old = "https://old.example.com/penguindome/v1/repo".to_string();
        let written = write(root.path(), &[url.to_string(), old.clone()], &credential()).unwrap();
        assert_eq!(written.len(), 4);
        for p in &written {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let apt = std::fs::read_to_string(root.path().join(APT_FILE)).unwrap();
        assert!(apt.contains(&format!(
            "machine {url} login 0123456789abcdef0123456789abcdef password s3cr3t-_"
        )));
        assert!(
            apt.contains(&format!("machine {old} login")),
            "the old address too"
        );
        let pacman = std::fs::read_to_string(root.path().join(PACMAN_FILE)).unwrap();
        assert!(pacman.contains(
            "Server = https://0123456789abcdef0123456789abcdef:s3cr3t-_@pd.example.com:8443/penguindome/v1/repo/arch/$arch"
        ));
        let pass =
            std::fs::read_to_string(root.path().join(DNF_VARS).join("penguindome_repo_password"))
                .unwrap();
        assert_eq!(pass, "s3cr3t-_\n");
        assert!(!missing(root.path(), url));
        assert!(
            missing(root.path(), "https://moved.example/penguindome/v1/repo"),
            "stale after a move"
        );
    }

    #[test]
    fn a_machine_without_package_managers_gets_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            write(root.path(), &["https://x/r".to_string()], &credential())
                .unwrap()
                .is_empty()
        );
        assert!(!missing(root.path(), "https://x/r"));
    }
}
