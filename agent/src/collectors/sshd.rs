//! sshd: is the OpenSSH server running (or socket-activated), and with
//! which effective settings. `sshd -T` prints what sshd would really use;
//! when it cannot run (not root, broken config) the configuration files
//! are read instead, Include files and OpenSSH's first-value-wins rule
//! included, with the defaults that matter filled in.

use std::collections::BTreeMap;

use penguindome_protocol::facts::sshd::{Sshd as Facts, Status};
use penguindome_protocol::facts::to_value;
use serde_json::Value;

use super::{CollectError, Collector, Context};
use crate::host::Host;

const DEFAULT_CONFIG: &str = "/etc/ssh/sshd_config";

/// OpenSSH's compiled-in defaults for the settings the audit looks at.
const DEFAULTS: &[(&str, &str)] = &[
    ("permitrootlogin", "prohibit-password"),
    ("passwordauthentication", "yes"),
    ("kbdinteractiveauthentication", "yes"),
    ("permitemptypasswords", "no"),
    ("pubkeyauthentication", "yes"),
    ("x11forwarding", "no"),
    ("usepam", "no"),
    ("port", "22"),
];

/// The collector.
pub struct Sshd;

/// Largest sshd configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// True when `/proc/PID` is a root process running an sshd binary. Any
/// user can name a process "sshd"; only root can start the real one.
fn is_root_sshd(host: &Host, pid: &str) -> bool {
    let root_owned = host
        .read_to_string(&format!("/proc/{pid}/status"))
        .is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next())
                == Some("0")
        });
    let exe_is_sshd = host.read_link(&format!("/proc/{pid}/exe")).is_ok_and(|t| {
        // After an upgrade the running binary reads "sshd (deleted)".
        t.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sshd"))
    });
    root_owned && exe_is_sshd
}

/// A configuration file sshd may have been given with `-f`: a regular,
/// root-owned file that only root can write, of a sane size.
fn trusted_config(host: &Host, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.starts_with('/')
        && std::fs::metadata(host.path(path)).is_ok_and(|m| {
            m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0 && m.len() <= MAX_CONFIG_BYTES
        })
}

/// Root's sshd processes: the `-f` config file each was given, if any.
fn sshd_processes(host: &Host) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for pid in host.list_dir("/proc") {
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(comm) = host.read_to_string(&format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim() != "sshd" || !is_root_sshd(host, &pid) {
            continue;
        }
        let cmdline = std::fs::read(host.path(&format!("/proc/{pid}/cmdline"))).unwrap_or_default();
        // The listener retitles itself ("sshd: /usr/sbin/sshd -D -f FILE
        // [listener] ..."), so the arguments may be one space-separated string.
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .flat_map(|a| {
                String::from_utf8_lossy(a)
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        let config = args
            .iter()
            .position(|a| a == "-f")
            .and_then(|i| args.get(i + 1).cloned())
            .filter(|f| trusted_config(host, f));
        out.push(config);
    }
    out
}

/// True when something listens on TCP port 22 (IPv4 or IPv6).
fn port_22_listening(host: &Host) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|p| {
        host.read_to_string(p).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(":0016") && f[3] == "0A"
            })
        })
    })
}

/// Parses `sshd -T` output: lower-case keyword, value.
pub(crate) fn parse_dump(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(' ') else {
            continue;
        };
        let k = k.to_ascii_lowercase();
        // Repeated keywords (listenaddress, hostkey...) are lists.
        out.entry(k)
            .and_modify(|old| {
                old.push('\n');
                old.push_str(v.trim());
            })
            .or_insert_with(|| v.trim().to_string());
    }
    out
}

/// Reads a config file and its Includes, first value wins, Match blocks
/// counted but not applied (they depend on who connects).
fn parse_files(
    host: &Host,
    path: &str,
    out: &mut BTreeMap<String, String>,
    files: &mut Vec<String>,
    matches: &mut usize,
    depth: usize,
) {
    if depth > 16 || !trusted_config(host, path) {
        return;
    }
    let Ok(text) = host.read_to_string(path) else {
        return;
    };
    files.push(path.to_string());
    let mut in_match = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (
                k.to_ascii_lowercase(),
                v.trim_start_matches(['=', ' ', '\t']).trim(),
            ),
            None => continue,
        };
        if k == "match" {
            in_match = true;
            *matches += 1;
            continue;
        }
        if k == "include" {
            for pattern in v.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_string()
                } else {
                    format!("/etc/ssh/{pattern}")
                };
                for file in expand_glob(host, &pattern) {
                    parse_files(host, &file, out, files, matches, depth + 1);
                }
            }
            continue;
        }
        if in_match {
            continue;
        }
        out.entry(k)
            .or_insert_with(|| v.trim_matches('"').to_string());
    }
}

