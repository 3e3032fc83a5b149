//! `network`: network devices, their hardware addresses, state and the
//! Wi-Fi network they are on.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Fact, Known};

/// The machine's network devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Network {
    /// Devices, sorted by name.
    pub devices: Vec<Device>,
    /// Where the answer comes from.
    pub evidence: Vec<String>,
}

impl Fact for Network {
    const NAME: &'static str = "network";
}

/// One network device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Device {
    /// Kernel name.
    pub name: String,
    /// `ethernet`, `wifi`, `bridge`, `loopback`...
    pub kind: String,
    /// Hardware address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Operational state (`up`, `down`, `unknown`...).
    pub state: String,
    /// Addresses in CIDR notation.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Wi-Fi only: the network's name (null when not connected). Absent
    /// and null are told apart when read: absent is `None`, null is
    /// `Some(Known::Value(None))`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub ssid: Option<Known<Option<String>>>,
}

/// Reads a field that is there, null included, as `Some` (serde reads a
/// null `Option` as `None`, which would make a disconnected Wi-Fi device
/// look like a wired one).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssid_absent_null_and_unknown_survive_the_wire() {
        let device = |ssid| Device {
            name: "wlan0".into(),
            kind: "wifi".into(),
            mac: None,
            state: "up".into(),
            addresses: vec![],
            ssid,
        };
        for ssid in [
            None,
            Some(Known::Value(None)),
            Some(Known::Value(Some("Office".into()))),
            Some(Known::UNKNOWN),
        ] {
            let d = device(ssid);
            let wire = serde_json::to_value(&d).unwrap();
            assert_eq!(serde_json::from_value::<Device>(wire).unwrap(), d);
        }
    }
}
