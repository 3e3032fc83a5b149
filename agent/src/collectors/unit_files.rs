//! systemd unit enablement read from the unit directories, for machines
//! (and fixtures) where asking systemd over D-Bus is not possible.

use crate::host::Host;

/// A systemd unit's enablement from the unit directories (no systemctl).
pub fn unit_state(host: &Host, unit: &str) -> &'static str {
    let masked = ["/etc/systemd/system", "/run/systemd/system"]
        .iter()
        .any(|d| {
            host.read_link(&format!("{d}/{unit}"))
                .is_ok_and(|t| t.as_os_str() == "/dev/null")
        });
    if masked {
        return "masked";
    }
    let wanted = [
        "timers.target.wants",
        "multi-user.target.wants",
        "default.target.wants",
    ];
    let enabled = [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .any(|d| {
        // The link itself counts: its absolute target may not resolve
        // inside a fixture root.
        wanted
            .iter()
            .any(|w| std::fs::symlink_metadata(host.path(&format!("{d}/{w}/{unit}"))).is_ok())
    });
    if enabled {
        return "enabled";
    }
    let installed = [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .any(|d| host.exists(&format!("{d}/{unit}")));
    if installed {
        "disabled"
    } else {
        "not-installed"
    }
}
