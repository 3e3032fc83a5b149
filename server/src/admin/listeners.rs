//! `pdome-admin listeners`: the server's sockets, edited in server.toml with
//! its comments kept, and applied by `systemctl reload penguindome-server`
//! without disturbing the listeners that did not change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use comfy_table::{Table, presets::NOTHING};
use ipnet::IpNet;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::token::{certificate_pin, pin_text};
use serde::Serialize;
use toml_edit::{ArrayOfTables, DocumentMut, Item};

use crate::config::{
    AGENT_CONFIG_FILE, ListenerConfig, SERVER_CONFIG_FILE, ServerConfig, TlsFiles, parse_proxy_net,
};

/// `pdome-admin listeners …`.
#[derive(Debug, clap::Subcommand)]
pub enum ListenersCommand {
    /// Every listener: address, certificate (expiry, pin), proxies, deprecation.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Add a listener, with --tls self-signed HOST, --certificate F --key F,
    /// or --plain.
    Add {
        /// Its name, recorded with each client's last contact.
        name: String,
        /// Address and port to bind, e.g. 0.0.0.0:8443 or [::]:8443.
        #[arg(long)]
        address: SocketAddr,
        #[command(flatten)]
        tls: TlsArgs,
        /// A reverse proxy (address or network) whose X-Forwarded-For names
        /// the client; repeat for several.
        #[arg(long = "trusted-proxy", value_name = "ADDR", value_parser = parse_proxy_net)]
        trusted_proxies: Vec<IpNet>,
        /// Serve, but raise `deprecated-port` on clients that use it.
        #[arg(long)]
        deprecated: bool,
    },
    /// Remove a listener: on reload it stops accepting and finishes the
    /// requests in flight.
    Remove {
        /// The listener's name.
        name: String,
    },
    /// Change a listener; what is not given stays as it is.
    Set {
        /// The listener's name.
        name: String,
        /// A new address and port.
        #[arg(long)]
        address: Option<SocketAddr>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Replace the trusted proxies with these; repeat for several.
        #[arg(long = "trusted-proxy", value_name = "ADDR", value_parser = parse_proxy_net)]
        trusted_proxies: Vec<IpNet>,
        /// Trust no proxy's X-Forwarded-For any more.
        #[arg(long, conflicts_with = "trusted_proxies")]
        no_trusted_proxies: bool,
        /// Mark it as being retired.
        #[arg(long, conflicts_with = "no_deprecated")]
        deprecated: bool,
        /// No longer being retired.
        #[arg(long)]
        no_deprecated: bool,
        /// Replace the certificate agents pin without a renewal (they lose
        /// the server until their agent.toml changes).
        #[arg(long)]
        force: bool,
    },
}

/// How a listener speaks TLS.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// `self-signed HOST`: make a certificate for HOST, written to
    /// tls/NAME.crt and tls/NAME.key.
    #[arg(long, num_args = 2, value_names = ["self-signed", "HOST"], conflicts_with_all = ["certificate", "plain"])]
    tls: Option<Vec<String>>,
    /// A PEM certificate chain (with --key).
    #[arg(long, requires = "key", conflicts_with = "plain")]
    certificate: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, requires = "certificate")]
    key: Option<PathBuf>,
    /// Plain HTTP: behind a TLS-terminating proxy, or on loopback.
    #[arg(long)]
    plain: bool,
}

/// A TLS choice, read from [`TlsArgs`].
enum TlsChoice {
    Keep,
    SelfSigned(String),
    Files { certificate: PathBuf, key: PathBuf },
    Plain,
}

impl TlsArgs {
    fn choice(&self) -> anyhow::Result<TlsChoice> {
        Ok(
            match (&self.tls, &self.certificate, &self.key, self.plain) {
                (Some(words), ..) => match words.as_slice() {
                    [kind, host] if kind == "self-signed" && !host.is_empty() => {
                        TlsChoice::SelfSigned(host.clone())
                    }
                    _ => bail!(
                        "--tls takes `self-signed HOST`; for your own certificate use \
                     --certificate FILE --key FILE"
                    ),
                },
                (None, Some(c), Some(k), _) => TlsChoice::Files {
                    certificate: std::path::absolute(c)?,
                    key: std::path::absolute(k)?,
                },
                (None, None, None, true) => TlsChoice::Plain,
                _ => TlsChoice::Keep,
            },
        )
    }
}

