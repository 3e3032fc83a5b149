//! The audit's words: what the terminal, the journal and the mails say.

use super::Due;

/// Every due issue, grouped by host.
pub fn render(due: &[Due]) -> String {
    let mut out = String::new();
    for host in due {
        out.push_str(&host_block(host));
    }
    out
}

/// One host's due issues.
pub fn host_block(host: &Due) -> String {
    let last = host
        .last_report_at
        .map(|t| format!("last report {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_else(|| "no report yet".into());
    let who = if host.client_id.starts_with("server:") {
        host.client_id.clone()
    } else {
        format!("{} ({}, {last})", host.hostname, host.client_id)
    };
    let mut out = format!("{who}\n");
    for i in &host.issues {
        out.push_str(&format!(
            "  {} since {}",
            i.name,
            i.opened_at.format("%Y-%m-%d %H:%M UTC")
        ));
        if let Some(d) = &i.detail {
            out.push_str(": ");
            out.push_str(d);
        }
        out.push('\n');
    }
    out
}

/// The mail to a machine's user.
pub fn user_mail(host: &Due) -> (String, String) {
    let subject = format!(
        "Please fix the problems PenguinDome found on {}",
        host.hostname
    );
    let mut body = format!(
        "PenguinDome watches {} for your organisation's security rules and found:\n\n",
        host.hostname
    );
    for i in &host.issues {
        body.push_str(&format!("- {}", i.name));
        if let Some(d) = &i.detail {
            body.push_str(&format!(": {d}"));
        }
        body.push('\n');
    }
    body.push_str(
        "\nPlease fix them, or ask your administrators for help. This message \
         repeats until the next report shows them fixed.\n",
    );
    (subject, body)
}

/// The digest mail to the administrators.
pub fn admin_mail(due: &[Due]) -> (String, String) {
    let count: usize = due.iter().map(|d| d.issues.len()).sum();
    let subject = format!(
        "PenguinDome audit: {count} issue(s) on {} machine(s)",
        due.len()
    );
    let body = format!(
        "{}\nSnooze, close or list them with `pdome-admin issues`.\n",
        render(due)
    );
    (subject, body)
}
