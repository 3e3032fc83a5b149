//! The ssh-style escape: `~.` at the start of a line ends the session,
//! `~~` sends one `~`; anything else after a `~` is sent as typed.

/// What the keystrokes come to.
#[derive(Debug, PartialEq)]
pub enum Typed {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send these, then end the session.
    End(Vec<u8>),
}

/// Tracks line starts across reads.
#[derive(Debug)]
pub struct Escapes {
    at_line_start: bool,
    tilde_pending: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Self {
            at_line_start: true,
            tilde_pending: false,
        }
    }
}

impl Escapes {
    /// Filters one read of keystrokes.
    pub fn filter(&mut self, input: &[u8]) -> Typed {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.tilde_pending {
                self.tilde_pending = false;
                match b {
                    b'.' => return Typed::End(out),
                    b'~' => {
                        out.push(b'~');
                        self.at_line_start = false;
                        continue;
                    }
                    _ => out.push(b'~'),
                }
            } else if self.at_line_start && b == b'~' {
                self.tilde_pending = true;
                continue;
            }
            out.push(b);
            self.at_line_start = matches!(b, b'\r' | b'\n');
        }
        Typed::Send(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_dot_ends_only_at_a_line_start() {
        let mut e = Escapes::default();
        assert_eq!(e.filter(b"~."), Typed::End(vec![]));
        let mut e = Escapes::default();
        assert_eq!(e.filter(b"ls ~.x\r"), Typed::Send(b"ls ~.x\r".to_vec()));
        assert_eq!(e.filter(b"~"), Typed::Send(vec![]));
        assert_eq!(e.filter(b"."), Typed::End(vec![]));
        let mut e = Escapes::default();
        assert_eq!(e.filter(b"~~.\r~a"), Typed::Send(b"~.\r~a".to_vec()));
        assert_eq!(e.filter(b"\r~."), Typed::End(b"\r".to_vec()));
    }
}
