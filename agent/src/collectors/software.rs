//! software: the packages and services a site requires on every machine
//! (an antivirus or EDR agent, say), from agent.toml's `[collectors]`
//! `required_packages` and `required_services`: installed, enabled,
//! running. This replaces the original's site-specific eset, eraagent and
//! prey plugins with one configurable check.

use serde_json::{Value, json};

use super::packages::installed_versions;
use super::unit_files::unit_state;
use super::{CollectError, Collector, Context};
use crate::host::Host;

const SYSTEMD: &str = "org.freedesktop.systemd1";

/// The collector.
pub struct Software;

/// A unit's load, active and enablement state from systemd over D-Bus.
fn unit_from_systemd(host: &Host, unit: &str) -> Result<(String, String, String), String> {
    let bus = host.bus();
    let path = bus
        .call(
            SYSTEMD,
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "LoadUnit",
            &[unit],
        )
        .map_err(|e| e.to_string())?;
    let path = path.as_str().ok_or("systemd returned no unit path")?;
    let get = |p: &str| {
        bus.property(SYSTEMD, path, "org.freedesktop.systemd1.Unit", p)
            .map_err(|e| e.to_string())
            .map(|v| v.as_str().unwrap_or("").to_string())
    };
    Ok((
        get("LoadState")?,
        get("ActiveState")?,
        get("UnitFileState")?,
    ))
}

