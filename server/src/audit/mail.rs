//! Sends the audit's mails through an SMTP relay (lettre).

use std::path::Path;
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::AuditError;
use crate::config::AuditConfig;

/// A relay and a sender.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    relay: String,
    /// The relay's host name, for hints.
    host: String,
    /// `smtp_ca_file` resolved, for hints.
    ca_file: Option<std::path::PathBuf>,
}

impl Mailer {
    /// The relay `[audit] smtp` names (default `smtp://localhost:25`);
    /// relative paths resolve against `config_dir`.
    pub fn from_config(c: &AuditConfig, config_dir: &Path) -> Result<Self, AuditError> {
        let relay = c
            .smtp
            .clone()
            .unwrap_or_else(|| "smtp://localhost:25".into());
        let url = url::Url::parse(&relay).map_err(|e| {
            AuditError::Config(format!(
                "smtp {relay:?} is not a URL like smtp://host:25: {e}"
            ))
        })?;
        // An IPv6 literal without its brackets: lettre resolves and checks
        // the certificate against this name.
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err(AuditError::Config(format!("smtp {relay:?} names no host"))),
        };
        let encrypted = url.scheme() != "smtp";
        if !encrypted && c.smtp_ca_file.is_some() {
            return Err(AuditError::Config(format!(
                "smtp_ca_file is set but smtp {relay:?} does not use TLS; use smtp+starttls:// \
                 or smtps://, or remove smtp_ca_file"
            )));
        }
        let ca_file = c.smtp_ca_file.as_ref().map(|f| config_dir.join(f));
        let tls = || tls_parameters(&relay, &host, ca_file.as_deref());
        let builder = SmtpTransport::builder_dangerous(&host);
        let mut builder = match url.scheme() {
            "smtp" => builder.port(url.port().unwrap_or(25)),
            "smtp+starttls" => builder
                .tls(Tls::Required(tls()?))
                .port(url.port().unwrap_or(587)),
            "smtps" => builder
                .tls(Tls::Wrapper(tls()?))
                .port(url.port().unwrap_or(465)),
            other => {
                return Err(AuditError::Config(format!(
                    "smtp {relay:?}: unknown scheme {other:?}; use smtp://, smtp+starttls:// or smtps://"
                )));
            }
        };
        match (&c.smtp_user, &c.smtp_password_file) {
            (None, None) => {}
            (Some(user), Some(file)) => {
                // lettre sends credentials on any connection: only over TLS,
                // or to a relay on this machine.
                let local = host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !encrypted && !local {
                    return Err(AuditError::Config(format!(
                        "smtp {relay:?}: a password would cross the network in the clear; use \
                         smtp+starttls:// or smtps://"
                    )));
                }
                let path = config_dir.join(file);
                let password = crate::secrets::read_secret(&path)
                    .map_err(|e| AuditError::Config(format!("smtp_password_file: {e:#}")))?;
                let password = String::from_utf8(password)
                    .map_err(|_| {
                        AuditError::Config(format!("{} is not UTF-8 text", path.display()))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                builder = builder.credentials(Credentials::new(user.clone(), password));
            }
            _ => {
                return Err(AuditError::Config(
                    "smtp_user and smtp_password_file go together: set both or neither".into(),
                ));
            }
        }
        let from_text = match &c.email_from {
            Some(f) => f.clone(),
            None => {
                format!("PenguinDome <penguindome@{}>", crate::host_name())
            }
        };
        let from = from_text.parse::<Mailbox>().map_err(|e| {
            AuditError::Config(format!(
                "email_from {from_text:?} is not a mail address: {e}"
            ))
        })?;
        Ok(Self {
            transport: builder.timeout(Some(Duration::from_secs(30))).build(),
            from,
            relay,
            host,
            ca_file,
        })
    }

    /// Sends one plain-text mail.
    pub fn send(&self, to: &str, subject: &str, body: String) -> Result<(), AuditError> {
        let to_box = to
            .parse::<Mailbox>()
            .map_err(|e| AuditError::Mail(format!("{to:?} is not a mail address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to_box)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| AuditError::Mail(format!("cannot build the mail to {to}: {e}")))?;
        self.transport.send(&message).map_err(|e| {
            let hint = self.certificate_hint(&e);
            AuditError::Mail(format!(
                "the relay {} did not take the mail to {to}: {e}{hint}",
                self.relay
            ))
        })?;
        Ok(())
    }

    /// What to do about a refused relay certificate, if that is what `e` is.
    fn certificate_hint(&self, e: &(dyn std::error::Error + 'static)) -> String {
        use rustls::CertificateError as C;
        match refused_certificate(e) {
            Some(C::UnknownIssuer) => match &self.ca_file {
                Some(path) => format!(
                    "; {} does not hold the CA that signed the relay's certificate",
                    path.display()
                ),
                None => "; if a private CA signed the relay's certificate, name its certificate \
                         in [audit] smtp_ca_file"
                    .into(),
            },
            Some(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
                "; the relay's certificate is not for {:?}: write the name it carries in [audit] smtp",
                self.host
            ),
            Some(C::Expired | C::ExpiredContext { .. }) => {
                "; the relay's certificate has expired and must be renewed on the relay".into()
            }
            _ => String::new(),
        }
    }
}

/// Why the relay's TLS certificate was refused, if `e` comes from that.
fn refused_certificate(e: &(dyn std::error::Error + 'static)) -> Option<rustls::CertificateError> {
    let certificate =
        |e: &(dyn std::error::Error + 'static)| match e.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(c)) => Some(c.clone()),
            _ => None,
        };
    let mut next = Some(e);
    while let Some(e) = next {
        // io::Error hides what it wraps from source(); look inside.
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| certificate(inner));
        if let Some(c) = certificate(e).or(wrapped) {
            return Some(c);
        }
        next = e.source();
    }
    None
}

/// TLS settings for `host`: the system's roots, or only the CA certificates
/// in `ca_file` when the relay's certificate comes from a private CA.
fn tls_parameters(
    relay: &str,
    host: &str,
    ca_file: Option<&Path>,
) -> Result<TlsParameters, AuditError> {
    let tls_err = |e: lettre::transport::smtp::Error| {
        AuditError::Config(format!("smtp {relay:?}: cannot set up TLS: {e}"))
    };
    let mut builder = TlsParameters::builder(host.to_string());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            AuditError::Config(format!("smtp_ca_file: cannot read {}: {e}", path.display()))
        })?;
        check_ca_file(path, &pem)?;
        builder = builder
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(&pem).map_err(tls_err)?);
    }
    builder.build_rustls().map_err(tls_err)
}

/// A CA file must hold PEM certificates and nothing else: lettre accepts a
/// file without any, which would make every connection fail later with a
/// vaguer error.
fn check_ca_file(path: &Path, pem: &[u8]) -> Result<(), AuditError> {
    let bad = |what: String| {
        Err(AuditError::Config(format!(
            "smtp_ca_file: {} {what}; it must hold the PEM certificate(s) of the CA that \
             signed the relay's certificate, and nothing else",
            path.display()
        )))
    };
    let mut count = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        match block {
            Err(e) => return bad(format!("is not valid PEM ({e})")),
            Ok(p) if p.label != "CERTIFICATE" => {
                return bad(format!("holds a {:?} block", p.label));
            }
            Ok(p) if p.parse_x509().is_err() => {
                return bad(format!(
                    "holds a damaged certificate (number {})",
                    count + 1
                ));
            }
            Ok(_) => count += 1,
        }
    }
    if count == 0 {
        return bad("holds no PEM certificate".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(smtp: &str, user: Option<&str>, file: Option<&str>) -> AuditConfig {
        AuditConfig {
            smtp: Some(smtp.into()),
            smtp_user: user.map(str::to_string),
            smtp_password_file: file.map(Into::into),
            ..AuditConfig::default()
        }
    }

    fn error(c: &AuditConfig, dir: &Path) -> String {
        Mailer::from_config(c, dir).err().unwrap().to_string()
    }

    #[test]
    fn an_ipv6_relay_is_named_without_brackets() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mailer::from_config(&config("smtps://[::1]:465", None, None), dir.path()).unwrap();
        assert_eq!(m.host, "::1");
    }

    #[test]
    fn relay_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        crate::secrets::write_secret(&dir.path().join("pw"), b"s3cret\n").unwrap();
        let d = dir.path();
        assert!(Mailer::from_config(&config("smtp://localhost:25", None, None), d).is_ok());
        assert!(
            Mailer::from_config(&config("smtp://127.0.0.1:2525", Some("pd"), Some("pw")), d)
                .is_ok()
        );
        assert!(
            Mailer::from_config(
                &config("smtp+starttls://mail.example.com", Some("pd"), Some("pw")),
                d
            )
            .is_ok()
        );
        assert!(
            Mailer::from_config(
                &config("smtps://mail.example.com", Some("pd"), Some("pw")),
                d
            )
            .is_ok()
        );
        let e = error(
            &config("smtp://mail.example.com", Some("pd"), Some("pw")),
            d,
        );
        assert!(e.contains("in the clear"), "{e}");
        let e = error(&config("smtp://localhost", Some("pd"), None), d);
        assert!(e.contains("go together"), "{e}");
        let e = error(
            &config("smtps://mail.example.com", Some("pd"), Some("missing")),
            d,
        );
        assert!(
            e.contains("smtp_password_file") && e.contains("missing"),
            "{e}"
        );
        let e = error(&config("http://mail.example.com", None, None), d);
        assert!(e.contains("unknown scheme"), "{e}");
        let mut c = config("smtp://localhost", None, None);
        c.email_from = Some("not an address".into());
        assert!(error(&c, d).contains("email_from"));
    }

