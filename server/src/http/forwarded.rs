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
    /// nothing). `Err` names a malformed entry.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, String> {
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let mut entries = Vec::new();
        for value in headers.get_all(FORWARDED_FOR) {
            let text = value
                .to_str()
                .map_err(|_| "X-Forwarded-For is not ASCII".to_string())?;
            entries.extend(text.split(',').map(str::trim));
        }
        let mut client = peer;
        for entry in entries.iter().rev() {
            let ip = parse_entry(entry)
                .ok_or_else(|| format!("X-Forwarded-For entry {entry:?} is not an address"))?;
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
            log::warn!(peer:% = peer.ip(); "request refused: {e}");
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
        let spoof = headers(&["10.1.2.3"]);
        // Not a proxy: the header is ignored.
        assert_eq!(
            t.client_address(ip("192.0.2.7"), &spoof),
            Ok(ip("192.0.2.7"))
        );
        // A proxy: the client it names.
        assert_eq!(
            t.client_address(ip("127.0.0.1"), &spoof),
            Ok(ip("10.1.2.3"))
        );
        assert_eq!(
            t.client_address(ip("::ffff:127.0.0.1"), &spoof),
            Ok(ip("10.1.2.3"))
        );
        // The client's own entries, left of what the proxies wrote, are
        // never taken, and a chain of trusted proxies is walked.
        let chain = headers(&["10.1.2.3, 198.51.100.4", "10.9.0.5"]);
        assert_eq!(
            t.client_address(ip("127.0.0.1"), &chain),
            Ok(ip("198.51.100.4"))
        );
        // Ports and brackets, as some proxies write them.
        for entry in [
            "198.51.100.4:4711",
            "[2001:db8::1]:80",
            "[2001:db8::1]",
            "::ffff:198.51.100.4",
        ] {
            let got = t
                .client_address(ip("127.0.0.1"), &headers(&[entry]))
                .unwrap();
            assert!(
                got == ip("198.51.100.4") || got == ip("2001:db8::1"),
                "{entry}: {got}"
            );
        }
        // No header: the proxy itself asked.
        assert_eq!(
            t.client_address(ip("127.0.0.1"), &HeaderMap::new()),
            Ok(ip("127.0.0.1"))
        );
        // Only proxies in the chain: the left-most.
        assert_eq!(
            t.client_address(ip("127.0.0.1"), &headers(&["10.9.0.1, 10.9.0.2"])),
            Ok(ip("10.9.0.1"))
        );
        // Garbage from a proxy is an error, not a guess.
        let e = t
            .client_address(ip("127.0.0.1"), &headers(&["198.51.100.4, unknown"]))
            .unwrap_err();
        assert!(e.contains("unknown"), "{e}");
    }
}