/// A certificate to write next to server.toml before it names it.
struct NewCertificate {
    files: TlsFiles,
    cert_pem: String,
    key_pem: String,
}

/// What a command changes: server.toml's new text and any certificate.
struct Edit {
    text: String,
    certificate: Option<NewCertificate>,
    summary: String,
}

/// Runs `pdome-admin listeners`.
pub fn run(config_dir: &Path, cmd: ListenersCommand) -> anyhow::Result<()> {
    let config = ServerConfig::load(config_dir)?;
    let path = config_dir.join(SERVER_CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let edit = match cmd {
        ListenersCommand::List { json } => return list(&config, json),
        ListenersCommand::Add {
            name,
            address,
            tls,
            trusted_proxies,
            deprecated,
        } => {
            let l = ListenerConfig {
                name,
                address,
                tls: None,
                trusted_proxies,
                deprecated,
            };
            add(&config, &text, l, tls.choice()?)?
        }
        ListenersCommand::Remove { name } => remove(&config, &text, &name)?,
        ListenersCommand::Set {
            name,
            address,
            tls,
            trusted_proxies,
            no_trusted_proxies,
            deprecated,
            no_deprecated,
            force,
        } => {
            let tls = tls.choice()?;
            if !force && changes_certificate(&tls) && pinned_by_agents(&config, &name) {
                bail!(
                    "agents pin listener {name:?}'s certificate: renew it with `pdome-admin tls \
                     renew --listener {name}` so they learn the new one first, or pass --force \
                     (they then cannot report until their agent.toml changes)"
                );
            }
            let mut l = find(&config, &name)?.clone();
            l.address = address.unwrap_or(l.address);
            if no_trusted_proxies || !trusted_proxies.is_empty() {
                l.trusted_proxies = trusted_proxies;
            }
            l.deprecated = (l.deprecated || deprecated) && !no_deprecated;
            set(&config, &text, l, tls)?
        }
    };
    save(&config, &path, edit)
}

fn changes_certificate(tls: &TlsChoice) -> bool {
    matches!(tls, TlsChoice::SelfSigned(_) | TlsChoice::Files { .. })
}

/// Whether agents pin the certificate listener `name` presents now.
fn pinned_by_agents(config: &ServerConfig, name: &str) -> bool {
    let Some(l) = config.listeners.iter().find(|l| l.name == name) else {
        return false;
    };
    let pin = certificate_info(config, l).sha256;
    pin.is_some() && pin == agents_pin(config)
}

fn find<'a>(config: &'a ServerConfig, name: &str) -> anyhow::Result<&'a ListenerConfig> {
    config
        .listeners
        .iter()
        .find(|l| l.name == name)
        .with_context(|| {
            format!("no listener is named {name:?}; `pdome-admin listeners list` shows them")
        })
}

fn add(
    config: &ServerConfig,
    text: &str,
    mut l: ListenerConfig,
    tls: TlsChoice,
) -> anyhow::Result<Edit> {
    check_name(&l.name)?;
    if config.listeners.iter().any(|x| x.name == l.name) {
        bail!(
            "a listener is already named {:?}; change it with `pdome-admin listeners set`",
            l.name
        );
    }
    if matches!(tls, TlsChoice::Keep) {
        bail!(
            "say how listener {:?} speaks: --tls self-signed HOST, --certificate FILE --key FILE, \
             or --plain",
            l.name
        );
    }
    let certificate = apply_tls(&mut l, tls)?;
    let mut doc = document(text)?;
    listeners_mut(&mut doc)?.push(table_of(&l)?);
    Ok(Edit {
        text: doc.to_string(),
        certificate,
        summary: format!("Added listener {:?} on {}.", l.name, describe(&l)),
    })
}

