//! Questions on a terminal (or piped answers), one line each, with defaults.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};

/// Asks questions on stdin/stderr.
pub struct Prompter<R: BufRead, W: Write> {
    input: R,
    output: W,
    /// True when reading the process's own stdin (secrets may go unechoed).
    terminal: bool,
}

impl Prompter<std::io::StdinLock<'static>, std::io::Stderr> {
    /// Prompts on the process's stdin and stderr.
    pub fn stdio() -> Self {
        Self {
            input: std::io::stdin().lock(),
            output: std::io::stderr(),
            terminal: true,
        }
    }
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    /// Prompts on given streams (tests).
    pub fn new(input: R, output: W) -> Self {
        Self {
            input,
            output,
            terminal: false,
        }
    }

    /// Asks for text; an empty answer takes the default.
    pub fn text(&mut self, question: &str, default: Option<&str>) -> anyhow::Result<String> {
        loop {
            match default {
                Some(d) if !d.is_empty() => write!(self.output, "{question} [{d}]: ")?,
                _ => write!(self.output, "{question}: ")?,
            }
            self.output.flush()?;
            let mut line = String::new();
            let n = self
                .input
                .read_line(&mut line)
                .context("cannot read an answer")?;
            if n == 0 {
                bail!(
                    "no answer to {question:?} (end of input); run on a terminal, or pass \
                     --non-interactive with the answers as flags"
                );
            }
            let answer = line.trim();
            if !answer.is_empty() {
                return Ok(answer.to_string());
            }
            if let Some(d) = default {
                return Ok(d.to_string());
            }
            writeln!(self.output, "An answer is required.")?;
        }
    }

    /// Asks for a secret: without echo on a terminal, as a line otherwise.
    pub fn secret(&mut self, question: &str) -> anyhow::Result<String> {
        use std::io::IsTerminal;
        if self.terminal && std::io::stdin().is_terminal() {
            return rpassword::prompt_password(format!("{question}: "))
                .context("cannot read the answer");
        }
        self.text(question, None)
    }

    /// Asks until `parse` accepts the answer.
    pub fn parsed<T>(
        &mut self,
        question: &str,
        default: Option<&str>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        loop {
            let answer = self.text(question, default)?;
            match parse(&answer) {
                Ok(v) => return Ok(v),
                Err(e) => writeln!(self.output, "{e}")?,
            }
        }
    }

    /// Asks yes or no.
    pub fn yes_no(&mut self, question: &str, default: bool) -> anyhow::Result<bool> {
        let d = if default { "Y/n" } else { "y/N" };
        self.parsed(&format!("{question} ({d})"), Some(""), |a| {
            match a.to_ascii_lowercase().as_str() {
                "" => Ok(default),
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err("Please answer yes or no.".into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_retries_and_eof() {
        let input = b"\nbogus\n42\nmaybe\nn\n" as &[u8];
        let mut out = Vec::new();
        let mut p = Prompter::new(input, &mut out);
        assert_eq!(p.text("Name", Some("x")).unwrap(), "x");
        let n: u32 = p
            .parsed("Number", None, |a| {
                a.parse().map_err(|_| "not a number".to_string())
            })
            .unwrap();
        assert_eq!(n, 42);
        assert!(!p.yes_no("Ok", true).unwrap());
        let e = p.text("More", None).unwrap_err().to_string();
        assert!(e.contains("--non-interactive"), "{e}");
        let shown = String::from_utf8(out).unwrap();
        assert!(
            shown.contains("not a number") && shown.contains("yes or no"),
            "{shown}"
        );
    }
}
