//! network: each network device with its MAC address, link state, kind,
//! addresses and, for Wi-Fi, the network it is connected to (from
//! NetworkManager over D-Bus).
//!
//! Reports must not flap: IPv6 temporary (privacy) addresses, which
//! rotate every few hours, and containers' veth pairs are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use penguindome_protocol::facts::network::{Device, Network as Facts};
use penguindome_protocol::facts::{Known, to_value};
use serde_json::Value;

use super::{CollectError, Collector, Context};
use crate::host::Host;

const NM: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";

/// IFA_F_TEMPORARY in /proc/net/if_inet6's flags column.
const IFA_F_TEMPORARY: u32 = 0x01;

/// The collector.
pub struct Network;

/// IPv6 temporary addresses, from /proc/net/if_inet6.
pub fn temporary_ipv6(host: &Host) -> BTreeSet<IpAddr> {
    let text = host
        .read_to_string("/proc/net/if_inet6")
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[4], 16).ok()?;
            if flags & IFA_F_TEMPORARY == 0 || f[0].len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(f[0], 16).ok()?;
            Some(IpAddr::V6(std::net::Ipv6Addr::from(bits)))
        })
        .collect()
}

fn kind(host: &Host, dev: &str) -> &'static str {
    let base = format!("/sys/class/net/{dev}");
    let arp_type = host
        .read_to_string(&format!("{base}/type"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    if arp_type == Some(772) {
        "loopback"
    } else if host.exists(&format!("{base}/wireless")) || host.exists(&format!("{base}/phy80211")) {
        "wifi"
    } else if host.exists(&format!("{base}/bridge")) {
        "bridge"
    } else if std::fs::symlink_metadata(host.path(&format!("{base}/device"))).is_err() {
        "virtual"
    } else if arp_type == Some(1) {
        "ethernet"
    } else {
        "other"
    }
}

/// The SSID a Wi-Fi device is connected to, through NetworkManager.
fn ssid(host: &Host, dev: &str) -> Result<Option<String>, String> {
    let bus = host.bus();
    let device = bus
        .call(NM, NM_PATH, NM, "GetDeviceByIpIface", &[dev])
        .map_err(|e| e.to_string())?;
    let device = device
        .as_str()
        .ok_or("NetworkManager returned no device path")?;
    let ap = bus
        .property(
            NM,
            device,
            "org.freedesktop.NetworkManager.Device.Wireless",
            "ActiveAccessPoint",
        )
        .map_err(|e| e.to_string())?;
    let Some(ap) = ap.as_str().filter(|p| *p != "/") else {
        return Ok(None);
    };
    let bytes = bus
        .property(NM, ap, "org.freedesktop.NetworkManager.AccessPoint", "Ssid")
        .map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = bytes
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_u64())
                .map(|b| b as u8)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

impl Collector for Network {
    fn name(&self) -> &'static str {
        "network"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let temporary = temporary_ipv6(host);
        let mut addresses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for a in host.interfaces().unwrap_or_default() {
            if a.loopback || temporary.contains(&a.address) {
                continue;
            }
            addresses
                .entry(a.interface)
                .or_default()
                .insert(format!("{}/{}", a.address, a.prefix));
        }
        let mut evidence = vec!["/sys/class/net".to_string(), "getifaddrs(3)".to_string()];
        let mut devices = Vec::new();
        for dev in host.list_dir("/sys/class/net") {
            let k = kind(host, &dev);
            if k == "loopback" || (k == "virtual" && dev.starts_with("veth")) {
                continue;
            }
            let read = |f: &str| {
                host.read_to_string(&format!("/sys/class/net/{dev}/{f}"))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            let network = (k == "wifi").then(|| match ssid(host, &dev) {
                Ok(s) => {
                    evidence.push(format!("NetworkManager ActiveAccessPoint of {dev}"));
                    Known::Value(s)
                }
                Err(e) => {
                    evidence.push(format!("SSID of {dev} unknown: {e}"));
                    Known::UNKNOWN
                }
            });
            devices.push(Device {
                name: dev.clone(),
                kind: k.to_string(),
                mac: read("address"),
                state: read("operstate").unwrap_or_else(|| "unknown".into()),
                addresses: addresses
                    .remove(&dev)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                ssid: network,
            });
        }
        evidence.push("IPv6 temporary addresses left out (/proc/net/if_inet6)".into());
        Ok(to_value(&Facts { devices, evidence }))
    }
}

#[cfg(test)]
mod tests {
    use penguindome_protocol::facts::{FACTS_VERSION, read};

    use super::*;
    use crate::collectors::NoCache;
    use crate::collectors::fixture::tree_with_links as tree;
    use crate::host::InterfaceAddress;

    /// The collector's answer, read back as the server reads it.
    fn collect(host: &Host) -> Facts {
        let v = Network.collect(&Context::new(host, &NoCache)).unwrap();
        read(Some(&v), FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    fn addr(i: &str, a: &str, p: u8) -> InterfaceAddress {
        InterfaceAddress {
            interface: i.into(),
            address: a.parse().unwrap(),
            prefix: p,
            loopback: i == "lo",
        }
    }

    #[test]
    fn laptop_with_wifi_and_docker() {
        let d = tree(
            &[
                ("/sys/class/net/lo/type", "772\n"),
                ("/sys/class/net/enp0s31f6/type", "1\n"),
                ("/sys/class/net/enp0s31f6/address", "8c:16:45:aa:bb:cc\n"),
                ("/sys/class/net/enp0s31f6/operstate", "down\n"),
                ("/sys/class/net/wlp0s20f3/type", "1\n"),
                ("/sys/class/net/wlp0s20f3/address", "f8:e4:e3:11:22:33\n"),
                ("/sys/class/net/wlp0s20f3/operstate", "up\n"),
                ("/sys/class/net/wlp0s20f3/wireless/.keep", ""),
                ("/sys/class/net/docker0/type", "1\n"),
                ("/sys/class/net/docker0/bridge/.keep", ""),
                ("/sys/class/net/docker0/operstate", "down\n"),
                ("/sys/class/net/veth1a2b3c/type", "1\n"),
                (
                    "/proc/net/if_inet6",
                    "2a0204a0000000001c2d3e4f5a6b7c8d 03 40 00 01 wlp0s20f3\n2a0204a0000000000000000000000010 03 40 00 00 wlp0s20f3\nfe80000000000000fae4e3fffe112233 03 40 20 80 wlp0s20f3\n",
                ),
                (
                    "/.dbus.json",
                    r#"{"calls": {"org.freedesktop.NetworkManager /org/freedesktop/NetworkManager org.freedesktop.NetworkManager GetDeviceByIpIface wlp0s20f3": "/org/freedesktop/NetworkManager/Devices/3"},
                        "properties": {"org.freedesktop.NetworkManager /org/freedesktop/NetworkManager/Devices/3 org.freedesktop.NetworkManager.Device.Wireless ActiveAccessPoint": "/org/freedesktop/NetworkManager/AccessPoint/12",
                                       "org.freedesktop.NetworkManager /org/freedesktop/NetworkManager/AccessPoint/12 org.freedesktop.NetworkManager.AccessPoint Ssid": [79, 102, 102, 105, 99, 101]}}"#,
                ),
            ],
            &[
                ("/sys/class/net/enp0s31f6/device", "../../../0000:00:1f.6"),
                ("/sys/class/net/wlp0s20f3/device", "../../../0000:00:14.3"),
            ],
        );
        let host = Host::fixture(
            d.path(),
            vec![
                addr("lo", "127.0.0.1", 8),
                addr("wlp0s20f3", "192.168.1.23", 24),
                addr("wlp0s20f3", "2a02:4a0::1c2d:3e4f:5a6b:7c8d", 64),
                addr("wlp0s20f3", "2a02:4a0::10", 64),
            ],
        );
        let v = collect(&host);
        let names: Vec<&str> = v.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["docker0", "enp0s31f6", "wlp0s20f3"]);
        let wifi = &v.devices[2];
        assert_eq!(wifi.kind, "wifi");
        assert_eq!(wifi.ssid, Some(Known::Value(Some("Office".into()))));
        assert_eq!(
            wifi.addresses,
            ["192.168.1.23/24", "2a02:4a0::10/64"],
            "temporary address left out"
        );
        assert_eq!(v.devices[0].kind, "bridge");
        assert_eq!(v.devices[0].mac, None);
        assert_eq!(v.devices[1].kind, "ethernet");
        assert_eq!(v.devices[1].mac.as_deref(), Some("8c:16:45:aa:bb:cc"));
        assert_eq!(v.devices[1].ssid, None, "only Wi-Fi has an SSID");
    }

    #[test]
    fn wifi_without_networkmanager_is_unknown_with_reason() {
        let d = tree(
            &[
                ("/sys/class/net/wlan0/type", "1\n"),
                ("/sys/class/net/wlan0/phy80211/.keep", ""),
            ],
            &[],
        );
        let v = collect(&Host::fixture(d.path(), vec![]));
        assert_eq!(v.devices[0].ssid, Some(Known::UNKNOWN));
        assert_eq!(v.devices[0].state, "unknown");
        assert!(v.evidence.iter().any(|e| e.contains("D-Bus")), "{v:?}");
    }

    #[test]
    fn wifi_not_connected_has_a_null_ssid() {
        let d = tree(
            &[
                ("/sys/class/net/wlan0/type", "1\n"),
                ("/sys/class/net/wlan0/wireless/.keep", ""),
                (
                    "/.dbus.json",
                    r#"{"calls": {"org.freedesktop.NetworkManager /org/freedesktop/NetworkManager org.freedesktop.NetworkManager GetDeviceByIpIface wlan0": "/org/freedesktop/NetworkManager/Devices/2"},
                        "properties": {"org.freedesktop.NetworkManager /org/freedesktop/NetworkManager/Devices/2 org.freedesktop.NetworkManager.Device.Wireless ActiveAccessPoint": "/"}}"#,
                ),
            ],
            &[],
        );
        let host = Host::fixture(d.path(), vec![]);
        let wire = Network.collect(&Context::new(&host, &NoCache)).unwrap();
        assert_eq!(wire["devices"][0]["ssid"], Value::Null, "{wire}");
        assert_eq!(collect(&host).devices[0].ssid, Some(Known::Value(None)));
    }
}
