//! hardware: vendor, product, serial number and firmware from the DMI
//! tables the kernel exports in /sys/class/dmi/id (no dmidecode). Machines
//! without DMI (most ARM boards) fall back to the device tree model.
//!
//! Serial numbers are readable by root only; placeholder values vendors
//! leave in the tables ("To Be Filled By O.E.M.") are reported as absent.

use penguindome_protocol::facts::hardware::Hardware as Facts;
use penguindome_protocol::facts::{Known, to_value};
use serde_json::Value;

use super::{CollectError, Collector, Context};
use crate::host::Host;

const DMI: &str = "/sys/class/dmi/id";

/// The collector.
pub struct Hardware;

/// Values firmware writers leave instead of real data.
fn is_placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    l.is_empty()
        || l.chars().all(|c| c == '0' || c == ' ' || c == '-')
        || [
            "to be filled by o.e.m.",
            "default string",
            "system serial number",
            "system product name",
            "not applicable",
            "not specified",
            "none",
            "o.e.m.",
            "123456789",
        ]
        .contains(&l.as_str())
}

/// SMBIOS chassis types (DMTF DSP0134, 7.4.1) that matter for a fleet.
fn chassis_name(code: &str) -> Option<&'static str> {
    Some(match code.parse::<u8>().ok()? {
        3 => "desktop",
        4 => "low-profile desktop",
        6 => "mini tower",
        7 => "tower",
        8 => "portable",
        9 => "laptop",
        10 => "notebook",
        13 => "all-in-one",
        14 => "sub-notebook",
        17 => "main server chassis",
        23 => "rack mount chassis",
        30 => "tablet",
        31 => "convertible",
        32 => "detachable",
        35 => "mini pc",
        36 => "stick pc",
        1 => "other",
        2 => "unknown",
        _ => return None,
    })
}

/// A DMI value, `None` when missing or a placeholder; `Err` with the file
/// name when only root may read it.
fn read_dmi(host: &Host, file: &str) -> Result<Option<String>, String> {
    match host.read_to_string(&format!("{DMI}/{file}")) {
        Ok(v) => Ok(Some(v.trim().to_string()).filter(|v| !is_placeholder(v))),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(file.to_string()),
        Err(_) => Ok(None),
    }
}

/// Everything /sys/class/dmi/id says.
fn from_dmi(host: &Host) -> Facts {
    let mut unreadable = Vec::new();
    let mut read = |file: &str| {
        read_dmi(host, file).unwrap_or_else(|f| {
            unreadable.push(f);
            None
        })
    };
    // Fields are initialised in the order written, which is the order
    // `unreadable` names the files in.
    let mut out = Facts {
        system_vendor: read("sys_vendor"),
        product_name: read("product_name").map(Known::Value),
        product_version: read("product_version"),
        product_serial: read("product_serial"),
        product_uuid: read("product_uuid"),
        product_family: read("product_family"),
        board_vendor: read("board_vendor"),
        board_name: read("board_name"),
        board_serial: read("board_serial"),
        chassis_type: read("chassis_type"),
        chassis_serial: read("chassis_serial"),
        bios_vendor: read("bios_vendor"),
        bios_version: read("bios_version"),
        bios_date: read("bios_date"),
        evidence: vec![DMI.to_string()],
        ..Facts::default()
    };
    out.chassis = out
        .chassis_type
        .as_deref()
        .and_then(chassis_name)
        .map(String::from);
    if !unreadable.is_empty() {
        out.unreadable = Some(format!("{} need root to read", unreadable.join(", ")));
    }
    out
}

/// The device tree's model and serial number (ARM boards).
fn from_device_tree(host: &Host, model: &str) -> Facts {
    let serial = host
        .read_to_string("/proc/device-tree/serial-number")
        .ok()
        .map(|s| s.trim_end_matches('\0').trim().to_string())
        .filter(|s| !is_placeholder(s));
    Facts {
        product_name: Some(Known::Value(
            model.trim_end_matches('\0').trim().to_string(),
        )),
        product_serial: serial,
        evidence: vec!["/proc/device-tree".into()],
        ..Facts::default()
    }
}

impl Collector for Hardware {
    fn name(&self) -> &'static str {
        "hardware"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let facts = if host.exists(DMI) {
            from_dmi(host)
        } else if let Ok(model) = host.read_to_string("/proc/device-tree/model") {
            from_device_tree(host, &model)
        } else {
            Facts {
                product_name: Some(Known::UNKNOWN),
                evidence: vec![format!("neither {DMI} nor /proc/device-tree/model exists")],
                ..Facts::default()
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
    use crate::collectors::fixture::tree;

    /// The collector's answer on `d`, read back as the server reads it.
    fn collect(d: &tempfile::TempDir) -> Facts {
        let v = Hardware
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap();
        read(Some(&v), FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    #[test]
    fn lenovo_laptop() {
        // Captured from a ThinkPad T14 Gen 3.
        let d = tree(&[
            ("/sys/class/dmi/id/sys_vendor", "LENOVO\n"),
            ("/sys/class/dmi/id/product_name", "21AHCTO1WW\n"),
            ("/sys/class/dmi/id/product_version", "ThinkPad T14 Gen 3\n"),
            ("/sys/class/dmi/id/product_serial", "PF3ABCDE\n"),
            ("/sys/class/dmi/id/product_family", "ThinkPad T14 Gen 3\n"),
            ("/sys/class/dmi/id/board_serial", "To Be Filled By O.E.M.\n"),
            ("/sys/class/dmi/id/chassis_type", "10\n"),
            ("/sys/class/dmi/id/bios_vendor", "LENOVO\n"),
            ("/sys/class/dmi/id/bios_version", "R1YET58W (1.27 )\n"),
            ("/sys/class/dmi/id/bios_date", "06/19/2024\n"),
        ]);
        let v = collect(&d);
        assert_eq!(v.system_vendor.as_deref(), Some("LENOVO"));
        assert_eq!(v.product_name, Some(Known::Value("21AHCTO1WW".into())));
        assert_eq!(v.product_serial.as_deref(), Some("PF3ABCDE"));
        assert_eq!(v.chassis_type.as_deref(), Some("10"));
        assert_eq!(v.chassis.as_deref(), Some("notebook"));
        assert_eq!(v.board_serial, None, "placeholder dropped");
        assert_eq!(v.product_uuid, None, "missing file");
        assert_eq!(v.evidence, [DMI]);
    }

    #[test]
    fn raspberry_pi_has_no_dmi() {
        let d = tree(&[
            (
                "/proc/device-tree/model",
                "Raspberry Pi 4 Model B Rev 1.4\0",
            ),
            ("/proc/device-tree/serial-number", "10000000abcdef12\0"),
        ]);
        let v = collect(&d);
        assert_eq!(
            v.product_name,
            Some(Known::Value("Raspberry Pi 4 Model B Rev 1.4".into()))
        );
        assert_eq!(v.product_serial.as_deref(), Some("10000000abcdef12"));
        assert_eq!(v.evidence, ["/proc/device-tree"]);
    }

    #[test]
    fn nothing_to_read_is_unknown_with_a_reason() {
        let d = tree::<&str>(&[]);
        let v = collect(&d);
        assert_eq!(v.product_name, Some(Known::UNKNOWN));
        assert!(v.evidence[0].contains("/sys/class/dmi/id"), "{v:?}");
    }
}
