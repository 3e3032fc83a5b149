//! `pdome-admin init`: a new server's configuration, keys, certificate,
//! agent configuration and empty store.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use penguindome_protocol::SecretKey;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::envelope::random_bytes;
use penguindome_protocol::logging::LogTarget;
use sha2::{Digest, Sha256};

use super::prompt::Prompter;
use crate::config::{
    AGENT_CONFIG_FILE, AgentDefaults, AuditConfig, ListenerConfig, LoggingConfig, MongoConfig,
    SERVER_CONFIG_FILE, ServerConfig, ServerSection, StoreConfig, TlsFiles,
};

/// Where init keeps the MongoDB password (0600, in the config directory).
const MONGODB_PASSWORD_FILE: &str = "mongodb-password";
use crate::secrets::{write_file, write_secret};

/// Options of `pdome-admin init`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InitArgs {
    /// Take every answer from flags; never prompt.
    #[arg(long)]
    pub non_interactive: bool,
    /// Where the database and state go.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address and port the server binds, e.g. 0.0.0.0:8443.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// URL clients use to reach the server, e.g. https://pd.example.com:8443.
    #[arg(long)]
    pub url: Option<String>,
    /// Serve plain HTTP (only behind a TLS-terminating proxy).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub no_tls: bool,
    /// Use this PEM certificate instead of a generated self-signed one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate agents should trust for --tls-cert (default: the
    /// system's roots).
    #[arg(long, requires = "tls_cert")]
    pub agent_ca: Option<PathBuf>,
    /// Store backend: sqlite (embedded) or mongodb.
    #[arg(long, value_parser = ["sqlite", "mongodb"])]
    pub store: Option<String>,
    /// MongoDB connection string (instead of --mongodb-host and the rest).
    #[arg(long, conflicts_with = "mongodb_host")]
    pub mongodb_uri: Option<String>,
    /// MongoDB server or replica set member, host[:port]; repeat for each.
    #[arg(long)]
    pub mongodb_host: Vec<String>,
    /// MongoDB replica set name.
    #[arg(long)]
    pub mongodb_replica_set: Option<String>,
    /// MongoDB database name (default penguindome).
    #[arg(long)]
    pub mongodb_database: Option<String>,
    /// MongoDB user name.
    #[arg(long)]
    pub mongodb_username: Option<String>,
    /// File holding the MongoDB password (copied into the config directory, 0600).
    #[arg(long, requires = "mongodb_username")]
    pub mongodb_password_file: Option<PathBuf>,
    /// Connect to MongoDB with TLS.
    #[arg(long)]
    pub mongodb_tls: bool,
    /// PEM CA file for MongoDB's TLS certificate.
    #[arg(long)]
    pub mongodb_tls_ca_file: Option<PathBuf>,
    /// Log target: auto, journal or stderr.
    #[arg(long)]
    pub log_target: Option<LogTarget>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long)]
    pub log_level: Option<String>,
    /// How often agents collect, e.g. 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub collect_interval: Option<Duration>,
    /// How often agents retry submitting, e.g. 1m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub submit_interval: Option<Duration>,
    /// Who receives the issues audit.
    #[arg(long)]
    pub audit_email: Option<String>,
    /// Replace an existing configuration (new keys: enrolled agents must be
    /// given the new agent.toml).
    #[arg(long)]
    pub force: bool,
    /// Also accept a site-wide enrollment credential and the shared
    /// repository user `agent`, as sites set up before enrollment tokens
    /// did. Deprecated; kept so that route stays tested.
    #[arg(long, hide = true)]
    pub shared_credential: bool,
}

enum Tls {
    SelfSigned,
    Provided {
        cert: PathBuf,
        key: PathBuf,
        ca: Option<PathBuf>,
    },
    Off,
}

/// The store chosen, and a MongoDB password to keep in a 0600 file.
enum StoreChoice {
    Sqlite,
    Mongo {
        config: Box<MongoConfig>,
        password: Option<String>,
    },
}

