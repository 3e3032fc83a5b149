//! `os_info`: the distribution, its release, the kernel and when the
//! machine booted.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known, Timestamp};

pub mod releases;

/// os-release and the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OsInfo {
    /// os-release `ID` (`debian`, `fedora`, `arch`...).
    #[serde(default)]
    pub id: Option<String>,
    /// os-release `ID_LIKE`, split.
    #[serde(default)]
    pub id_like: Vec<String>,
    /// os-release `NAME`.
    #[serde(default)]
    pub name: Option<String>,
    /// os-release `PRETTY_NAME`.
    #[serde(default)]
    pub pretty_name: Option<String>,
    /// os-release `VERSION_ID`.
    #[serde(default)]
    pub version_id: Option<String>,
    /// os-release `VERSION_CODENAME`.
    #[serde(default)]
    pub version_codename: Option<String>,
    /// Kernel release.
    pub kernel: String,
    /// Machine architecture (`x86_64`...).
    pub architecture: String,
    /// The kernel's host name.
    pub hostname: String,
    /// When the machine booted.
    #[serde(default)]
    pub booted_at: Option<Timestamp>,
    /// Whether the release is supported and the newest; absent in reports
    /// of agents before facts version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseSupport>,
    /// Where each field comes from.
    pub evidence: Vec<String>,
}

impl Fact for OsInfo {
    const NAME: &'static str = "os_info";
}

/// Whether the installed release still gets security updates, and whether
/// a newer one is out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseSupport {
    /// When the distribution's regular security support for this release
    /// ends (or ended); null for a rolling release, which has no end.
    pub support_ends: Known<Option<NaiveDate>>,
    /// The newest stable release when it is newer than this one
    /// (`13 (trixie)`); null when this one is the newest. Ubuntu LTS
    /// releases are compared with LTS releases only.
    pub newer_release: Known<Option<String>>,
    /// The data the answer rests on.
    pub evidence: Vec<String>,
}
