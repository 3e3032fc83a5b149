//! The process list, read once from /proc: owner, name and arguments.

use crate::host::Host;

/// One process.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Real user id.
    pub uid: u32,
    /// Program base name (argv[0], or the script an interpreter runs).
    pub name: String,
    /// Arguments after the program.
    pub args: Vec<String>,
}

/// Interpreters whose first argument is the real program.
const INTERPRETERS: &[&str] = &["python3", "python", "perl", "sh", "bash"];

fn base(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Every process with a command line (kernel threads have none).
pub fn list(host: &Host) -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in host.list_dir("/proc") {
        let Ok(pid) = entry.parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(host.path(&format!("/proc/{pid}/cmdline"))) else {
            continue;
        };
        let mut argv: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        while argv.last().is_some_and(String::is_empty) {
            argv.pop();
        }
        if argv.is_empty() {
            continue;
        }
        let Some(uid) = host
            .read_to_string(&format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|u| u.parse().ok())
            })
        else {
            continue;
        };
        let mut name = base(&argv[0]).to_string();
        let mut rest: Vec<String> = argv[1..].to_vec();
        // `python3 /usr/bin/cinnamon-screensaver`: the script is the program.
        let interp = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        if (INTERPRETERS.contains(&name.as_str()) || INTERPRETERS.contains(&interp))
            && let Some(first) = rest.first().filter(|a| !a.starts_with('-')).cloned()
        {
            name = base(&first).to_string();
            rest.remove(0);
        }
        out.push(Proc {
            uid,
            name,
            args: rest,
        });
    }
    out
}