fn remove(config: &ServerConfig, text: &str, name: &str) -> anyhow::Result<Edit> {
    let l = find(config, name)?;
    if config.listeners.len() == 1 {
        bail!("{name:?} is the only listener; add another before removing it");
    }
    let mut doc = document(text)?;
    let tables = listeners_mut(&mut doc)?;
    let index = position(tables, name)?;
    tables.remove(index);
    let mut summary = format!("Removed listener {name:?} ({}).", l.address);
    if serves_site_url(config, l) {
        summary.push_str(&format!(
            "\nwarning: agents reach the server at {} (server.url), which this listener \
             served; they cannot report until that address answers again.",
            config.server.url
        ));
    }
    Ok(Edit {
        text: doc.to_string(),
        certificate: None,
        summary,
    })
}

fn set(
    config: &ServerConfig,
    text: &str,
    mut l: ListenerConfig,
    tls: TlsChoice,
) -> anyhow::Result<Edit> {
    let certificate = apply_tls(&mut l, tls)?;
    let mut doc = document(text)?;
    let tables = listeners_mut(&mut doc)?;
    let index = position(tables, &l.name)?;
    let mut table = table_of(&l)?;
    // The comments above the table stay with it.
    let old = tables.get(index).expect("a found index");
    *table.decor_mut() = old.decor().clone();
    *tables.get_mut(index).expect("a found index") = table;
    let before = find(config, &l.name)?;
    let mut summary = format!("Listener {:?} is now on {}.", l.name, describe(&l));
    if before.address != l.address && serves_site_url(config, before) {
        summary.push_str(&format!(
            "\nwarning: agents reach the server at {} (server.url), which this listener \
             served from {}; make sure that address still answers.",
            config.server.url, before.address
        ));
    }
    Ok(Edit {
        text: doc.to_string(),
        certificate,
        summary,
    })
}

/// Listener names go into file names (tls/NAME.crt) and logs.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !ok {
        bail!(
            "listener name {name:?}: use 1 to 32 letters, digits, '-', '_' or '.', \
             not starting with '.'"
        );
    }
    Ok(())
}

/// Applies the TLS choice to `l`; a self-signed certificate is made here
/// and written only once the whole edit is valid.
fn apply_tls(l: &mut ListenerConfig, tls: TlsChoice) -> anyhow::Result<Option<NewCertificate>> {
    match tls {
        TlsChoice::Keep => Ok(None),
        TlsChoice::Plain => {
            l.tls = None;
            Ok(None)
        }
        TlsChoice::Files { certificate, key } => {
            crate::tls::server_config(&certificate, &key)?;
            l.tls = Some(TlsFiles { certificate, key });
            Ok(None)
        }
        TlsChoice::SelfSigned(host) => {
            check_name(&l.name)?;
            let made = crate::tls::self_signed(&[host])?;
            let files = TlsFiles {
                certificate: format!("tls/{}.crt", l.name).into(),
                key: format!("tls/{}.key", l.name).into(),
            };
            l.tls = Some(files.clone());
            Ok(Some(NewCertificate {
                files,
                cert_pem: made.cert_pem,
                key_pem: made.key_pem,
            }))
        }
    }
}

fn document(text: &str) -> anyhow::Result<DocumentMut> {
    text.parse()
        .context("server.toml is not TOML pdome-admin can edit; fix it by hand first")
}

fn listeners_mut(doc: &mut DocumentMut) -> anyhow::Result<&mut ArrayOfTables> {
    doc.entry("listener")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .context("server.toml: `listener` must be [[listener]] tables")
}

fn position(tables: &ArrayOfTables, name: &str) -> anyhow::Result<usize> {
    tables
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
        .with_context(|| format!("server.toml holds no [[listener]] named {name:?}"))
}

/// The listener as a [[listener]] table, `tls` inline as in the examples.
fn table_of(l: &ListenerConfig) -> anyhow::Result<toml_edit::Table> {
    let text = toml::to_string(l).context("cannot write the listener as TOML")?;
    let doc: DocumentMut = text.parse().context("cannot read back the listener")?;
    let mut table = doc.as_table().clone();
    if let Some(Item::Table(tls)) = table.remove("tls") {
        let mut inline = tls.into_inline_table();
        inline.fmt();
        table.insert("tls", Item::Value(inline.into()));
    }
    table.set_implicit(false);
    Ok(table)
}

