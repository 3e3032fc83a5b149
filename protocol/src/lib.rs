//! Wire protocol shared by the PenguinDome agent and server: the signed
//! envelope, OpenPGP keys, and the request and response bodies.

pub mod actions;
pub mod agent_config;
pub mod config_file;
pub mod envelope;
pub mod facts;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod key_rotation;
pub mod keys;
pub mod sealing;
pub mod shell;
pub mod token;
pub mod wire;

pub use envelope::{
    Envelope, EnvelopeError, Freshness, SERVER_SENDER, SIGNATURE_HEADER, Signed, WireSignature,
};
pub use keys::{
    DetachedSignature, KeyError, PublicKey, SecretKey, SignatureError, armored_keyring,
};
pub use wire::{API_PREFIX, paths};

#[cfg(feature = "cli-docs")]
pub mod cli_docs;
#[cfg(feature = "logging")]
pub mod logging;
