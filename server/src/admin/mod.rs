//! pdome-admin subcommands, one module per group.

pub mod access;
pub mod account;
pub mod actions;
pub mod clients;
pub mod command;
pub mod configure;
pub mod init;
pub mod issues;
pub mod keys;
pub mod listeners;
pub mod packages;
pub mod parameters;
pub mod patch;
pub mod progress;
pub mod prompt;
pub mod release;
pub mod secrets;
pub mod shared_release;
pub mod shell;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod wipe;
