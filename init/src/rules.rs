//! The rule model (tables, chains, rules) and its `iptables-restore` form.

use std::fmt;

/// An address family: which of `iptables` / `ip6tables` a rule set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The netfilter tables we write to, in the order `iptables-restore` input lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Mangle,
    Nat,
    Raw,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Filter, Table::Mangle, Table::Nat, Table::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Built-in chains and the chains we own. Our chain names are Istio's, so runbooks keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    IstioInbound,
    IstioRedirect,
    IstioInRedirect,
    IstioOutput,
    IstioOutputDns,
    IstioDivert,
    IstioTproxy,
    IstioDrop,
}

impl Chain {
    /// Every chain halyard-init (and istio-iptables) creates; anything else is not ours to delete.
    pub const OWN: [Chain; 8] = [
        Chain::IstioInbound,
        Chain::IstioRedirect,
        Chain::IstioInRedirect,
        Chain::IstioOutput,
        Chain::IstioOutputDns,
        Chain::IstioDivert,
        Chain::IstioTproxy,
        Chain::IstioDrop,
    ];
    const BUILTIN: [Chain; 5] = [
        Chain::Prerouting,
        Chain::Input,
        Chain::Forward,
        Chain::Output,
        Chain::Postrouting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Input => "INPUT",
            Chain::Forward => "FORWARD",
            Chain::Output => "OUTPUT",
            Chain::Postrouting => "POSTROUTING",
            Chain::IstioInbound => "ISTIO_INBOUND",
            Chain::IstioRedirect => "ISTIO_REDIRECT",
            Chain::IstioInRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
            Chain::IstioOutputDns => "ISTIO_OUTPUT_DNS",
            Chain::IstioDivert => "ISTIO_DIVERT",
            Chain::IstioTproxy => "ISTIO_TPROXY",
            Chain::IstioDrop => "ISTIO_DROP",
        }
    }

    pub fn from_name(name: &str) -> Option<Chain> {
        Chain::OWN
            .into_iter()
            .chain(Chain::BUILTIN)
            .find(|c| c.name() == name)
    }

    pub fn is_builtin(self) -> bool {
        Chain::BUILTIN.contains(&self)
    }
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Jump(Chain),
    Return,
    Accept,
    Drop,
    /// NAT redirect to a local port (`--to-ports`).
    Redirect(u16),
    /// The same, spelled `--to-port` as istio-iptables does for UDP DNS (iptables takes both).
    RedirectPort(u16),
    Tproxy {
        mark: u32,
        port: u16,
    },
    Mark(u32),
    ConnmarkSave,
    ConnmarkRestore,
    CtZone(u16),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Jump(c) => write!(f, "-j {}", c.name()),
            Target::Return => f.write_str("-j RETURN"),
            Target::Accept => f.write_str("-j ACCEPT"),
            Target::Drop => f.write_str("-j DROP"),
            Target::Redirect(p) => write!(f, "-j REDIRECT --to-ports {p}"),
            Target::RedirectPort(p) => write!(f, "-j REDIRECT --to-port {p}"),
            Target::Tproxy { mark, port } => write!(
                f,
                "-j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {port}"
            ),
            Target::Mark(m) => write!(f, "-j MARK --set-mark {m}"),
            Target::ConnmarkSave => f.write_str("-j CONNMARK --save-mark"),
            Target::ConnmarkRestore => f.write_str("-j CONNMARK --restore-mark"),
            Target::CtZone(z) => write!(f, "-j CT --zone {z}"),
        }
    }
}

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Append,
    /// `-I chain N` (1-based).
    Insert(u32),
}

/// One rule: table, chain, position, match arguments (iptables syntax) and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: Chain,
    pub position: Position,
    pub matches: Vec<String>,
    pub target: Target,
}

impl Rule {
    /// The rule specification without the chain command: matches then target, as `iptables -C` takes it.
    pub fn spec(&self) -> Vec<String> {
        let mut out = self.matches.clone();
        out.extend(self.target.to_string().split(' ').map(str::to_string));
        out
    }
}

impl fmt::Display for Rule {
    /// The `iptables-restore` line, e.g. `-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Append => write!(f, "-A {}", self.chain.name())?,
            Position::Insert(n) => write!(f, "-I {} {n}", self.chain.name())?,
        }
        for m in &self.matches {
            write!(f, " {m}")?;
        }
        write!(f, " {}", self.target)
    }
}

/// The rules of one address family, in the order they are installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// What produced one line of `iptables-restore` input (to name the rule when a line is rejected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOrigin {
    /// `* table`, `COMMIT`, comments.
    Structure,
    /// Creating one of our chains.
    NewChain(Chain),
    /// One of our rules (index into [`RuleSet::rules`]).
    Rule(usize),
    /// A removal of what a previous run left (`-D`, `-F`, `-X`).
    Cleanup,
}

/// `iptables-restore` input and where each of its lines came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreScript {
    pub lines: Vec<(String, LineOrigin, Option<Table>)>,
}

