//! Entry points for the fuzzers (`scripts/fuzz`; the cargo-fuzz targets
//! in tests/fuzz/ call these) and for replaying their corpora as
//! regression tests on every build. Each takes arbitrary bytes, as a
//! hostile peer would send them, and must return without panicking,
//! whatever it makes of them.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::actions::{Action, ActionHeader, ActionReport, SealedAction};
use crate::envelope::Freshness;
use crate::wire::{EnrollRequest, Report, UpdateRequest, UpdateResponse};
use crate::{Envelope, SecretKey};

/// A fuzz target: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target, by name (the corpus folder and cargo-fuzz binary name).
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("report", report),
    ("bodies", bodies),
    ("token", token),
    ("sealed", sealed),
    ("agent_config", agent_config),
    ("shell", shell),
];

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("fuzz").expect("a key can be made"))
}

/// Splits at the first NUL: the signature header, then the body.
fn header_and_body(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A signed request as a server receives it (header, NUL, body): the
/// header is parsed, the signature checked against a key it cannot match,
/// and an enrollment's body is parsed before its own key verifies it.
pub fn envelope(data: &[u8]) {
    let (header, body) = header_and_body(data);
    let Ok(e) = Envelope::from_wire(body.to_vec(), Some(header)) else {
        return;
    };
    let _ = e.issuer();
    let window = Freshness::now(Duration::from_secs(900));
    let _ = e.open::<UpdateRequest>(&key().public(), "client", &window);
    let _ = e.open_enrollment(&window);
}

/// A report body, as the server reads it (raw plugin texts) and as the
/// agent builds it; then every built-in collector's facts read from it.
pub fn report(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<Report<Box<RawValue>>>(data) {
        for (name, text) in &r.plugins {
            read_facts(name, text.get(), r.facts_version);
        }
    }
    let _ = serde_json::from_slice::<Report<Value>>(data);
}

fn read_facts(name: &str, text: &str, version: u32) {
    use crate::facts::{self, read_text};
    let t = Some(text);
    match name {
        "agent" => drop(read_text::<facts::agent::Agent>(t, version)),
        "auto_updates" => drop(read_text::<facts::auto_updates::AutoUpdates>(t, version)),
        "firewall" => drop(read_text::<facts::firewall::Firewall>(t, version)),
        "geolocation" => drop(read_text::<facts::geolocation::Geolocation>(t, version)),
        "guest_session" => drop(read_text::<facts::guest_session::GuestSession>(t, version)),
        "hardware" => drop(read_text::<facts::hardware::Hardware>(t, version)),
        "hd_encryption" => drop(read_text::<facts::hd_encryption::HdEncryption>(t, version)),
        "ip_addresses" => drop(read_text::<facts::ip_addresses::IpAddresses>(t, version)),
        "network" => drop(read_text::<facts::network::Network>(t, version)),
        "os_info" => drop(read_text::<facts::os_info::OsInfo>(t, version)),
        "os_updates" => drop(read_text::<facts::os_updates::OsUpdates>(t, version)),
        "screenlock" => drop(read_text::<facts::screenlock::ScreenLock>(t, version)),
        "software" => drop(read_text::<facts::software::Software>(t, version)),
        "sshd" => drop(read_text::<facts::sshd::Sshd>(t, version)),
        "users" => drop(read_text::<facts::users::Users>(t, version)),
        _ => {}
    }
}

/// Every other body that crosses the wire, each way.
pub fn bodies(data: &[u8]) {
    let _ = serde_json::from_slice::<EnrollRequest>(data);
    let _ = serde_json::from_slice::<UpdateRequest>(data);
    let _ = serde_json::from_slice::<ActionReport>(data);
    if let Ok(answer) = serde_json::from_slice::<UpdateResponse>(data) {
        for sealed in &answer.actions {
            // How an agent reads an action: its header first, then all.
            let _ = serde_json::from_str::<ActionHeader>(&sealed.action);
            let _ = serde_json::from_str::<Action>(&sealed.action);
        }
        let _ = crate::key_rotation::walk(&key().public(), &answer.server_keys);
    }
    let _ = serde_json::from_slice::<SealedAction>(data);
}

/// An enrollment token as pasted or read from a file.
pub fn token(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<crate::token::EnrollmentToken>();
    }
}

