//! `ssh-password-authentication` and `ssh-root-password-authentication`:
//! a running sshd that accepts passwords (guessable from the network).

use penguindome_protocol::facts::sshd::Sshd;

use super::{Check, Context, Facts, Finding, fact};

/// sshd accepts password logins.
pub struct PasswordAuthentication;

/// sshd accepts root logins with a password.
pub struct RootPasswordLogin;

/// The value of an sshd setting when sshd can be reached, or why not.
fn setting(facts: &Facts<'_>, key: &str) -> Result<Option<String>, Finding> {
    let mut sshd = fact::<Sshd>(facts)?;
    // Stopped or missing: nobody can log in over ssh now. A stopped sshd
    // that is started later shows up in the next report.
    Ok(sshd.reachable().then(|| sshd.config.remove(key)).flatten())
}

impl Check for PasswordAuthentication {
    fn name(&self) -> &'static str {
        "ssh-password-authentication"
    }

    fn describe(&self) -> &'static str {
        "a running sshd accepts password authentication"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        match setting(facts, "passwordauthentication") {
            Err(f) => f,
            Ok(Some(v)) if v == "yes" => Finding::Raise(
                "sshd runs with PasswordAuthentication yes; use keys (PasswordAuthentication no)"
                    .into(),
            ),
            Ok(_) => Finding::Clear,
        }
    }
}

impl Check for RootPasswordLogin {
    fn name(&self) -> &'static str {
        "ssh-root-password-authentication"
    }

    fn describe(&self) -> &'static str {
        "a running sshd lets root log in with a password"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        match setting(facts, "permitrootlogin") {
            Err(f) => f,
            Ok(Some(v)) if v == "yes" => Finding::Raise(
                "sshd runs with PermitRootLogin yes; use prohibit-password or no".into(),
            ),
            Ok(_) => Finding::Clear,
        }
    }
}