impl RestoreScript {
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (line, _, _) in &self.lines {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The line `n` (1-based, as iptables-restore reports it).
    pub fn line(&self, n: usize) -> Option<&(String, LineOrigin, Option<Table>)> {
        n.checked_sub(1).and_then(|i| self.lines.get(i))
    }
}

impl RuleSet {
    pub fn tables(&self) -> Vec<Table> {
        let mut t: Vec<Table> = self.rules.iter().map(|r| r.table).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Our chains used in `table`, in the order `-N` lines create them: first the chains rules are
    /// added to, then the chains only jumped to (istio-iptables' order).
    pub fn chains(&self, table: Table) -> Vec<Chain> {
        let mut out: Vec<Chain> = Vec::new();
        let in_table = || self.rules.iter().filter(|r| r.table == table);
        let owners = in_table().map(|r| r.chain);
        let jumps = in_table().filter_map(|r| match r.target {
            Target::Jump(c) => Some(c),
            _ => None,
        });
        for c in owners.chain(jumps) {
            if !c.is_builtin() && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// The `iptables-restore --noflush` input that installs this rule set into clean tables.
    pub fn to_restore(&self) -> RestoreScript {
        self.restore_with_cleanup(&|_| Vec::new())
    }

    /// Restore input that first runs `cleanup(table)` (removal lines for a previous installation) in
    /// each table, then creates our chains and rules — all tables in one `iptables-restore` run.
    pub fn restore_with_cleanup(&self, cleanup: &dyn Fn(Table) -> Vec<String>) -> RestoreScript {
        let mut script = RestoreScript::default();
        for table in Table::ALL {
            let removals = cleanup(table);
            let rules: Vec<(usize, &Rule)> = self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.table == table)
                .collect();
            if removals.is_empty() && rules.is_empty() {
                continue;
            }
            let t = Some(table);
            script
                .lines
                .push((format!("* {}", table.name()), LineOrigin::Structure, t));
            for line in removals {
                script.lines.push((line, LineOrigin::Cleanup, t));
            }
            for chain in self.chains(table) {
                script.lines.push((
                    format!("-N {}", chain.name()),
                    LineOrigin::NewChain(chain),
                    t,
                ));
            }
            for (i, rule) in rules {
                script
                    .lines
                    .push((rule.to_string(), LineOrigin::Rule(i), t));
            }
            script
                .lines
                .push(("COMMIT".to_string(), LineOrigin::Structure, t));
        }
        script
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(table: Table, chain: Chain, matches: &[&str], target: Target) -> Rule {
        Rule {
            table,
            chain,
            position: Position::Append,
            matches: matches.iter().map(|s| s.to_string()).collect(),
            target,
        }
    }

    #[test]
    fn restore_text_orders_tables_and_declares_chains() {
        let set = RuleSet {
            rules: vec![
                rule(
                    Table::Raw,
                    Chain::Output,
                    &[],
                    Target::Jump(Chain::IstioOutputDns),
                ),
                rule(
                    Table::Nat,
                    Chain::IstioRedirect,
                    &["-p", "tcp"],
                    Target::Redirect(15001),
                ),
                rule(
                    Table::Nat,
                    Chain::Output,
                    &[],
                    Target::Jump(Chain::IstioOutput),
                ),
                Rule {
                    position: Position::Insert(1),
                    ..rule(
                        Table::Mangle,
                        Chain::Prerouting,
                        &["-i", "eth1"],
                        Target::Return,
                    )
                },
            ],
        };
        let text = set.to_restore().text();
        assert_eq!(
            text,
            "* mangle\n-I PREROUTING 1 -i eth1 -j RETURN\nCOMMIT\n\
             * nat\n-N ISTIO_REDIRECT\n-N ISTIO_OUTPUT\n-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n\
             -A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n\
             * raw\n-N ISTIO_OUTPUT_DNS\n-A OUTPUT -j ISTIO_OUTPUT_DNS\nCOMMIT\n"
        );
    }

    #[test]
    fn lines_map_back_to_rules() {
        let set = RuleSet {
            rules: vec![rule(
                Table::Nat,
                Chain::IstioOutput,
                &["-d", "127.0.0.1/32"],
                Target::Return,
            )],
        };
        let script = set.restore_with_cleanup(&|t| {
            if t == Table::Nat {
                vec!["-F ISTIO_OUTPUT".to_string()]
            } else {
                vec![]
            }
        });
        assert_eq!(script.line(2).map(|l| &l.1), Some(&LineOrigin::Cleanup));
        assert_eq!(
            script.line(3).map(|l| &l.1),
            Some(&LineOrigin::NewChain(Chain::IstioOutput))
        );
        assert_eq!(script.line(4).map(|l| &l.1), Some(&LineOrigin::Rule(0)));
        assert_eq!(script.line(0), None);
        assert_eq!(
            set.rules[0].spec(),
            vec!["-d", "127.0.0.1/32", "-j", "RETURN"]
        );
    }

    #[test]
    fn chain_names_round_trip() {
        for c in Chain::OWN {
            assert_eq!(Chain::from_name(c.name()), Some(c));
            assert!(!c.is_builtin());
        }
        assert!(Chain::from_name("OUTPUT").is_some_and(Chain::is_builtin));
        assert_eq!(Chain::from_name("KUBE-SERVICES"), None);
    }
}
