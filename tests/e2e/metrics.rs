//! `/metrics`: refused without access rules, then scraped by address; the
//! counters move with real requests and the fleet gauges follow the store,
//! on both stores.

use std::process::Command;
use std::time::{Duration, Instant};

use penguindome_agent::transport::Transport;
use penguindome_tests::{Backend, SimClient, Site, free_port, stand_in, text};
use serde_json::json;

penguindome_tests::on_both_stores!(metrics_count_requests_reports_and_the_fleet);

/// (status, body) of a plain GET.
fn scrape(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["--silent", "--write-out", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or_default();
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of the sample `series` (name and labels exactly as printed),
/// zero when it is absent.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn metrics_count_requests_reports_and_the_fleet(backend: Backend) {
    let site = Site::init_on(&backend);
    let plain = free_port();
    site.append_server_config(&format!(
        "[[listener]]\nname = \"plain\"\naddress = \"127.0.0.1:{plain}\"\n"
    ));
    let _server = site.start();
    let url = format!("http://127.0.0.1:{plain}/metrics");
    let (status, body) = scrape(&url);
    assert_eq!(status, 401, "no rules, no metrics: {body}");

    let out = site.admin(&["access", "allow-ip", "metrics", "127.0.0.0/8"]);
    assert!(out.status.success(), "{}", text(&out));
    let (status, before) = wait_for_rules(&url);
    let before_at = Instant::now();
    assert_eq!(status, 200, "{before}");
    assert!(before.ends_with("# EOF\n"), "OpenMetrics text: {before}");
    assert_eq!(
        sample(&before, "penguindome_clients{state=\"enrolled\"}"),
        0.0
    );

    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let client = SimClient::enroll(&config, &transport, "metered").unwrap();
    let report = SimClient::report("metered", json!({"site": {"k": "v"}}));
    assert_eq!(client.submit(&transport, &report).status, 200);
    assert_eq!(client.submit(&transport, &report).status, 200, "duplicate");
    let out = site.admin(&[
        "issues",
        "open",
        "--host",
        "metered",
        "--issue",
        "metered-check",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let agent = stand_in(site.dir.path(), "penguindome-agent");
    let out = site.admin(&[
        "release",
        "--formats",
        "deb",
        "--agent-binary",
        &agent.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Fleet counts are read again once the last read is 5 s old.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(before_at.elapsed()));
    let (status, after) = scrape(&url);
    assert_eq!(status, 200, "{after}");
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let submit = "endpoint=\"/penguindome/v1/submit\"";
    assert_eq!(
        moved(&format!(
            "penguindome_http_requests_total{{{submit},status=\"200\"}}"
        )),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved(&format!(
            "penguindome_http_request_duration_seconds_count{{{submit}}}"
        )),
        2.0
    );
    assert_eq!(
        moved("penguindome_reports_total{outcome=\"stored\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("penguindome_reports_total{outcome=\"duplicate\"}"),
        1.0,
        "{after}"
    );
    assert!(
        sample(&after, "penguindome_refusals_total{code=\"unauthorized\"}") >= 1.0,
        "{after}"
    );
    let store = if matches!(backend, Backend::Sqlite) {
        "sqlite"
    } else {
        "mongodb"
    };
    let batches = format!("penguindome_store_batch_size_count{{backend=\"{store}\"}}");
    assert!(moved(&batches) >= 1.0, "{after}");
    assert_eq!(
        sample(&after, "penguindome_clients{state=\"enrolled\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "penguindome_clients_seen{within=\"1h\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "penguindome_open_issues{check=\"metered-check\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(sample(&after, "penguindome_release_serial"), 1.0, "{after}");
    let took = sample(&after, "penguindome_release_publish_duration_seconds");
    assert!(took > 0.0 && took < 600.0, "publish took {took} s: {after}");
}

/// The server re-reads access.toml within a second or so.
fn wait_for_rules(url: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = scrape(url);
        if status != 401 || Instant::now() > deadline {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
