//! The token bootstrap: one script per package family that installs the
//! agent from the site's repository with an enrollment token, and the
//! one-line command that fetches it.
//!
//! The script holds nothing secret (the server's URL, certificate and
//! public key), so the server hands it to anyone. The one-liner pins it by
//! its SHA-256: it is fetched without checking the TLS certificate (a new
//! machine has none to check against), then run only if its hash matches,
//! so a truncated or altered download runs nothing. From there the script
//! talks to the server only through the certificate it carries, reads the
//! token from a prompt or a file (never from the command line), and hands
//! it to `penguindome-agent enroll` on standard input, so it appears
//! neither in `ps` nor in shell history.

use sha2::{Digest, Sha256};

use super::Family;

/// What a site's bootstrap scripts are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSite {
    /// The server URL (no trailing slash).
    pub url: String,
    /// Host of the URL without port or brackets (apt's per-host options).
    pub host: String,
    /// The pinned certificate (PEM), unless the site's is publicly trusted.
    pub ca_pem: Option<String>,
    /// The server's public key, armored.
    pub key_armored: String,
    /// Its fingerprint (pacman's lsign).
    pub key_fingerprint: String,
}

fn heredoc(path: &str, marker: &str, body: &str) -> String {
    let body = if body.ends_with('\n') {
        body.to_string()
    } else {
        format!("{body}\n")
    };
    format!("    cat >\"{path}\" <<'{marker}'\n{body}{marker}\n")
}

/// The shared beginning: root check, temporary directory, the token.
fn preamble(site: &BootstrapSite, family: Family) -> String {
    let mut s = format!(
        "#!/bin/sh\n\
         # PenguinDome agent bootstrap ({family}) for {url}.\n\
         # Installs penguindome-agent from the site's signed repository and\n\
         # enrolls this machine with a token from `pdome-admin tokens create`,\n\
         # read from PENGUINDOME_TOKEN_FILE, PENGUINDOME_TOKEN or a prompt.\n\
         # Everything is inside main(), so a truncated copy runs nothing.\n\
         set -eu\n\n\
         main() {{\n\
         \x20   if [ \"$(id -u)\" -ne 0 ]; then echo 'penguindome bootstrap: run this as root' >&2; exit 1; fi\n\
         \x20   url='{url}'\n\
         \x20   tmp=$(mktemp -d)\n\
         \x20   trap 'rm -rf \"$tmp\"' EXIT\n\
         \x20   umask 077\n\
         \x20   read_token\n\
         \x20   case $token in\n\
         \x20       pdt1.*.*.*.*) ;;\n\
         \x20       *) echo 'penguindome bootstrap: that is not an enrollment token (pdt1....)' >&2; exit 1 ;;\n\
         \x20   esac\n\
         \x20   rest=${{token#pdt1.}}\n\
         \x20   id=${{rest%%.*}}\n\
         \x20   rest=${{rest#*.}}\n\
         \x20   secret=${{rest%%.*}}\n",
        family = family.as_str(),
        url = site.url,
    );
    if let Some(pem) = &site.ca_pem {
        s.push_str(&heredoc("$tmp/server.crt", "PENGUINDOME_CERT", pem));
    }
    s.push_str(&heredoc(
        "$tmp/key.asc",
        "PENGUINDOME_KEY",
        &site.key_armored,
    ));
    s
}

/// Installs the agent with apt, through a source list, credentials and
/// certificate that live only in the temporary directory.
fn apt_steps(site: &BootstrapSite) -> String {
    let ca = if site.ca_pem.is_some() {
        format!(
            " -o Acquire::https::{}::CaInfo=\"$tmp/server.crt\"",
            site.host
        )
    } else {
        String::new()
    };
    format!(
        "    printf 'machine %s/penguindome/v1/repo login pdt1.%s password %s\\n' \"$url\" \"$id\" \"$secret\" >\"$tmp/auth.conf\"\n\
         \x20   printf 'deb [signed-by=%s/key.asc] %s/penguindome/v1/repo/apt {suite} {component}\\n' \"$tmp\" \"$url\" >\"$tmp/penguindome.list\"\n\
         \x20   set -- -o Dir::Etc::SourceList=\"$tmp/penguindome.list\" -o Dir::Etc::SourceParts=- \
         -o Dir::Etc::netrc=\"$tmp/auth.conf\" -o Dir::Etc::netrcparts=- -o APT::Get::List-Cleanup=0 \
         -o APT::Sandbox::User=root{ca}\n\
         \x20   apt-get \"$@\" update || refused\n\
         \x20   DEBIAN_FRONTEND=noninteractive apt-get \"$@\" install -y penguindome-agent || refused\n",
        suite = super::apt_repo::SUITE,
        component = super::apt_repo::COMPONENT,
    )
}

