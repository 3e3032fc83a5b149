//! Shamir shares of the key that locks the site's secrets key.
//!
//! A share is one line of text an administrator can keep on paper or type:
//! `pdsh1.<set>.<threshold>.<x>.<y>.<check>`, where `<set>` names the
//! `secrets enable` that made it, `<x>` is the share's number, `<y>` its
//! value (base64url) and `<check>` the first 4 bytes of the SHA-256 of
//! everything before it, so a mistyped share is named rather than silently
//! rebuilding a wrong key.

use blahaj::Sharks;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const PREFIX: &str = "pdsh1";

/// One share.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// The set it belongs to.
    pub set: String,
    /// How many shares of the set open the key.
    pub threshold: u8,
    /// Its number in the set (1..=255).
    pub x: u8,
    y: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "share {} of set {}", self.x, self.set)
    }
}

/// Why a share or a set of shares is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    /// Not a share at all.
    #[error("{0} is not a PenguinDome secrets share (pdsh1.…)")]
    Malformed(String),
    /// The checksum does not match: a typo or damage.
    #[error("{0} is damaged or mistyped: its checksum does not match")]
    Checksum(String),
    /// Shares of two different `secrets enable` runs.
    #[error("{0} belongs to share set {1}, the site's key uses set {2}")]
    OtherSet(String, String, String),
    /// The same share twice.
    #[error("share {0} was given twice")]
    Repeated(u8),
    /// Not enough distinct shares.
    #[error("{given} distinct share(s) given, {needed} needed")]
    TooFew {
        /// How many.
        given: usize,
        /// The threshold.
        needed: u8,
    },
}

impl Share {
    /// The share as one line of text.
    pub fn to_text(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        let y = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*self.y);
        let body = format!("{PREFIX}.{}.{}.{}.{y}", self.set, self.threshold, self.x);
        Zeroizing::new(format!("{body}.{}", checksum(&body)))
    }

    /// Reads a share; `label` names where it came from in errors.
    pub fn parse(text: &str, label: &str) -> Result<Self, ShareError> {
        use base64::Engine as _;
        let malformed = || ShareError::Malformed(label.to_string());
        let text = text.trim();
        let (body, check) = text.rsplit_once('.').ok_or_else(malformed)?;
        let parts: Vec<&str> = body.split('.').collect();
        let [PREFIX, set, threshold, x, y] = parts.as_slice() else {
            return Err(malformed());
        };
        if checksum(body) != check {
            return Err(ShareError::Checksum(label.to_string()));
        }
        let threshold = threshold.parse().map_err(|_| malformed())?;
        let x = x.parse().map_err(|_| malformed())?;
        let y = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(y)
            .map_err(|_| malformed())?;
        if x == 0 || y.len() != 32 {
            return Err(malformed());
        }
        Ok(Self {
            set: set.to_string(),
            threshold,
            x,
            y: Zeroizing::new(y),
        })
    }
}

fn checksum(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..4])
}

/// Splits a 32-byte key into `count` shares, any `threshold` of which
/// rebuild it.
pub fn split(key: &[u8; 32], set: &str, count: u8, threshold: u8) -> Vec<Share> {
    Sharks(threshold)
        .dealer(key)
        .take(usize::from(count))
        .map(|s| {
            let bytes = Zeroizing::new(Vec::from(&s));
            Share {
                set: set.to_string(),
                threshold,
                x: bytes[0],
                y: Zeroizing::new(bytes[1..].to_vec()),
            }
        })
        .collect()
}

/// Rebuilds the key from shares of `set`, refusing repeats, strangers and
/// too few. The result is only right if every share was; the locked key's
/// AEAD check tells.
pub fn combine(
    shares: &[(String, Share)],
    set: &str,
    threshold: u8,
) -> Result<Zeroizing<[u8; 32]>, ShareError> {
    let mut seen = Vec::new();
    let mut points = Vec::new();
    for (label, s) in shares {
        if s.set != set {
            return Err(ShareError::OtherSet(
                label.clone(),
                s.set.clone(),
                set.to_string(),
            ));
        }
        if seen.contains(&s.x) {
            return Err(ShareError::Repeated(s.x));
        }
        seen.push(s.x);
        let mut bytes = Zeroizing::new(vec![s.x]);
        bytes.extend_from_slice(&s.y);
        points.push(
            blahaj::Share::try_from(bytes.as_slice())
                .map_err(|_| ShareError::Malformed(label.clone()))?,
        );
    }
    if points.len() < usize::from(threshold) {
        return Err(ShareError::TooFew {
            given: points.len(),
            needed: threshold,
        });
    }
    let secret =
        Zeroizing::new(
            Sharks(threshold)
                .recover(&points)
                .map_err(|_| ShareError::TooFew {
                    given: points.len(),
                    needed: threshold,
                })?,
        );
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&secret[..32]);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(shares: &[Share]) -> Vec<(String, Share)> {
        shares
            .iter()
            .map(|s| (format!("share {}", s.x), s.clone()))
            .collect()
    }

    #[test]
    fn any_k_of_n_rebuild_the_key_and_fewer_do_not() {
        let key = [42u8; 32];
        let shares = split(&key, "abcd1234", 5, 3);
        assert_eq!(shares.len(), 5);
        for pick in [[0, 1, 2], [1, 3, 4], [4, 0, 2]] {
            let chosen: Vec<Share> = pick.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(*combine(&labelled(&chosen), "abcd1234", 3).unwrap(), key);
        }
        let two = labelled(&shares[..2]);
        assert_eq!(
            combine(&two, "abcd1234", 3).unwrap_err(),
            ShareError::TooFew {
                given: 2,
                needed: 3
            }
        );
        let repeated = labelled(&[shares[0].clone(), shares[0].clone(), shares[1].clone()]);
        assert_eq!(
            combine(&repeated, "abcd1234", 3).unwrap_err(),
            ShareError::Repeated(1)
        );
    }

    #[test]
    fn shares_round_trip_as_text_and_typos_are_named() {
        let shares = split(&[7u8; 32], "set00001", 3, 2);
        let text = shares[1].to_text();
        assert_eq!(Share::parse(&text, "x").unwrap(), shares[1]);
        // One character changed in the value.
        let mut typo = text.to_string();
        let i = typo.len() - 15;
        let c = if &typo[i..=i] == "A" { "B" } else { "A" };
        typo.replace_range(i..=i, c);
        assert_eq!(
            Share::parse(&typo, "share file s2.txt").unwrap_err(),
            ShareError::Checksum("share file s2.txt".into())
        );
        assert!(matches!(
            Share::parse("hello", "stdin line 1"),
            Err(ShareError::Malformed(_))
        ));
        let other = split(&[7u8; 32], "set00002", 3, 2);
        let mixed = labelled(&[shares[0].clone(), other[1].clone()]);
        assert!(matches!(
            combine(&mixed, "set00001", 2),
            Err(ShareError::OtherSet(..))
        ));
    }
}