struct Answers {
    listen: SocketAddr,
    tls: Tls,
    store: StoreChoice,
    url: String,
    log_target: LogTarget,
    log_level: String,
    collect_interval: Duration,
    submit_interval: Duration,
    audit_email: Option<String>,
}

fn default_url(listen: &SocketAddr, tls: bool) -> String {
    let host = if listen.ip().is_unspecified() {
        crate::host_name()
    } else {
        match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    format!(
        "{}://{host}:{}",
        if tls { "https" } else { "http" },
        listen.port()
    )
}

fn check_url(u: &str) -> Result<String, String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!(
            "{u:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(u.trim_end_matches('/').to_string())
}

fn check_level(l: &str) -> Result<String, String> {
    l.parse::<log::LevelFilter>()
        .map(|_| l.to_ascii_lowercase())
        .map_err(|_| format!("{l:?} is not error, warn, info, debug or trace"))
}

/// The TLS choice the flags make, if they make one.
fn tls_from_flags(args: &InitArgs) -> Option<Tls> {
    if args.no_tls {
        Some(Tls::Off)
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(Tls::Provided {
            cert: cert.clone(),
            key: key.clone(),
            ca: args.agent_ca.clone(),
        })
    } else {
        None
    }
}

/// The MongoDB settings the flags give, or None for the embedded store.
fn mongo_from_flags(args: &InitArgs) -> anyhow::Result<StoreChoice> {
    let mongo_flags = args.mongodb_uri.is_some() || !args.mongodb_host.is_empty();
    match args.store.as_deref() {
        Some("mongodb") => {}
        Some(_) if mongo_flags => bail!("--mongodb-uri and --mongodb-host need --store mongodb"),
        _ if mongo_flags => {}
        _ => return Ok(StoreChoice::Sqlite),
    }
    let password = args
        .mongodb_password_file
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
                .with_context(|| format!("cannot read {}", p.display()))
        })
        .transpose()?;
    let config = MongoConfig {
        uri: args.mongodb_uri.clone(),
        hosts: args.mongodb_host.clone(),
        replica_set: args.mongodb_replica_set.clone(),
        database: args.mongodb_database.clone(),
        username: args.mongodb_username.clone(),
        password_file: password
            .as_ref()
            .map(|_| PathBuf::from(MONGODB_PASSWORD_FILE)),
        tls: args.mongodb_tls,
        tls_ca_file: args.mongodb_tls_ca_file.clone(),
        tls_certificate_key_file: None,
        ..MongoConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(StoreChoice::Mongo {
        config: Box::new(config),
        password,
    })
}

/// Asks the MongoDB questions the original's setup asked.
fn ask_mongo<R: BufRead, W: Write>(p: &mut Prompter<R, W>) -> anyhow::Result<StoreChoice> {
    let mut hosts = Vec::new();
    loop {
        let question = if hosts.is_empty() {
            "Database host[:port] (port 27017 if left out)"
        } else {
            "Another replica set member host[:port] (Enter when done)"
        };
        let default = if hosts.is_empty() {
            Some("localhost")
        } else {
            Some("")
        };
        let h = p.parsed(question, default, check_host)?;
        if h.is_empty() {
            break;
        }
        hosts.push(h);
    }
    let replica_set =
        Some(p.text("Replica set name (empty: none)", Some(""))?).filter(|s| !s.is_empty());
    let database = p.parsed("Database name", Some("penguindome"), check_database)?;
    let username = Some(p.text("Database username (empty: no authentication)", Some(""))?)
        .filter(|s| !s.is_empty());
    let password = match &username {
        Some(_) => Some(p.secret("Database password")?),
        None => None,
    };
    let tls = p.yes_no("Connect to the database with TLS?", false)?;
    let tls_ca_file = if tls {
        p.parsed(
            "CA file for the database's certificate (empty: system roots)",
            Some(""),
            optional_pem_file,
        )?
    } else {
        None
    };
    let config = MongoConfig {
        uri: None,
        hosts,
        replica_set,
        database: Some(database),
        username,
        password_file: password
            .as_ref()
            .map(|_| PathBuf::from(MONGODB_PASSWORD_FILE)),
        tls,
        tls_ca_file,
        tls_certificate_key_file: None,
        ..MongoConfig::default()
    };
    Ok(StoreChoice::Mongo {
        config: Box::new(config),
        password,
    })
}

