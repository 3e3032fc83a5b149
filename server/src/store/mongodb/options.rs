//! The driver's options from the `[store]` configuration.

use std::time::Duration;

use mongodb::options::{ClientOptions, Credential, ServerAddress, Tls, TlsOptions};

use crate::config::MongoConfig;
use crate::store::{StoreError, StoreResult};

/// Builds the driver options from the configuration.
pub async fn client_options(
    config: &MongoConfig,
    config_dir: &std::path::Path,
) -> StoreResult<(ClientOptions, String, String)> {
    let bad = |m: String| StoreError::Backend(m);
    let mut opts = match &config.uri {
        Some(uri) => ClientOptions::parse(uri).await.map_err(|e| {
            bad(format!(
                "store.uri is not a usable MongoDB connection string: {e}"
            ))
        })?,
        None => {
            let hosts = config
                .hosts
                .iter()
                .map(|h| {
                    ServerAddress::parse(h).map_err(|e| {
                        bad(format!("store.hosts entry {h:?} is not host[:port]: {e}"))
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let mut o = ClientOptions::default();
            o.hosts = hosts;
            o
        }
    };
    if let Some(rs) = &config.replica_set {
        opts.repl_set_name = Some(rs.clone());
    }
    if let Some(user) = &config.username {
        let password = match &config.password_file {
            Some(p) => {
                let path = config_dir.join(p);
                let bytes =
                    crate::secrets::read_secret(&path).map_err(|e| bad(format!("{e:#}")))?;
                Some(
                    String::from_utf8_lossy(&bytes)
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                )
            }
            None => None,
        };
        let mut credential = Credential::default();
        credential.username = Some(user.clone());
        credential.password = password;
        opts.credential = Some(credential);
    }
    if config.tls || config.tls_ca_file.is_some() || config.tls_certificate_key_file.is_some() {
        let mut tls = TlsOptions::default();
        tls.ca_file_path = config.tls_ca_file.as_ref().map(|p| config_dir.join(p));
        tls.cert_key_file_path = config
            .tls_certificate_key_file
            .as_ref()
            .map(|p| config_dir.join(p));
        opts.tls = Some(Tls::Enabled(tls));
    }
    opts.server_selection_timeout = Some(config.server_selection_timeout);
    opts.connect_timeout = Some(config.server_selection_timeout.min(Duration::from_secs(10)));
    opts.app_name = Some("penguindome-server".into());
    let database = config
        .database
        .clone()
        .or_else(|| opts.default_database.clone())
        .unwrap_or_else(|| "penguindome".into());
    let target = match &config.uri {
        Some(_) => opts
            .hosts
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(","),
        None => config.hosts.join(","),
    };
    let target = format!("{target}/{database}");
    Ok((opts, database, target))
}
