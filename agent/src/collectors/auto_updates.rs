//! auto_updates: does the machine install updates by itself, which ones,
//! and is the timer that does it enabled. unattended-upgrades with apt's
//! periodic settings (Debian, Ubuntu), dnf-automatic (dnf 4 and dnf 5).
//! Arch has no supported unattended upgrade and says so.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::auto_updates::{
    Applies, AutoUpdates as Facts, Mechanism, Settings,
};
use penguindome_protocol::facts::to_value;
use serde_json::Value;

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

fn apt(host: &Host) -> Facts {
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
    let origins: Vec<&String> = settings
        .iter()
        .filter(|(k, _)| {
            k.starts_with("unattended-upgrade::origins-pattern")
                || k.starts_with("unattended-upgrade::allowed-origins")
        })
        .map(|(_, v)| v)
        .collect();
    let applies = if !enabled {
        if download_only {
            Applies::DownloadOnly
        } else {
            Applies::None
        }
    } else if !origins.is_empty()
        && origins
            .iter()
            .all(|o| o.to_ascii_lowercase().contains("security"))
    {
        Applies::Security
    } else {
        Applies::AllConfiguredOrigins
    };
    Facts {
        enabled: Known::Value(enabled),
        mechanism: Some(Mechanism::UnattendedUpgrades),
        applies: Some(applies),
        installed: Some(installed),
        timers: vec![format!("apt-daily-upgrade.timer: {timer}")],
        settings: Some(Settings {
            update_package_lists: Some(lists),
            unattended_upgrade: Some(unattended),
            ..Settings::default()
        }),
        evidence: vec![
            "/var/lib/dpkg/status (unattended-upgrades)".into(),
            format!("apt.conf: {}", files.join(", ")),
            "apt-daily-upgrade.timer in the systemd unit directories".into(),
        ],
    }
}

fn dnf(host: &Host) -> Facts {
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
        if let Ok(text) = host.read_to_string(conf) {
            return dnf_automatic(host, conf, &text, &timers);
        }
    }
    Facts {
        enabled: Known::Value(false),
        mechanism: Some(Mechanism::DnfAutomatic),
        applies: Some(Applies::None),
        installed: Some(false),
        timers: Vec::new(),
        settings: None,
        evidence: vec!["dnf-automatic is not installed (no /etc/dnf/automatic.conf or /etc/dnf/dnf5-plugins/automatic.conf)".into()],
    }
}

/// dnf-automatic's state from its settings file `conf` (read as `text`)
/// and its `timers`.
fn dnf_automatic(host: &Host, conf: &str, text: &str, timers: &[&str]) -> Facts {
    let get = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .next_back()
    };
    let apply =
        get("apply_updates").is_some_and(|v| matches!(v.as_str(), "yes" | "1" | "true" | "True"));
    let kind = get("upgrade_type").unwrap_or_else(|| "default".into());
    let timer_states: Vec<(&str, &str)> =
        timers.iter().map(|t| (*t, unit_state(host, t))).collect();
    // dnf-automatic-install.timer applies updates whatever the file says.
    let install_timer = timer_states
        .iter()
        .any(|(t, s)| t.contains("install") && *s == "enabled");
    let any_timer = timer_states.iter().any(|(_, s)| *s == "enabled");
    let enabled = any_timer && (apply || install_timer);
    let applies = match (enabled, any_timer) {
        (false, true) => Applies::DownloadOnly,
        (false, false) => Applies::None,
        (true, _) if kind == "security" => Applies::Security,
        (true, _) => Applies::All,
    };
    Facts {
        enabled: Known::Value(enabled),
        mechanism: Some(Mechanism::DnfAutomatic),
        applies: Some(applies),
        // Its settings file exists, so the package is there.
        installed: Some(true),
        timers: timer_states
            .iter()
            .map(|(t, s)| format!("{t}: {s}"))
            .collect(),
        settings: Some(Settings {
            apply_updates: Some(apply),
            upgrade_type: Some(kind),
            ..Settings::default()
        }),
        evidence: vec![
            conf.to_string(),
            "dnf-automatic timers in the systemd unit directories".into(),
        ],
    }
}