fn from_flags(args: &InitArgs) -> anyhow::Result<Answers> {
    let listen = args
        .listen
        .context("--non-interactive needs --listen ADDR:PORT")?;
    let url = check_url(
        args.url
            .as_deref()
            .context("--non-interactive needs --url URL")?,
    )
    .map_err(anyhow::Error::msg)?;
    let tls = tls_from_flags(args).unwrap_or(Tls::SelfSigned);
    Ok(Answers {
        listen,
        tls,
        store: mongo_from_flags(args)?,
        url,
        log_target: args.log_target.unwrap_or_default(),
        log_level: check_level(args.log_level.as_deref().unwrap_or("info"))
            .map_err(anyhow::Error::msg)?,
        collect_interval: args.collect_interval.unwrap_or(Duration::from_secs(300)),
        submit_interval: args.submit_interval.unwrap_or(Duration::from_secs(60)),
        audit_email: args
            .audit_email
            .as_deref()
            .map(check_email)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    })
}

fn ask<R: BufRead, W: Write>(args: &InitArgs, p: &mut Prompter<R, W>) -> anyhow::Result<Answers> {
    let listen = match args.listen {
        Some(l) => l,
        None => p.parsed(
            "Address and port the server listens on",
            Some("0.0.0.0:8443"),
            |a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| format!("{a:?} is not ADDR:PORT, e.g. 0.0.0.0:8443"))
            },
        )?,
    };
    let tls = ask_tls(args, p)?;
    let store =
        if args.store.is_some() || args.mongodb_uri.is_some() || !args.mongodb_host.is_empty() {
            mongo_from_flags(args)?
        } else {
            let backend = p.parsed(
                "Store backend (sqlite: embedded; mongodb)",
                Some("sqlite"),
                |a| match a {
                    "sqlite" | "mongodb" => Ok(a.to_string()),
                    _ => Err("answer sqlite or mongodb".into()),
                },
            )?;
            if backend == "mongodb" {
                ask_mongo(p)?
            } else {
                StoreChoice::Sqlite
            }
        };
    let log_target = match args.log_target {
        Some(t) => t,
        None => p.parsed("Log target (auto, journal, stderr)", Some("auto"), |a| {
            a.parse::<LogTarget>()
        })?,
    };
    let log_level = match &args.log_level {
        Some(l) => check_level(l).map_err(anyhow::Error::msg)?,
        None => p.parsed("Log level", Some("info"), check_level)?,
    };
    let url = match &args.url {
        Some(u) => check_url(u).map_err(anyhow::Error::msg)?,
        None => {
            let d = default_url(&listen, !matches!(tls, Tls::Off));
            p.parsed("URL clients use to reach the server", Some(&d), check_url)?
        }
    };
    let duration =
        |a: &str| humantime::parse_duration(a).map_err(|e| format!("{a:?}: {e} (e.g. 5m, 90s)"));
    let collect_interval = match args.collect_interval {
        Some(d) => d,
        None => p.parsed("How often agents collect data", Some("5m"), duration)?,
    };
    let submit_interval = match args.submit_interval {
        Some(d) => d,
        None => p.parsed("How often agents retry submitting", Some("1m"), duration)?,
    };
    let audit_email = ask_email(args, p)?;
    Ok(Answers {
        listen,
        tls,
        store,
        url,
        log_target,
        log_level,
        collect_interval,
        submit_interval,
        audit_email,
    })
}

