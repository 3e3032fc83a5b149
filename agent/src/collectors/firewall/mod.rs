//! firewall: is inbound traffic filtered, for IPv4 and for IPv6, judged
//! from the rules active in the kernel rather than from which firewall
//! package is installed or enabled.
//!
//! nftables holds the rules of nft itself, of iptables-nft, ufw and
//! firewalld; `nft -j list ruleset` lists them all in one process. Legacy
//! x_tables rules live apart and are read with iptables-legacy-save, but
//! only when /proc says such tables are loaded. A family is filtered when
//! some input base chain sends every packet that no rule explicitly allows
//! to a drop or reject (see [`ruleset`] for the walk). Which front end made
//! the rules (firewalld, ufw, Docker, iptables, nftables) is reported as
//! context; it never decides the verdict.

use std::collections::BTreeSet;
use std::io::ErrorKind;

use penguindome_protocol::facts::firewall::{self as facts, Status};
use penguindome_protocol::facts::to_value;
use serde_json::Value;

use super::{CollectError, Collector, Context};
use crate::host::{BusError, Host};

mod iptables;
mod nft;

/// Runs both ruleset parsers on untrusted text (the fuzz targets).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_untrusted(text: &str) {
    let _ = nft::parse(text);
    let _ = iptables::parse_filter(text, "iptables-save");
}
mod ruleset;

use ruleset::{Family, Judgement, Table};

const FIREWALLD_SERVICE: &str = "org.fedoraproject.FirewallD1";
const FIREWALLD_PATH: &str = "/org/fedoraproject/FirewallD1";
const UFW_CONF: &str = "/etc/ufw/ufw.conf";
/// Built-in chain names iptables gives its tables.
const IPTABLES_CHAINS: &[&str] = &["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"];
const IPTABLES_TABLES: &[&str] = &["filter", "nat", "mangle", "raw", "security"];

/// The collector.
pub struct Firewall;

/// What was found for one address family.
#[derive(Default)]
struct FamilyReport {
    /// Where unallowed packets end, from chains that filter.
    by: BTreeSet<String>,
    /// Where they end, from chains that do not.
    passes: BTreeSet<String>,
    /// Input chains looked at.
    chains: usize,
}

impl FamilyReport {
    fn add(&mut self, j: Judgement) {
        self.chains += 1;
        if j.filtered() {
            self.by.extend(j.drops);
        } else {
            self.passes.extend(j.passes);
        }
    }

    fn filtered(&self) -> bool {
        !self.by.is_empty()
    }
}

/// Everything found so far.
#[derive(Default)]
struct Findings {
    v4: FamilyReport,
    v6: FamilyReport,
    managers: BTreeSet<String>,
    evidence: BTreeSet<String>,
    /// Why part of the rules could not be read.
    unreadable: Vec<String>,
    /// ufw chains seen anywhere.
    ufw_chains: bool,
}

