//! The ruleset model that both readers (nft JSON, iptables-save) produce,
//! and the walk that finds where an inbound packet ends up when no rule
//! explicitly allows it.
//!
//! Such a packet matches no conditional rule, so it follows only the
//! unconditional ones (`counter drop`, `jump X`, `reject`...). Conditional
//! accepts and drops are the explicit choices of the admin and are passed
//! over. A conditional `return` is different: it hands some packets back
//! undecided, so the walk follows both ways and both must end in a drop.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Jumps nested deeper than this are not followed (the kernel stops at 16).
const MAX_DEPTH: usize = 64;

/// An address family of inbound traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// "IPv4" or "IPv6".
    pub(super) fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// What a rule does with a packet it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Accept,
    Drop,
    Reject,
    /// Handed to a userspace program, which decides.
    Queue,
    Return,
    Continue,
    Jump(String),
    Goto(String),
}

/// One rule as one address family sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    /// True when the rule matches every packet of the family.
    pub matches_all: bool,
    /// The verdict; `None` for rules that only count, log or mark.
    pub verdict: Option<Verdict>,
}

/// A base chain on the input hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InputChain {
    /// Chain name.
    pub name: String,
    /// True when the chain policy drops.
    pub policy_drop: bool,
}

/// One table as one address family sees it.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    /// How the table is named in reports: "inet firewalld",
    /// "iptables-legacy filter".
    pub label: String,
    /// Every chain's rules, in order.
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Base chains on the input hook.
    pub inputs: Vec<InputChain>,
}

/// Where a walk through a chain ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    /// Fell off the end or returned: the caller goes on.
    Returned,
    /// A decision (or a dead end the walk could not follow).
    Final {
        /// True for drop and reject.
        drops: bool,
        /// "catch-all reject", "loop through X"...
        what: String,
        /// The chain holding the deciding rule, if it is one.
        chain: Option<String>,
    },
}

/// The judgement on one input base chain: where packets that no rule
/// allows end, as "inet filter input (policy drop)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Judgement {
    /// Ends in a drop or reject.
    pub drops: Vec<String>,
    /// Ends in an accept, or where the walk could not decide.
    pub passes: Vec<String>,
}

impl Judgement {
    /// True when every packet no rule allows is dropped or rejected.
    pub(super) fn filtered(&self) -> bool {
        self.passes.is_empty() && !self.drops.is_empty()
    }
}

/// Judges one input base chain of `table`.
pub(super) fn judge(table: &Table, input: &InputChain) -> Judgement {
    let mut walker = Walker {
        table,
        memo: HashMap::new(),
        stack: Vec::new(),
    };
    let mut ends = walker.walk(&input.name);
    if ends.remove(&End::Returned) {
        let what = if input.policy_drop {
            "policy drop"
        } else {
            "policy accept"
        };
        ends.insert(End::Final {
            drops: input.policy_drop,
            what: what.to_string(),
            chain: None,
        });
    }
    let mut judgement = Judgement {
        drops: Vec::new(),
        passes: Vec::new(),
    };
    for end in ends {
        let End::Final { drops, what, chain } = end else {
            continue;
        };
        let text = match chain {
            Some(c) if c != input.name => format!("{} {} ({what} in {c})", table.label, input.name),
            _ => format!("{} {} ({what})", table.label, input.name),
        };
        if drops {
            judgement.drops.push(text);
        } else {
            judgement.passes.push(text);
        }
    }
    judgement
}

struct Walker<'a> {
    table: &'a Table,
    memo: HashMap<String, BTreeSet<End>>,
    stack: Vec<String>,
}

fn dead_end(what: String) -> BTreeSet<End> {
    BTreeSet::from([End::Final {
        drops: false,
        what,
        chain: None,
    }])
}

