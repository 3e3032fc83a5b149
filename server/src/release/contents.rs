//! What goes into each package: files from systemd/, debian/, rpm/ and
//! arch/ (compiled in, so a release always matches this build), binaries,
//! and the site's configuration.

use std::collections::BTreeMap;
use std::time::SystemTime;

use debian_packaging::control::ControlFile;

use super::BuildError;
use super::spec::{Arch, Family, PackageFile, PackageSpec, Scripts};

const DEBIAN_CONTROL: &str = include_str!("../../../debian/control");
const RPM_PACKAGES: &str = include_str!("../../../rpm/packages.toml");

/// systemd units by file name.
pub const AGENT_SERVICE: &str = include_str!("../../../systemd/penguindome-agent.service");
/// The unit that upgrades the agent's packages.
pub const UPGRADE_SERVICE: &str = include_str!("../../../systemd/penguindome-upgrade.service");
/// The agent's timer.
pub const AGENT_TIMER: &str = include_str!("../../../systemd/penguindome.timer");
/// The server's unit.
pub const SERVER_SERVICE: &str = include_str!("../../../systemd/penguindome-server.service");
/// The issues audit's unit and timer.
pub const AUDIT_SERVICE: &str = include_str!("../../../systemd/penguindome-audit.service");
/// The timer that runs the issues audit hourly.
pub const AUDIT_TIMER: &str = include_str!("../../../systemd/penguindome-audit.timer");
/// The server's system user, for systemd-sysusers.
pub const SERVER_SYSUSERS: &str = include_str!("../../../systemd/penguindome-server.sysusers");

/// Maintainer scripts by (package, script name).
fn script(package: &str, family: Family, name: &str) -> Option<&'static str> {
    Some(match (package, family, name) {
        ("penguindome-agent", Family::Deb, "postinst") => {
            include_str!("../../../debian/penguindome-agent.postinst")
        }
        ("penguindome-agent", Family::Deb, "prerm") => {
            include_str!("../../../debian/penguindome-agent.prerm")
        }
        ("penguindome-agent", Family::Deb, "postrm") => {
            include_str!("../../../debian/penguindome-agent.postrm")
        }
        ("penguindome-site", Family::Deb, "postinst") => {
            include_str!("../../../debian/penguindome-site.postinst")
        }
        ("penguindome-server", Family::Deb, "postinst") => {
            include_str!("../../../debian/penguindome-server.postinst")
        }
        ("penguindome-server", Family::Deb, "prerm") => {
            include_str!("../../../debian/penguindome-server.prerm")
        }
        ("penguindome-server", Family::Deb, "postrm") => {
            include_str!("../../../debian/penguindome-server.postrm")
        }
        ("penguindome-agent", Family::Rpm, "post") => {
            include_str!("../../../rpm/penguindome-agent.post")
        }
        ("penguindome-agent", Family::Rpm, "preun") => {
            include_str!("../../../rpm/penguindome-agent.preun")
        }
        ("penguindome-agent", Family::Rpm, "postun") => {
            include_str!("../../../rpm/penguindome-agent.postun")
        }
        ("penguindome-site", Family::Rpm, "post") => {
            include_str!("../../../rpm/penguindome-site.post")
        }
        ("penguindome-server", Family::Rpm, "post") => {
            include_str!("../../../rpm/penguindome-server.post")
        }
        ("penguindome-server", Family::Rpm, "preun") => {
            include_str!("../../../rpm/penguindome-server.preun")
        }
        ("penguindome-server", Family::Rpm, "postun") => {
            include_str!("../../../rpm/penguindome-server.postun")
        }
        ("penguindome-agent", Family::Arch, "install") => {
            include_str!("../../../arch/penguindome-agent.install")
        }
        ("penguindome-site", Family::Arch, "install") => {
            include_str!("../../../arch/penguindome-site.install")
        }
        ("penguindome-server", Family::Arch, "install") => {
            include_str!("../../../arch/penguindome-server.install")
        }
        _ => return None,
    })
}

/// The parts of a package's description shared by every family.
#[derive(Debug, Clone)]
struct Described {
    summary: String,
    description: String,
    deb_depends: Vec<String>,
    rpm_requires: Vec<String>,
    rpm_scriptlets: Vec<String>,
}

