//! `os-update-available` and `os-end-of-life`: a newer release of the
//! distribution is out, or the installed one no longer gets security
//! updates. The agent judges its release from the machine's own data
//! (distro-info-data, osinfo-db, os-release's SUPPORT_END); where it cannot,
//! or is too old to say, the server's table in `releases/` answers.

use chrono::NaiveDate;
use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::os_info::{OsInfo, ReleaseSupport, releases};

use super::{Check, Context, Facts, Finding, fact};

/// A newer release of the distribution is out.
pub struct UpdateAvailable;

/// The installed release is past its end of security support.
pub struct EndOfLife;

/// The server's fallback tables, in distro-info's form.
const TABLES: &[(&str, &str)] = &[
    ("debian", include_str!("releases/debian.csv")),
    ("ubuntu", include_str!("releases/ubuntu.csv")),
    ("fedora", include_str!("releases/fedora.csv")),
];

/// The agent's judgement, with the server's table filling what it could
/// not tell.
fn release_support(os: &OsInfo, today: NaiveDate) -> ReleaseSupport {
    let agent = os.release.clone();
    let complete = agent
        .as_ref()
        .is_some_and(|r| !r.support_ends.is_unknown() && !r.newer_release.is_unknown());
    if complete {
        return agent.expect("checked above");
    }
    let Some(table) = server_table(os, today) else {
        return agent.unwrap_or(ReleaseSupport {
            support_ends: Known::UNKNOWN,
            newer_release: Known::UNKNOWN,
            evidence: vec!["the agent is too old to judge its release".into()],
        });
    };
    match agent {
        None => table,
        Some(mut a) => {
            if a.support_ends.is_unknown() {
                a.support_ends = table.support_ends;
            }
            if a.newer_release.is_unknown() {
                a.newer_release = table.newer_release;
            }
            a.evidence.extend(table.evidence);
            a
        }
    }
}

/// The server's table's answer for this release, if it lists it.
fn server_table(os: &OsInfo, today: NaiveDate) -> Option<ReleaseSupport> {
    let id = os.id.as_deref()?;
    let (_, text) = TABLES.iter().find(|(name, _)| *name == id)?;
    // The tables are compiled in and tested: they parse.
    let table = releases::parse(text).ok()?;
    let current = releases::find(
        &table,
        os.version_id.as_deref(),
        os.version_codename.as_deref(),
    )?;
    Some(releases::judge(
        &table,
        current,
        today,
        "the server's release table",
    ))
}

/// The release as people name it.
fn installed(os: &OsInfo) -> String {
    os.pretty_name
        .clone()
        .or_else(|| os.name.clone())
        .unwrap_or_else(|| "the installed release".into())
}

impl Check for UpdateAvailable {
    fn name(&self) -> &'static str {
        "os-update-available"
    }

    fn describe(&self) -> &'static str {
        "a newer release of the distribution is out (Ubuntu LTS: a newer LTS)"
    }

    fn default_grace(&self) -> &'static str {
        "60d"
    }

    fn default_realert(&self) -> &'static str {
        "7d"
    }

    fn evaluate(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Finding {
        let os = match fact::<OsInfo>(facts) {
            Ok(os) => os,
            Err(f) => return f,
        };
        match release_support(&os, cx.now.date_naive()).newer_release {
            Known::Value(Some(newer)) => {
                Finding::Raise(format!("{} is installed; {newer} is out", installed(&os)))
            }
            // Not knowing whether a newer release exists is no risk of its
            // own; the end of support is what matters, and has its check.
            Known::Value(None) | Known::Unknown(_) | Known::Sealed(_) => Finding::Clear,
        }
    }
}

impl Check for EndOfLife {
    fn name(&self) -> &'static str {
        "os-end-of-life"
    }

    fn expires(
        &self,
        facts: &Facts<'_>,
        cx: &Context<'_>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let os = facts.read::<OsInfo>().ok()?;
        match release_support(&os, cx.now.date_naive()).support_ends {
            // A passed end stays passed: only a coming one expires the verdict.
            Known::Value(Some(end)) => end
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .filter(|t| *t > cx.now),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        "the installed release no longer gets security updates from its distribution"
    }

    fn evaluate(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Finding {
        let os = match fact::<OsInfo>(facts) {
            Ok(os) => os,
            Err(f) => return f,
        };
        let today = cx.now.date_naive();
        let support = release_support(&os, today);
        match support.support_ends {
            Known::Value(Some(end)) if end <= today => {
                let upgrade = match support.newer_release {
                    Known::Value(Some(newer)) => format!("; upgrade to {newer}"),
                    _ => String::new(),
                };
                Finding::Raise(format!(
                    "{} has had no security support since {end}{upgrade}",
                    installed(&os)
                ))
            }
            _ => Finding::Clear,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_tables_parse_and_know_current_releases() {
        for (name, text) in TABLES {
            let table = releases::parse(text).unwrap_or_else(|e| panic!("{name}.csv: {e}"));
            assert!(table.len() >= 5, "{name}");
        }
    }
}
