//! Which iptables binary set to use: `iptables-legacy` or `iptables-nft` (or plain `iptables`),
//! chosen the way istio-iptables chooses.

use crate::config::BackendChoice;
use crate::error::InitError;
use crate::exec::run;
use crate::rules::Family;

/// A binary set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
    /// The unsuffixed binaries, when neither suffixed set works.
    Plain,
}

/// The three programs of one backend and family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub backend: Backend,
    pub iptables: String,
    pub save: String,
    pub restore: String,
}

impl Backend {
    pub fn binaries(self, family: Family) -> Binaries {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let name = match self {
            Backend::Legacy => format!("{base}-legacy"),
            Backend::Nft => format!("{base}-nft"),
            Backend::Plain => base.to_string(),
        };
        Binaries {
            backend: self,
            save: format!("{name}-save"),
            restore: format!("{name}-restore"),
            iptables: name,
        }
    }
}

/// What probing one binary set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The binaries run and the kernel accepts a rule through them.
    pub usable: bool,
    /// The namespace already has rules in this backend.
    pub has_rules: bool,
}

/// istio-iptables' choice: legacy if it already holds rules in this namespace (someone set the
/// namespace up with it, and the two must not be mixed), otherwise nft if usable, otherwise the
/// plain binaries (`None` here).
pub fn choose(legacy: Probe, nft: Probe) -> Option<Backend> {
    if legacy.usable && legacy.has_rules {
        Some(Backend::Legacy)
    } else if nft.usable {
        Some(Backend::Nft)
    } else {
        None
    }
}

/// Whether `xx-save` output shows rules or chains of someone's. istio-iptables counts lines; we
/// look for rules or user chains instead, because merely probing a backend leaves empty built-in
/// chains behind, which must not make the next run pick that backend.
pub fn save_has_rules(save_output: &str) -> bool {
    save_output.lines().any(|l| {
        l.starts_with("-A ")
            || l.strip_prefix(':')
                .is_some_and(|decl| decl.split_whitespace().nth(1) == Some("-"))
    })
}

/// Whether the kernel accepts rules through this binary set. The binaries may exist without kernel
/// support: try a rule that can never match (protocol 255 is reserved) and take it out again.
fn usable(bins: &Binaries) -> bool {
    if run(&bins.save, &[], None).is_err() {
        return false;
    }
    let test_rule = ["-t", "filter", "-A", "INPUT", "-p", "255", "-j", "DROP"];
    if run(&bins.iptables, &test_rule, None).is_err() {
        return false;
    }
    let mut delete = test_rule;
    delete[2] = "-D";
    if let Err(e) = run(&bins.iptables, &delete, None) {
        tracing::warn!("could not remove the backend probe rule: {e}");
    }
    true
}

/// Probes a binary set; usability is only tested when `need_usable` (probing adds a rule).
fn probe(bins: &Binaries, need_usable: bool) -> Probe {
    let has_rules = run(&bins.save, &[], None).is_ok_and(|dump| save_has_rules(&dump));
    Probe {
        usable: (need_usable || has_rules) && usable(bins),
        has_rules,
    }
}

/// Picks the binaries for `family`, probing the namespace when `choice` is auto.
pub fn detect(family: Family, choice: BackendChoice) -> Result<Binaries, InitError> {
    let forced = match choice {
        BackendChoice::Legacy => Some(Backend::Legacy),
        BackendChoice::Nft => Some(Backend::Nft),
        BackendChoice::Auto => None,
    };
    if let Some(b) = forced {
        let bins = b.binaries(family);
        return match usable(&bins) {
            true => Ok(bins),
            false => Err(InitError::NoBackend {
                family: family.name(),
                details: format!("{} was requested but cannot add rules here", bins.iptables),
            }),
        };
    }
    let legacy = Backend::Legacy.binaries(family);
    let nft = Backend::Nft.binaries(family);
    if let Some(b) = choose(probe(&legacy, false), probe(&nft, true)) {
        return Ok(b.binaries(family));
    }
    let plain = Backend::Plain.binaries(family);
    if usable(&plain) {
        return Ok(plain);
    }
    Err(InitError::NoBackend {
        family: family.name(),
        details: format!(
            "none of {}, {}, {} can add rules here",
            legacy.iptables, nft.iptables, plain.iptables
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const USABLE_EMPTY: Probe = Probe {
        usable: true,
        has_rules: false,
    };
    const USABLE_WITH_RULES: Probe = Probe {
        usable: true,
        has_rules: true,
    };
    const MISSING: Probe = Probe {
        usable: false,
        has_rules: false,
    };

    #[test]
    fn legacy_wins_only_when_it_holds_rules() {
        assert_eq!(
            choose(USABLE_WITH_RULES, USABLE_WITH_RULES),
            Some(Backend::Legacy)
        );
        assert_eq!(choose(USABLE_EMPTY, USABLE_WITH_RULES), Some(Backend::Nft));
        assert_eq!(choose(USABLE_EMPTY, USABLE_EMPTY), Some(Backend::Nft));
        assert_eq!(choose(USABLE_EMPTY, MISSING), None);
        assert_eq!(choose(MISSING, MISSING), None);
    }

    #[test]
    fn binary_names() {
        let b = Backend::Legacy.binaries(Family::V6);
        assert_eq!(
            (b.iptables.as_str(), b.save.as_str()),
            ("ip6tables-legacy", "ip6tables-legacy-save")
        );
        assert_eq!(
            Backend::Nft.binaries(Family::V4).restore,
            "iptables-nft-restore"
        );
        assert_eq!(Backend::Plain.binaries(Family::V4).save, "iptables-save");
    }

    #[test]
    fn rules_are_recognised_in_save_output() {
        assert!(!save_has_rules(""));
        assert!(!save_has_rules(
            "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
        ));
        assert!(!save_has_rules(
            "# Generated\n*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
        ));
        assert!(save_has_rules(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p 255 -j DROP\nCOMMIT\n"
        ));
        assert!(save_has_rules(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\nCOMMIT\n"
        ));
    }
}