    #[test]
    fn a_relay_ca_file_must_hold_certificates_and_needs_tls() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let with_ca = |smtp: &str| AuditConfig {
            smtp_ca_file: Some("ca.pem".into()),
            ..config(smtp, None, None)
        };
        let e = error(&with_ca("smtps://mail.example.com"), d);
        assert!(e.contains("cannot read") && e.contains("ca.pem"), "{e}");
        let ca = crate::tls::self_signed(&["mail.example.com".into()]).unwrap();
        for (junk, says) in [
            (String::new(), "holds no PEM certificate"),
            ("not a certificate\n".into(), "holds no PEM certificate"),
            (
                format!("{}{}", ca.cert_pem, ca.key_pem),
                "holds a \"PRIVATE KEY\" block",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                "damaged certificate",
            ),
        ] {
            std::fs::write(d.join("ca.pem"), &junk).unwrap();
            let e = error(&with_ca("smtps://mail.example.com"), d);
            assert!(
                e.contains(says) && e.contains("nothing else"),
                "{junk:?}: {e}"
            );
        }
        std::fs::write(d.join("ca.pem"), &ca.cert_pem).unwrap();
        assert!(Mailer::from_config(&with_ca("smtps://mail.example.com"), d).is_ok());
        assert!(Mailer::from_config(&with_ca("smtp+starttls://mail.example.com"), d).is_ok());
        let e = error(&with_ca("smtp://mail.example.com"), d);
        assert!(e.contains("does not use TLS"), "{e}");
    }
}
