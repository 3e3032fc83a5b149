//! A transcript as asciicast v2 (what `asciinema play` replays): the
//! recorded frames opened with the session's keys, in order, output as
//! `o` events, keystrokes as `i`, window changes as `r`, the exit as a
//! marker.

use anyhow::Context as _;
use base64::Engine as _;
use penguindome_protocol::shell::{Frame, Opener, TranscriptKeys};
use serde_json::json;

use crate::shell::transcript::Transcript;

/// Renders `t` with its opened keys.
pub fn render(t: &Transcript, keys: &TranscriptKeys) -> anyhow::Result<String> {
    let (mut keystrokes, mut output) = keys.openers()?;
    let header = json!({
        "version": 2,
        "width": t.cols,
        "height": t.rows,
        "timestamp": t.started_at.timestamp(),
        "title": format!("{} on {} ({})", t.operator, t.hostname, t.session_id),
        "env": {"TERM": t.term},
    });
    let mut out = format!("{header}\n");
    let (mut typed, mut shown) = (Utf8Stream::default(), Utf8Stream::default());
    for (n, f) in t.frames.iter().enumerate() {
        let wire = base64::engine::general_purpose::STANDARD
            .decode(&f.data)
            .with_context(|| format!("frame {n} of the transcript is damaged"))?;
        let (opener, text): (&mut Opener, &mut Utf8Stream) = if f.dir == 'i' {
            (&mut keystrokes, &mut typed)
        } else {
            (&mut output, &mut shown)
        };
        let frame = opener
            .open(&wire)
            .with_context(|| format!("frame {n} of the transcript does not open"))?;
        let at = f.ms as f64 / 1000.0;
        let event = match frame {
            Frame::Data(bytes) => json!([at, f.dir.to_string(), text.push(&bytes)]),
            Frame::Resize { cols, rows } => json!([at, "r", format!("{cols}x{rows}")]),
            Frame::Exit(code) => json!([at, "m", format!("exit {code}")]),
            Frame::Close => json!([at, "m", "closed"]),
        };
        out.push_str(&event.to_string());
        out.push('\n');
    }
    Ok(out)
}

/// Turns bytes into text across reads: a character split between two
/// frames comes out whole with the second.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    text.push_str(s);
                    self.pending.clear();
                    return text;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    text.push_str(std::str::from_utf8(&self.pending[..good]).expect("valid"));
                    match e.error_len() {
                        // Incomplete at the end: wait for the rest.
                        None => {
                            self.pending.drain(..good);
                            return text;
                        }
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_between_frames_come_out_whole() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(&[b'a', e[0]]), "a");
        assert_eq!(s.push(&[e[1], b'b']), "éb");
        assert_eq!(s.push(&[0xff, b'c']), "\u{fffd}c");
    }
}
