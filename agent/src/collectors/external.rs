//! External plugins: executables in the plugins directory that print JSON
//! (or the word `unknown`). Each runs in its own process group with a
//! timeout; output is stored under `plugins.<file name without extension>`.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Largest stdout kept from a plugin.
const MAX_OUTPUT: u64 = 4 * 1024 * 1024;
/// How much of stderr or bad stdout goes into an error report.
const EXCERPT: usize = 2048;
/// File name endings package managers and editors leave behind.
const IGNORED_SUFFIXES: &[&str] = &[
    "~",
    ".dpkg-old",
    ".dpkg-new",
    ".dpkg-dist",
    ".dpkg-tmp",
    ".rpmnew",
    ".rpmsave",
    ".rpmorig",
    ".pacnew",
    ".pacsave",
    ".disabled",
    ".swp",
];

/// One discovered plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// Name in the report.
    pub name: String,
    /// The executable.
    pub path: PathBuf,
}

/// Refuses a directory or file that someone other than root (or us) could
/// change: the agent runs plugins as root.
fn trusted(meta: &std::fs::Metadata) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    (meta.uid() == 0 || meta.uid() == me) && meta.permissions().mode() & 0o022 == 0
}

/// Lists the runnable plugins in `dir`, skipping names a built-in has.
pub fn discover(dir: &Path, builtin: &[&str]) -> Vec<Plugin> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            log::debug!("no external plugins: {}: {e}", dir.display());
            return Vec::new();
        }
    };
    if !trusted(&meta) {
        log::error!(
            "not running plugins from {}: it is writable by others or not owned by root; \
             fix with chown root: and chmod go-w",
            dir.display()
        );
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Plugin> = Vec::new();
    let mut files: Vec<_> = entries.flatten().collect();
    files.sort_by_key(|e| e.file_name());
    for entry in files {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') || IGNORED_SUFFIXES.iter().any(|s| file_name.ends_with(s)) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        if !trusted(&meta) {
            log::error!(
                "not running plugin {}: writable by others or not owned by root",
                path.display()
            );
            continue;
        }
        let name = match file_name.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem.to_string(),
            _ => file_name.clone(),
        };
        if !valid_name(&name) {
            log::warn!(
                "skipping plugin {}: {name:?} is not a usable name",
                path.display()
            );
            continue;
        }
        if builtin.contains(&name.as_str()) {
            log::warn!(
                "skipping plugin {}: a built-in collector is named {name}",
                path.display()
            );
            continue;
        }
        if found.iter().any(|p| p.name == name) {
            log::warn!(
                "skipping plugin {}: another plugin is named {name}",
                path.display()
            );
            continue;
        }
        found.push(Plugin { name, path });
    }
    found
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Runs plugins in parallel; returns each one's output.
pub fn run_all(plugins: &[&Plugin], timeout: Duration) -> Vec<(String, Value)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = plugins
            .iter()
            .map(|p| scope.spawn(move || (p.name.clone(), run(p, timeout))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("plugin thread"))
            .collect()
    })
}

fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.len() <= EXCERPT {
        s.to_string()
    } else {
        let mut end = EXCERPT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// Runs one plugin and turns what it printed into a report value.
pub fn run(plugin: &Plugin, timeout: Duration) -> Value {
    let started = Instant::now();
    let mut child = match Command::new(&plugin.path)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return json!({"error": format!("cannot start {}: {e}", plugin.path.display())}),
    };
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = mpsc::channel();
    let outcome = std::thread::scope(|scope| {
        let out_reader = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut buf);
            // Drain the rest so the plugin does not block on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            buf
        });
        let err_reader = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(MAX_OUTPUT).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        scope.spawn(move || {
            let _ = done_tx.send(child.wait());
        });
        let status = match done_rx.recv_timeout(timeout) {
            Ok(status) => Some(status),
            Err(_) => {
                // Kill the whole group: the plugin's children too.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = done_rx.recv();
                None
            }
        };
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        (status, out, err)
    });
    let (status, out, err) = outcome;
    let value = match status {
        None => json!({"error": format!("timed out after {} s and was killed", timeout.as_secs())}),
        Some(Err(e)) => json!({"error": format!("cannot wait for the plugin: {e}")}),
        Some(Ok(st)) if !st.success() => {
            let how = match st.code() {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".to_string(),
            };
            json!({"error": format!("the plugin {how}"), "stderr": excerpt(&err)})
        }
        Some(Ok(_)) => {
            let text = String::from_utf8_lossy(&out);
            let text = text.trim();
            if text == "unknown" {
                Value::String("unknown".into())
            } else {
                match serde_json::from_str::<Value>(text) {
                    Ok(v) => v,
                    Err(e) => {
                        json!({"error": format!("the output is not JSON: {e}"), "stdout": excerpt(&out)})
                    }
                }
            }
        }
    };
    log::debug!(plugin:% = plugin.name; "ran in {} ms", started.elapsed().as_millis());
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn plugins_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn discovery_names_and_skips() {
        let d = plugins_dir();
        script(d.path(), "alpha.sh", "echo '{}'");
        script(d.path(), "beta", "echo '{}'");
        script(d.path(), "beta.py", "echo '{}'");
        script(d.path(), ".hidden", "echo '{}'");
        script(d.path(), "gamma.sh~", "echo '{}'");
        script(d.path(), "delta.dpkg-old", "echo '{}'");
        script(d.path(), "os_info.sh", "echo '{}'");
        std::fs::write(d.path().join("notexec.sh"), "echo").unwrap();
        let names: Vec<String> = discover(d.path(), &["os_info"])
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, vec!["alpha", "beta"]);
    }

    #[test]
    fn world_writable_directory_is_refused() {
        let d = plugins_dir();
        script(d.path(), "alpha.sh", "echo '{}'");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(discover(d.path(), &[]).is_empty());
    }

    #[test]
    fn outputs_errors_and_timeouts() {
        let d = plugins_dir();
        script(d.path(), "json.sh", "echo '{\"b\": [2, 1], \"a\": true}'");
        script(d.path(), "unknown.sh", "echo unknown");
        script(d.path(), "fails.sh", "echo oops >&2; exit 3");
        script(d.path(), "garbage.sh", "echo not json");
        script(d.path(), "slow.sh", "sleep 30 & sleep 30; echo '{}'");
        let found = discover(d.path(), &[]);
        let refs: Vec<&Plugin> = found.iter().collect();
        let started = Instant::now();
        let out: std::collections::BTreeMap<_, _> =
            run_all(&refs, Duration::from_secs(5)).into_iter().collect();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the timeout killed the slow plugin"
        );
        assert_eq!(out["json"], json!({"a": true, "b": [2, 1]}));
        assert_eq!(out["unknown"], json!("unknown"));
        assert_eq!(
            out["fails"]["error"],
            json!("the plugin exited with status 3")
        );
        assert_eq!(out["fails"]["stderr"], json!("oops"));
        assert!(
            out["garbage"]["error"]
                .as_str()
                .unwrap()
                .contains("not JSON")
        );
        assert!(out["slow"]["error"].as_str().unwrap().contains("timed out"));
    }
}
