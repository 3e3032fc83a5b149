//! `required-software-missing`: a package or service the site requires is
//! absent or stopped.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::software::Software;

use super::{Check, Context, Facts, Finding, fact};

/// Required software is missing or not running.
pub struct RequiredSoftware;

impl Check for RequiredSoftware {
    fn name(&self) -> &'static str {
        "required-software-missing"
    }

    fn describe(&self) -> &'static str {
        "a package or service required by agent.toml [collectors] is missing or not running"
    }

    fn default_grace(&self) -> &'static str {
        "4h"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let s = match fact::<Software>(facts) {
            Ok(s) => s,
            Err(f) => return f,
        };
        if s.compliant {
            return Finding::Clear;
        }
        let mut missing = Vec::new();
        for p in s
            .packages
            .iter()
            .filter(|p| p.installed != Known::Value(true))
        {
            missing.push(format!("package {} not installed", p.name));
        }
        for v in &s.services {
            if v.running != Known::Value(true) || !v.enabled {
                let state = Some(v.state.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or("not running");
                missing.push(format!("service {} is {state}", v.name));
            }
        }
        if missing.is_empty() {
            missing.push("required software is not in place".into());
        }
        Finding::Raise(missing.join("; "))
    }
}