/// A sealed marker and a field selector, as stored and as typed.
pub fn sealed(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = crate::sealing::sealed_digest(&v);
        let _ = serde_json::from_value::<crate::sealing::Sealed>(v);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(sel) = crate::sealing::Selector::parse(text)
    {
        let _ = crate::facts::check_sealable(&sel);
    }
}

/// What crosses the shell relay: a sealed frame as either end opens it
/// (with fixed keys: the counter and length checks run, the AEAD refuses),
/// a plaintext frame, and every JSON message of both ends.
pub fn shell(data: &[u8]) {
    use crate::shell::{
        Frame, OpenShell, RelayEvent, ShellChallenge, ShellHello, SignedText, TranscriptKeys,
    };
    let keys = TranscriptKeys {
        to_agent: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
        to_admin: "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=".into(),
    };
    if let Ok((mut typed, _)) = keys.openers() {
        let _ = typed.open(data);
    }
    let _ = Frame::decode(data);
    let _ = crate::shell::frame_counter(data);
    let _ = serde_json::from_slice::<OpenShell>(data);
    let _ = serde_json::from_slice::<RelayEvent>(data);
    let _ = serde_json::from_slice::<ShellChallenge>(data);
    let _ = serde_json::from_slice::<ShellHello>(data);
    if let Ok(signed) = serde_json::from_slice::<SignedText>(data) {
        let _ = crate::Envelope::from_wire(
            signed.payload.into_bytes(),
            Some(signed.signature.as_bytes()),
        );
    }
}

/// agent.toml, which the site package and `clients configure` write.
pub fn agent_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::agent_config::AgentConfig::parse(text, Path::new("agent.toml"));
    }
}

/// Runs every file of every target's corpus under `root` through the
/// target; returns how many files ran.
pub fn replay(root: &Path, targets: &[(&str, Target)]) -> usize {
    let mut ran = 0;
    for (name, target) in targets {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                target(&bytes);
                ran += 1;
            }
        }
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::new_nonce;

    /// One valid input per target, so the fuzzers start from the real
    /// formats. Written with PENGUINDOME_BLESS=1; checked to stay valid.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let k = key();
        let update = UpdateRequest {
            hostname: "desk".into(),
            agent_version: "1".into(),
        };
        let sealed = Envelope::seal(k, "client", None, &update).unwrap();
        let mut envelope = sealed.signature_header().into_bytes();
        envelope.push(0);
        envelope.extend_from_slice(sealed.payload());
        let report = Report {
            report_id: new_nonce(),
            hostname: "desk".into(),
            collected_at: chrono::Utc::now(),
            agent_version: "1".into(),
            facts_version: crate::facts::FACTS_VERSION,
            plugins: crate::facts::fixtures::compliant()
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .collect(),
        };
        let token = crate::token::EnrollmentToken::generate(Some([1; 32]), k.fingerprint());
        let marker = serde_json::json!({"sealed": {"key": "K", "digest": "d", "ciphertext": "c"}});
        let config = crate::agent_config::AgentConfig::new(
            "https://pd.example.com:8443".into(),
            k.public().to_armored().unwrap(),
            String::new(),
        );
        vec![
            ("envelope", envelope),
            ("report", serde_json::to_vec(&report).unwrap()),
            ("bodies", serde_json::to_vec(&update).unwrap()),
            ("token", token.to_string().into_bytes()),
            ("sealed", serde_json::to_vec(&marker).unwrap()),
            ("agent_config", config.to_toml().unwrap().into_bytes()),
        ]
    }

    #[test]
    fn seeds_are_valid_inputs() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus");
        let bless = std::env::var_os("PENGUINDOME_BLESS").is_some();
        for (name, bytes) in seeds() {
            let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).unwrap();
            target(&bytes);
            if bless {
                let dir = fuzz.join(name);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("seed"), &bytes).unwrap();
            }
        }
    }

    /// The committed corpora (tests/fuzz/corpus/TARGET/), and every crash
    /// the fuzzers found (tests/fuzz/regressions/TARGET/), run without a
    /// panic.
    #[test]
    fn the_fuzz_corpora_replay_cleanly() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz");
        let ran =
            replay(&fuzz.join("corpus"), TARGETS) + replay(&fuzz.join("regressions"), TARGETS);
        assert!(
            ran >= TARGETS.len(),
            "only {ran} corpus files under {}",
            fuzz.display()
        );
    }
}
