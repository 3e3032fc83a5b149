//! The audit's words: what the terminal, the journal and the mails say.

use super::Due;

/// Host names and details come from clients: no control characters (a
/// terminal escape, a forged line in a mail), line separators or
/// bidirectional overrides (text that reads other than it is) reach people.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let invisible = matches!(c,
                '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}');
            if c.is_control() || invisible { '?' } else { c }
        })
        .collect()
}

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
        format!("{} ({}, {last})", clean(&host.hostname), host.client_id)
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
            out.push_str(&clean(d));
        }
        out.push('\n');
    }
    out
}

/// The mail to a machine's user.
pub fn user_mail(host: &Due) -> (String, String) {
    let hostname = clean(&host.hostname);
    let subject = format!("Please fix the problems PenguinDome found on {hostname}");
    let mut body = format!(
        "PenguinDome watches {hostname} for your organisation's security rules and found:\n\n"
    );
    for i in &host.issues {
        body.push_str(&format!("- {}", i.name));
        if let Some(d) = &i.detail {
            body.push_str(&format!(": {}", clean(d)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Issue;

    #[test]
    fn client_text_cannot_forge_lines_or_escape_sequences() {
        let now = chrono::Utc::now();
        let due = Due {
            client_id: "c1".into(),
            hostname: "evil\nSubject: hi\u{1b}[2J\u{202E}gpj.exe\u{2028}".into(),
            last_report_at: None,
            user_email: None,
            issues: vec![Issue::open(
                "c1",
                "firewall-disabled",
                Some("off\r\nBcc: x".into()),
                now,
            )],
        };
        let text = render(std::slice::from_ref(&due));
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202E}') && !text.contains('\u{2028}')
        );
        let (subject, body) = user_mail(&due);
        assert!(
            !subject.contains('\n') && !body.contains('\r'),
            "{subject} {body}"
        );
        assert!(body.contains("off??Bcc: x"), "{body}");
    }
}
