//! `server-certificate-refused`: an agent met a server certificate that
//! its pin (or the system's roots) refused. That is what an interception
//! looks like, or a certificate rollout agent.toml did not follow; either
//! way someone should look. The agent reports it for a week.

use chrono::{DateTime, Utc};
use penguindome_protocol::facts::Fact;
use penguindome_protocol::facts::agent::Agent;

use super::{Check, Context, Facts, Finding, fact};

/// How long a refusal counts.
const REPORTED_DAYS: i64 = 7;

/// The agent refused the server's certificate lately.
pub struct CertificateRefused;

impl Check for CertificateRefused {
    fn name(&self) -> &'static str {
        "server-certificate-refused"
    }

    fn describe(&self) -> &'static str {
        "the agent refused the server's TLS certificate in the last week (interception, or a \
         certificate change agent.toml did not follow)"
    }

    fn expires(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Option<DateTime<Utc>> {
        let refusal = facts.read::<Agent>().ok()?.certificate_refused?;
        Some(refusal.at.0 + chrono::Duration::days(REPORTED_DAYS)).filter(|t| *t > cx.now)
    }

    fn evaluate(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Finding {
        // Agents run by hand (not from a package) may report no facts.
        if !facts.has(Agent::NAME) {
            return Finding::Clear;
        }
        let agent = match fact::<Agent>(facts) {
            Ok(a) => a,
            Err(f) => return f,
        };
        match agent.certificate_refused {
            Some(r) if cx.now - r.at.0 < chrono::Duration::days(REPORTED_DAYS) => {
                Finding::Raise(format!(
                    "at {} the agent refused the certificate of {}: {}",
                    r.at.0.format("%Y-%m-%d %H:%M UTC"),
                    r.url,
                    r.error
                ))
            }
            _ => Finding::Clear,
        }
    }
}