/// Expands a `dir/*.conf`-style pattern (a `*` in the last component only,
/// which is what distributions use), sorted like glob(3).
fn expand_glob(host: &Host, pattern: &str) -> Vec<String> {
    let Some((dir, name)) = pattern.rsplit_once('/') else {
        return vec![];
    };
    if !name.contains('*') {
        return vec![pattern.to_string()];
    }
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    host.list_dir(dir)
        .into_iter()
        .filter(|n| {
            n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix)
        })
        .map(|n| format!("{dir}/{n}"))
        .collect()
}

impl Collector for Sshd {
    fn name(&self) -> &'static str {
        "sshd"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let Some(binary) = host.find_program("sshd") else {
            return Ok(to_value(&Facts {
                status: Status::Missing,
                config: BTreeMap::new(),
                evidence: vec!["no sshd in /usr/sbin, /usr/bin, /sbin or /bin".into()],
            }));
        };
        let mut evidence = Vec::new();
        let processes = sshd_processes(host);
        let listening = port_22_listening(host);
        let socket_unit = ["ssh.socket", "sshd.socket"]
            .iter()
            .find(|u| host.exists(&format!("/etc/systemd/system/sockets.target.wants/{u}")));
        let status = if !processes.is_empty() {
            evidence.push("an sshd process in /proc".to_string());
            Status::Running
        } else if let Some(unit) = socket_unit.filter(|_| listening) {
            evidence.push(format!("{unit} is enabled and TCP port 22 listens"));
            Status::SocketActivated
        } else {
            evidence.push("no sshd process in /proc".to_string());
            Status::Stopped
        };
        let config_file = processes
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_else(|| DEFAULT_CONFIG.to_string());
        let mut args = vec!["-T"];
        if config_file != DEFAULT_CONFIG {
            args.extend(["-f", config_file.as_str()]);
        }
        let (config, source) = match host.run(&binary, &args) {
            Ok(out) if out.success() && !out.stdout.trim().is_empty() => (
                parse_dump(&out.stdout),
                format!("{binary} {}", args.join(" ")),
            ),
            other => {
                // sshd's messages can quote the file it read: not in reports.
                let why = match other {
                    Ok(out) => match out.status {
                        Some(code) => format!("exit status {code}"),
                        None => "killed by a signal".to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                let mut config = BTreeMap::new();
                let mut files = Vec::new();
                let mut matches = 0;
                parse_files(host, &config_file, &mut config, &mut files, &mut matches, 0);
                for (k, v) in DEFAULTS {
                    config.entry(k.to_string()).or_insert_with(|| v.to_string());
                }
                if matches > 0 {
                    evidence.push(format!("{matches} Match blocks not applied"));
                }
                (
                    config,
                    format!(
                        "{binary} -T failed ({why}; run it as root to see why); read {} with OpenSSH defaults",
                        files.join(", ")
                    ),
                )
            }
        };
        evidence.push(source);
        Ok(to_value(&Facts {
            status,
            config,
            evidence,
        }))
    }
}

#[cfg(test)]
mod tests {
    use penguindome_protocol::facts::{FACTS_VERSION, read};

    use super::*;
    use crate::collectors::NoCache;
    use crate::collectors::fixture::{tree, tree_with_links};

    fn collect_wire(d: &tempfile::TempDir) -> Value {
        Sshd.collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap()
    }