/// TLS: from the flags, or asked.
fn ask_tls<R: BufRead, W: Write>(args: &InitArgs, p: &mut Prompter<R, W>) -> anyhow::Result<Tls> {
    Ok(if let Some(tls) = tls_from_flags(args) {
        tls
    } else if p.yes_no("Should the server use TLS (HTTPS)?", true)? {
        let cert = p.parsed(
            "PEM certificate to use (leave empty for a self-signed certificate that agents pin)",
            Some(""),
            optional_pem_file,
        )?;
        match cert {
            None => Tls::SelfSigned,
            Some(cert) => {
                let key = p.parsed("Its PEM private key", None, |a| pem_file(a, "PRIVATE KEY"))?;
                let ca = p.parsed(
                    "CA certificate agents should trust (empty: system roots)",
                    Some(""),
                    optional_pem_file,
                )?;
                Tls::Provided { cert, key, ca }
            }
        }
    } else {
        Tls::Off
    })
}

/// The audit's address: from the flag, or asked; checked either way.
fn ask_email<R: BufRead, W: Write>(
    args: &InitArgs,
    p: &mut Prompter<R, W>,
) -> anyhow::Result<Option<String>> {
    Ok(match &args.audit_email {
        Some(e) => Some(check_email(e).map_err(anyhow::Error::msg)?),
        None => p.parsed(
            "Email address for the issues audit (empty: none)",
            Some(""),
            |a| match a {
                "" => Ok(None),
                a => check_email(a).map(Some),
            },
        )?,
    })
}

/// An address the audit can mail: `user@domain`.
fn check_email(a: &str) -> Result<String, String> {
    a.parse::<lettre::Address>()
        .map(|_| a.to_string())
        .map_err(|e| format!("{a:?} is not an email address ({e}); e.g. it-team@example.com"))
}

/// `host`, `host:port` or `[v6]:port`, as a MongoDB seed list names them;
/// empty ends the list.
fn check_host(a: &str) -> Result<String, String> {
    let invalid = || format!("{a:?} is not host[:port], e.g. db1.example.com:27017");
    let port = match a.strip_prefix('[') {
        Some(rest) => {
            let (_, after) = rest.split_once(']').ok_or_else(invalid)?;
            (!after.is_empty())
                .then(|| after.strip_prefix(':').ok_or_else(invalid))
                .transpose()?
        }
        // A bare IPv6 address has several colons and no port.
        None if a.matches(':').count() == 1 => a.rsplit_once(':').map(|(_, p)| p),
        None => None,
    };
    let bad_port = port.is_some_and(|p| p.parse::<u16>().map_or(true, |n| n == 0));
    if bad_port || a.chars().any(|c| c.is_whitespace() || c == '/' || c == ',') {
        return Err(invalid());
    }
    Ok(a.to_string())
}

/// A MongoDB database name: no spaces, slashes, dots or quotes.
fn check_database(a: &str) -> Result<String, String> {
    if a.is_empty() || a.len() > 63 || a.chars().any(|c| " /\\.\"$*<>:|?".contains(c)) {
        return Err(format!(
            "{a:?} cannot be a database name (at most 63 characters, none of /\\. \"$*<>:|?)"
        ));
    }
    Ok(a.to_string())
}

/// A readable PEM file holding `what` (e.g. `CERTIFICATE`).
fn pem_file(a: &str, what: &str) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(a).map_err(|e| format!("cannot read {a}: {e}"))?;
    if !text.contains("-----BEGIN ") || !text.contains(what) {
        return Err(format!("{a} holds no PEM {what}"));
    }
    Ok(PathBuf::from(a))
}

/// Empty, or a PEM certificate file.
fn optional_pem_file(a: &str) -> Result<Option<PathBuf>, String> {
    match a {
        "" => Ok(None),
        a => pem_file(a, "CERTIFICATE").map(Some),
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(p))
    }
}

