//! The PenguinDome server: configuration, storage, HTTP endpoints and the
//! administration commands behind `pdome-admin`.

pub mod access_rules;
pub mod admin;
pub mod audit;
pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod keycache;
pub mod listeners;
pub mod man;
pub mod metrics;
pub mod release;
pub mod renewal;
pub mod sealing;
pub mod secrets;
pub mod serve;
pub mod shares;
pub mod shell;
pub mod signing;
pub mod store;
pub mod tls;
pub mod web;

pub use penguindome_protocol::files::host_name;
