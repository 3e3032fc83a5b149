//! geolocation: where the machine is, from the Wi-Fi access points
//! NetworkManager last saw, sent to the geolocation service the site
//! configures (`[collectors.geolocation]` in agent.toml: a Google- or
//! Mozilla-style `wifiAccessPoints` API and its key). Off by default:
//! without a configured service the answer is "unknown".
//!
//! The last answer is reused while most of the same access points are in
//! sight, so a machine on a desk does not call the service every run.

use std::collections::BTreeSet;
use std::time::Duration;

use penguindome_protocol::facts::geolocation::{self as facts, Location};
use penguindome_protocol::facts::{Known, Timestamp, to_value};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CollectError, Collector, Context};
use crate::host::Host;

const NM: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const CACHE_KEY: &str = "geolocation.last";
/// Share of the previous access points still in sight to reuse an answer.
const SAME_PLACE: f64 = 0.75;
/// NM_DEVICE_TYPE_WIFI.
const DEVICE_TYPE_WIFI: u64 = 2;

/// The collector.
pub struct Geolocation;

/// The last answer, reused while the machine stays in the same place.
#[derive(Debug, Serialize, Deserialize)]
struct Last {
    /// The access points in sight when it was asked.
    macs: BTreeSet<String>,
    /// What the service said.
    location: Location,
    /// When it said so.
    located_at: Timestamp,
}

/// One access point as the geolocation APIs want it.
#[derive(Debug, Clone)]
struct AccessPoint {
    mac: String,
    dbm: i64,
    channel: Option<u64>,
}

/// 2.4 GHz, 5 GHz and 6 GHz channel numbers from a frequency in MHz.
fn channel(mhz: u64) -> Option<u64> {
    match mhz {
        2484 => Some(14),
        2412..=2472 => Some((mhz - 2407) / 5),
        5150..=5895 => Some((mhz - 5000) / 5),
        5955..=7115 => Some((mhz - 5950) / 5),
        _ => None,
    }
}

/// Access points every Wi-Fi device currently knows, from NetworkManager.
fn access_points(host: &Host) -> Result<Vec<AccessPoint>, String> {
    let bus = host.bus();
    let devices = bus
        .call(NM, NM_PATH, NM, "GetDevices", &[])
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for dev in devices
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let kind = bus
            .property(
                NM,
                dev,
                "org.freedesktop.NetworkManager.Device",
                "DeviceType",
            )
            .ok()
            .and_then(|v| v.as_u64());
        if kind != Some(DEVICE_TYPE_WIFI) {
            continue;
        }
        let aps = bus
            .property(
                NM,
                dev,
                "org.freedesktop.NetworkManager.Device.Wireless",
                "AccessPoints",
            )
            .map_err(|e| e.to_string())?;
        for ap in aps
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let prop = |name: &str| {
                bus.property(NM, ap, "org.freedesktop.NetworkManager.AccessPoint", name)
                    .ok()
            };
            let Some(mac) = prop("HwAddress").and_then(|v| v.as_str().map(str::to_lowercase))
            else {
                continue;
            };
            // NetworkManager gives a 0-100 quality; the APIs want dBm.
            let strength = prop("Strength").and_then(|v| v.as_u64()).unwrap_or(0) as i64;
            out.push(AccessPoint {
                mac,
                dbm: strength / 2 - 100,
                channel: prop("Frequency").and_then(|v| v.as_u64()).and_then(channel),
            });
        }
    }
    out.sort_by(|a, b| a.mac.cmp(&b.mac));
    out.dedup_by(|a, b| a.mac == b.mac);
    Ok(out)
}

fn locate(url: &str, key: &str, aps: &[AccessPoint]) -> Result<Location, String> {
    let body = json!({
        "considerIp": false,
        "wifiAccessPoints": aps.iter().map(|a| {
            let mut v = json!({"macAddress": a.mac, "signalStrength": a.dbm});
            if let Some(c) = a.channel {
                v["channel"] = json!(c);
            }
            v
        }).collect::<Vec<_>>(),
    });
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        // The key rides in the query: never hand it to another host.
        .max_redirects(0)
        .build()
        .new_agent();
    // Error texts may quote the whole URI; the key must not reach reports.
    let hide = |e: &dyn std::fmt::Display| format!("{url}: {}", e.to_string().replace(key, "***"));
    let mut response = agent
        .post(url)
        .query("key", key)
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| hide(&e))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    if status != 200 {
        return Err(format!(
            "{url} answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{url} answered with invalid JSON: {e}"))?;
    let (Some(lat), Some(lng)) = (v["location"]["lat"].as_f64(), v["location"]["lng"].as_f64())
    else {
        return Err(format!("{url} gave no location.lat and location.lng"));
    };
    Ok(Location {
        lat,
        lng,
        accuracy: v["accuracy"].as_f64(),
    })
}

/// No location, and why.
fn unknown(why: String) -> Value {
    to_value(&facts::Geolocation {
        location: Known::UNKNOWN,
        located_at: None,
        evidence: vec![why],
    })
}

