//! `unencrypted-hard-drive`: a local filesystem or swap without encryption.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::hd_encryption::HdEncryption;

use super::{Check, Context, Facts, Finding, cannot_tell, fact};

/// Some local storage is not encrypted.
pub struct DiskEncryption;

impl Check for DiskEncryption {
    fn name(&self) -> &'static str {
        "unencrypted-hard-drive"
    }

    fn describe(&self) -> &'static str {
        "a mounted local filesystem or swap is not on an encrypted device"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let d = match fact::<HdEncryption>(facts) {
            Ok(d) => d,
            Err(f) => return f,
        };
        if d.encrypted {
            return Finding::Clear;
        }
        let judged = || {
            let fs = d
                .filesystems
                .iter()
                .map(|f| (&f.mountpoint, f.encrypted.clone()));
            fs.chain(d.swap.iter().map(|s| (&s.device, s.encrypted.clone())))
        };
        let named = |want: Known<bool>| {
            judged()
                .filter(|(_, e)| *e == want)
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
        };
        let (plain, unknown) = (named(Known::Value(false)), named(Known::UNKNOWN));
        match (plain.is_empty(), unknown.is_empty()) {
            (false, true) => Finding::Raise(format!("not encrypted: {}", plain.join(", "))),
            (false, false) => Finding::Raise(format!(
                "not encrypted: {}; cannot tell: {}",
                plain.join(", "),
                unknown.join(", ")
            )),
            (true, false) => cannot_tell("whether the disks are encrypted", &d.evidence),
            (true, true) => Finding::Raise("storage is not encrypted".into()),
        }
    }
}
