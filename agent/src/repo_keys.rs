//! The package managers' trust in the server's keys. The site package
//! installs the keyrings; an agent that was offline through a key rotation
//! never got the site package that trusts the new key, yet follows the
//! rotation through the certifications (see `server_keys`). Before an
//! upgrade it writes the keys it accepts into the keyrings the site package
//! installed, or the re-signed repositories would be refused and the agent
//! could never upgrade to the site package that fixes them. The next site
//! package puts its own copies back (the same keys).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use penguindome_protocol::files::write_atomic;
use penguindome_protocol::{KeyError, PublicKey, armored_keyring};

/// apt's keyring (`Signed-By` in penguindome.sources).
const APT_KEYRING: &str = "usr/share/keyrings/penguindome-archive-keyring.asc";
/// dnf's `gpgkey` (imported into rpm's database when a signature needs it).
const RPM_KEY: &str = "etc/pki/rpm-gpg/RPM-GPG-KEY-penguindome";
/// pacman-key's keyring and its list of trusted fingerprints.
const PACMAN_KEYRING: &str = "usr/share/pacman/keyrings/penguindome.gpg";
const PACMAN_TRUSTED: &str = "usr/share/pacman/keyrings/penguindome-trusted";

/// Why the keyrings could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum RepoKeysError {
    /// A key could not be serialised.
    #[error("cannot write the server keys as a keyring: {0}")]
    Key(#[from] KeyError),
    /// A keyring file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// pacman-key failed to import the keyring.
    #[error("pacman-key --populate penguindome failed: {0}")]
    Populate(String),
}

/// Rewrites each keyring the site package installed under `root` that does
/// not hold exactly `keys`; returns the files written. Under `/`, a new
/// pacman keyring is also imported with `pacman-key --populate`.
pub fn refresh(root: &Path, keys: &[PublicKey]) -> Result<Vec<PathBuf>, RepoKeysError> {
    let keyring = armored_keyring(keys)?;
    let trusted: String = keys
        .iter()
        .map(|k| format!("{}:4:\n", k.fingerprint()))
        .collect();
    let mut written = Vec::new();
    for (file, text) in [
        (APT_KEYRING, &keyring),
        (RPM_KEY, &keyring),
        (PACMAN_KEYRING, &keyring),
        (PACMAN_TRUSTED, &trusted),
    ] {
        let path = root.join(file);
        // Only what the site package installed: this is no installer.
        let Ok(now) = std::fs::read_to_string(&path) else {
            continue;
        };
        if now == *text {
            continue;
        }
        write_atomic(&path, text.as_bytes(), 0o644).map_err(|source| RepoKeysError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    let pacman_changed = written.iter().any(|p| p.ends_with(PACMAN_KEYRING));
    if pacman_changed && root == Path::new("/") {
        populate_pacman()?;
    }
    Ok(written)
}

fn populate_pacman() -> Result<(), RepoKeysError> {
    let out = Command::new("pacman-key")
        .args(["--populate", "penguindome"])
        .output()
        .map_err(|e| RepoKeysError::Populate(e.to_string()))?;
    if !out.status.success() {
        return Err(RepoKeysError::Populate(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use penguindome_protocol::SecretKey;

    #[test]
    fn only_installed_keyrings_that_differ_are_rewritten() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (
            SecretKey::generate("a <a@example.test>").unwrap(),
            SecretKey::generate("b <b@example.test>").unwrap(),
        );
        let apt = root.path().join(APT_KEYRING);
        std::fs::create_dir_all(apt.parent().unwrap()).unwrap();
        std::fs::write(&apt, armored_keyring(&[a.public()]).unwrap()).unwrap();
        assert!(refresh(root.path(), &[a.public()]).unwrap().is_empty());
        let keys = [a.public(), b.public()];
        assert_eq!(
            refresh(root.path(), &keys).unwrap(),
            std::slice::from_ref(&apt)
        );
        // What apt reads back is both keys, in one armored block.
        let text = std::fs::read_to_string(&apt).unwrap();
        assert_eq!(text.matches("BEGIN PGP PUBLIC KEY BLOCK").count(), 1);
        assert_eq!(text, armored_keyring(&keys).unwrap());
        assert!(
            !root.path().join(RPM_KEY).exists(),
            "not installed, not made"
        );
        let trusted = root.path().join(PACMAN_TRUSTED);
        std::fs::create_dir_all(trusted.parent().unwrap()).unwrap();
        std::fs::write(&trusted, "").unwrap();
        assert_eq!(
            refresh(root.path(), &keys).unwrap(),
            std::slice::from_ref(&trusted)
        );
        assert_eq!(
            std::fs::read_to_string(&trusted).unwrap(),
            format!("{}:4:\n{}:4:\n", a.fingerprint(), b.fingerprint())
        );
    }
}
