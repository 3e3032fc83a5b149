//! software: the packages and services a site requires on every machine
//! (an antivirus or EDR agent, say), from agent.toml's `[collectors]`
//! `required_packages` and `required_services`: installed, enabled,
//! running. This replaces the original's site-specific eset, eraagent and
//! prey plugins with one configurable check.

use penguindome_protocol::facts::software::{Package, Service, Software as Facts};
use penguindome_protocol::facts::{Known, to_value};
use serde_json::Value;

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

/// The required packages, sorted when the package database could be
/// read; what the answer rests on goes to `evidence`.
fn packages(host: &Host, wanted: &[String], evidence: &mut Vec<String>) -> Vec<Package> {
    if wanted.is_empty() {
        return Vec::new();
    }
    match installed_versions(host, wanted) {
        Ok((found, source)) => {
            evidence.push(source);
            let mut names = wanted.to_vec();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|name| {
                    let version = found.get(&name).cloned();
                    Package {
                        installed: Known::Value(version.is_some()),
                        name,
                        version,
                    }
                })
                .collect()
        }
        Err(e) => {
            evidence.push(e);
            wanted
                .iter()
                .map(|n| Package {
                    name: n.clone(),
                    installed: Known::UNKNOWN,
                    version: None,
                })
                .collect()
        }
    }
}

/// The required services, sorted by their names in agent.toml (where
/// `.service` may be left out).
fn services(host: &Host, wanted: &[String], evidence: &mut Vec<String>) -> Vec<Service> {
    let mut names = wanted.to_vec();
    names.sort();
    names.dedup();
    let services: Vec<Service> = names
        .into_iter()
        .map(|u| {
            let unit = if u.contains('.') {
                u
            } else {
                format!("{u}.service")
            };
            service(host, unit, evidence)
        })
        .collect();
    if !services.is_empty() {
        evidence.push("systemd1 LoadUnit, ActiveState and UnitFileState over D-Bus".into());
    }
    services
}

/// One unit's state, from systemd or, without a bus, the unit directories.
fn service(host: &Host, unit: String, evidence: &mut Vec<String>) -> Service {
    match unit_from_systemd(host, &unit) {
        Ok((load, active, file_state)) => Service {
            installed: load == "loaded",
            enabled: matches!(
                file_state.as_str(),
                "enabled" | "enabled-runtime" | "static" | "alias"
            ),
            running: Known::Value(active == "active"),
            state: active,
            name: unit,
        },
        Err(e) => {
            // No bus: enablement from the unit directories; running unknown.
            let state = unit_state(host, &unit);
            evidence.push(format!("systemd over D-Bus unavailable for {unit}: {e}"));
            Service {
                installed: state != "not-installed",
                enabled: state == "enabled",
                running: Known::UNKNOWN,
                state: "unknown".into(),
                name: unit,
            }
        }
    }
}

/// Every package installed, every service installed, enabled and
/// running; anything unknown is not compliant.
fn compliant(packages: &[Package], services: &[Service]) -> bool {
    packages.iter().all(|p| p.installed == Known::Value(true))
        && services
            .iter()
            .all(|s| s.installed && s.enabled && s.running == Known::Value(true))
}

impl Collector for Software {
    fn name(&self) -> &'static str {
        "software"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let settings = ctx.settings;
        if settings.required_packages.is_empty() && settings.required_services.is_empty() {
            return Ok(to_value(&Facts {
                compliant: true,
                packages: Vec::new(),
                services: Vec::new(),
                evidence: vec!["agent.toml [collectors] requires no packages or services".into()],
            }));
        }
        let mut evidence = Vec::new();
        let packages = packages(ctx.host, &settings.required_packages, &mut evidence);
        let services = services(ctx.host, &settings.required_services, &mut evidence);
        Ok(to_value(&Facts {
            compliant: compliant(&packages, &services),
            packages,
            services,
            evidence,
        }))
    }
}

#[cfg(test)]
mod tests {
    use penguindome_protocol::facts::{FACTS_VERSION, read};

    use super::*;
    use crate::collectors::fixture::tree;
    use crate::collectors::{CollectorSettings, NoCache};

    fn collect_wire(host: &Host, settings: &CollectorSettings) -> Value {
        Software
            .collect(&Context::new(host, &NoCache).with_settings(settings))
            .unwrap()
    }

    /// The collector's answer, read back as the server reads it.
    fn collect(host: &Host, settings: &CollectorSettings) -> Facts {
        let v = collect_wire(host, settings);
        read(Some(&v), FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

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
        let v = collect(&host, &s);
        assert!(!v.compliant);
        assert_eq!(
            v.packages,
            [
                Package {
                    name: "clamav-daemon".into(),
                    installed: Known::Value(false),
                    version: None,
                },
                Package {
                    name: "falcon-sensor".into(),
                    installed: Known::Value(true),
                    version: Some("7.18.0-17106".into()),
                },
            ],
            "config-files is not installed"
        );
        assert_eq!(
            v.services,
            [
                Service {
                    name: "clamav-daemon.service".into(),
                    installed: true,
                    enabled: true,
                    running: Known::Value(false),
                    state: "failed".into(),
                },
                Service {
                    name: "falcon-sensor.service".into(),
                    installed: true,
                    enabled: true,
                    running: Known::Value(true),
                    state: "active".into(),
                },
            ]
        );
        let wire = collect_wire(&host, &s);
        assert_eq!(wire["packages"][0]["version"], Value::Null, "{wire}");
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
        let v = collect(&host, &s);
        assert!(v.compliant, "{v:?}");

        let d = tree(&[(
            "/var/lib/pacman/local/clamav-1.4.1-1/desc",
            "%NAME%\nclamav\n",
        )]);
        let s = settings(&["clamav", "falcon-sensor"], &[]);
        let host = Host::fixture(d.path(), vec![]);
        let v = collect(&host, &s);
        assert_eq!(v.packages[0].version.as_deref(), Some("1.4.1-1"));
        assert_eq!(v.packages[1].installed, Known::Value(false));
        assert!(!v.compliant);
    }

    #[test]
    fn nothing_required_and_no_bus() {
        let d = tree::<&str>(&[]);
        let host = Host::fixture(d.path(), vec![]);
        let v = collect(&host, &settings(&[], &[]));
        assert!(v.compliant);
        assert!(v.packages.is_empty() && v.services.is_empty());
        let v = collect(&host, &settings(&[], &["sshd"]));
        assert_eq!(v.services[0].name, "sshd.service");
        assert!(v.services[0].running.is_unknown());
        assert!(!v.compliant);
    }
}