/// The server's signing key, relative to the configuration directory.
const KEY_FILE: &str = "server-key.asc";

/// Runs `pdome-admin init`.
pub async fn run(config_dir: &Path, args: InitArgs) -> anyhow::Result<()> {
    let config_dir = absolute(config_dir)?;
    let server_toml = config_dir.join(SERVER_CONFIG_FILE);
    if server_toml.exists() && !args.force {
        bail!(
            "{} already exists; this server is initialized. Pass --force to replace it \
             (new keys: every agent then needs the new agent.toml)",
            server_toml.display()
        );
    }
    let answers = if args.non_interactive {
        from_flags(&args)?
    } else {
        ask(&args, &mut Prompter::stdio())?
    };
    let data_dir = absolute(
        args.data_dir
            .as_deref()
            .unwrap_or(Path::new(crate::config::DEFAULT_DATA_DIR)),
    )?;
    create_dir(&config_dir, 0o755)?;
    create_dir(&data_dir, 0o750)?;

    let host = url::Url::parse(&answers.url)?
        .host_str()
        .unwrap_or("penguindome")
        .trim_matches(['[', ']'])
        .to_string();
    let key = SecretKey::generate(&format!("PenguinDome server {host} <penguindome@{host}>"))?;
    write_secret(&config_dir.join(KEY_FILE), &key.to_armored()?)?;
    let (credential, credential_sha256) = match args.shared_credential {
        true => new_credential(),
        false => Default::default(),
    };
    let tls = set_up_tls(&answers, &config_dir, &host)?;
    let config = server_config(
        &answers,
        &config_dir,
        &data_dir,
        Some(credential_sha256).filter(|s| !s.is_empty()),
        tls.files,
    );
    write_server_config(&config, &server_toml)?;
    write_agent_config(&answers, &key, credential, tls.agent_ca, &config_dir)?;
    let store_note = set_up_store(&answers.store, &config_dir, &data_dir).await?;
    if args.shared_credential {
        super::access::create_agent_user(&config_dir)?;
    }
    share_with_service_account(&config_dir, &data_dir)?;
    print_summary(&config_dir, &answers, &key, &tls.note, &store_note);
    Ok(())
}

/// A new enrollment credential and the SHA-256 of it: agents keep the
/// credential, the server only its hash.
fn new_credential() -> (String, String) {
    let mut raw = [0u8; 32];
    random_bytes(&mut raw);
    let credential = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let sha256 = hex::encode(Sha256::digest(credential.as_bytes()));
    (credential, sha256)
}

/// The listener's TLS set-up.
struct TlsSetup {
    files: Option<TlsFiles>,
    /// The certificate agents trust, when not the system's CAs.
    agent_ca: Option<String>,
    /// A line for the summary.
    note: String,
}

/// Checks the given certificate, or makes and writes a self-signed one.
fn set_up_tls(answers: &Answers, config_dir: &Path, host: &str) -> anyhow::Result<TlsSetup> {
    match &answers.tls {
        Tls::Off => Ok(TlsSetup {
            files: None,
            agent_ca: None,
            note: "plain HTTP (no TLS)".to_string(),
        }),
        Tls::Provided { cert, key, ca } => provided_tls(cert, key, ca.as_deref()),
        Tls::SelfSigned => self_signed_tls(&answers.listen, config_dir, host),
    }
}

fn provided_tls(cert: &Path, key: &Path, ca: Option<&Path>) -> anyhow::Result<TlsSetup> {
    let cert = absolute(cert)?;
    let key_path = absolute(key)?;
    crate::tls::server_config(&cert, &key_path)?;
    let ca_pem = ca
        .map(|c| std::fs::read_to_string(c).with_context(|| format!("cannot read {}", c.display())))
        .transpose()?;
    Ok(TlsSetup {
        files: Some(TlsFiles {
            certificate: cert.clone(),
            key: key_path,
        }),
        agent_ca: ca_pem,
        note: format!("certificate {}", cert.display()),
    })
}

