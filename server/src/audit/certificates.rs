//! `expiring-certificate`: the server's own TLS certificates. Agents pin
//! the certificate, so an expired one cuts off every client at once.

use chrono::{DateTime, Duration, Utc};

use super::ServerFinding;
use super::checks::Finding;
use crate::config::ServerConfig;

/// The name.
pub const NAME: &str = "expiring-certificate";
/// Warn this long before expiry: time to roll out a new site package.
const WARN_DAYS: i64 = 30;

/// One finding per TLS listener, as `server:<this host>/<listener>`:
/// servers sharing a database each judge their own certificates.
pub fn findings(config: &ServerConfig, now: DateTime<Utc>) -> Vec<ServerFinding> {
    let host = crate::host_name();
    config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref().map(|t| (l, t)))
        .map(|(listener, tls)| {
            let path = config.config_path(&tls.certificate);
            let as_of = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .map(DateTime::<Utc>::from);
            let finding = match std::fs::read(&path) {
                Ok(pem) => judge(&pem, now, &path.display().to_string()),
                Err(e) => Finding::Raise(format!("cannot read {}: {e}", path.display())),
            };
            ServerFinding {
                client_id: format!("server:{host}/{}", listener.name),
                name: NAME,
                finding,
                as_of,
            }
        })
        .collect()
}

/// When the first certificate of a PEM chain expires.
pub fn not_after(pem: &[u8]) -> Result<DateTime<Utc>, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let t = block
        .parse_x509()
        .map(|cert| cert.validity().not_after.timestamp())
        .map_err(|e| e.to_string())?;
    Ok(DateTime::from_timestamp(t, 0).unwrap_or(DateTime::UNIX_EPOCH))
}

/// Judges the first certificate of a PEM chain.
pub fn judge(pem: &[u8], now: DateTime<Utc>, what: &str) -> Finding {
    let not_after = match not_after(pem) {
        Ok(t) => t,
        Err(e) => return Finding::Raise(format!("{what} is not a PEM certificate: {e}")),
    };
    let day = not_after.format("%Y-%m-%d %H:%M UTC");
    if not_after <= now {
        Finding::Raise(format!(
            "{what} expired on {day}: agents cannot connect; make a new certificate and release"
        ))
    } else if not_after - now < Duration::days(WARN_DAYS) {
        Finding::Raise(format!(
            "{what} expires on {day}; make a new certificate and release it to the agents before then"
        ))
    } else {
        Finding::Clear
    }
}
