//! `software`: the packages and services the site requires
//! (`[collectors]` in agent.toml).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known};

/// Required software and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Software {
    /// Whether everything required is installed and running.
    pub compliant: bool,
    /// Required packages, sorted by name.
    #[serde(default)]
    pub packages: Vec<Package>,
    /// Required services, sorted by unit name.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Where the answer comes from.
    pub evidence: Vec<String>,
}

impl Fact for Software {
    const NAME: &'static str = "software";
}

/// A required package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Package {
    /// Its name.
    pub name: String,
    /// Whether it is installed.
    pub installed: Known<bool>,
    /// The installed version; null when it is not installed or unknown
    /// (agents before facts version 2 left it out when unknown).
    #[serde(default)]
    pub version: Option<String>,
}

/// A required service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Service {
    /// Unit name.
    pub name: String,
    /// Whether the unit exists.
    pub installed: bool,
    /// Whether it starts at boot.
    pub enabled: bool,
    /// Whether it runs now.
    pub running: Known<bool>,
    /// systemd's ActiveState.
    pub state: String,
}
