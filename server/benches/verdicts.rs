//! What judging a report on arrival adds to each submission: every report
//! check on a ~20 KB report (a long package list), read from its raw text
//! as the submit handler has it. Run with `cargo bench -p penguindome-server`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use penguindome_protocol::facts::{FACTS_VERSION, Known, fixtures, to_value};
use penguindome_protocol::wire::Report;
use penguindome_server::audit::checks::Facts;
use penguindome_server::audit::{Settings, verdicts};
use serde_json::value::RawValue;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The compliant fixtures with 150 pending updates (about 20 KB).
fn report() -> Report<Box<RawValue>> {
    let mut plugins = fixtures::compliant();
    let mut updates = fixtures::updates(150, Known::Value(0));
    updates.pending = (0..150)
        .map(|i| fixtures::pending(&format!("package-{i:04}"), false))
        .collect();
    plugins["os_updates"] = to_value(&updates);
    let raw: BTreeMap<String, Box<RawValue>> = plugins
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), RawValue::from_string(v.to_string()).unwrap()))
        .collect();
    Report {
        report_id: "bench".into(),
        hostname: "bench".into(),
        collected_at: Utc::now(),
        agent_version: "bench".into(),
        facts_version: FACTS_VERSION,
        plugins: raw,
    }
}

fn main() {
    let settings = Settings::from_config(&Default::default()).unwrap();
    let report = report();
    let size: usize = report.plugins.values().map(|r| r.get().len()).sum();
    let n = 2000;
    let mut times = Vec::with_capacity(n);
    let mut raised = 0;
    for _ in 0..n {
        let now = Utc::now();
        let t = Instant::now();
        let facts = Facts::of_report(&report, now);
        let v = verdicts::judge(&settings, &facts, now);
        let text = v.to_text();
        times.push(t.elapsed());
        raised += text.len() % 2;
    }
    println!(
        "judging a {} KB report ({} report checks): median {:?} over {n} runs ({raised})",
        size / 1024,
        settings.report_checks.len(),
        median(times)
    );
}
