//! Fixture tests: captures of real rulesets (see
//! agent/tests/fixtures/firewall/README.md) replayed through a fixture host.

use super::*;
use crate::collectors::NoCache;
use penguindome_protocol::facts::firewall::Firewall as Facts;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/firewall");
const NFT: &str = "/.commands/nft -j list ruleset";
const LEGACY4: &str = "/.commands/iptables-legacy-save -t filter";
const LEGACY6: &str = "/.commands/ip6tables-legacy-save -t filter";
const UFW_ENABLED: &str = "# /etc/ufw/ufw.conf\n#\n\n# Set to yes to start on boot. If setting this remotely, be sure to add a rule\n# to allow your remote connection before starting ufw. Eg: 'ufw allow 22/tcp'\nENABLED=yes\n\n# Please use the 'ufw' command to set the loglevel. Eg: 'ufw logging medium'.\n# See 'man ufw' for details.\nLOGLEVEL=low\n";
/// firewalld 1.3.3's answers, as busctl showed them on the captured machine.
const FIREWALLD_BUS: &str = r#"{
  "properties": {
    "org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1 state": "RUNNING",
    "org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1 version": "1.3.3"
  },
  "calls": {
    "org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner org.fedoraproject.FirewallD1": true,
    "org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1 getDefaultZone": "FedoraWorkstation"
  }
}"#;