/// Arch's answer: there is no unattended upgrade to look at.
fn pacman() -> Facts {
    Facts {
        enabled: Known::Value(false),
        mechanism: Some(Mechanism::None),
        applies: Some(Applies::None),
        installed: None,
        timers: Vec::new(),
        settings: None,
        evidence: vec![
            "Arch Linux has no supported unattended upgrade: updates are installed by pacman -Syu"
                .into(),
        ],
    }
}

impl Collector for AutoUpdates {
    fn name(&self) -> &'static str {
        "auto_updates"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let facts = if host.exists("/var/lib/dpkg/status") && host.find_program("apt-get").is_some()
        {
            apt(host)
        } else if host.find_program("dnf").is_some() || host.find_program("dnf5").is_some() {
            dnf(host)
        } else if host.exists("/var/lib/pacman/local") {
            pacman()
        } else {
            Facts {
                enabled: Known::UNKNOWN,
                mechanism: None,
                applies: None,
                installed: None,
                timers: Vec::new(),
                settings: None,
                evidence: vec!["no apt, dnf or pacman found".into()],
            }
        };
        Ok(to_value(&facts))
    }
}

#[cfg(test)]
mod tests {
    use penguindome_protocol::facts::{FACTS_VERSION, read};

    use super::*;
    use crate::collectors::NoCache;
    use crate::collectors::fixture::tree_with_links as tree;

    /// The collector's answer, read back as the server reads it.
    fn collect(d: &tempfile::TempDir) -> Facts {
        let v = AutoUpdates
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap();
        read(Some(&v), FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}"))
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
        assert_eq!(v.enabled, Known::Value(true), "{v:?}");
        assert_eq!(v.applies, Some(Applies::Security));
        assert_eq!(v.installed, Some(true));
        assert_eq!(v.timers, ["apt-daily-upgrade.timer: enabled"]);
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
        assert_eq!(v.enabled, Known::Value(false));
        assert_eq!(
            v.applies,
            Some(Applies::DownloadOnly),
            "nested blocks are read: {v:?}"
        );
        assert_eq!(v.timers, ["apt-daily-upgrade.timer: masked"]);
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
            v.enabled,
            Known::Value(true),
            "a trailing comment hides no setting: {v:?}"
        );
        assert_eq!(
            v.applies,
            Some(Applies::AllConfiguredOrigins),
            "the later file adds to the list instead of replacing its first item: {v:?}"
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
        assert_eq!(v.enabled, Known::Value(true), "{v:?}");
        assert_eq!(v.applies, Some(Applies::Security));
        assert_eq!(v.installed, Some(true));
        assert_eq!(
            v.timers,
            [
                "dnf-automatic.timer: enabled",
                "dnf-automatic-install.timer: not-installed"
            ]
        );
        assert_eq!(
            v.settings.unwrap().upgrade_type.as_deref(),
            Some("security")
        );
        let off = collect(&tree(&[("/usr/bin/dnf", "")], &[]));
        assert_eq!(off.enabled, Known::Value(false));
        assert_eq!(off.installed, Some(false));
    }

    #[test]
    fn arch_has_none_and_an_unknown_system_is_unknown() {
        let arch = collect(&tree(
            &[("/var/lib/pacman/local/ALPM_DB_VERSION", "9\n")],
            &[],
        ));
        assert_eq!(arch.mechanism, Some(Mechanism::None));
        assert_eq!(arch.enabled, Known::Value(false));
        let unknown = collect(&tree::<&str>(&[], &[]));
        assert!(unknown.enabled.is_unknown());
        assert_eq!(unknown.mechanism, None);
        assert_eq!(unknown.evidence, ["no apt, dnf or pacman found"]);
    }
}