fn self_signed_tls(listen: &SocketAddr, config_dir: &Path, host: &str) -> anyhow::Result<TlsSetup> {
    let mut names = vec![host.to_string()];
    if !listen.ip().is_unspecified() && listen.ip().to_string() != host {
        names.push(listen.ip().to_string());
    }
    let generated = crate::tls::self_signed(&names)?;
    write_file(
        &config_dir.join("tls/server.crt"),
        generated.cert_pem.as_bytes(),
        0o644,
    )?;
    write_secret(
        &config_dir.join("tls/server.key"),
        generated.key_pem.as_bytes(),
    )?;
    Ok(TlsSetup {
        files: Some(TlsFiles {
            certificate: "tls/server.crt".into(),
            key: "tls/server.key".into(),
        }),
        agent_ca: Some(generated.cert_pem),
        note: format!(
            "self-signed certificate for {} (agents pin it), tls/server.crt",
            names.join(", ")
        ),
    })
}

/// The server configuration the answers describe.
fn server_config(
    answers: &Answers,
    config_dir: &Path,
    data_dir: &Path,
    credential_sha256: Option<String>,
    tls: Option<TlsFiles>,
) -> ServerConfig {
    ServerConfig {
        server: ServerSection {
            url: answers.url.clone(),
            data_dir: data_dir.to_path_buf(),
            signing_key: KEY_FILE.into(),
            enrollment_credential_sha256: credential_sha256,
            request_window: Duration::from_secs(900),
            max_body_bytes: 8 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            require_message_kinds: false,
            apt_valid_for: crate::release::publish::APT_VALID_FOR,
        },
        listeners: vec![ListenerConfig {
            name: "main".into(),
            address: answers.listen,
            tls,
            trusted_proxies: Vec::new(),
            deprecated: false,
        }],
        store: match &answers.store {
            StoreChoice::Sqlite => StoreConfig::Sqlite {
                path: "penguindome.db".into(),
            },
            StoreChoice::Mongo { config, .. } => StoreConfig::Mongodb(config.clone()),
        },
        logging: LoggingConfig {
            target: answers.log_target,
            level: answers.log_level.clone(),
        },
        agent: AgentDefaults {
            collect_interval: answers.collect_interval,
            submit_interval: answers.submit_interval,
        },
        limits: Default::default(),
        shell: Default::default(),
        web: Default::default(),
        audit: AuditConfig {
            email: answers.audit_email.clone(),
            ..AuditConfig::default()
        },
        config_dir: config_dir.to_path_buf(),
    }
}

fn write_server_config(config: &ServerConfig, server_toml: &Path) -> anyhow::Result<()> {
    let text = format!(
        "# PenguinDome server configuration, written by `pdome-admin init`.\n\n{}",
        toml::to_string(config).context("cannot write the configuration as TOML")?
    );
    // Validate what we wrote with the same parser the server uses.
    ServerConfig::parse(&text, server_toml)?;
    write_file(server_toml, text.as_bytes(), 0o640)?;
    Ok(())
}

/// Writes agent.toml, what every agent of the site needs.
fn write_agent_config(
    answers: &Answers,
    key: &SecretKey,
    credential: String,
    ca: Option<String>,
    config_dir: &Path,
) -> anyhow::Result<()> {
    let mut agent = AgentConfig::new(answers.url.clone(), key.public().to_armored()?, credential);
    agent.ca_certificate = ca;
    agent.allow_plain_http = plain_http(answers);
    agent.collect_interval = answers.collect_interval;
    agent.submit_interval = answers.submit_interval;
    write_secret(
        &config_dir.join(AGENT_CONFIG_FILE),
        agent.to_toml()?.as_bytes(),
    )?;
    Ok(())
}

fn plain_http(answers: &Answers) -> bool {
    answers.url.starts_with("http://")
}

