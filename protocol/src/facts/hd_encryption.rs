//! `hd_encryption`: whether every local filesystem and swap is encrypted,
//! followed down the block device stack.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known};

/// Every local filesystem and swap, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HdEncryption {
    /// Whether every judged filesystem and swap is encrypted (or in RAM).
    pub encrypted: bool,
    /// Local filesystems, sorted by mount point.
    pub filesystems: Vec<Filesystem>,
    /// Active swap, sorted by device.
    pub swap: Vec<Swap>,
    /// Filesystems not judged, with why (the boot partition).
    #[serde(default)]
    pub exempt: Vec<Exempt>,
    /// Network filesystems, listed and not judged.
    #[serde(default)]
    pub remote: Vec<Mount>,
    /// Filesystems on removable or USB disks, judged but not counted.
    #[serde(default)]
    pub removable: Vec<Filesystem>,
    /// Oddities met on the way (unparsable lines and the like).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The overall answer in words.
    pub evidence: Vec<String>,
}

impl Fact for HdEncryption {
    const NAME: &'static str = "hd_encryption";
}

/// A judged filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Filesystem {
    /// Where it is mounted.
    pub mountpoint: String,
    /// The device it is mounted from.
    pub device: String,
    /// Its type.
    pub fstype: String,
    /// Whether every way down the stack is encrypted.
    pub encrypted: Known<bool>,
    /// Layer kinds from top to bottom (`luks2`, `lvm`, `partition`...).
    #[serde(default)]
    pub layers: Vec<String>,
    /// Why.
    pub evidence: Vec<String>,
}

/// A judged swap area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Swap {
    /// The device or file.
    pub device: String,
    /// `partition`, `file`, or unknown.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it is encrypted (zram counts as encrypted: it is RAM).
    pub encrypted: Known<bool>,
    /// Layer kinds from top to bottom.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Why.
    pub evidence: Vec<String>,
}

/// A filesystem left out of the judgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Exempt {
    /// Where it is mounted.
    pub mountpoint: String,
    /// The device.
    pub device: String,
    /// Why it does not count.
    pub reason: String,
}

/// A mount listed without a judgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mount {
    /// Where it is mounted.
    pub mountpoint: String,
    /// What is mounted.
    pub device: String,
    /// Its type.
    pub fstype: String,
}
