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
/// The annotated server.toml, every key with its default and meaning.
const EXAMPLE_SERVER_TOML: &str = include_str!("../../../examples/server.toml");
/// The annotated agent.toml.
const EXAMPLE_AGENT_TOML: &str = include_str!("../../../examples/agent.toml");
/// Where the server package puts the annotated examples (`man pdome-admin`
/// points there).
pub const EXAMPLES_DIR: &str = "/usr/share/doc/penguindome-server/examples";

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

/// The generic agent package: binary, units, man page and completions
/// (`docs`, from [`super::docs::generate`]), no secrets.
pub fn agent(
    binary: &[u8],
    docs: &[PackageFile],
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
        ]
        .into_iter()
        .chain(docs.iter().cloned())
        .collect(),
        built_at,
    )
}

/// The server package: server, pdome-admin, the agent binary releases
/// are built from, the unit, the service user, and both programs' man
/// pages and completions (`docs`).
pub fn server(
    server_binary: &[u8],
    admin_binary: &[u8],
    agent_binary: &[u8],
    docs: &[PackageFile],
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
            PackageFile::new(
                &format!("{EXAMPLES_DIR}/server.toml"),
                0o644,
                EXAMPLE_SERVER_TOML,
            ),
            PackageFile::new(
                &format!("{EXAMPLES_DIR}/agent.toml"),
                0o644,
                EXAMPLE_AGENT_TOML,
            ),
        ]
        .into_iter()
        .chain(facts_schemas())
        .chain(docs.iter().cloned())
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
    /// The key's fingerprint.
    pub public_key_fingerprint: String,
    /// Every key package managers should trust, as one armored keyring:
    /// the signing key, and during a key rotation its successor too.
    pub keyring_armored: String,
    /// Their fingerprints (pacman's trusted-keys list names them).
    pub keyring_fingerprints: Vec<String>,
    /// The pinned TLS certificate (PEM) when the site does not use a
    /// publicly trusted one.
    pub ca_pem: Option<String>,
    /// The sealing policy (JSON) when the site keeps secrets: it applies
    /// until the agent's first update answer.
    pub sealing_json: Option<String>,
}

/// The dnf variables (in /etc/dnf/vars, 0600) that hold the client's own
/// repository credential, which the agent writes.
pub const DNF_USER_VAR: &str = "penguindome_repo_user";
/// See [`DNF_USER_VAR`].
pub const DNF_PASSWORD_VAR: &str = "penguindome_repo_password";
/// The pacman include with the client's credential in its `Server` URL,
/// which the agent writes; the site package installs a copy without one.
pub const PACMAN_SERVER_FILE: &str = "/etc/pacman.d/penguindome-server.conf";
/// What the site package installs there when nothing is.
pub const PACMAN_SERVER_TEMPLATE: &str = "/usr/share/penguindome/pacman-server.conf";

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
    if let Some(policy) = &site.sealing_json {
        files.push(PackageFile::new(
            "/usr/share/penguindome/sealing.json",
            0o644,
            policy.clone(),
        ));
    }
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
            site.keyring_armored.clone(),
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
        site.keyring_armored.clone(),
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
    // dnf substitutes its variables in every option, credentials too.
    repo.push_str(&format!(
        "username=${DNF_USER_VAR}\npassword=${DNF_PASSWORD_VAR}\n"
    ));
    files.push(PackageFile::config(
        "/etc/yum.repos.d/penguindome.repo",
        0o644,
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
            site.keyring_armored.clone(),
        ),
        PackageFile::new(
            "/usr/share/pacman/keyrings/penguindome-trusted",
            0o644,
            site.keyring_fingerprints
                .iter()
                .map(|fp| format!("{fp}:4:\n"))
                .collect::<String>(),
        ),
        PackageFile::new("/usr/share/pacman/keyrings/penguindome-revoked", 0o644, ""),
    ];
    // The Server line lives in a file of its own, which the agent rewrites
    // with the client's credential in the URL (libcurl sends it).
    files.push(PackageFile::config(
        "/etc/pacman.d/penguindome.conf",
        0o644,
        format!(
            "# PenguinDome agent packages for this site (from penguindome-site).\n\
             SigLevel = Required DatabaseRequired TrustedOnly\nInclude = {PACMAN_SERVER_FILE}\n"
        ),
    ));
    files.push(PackageFile::new(
        PACMAN_SERVER_TEMPLATE,
        0o644,
        format!("Server = {url}/arch/$arch\n"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files(family: Family) -> Vec<PackageFile> {
        let s = Site {
            agent_toml: "server_url = \"https://h:1\"\n".into(),
            repo_url: "https://h:1/penguindome/v1/repo".into(),
            repo_host: "h".into(),
            public_key_armored: "KEY".into(),
            public_key_fingerprint: "FP".into(),
            keyring_armored: "KEYS".into(),
            keyring_fingerprints: vec!["FP".into(), "NEXT".into()],
            ca_pem: Some("PEM".into()),
            sealing_json: Some("{\"selectors\":[]}".into()),
        };
        site(family, &s, "1.0.0", 1, SystemTime::UNIX_EPOCH)
            .unwrap()
            .files
    }

    fn text<'a>(files: &'a [PackageFile], path: &str) -> &'a str {
        let f = files.iter().find(|f| f.path == path).unwrap();
        std::str::from_utf8(&f.contents).unwrap()
    }

    #[test]
    fn every_family_trusts_each_key_of_the_keyring() {
        let pacman = files(Family::Arch);
        assert_eq!(
            text(&pacman, "/usr/share/pacman/keyrings/penguindome-trusted"),
            "FP:4:\nNEXT:4:\n"
        );
        assert_eq!(
            text(&pacman, "/usr/share/pacman/keyrings/penguindome.gpg"),
            "KEYS"
        );
        let apt = files(Family::Deb);
        assert_eq!(
            text(&apt, "/usr/share/keyrings/penguindome-archive-keyring.asc"),
            "KEYS"
        );
        for family in [Family::Deb, Family::Rpm, Family::Arch] {
            assert!(
                text(&files(family), "/usr/share/penguindome/sealing.json").contains("selectors"),
                "the sealing policy travels in every family's site package"
            );
        }
        let rpm = files(Family::Rpm);
        assert_eq!(
            text(&rpm, "/etc/pki/rpm-gpg/RPM-GPG-KEY-penguindome"),
            "KEYS"
        );
    }

    #[test]
    fn repository_definitions_name_the_clients_own_credential() {
        let rpm = files(Family::Rpm);
        let repo = text(&rpm, "/etc/yum.repos.d/penguindome.repo");
        assert!(
            repo.contains("username=$penguindome_repo_user\npassword=$penguindome_repo_password\n"),
            "{repo}"
        );
        let arch = files(Family::Arch);
        assert!(
            text(&arch, "/etc/pacman.d/penguindome.conf")
                .contains(&format!("Include = {PACMAN_SERVER_FILE}"))
        );
        assert_eq!(
            text(&arch, PACMAN_SERVER_TEMPLATE),
            "Server = https://h:1/penguindome/v1/repo/arch/$arch\n"
        );
        let deb = files(Family::Deb);
        assert!(deb.iter().all(|f| !f.path.contains("auth.conf")));
    }
}