impl Walker<'_> {
    /// Every way an unmatched packet can leave `chain`.
    fn walk(&mut self, chain: &str) -> BTreeSet<End> {
        if let Some(done) = self.memo.get(chain) {
            return done.clone();
        }
        if self.stack.iter().any(|c| c == chain) {
            return dead_end(format!("loop through {chain}"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return dead_end(format!("jumps nested deeper than {MAX_DEPTH}"));
        }
        let Some(rules) = self.table.chains.get(chain) else {
            return dead_end(format!("jump to missing chain {chain}"));
        };
        self.stack.push(chain.to_string());
        let ends = self.walk_rules(chain, rules);
        self.stack.pop();
        self.memo.insert(chain.to_string(), ends.clone());
        ends
    }

    fn walk_rules(&mut self, chain: &str, rules: &[Rule]) -> BTreeSet<End> {
        let decided = |drops: bool, what: &str| End::Final {
            drops,
            what: what.to_string(),
            chain: Some(chain.to_string()),
        };
        let mut ends = BTreeSet::new();
        for rule in rules {
            let Some(verdict) = &rule.verdict else {
                continue;
            };
            if !rule.matches_all {
                // Some packets go back to the caller undecided.
                if *verdict == Verdict::Return {
                    ends.insert(End::Returned);
                }
                continue;
            }
            match verdict {
                Verdict::Continue => continue,
                Verdict::Accept => ends.insert(decided(false, "catch-all accept")),
                Verdict::Drop => ends.insert(decided(true, "catch-all drop")),
                Verdict::Reject => ends.insert(decided(true, "catch-all reject")),
                Verdict::Queue => ends.insert(decided(false, "catch-all queue to userspace")),
                Verdict::Return => ends.insert(End::Returned),
                Verdict::Jump(target) => {
                    let mut sub = self.walk(target);
                    let comes_back = sub.remove(&End::Returned);
                    ends.extend(sub);
                    if comes_back {
                        continue;
                    }
                    return ends;
                }
                // A goto's return goes to our caller, so it stays a return.
                Verdict::Goto(target) => {
                    ends.extend(self.walk(target));
                    return ends;
                }
            };
            return ends;
        }
        ends.insert(End::Returned);
        ends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(matches_all: bool, verdict: Option<Verdict>) -> Rule {
        Rule {
            matches_all,
            verdict,
        }
    }

    fn table(chains: Vec<(&str, Vec<Rule>)>) -> Table {
        Table {
            label: "inet t".into(),
            chains: chains
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect(),
            inputs: vec![],
        }
    }

    fn input(policy_drop: bool) -> InputChain {
        InputChain {
            name: "input".into(),
            policy_drop,
        }
    }

    #[test]
    fn policy_decides_when_nothing_else_does() {
        let t = table(vec![(
            "input",
            vec![rule(false, Some(Verdict::Accept)), rule(true, None)],
        )]);
        let j = judge(&t, &input(true));
        assert!(j.filtered());
        assert_eq!(j.drops, ["inet t input (policy drop)"]);
        let j = judge(&t, &input(false));
        assert!(!j.filtered());
        assert_eq!(j.passes, ["inet t input (policy accept)"]);
    }

    #[test]
    fn goto_returns_to_the_caller_of_the_caller() {
        // input: jump zones; reject. zones: goto zone; drop (never
        // reached). zone: falls off, back to input.
        let t = table(vec![
            (
                "input",
                vec![
                    rule(true, Some(Verdict::Jump("zones".into()))),
                    rule(true, Some(Verdict::Reject)),
                ],
            ),
            (
                "zones",
                vec![
                    rule(true, Some(Verdict::Goto("zone".into()))),
                    rule(true, Some(Verdict::Drop)),
                ],
            ),
            (
                "zone",
                vec![rule(false, Some(Verdict::Accept)), rule(true, None)],
            ),
        ]);
        let j = judge(&t, &input(false));
        assert!(j.filtered());
        assert_eq!(j.drops, ["inet t input (catch-all reject)"]);
    }

    #[test]
    fn catch_all_accept_in_a_jumped_chain_opens_the_door() {
        let t = table(vec![
            (
                "input",
                vec![
                    rule(true, Some(Verdict::Jump("trusted".into()))),
                    rule(true, Some(Verdict::Drop)),
                ],
            ),
            ("trusted", vec![rule(true, Some(Verdict::Accept))]),
        ]);
        let j = judge(&t, &input(true));
        assert!(!j.filtered());
        assert_eq!(j.passes, ["inet t input (catch-all accept in trusted)"]);
    }

    #[test]
    fn conditional_return_is_followed_both_ways() {
        let t = table(vec![
            (
                "input",
                vec![rule(true, Some(Verdict::Jump("not_local".into())))],
            ),
            (
                "not_local",
                vec![
                    rule(false, Some(Verdict::Return)),
                    rule(true, Some(Verdict::Drop)),
                ],
            ),
        ]);
        let open = judge(&t, &input(false));
        assert!(!open.filtered(), "returned packets reach policy accept");
        assert_eq!(open.drops, ["inet t input (catch-all drop in not_local)"]);
        assert_eq!(open.passes, ["inet t input (policy accept)"]);
        let closed = judge(&t, &input(true));
        assert!(closed.filtered());
        assert_eq!(
            closed.drops,
            [
                "inet t input (catch-all drop in not_local)",
                "inet t input (policy drop)"
            ]
        );
    }

    #[test]
    fn loops_and_missing_chains_are_dead_ends() {
        let t = table(vec![
            ("input", vec![rule(true, Some(Verdict::Jump("a".into())))]),
            ("a", vec![rule(true, Some(Verdict::Jump("b".into())))]),
            ("b", vec![rule(true, Some(Verdict::Jump("a".into())))]),
        ]);
        let j = judge(&t, &input(true));
        assert!(!j.filtered());
        assert_eq!(j.passes, ["inet t input (loop through a)"]);
        let t = table(vec![(
            "input",
            vec![rule(true, Some(Verdict::Goto("gone".into())))],
        )]);
        let j = judge(&t, &input(true));
        assert!(!j.filtered());
        assert_eq!(j.passes, ["inet t input (jump to missing chain gone)"]);
    }

    #[test]
    fn queue_is_not_a_drop() {
        let t = table(vec![("input", vec![rule(true, Some(Verdict::Queue))])]);
        let j = judge(&t, &input(true));
        assert!(!j.filtered());
        assert_eq!(j.passes, ["inet t input (catch-all queue to userspace)"]);
    }
}
