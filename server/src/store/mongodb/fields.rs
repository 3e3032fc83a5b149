//! Reading and writing document fields.

use chrono::{DateTime, Utc};
use mongodb::bson::{Bson, Document};

/// A time as a BSON date (milliseconds, as the stores keep).
pub(super) fn to_bson_date(t: &DateTime<Utc>) -> Bson {
    Bson::DateTime(mongodb::bson::DateTime::from_millis(t.timestamp_millis()))
}

/// A BSON date as a time; None for anything else.
pub(super) fn from_bson_date(b: Option<&Bson>) -> Option<DateTime<Utc>> {
    match b {
        Some(Bson::DateTime(d)) => DateTime::from_timestamp_millis(d.timestamp_millis()),
        _ => None,
    }
}

/// An optional time as a BSON date or null.
pub(super) fn opt_date(t: Option<&DateTime<Utc>>) -> Bson {
    t.map(to_bson_date).unwrap_or(Bson::Null)
}

/// A string field, empty when missing.
pub(super) fn get_str(d: &Document, k: &str) -> String {
    d.get_str(k).unwrap_or_default().to_string()
}

/// A string field, if present.
pub(super) fn opt_str(d: &Document, k: &str) -> Option<String> {
    d.get_str(k).ok().map(str::to_string)
}

/// The facts version of a client's latest report (1 before it was kept).
pub(super) fn facts_version(d: &Document) -> u32 {
    match d.get("facts_version") {
        Some(Bson::Int32(v)) => u32::try_from(*v).unwrap_or(1),
        Some(Bson::Int64(v)) => u32::try_from(*v).unwrap_or(1),
        _ => 1,
    }
}

/// A date field, the epoch when missing.
pub(super) fn date(d: &Document, k: &str) -> DateTime<Utc> {
    from_bson_date(d.get(k)).unwrap_or(DateTime::UNIX_EPOCH)
}
