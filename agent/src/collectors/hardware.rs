//! hardware: vendor, product, serial number and firmware from the DMI
//! tables the kernel exports in /sys/class/dmi/id (no dmidecode). Machines
//! without DMI (most ARM boards) fall back to the device tree model.
//!
//! Serial numbers are readable by root only; placeholder values vendors
//! leave in the tables ("To Be Filled By O.E.M.") are reported as absent.

use serde_json::{Map, Value, json};

use super::{CollectError, Collector, Context};

const DMI: &str = "/sys/class/dmi/id";

/// The collector.
pub struct Hardware;

/// Report key and DMI file name.
const FIELDS: &[(&str, &str)] = &[
    ("system_vendor", "sys_vendor"),
    ("product_name", "product_name"),
    ("product_version", "product_version"),
    ("product_serial", "product_serial"),
    ("product_uuid", "product_uuid"),
    ("product_family", "product_family"),
    ("board_vendor", "board_vendor"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("chassis_type", "chassis_type"),
    ("chassis_serial", "chassis_serial"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("bios_date", "bios_date"),
];

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

impl Collector for Hardware {
    fn name(&self) -> &'static str {
        "hardware"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let mut out = Map::new();
        let mut unreadable = Vec::new();
        let dmi_present = host.exists(DMI);
        if dmi_present {
            for (key, file) in FIELDS {
                let path = format!("{DMI}/{file}");
                match host.read_to_string(&path) {
                    Ok(v) => {
                        let v = v.trim();
                        if !is_placeholder(v) {
                            out.insert((*key).to_string(), Value::String(v.to_string()));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        unreadable.push(file.to_string())
                    }
                    Err(_) => {}
                }
            }
            if let Some(name) = out
                .get("chassis_type")
                .and_then(Value::as_str)
                .and_then(chassis_name)
            {
                out.insert("chassis".into(), Value::String(name.into()));
            }
            out.insert("evidence".into(), json!(DMI));
        } else if let Ok(model) = host.read_to_string("/proc/device-tree/model") {
            let model = model.trim_end_matches('\0').trim();
            out.insert("product_name".into(), json!(model));
            if let Ok(serial) = host.read_to_string("/proc/device-tree/serial-number") {
                let serial = serial.trim_end_matches('\0').trim();
                if !is_placeholder(serial) {
                    out.insert("product_serial".into(), json!(serial));
                }
            }
            out.insert("evidence".into(), json!("/proc/device-tree"));
        } else {
            return Ok(json!({
                "product_name": "unknown",
                "evidence": format!("neither {DMI} nor /proc/device-tree/model exists"),
            }));
        }
        if !unreadable.is_empty() {
            out.insert(
                "unreadable".into(),
                json!(format!("{} need root to read", unreadable.join(", "))),
            );
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::NoCache;
    use crate::collectors::fixture::tree;
    use crate::host::Host;

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
        let v = Hardware
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap();
        assert_eq!(v["system_vendor"], "LENOVO");
        assert_eq!(v["product_serial"], "PF3ABCDE");
        assert_eq!(v["chassis"], "notebook");
        assert!(v.get("board_serial").is_none(), "placeholder dropped");
        assert_eq!(v["evidence"], DMI);
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
        let v = Hardware
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap();
        assert_eq!(v["product_name"], "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(v["product_serial"], "10000000abcdef12");
    }

    #[test]
    fn nothing_to_read_is_unknown_with_a_reason() {
        let d = tree::<&str>(&[]);
        let v = Hardware
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap();
        assert_eq!(v["product_name"], "unknown");
        assert!(
            v["evidence"]
                .as_str()
                .unwrap()
                .contains("/sys/class/dmi/id")
        );
    }
}