fn describe(l: &ListenerConfig) -> String {
    let scheme = if l.tls.is_some() { "https" } else { "http" };
    let mut s = format!("{scheme}://{}", l.address);
    if !l.trusted_proxies.is_empty() {
        let nets: Vec<String> = l.trusted_proxies.iter().map(IpNet::to_string).collect();
        s.push_str(&format!(
            ", trusting X-Forwarded-For from {}",
            nets.join(", ")
        ));
    }
    if l.deprecated {
        s.push_str(", deprecated");
    }
    s
}

/// Whether `l` answers at server.url's port (what agents use).
fn serves_site_url(config: &ServerConfig, l: &ListenerConfig) -> bool {
    url::Url::parse(&config.server.url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        == Some(l.address.port())
}

/// Checks the new server.toml as the server will read it, then writes the
/// certificate and the file, keeping server.toml's owner and mode.
fn save(config: &ServerConfig, path: &Path, edit: Edit) -> anyhow::Result<()> {
    let mut new = ServerConfig::parse(&edit.text, path)?;
    new.config_dir = config.config_dir.clone();
    if let Some(c) = &edit.certificate {
        write_certificate(config, c)?;
    }
    for l in &new.listeners {
        if let Some(t) = &l.tls {
            crate::tls::server_config(&new.config_path(&t.certificate), &new.config_path(&t.key))
                .with_context(|| format!("TLS for listener {:?}", l.name))?;
        }
    }
    write_keeping_owner(path, edit.text.as_bytes())?;
    println!("{}", edit.summary);
    warn_about(&new);
    println!(
        "Apply it with `systemctl reload penguindome-server` (or SIGHUP): listeners that did \
         not change keep their connections."
    );
    Ok(())
}

fn write_certificate(config: &ServerConfig, c: &NewCertificate) -> anyhow::Result<()> {
    let cert = config.config_path(&c.files.certificate);
    let key = config.config_path(&c.files.key);
    crate::secrets::write_file(&cert, c.cert_pem.as_bytes(), 0o644)?;
    write_server_secret(&key, &c.key_pem)?;
    println!("Wrote a self-signed certificate to {}.", cert.display());
    Ok(())
}

/// Writes a secret the server reads (a listener's key, the signing key):
/// root's, and readable by the server's user, as init arranges.
pub(super) fn write_server_secret(path: &Path, pem: &str) -> anyhow::Result<()> {
    crate::secrets::write_secret(path, pem.as_bytes())?;
    if let Some((_, gid)) = super::account::service_account()? {
        super::account::share_with_group(path, gid, 0o640)?;
    }
    Ok(())
}

pub(super) fn write_keeping_owner(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::secrets::write_file(path, data, meta.permissions().mode() & 0o7777)?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
    )
    .with_context(|| format!("cannot give {} back its owner", path.display()))
}

/// Warnings an administrator should see after any change.
fn warn_about(config: &ServerConfig) {
    let pinned = agents_pin(config);
    for l in &config.listeners {
        if l.tls.is_none() && !l.address.ip().is_loopback() && l.trusted_proxies.is_empty() {
            eprintln!(
                "warning: listener {:?} speaks plain HTTP on {}: agents refuse it unless \
                 agent.toml sets allow_plain_http; put TLS in front of it or use --tls.",
                l.name, l.address
            );
        }
        let info = certificate_info(config, l);
        if let (Some(pinned), Some(pin)) = (&pinned, &info.sha256)
            && pinned != pin
        {
            eprintln!(
                "note: agents trust only the certificate in agent.toml; listener {:?} presents \
                 another, so agents cannot report through it.",
                l.name
            );
        }
    }
}

/// The certificate pin agents hold, if agent.toml pins one (root reads it).
pub(super) fn agents_pin(config: &ServerConfig) -> Option<String> {
    let agent = AgentConfig::load(&config.config_dir.join(AGENT_CONFIG_FILE)).ok()?;
    certificate_pin(agent.ca_certificate.as_deref()?).map(|p| pin_text(&p))
}

