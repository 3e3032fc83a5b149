//! The PenguinDome server: configuration, storage, HTTP endpoints and the
//! administration commands behind `pdome-admin`.

pub mod access_rules;
pub mod admin;
pub mod audit;
pub mod config;
pub mod http;
pub mod keycache;
pub mod release;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod tls;

/// This machine's host name (`localhost` when it has none).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