#[derive(serde::Deserialize)]
struct RpmMeta {
    requires: Vec<String>,
    scriptlets: Vec<String>,
}

fn described(name: &str) -> Result<Described, BuildError> {
    // The parser does not know deb822 comments.
    let text: String = DEBIAN_CONTROL
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let control = ControlFile::parse_str(&text)
        .map_err(|e| BuildError::Spec(format!("debian/control: {e}")))?;
    let para = control
        .paragraphs()
        .find(|p| p.field_str("Package") == Some(name))
        .ok_or_else(|| BuildError::Spec(format!("debian/control has no package {name}")))?;
    let text = para
        .field_str("Description")
        .ok_or_else(|| BuildError::Spec(format!("debian/control: {name} has no Description")))?;
    let mut lines = text.lines();
    let summary = lines.next().unwrap_or_default().trim().to_string();
    let description = lines
        .map(|l| {
            let l = l.strip_prefix(' ').unwrap_or(l);
            if l == "." { "" } else { l }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let deb_depends = para
        .field_str("Depends")
        .map(|d| {
            d.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let rpm: BTreeMap<String, RpmMeta> = toml::from_str(RPM_PACKAGES)
        .map_err(|e| BuildError::Spec(format!("rpm/packages.toml: {e}")))?;
    let meta = rpm
        .get(name)
        .ok_or_else(|| BuildError::Spec(format!("rpm/packages.toml has no package {name}")))?;
    Ok(Described {
        summary,
        description,
        deb_depends,
        rpm_requires: meta.requires.clone(),
        rpm_scriptlets: meta.scriptlets.clone(),
    })
}

/// Arch dependencies, as arch/PKGBUILD lists them (a test compares).
fn arch_depends(name: &str) -> Vec<String> {
    match name {
        // pacman: the agent's update checker links libalpm.
        "penguindome-agent" => vec!["glibc".into(), "penguindome-site".into(), "pacman".into()],
        "penguindome-server" => vec!["glibc".into(), "systemd".into()],
        _ => Vec::new(),
    }
}

fn scripts(name: &str, d: &Described) -> Result<Scripts, BuildError> {
    let mut s = Scripts::default();
    for n in ["preinst", "postinst", "prerm", "postrm"] {
        if let Some(body) = script(name, Family::Deb, n) {
            s.deb.push((n, body.to_string()));
        }
    }
    for n in &d.rpm_scriptlets {
        let body = script(name, Family::Rpm, n)
            .ok_or_else(|| BuildError::Spec(format!("rpm/{name}.{n} is listed but missing")))?;
        s.rpm.push((n.clone(), body.to_string()));
    }
    s.arch_install = script(name, Family::Arch, "install").map(str::to_string);
    Ok(s)
}

fn spec(
    name: &str,
    version: &str,
    release: u64,
    arch: Arch,
    files: Vec<PackageFile>,
    built_at: SystemTime,
) -> Result<PackageSpec, BuildError> {
    let d = described(name)?;
    let mut depends = Vec::new();
    depends.extend(d.deb_depends.iter().map(|x| (Family::Deb, x.clone())));
    depends.extend(d.rpm_requires.iter().map(|x| (Family::Rpm, x.clone())));
    depends.extend(arch_depends(name).into_iter().map(|x| (Family::Arch, x)));
    Ok(PackageSpec {
        name: name.to_string(),
        version: version.to_string(),
        release,
        arch,
        summary: d.summary.clone(),
        description: d.description.clone(),
        depends,
        files,
        scripts: scripts(name, &d)?,
        built_at,
    })
}

/// The generic agent package: binary and units, no secrets.
pub fn agent(
    binary: &[u8],
    version: &str,
    release: u64,
    built_at: SystemTime,
) -> Result<PackageSpec, BuildError> {
    spec(
        "penguindome-agent",
        version,
        release,
        Arch::X86_64,
        vec![
            PackageFile::new("/usr/bin/penguindome-agent", 0o755, binary),
            PackageFile::new(
                "/usr/lib/systemd/system/penguindome-agent.service",
                0o644,
                AGENT_SERVICE,
            ),
            PackageFile::new(
                "/usr/lib/systemd/system/penguindome.timer",
                0o644,
                AGENT_TIMER,
            ),
            PackageFile::new(
                "/usr/lib/systemd/system/penguindome-upgrade.service",
                0o644,
                UPGRADE_SERVICE,
            ),
        ],
        built_at,
    )
}

/// The server package: server, pdome-admin, the agent binary releases
/// are built from, the unit and the service user.
pub fn server(
    server_binary: &[u8],
    admin_binary: &[u8],
    agent_binary: &[u8],
    version: &str,
    release: u64,
    built_at: SystemTime,
) -> Result<PackageSpec, BuildError> {
    spec(
        "penguindome-server",
        version,
        release,
        Arch::X86_64,
        vec![
            PackageFile::new("/usr/bin/penguindome-server", 0o755, server_binary),
            PackageFile::new("/usr/bin/pdome-admin", 0o755, admin_binary),
            PackageFile::new(super::DEFAULT_AGENT_BINARY, 0o755, agent_binary),
            PackageFile::new(
                "/usr/lib/systemd/system/penguindome-server.service",
                0o644,
                SERVER_SERVICE,
            ),
            PackageFile::new(
                "/usr/lib/systemd/system/penguindome-audit.service",
                0o644,
                AUDIT_SERVICE,
            ),
            PackageFile::new(
                "/usr/lib/systemd/system/penguindome-audit.timer",
                0o644,
                AUDIT_TIMER,
            ),
            PackageFile::new(
                "/usr/lib/sysusers.d/penguindome-server.conf",
                0o644,
                SERVER_SYSUSERS,
            ),
        ]
        .into_iter()
        .chain(facts_schemas())
        .collect(),
        built_at,
    )
}

/// The JSON Schema of every collector's facts, for site plugin authors and
/// anyone reading the API: /usr/share/penguindome/schema/facts-vN/.
fn facts_schemas() -> impl Iterator<Item = PackageFile> {
    use penguindome_protocol::facts;
    let dir = format!("/usr/share/penguindome/schema/{}", facts::schema_dir());
    facts::schema_files()
        .into_iter()
        .map(move |(file, text)| PackageFile::new(&format!("{dir}/{file}"), 0o644, text))
}

/// What a site package carries.
#[derive(Debug, Clone)]
pub struct Site {
    /// The agent configuration (agent.toml) clients use.
    pub agent_toml: String,
    /// The repository's base URL, ending in /penguindome/v1/repo.
    pub repo_url: String,
    /// Host of the repository URL, for apt's per-host options.
    pub repo_host: String,
    /// The server's public key, armored.
    pub public_key_armored: String,
    /// The key's fingerprint (pacman's trusted-keys list names it).
    pub public_key_fingerprint: String,
    /// The pinned TLS certificate (PEM) when the site does not use a
    /// publicly trusted one.
    pub ca_pem: Option<String>,
    /// User and password agents fetch the repository with.
    pub credentials: Option<(String, String)>,
}

/// The site package for one family: configuration and the repository
/// definition that keeps the client upgrading from this server.
pub fn site(
    family: Family,
    site: &Site,
    version: &str,
    release: u64,
    built_at: SystemTime,
) -> Result<PackageSpec, BuildError> {
    let mut files = vec![PackageFile::config(
        "/etc/penguindome/agent.toml",
        0o600,
        site.agent_toml.clone(),
    )];
    let url = site.repo_url.trim_end_matches('/');
    files.extend(match family {
        Family::Deb => apt_site_files(site, url),
        Family::Rpm => dnf_site_files(site, url),
        Family::Arch => pacman_site_files(site, url),
    });
    spec(
        "penguindome-site",
        version,
        release,
        Arch::Any,
        files,
        built_at,
    )
}

/// The apt source, its key, credentials and pinned certificate.
fn apt_site_files(site: &Site, url: &str) -> Vec<PackageFile> {
    let mut files = vec![
        PackageFile::new(
            "/usr/share/keyrings/penguindome-archive-keyring.asc",
            0o644,
            site.public_key_armored.clone(),
        ),
        PackageFile::config(
            "/etc/apt/sources.list.d/penguindome.sources",
            0o644,
            format!(
                "# PenguinDome agent packages for this site (from penguindome-site).\n\
                 Types: deb\nURIs: {url}/apt\nSuites: {}\nComponents: {}\n\
                 Signed-By: /usr/share/keyrings/penguindome-archive-keyring.asc\n",
                super::apt_repo::SUITE,
                super::apt_repo::COMPONENT
            ),
        ),
    ];
    if let Some((user, password)) = &site.credentials {
        files.push(PackageFile::config(
            "/etc/apt/auth.conf.d/penguindome.conf",
            0o600,
            format!("machine {url} login {user} password {password}\n"),
        ));
    }
    if let Some(pem) = &site.ca_pem {
        files.push(PackageFile::new(
            "/usr/share/penguindome/server-ca.pem",
            0o644,
            pem.clone(),
        ));
        files.push(PackageFile::config(
            "/etc/apt/apt.conf.d/60penguindome",
            0o644,
            format!(
                "// Trust the PenguinDome server's pinned certificate for its host only.\n\
                 Acquire::https::{}::CaInfo \"/usr/share/penguindome/server-ca.pem\";\n",
                site.repo_host
            ),
        ));
    }
    files
}

/// The yum/dnf repository, its key and pinned certificate.
fn dnf_site_files(site: &Site, url: &str) -> Vec<PackageFile> {
    let mut files = vec![PackageFile::new(
        "/etc/pki/rpm-gpg/RPM-GPG-KEY-penguindome",
        0o644,
        site.public_key_armored.clone(),
    )];
    let mut repo = format!(
        "# PenguinDome agent packages for this site (from penguindome-site).\n\
         [penguindome]\nname=PenguinDome\nbaseurl={url}/rpm\nenabled=1\ngpgcheck=1\n\
         repo_gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-penguindome\n\
         skip_if_unavailable=False\nmetadata_expire=1h\n"
    );
    if let Some(pem) = &site.ca_pem {
        files.push(PackageFile::new(
            "/etc/pki/penguindome/server-ca.pem",
            0o644,
            pem.clone(),
        ));
        repo.push_str("sslcacert=/etc/pki/penguindome/server-ca.pem\nsslverify=1\n");
    }
    let mode = match &site.credentials {
        Some((user, password)) => {
            repo.push_str(&format!("username={user}\npassword={password}\n"));
            0o600
        }
        None => 0o644,
    };
    files.push(PackageFile::config(
        "/etc/yum.repos.d/penguindome.repo",
        mode,
        repo,
    ));
    files
}

/// The pacman keyring, repository and pinned certificate.
fn pacman_site_files(site: &Site, url: &str) -> Vec<PackageFile> {
    let mut files = vec![
        PackageFile::new(
            "/usr/share/pacman/keyrings/penguindome.gpg",
            0o644,
            site.public_key_armored.clone(),
        ),
        PackageFile::new(
            "/usr/share/pacman/keyrings/penguindome-trusted",
            0o644,
            format!("{}:4:\n", site.public_key_fingerprint),
        ),
        PackageFile::new("/usr/share/pacman/keyrings/penguindome-revoked", 0o644, ""),
    ];
    // libcurl takes the credentials from the URL.
    let (server, mode) = match (&site.credentials, url.split_once("://")) {
        (Some((user, password)), Some((scheme, rest))) => {
            (format!("{scheme}://{user}:{password}@{rest}"), 0o600)
        }
        _ => (url.to_string(), 0o644),
    };
    files.push(PackageFile::config(
        "/etc/pacman.d/penguindome.conf",
        mode,
        format!(
            "# PenguinDome agent packages for this site (from penguindome-site).\n\
             SigLevel = Required DatabaseRequired TrustedOnly\nServer = {server}/arch/$arch\n"
        ),
    ));
    if let Some(pem) = &site.ca_pem {
        files.push(PackageFile::new(
            "/etc/ca-certificates/trust-source/anchors/penguindome-server.crt",
            0o644,
            pem.clone(),
        ));
    }
    files
}