/// One listener as `list` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    address: SocketAddr,
    scheme: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<PathBuf>,
    #[serde(flatten)]
    info: CertificateInfo,
    trusted_proxies: Vec<IpNet>,
    deprecated: bool,
}

/// What the listener's certificate file says.
#[derive(Debug, Default, Serialize)]
struct CertificateInfo {
    /// Expiry, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after: Option<String>,
    /// SHA-256 of the certificate, as enrollment tokens pin it.
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// Why the file could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

fn certificate_info(config: &ServerConfig, l: &ListenerConfig) -> CertificateInfo {
    let Some(t) = &l.tls else {
        return CertificateInfo::default();
    };
    let path = config.config_path(&t.certificate);
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) => {
            return CertificateInfo {
                problem: Some(format!("cannot read {}: {e}", path.display())),
                ..Default::default()
            };
        }
    };
    match crate::audit::certificates::not_after(pem.as_bytes()) {
        Ok(t) => CertificateInfo {
            not_after: Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            sha256: certificate_pin(&pem).map(|p| pin_text(&p)),
            problem: None,
        },
        Err(e) => CertificateInfo {
            problem: Some(format!("{} is not a PEM certificate: {e}", path.display())),
            ..Default::default()
        },
    }
}

fn list(config: &ServerConfig, json: bool) -> anyhow::Result<()> {
    let rows: Vec<Listed> = config
        .listeners
        .iter()
        .map(|l| Listed {
            name: l.name.clone(),
            address: l.address,
            scheme: if l.tls.is_some() { "https" } else { "http" },
            certificate: l.tls.as_ref().map(|t| t.certificate.clone()),
            info: certificate_info(config, l),
            trusted_proxies: l.trusted_proxies.clone(),
            deprecated: l.deprecated,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header([
        "NAME",
        "ADDRESS",
        "SCHEME",
        "CERTIFICATE EXPIRES",
        "TRUSTED PROXIES",
        "DEPRECATED",
    ]);
    for r in rows {
        let expires = match (&r.info.not_after, &r.info.problem) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => "-".into(),
        };
        let proxies: Vec<String> = r.trusted_proxies.iter().map(IpNet::to_string).collect();
        table.add_row([
            r.name,
            r.address.to_string(),
            r.scheme.to_string(),
            expires,
            if proxies.is_empty() {
                "-".into()
            } else {
                proxies.join(", ")
            },
            if r.deprecated { "yes" } else { "no" }.to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(name: &str, port: u16) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: Some(TlsFiles {
                certificate: "tls/a.crt".into(),
                key: "tls/a.key".into(),
            }),
            trusted_proxies: vec![parse_proxy_net("10.0.0.1").unwrap()],
            deprecated: true,
        }
    }

    #[test]
    fn edits_keep_comments_and_read_back_as_written() {
        let text = "# top comment\n[server]\nurl = \"https://x\"\n\n# the main one\n[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:1\"\n";
        let mut doc = document(text).unwrap();
        listeners_mut(&mut doc)
            .unwrap()
            .push(table_of(&listener("b", 2)).unwrap());
        let out = doc.to_string();
        assert!(out.starts_with("# top comment\n"), "{out}");
        assert!(out.contains("# the main one\n[[listener]]"), "{out}");
        assert!(
            out.contains("tls = { certificate = \"tls/a.crt\", key = \"tls/a.key\" }"),
            "{out}"
        );
        let back: toml::Value = toml::from_str(&out).unwrap();
        let b: ListenerConfig = back["listener"][1].clone().try_into().unwrap();
        assert_eq!(b, listener("b", 2));
        assert_eq!(position(listeners_mut(&mut doc).unwrap(), "b").unwrap(), 1);
    }

    #[test]
    fn names_are_safe_in_file_names() {
        for good in ["main", "lan-2", "v6_public", "a.b"] {
            check_name(good).unwrap();
        }
        for bad in ["", "../x", ".hidden", "a/b", "x y", &"n".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