/// Installs the agent with dnf from a repository defined in the temporary
/// directory only.
fn dnf_steps(site: &BootstrapSite) -> String {
    let ca = if site.ca_pem.is_some() {
        "sslcacert=$tmp/server.crt\n"
    } else {
        ""
    };
    format!(
        "    cat >\"$tmp/penguindome.repo\" <<EOF\n\
         [penguindome]\nname=PenguinDome\nbaseurl=$url/penguindome/v1/repo/rpm\nenabled=1\n\
         gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://$tmp/key.asc\n{ca}\
         username=pdt1.$id\npassword=$secret\nEOF\n\
         \x20   rpm --import \"$tmp/key.asc\"\n\
         \x20   dnf -y --setopt=reposdir=\"$tmp\" install penguindome-agent || refused\n"
    )
}

/// Installs the agent with pacman, trusting the key and certificate first
/// (the site package does the same when it arrives). Only the site's
/// repository is refreshed, through a configuration that names no other:
/// the system's own sync databases stay as they were, so installing one
/// package never makes a partial upgrade of the rest of the system.
fn pacman_steps(site: &BootstrapSite) -> String {
    let ca = if site.ca_pem.is_some() {
        "    install -m 0644 \"$tmp/server.crt\" /etc/ca-certificates/trust-source/anchors/penguindome-server.crt\n\
         \x20   trust extract-compat\n"
    } else {
        ""
    };
    format!(
        "{ca}    pacman-key --add \"$tmp/key.asc\"\n\
         \x20   pacman-key --lsign-key {fp}\n\
         \x20   host=${{url#*://}}\n\
         \x20   scheme=${{url%%://*}}\n\
         \x20   printf '[options]\\nSigLevel = Required DatabaseRequired TrustedOnly\\n\\n[penguindome]\\nServer = %s://pdt1.%s:%s@%s/penguindome/v1/repo/arch/$arch\\n' \
         \"$scheme\" \"$id\" \"$secret\" \"$host\" >\"$tmp/pacman.conf\"\n\
         \x20   pacman --config \"$tmp/pacman.conf\" -Sy --noconfirm --needed penguindome-agent || refused\n",
        fp = site.key_fingerprint,
    )
}

const READ_TOKEN: &str = r#"
refused() {
    echo 'penguindome bootstrap: the repository refused the token or could not be reached. A token that is used up, expired or revoked opens nothing: ask an administrator for a new one (pdome-admin tokens create).' >&2
    exit 1
}

read_token() {
    if [ -n "${PENGUINDOME_TOKEN_FILE:-}" ]; then
        token=$(head -n 1 "$PENGUINDOME_TOKEN_FILE")
    elif [ -n "${PENGUINDOME_TOKEN:-}" ]; then
        token=$PENGUINDOME_TOKEN
    elif { : </dev/tty; } 2>/dev/null; then
        printf 'Enrollment token (from pdome-admin tokens create): ' >/dev/tty
        stty -echo </dev/tty 2>/dev/null || true
        IFS= read -r token </dev/tty || token=
        stty echo </dev/tty 2>/dev/null || true
        printf '\n' >/dev/tty
    else
        echo 'penguindome bootstrap: no terminal to ask for the token; set PENGUINDOME_TOKEN_FILE' >&2
        exit 1
    fi
}

main "$@"
"#;

