//! `secrets access`: opening a client's sealed values, recorded first.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::Utc;
use penguindome_protocol::sealing::{SealedValue, Selector};
use serde::Serialize;
use serde_json::{Value, json};

use super::{SecretsCommand, Unlocked};
use crate::config::ServerConfig;
use crate::store::AdminStore;
use crate::store::diff::{Change, ChangeAction};

/// One sealed value found in a client's data.
#[derive(Debug, Serialize)]
struct Opened {
    field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_at: Option<String>,
    value: Value,
}

/// `secrets access`: records the access on the client's audit trail and in
/// the access log, then prints the opened values.
pub async fn access(
    config: &ServerConfig,
    store: &dyn AdminStore,
    unlocked: &Unlocked,
    cmd: &SecretsCommand,
    operator: &str,
) -> anyhow::Result<()> {
    let SecretsCommand::Access {
        client,
        selectors,
        audit_trail,
        json,
        ..
    } = cmd
    else {
        bail!("not an access");
    };
    let wanted = selectors
        .iter()
        .map(|s| Selector::parse(s).map(|s| s.audit_field()))
        .collect::<Result<Vec<_>, _>>()?;
    let id = store.resolve_client(client).await?;
    let doc = store
        .get_client(&id)
        .await?
        .with_context(|| format!("no client {client}"))?;
    let mut found = Vec::new();
    for (name, output) in &doc.plugins {
        find_sealed(output, &format!("plugins.{name}"), None, &mut found);
    }
    if *audit_trail {
        for r in store.audit_trail(&id, usize::MAX).await? {
            let when = Some(r.recorded_at.to_rfc3339());
            for v in [&r.old, &r.new].into_iter().flatten() {
                find_sealed(v, &r.field, when.clone(), &mut found);
            }
        }
    }
    found.retain(|(f, _, _)| wanted.is_empty() || wanted.iter().any(|w| under(f, w)));
    let others = found
        .iter()
        .filter(|(_, _, v)| v.key != unlocked.fingerprint)
        .count();
    if others > 0 {
        eprintln!(
            "{others} value(s) are sealed to another key of this site: give its shares to read them"
        );
        found.retain(|(_, _, v)| v.key == unlocked.fingerprint);
    }
    record_access(
        config,
        store,
        (&id, &doc.summary.hostname),
        operator,
        unlocked,
        &found,
        *audit_trail,
    )
    .await?;
    let opened = found
        .into_iter()
        .map(|(field, recorded_at, sealed)| {
            let value = unlocked.opener.open(&sealed)?;
            Ok(Opened {
                field,
                recorded_at,
                value,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_opened(&doc.summary.hostname, &opened, *json)
}

fn under(field: &str, selector: &str) -> bool {
    field == selector
        || field
            .strip_prefix(selector)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Every sealed marker in `value`, with the field it stands for.
fn find_sealed(
    value: &Value,
    path: &str,
    when: Option<String>,
    out: &mut Vec<(String, Option<String>, SealedValue)>,
) {
    if penguindome_protocol::sealing::sealed_digest(value).is_some() {
        if let Ok(m) =
            serde_json::from_value::<penguindome_protocol::sealing::Sealed>(value.clone())
        {
            out.push((path.to_string(), when, m.sealed));
        }
        return;
    }
    if let Value::Object(map) = value {
        for (k, v) in map {
            find_sealed(v, &format!("{path}.{k}"), when.clone(), out);
        }
    }
}

async fn record_access(
    config: &ServerConfig,
    store: &dyn AdminStore,
    (client_id, hostname): (&str, &str),
    operator: &str,
    unlocked: &Unlocked,
    found: &[(String, Option<String>, SealedValue)],
    audit_trail: bool,
) -> anyhow::Result<()> {
    let mut fields: Vec<&str> = found.iter().map(|(f, _, _)| f.as_str()).collect();
    fields.dedup();
    let now = Utc::now();
    let record = json!({
        "by": operator,
        "at": now.to_rfc3339(),
        "client_id": client_id,
        "hostname": hostname,
        "fields": fields,
        "audit_trail": audit_trail,
        "key": unlocked.fingerprint,
    });
    append_access_log(config, &record)?;
    let change = Change {
        field: "secrets.access".into(),
        action: ChangeAction::Add,
        old: None,
        new: Some(record),
    };
    store
        .note_on_audit_trail(client_id, hostname, change, now)
        .await
        .context("cannot record the access on the client's audit trail; nothing was shown")?;
    Ok(())
}

/// The access log: one JSON line per access, in the data directory.
pub fn access_log_path(config: &ServerConfig) -> PathBuf {
    config.data_path(Path::new("secrets-access.log"))
}

fn append_access_log(config: &ServerConfig, record: &Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let p = access_log_path(config);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&p)
        .with_context(|| {
            format!(
                "cannot open the access log {}; nothing was shown",
                p.display()
            )
        })?;
    f.write_all(format!("{record}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| {
            format!(
                "cannot write the access log {}; nothing was shown",
                p.display()
            )
        })
}

fn print_opened(hostname: &str, opened: &[Opened], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(opened)?);
        return Ok(());
    }
    if opened.is_empty() {
        println!("No sealed field of {hostname} matches.");
    }
    // serde_json escapes control characters: a hostile value prints as text.
    for o in opened {
        match &o.recorded_at {
            Some(at) => println!("{at}  {} = {}", o.field, o.value),
            None => println!("{} = {}", o.field, o.value),
        }
    }
    Ok(())
}
