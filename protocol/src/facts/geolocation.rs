//! `geolocation`: where the machine is, from the Wi-Fi access points in
//! sight and a geolocation service (off unless the site configures one).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known, Timestamp};

/// The machine's location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Geolocation {
    /// Where, or unknown (off, no access points, service failed).
    pub location: Known<Location>,
    /// When the service placed it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub located_at: Option<Timestamp>,
    /// How the answer was found.
    pub evidence: Vec<String>,
}

impl Fact for Geolocation {
    const NAME: &'static str = "geolocation";
}

/// A point on Earth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lng: f64,
    /// Radius of uncertainty in metres, if the service gave one.
    #[serde(default)]
    pub accuracy: Option<f64>,
}