/// Keeps the MongoDB password, creates the store and says how it answers.
async fn set_up_store(
    choice: &StoreChoice,
    config_dir: &Path,
    data_dir: &Path,
) -> anyhow::Result<String> {
    if let StoreChoice::Mongo {
        password: Some(pw), ..
    } = choice
    {
        write_secret(&config_dir.join(MONGODB_PASSWORD_FILE), pw.as_bytes())?;
    }
    let store = crate::store::open(&ServerConfig::load(config_dir)?).await?;
    let note = match (choice, store.health().await) {
        (StoreChoice::Sqlite, Ok(())) => format!("SQLite in {}", data_dir.display()),
        (StoreChoice::Sqlite, Err(e)) => return Err(e.into()),
        (StoreChoice::Mongo { .. }, Ok(())) => "MongoDB, answering".to_string(),
        // The database may come later; the server waits for it.
        (StoreChoice::Mongo { .. }, Err(e)) => format!("MongoDB, NOT answering yet: {e}"),
    };
    store.close().await;
    Ok(note)
}

/// Packaged installs run the server as its own user: let it read what it
/// needs and own its data, and keep everything else root's.
fn share_with_service_account(config_dir: &Path, data_dir: &Path) -> anyhow::Result<()> {
    use super::account::share_with_group;
    let Some((uid, gid)) = super::account::service_account()? else {
        return Ok(());
    };
    share_with_group(config_dir, gid, 0o750)?;
    share_with_group(&config_dir.join(SERVER_CONFIG_FILE), gid, 0o640)?;
    share_with_group(&config_dir.join(KEY_FILE), gid, 0o640)?;
    if config_dir.join("tls").is_dir() {
        share_with_group(&config_dir.join("tls"), gid, 0o750)?;
        share_with_group(&config_dir.join("tls/server.key"), gid, 0o640)?;
    }
    // access.toml exists only once rules or the deprecated shared user do.
    for optional in [MONGODB_PASSWORD_FILE, crate::access_rules::ACCESS_FILE] {
        if config_dir.join(optional).exists() {
            share_with_group(&config_dir.join(optional), gid, 0o640)?;
        }
    }
    super::account::give_tree(data_dir, uid, gid)?;
    println!(
        "The server's files belong to the {} user.",
        super::account::SERVICE_USER
    );
    Ok(())
}

fn print_summary(
    config_dir: &Path,
    answers: &Answers,
    key: &SecretKey,
    tls_note: &str,
    store_note: &str,
) {
    println!(
        "Created a PenguinDome server configuration in {}:",
        config_dir.display()
    );
    println!(
        "  {SERVER_CONFIG_FILE:<15} listens on {}, clients use {}",
        answers.listen, answers.url
    );
    println!(
        "  {KEY_FILE:<15} the server's OpenPGP signing key (0600), {}",
        key.fingerprint()
    );
    println!("  {:<15} {tls_note}", "TLS");
    println!(
        "  {AGENT_CONFIG_FILE:<15} what the site's agents need; releases put it, without secrets, in the site package"
    );
    println!("Store: {store_note}");
    if plain_http(answers) {
        println!(
            "Warning: agents will talk plain HTTP; use this only behind a TLS-terminating proxy on the same host."
        );
    }
    println!(
        "Next: 1. start the server: systemctl enable --now penguindome-server (or penguindome-server --config-dir {})",
        config_dir.display()
    );
    println!("      2. publish the agent packages: pdome-admin release");
    println!(
        "      3. for each new machine: pdome-admin tokens create (it prints the one-line bootstrap to run there)"
    );
}

