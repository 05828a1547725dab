//! Reading `iptables-save` output: which chains and rules a previous run (ours or istio-iptables')
//! left, whether they already match what we want, and the lines that remove them.

use crate::rules::{Chain, RuleSet, Table};

/// One rule as `iptables-save` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// Everything after `-A CHAIN `, verbatim (quoting kept, so it can be fed back to `-D`).
    pub rest: String,
}

impl SavedRule {
    fn tokens(&self) -> Vec<&str> {
        self.rest.split_whitespace().collect()
    }

    fn target(&self) -> Option<&str> {
        let t = self.tokens();
        t.iter()
            .position(|w| *w == "-j")
            .and_then(|i| t.get(i + 1).copied())
    }
}

/// One table of `iptables-save` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTable {
    pub table: Table,
    pub chains: Vec<String>,
    pub rules: Vec<SavedRule>,
    /// The table's section as printed, to put it back if an apply fails half-way.
    pub text: String,
}

/// Parses `iptables-save` output. Tables we never write to (e.g. `security`) are skipped.
pub fn parse_save(text: &str) -> Vec<SavedTable> {
    let mut out: Vec<SavedTable> = Vec::new();
    let mut current: Option<SavedTable> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('*') {
            current = Table::from_name(name.trim()).map(|table| SavedTable {
                table,
                chains: Vec::new(),
                rules: Vec::new(),
                text: String::new(),
            });
        }
        let Some(t) = current.as_mut() else { continue };
        if !line.starts_with('#') {
            t.text.push_str(line);
            t.text.push('\n');
        }
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                t.chains.push(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
            t.rules.push(SavedRule {
                chain: chain.to_string(),
                rest: rest.to_string(),
            });
        } else if line == "COMMIT"
            && let Some(done) = current.take()
        {
            out.push(done);
        }
    }
    out
}

fn is_own_chain(name: &str) -> bool {
    Chain::from_name(name).is_some_and(|c| !c.is_builtin())
}

/// Whether a rule in a built-in chain is one we (or istio-iptables) install. Jumps to our chains
/// are; so are the few non-jump shapes we put in built-in chains: interface bypasses (`-c`, `-k`)
/// and the TPROXY mark bookkeeping. A foreign rule of exactly one of these shapes would be taken
/// for ours; nothing else is touched.
fn is_own_builtin_rule(table: Table, rule: &SavedRule) -> bool {
    if rule.target().is_some_and(is_own_chain) {
        return true;
    }
    let t = rule.tokens();
    let chain = rule.chain.as_str();
    let nat_or_mangle = matches!(table, Table::Nat | Table::Mangle);
    let bypass = matches!(
        (chain, t.as_slice()),
        ("PREROUTING", ["-i", _, "-j", "RETURN"]) | ("OUTPUT", ["-o", _, "-j", "RETURN"])
    );
    if nat_or_mangle && bypass {
        return true;
    }
    if table != Table::Mangle {
        return false;
    }
    let has = |words: &[&str]| t.windows(words.len()).any(|w| w == words);
    match (chain, rule.target()) {
        ("PREROUTING", Some("CONNMARK")) => has(&["-m", "mark", "--mark"]) && has(&["--save-mark"]),
        ("OUTPUT", Some("CONNMARK")) => {
            has(&["-m", "connmark", "--mark"]) && has(&["--restore-mark"])
        }
        ("OUTPUT", Some("RETURN")) => {
            matches!(
                t.as_slice(),
                [
                    "-o",
                    "lo",
                    "-p",
                    "tcp",
                    "-m",
                    "mark",
                    "--mark",
                    _,
                    "-j",
                    "RETURN"
                ]
            )
        }
        ("OUTPUT", Some("MARK")) => {
            has(&["-o", "lo"])
                && has(&["-m", "owner"])
                && (has(&["--set-xmark", "0x53a/0xffffffff"]) || has(&["--set-mark", "1338"]))
        }
        _ => false,
    }
}

/// What a previous run left in one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Residue {
    /// Our chains present in the table.
    pub chains: Vec<String>,
    /// Our rules in built-in chains.
    pub builtin_rules: Vec<SavedRule>,
}

impl Residue {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.builtin_rules.is_empty()
    }

    /// Restore lines that remove it: our rules from built-in chains, then our chains (all flushed
    /// before any is deleted, since they jump to each other).
    pub fn removal_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .builtin_rules
            .iter()
            .map(|r| format!("-D {} {}", r.chain, r.rest))
            .collect();
        lines.extend(self.chains.iter().map(|c| format!("-F {c}")));
        lines.extend(self.chains.iter().map(|c| format!("-X {c}")));
        lines
    }
}

/// Our chains and built-in-chain rules in a table.
pub fn residue(saved: &SavedTable) -> Residue {
    Residue {
        chains: saved
            .chains
            .iter()
            .filter(|c| is_own_chain(c))
            .cloned()
            .collect(),
        builtin_rules: saved
            .rules
            .iter()
            .filter(|r| !is_own_chain(&r.chain) && is_own_builtin_rule(saved.table, r))
            .cloned()
            .collect(),
    }
}

