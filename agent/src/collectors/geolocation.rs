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

fn locate(url: &str, key: &str, aps: &[AccessPoint]) -> Result<Value, String> {
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
    Ok(json!({"lat": lat, "lng": lng, "accuracy": v["accuracy"].as_f64()}))
}

impl Collector for Geolocation {
    fn name(&self) -> &'static str {
        "geolocation"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let Some(settings) = &ctx.settings.geolocation else {
            return Ok(json!({
                "location": "unknown",
                "evidence": ["geolocation is off: no [collectors.geolocation] url and api_key in agent.toml"],
            }));
        };
        let aps = match access_points(ctx.host) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                return Ok(
                    json!({"location": "unknown", "evidence": ["NetworkManager sees no Wi-Fi access points"]}),
                );
            }
            Err(e) => {
                return Ok(
                    json!({"location": "unknown", "evidence": [format!("Wi-Fi access points unavailable: {e}")]}),
                );
            }
        };
        let macs: BTreeSet<&str> = aps.iter().map(|a| a.mac.as_str()).collect();
        if let Some(last) = ctx.cache.get(CACHE_KEY) {
            let before: BTreeSet<&str> = last["macs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let kept = before.intersection(&macs).count() as f64;
            if !before.is_empty() && kept / before.len() as f64 >= SAME_PLACE {
                return Ok(json!({
                    "location": last["location"],
                    "located_at": last["located_at"],
                    "evidence": [format!("reused: {kept} of the {} access points seen then are in sight", before.len())],
                }));
            }
        }
        match locate(&settings.url, &settings.api_key, &aps) {
            Ok(location) => {
                let located_at = penguindome_protocol::envelope::utc::format(&ctx.now);
                ctx.cache.put(
                    CACHE_KEY,
                    &json!({"macs": macs, "location": location, "located_at": located_at}),
                );
                Ok(json!({
                    "location": location,
                    "located_at": located_at,
                    "evidence": [format!("{} access points from NetworkManager sent to {}", aps.len(), settings.url)],
                }))
            }
            Err(e) => Ok(
                json!({"location": "unknown", "evidence": [format!("geolocation service failed: {e}")]}),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::{CollectorSettings, MemoryCache};
    use penguindome_protocol::agent_config::GeolocationSettings;
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
        let v = Geolocation
            .collect(&Context::new(&host, &cache).with_settings(&settings))
            .unwrap();
        assert_eq!(v["location"]["lat"], 52.52);
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
        let v = Geolocation
            .collect(&Context::new(&host, &cache).with_settings(&settings))
            .unwrap();
        assert_eq!(v["location"]["lng"], 13.405);
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
        assert!(v["evidence"][0].as_str().unwrap().contains("off"));

        let (url, _) = fake_service(r#"{"error": "bad key"}"#);
        let settings = CollectorSettings {
            geolocation: Some(GeolocationSettings {
                url,
                api_key: "x".into(),
            }),
            ..Default::default()
        };
        let v = Geolocation
            .collect(&Context::new(&host, &MemoryCache::default()).with_settings(&settings))
            .unwrap();
        assert_eq!(v["location"], "unknown");
        assert!(
            v["evidence"][0]
                .as_str()
                .unwrap()
                .contains("no location.lat"),
            "{v}"
        );
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