fn capture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A machine with IPv6 on and the given files; files under sbin and bin
/// are made executable.
fn machine(files: &[(&str, String)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut all = vec![
        (
            "/proc/net/if_inet6",
            "00000000000000000000000000000001 01 80 10 80       lo\n".to_string(),
        ),
        (
            "/proc/sys/net/ipv6/conf/all/disable_ipv6",
            "0\n".to_string(),
        ),
        ("/proc/net/ip_tables_names", String::new()),
        ("/proc/net/ip6_tables_names", String::new()),
    ];
    all.extend(files.iter().cloned());
    for (p, c) in all {
        let p = d.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, c).unwrap();
        if p.to_string_lossy().contains("bin/") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    d
}

/// A machine with nft whose ruleset is the given capture.
fn nft_machine(capture_name: &str, more: &[(&str, String)]) -> tempfile::TempDir {
    let mut files = vec![
        ("/usr/sbin/nft", String::new()),
        (NFT, capture(capture_name)),
    ];
    files.extend(more.iter().cloned());
    machine(&files)
}

/// The answer as JSON, as the agent sends it.
fn json(d: &tempfile::TempDir) -> Value {
    Firewall
        .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
        .unwrap()
}

/// The answer read back as the typed contract.
fn collect(d: &tempfile::TempDir) -> Facts {
    serde_json::from_value(json(d)).unwrap()
}

fn has(list: &[String], needle: &str) -> bool {
    list.iter().any(|s| s.contains(needle))
}

#[test]
fn debian12_default_nftables_conf_is_off() {
    let v = collect(&nft_machine("debian12-default.nft.json", &[]));
    assert_eq!(v.status, Status::Off);
    assert!(!v.ipv4.filtered);
    assert!(!v.ipv6.filtered);
    assert_eq!(v.managers, ["nftables"]);
    assert!(
        has(
            &v.evidence,
            "IPv4: packets no rule allows pass inet filter input (policy accept)"
        ),
        "{v:?}"
    );
    assert!(has(&v.evidence, "no legacy iptables tables are loaded"));
}

#[test]
fn fedora_firewalld_rejects_after_zone_dispatch() {
    let d = nft_machine(
        "fedora-firewalld.nft.json",
        &[("/.dbus.json", FIREWALLD_BUS.to_string())],
    );
    let v = collect(&d);
    assert_eq!(v.status, Status::On, "{v:?}");
    let by = ["inet firewalld filter_INPUT (catch-all reject in filter_IN_FedoraWorkstation)"];
    assert_eq!(v.ipv4.by, by);
    assert_eq!(v.ipv6.by, by);
    assert_eq!(v.managers, ["firewalld"]);
    assert!(
        has(
            &v.evidence,
            "firewalld 1.3.3, state RUNNING, default zone FedoraWorkstation"
        ),
        "{v:?}"
    );
}

#[test]
fn firewalld_trusted_zone_accepts_everything() {
    let v = collect(&nft_machine("firewalld-trusted.nft.json", &[]));
    assert_eq!(v.status, Status::Off);
    assert!(has(
        &v.evidence,
        "IPv4: packets no rule allows pass inet firewalld filter_INPUT (catch-all accept in filter_IN_trusted)"
    ));
    // firewalld's table is seen; the bus (absent here) is only context.
    assert_eq!(v.managers, ["firewalld"]);
    assert!(has(&v.evidence, "D-Bus: no system bus"));
}

#[test]
fn ufw_enabled_on_iptables_nft_is_on() {
    let d = nft_machine(
        "ufw-enabled.nft.json",
        &[("/etc/ufw/ufw.conf", UFW_ENABLED.to_string())],
    );
    let v = collect(&d);
    assert_eq!(v.status, Status::On, "{v:?}");
    assert_eq!(v.managers, ["ufw"]);
    // Packets ufw-not-local does not return are dropped there; the rest
    // reach the policy.
    assert_eq!(
        v.ipv4.by,
        [
            "ip filter INPUT (catch-all drop in ufw-not-local)",
            "ip filter INPUT (policy drop)"
        ]
    );
    assert_eq!(v.ipv6.by, ["ip6 filter INPUT (policy drop)"]);
    assert!(has(&v.evidence, "/etc/ufw/ufw.conf: ENABLED=yes"));
}

#[test]
fn ufw_installed_but_disabled_is_off() {
    let conf = UFW_ENABLED.replace("ENABLED=yes", "ENABLED=no");
    let d = nft_machine("ufw-disabled.nft.json", &[("/etc/ufw/ufw.conf", conf)]);
    let v = collect(&d);
    assert_eq!(v.status, Status::Off);
    assert!(v.managers.is_empty(), "{v:?}");
    assert!(has(
        &v.evidence,
        "ufw chains are loaded but ufw is disabled"
    ));
    assert!(has(
        &v.evidence,
        "IPv6: packets no rule allows pass ip6 filter INPUT (policy accept)"
    ));
}

#[test]
fn ufw_enabled_without_its_chains_is_not_trusted() {
    let d = nft_machine(
        "debian12-default.nft.json",
        &[("/etc/ufw/ufw.conf", UFW_ENABLED.to_string())],
    );
    let v = collect(&d);
    assert_eq!(v.status, Status::Off);
    assert_eq!(v.managers, ["nftables"]);
    assert!(has(
        &v.evidence,
        "ufw is enabled but none of its chains are loaded"
    ));
}

#[test]
fn ufw_on_legacy_iptables_is_on() {
    let d = nft_machine(
        "empty.nft.json",
        &[
            ("/etc/ufw/ufw.conf", UFW_ENABLED.to_string()),
            ("/proc/net/ip_tables_names", "filter\n".into()),
            ("/proc/net/ip6_tables_names", "filter\n".into()),
            ("/usr/sbin/iptables-legacy-save", String::new()),
            ("/usr/sbin/ip6tables-legacy-save", String::new()),
            (LEGACY4, capture("ufw-legacy.iptables-legacy-save")),
            (LEGACY6, capture("ufw-legacy.ip6tables-legacy-save")),
        ],
    );
    let v = collect(&d);
    assert_eq!(v.status, Status::On, "{v:?}");
    assert_eq!(v.managers, ["ufw"]);
    assert!(has(
        &v.ipv4.by,
        "iptables-legacy filter INPUT (policy drop)"
    ));
    assert!(has(
        &v.ipv6.by,
        "ip6tables-legacy filter INPUT (policy drop)"
    ));
}

#[test]
fn handwritten_nftables_policy_drop_is_on() {
    let v = collect(&nft_machine("nftables-drop.nft.json", &[]));
    assert_eq!(v.status, Status::On);
    assert_eq!(v.ipv4.by, ["inet filter input (policy drop)"]);
    assert_eq!(v.ipv6.by, ["inet filter input (policy drop)"]);
    assert_eq!(v.managers, ["nftables"]);
}

#[test]
fn per_family_jumps_in_an_inet_chain() {
    let v = collect(&nft_machine("split-families.nft.json", &[]));
    assert_eq!(v.status, Status::Off);
    assert_eq!(v.ipv4.by, ["inet filter input (catch-all drop in deny)"]);
    assert!(!v.ipv6.filtered);
    assert!(has(
        &v.evidence,
        "IPv6: packets no rule allows pass inet filter input (policy accept)"
    ));
}

#[test]
fn one_filtering_base_chain_on_the_hook_is_enough() {
    let v = collect(&nft_machine("stacked.nft.json", &[]));
    assert_eq!(v.status, Status::On, "{v:?}");
    assert_eq!(v.ipv4.by, ["inet guard input (catch-all reject)"]);
}

#[test]
fn dormant_table_filters_nothing() {
    let json = capture("stacked.nft.json").replace(
        r#""name": "guard", "handle": 2}"#,
        r#""name": "guard", "handle": 2, "flags": ["dormant"]}"#,
    );
    assert!(
        json.contains("dormant"),
        "fixture changed: adjust the replace"
    );
    let d = machine(&[("/usr/sbin/nft", String::new()), (NFT, json)]);
    let v = collect(&d);
    assert_eq!(v.status, Status::Off);
    assert!(has(&v.evidence, "table inet guard is dormant"));
}

#[test]
fn legacy_ipv4_drop_with_ipv6_accept_is_off() {
    let d = nft_machine(
        "empty.nft.json",
        &[
            ("/proc/net/ip_tables_names", "filter\n".into()),
            ("/proc/net/ip6_tables_names", "filter\n".into()),
            ("/usr/sbin/iptables-legacy-save", String::new()),
            ("/usr/sbin/ip6tables-legacy-save", String::new()),
            (LEGACY4, capture("legacy-drop.iptables-legacy-save")),
            (LEGACY6, capture("legacy-accept.ip6tables-legacy-save")),
        ],
    );
    let v = collect(&d);
    assert_eq!(v.status, Status::Off);
    assert_eq!(v.ipv4.by, ["iptables-legacy filter INPUT (policy drop)"]);
    assert!(!v.ipv6.filtered);
    assert_eq!(v.managers, ["iptables-legacy"]);
    assert!(has(
        &v.evidence,
        "IPv6: packets no rule allows pass ip6tables-legacy filter INPUT (policy accept)"
    ));
    assert!(has(
        &v.evidence,
        "/proc/net/ip_tables_names: legacy iptables tables loaded: filter"
    ));
}

#[test]
fn ipv6_disabled_needs_only_ipv4() {
    let d = nft_machine(
        "empty.nft.json",
        &[
            ("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1\n".into()),
            ("/proc/net/ip_tables_names", "filter\n".into()),
            ("/usr/sbin/iptables-legacy-save", String::new()),
            (LEGACY4, capture("legacy-drop.iptables-legacy-save")),
        ],
    );
    let v = collect(&d);
    assert_eq!(v.status, Status::On, "{v:?}");
    assert_eq!(v.ipv6.disabled, Some(true));
    assert!(has(&v.evidence, "disable_ipv6 = 1"));
}

#[test]
fn legacy_tables_with_only_the_nft_variant_save_are_unknown() {
    let d = nft_machine(
        "empty.nft.json",
        &[
            ("/proc/net/ip_tables_names", "filter\n".into()),
            ("/usr/sbin/iptables-save", String::new()),
            (
                "/.commands/iptables-save -t filter",
                capture("nft-variant.iptables-save"),
            ),
        ],
    );
    let v = collect(&d);
    assert_eq!(v.status, Status::Unknown);
    assert!(has(&v.evidence, "is the nf_tables variant"), "{v:?}");
}

#[test]
fn docker_only_is_off() {
    let v = collect(&nft_machine("docker.nft.json", &[]));
    assert_eq!(v.status, Status::Off);
    assert_eq!(v.managers, ["docker"]);
    // Both the nat and the filter table have an input base chain.
    assert!(has(
        &v.evidence,
        "IPv4: packets no rule allows pass ip filter INPUT (policy accept)"
    ));
    assert!(has(
        &v.evidence,
        "IPv4: packets no rule allows pass ip nat INPUT (policy accept)"
    ));
    assert!(has(&v.evidence, "IPv6: no input chain is loaded"));
}

#[test]
fn empty_ruleset_is_off() {
    let v = collect(&nft_machine("empty.nft.json", &[]));
    assert_eq!(v.status, Status::Off);
    assert!(has(&v.evidence, "the nftables ruleset is empty"));
    assert!(v.managers.is_empty());
}

#[test]
fn nft_missing_without_legacy_tables_is_off() {
    let v = collect(&machine(&[]));
    assert_eq!(v.status, Status::Off, "{v:?}");
    assert!(has(&v.evidence, "nft is not installed"));
    assert!(has(&v.evidence, "no legacy iptables tables are loaded"));
}

#[test]
fn nft_missing_while_firewalld_runs_is_unknown() {
    let v = collect(&machine(&[("/.dbus.json", FIREWALLD_BUS.to_string())]));
    assert_eq!(v.status, Status::Unknown);
    assert_eq!(v.managers, ["firewalld"]);
    assert!(has(&v.evidence, "install the nftables package"));
}

#[test]
fn nft_without_permission_is_unknown() {
    let d = machine(&[
        ("/usr/sbin/nft", String::new()),
        (NFT, String::new()),
        ("/.commands/nft -j list ruleset.status", "1\n".into()),
        (
            "/.commands/nft -j list ruleset.stderr",
            capture("nft-eperm.stderr"),
        ),
    ]);
    let v = collect(&d);
    assert_eq!(v.status, Status::Unknown);
    assert!(
        !has(&v.evidence, "no input chain"),
        "nothing is known about the chains: {v:?}"
    );
    assert!(
        has(
            &v.evidence,
            "/usr/sbin/nft -j list ruleset failed (exit 1): Operation not permitted (you must be root); netlink: Error: cache initialization failed: Operation not permitted (the agent must run as root"
        ),
        "{v:?}"
    );
}

#[test]
fn malformed_nft_json_is_unknown() {
    let truncated: String = capture("fedora-firewalld.nft.json")
        .chars()
        .take(5000)
        .collect();
    for bad in [
        truncated.as_str(),
        "",
        "{\"nftables\": 3}",
        "[1, 2]",
        "null",
    ] {
        let d = machine(&[("/usr/sbin/nft", String::new()), (NFT, bad.to_string())]);
        let v = collect(&d);
        assert_eq!(v.status, Status::Unknown, "{bad:.40}: {v:?}");
        assert!(has(&v.evidence, "printed no usable nftables JSON"));
    }
}

#[test]
fn output_is_stable() {
    let d = nft_machine(
        "ufw-enabled.nft.json",
        &[("/etc/ufw/ufw.conf", UFW_ENABLED.to_string())],
    );
    let a = json(&d);
    assert_eq!(a, json(&d));
    let typed: Facts = serde_json::from_value(a.clone()).unwrap();
    for list in [&typed.evidence, &typed.managers, &typed.ipv4.by] {
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(list, &sorted);
    }
    // No handles or counters leak into values.
    assert!(!a.to_string().contains("handle"));
    assert!(!a.to_string().contains("packets 0"));
}

/// IPv6 says whether it is disabled; IPv4 has no such key on the wire.
#[test]
fn only_ipv6_says_disabled() {
    let a = json(&nft_machine("nftables-drop.nft.json", &[]));
    assert_eq!(a["ipv6"]["disabled"], false, "{a}");
    assert!(a["ipv4"].get("disabled").is_none(), "{a}");
    let typed: Facts = serde_json::from_value(a).unwrap();
    assert_eq!(typed.ipv4.disabled, None);
}
