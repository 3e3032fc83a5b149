//! Reads `nft -j list ruleset` (libnftables JSON, schema version 1) into
//! the ruleset model, one address family at a time.

use serde_json::Value;

use super::ruleset::{Family, InputChain, Rule, Table, Verdict};

/// Statements that act on a packet without deciding whether a rule
/// matches it: a rule made only of these (and a verdict) matches all.
const STATEMENTS: &[&str] = &[
    "counter",
    "log",
    "mangle",
    "notrack",
    "ct helper",
    "ct timeout",
    "ct expectation",
    "set",
    "map",
    "dup",
];

/// One chain as listed.
#[derive(Debug, Clone)]
pub(super) struct NftChain {
    pub name: String,
    /// The hook of a base chain ("input", "forward"...).
    pub hook: Option<String>,
    /// The policy of a base chain ("accept" or "drop").
    pub policy: Option<String>,
    /// Each rule's expression list.
    rules: Vec<Vec<Value>>,
}

/// One table as listed.
#[derive(Debug, Clone)]
pub(super) struct NftTable {
    pub family: String,
    pub name: String,
    /// A dormant table's chains see no packets.
    pub dormant: bool,
    pub chains: Vec<NftChain>,
}

impl NftTable {
    /// "inet firewalld".
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.family, self.name)
    }

    /// True when the table sees packets of `family`.
    pub(super) fn carries(&self, family: Family) -> bool {
        matches!(
            (self.family.as_str(), family),
            ("inet", _) | ("ip", Family::V4) | ("ip6", Family::V6)
        )
    }

    /// The table as `family` sees it.
    pub(super) fn model(&self, family: Family) -> Table {
        Table {
            label: self.label(),
            chains: self
                .chains
                .iter()
                .map(|c| {
                    let rules = c.rules.iter().filter_map(|r| rule(r, family)).collect();
                    (c.name.clone(), rules)
                })
                .collect(),
            inputs: self
                .chains
                .iter()
                .filter(|c| c.hook.as_deref() == Some("input"))
                .map(|c| InputChain {
                    name: c.name.clone(),
                    policy_drop: c.policy.as_deref() == Some("drop"),
                })
                .collect(),
        }
    }
}

/// Parses the JSON; the tables in listing order.
pub(super) fn parse(text: &str) -> Result<Vec<NftTable>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array at the top")?;
    let mut tables: Vec<NftTable> = Vec::new();
    let str_of = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).map(String::from);
    for item in items {
        if let Some(t) = item.get("table") {
            let (Some(family), Some(name)) = (str_of(t, "family"), str_of(t, "name")) else {
                continue;
            };
            tables.push(NftTable {
                family,
                name,
                dormant: is_dormant(t.get("flags")),
                chains: Vec::new(),
            });
        } else if let Some(c) = item.get("chain") {
            let (Some(family), Some(table), Some(name)) =
                (str_of(c, "family"), str_of(c, "table"), str_of(c, "name"))
            else {
                continue;
            };
            if let Some(t) = find_table(&mut tables, &family, &table) {
                t.chains.push(NftChain {
                    name,
                    hook: str_of(c, "hook"),
                    policy: str_of(c, "policy"),
                    rules: Vec::new(),
                });
            }
        } else if let Some(r) = item.get("rule") {
            let (Some(family), Some(table), Some(chain)) =
                (str_of(r, "family"), str_of(r, "table"), str_of(r, "chain"))
            else {
                continue;
            };
            let expr = r
                .get("expr")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(c) = find_table(&mut tables, &family, &table)
                .and_then(|t| t.chains.iter_mut().find(|c| c.name == chain))
            {
                c.rules.push(expr);
            }
        }
    }
    Ok(tables)
}

fn find_table<'a>(
    tables: &'a mut [NftTable],
    family: &str,
    name: &str,
) -> Option<&'a mut NftTable> {
    tables
        .iter_mut()
        .find(|t| t.family == family && t.name == name)
}

/// Table flags are a string or a list of strings.
fn is_dormant(flags: Option<&Value>) -> bool {
    match flags {
        Some(Value::String(s)) => s == "dormant",
        Some(Value::Array(a)) => a.iter().any(|f| f == "dormant"),
        _ => false,
    }
}