impl Collector for Software {
    fn name(&self) -> &'static str {
        "software"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let wanted_pkgs = &ctx.settings.required_packages;
        let wanted_units = &ctx.settings.required_services;
        let mut evidence = Vec::new();
        if wanted_pkgs.is_empty() && wanted_units.is_empty() {
            return Ok(json!({
                "compliant": true,
                "packages": [],
                "services": [],
                "evidence": ["agent.toml [collectors] requires no packages or services"],
            }));
        }
        let mut compliant = true;
        let mut packages = Vec::new();
        if !wanted_pkgs.is_empty() {
            match installed_versions(host, wanted_pkgs) {
                Ok((found, source)) => {
                    evidence.push(source);
                    let mut names = wanted_pkgs.clone();
                    names.sort();
                    names.dedup();
                    for n in names {
                        let version = found.get(&n);
                        compliant &= version.is_some();
                        packages.push(
                            json!({"name": n, "installed": version.is_some(), "version": version}),
                        );
                    }
                }
                Err(e) => {
                    compliant = false;
                    evidence.push(e);
                    packages = wanted_pkgs
                        .iter()
                        .map(|n| json!({"name": n, "installed": "unknown"}))
                        .collect();
                }
            }
        }
        let mut services = Vec::new();
        let mut units = wanted_units.clone();
        units.sort();
        units.dedup();
        for u in units {
            let unit = if u.contains('.') {
                u.clone()
            } else {
                format!("{u}.service")
            };
            match unit_from_systemd(host, &unit) {
                Ok((load, active, file_state)) => {
                    let enabled = matches!(
                        file_state.as_str(),
                        "enabled" | "enabled-runtime" | "static" | "alias"
                    );
                    let running = active == "active";
                    compliant &= load == "loaded" && enabled && running;
                    services.push(json!({
                        "name": unit, "installed": load == "loaded", "enabled": enabled,
                        "running": running, "state": active,
                    }));
                }
                Err(e) => {
                    // No bus: enablement from the unit directories; running unknown.
                    let state = unit_state(host, &unit);
                    compliant = false;
                    evidence.push(format!("systemd over D-Bus unavailable for {unit}: {e}"));
                    services.push(json!({
                        "name": unit, "installed": state != "not-installed",
                        "enabled": state == "enabled", "running": "unknown", "state": "unknown",
                    }));
                }
            }
        }
        if !services.is_empty() {
            evidence.push("systemd1 LoadUnit, ActiveState and UnitFileState over D-Bus".into());
        }
        Ok(json!({
            "compliant": compliant,
            "packages": packages,
            "services": services,
            "evidence": evidence,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::fixture::tree;
    use crate::collectors::{CollectorSettings, NoCache};

    fn settings(pkgs: &[&str], units: &[&str]) -> CollectorSettings {
        CollectorSettings {
            required_packages: pkgs.iter().map(|s| s.to_string()).collect(),
            required_services: units.iter().map(|s| s.to_string()).collect(),
            geolocation: None,
        }
    }

    const SYSTEMD_RECORDING: &str = r#"{
      "calls": {"org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager LoadUnit falcon-sensor.service": "/org/freedesktop/systemd1/unit/falcon_2dsensor_2eservice",
                "org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager LoadUnit clamav-daemon.service": "/org/freedesktop/systemd1/unit/clamav_2ddaemon_2eservice"},
      "properties": {
        "org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/falcon_2dsensor_2eservice org.freedesktop.systemd1.Unit LoadState": "loaded",
        "org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/falcon_2dsensor_2eservice org.freedesktop.systemd1.Unit ActiveState": "active",
        "org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/falcon_2dsensor_2eservice org.freedesktop.systemd1.Unit UnitFileState": "enabled",
        "org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/clamav_2ddaemon_2eservice org.freedesktop.systemd1.Unit LoadState": "loaded",
        "org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/clamav_2ddaemon_2eservice org.freedesktop.systemd1.Unit ActiveState": "failed",
        "org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/clamav_2ddaemon_2eservice org.freedesktop.systemd1.Unit UnitFileState": "enabled"
      }}"#;

    #[test]
    fn debian_with_an_edr_agent_and_a_failed_antivirus() {
        let d = tree(&[
            (
                "/var/lib/dpkg/status",
                "Package: falcon-sensor\nStatus: install ok installed\nVersion: 7.18.0-17106\n\nPackage: clamav-daemon\nStatus: deinstall ok config-files\nVersion: 1.0.7\n",
            ),
            ("/.dbus.json", SYSTEMD_RECORDING),
        ]);
        let s = settings(
            &["falcon-sensor", "clamav-daemon"],
            &["falcon-sensor", "clamav-daemon.service"],
        );
        let host = Host::fixture(d.path(), vec![]);
        let v = Software
            .collect(&Context::new(&host, &NoCache).with_settings(&s))
            .unwrap();
        assert_eq!(v["compliant"], false);
        assert_eq!(v["packages"][0]["name"], "clamav-daemon");
        assert_eq!(
            v["packages"][0]["installed"], false,
            "config-files is not installed"
        );
        assert_eq!(v["packages"][1]["version"], "7.18.0-17106");
        assert_eq!(v["services"][0]["state"], "failed");
        assert_eq!(v["services"][1]["running"], true);
    }

    #[test]
    fn fedora_and_arch_package_databases() {
        let d = tree(&[
            ("/usr/bin/rpm", ""),
            (
                "/.commands/rpm -q --qf %{NAME} %{EVR}\\n -- falcon-sensor",
                "falcon-sensor 7.18.0-17106.el9\n",
            ),
            ("/.dbus.json", SYSTEMD_RECORDING),
        ]);
        let s = settings(&["falcon-sensor"], &["falcon-sensor"]);
        let host = Host::fixture(d.path(), vec![]);
        let v = Software
            .collect(&Context::new(&host, &NoCache).with_settings(&s))
            .unwrap();
        assert_eq!(v["compliant"], true, "{v}");

        let d = tree(&[(
            "/var/lib/pacman/local/clamav-1.4.1-1/desc",
            "%NAME%\nclamav\n",
        )]);
        let s = settings(&["clamav", "falcon-sensor"], &[]);
        let host = Host::fixture(d.path(), vec![]);
        let v = Software
            .collect(&Context::new(&host, &NoCache).with_settings(&s))
            .unwrap();
        assert_eq!(v["packages"][0]["version"], "1.4.1-1");
        assert_eq!(v["packages"][1]["installed"], false);
    }

    #[test]
    fn nothing_required_and_no_bus() {
        let d = tree::<&str>(&[]);
        let host = Host::fixture(d.path(), vec![]);
        let v = Software.collect(&Context::new(&host, &NoCache)).unwrap();
        assert_eq!(v["compliant"], true);
        let s = settings(&[], &["sshd"]);
        let v = Software
            .collect(&Context::new(&host, &NoCache).with_settings(&s))
            .unwrap();
        assert_eq!(v["services"][0]["running"], "unknown");
        assert_eq!(v["compliant"], false);
    }
}