/// Where a release publishes a family's script (the server serves it from
/// the current release).
pub fn published_path(family: Family) -> String {
    format!("bootstrap/{}.sh", family.as_str())
}

/// The bootstrap script of one family.
pub fn script(site: &BootstrapSite, family: Family) -> String {
    let mut s = preamble(site, family);
    s.push_str(&match family {
        Family::Deb => apt_steps(site),
        Family::Rpm => dnf_steps(site),
        Family::Arch => pacman_steps(site),
    });
    s.push_str(
        "    printf '%s\\n' \"$token\" | penguindome-agent enroll \"$url\" -\n\
         \x20   echo 'PenguinDome agent installed and enrolled; see: systemctl status penguindome.timer'\n\
         }\n",
    );
    s.push_str(READ_TOKEN);
    s
}

/// The command an administrator pastes on a new machine, as root. Its
/// status is the script's (never `exit`: it is pasted into a shell).
pub fn one_liner(site: &BootstrapSite, family: Family) -> String {
    let script = script(site, family);
    one_liner_for(&site.url, family, script.as_bytes(), site.ca_pem.is_some())
}

/// The command for a script as published: fetched from `url`'s server,
/// run only when its SHA-256 matches. A script with its own certificate
/// (`pinned`) is fetched without checking the server's, the hash standing
/// in for it.
pub fn one_liner_for(url: &str, family: Family, script: &[u8], pinned: bool) -> String {
    let digest = hex::encode(Sha256::digest(script));
    let url = format!(
        "{url}{}?format={}",
        penguindome_protocol::paths::BOOTSTRAP,
        family.as_str()
    );
    // Debian's standard install has wget and not curl; Fedora and Arch
    // have curl.
    let fetch = match (family, pinned) {
        (Family::Deb, true) => format!("wget -q --no-check-certificate -O \"$f\" '{url}'"),
        (Family::Deb, false) => format!("wget -q -O \"$f\" '{url}'"),
        (_, true) => format!("curl -fsSk -o \"$f\" '{url}'"),
        (_, false) => format!("curl -fsS -o \"$f\" '{url}'"),
    };
    format!(
        "f=$(mktemp) && {fetch} && echo \"{digest}  $f\" | sha256sum -c --quiet && sh \"$f\"; s=$?; rm -f \"$f\"; [ $s -eq 0 ]"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(pinned: bool) -> BootstrapSite {
        BootstrapSite {
            url: "https://pd.example.com:8443".into(),
            host: "pd.example.com".into(),
            ca_pem: pinned
                .then(|| "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into()),
            key_armored:
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----\n"
                    .into(),
            key_fingerprint: "ABCD".into(),
        }
    }

    #[test]
    fn scripts_parse_and_keep_the_token_off_command_lines() {
        for family in [Family::Deb, Family::Rpm, Family::Arch] {
            for pinned in [true, false] {
                let s = script(&site(pinned), family);
                let out = std::process::Command::new("sh")
                    .args(["-n", "-c", &s])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{family:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    s.trim_end().ends_with("main \"$@\""),
                    "everything runs from the last line"
                );
                assert_eq!(s.contains("server.crt"), pinned);
                if family == Family::Arch {
                    // Only the site's repository is refreshed.
                    assert!(!s.contains("/etc/pacman.conf"), "{s}");
                    assert!(s.contains("[options]") && s.contains("-Sy --noconfirm --needed"));
                }
                // The token reaches the agent on standard input only.
                assert!(
                    s.contains("printf '%s\\n' \"$token\" | penguindome-agent enroll \"$url\" -")
                );
            }
        }
    }

    #[test]
    fn the_one_liner_pins_the_script_it_fetches() {
        let s = site(true);
        let line = one_liner(&s, Family::Deb);
        let digest = hex::encode(Sha256::digest(script(&s, Family::Deb).as_bytes()));
        assert!(line.contains(&digest), "{line}");
        assert!(line.starts_with("f=$(mktemp) && wget"), "{line}");
        assert!(one_liner(&site(false), Family::Rpm).contains("curl -fsS -o"));
    }
}