/// One rule as `family` sees it; `None` when it never matches that family.
fn rule(exprs: &[Value], family: Family) -> Option<Rule> {
    let mut matches_all = true;
    let mut verdict = None;
    for e in exprs {
        let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            matches_all = false;
            continue;
        };
        if let Some(v) = verdict_of(key, body) {
            verdict = Some(v);
            continue;
        }
        match key.as_str() {
            "match" => match family_test(body, family) {
                Some(true) => {}
                Some(false) => return None,
                None => matches_all = false,
            },
            // iptables-nft falls back to xtables for some matches and
            // targets; a target acts, a match decides.
            "xt" if body.get("type").and_then(Value::as_str) == Some("target") => {
                if body.get("name").and_then(Value::as_str) == Some("REJECT") {
                    verdict = Some(Verdict::Reject);
                }
            }
            k if STATEMENTS.contains(&k) => {}
            _ => matches_all = false,
        }
    }
    Some(Rule {
        matches_all,
        verdict,
    })
}

fn verdict_of(key: &str, body: &Value) -> Option<Verdict> {
    let target = || body.get("target").and_then(Value::as_str).map(String::from);
    Some(match key {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "queue" => Verdict::Queue,
        "return" => Verdict::Return,
        "continue" => Verdict::Continue,
        "jump" => Verdict::Jump(target()?),
        "goto" => Verdict::Goto(target()?),
        _ => return None,
    })
}

/// For `meta nfproto ipv4` and `meta protocol ip6` style matches: whether
/// a packet of `family` matches. `None` for any other match.
fn family_test(m: &Value, family: Family) -> Option<bool> {
    let key = m.get("left")?.get("meta")?.get("key")?.as_str()?;
    let names: &[&str] = match (key, family) {
        ("nfproto", Family::V4) => &["ipv4"],
        ("nfproto", Family::V6) => &["ipv6"],
        ("protocol", Family::V4) => &["ip"],
        ("protocol", Family::V6) => &["ip6"],
        _ => return None,
    };
    let right = m.get("right")?;
    let listed: Vec<&str> = match right {
        Value::String(s) => vec![s.as_str()],
        Value::Object(o) => o
            .get("set")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect(),
        _ => return None,
    };
    let hit = listed.iter().any(|n| names.contains(n));
    match m.get("op").and_then(Value::as_str).unwrap_or("==") {
        "==" | "in" => Some(hit),
        "!=" => Some(!hit),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statements_do_not_make_a_rule_conditional() {
        let r = rule(
            &[
                json!({"counter": {"packets": 3, "bytes": 180}}),
                json!({"log": {"prefix": "denied: "}}),
                json!({"reject": {"type": "icmpx", "expr": "admin-prohibited"}}),
            ],
            Family::V4,
        )
        .unwrap();
        assert!(r.matches_all);
        assert_eq!(r.verdict, Some(Verdict::Reject));
        let r = rule(
            &[
                json!({"limit": {"rate": 3, "burst": 10, "per": "minute"}}),
                json!({"drop": null}),
            ],
            Family::V4,
        )
        .unwrap();
        assert!(!r.matches_all, "limit only matches some packets");
        let r = rule(
            &[
                json!({"xt": {"type": "match", "name": "conntrack"}}),
                json!({"accept": null}),
            ],
            Family::V4,
        )
        .unwrap();
        assert!(!r.matches_all);
    }

    #[test]
    fn family_matches_are_resolved() {
        let v4_only = [
            json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}),
            json!({"jump": {"target": "in4"}}),
        ];
        let r = rule(&v4_only, Family::V4).unwrap();
        assert!(r.matches_all);
        assert_eq!(r.verdict, Some(Verdict::Jump("in4".into())));
        assert!(rule(&v4_only, Family::V6).is_none());
        let not_v6 = [
            json!({"match": {"op": "!=", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}),
            json!({"drop": null}),
        ];
        assert!(rule(&not_v6, Family::V4).unwrap().matches_all);
        assert!(rule(&not_v6, Family::V6).is_none());
        // A jump without a target is no verdict at all.
        let r = rule(&[json!({"jump": {}})], Family::V4).unwrap();
        assert_eq!(r.verdict, None);
    }

    #[test]
    fn odd_documents_are_errors_or_ignored() {
        assert!(parse("{").unwrap_err().starts_with("not JSON"));
        assert!(parse("[]").unwrap_err().contains("nftables"));
        let t = parse(
            r#"{"nftables": [{"table": {"family": "inet"}}, {"chain": 5},
                {"table": {"family": "inet", "name": "x", "flags": ["dormant"]}},
                {"rule": {"family": "inet", "table": "x", "chain": "nope", "expr": []}},
                {"rule": {"family": "inet", "table": "x"}}]}"#,
        )
        .unwrap();
        assert_eq!(t.len(), 1);
        assert!(t[0].dormant);
        assert!(t[0].chains.is_empty());
    }
}
