//! `required-software-missing`: a package or service the site requires is
//! absent or stopped.

use serde_json::Value;

use super::{Check, Context, Facts, Finding, plugin};

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
        let v = match plugin(facts, "software") {
            Ok(v) => v,
            Err(f) => return f,
        };
        if v["compliant"] == true {
            return Finding::Clear;
        }
        let mut missing = Vec::new();
        for p in v["packages"].as_array().into_iter().flatten() {
            if p["installed"] != Value::Bool(true) {
                missing.push(format!(
                    "package {} not installed",
                    p["name"].as_str().unwrap_or("?")
                ));
            }
        }
        for s in v["services"].as_array().into_iter().flatten() {
            if s["running"] != Value::Bool(true) || s["enabled"] != Value::Bool(true) {
                missing.push(format!(
                    "service {} is {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["state"].as_str().unwrap_or("not running")
                ));
            }
        }
        if missing.is_empty() {
            missing.push("required software is not in place".into());
        }
        Finding::Raise(missing.join("; "))
    }
}