    /// The collector's answer, read back as the server reads it.
    fn collect(d: &tempfile::TempDir) -> Facts {
        let v = collect_wire(d);
        read(Some(&v), FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    #[test]
    fn running_with_sshd_t() {
        let d = tree_with_links(
            &[
                ("/etc/ssh/custom_config", "Port 22\n"),
                ("/usr/sbin/sshd", ""),
                ("/proc/812/comm", "sshd\n"),
                ("/proc/812/status", "Name:\tsshd\nUid:\t0\t0\t0\t0\n"),
                ("/proc/4242/status", "Name:\tsshd\nUid:\t0\t0\t0\t0\n"),
                ("/proc/666/comm", "sshd\n"),
                (
                    "/proc/666/status",
                    "Name:\tsshd\nUid:\t1000\t1000\t1000\t1000\n",
                ),
                ("/proc/666/cmdline", "sshd\0-f\0/etc/shadow\0"),
                (
                    "/proc/812/cmdline",
                    "sshd: /usr/sbin/sshd -D -f /etc/ssh/custom_config [listener] 0 of 10-100 startups\0",
                ),
                ("/proc/4242/comm", "sshd\n"),
                ("/proc/4242/cmdline", "sshd: alice [priv]\0"),
                (
                    "/.commands/sshd -T -f %etc%ssh%custom_config",
                    "port 22\npermitrootlogin without-password\npasswordauthentication no\nlistenaddress 0.0.0.0:22\nlistenaddress [::]:22\n",
                ),
            ],
            &[
                ("/proc/812/exe", "/usr/sbin/sshd"),
                ("/proc/4242/exe", "/usr/sbin/sshd (deleted)"),
                ("/proc/666/exe", "/home/mallory/sshd"),
            ],
        );
        let v = collect(&d);
        assert_eq!(v.status, Status::Running);
        assert_eq!(v.config["passwordauthentication"], "no");
        assert_eq!(v.config["listenaddress"], "0.0.0.0:22\n[::]:22");
        assert!(v.evidence[1].contains("-f /etc/ssh/custom_config"), "{v:?}");
    }

    #[test]
    fn files_when_sshd_t_fails() {
        // Debian 12's layout: an Include of sshd_config.d, first value wins.
        let d = tree(&[
            ("/usr/sbin/sshd", ""),
            ("/.commands/sshd -T", ""),
            ("/.commands/sshd -T.status", "1"),
            (
                "/.commands/sshd -T.stderr",
                "sshd: no hostkeys available -- exiting.\n",
            ),
            (
                "/etc/ssh/sshd_config",
                "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nPasswordAuthentication yes\nMatch User anoncvs\n\tPermitRootLogin yes\n",
            ),
            (
                "/etc/ssh/sshd_config.d/50-hardening.conf",
                "PasswordAuthentication no\nPermitRootLogin=no\n",
            ),
            ("/etc/ssh/sshd_config.d/README", "PermitRootLogin yes\n"),
        ]);
        let v = collect(&d);
        assert_eq!(v.status, Status::Stopped);
        assert_eq!(v.config["passwordauthentication"], "no", "first value wins");
        assert_eq!(
            v.config["permitrootlogin"], "no",
            "Match block and non-.conf ignored"
        );
        assert_eq!(v.config["usepam"], "yes");
        assert_eq!(v.config["pubkeyauthentication"], "yes", "default filled in");
        let ev = v.evidence.join("\n");
        assert!(ev.contains("exit status 1"), "{ev}");
        assert!(
            !ev.contains("hostkeys"),
            "sshd's own messages stay out of reports: {ev}"
        );
        assert!(ev.contains("1 Match blocks"), "{ev}");
    }

    #[test]
    fn a_user_process_named_sshd_is_not_trusted() {
        let d = tree_with_links(
            &[
                ("/usr/sbin/sshd", ""),
                ("/etc/shadow", "root:$y$secret:19000::::::\n"),
                ("/proc/666/comm", "sshd\n"),
                (
                    "/proc/666/status",
                    "Name:\tsshd\nUid:\t1000\t1000\t1000\t1000\n",
                ),
                ("/proc/666/cmdline", "sshd\0-f\0/etc/shadow\0"),
                ("/.commands/sshd -T", "permitrootlogin no\n"),
            ],
            &[("/proc/666/exe", "/usr/sbin/sshd")],
        );
        let v = collect_wire(&d);
        assert_eq!(v["status"], "stopped", "{v}");
        assert!(!v.to_string().contains("secret"));
        assert!(!v.to_string().contains("/etc/shadow"));
    }

    #[test]
    fn socket_activated_and_missing() {
        let d = tree(&[
            ("/usr/sbin/sshd", ""),
            ("/etc/systemd/system/sockets.target.wants/ssh.socket", ""),
            (
                "/proc/net/tcp6",
                "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19823 1 0000000000000000 100 0 0 10 0\n",
            ),
            ("/.commands/sshd -T", "permitrootlogin no\n"),
        ]);
        let v = collect(&d);
        assert_eq!(v.status, Status::SocketActivated);
        assert!(v.reachable());
        let missing = collect(&tree::<&str>(&[]));
        assert_eq!(missing.status, Status::Missing);
        assert!(missing.config.is_empty());
        assert_eq!(
            collect_wire(&tree::<&str>(&[]))["config"],
            serde_json::json!({})
        );
    }
}
