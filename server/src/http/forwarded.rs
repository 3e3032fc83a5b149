//! Client addresses behind a reverse proxy. A listener's `trusted_proxies`
//! names the proxies whose `X-Forwarded-For` is believed; for requests from
//! them, the client's address replaces the proxy's in the connection info,
//! so access rules, logs and recorded addresses all see the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::ApiFailure;

/// The header proxies such as nginx and HAProxy append the client to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies one listener trusts.
#[derive(Clone)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Trusts these networks.
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.into())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: `peer` itself unless it is a trusted proxy;
    /// then the right-most `X-Forwarded-For` entry that is not a trusted
    /// proxy (entries further left were written by the client and prove
    /// nothing, so they are not even read). `Err` names a malformed entry
    /// that the walk reached.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, String> {
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let entries: Vec<&[u8]> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .collect();
        let mut client = peer;
        for raw in entries.iter().rev() {
            let entry = String::from_utf8_lossy(raw);
            let entry = entry.trim();
            let ip = parse_entry(entry).ok_or_else(|| {
                format!("the proxy at {peer} sent an X-Forwarded-For entry {entry:?} that is not an address")
            })?;
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        Ok(client)
    }
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, and with a
/// port `192.0.2.1:4711` or `[2001:db8::1]:4711`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// Middleware: puts the client's address into the request's connection
/// info; a trusted proxy's malformed header is refused rather than guessed.
pub async fn layer(
    State(trusted): State<TrustedProxies>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(req).await;
    };
    match trusted.client_address(peer.ip(), req.headers()) {
        Ok(client) if client == peer.ip() => {}
        // The client's port is unknown; 0 says so.
        Ok(client) => {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
        Err(e) => {
            // Info, not warn: a client can provoke this through a proxy
            // that forwards its header unchanged.
            log::info!(peer:% = peer.ip(); "request refused: {e}");
            return ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "bad_forwarded_for",
                format!("{e}; check the reverse proxy's configuration"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let t = TrustedProxies::new(&[
            "127.0.0.1/32".parse().unwrap(),
            "10.9.0.0/16".parse().unwrap(),
        ]);
        let proxy = ip("127.0.0.1");
        let client = |values: &[&str]| t.client_address(proxy, &headers(values));
        let spoof = headers(&["10.1.2.3"]);
        // Not a proxy: the header is ignored.
        assert_eq!(
            t.client_address(ip("192.0.2.7"), &spoof),
            Ok(ip("192.0.2.7"))
        );
        // A proxy, also as an IPv4-mapped IPv6 peer: the client it names.
        assert_eq!(t.client_address(proxy, &spoof), Ok(ip("10.1.2.3")));
        assert_eq!(
            t.client_address(ip("::ffff:127.0.0.1"), &spoof),
            Ok(ip("10.1.2.3"))
        );
        for (values, expected) in [
            // The client's own entries, left of what the proxies wrote, are
            // never taken; a chain of trusted proxies is walked.
            (&["10.1.2.3, 198.51.100.4", "10.9.0.5"][..], "198.51.100.4"),
            // Ports and brackets, as some proxies write them.
            (&["198.51.100.4:4711"][..], "198.51.100.4"),
            (&["[2001:db8::1]:80"][..], "2001:db8::1"),
            (&["[2001:db8::1]"][..], "2001:db8::1"),
            (&["::ffff:198.51.100.4"][..], "198.51.100.4"),
            // Junk the client wrote is never read.
            (&["junk, 198.51.100.4"][..], "198.51.100.4"),
            (&[", 198.51.100.4"][..], "198.51.100.4"),
            // Only proxies in the chain: the left-most.
            (&["10.9.0.1, 10.9.0.2"][..], "10.9.0.1"),
            // No header: the proxy itself asked.
            (&[][..], "127.0.0.1"),
        ] {
            assert_eq!(client(values), Ok(ip(expected)), "{values:?}");
        }
        let mut raw = HeaderMap::new();
        raw.append(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.4").unwrap(),
        );
        assert_eq!(t.client_address(proxy, &raw), Ok(ip("198.51.100.4")));
        // Garbage from a proxy is an error, not a guess.
        let e = client(&["198.51.100.4, unknown"]).unwrap_err();
        assert!(e.contains("unknown") && e.contains("127.0.0.1"), "{e}");
        assert!(client(&["198.51.100.4, "]).is_err());
    }
}