/// The cached answer, if most of the access points seen then are in
/// sight now. A cache entry that does not read is asked anew.
fn reuse(ctx: &Context<'_>, macs: &BTreeSet<String>) -> Option<facts::Geolocation> {
    let last: Last = serde_json::from_value(ctx.cache.get(CACHE_KEY)?).ok()?;
    let kept = last.macs.intersection(macs).count() as f64;
    let before = last.macs.len();
    (before > 0 && kept / before as f64 >= SAME_PLACE).then(|| facts::Geolocation {
        location: Known::Value(last.location),
        located_at: Some(last.located_at),
        evidence: vec![format!(
            "reused: {kept} of the {before} access points seen then are in sight"
        )],
    })
}

impl Collector for Geolocation {
    fn name(&self) -> &'static str {
        "geolocation"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let Some(settings) = &ctx.settings.geolocation else {
            return Ok(unknown(
                "geolocation is off: no [collectors.geolocation] url and api_key in agent.toml"
                    .into(),
            ));
        };
        let aps = match access_points(ctx.host) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => return Ok(unknown("NetworkManager sees no Wi-Fi access points".into())),
            Err(e) => return Ok(unknown(format!("Wi-Fi access points unavailable: {e}"))),
        };
        let macs: BTreeSet<String> = aps.iter().map(|a| a.mac.clone()).collect();
        if let Some(answer) = reuse(ctx, &macs) {
            return Ok(to_value(&answer));
        }
        match locate(&settings.url, &settings.api_key, &aps) {
            Ok(location) => {
                let last = Last {
                    macs,
                    location,
                    located_at: ctx.now.into(),
                };
                // Plain data: serializing it cannot fail.
                if let Ok(v) = serde_json::to_value(&last) {
                    ctx.cache.put(CACHE_KEY, &v);
                }
                Ok(to_value(&facts::Geolocation {
                    location: Known::Value(last.location),
                    located_at: Some(last.located_at),
                    evidence: vec![format!(
                        "{} access points from NetworkManager sent to {}",
                        aps.len(),
                        settings.url
                    )],
                }))
            }
            Err(e) => Ok(unknown(format!("geolocation service failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::{Cache, CollectorSettings, MemoryCache};
    use penguindome_protocol::agent_config::GeolocationSettings;
    use penguindome_protocol::facts::geolocation::Geolocation as Facts;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};

    /// A one-route HTTP server on loopback that records request bodies.
    fn fake_service(answer: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/geolocate", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut length = 0;
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(format!(
                    "{}{}",
                    request_line.trim(),
                    String::from_utf8_lossy(&body)
                ));
                write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len()).unwrap();
            }
        });
        (url, seen)
    }

    fn fixture(aps: &[(&str, u64, u64)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let dev = "/org/freedesktop/NetworkManager/Devices/3";
        let mut props = serde_json::Map::new();
        props.insert(
            format!("{NM} {dev} org.freedesktop.NetworkManager.Device DeviceType"),
            json!(2),
        );
        props.insert(
            format!("{NM} /org/freedesktop/NetworkManager/Devices/1 org.freedesktop.NetworkManager.Device DeviceType"),
            json!(1),
        );
        let paths: Vec<String> = (0..aps.len())
            .map(|i| format!("/org/freedesktop/NetworkManager/AccessPoint/{i}"))
            .collect();
        props.insert(
            format!("{NM} {dev} org.freedesktop.NetworkManager.Device.Wireless AccessPoints"),
            json!(paths),
        );
        for (p, (mac, strength, freq)) in paths.iter().zip(aps) {
            let k = |n: &str| format!("{NM} {p} org.freedesktop.NetworkManager.AccessPoint {n}");
            props.insert(k("HwAddress"), json!(mac));
            props.insert(k("Strength"), json!(strength));
            props.insert(k("Frequency"), json!(freq));
        }
        let recording = json!({
            "calls": {format!("{NM} {NM_PATH} {NM} GetDevices"): ["/org/freedesktop/NetworkManager/Devices/1", dev]},
            "properties": props,
        });
        std::fs::write(d.path().join(".dbus.json"), recording.to_string()).unwrap();
        d
    }

    #[test]
    fn locates_once_and_reuses_while_in_the_same_place() {
        let (url, seen) =
            fake_service(r#"{"location": {"lat": 52.52, "lng": 13.405}, "accuracy": 25.0}"#);
        let settings = CollectorSettings {
            geolocation: Some(GeolocationSettings {
                url,
                api_key: "k3y".into(),
            }),
            ..Default::default()
        };
        let cache = MemoryCache::default();
        let office = fixture(&[
            ("AA:BB:CC:00:00:01", 80, 2437),
            ("aa:bb:cc:00:00:02", 40, 5180),
            ("aa:bb:cc:00:00:03", 60, 5500),
            ("aa:bb:cc:00:00:04", 20, 2412),
        ]);
        let host = Host::fixture(office.path(), vec![]);
        let mut ctx = Context::new(&host, &cache).with_settings(&settings);
        ctx.now = "2024-11-26T08:00:00.123456Z".parse().unwrap();
        let v: Facts = serde_json::from_value(Geolocation.collect(&ctx).unwrap()).unwrap();
        let here = Location {
            lat: 52.52,
            lng: 13.405,
            accuracy: Some(25.0),
        };
        assert_eq!(v.location, Known::Value(here.clone()));
        let then = Timestamp::from(ctx.now);
        assert_eq!(v.located_at, Some(then));
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0].starts_with("POST /v1/geolocate?key=k3y "),
            "{}",
            requests[0]
        );
        assert!(
            requests[0].contains(r#""macAddress":"aa:bb:cc:00:00:01","signalStrength":-60"#),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains(r#""channel":6"#));

        // One access point gone: same place, no new request.
        let nearby = fixture(&[
            ("aa:bb:cc:00:00:01", 80, 2437),
            ("aa:bb:cc:00:00:02", 40, 5180),
            ("aa:bb:cc:00:00:03", 60, 5500),
        ]);
        let host = Host::fixture(nearby.path(), vec![]);
        let v: Facts = serde_json::from_value(
            Geolocation
                .collect(&Context::new(&host, &cache).with_settings(&settings))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v.location, Known::Value(here));
        assert_eq!(v.located_at, Some(then), "when it was located, not now");
        assert!(v.evidence[0].starts_with("reused: 3 of the 4"), "{v:?}");
        assert_eq!(seen.lock().unwrap().len(), 1);

        // Somewhere else: asked again.
        let elsewhere = fixture(&[("11:22:33:44:55:66", 70, 2462)]);
        let host = Host::fixture(elsewhere.path(), vec![]);
        Geolocation
            .collect(&Context::new(&host, &cache).with_settings(&settings))
            .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn off_by_default_and_failures_are_unknown() {
        let d = fixture(&[("aa:bb:cc:00:00:01", 80, 2437)]);
        let host = Host::fixture(d.path(), vec![]);
        let v = Geolocation
            .collect(&Context::new(&host, &MemoryCache::default()))
            .unwrap();
        assert_eq!(v["location"], "unknown");
        assert!(v.get("located_at").is_none(), "{v}");
        let v: Facts = serde_json::from_value(v).unwrap();
        assert!(v.location.is_unknown());
        assert!(v.evidence[0].contains("off"));

        let (url, _) = fake_service(r#"{"error": "bad key"}"#);
        let settings = CollectorSettings {
            geolocation: Some(GeolocationSettings {
                url,
                api_key: "x".into(),
            }),
            ..Default::default()
        };
        let v: Facts = serde_json::from_value(
            Geolocation
                .collect(&Context::new(&host, &MemoryCache::default()).with_settings(&settings))
                .unwrap(),
        )
        .unwrap();
        assert!(v.location.is_unknown());
        assert_eq!(v.located_at, None);
        assert!(v.evidence[0].contains("no location.lat"), "{v:?}");
    }

    /// An answer cached by an earlier agent (written as plain JSON, no
    /// accuracy given) is reused; one that does not read is asked anew.
    #[test]
    fn earlier_cache_entries_are_read() {
        let (url, seen) = fake_service(r#"{"location": {"lat": 1.5, "lng": 2.5}}"#);
        let settings = CollectorSettings {
            geolocation: Some(GeolocationSettings {
                url,
                api_key: "k".into(),
            }),
            ..Default::default()
        };
        let cache = MemoryCache::default();
        cache.put(
            CACHE_KEY,
            &json!({"macs": ["aa:bb:cc:00:00:01"], "located_at": "2024-05-01T10:00:00.000Z",
                "location": {"lat": 48.85, "lng": 2.35, "accuracy": null}}),
        );
        let d = fixture(&[("aa:bb:cc:00:00:01", 80, 2437)]);
        let host = Host::fixture(d.path(), vec![]);
        let ctx = Context::new(&host, &cache).with_settings(&settings);
        let v = Geolocation.collect(&ctx).unwrap();
        assert_eq!(v["located_at"], "2024-05-01T10:00:00.000Z");
        assert_eq!(v["location"]["accuracy"], Value::Null, "{v}");
        assert_eq!(seen.lock().unwrap().len(), 0);

        cache.put(
            CACHE_KEY,
            &json!({"macs": ["aa:bb:cc:00:00:01"], "location": "x"}),
        );
        let v: Facts = serde_json::from_value(Geolocation.collect(&ctx).unwrap()).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(v.location.known().map(|l| l.lat), Some(1.5));
        assert_eq!(v.location.known().and_then(|l| l.accuracy), None);
    }

    #[test]
    fn channels() {
        assert_eq!(channel(2412), Some(1));
        assert_eq!(channel(2484), Some(14));
        assert_eq!(channel(5180), Some(36));
        assert_eq!(channel(5975), Some(5));
        assert_eq!(channel(60000), None);
    }
}
