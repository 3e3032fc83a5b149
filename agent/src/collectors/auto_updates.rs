//! auto_updates: does the machine install updates by itself, which ones,
//! and is the timer that does it enabled. unattended-upgrades with apt's
//! periodic settings (Debian, Ubuntu), dnf-automatic (dnf 4 and dnf 5).
//! Arch has no supported unattended upgrade and says so.

use serde_json::{Value, json};

use super::packages::installed_versions;
use super::unit_files::unit_state;
use super::{CollectError, Collector, Context};
use crate::host::Host;

/// The collector.
pub struct AutoUpdates;

/// apt.conf values: `A::B::C "value";` lines and `A { B "v"; };` blocks,
/// later files and lines overriding earlier ones.
fn apt_settings(host: &Host) -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let mut files: Vec<String> = host
        .list_dir("/etc/apt/apt.conf.d")
        .into_iter()
        .filter(|n| {
            !n.starts_with('.')
                && !n.ends_with(".dpkg-old")
                && !n.ends_with(".dpkg-dist")
                && !n.ends_with('~')
        })
        .map(|n| format!("/etc/apt/apt.conf.d/{n}"))
        .collect();
    files.push("/etc/apt/apt.conf".into());
    let mut out = std::collections::BTreeMap::new();
    let mut read = Vec::new();
    // List items are numbered across files: a later file adds to a list.
    let mut list_items = 0usize;
    for f in files {
        let Ok(text) = host.read_to_string(&f) else {
            continue;
        };
        read.push(f);
        let mut scope: Vec<String> = Vec::new();
        // Drop directive lines (#clear, #include), then walk tokens: names,
        // quoted values, braces, semicolons, and // or /* */ comments.
        let cleaned: String = text
            .lines()
            .map(|l| {
                let l = l.trim();
                if l.starts_with('#') { "" } else { l }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut rest = cleaned.as_str();
        let mut name = String::new();
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("//") {
                rest = rest.find('\n').map_or("", |i| &rest[i..]);
                continue;
            }
            if rest.starts_with("/*") {
                rest = rest.find("*/").map_or("", |i| &rest[i + 2..]);
                continue;
            }
            match c {
                '{' => {
                    scope.push(std::mem::take(&mut name));
                    rest = &rest[1..];
                }
                '}' => {
                    scope.pop();
                    rest = &rest[1..];
                }
                ';' => {
                    name.clear();
                    rest = &rest[1..];
                }
                '"' => {
                    let Some(close) = rest[1..].find('"') else {
                        break;
                    };
                    let value = &rest[1..close + 1];
                    let mut key: Vec<String> = scope.clone();
                    if name.trim().is_empty() {
                        // A list item: number it so items don't overwrite each other.
                        list_items += 1;
                        key.push(format!("#{list_items}"));
                    } else {
                        key.push(name.trim().to_string());
                    }
                    out.insert(key.join("::").to_ascii_lowercase(), value.to_string());
                    name.clear();
                    rest = &rest[close + 2..];
                }
                c if c.is_whitespace() => rest = &rest[c.len_utf8()..],
                c => {
                    name.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
    }
    (out, read)
}

fn apt(host: &Host) -> Value {
    let installed = installed_versions(host, &["unattended-upgrades".to_string()])
        .is_ok_and(|(found, _)| found.contains_key("unattended-upgrades"));
    let (settings, files) = apt_settings(host);
    let on = |k: &str| {
        settings
            .get(&k.to_ascii_lowercase())
            .is_some_and(|v| v.trim() != "0" && !v.trim().eq_ignore_ascii_case("false"))
    };
    let lists = on("APT::Periodic::Update-Package-Lists");
    let unattended = on("APT::Periodic::Unattended-Upgrade");
    let download_only = on("APT::Periodic::Download-Upgradeable-Packages") && !unattended;
    let timer = unit_state(host, "apt-daily-upgrade.timer");
    let enabled = installed && lists && unattended && timer == "enabled";
    // Which origins unattended-upgrades takes updates from.
    let origins: Vec<String> = settings
        .iter()
        .filter(|(k, _)| {
            k.starts_with("unattended-upgrade::origins-pattern")
                || k.starts_with("unattended-upgrade::allowed-origins")
        })
        .map(|(_, v)| v.clone())
        .collect();
    let applies = if !enabled {
        if download_only {
            "download-only"
        } else {
            "none"
        }
    } else if !origins.is_empty()
        && origins
            .iter()
            .all(|o| o.to_ascii_lowercase().contains("security"))
    {
        "security"
    } else {
        "all-configured-origins"
    };
    json!({
        "enabled": enabled,
        "mechanism": "unattended-upgrades",
        "applies": applies,
        "installed": installed,
        "timer": timer,
        "settings": {
            "update_package_lists": lists,
            "unattended_upgrade": unattended,
        },
        "evidence": [
            "/var/lib/dpkg/status (unattended-upgrades)",
            format!("apt.conf: {}", files.join(", ")),
            "apt-daily-upgrade.timer in the systemd unit directories",
        ],
    })
}

fn dnf(host: &Host) -> Value {
    // dnf 5 keeps its plugin's settings elsewhere and names the timer differently.
    let candidates = [
        (
            "/etc/dnf/automatic.conf",
            ["dnf-automatic.timer", "dnf-automatic-install.timer"],
        ),
        (
            "/etc/dnf/dnf5-plugins/automatic.conf",
            ["dnf5-automatic.timer", "dnf-automatic.timer"],
        ),
    ];
    for (conf, timers) in candidates {
        let Ok(text) = host.read_to_string(conf) else {
            continue;
        };
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .next_back()
        };
        let apply = get("apply_updates")
            .is_some_and(|v| matches!(v.as_str(), "yes" | "1" | "true" | "True"));
        let kind = get("upgrade_type").unwrap_or_else(|| "default".into());
        let timer_states: Vec<(&str, &str)> =
            timers.iter().map(|t| (*t, unit_state(host, t))).collect();
        // dnf-automatic-install.timer applies updates whatever the file says.
        let install_timer = timer_states
            .iter()
            .any(|(t, s)| t.contains("install") && *s == "enabled");
        let any_timer = timer_states.iter().any(|(_, s)| *s == "enabled");
        let enabled = any_timer && (apply || install_timer);
        return json!({
            "enabled": enabled,
            "mechanism": "dnf-automatic",
            "applies": if !enabled { if any_timer { "download-only" } else { "none" } } else if kind == "security" { "security" } else { "all" },
            "timer": timer_states.iter().map(|(t, s)| format!("{t}: {s}")).collect::<Vec<_>>(),
            "settings": {"apply_updates": apply, "upgrade_type": kind},
            "evidence": [conf, "dnf-automatic timers in the systemd unit directories"],
        });
    }
    json!({
        "enabled": false,
        "mechanism": "dnf-automatic",
        "applies": "none",
        "evidence": ["dnf-automatic is not installed (no /etc/dnf/automatic.conf or /etc/dnf/dnf5-plugins/automatic.conf)"],
    })
}

impl Collector for AutoUpdates {
    fn name(&self) -> &'static str {
        "auto_updates"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        if host.exists("/var/lib/dpkg/status") && host.find_program("apt-get").is_some() {
            Ok(apt(host))
        } else if host.find_program("dnf").is_some() || host.find_program("dnf5").is_some() {
            Ok(dnf(host))
        } else if host.exists("/var/lib/pacman/local") {
            Ok(json!({
                "enabled": false,
                "mechanism": "none",
                "applies": "none",
                "evidence": ["Arch Linux has no supported unattended upgrade: updates are installed by pacman -Syu"],
            }))
        } else {
            Ok(json!({
                "enabled": "unknown",
                "evidence": ["no apt, dnf or pacman found"],
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::NoCache;
    use crate::collectors::fixture::tree_with_links as tree;

    fn collect(d: &tempfile::TempDir) -> Value {
        AutoUpdates
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap()
    }

    const UU_STATUS: &str =
        "Package: unattended-upgrades\nStatus: install ok installed\nVersion: 2.9.1+nmu3\n\n";

    #[test]
    fn debian_unattended_upgrades_security_only() {
        let d = tree(
            &[
                ("/usr/bin/apt-get", ""),
                ("/var/lib/dpkg/status", UU_STATUS),
                (
                    "/etc/apt/apt.conf.d/20auto-upgrades",
                    "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n",
                ),
                (
                    "/etc/apt/apt.conf.d/50unattended-upgrades",
                    "// comment\nUnattended-Upgrade::Origins-Pattern {\n        \"origin=Debian,codename=${distro_codename},label=Debian-Security\"; // the main one\n        /* and\n   this */ \"origin=Debian,codename=${distro_codename}-security,label=Debian-Security\";\n};\n",
                ),
                (
                    "/etc/apt/apt.conf.d/52unattended-upgrades-local",
                    "Unattended-Upgrade::Origins-Pattern { \"origin=Debian,codename=${distro_codename}-security\"; };\nUnattended-Upgrade::Mail \"root\";\n",
                ),
                ("/lib/systemd/system/apt-daily-upgrade.timer", "[Timer]\n"),
            ],
            &[(
                "/etc/systemd/system/timers.target.wants/apt-daily-upgrade.timer",
                "/lib/systemd/system/apt-daily-upgrade.timer",
            )],
        );
        let v = collect(&d);
        assert_eq!(v["enabled"], true, "{v}");
        assert_eq!(v["applies"], "security");
        assert_eq!(v["timer"], "enabled");
    }

    #[test]
    fn ubuntu_with_periodic_off_or_timer_masked() {
        let d = tree(
            &[
                ("/usr/bin/apt-get", ""),
                ("/var/lib/dpkg/status", UU_STATUS),
                (
                    "/etc/apt/apt.conf.d/20auto-upgrades",
                    "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"0\";\n",
                ),
                (
                    "/etc/apt/apt.conf.d/10periodic",
                    "APT {\n  Periodic {\n    Download-Upgradeable-Packages \"1\";\n  };\n};\n",
                ),
            ],
            &[("/etc/systemd/system/apt-daily-upgrade.timer", "/dev/null")],
        );
        let v = collect(&d);
        assert_eq!(v["enabled"], false);
        assert_eq!(v["applies"], "download-only", "nested blocks are read: {v}");
        assert_eq!(v["timer"], "masked");
    }

    #[test]
    fn apt_conf_comments_and_lists_across_files() {
        let d = tree(
            &[
                ("/usr/bin/apt-get", ""),
                ("/var/lib/dpkg/status", UU_STATUS),
                (
                    "/etc/apt/apt.conf.d/20auto-upgrades",
                    "APT::Periodic::Unattended-Upgrade \"1\"; // on\nAPT::Periodic::Update-Package-Lists \"1\"; /* daily */\n",
                ),
                (
                    "/etc/apt/apt.conf.d/50unattended-upgrades",
                    "Unattended-Upgrade::Origins-Pattern {\n  \"origin=Debian,codename=${distro_codename},label=Debian\"; // everything\n  \"origin=Debian,codename=${distro_codename}-security,label=Debian-Security\";\n};\n",
                ),
                (
                    "/etc/apt/apt.conf.d/52unattended-upgrades-local",
                    "#clear Unattended-Upgrade::Mail;\nUnattended-Upgrade::Origins-Pattern { \"origin=Debian,codename=${distro_codename}-security\"; };\n",
                ),
            ],
            &[(
                "/etc/systemd/system/timers.target.wants/apt-daily-upgrade.timer",
                "/lib/systemd/system/apt-daily-upgrade.timer",
            )],
        );
        let v = collect(&d);
        assert_eq!(
            v["enabled"], true,
            "a trailing comment hides no setting: {v}"
        );
        assert_eq!(
            v["applies"], "all-configured-origins",
            "the later file adds to the list instead of replacing its first item: {v}"
        );
    }

    #[test]
    fn fedora_dnf_automatic() {
        let d = tree(
            &[
                ("/usr/bin/dnf", ""),
                (
                    "/etc/dnf/automatic.conf",
                    "[commands]\nupgrade_type = security\napply_updates = yes\n",
                ),
                ("/usr/lib/systemd/system/dnf-automatic.timer", ""),
            ],
            &[(
                "/etc/systemd/system/timers.target.wants/dnf-automatic.timer",
                "/usr/lib/systemd/system/dnf-automatic.timer",
            )],
        );
        let v = collect(&d);
        assert_eq!(v["enabled"], true, "{v}");
        assert_eq!(v["applies"], "security");
        let off = tree(&[("/usr/bin/dnf", "")], &[]);
        assert_eq!(collect(&off)["enabled"], false);
    }
}
