//! The .MTREE pacman checks installed files against (`pacman -Qkk`).
//!
//! alpm-mtree writes this file only by running bsdtar over files on disk,
//! whose owners would be the unprivileged release user's; we write the
//! text from the spec and have alpm-mtree's parser read it back and agree,
//! entry by entry, before the package carries it. It is ALPM-MTREEv1 (MD5
//! beside SHA-256), as makepkg wrote until pacman 6.1: pacman 6.0's `-Qkk`
//! reports every file altered when the MD5 is missing.

use std::path::PathBuf;
use std::str::FromStr;

use alpm_mtree::Mtree;
use alpm_mtree::mtree::v2::{Directory, File, Path};
use alpm_types::{Md5Checksum, Sha256Checksum};

use super::super::BuildError;

/// One member the mtree describes.
pub struct Entry<'a> {
    /// Path inside the package, without "./".
    pub path: &'a str,
    /// Permission bits.
    pub mode: u32,
    /// Contents; `None` for a directory.
    pub data: Option<&'a [u8]>,
}

/// The mtree text for `entries`, every one root-owned with mtime `time`,
/// checked by alpm-mtree's parser.
pub fn write(entries: &[Entry<'_>], time: i64) -> Result<String, BuildError> {
    let text = render(entries, time);
    verify(&text, entries, time)?;
    Ok(text)
}

fn render(entries: &[Entry<'_>], time: i64) -> String {
    let mut out = String::from("#mtree\n/set type=file uid=0 gid=0 mode=644\n");
    for e in entries {
        let line = match e.data {
            Some(data) => format!(
                "./{} time={time}.0 mode={:o} size={} md5digest={} sha256digest={}\n",
                e.path,
                e.mode,
                data.len(),
                Md5Checksum::calculate_from(data),
                Sha256Checksum::calculate_from(data),
            ),
            None => format!("./{} time={time}.0 mode={:o} type=dir\n", e.path, e.mode),
        };
        out.push_str(&line);
    }
    out
}

/// Parses `text` as ALPM-MTREEv1 and compares it with what it should say.
fn verify(text: &str, entries: &[Entry<'_>], time: i64) -> Result<(), BuildError> {
    let mut parsed = match Mtree::from_str(text)? {
        Mtree::V1(paths) => paths,
        Mtree::V2(_) => return Err(BuildError::Spec("the .MTREE parsed as version 2".into())),
    };
    let mut expected: Vec<Path> = entries.iter().map(|e| expected(e, time)).collect();
    // The parser hands entries back sorted by path.
    parsed.sort_by(|a, b| a.as_path().cmp(b.as_path()));
    expected.sort_by(|a, b| a.as_path().cmp(b.as_path()));
    if parsed.len() != expected.len() {
        return Err(BuildError::Spec(format!(
            "the .MTREE reads back as {} entries, not {}",
            parsed.len(),
            expected.len()
        )));
    }
    match parsed.iter().zip(&expected).find(|(p, e)| p != e) {
        Some((p, e)) => Err(BuildError::Spec(format!(
            "the .MTREE reads back as {p:?} where it says {e:?}"
        ))),
        None => Ok(()),
    }
}

fn expected(e: &Entry<'_>, time: i64) -> Path {
    let path = PathBuf::from(format!("./{}", e.path));
    let mode = format!("{:o}", e.mode);
    match e.data {
        Some(data) => Path::File(File {
            path,
            uid: 0,
            gid: 0,
            mode,
            size: data.len() as u64,
            time,
            md5_digest: Some(Md5Checksum::calculate_from(data)),
            sha256_digest: Sha256Checksum::calculate_from(data),
        }),
        None => Path::Directory(Directory {
            path,
            uid: 0,
            gid: 0,
            mode,
            time,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries<'a>(data: &'a [u8]) -> Vec<Entry<'a>> {
        vec![
            Entry {
                path: "usr/bin/tool",
                mode: 0o755,
                data: Some(data),
            },
            Entry {
                path: "usr/bin",
                mode: 0o755,
                data: None,
            },
        ]
    }

    #[test]
    fn written_text_reads_back_as_version_1_with_both_digests() {
        let text = write(&entries(b"#!/bin/sh\n"), 1_700_000_000).unwrap();
        assert!(text.starts_with("#mtree\n/set type=file uid=0 gid=0 mode=644\n"));
        assert!(text.contains("./usr/bin/tool time=1700000000.0 mode=755 size=10 md5digest="));
        assert!(text.contains("./usr/bin time=1700000000.0 mode=755 type=dir\n"));
    }

    #[test]
    fn text_that_says_something_else_is_refused() {
        let text = render(&entries(b"one"), 1);
        let err = verify(&text, &entries(b"two"), 1).unwrap_err();
        assert!(err.to_string().contains("./usr/bin/tool"), "{err}");
        let err = verify(&text, &entries(b"one"), 2).unwrap_err();
        assert!(matches!(err, BuildError::Spec(_)), "{err}");
        let err = verify(&text, &entries(b"one")[..1], 1).unwrap_err();
        assert!(err.to_string().contains("2 entries, not 1"), "{err}");
    }
}
