//! pdome-admin subcommands, one module per group.

pub mod clients;
pub mod init;
pub mod prompt;
pub mod store;