fn create_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_refuse_answers_that_would_fail_later() {
        assert!(check_email("not-an-email").is_err());
        assert_eq!(check_email("it@example.com").unwrap(), "it@example.com");
        assert!(check_host("db1:27017").is_ok() && check_host("[::1]:27017").is_ok());
        assert!(check_host("db1:http").is_err() && check_host("db 1").is_err());
        assert!(check_database("pd").is_ok() && check_database("a/b").is_err());
        assert!(optional_pem_file("").unwrap().is_none());
        assert!(optional_pem_file("/nonexistent.pem").is_err());
        let input = b"\n\n\n\n\n\n\n\n\nnot-an-email\nit@example.com\n" as &[u8];
        let mut out = Vec::new();
        let a = ask(&InitArgs::default(), &mut Prompter::new(input, &mut out)).unwrap();
        assert_eq!(a.audit_email.as_deref(), Some("it@example.com"));
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("is not an email address"), "{shown}");
    }

    #[test]
    fn interactive_answers_fill_everything() {
        let input = b"127.0.0.1:9443\ny\n\n\n\ndebug\n\n10m\n\naudit@example.com\n" as &[u8];
        let mut out = Vec::new();
        let mut p = Prompter::new(input, &mut out);
        let a = ask(&InitArgs::default(), &mut p).unwrap();
        assert_eq!(a.listen, "127.0.0.1:9443".parse().unwrap());
        assert!(matches!(a.tls, Tls::SelfSigned));
        assert_eq!(a.url, "https://127.0.0.1:9443");
        assert_eq!(a.log_level, "debug");
        assert_eq!(a.collect_interval, Duration::from_secs(600));
        assert_eq!(a.submit_interval, Duration::from_secs(60));
        assert_eq!(a.audit_email.as_deref(), Some("audit@example.com"));
    }

    #[test]
    fn interactive_mongodb_answers() {
        let input = b"0.0.0.0:8443\nn\nmongodb\ndb1\ndb2:27018\n\nrs0\n\npd\ns3cret\nn\n\n\nhttp://pd.example.com:8443\n\n\n\n" as &[u8];
        let mut out = Vec::new();
        let a = ask(&InitArgs::default(), &mut Prompter::new(input, &mut out)).unwrap();
        assert!(matches!(a.tls, Tls::Off));
        let StoreChoice::Mongo { config, password } = a.store else {
            panic!("not mongodb")
        };
        assert_eq!(config.hosts, vec!["db1", "db2:27018"]);
        assert_eq!(config.replica_set.as_deref(), Some("rs0"));
        assert_eq!(config.database.as_deref(), Some("penguindome"));
        assert_eq!(config.username.as_deref(), Some("pd"));
        assert_eq!(password.as_deref(), Some("s3cret"));
        assert_eq!(
            config.password_file.as_deref(),
            Some(Path::new(MONGODB_PASSWORD_FILE))
        );
        assert!(!config.tls);
        assert_eq!(a.url, "http://pd.example.com:8443");
    }

    #[test]
    fn mongodb_flags() {
        let args = InitArgs {
            non_interactive: true,
            listen: Some("127.0.0.1:1".parse().unwrap()),
            url: Some("https://x".into()),
            mongodb_uri: Some("mongodb://db1,db2/?replicaSet=rs0".into()),
            ..Default::default()
        };
        let a = from_flags(&args).unwrap();
        assert!(
            matches!(a.store, StoreChoice::Mongo { ref config, password: None } if config.uri.is_some())
        );
        let sqlite = InitArgs {
            mongodb_uri: None,
            ..args.clone()
        };
        assert!(matches!(
            from_flags(&sqlite).unwrap().store,
            StoreChoice::Sqlite
        ));
        let wrong = InitArgs {
            store: Some("sqlite".into()),
            ..args
        };
        assert!(
            from_flags(&wrong)
                .err()
                .unwrap()
                .to_string()
                .contains("--store mongodb")
        );
    }

    #[test]
    fn non_interactive_needs_listen_and_url() {
        let e = from_flags(&InitArgs {
            non_interactive: true,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("--listen"), "{e}");
        let e = from_flags(&InitArgs {
            non_interactive: true,
            listen: Some("127.0.0.1:1".parse().unwrap()),
            url: Some("gopher://x".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("http:// or https://"), "{e}");
    }
}