impl Findings {
    fn family(&mut self, f: Family) -> &mut FamilyReport {
        match f {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn judge(&mut self, family: Family, table: &Table) {
        for input in &table.inputs {
            let j = ruleset::judge(table, input);
            self.family(family).add(j);
        }
    }
}

/// What nft said.
enum NftState {
    Missing,
    Unreadable,
    Read,
}

/// ENABLED= of /etc/ufw/ufw.conf; `None` when ufw is not installed.
fn ufw_enabled(host: &Host) -> Option<bool> {
    let text = host.read_to_string(UFW_CONF).ok()?;
    let value = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENABLED="))
        .next_back()
        .unwrap_or("no");
    Some(
        value
            .trim()
            .trim_matches(['"', '\''])
            .eq_ignore_ascii_case("yes"),
    )
}

/// Which front ends made a table, from its name and chain names.
/// `iptables_name` is what plain iptables tables are credited to.
fn table_managers(
    name: &str,
    chains: &[&str],
    iptables_name: Option<&'static str>,
    ufw_enabled: bool,
    f: &mut Findings,
) {
    let mut owners = Vec::new();
    // firewalld's own table, or the chains of its iptables backend.
    if name == "firewalld" || chains.contains(&"INPUT_ZONES") {
        owners.push("firewalld");
    }
    let ufw = chains
        .iter()
        .any(|c| c.starts_with("ufw-") || c.starts_with("ufw6-"));
    if ufw {
        f.ufw_chains = true;
        // Chains left behind by `ufw disable` are managed by nothing.
        if ufw_enabled {
            owners.push("ufw");
        }
    }
    if chains.iter().any(|c| *c == "DOCKER" || *c == "DOCKER-USER") {
        owners.push("docker");
    }
    if owners.is_empty() && !ufw {
        owners.push(iptables_name.unwrap_or("nftables"));
    }
    f.managers.extend(owners.into_iter().map(String::from));
}

/// Lists the nftables ruleset and judges its input chains.
fn read_nft(host: &Host, ufw_on: bool, f: &mut Findings) -> NftState {
    let Some(nft) = host.find_program("nft") else {
        f.evidence.insert(
            "nft is not installed (not in /usr/sbin, /usr/bin, /sbin or /bin), so no nftables ruleset is visible"
                .into(),
        );
        return NftState::Missing;
    };
    let command = format!("{nft} -j list ruleset");
    let out = match host.run(&nft, &["-j", "list", "ruleset"]) {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            f.evidence.insert(format!(
                "{command} could not start ({e}), so no nftables ruleset is visible"
            ));
            return NftState::Missing;
        }
        Err(e) => {
            f.unreadable.push(format!("{command} could not run: {e}"));
            return NftState::Unreadable;
        }
    };
    if !out.success() {
        let why: Vec<&str> = out
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let why = if why.is_empty() {
            "no error message".to_string()
        } else {
            why.join("; ")
        };
        let hint = if why.contains("Operation not permitted") {
            " (the agent must run as root to list the ruleset)"
        } else {
            ""
        };
        let code = out
            .status
            .map_or("a signal".to_string(), |c| format!("exit {c}"));
        f.unreadable
            .push(format!("{command} failed ({code}): {why}{hint}"));
        return NftState::Unreadable;
    }
    let tables = match nft::parse(&out.stdout) {
        Ok(t) => t,
        Err(e) => {
            f.unreadable
                .push(format!("{command} printed no usable nftables JSON: {e}"));
            return NftState::Unreadable;
        }
    };
    if tables.is_empty() {
        f.evidence.insert(format!(
            "{command}: no tables, the nftables ruleset is empty"
        ));
        return NftState::Read;
    }
    let labels: Vec<String> = tables.iter().map(nft::NftTable::label).collect();
    f.evidence
        .insert(format!("{command}: tables {}", labels.join(", ")));
    for table in &tables {
        if table.dormant {
            f.evidence.insert(format!(
                "table {} is dormant: its chains see no packets",
                table.label()
            ));
            continue;
        }
        if table.chains.is_empty() {
            continue;
        }
        let chains: Vec<&str> = table.chains.iter().map(|c| c.name.as_str()).collect();
        let iptables = (table.family == "ip" || table.family == "ip6")
            && IPTABLES_TABLES.contains(&table.name.as_str())
            && chains.iter().any(|c| IPTABLES_CHAINS.contains(c));
        table_managers(
            &table.name,
            &chains,
            iptables.then_some("iptables"),
            ufw_on,
            f,
        );
        for family in [Family::V4, Family::V6] {
            if table.carries(family) {
                f.judge(family, &table.model(family));
            }
        }
    }
    NftState::Read
}

/// Legacy tables listed in /proc for one family; `None` when unreadable.
fn legacy_tables(host: &Host, family: Family, f: &mut Findings) -> Option<Vec<String>> {
    let file = match family {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    };
    match host.read_to_string(file) {
        Ok(text) => {
            let mut names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            names.sort();
            if !names.is_empty() {
                f.evidence.insert(format!(
                    "{file}: legacy iptables tables loaded: {}",
                    names.join(", ")
                ));
            }
            Some(names)
        }
        // No x_tables in this kernel: nothing legacy can exist.
        Err(e) if e.kind() == ErrorKind::NotFound => Some(Vec::new()),
        Err(e) => {
            f.unreadable.push(format!(
                "{file} is not readable ({e}), so legacy iptables rules may be missed; run the agent as root"
            ));
            None
        }
    }
}

/// Dumps the legacy filter table of one family: the program and its output.
fn legacy_dump(host: &Host, family: Family) -> Result<(String, String), String> {
    let (legacy, plain) = match family {
        Family::V4 => ("iptables-legacy-save", "iptables-save"),
        Family::V6 => ("ip6tables-legacy-save", "ip6tables-save"),
    };
    let program = host
        .find_program(legacy)
        .or_else(|| host.find_program(plain))
        .ok_or_else(|| format!("neither {legacy} nor {plain} is installed to read them"))?;
    let out = host
        .run(&program, &["-t", "filter"])
        .map_err(|e| format!("{program} -t filter could not run: {e}"))?;
    if !out.success() {
        let why = out
            .stderr
            .lines()
            .next()
            .unwrap_or("no error message")
            .trim()
            .to_string();
        return Err(format!("{program} -t filter failed: {why}"));
    }
    if iptables::is_nft_variant(&out.stdout) {
        return Err(format!(
            "{program} is the nf_tables variant, which cannot show legacy tables; install {legacy}"
        ));
    }
    Ok((program, out.stdout))
}

/// Reads and judges legacy iptables rules, when the kernel has any.
fn read_legacy(host: &Host, ufw_on: bool, f: &mut Findings) {
    let mut none_loaded = true;
    for family in [Family::V4, Family::V6] {
        let Some(tables) = legacy_tables(host, family, f) else {
            none_loaded = false;
            continue;
        };
        if tables.is_empty() {
            continue;
        }
        none_loaded = false;
        if !tables.iter().any(|t| t == "filter") {
            f.managers.insert("iptables-legacy".into());
            continue;
        }
        let (program, text) = match legacy_dump(host, family) {
            Ok(found) => found,
            Err(why) => {
                f.unreadable.push(format!(
                    "{} legacy iptables rules are loaded but could not be read: {why}",
                    family.label()
                ));
                continue;
            }
        };
        let label = match family {
            Family::V4 => "iptables-legacy filter",
            Family::V6 => "ip6tables-legacy filter",
        };
        let Some(saved) = iptables::parse_filter(&text, label) else {
            f.unreadable.push(format!(
                "{program} -t filter printed no filter table although /proc lists one"
            ));
            continue;
        };
        f.evidence.insert(format!("{program} -t filter"));
        let chains: Vec<&str> = saved.chain_names.iter().map(String::as_str).collect();
        table_managers("filter", &chains, Some("iptables-legacy"), ufw_on, f);
        f.judge(family, &saved.table);
    }
    if none_loaded {
        f.evidence.insert(
            "no legacy iptables tables are loaded (/proc/net/ip_tables_names, /proc/net/ip6_tables_names)"
                .into(),
        );
    }
}

/// Why IPv6 needs no filter, if it is off.
fn ipv6_disabled(host: &Host) -> Option<String> {
    if !host.exists("/proc/net/if_inet6") {
        return Some("IPv6 is not available in the kernel (no /proc/net/if_inet6)".into());
    }
    let flag = host
        .read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .ok()?;
    (flag.trim() == "1")
        .then(|| "IPv6 is disabled (/proc/sys/net/ipv6/conf/all/disable_ipv6 = 1)".into())
}

/// Asks firewalld over D-Bus whether it runs; true when it does. Checks
/// for an owner first, so a stopped firewalld is not started by
/// D-Bus activation.
fn firewalld_bus(host: &Host, f: &mut Findings) -> bool {
    let bus = host.bus();
    let owned = bus.call(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "NameHasOwner",
        &[FIREWALLD_SERVICE],
    );
    match owned {
        Ok(Value::Bool(true)) => {}
        Ok(_) => {
            f.evidence.insert(format!(
                "D-Bus: {FIREWALLD_SERVICE} has no owner (firewalld is not running)"
            ));
            return false;
        }
        Err(BusError::NoBus(e)) => {
            f.evidence.insert(format!("D-Bus: no system bus ({e})"));
            return false;
        }
        Err(e) => {
            f.evidence
                .insert(format!("D-Bus: NameHasOwner failed ({e})"));
            return false;
        }
    }
    let property = |name: &str| {
        bus.property(FIREWALLD_SERVICE, FIREWALLD_PATH, FIREWALLD_SERVICE, name)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
    };
    let state = property("state").unwrap_or_else(|| "unknown".into());
    let version = property("version").unwrap_or_else(|| "unknown".into());
    let zone = bus
        .call(
            FIREWALLD_SERVICE,
            FIREWALLD_PATH,
            FIREWALLD_SERVICE,
            "getDefaultZone",
            &[],
        )
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    f.evidence.insert(format!(
        "D-Bus {FIREWALLD_SERVICE}: firewalld {version}, state {state}, default zone {zone}"
    ));
    f.managers.insert("firewalld".into());
    true
}

/// One family's answer; `disabled` is said for IPv6 only.
fn family_facts(r: &FamilyReport, disabled: Option<bool>) -> facts::Family {
    facts::Family {
        filtered: r.filtered(),
        by: r.by.iter().cloned().collect(),
        disabled,
    }
}

/// Evidence on why a family is not filtered; `complete` when every
/// source of rules could be read.
fn unfiltered_evidence(
    family: Family,
    r: &FamilyReport,
    complete: bool,
    evidence: &mut BTreeSet<String>,
) {
    if r.filtered() {
        return;
    }
    if r.chains == 0 && complete {
        evidence.insert(format!("{}: no input chain is loaded", family.label()));
    }
    for p in &r.passes {
        evidence.insert(format!(
            "{}: packets no rule allows pass {p}",
            family.label()
        ));
    }
}

impl Collector for Firewall {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let mut f = Findings::default();
        let ufw = ufw_enabled(host);
        let ufw_on = ufw == Some(true);
        let nft_state = read_nft(host, ufw_on, &mut f);
        read_legacy(host, ufw_on, &mut f);
        let nft_read = matches!(nft_state, NftState::Read);
        if !nft_read || f.managers.contains("firewalld") {
            let running = firewalld_bus(host, &mut f);
            if running && matches!(nft_state, NftState::Missing) {
                f.unreadable.push(
                    "firewalld is running but nft is not installed, so its nftables rules cannot be read; install the nftables package"
                        .into(),
                );
            }
        }
        if let Some(on) = ufw {
            f.evidence.insert(format!(
                "{UFW_CONF}: ENABLED={}",
                if on { "yes" } else { "no" }
            ));
            if on && f.unreadable.is_empty() && !f.ufw_chains {
                f.evidence
                    .insert("ufw is enabled but none of its chains are loaded".into());
            } else if !on && f.ufw_chains {
                f.evidence
                    .insert("ufw chains are loaded but ufw is disabled".into());
            }
        }
        let v6_off = ipv6_disabled(host);
        if let Some(why) = &v6_off {
            f.evidence.insert(why.clone());
        }
        let complete = f.unreadable.is_empty();
        unfiltered_evidence(Family::V4, &f.v4, complete, &mut f.evidence);
        if v6_off.is_none() {
            unfiltered_evidence(Family::V6, &f.v6, complete, &mut f.evidence);
        }
        f.evidence.extend(f.unreadable.iter().cloned());
        let on = f.v4.filtered() && (f.v6.filtered() || v6_off.is_some());
        let status = if on {
            Status::On
        } else if !f.unreadable.is_empty() {
            Status::Unknown
        } else {
            Status::Off
        };
        Ok(to_value(&facts::Firewall {
            status,
            ipv4: family_facts(&f.v4, None),
            ipv6: family_facts(&f.v6, Some(v6_off.is_some())),
            managers: f.managers.into_iter().collect(),
            evidence: f.evidence.into_iter().collect(),
        }))
    }
}

#[cfg(test)]
mod tests;
