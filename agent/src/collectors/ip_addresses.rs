//! ip_addresses: the addresses of each non-loopback interface, sorted so
//! that reports compare equal when nothing changed.

use std::collections::BTreeMap;

use penguindome_protocol::facts::ip_addresses::{Interface, IpAddresses as Facts};
use penguindome_protocol::facts::to_value;
use serde_json::Value;

use super::{CollectError, Collector, Context};

/// The collector.
pub struct IpAddresses;

impl Collector for IpAddresses {
    fn name(&self) -> &'static str {
        "ip_addresses"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let mut by_interface: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Privacy addresses rotate every few hours; reporting them would
        // make every report a change.
        let temporary = super::network::temporary_ipv6(ctx.host);
        for a in ctx.host.interfaces()? {
            if a.loopback || a.address.is_loopback() || temporary.contains(&a.address) {
                continue;
            }
            by_interface
                .entry(a.interface)
                .or_default()
                .push(format!("{}/{}", a.address, a.prefix));
        }
        let interfaces = by_interface
            .into_iter()
            .map(|(name, mut addresses)| {
                addresses.sort();
                addresses.dedup();
                Interface { name, addresses }
            })
            .collect();
        Ok(to_value(&Facts {
            interfaces,
            evidence: vec![
                "getifaddrs(3), without IPv6 temporary addresses (/proc/net/if_inet6)".into(),
            ],
        }))
    }
}

#[cfg(test)]
mod tests {
    use penguindome_protocol::facts::{FACTS_VERSION, read};

    use super::*;
    use crate::collectors::NoCache;
    use crate::host::{Host, InterfaceAddress};

    /// The collector's answer, read back as the server reads it.
    fn collect(host: &Host) -> Facts {
        let v = IpAddresses.collect(&Context::new(host, &NoCache)).unwrap();
        read(Some(&v), FACTS_VERSION).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    fn interface(name: &str, addresses: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn addr(i: &str, a: &str, p: u8, lo: bool) -> InterfaceAddress {
        InterfaceAddress {
            interface: i.into(),
            address: a.parse().unwrap(),
            prefix: p,
            loopback: lo,
        }
    }

    #[test]
    fn sorted_without_loopback() {
        let host = Host::fixture(
            "/nonexistent",
            vec![
                addr("wlan0", "192.168.1.20", 24, false),
                addr("lo", "127.0.0.1", 8, true),
                addr("eth0", "fe80::1", 64, false),
                addr("eth0", "10.0.0.5", 16, false),
                addr("lo", "::1", 128, true),
            ],
        );
        assert_eq!(
            collect(&host).interfaces,
            [
                interface("eth0", &["10.0.0.5/16", "fe80::1/64"]),
                interface("wlan0", &["192.168.1.20/24"]),
            ]
        );
    }

    #[test]
    fn live_host_has_an_answer() {
        let v = collect(&Host::system());
        assert!(v.interfaces.iter().all(|i| i.name != "lo"), "{v:?}");
        assert!(!v.evidence.is_empty());
    }
}
