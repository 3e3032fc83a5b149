//! `ip_addresses`: the addresses of each network interface.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Fact;

/// Interfaces and their addresses (loopback and IPv6 temporary addresses
/// left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpAddresses {
    /// Interfaces, sorted by name.
    pub interfaces: Vec<Interface>,
    /// How the addresses were read.
    pub evidence: Vec<String>,
}

impl Fact for IpAddresses {
    const NAME: &'static str = "ip_addresses";
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Addresses in CIDR notation.
    pub addresses: Vec<String>,
}
