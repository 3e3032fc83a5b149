//! Sends the audit's mails through an SMTP relay (lettre).

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{Message, SmtpTransport, Transport};

use super::AuditError;
use crate::config::AuditConfig;

/// A relay and a sender.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    relay: String,
}

impl Mailer {
    /// The relay `[audit] smtp` names (default `smtp://localhost:25`).
    pub fn from_config(c: &AuditConfig) -> Result<Self, AuditError> {
        let relay = c
            .smtp
            .clone()
            .unwrap_or_else(|| "smtp://localhost:25".into());
        let url = url::Url::parse(&relay).map_err(|e| {
            AuditError::Config(format!(
                "smtp {relay:?} is not a URL like smtp://host:25: {e}"
            ))
        })?;
        let host = url
            .host_str()
            .ok_or_else(|| AuditError::Config(format!("smtp {relay:?} names no host")))?
            .to_string();
        let tls_err = |e: lettre::transport::smtp::Error| {
            AuditError::Config(format!("smtp {relay:?}: cannot set up TLS: {e}"))
        };
        let builder = match url.scheme() {
            "smtp" => SmtpTransport::builder_dangerous(&host).port(url.port().unwrap_or(25)),
            "smtp+starttls" => SmtpTransport::starttls_relay(&host)
                .map_err(tls_err)?
                .port(url.port().unwrap_or(587)),
            "smtps" => SmtpTransport::relay(&host)
                .map_err(tls_err)?
                .port(url.port().unwrap_or(465)),
            other => {
                return Err(AuditError::Config(format!(
                    "smtp {relay:?}: unknown scheme {other:?}; use smtp://, smtp+starttls:// or smtps://"
                )));
            }
        };
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
            AuditError::Mail(format!(
                "the relay {} did not take the mail to {to}: {e}",
                self.relay
            ))
        })?;
        Ok(())
    }
}