/// Whether the saved state has the same shape as `desired`: the same chains of ours in every table,
/// each with as many rules, and as many of our rules in each built-in chain. Together with an
/// `iptables -C` of every desired rule (done by the caller, since the kernel's rule text differs
/// from ours) this means the rules are already in place.
pub fn same_shape(saved: &[SavedTable], desired: &RuleSet) -> bool {
    Table::ALL.into_iter().all(|table| {
        let saved_table = saved.iter().find(|s| s.table == table);
        let res = saved_table.map(residue).unwrap_or_default();
        let mut want_chains: Vec<&str> =
            desired.chains(table).into_iter().map(Chain::name).collect();
        let mut have_chains: Vec<&str> = res.chains.iter().map(String::as_str).collect();
        want_chains.sort_unstable();
        have_chains.sort_unstable();
        if want_chains != have_chains {
            return false;
        }
        let count_desired = |chain: &str| {
            desired
                .rules
                .iter()
                .filter(|r| r.table == table && r.chain.name() == chain)
                .count()
        };
        let chains_match = have_chains.iter().all(|c| {
            let have = saved_table.map_or(0, |s| s.rules.iter().filter(|r| r.chain == *c).count());
            have == count_desired(c)
        });
        let builtin_match = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
            .into_iter()
            .all(|c| res.builtin_rules.iter().filter(|r| r.chain == c).count() == count_desired(c));
        chains_match && builtin_match
    })
}

/// `iptables-save` output with comments dropped and counters zeroed, for comparing states.
pub fn normalize_save(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match (line.strip_prefix(':'), line.rfind('[')) {
            (Some(_), Some(i)) if line.ends_with(']') => format!("{}[0:0]", &line[..i]),
            _ => line.to_string(),
        };
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Flags, HostFacts};
    use crate::render::render;
    use crate::rules::Family;
    use clap::Parser;

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 on Sat Nov 21 13:10:11 2026
*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_DIVERT - [0:0]
-A PREROUTING -i not-istio-nic -j RETURN
-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A PREROUTING -p udp -j RETURN
-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-A OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A OUTPUT -m owner --uid-owner 7 -j MARK --set-xmark 0x1/0xffffffff
-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff
COMMIT
*nat
:PREROUTING ACCEPT [12:720]
:OUTPUT ACCEPT [3:180]
:KUBE-X - [0:0]
:ISTIO_OUTPUT - [0:0]
-A PREROUTING -j KUBE-X
-A OUTPUT -m comment --comment \"user rule\" -d 203.0.113.9/32 -j RETURN
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
COMMIT
*security
:INPUT ACCEPT [0:0]
COMMIT
";

    #[test]
    fn parses_tables_chains_and_rules() {
        let tables = parse_save(SAVED);
        assert_eq!(
            tables.iter().map(|t| t.table).collect::<Vec<_>>(),
            vec![Table::Mangle, Table::Nat]
        );
        let nat = &tables[1];
        assert_eq!(
            nat.chains,
            vec!["PREROUTING", "OUTPUT", "KUBE-X", "ISTIO_OUTPUT"]
        );
        assert_eq!(nat.rules.len(), 4);
        assert_eq!(
            nat.rules[1].rest,
            "-m comment --comment \"user rule\" -d 203.0.113.9/32 -j RETURN"
        );
        assert!(nat.text.starts_with("*nat\n:PREROUTING ACCEPT [12:720]\n"));
        assert!(nat.text.ends_with("COMMIT\n"));
    }

    #[test]
    fn finds_only_our_residue() {
        let tables = parse_save(SAVED);
        let mangle = residue(&tables[0]);
        assert_eq!(mangle.chains, vec!["ISTIO_DIVERT"]);
        let own: Vec<&str> = mangle
            .builtin_rules
            .iter()
            .map(|r| r.rest.as_str())
            .collect();
        assert_eq!(own.len(), 5, "{own:#?}");
        assert!(!own.contains(&"-p udp -j RETURN"));
        assert!(!own.iter().any(|r| r.contains("--uid-owner 7")));
        let nat = residue(&tables[1]);
        assert_eq!(nat.chains, vec!["ISTIO_OUTPUT"]);
        assert_eq!(
            nat.removal_lines(),
            vec![
                "-D OUTPUT -j ISTIO_OUTPUT",
                "-F ISTIO_OUTPUT",
                "-X ISTIO_OUTPUT"
            ]
        );
    }

    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    #[test]
    fn shape_check_compares_chains_and_counts() {
        let cli = Cli::try_parse_from(["x", "-b", "", "-i", "", "-d", ""]).unwrap();
        let cfg = Config::from_flags(&cli.flags, &HostFacts::default()).unwrap();
        let desired = render(&cfg, Family::V4);
        // Only nat: ISTIO_INBOUND (1 rule), ISTIO_REDIRECT (1), ISTIO_IN_REDIRECT (1), ISTIO_OUTPUT (8), OUTPUT jump.
        let mut saved = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_REDIRECT - [0:0]\n\
             :ISTIO_IN_REDIRECT - [0:0]\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\n\
             -A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN\n-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n\
             -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n",
        );
        for i in 0..8 {
            saved.push_str(&format!(
                "-A ISTIO_OUTPUT -m comment --comment r{i} -j RETURN\n"
            ));
        }
        let complete = format!("{saved}COMMIT\n");
        assert!(same_shape(&parse_save(&complete), &desired));
        let missing_rule =
            complete.replace("-A ISTIO_OUTPUT -m comment --comment r7 -j RETURN\n", "");
        assert!(!same_shape(&parse_save(&missing_rule), &desired));
        let extra_chain = complete.replace(
            ":OUTPUT ACCEPT [0:0]\n",
            ":OUTPUT ACCEPT [0:0]\n:ISTIO_DROP - [0:0]\n",
        );
        assert!(!same_shape(&parse_save(&extra_chain), &desired));
        assert!(!same_shape(&[], &desired));
    }

    #[test]
    fn normalizing_drops_comments_and_counters() {
        let a = normalize_save("# x\n*nat\n:OUTPUT ACCEPT [5:300]\n-A OUTPUT  -j X\nCOMMIT\n# y\n");
        assert_eq!(a, "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j X\nCOMMIT\n");
    }
}
