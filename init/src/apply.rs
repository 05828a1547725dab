//! Installing and removing the rules in the current network namespace.
//!
//! Both families are planned first (backend, current state, restore input), checked with
//! `iptables-restore --test`, then applied with `--noflush` in one `iptables-restore` run per family
//! that removes a previous installation and adds ours. If a run fails, the tables it touched (in
//! both families) are put back from the state saved before, so the namespace ends as it began.

use crate::backend::{Backend, Binaries, detect};
use crate::config::{BackendChoice, Config, InterceptMode};
use crate::error::InitError;
use crate::exec::run;
use crate::render::render_all;
use crate::rules::{Family, LineOrigin, RestoreScript, RuleSet, Table};
use crate::state::{SavedTable, parse_save, residue, same_shape};

/// What an install did to one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The rules were already exactly in place; nothing was run.
    AlreadyInPlace,
    /// Installed into tables that had none of our rules.
    Installed,
    /// A previous installation (other flags) was replaced.
    Replaced,
    /// Our rules were removed (`--cleanup`, or IPv6 rules left over with IPv6 now off).
    Removed,
    /// There was nothing to remove.
    NothingToRemove,
}

/// The outcome for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyReport {
    pub family: Family,
    pub binaries: Binaries,
    pub change: Change,
}

/// The `--dry-run` output: the restore input of each family under a comment naming the command.
pub fn dry_run_text(v4: &RuleSet, v6: Option<&RuleSet>) -> String {
    let mut out = String::from("# IPv4: iptables-restore --noflush\n");
    out.push_str(&v4.to_restore().text());
    if let Some(v6) = v6 {
        out.push_str("# IPv6: ip6tables-restore --noflush\n");
        out.push_str(&v6.to_restore().text());
    }
    out
}

/// Installs the rules for `cfg` (idempotent; replaces rules from earlier runs with other flags).
pub fn install(cfg: &Config, choice: BackendChoice) -> Result<Vec<FamilyReport>, InitError> {
    let (v4, v6) = render_all(cfg);
    let mut plans = vec![Plan::new(Family::V4, detect(Family::V4, choice)?, &v4)?];
    if cfg.enable_ipv6 {
        plans.push(Plan::new(Family::V6, detect(Family::V6, choice)?, &v6)?);
    } else if let Ok(bins) = detect(Family::V6, choice) {
        // IPv6 is off now: take out IPv6 rules an earlier run may have installed.
        plans.push(Plan::new(Family::V6, bins, &RuleSet::default())?);
    }
    if cfg.enable_ipv6 {
        // Before the rules: they let the proxy's connections from ::6 through, so it must exist.
        add_ipv6_passthrough_address()?;
    }
    let reports = execute(&plans)?;
    if cfg.mode == InterceptMode::Tproxy {
        tproxy_routes(cfg, true)?;
    } else if let Err(e) = tproxy_routes(cfg, false) {
        // Routing left by an earlier TPROXY run; usually there is none.
        tracing::debug!("no TPROXY routes removed: {e}");
    }
    Ok(reports)
}

/// Removes everything we (or istio-iptables) installed.
pub fn cleanup(cfg: &Config, choice: BackendChoice) -> Result<Vec<FamilyReport>, InitError> {
    let mut plans = vec![Plan::new(
        Family::V4,
        detect(Family::V4, choice)?,
        &RuleSet::default(),
    )?];
    match detect(Family::V6, choice) {
        Ok(bins) => plans.push(Plan::new(Family::V6, bins, &RuleSet::default())?),
        Err(e) => tracing::info!("skipping IPv6 cleanup: {e}"),
    }
    let reports = execute(&plans)?;
    // Policy routing is only set up in TPROXY mode; removing it otherwise is harmless.
    if let Err(e) = tproxy_routes(cfg, false) {
        tracing::debug!("no TPROXY routes removed: {e}");
    }
    Ok(reports)
}

/// One family's work: where it stands and what to run.
struct Plan {
    family: Family,
    bins: Binaries,
    saved: Vec<SavedTable>,
    /// `None` when the desired rules are already in place.
    script: Option<RestoreScript>,
    had_residue: bool,
    removing: bool,
}

impl Plan {
    fn new(family: Family, bins: Binaries, desired: &RuleSet) -> Result<Plan, InitError> {
        let saved = parse_save(&run(&bins.save, &[], None)?);
        let residues: Vec<(Table, Vec<String>)> = saved
            .iter()
            .map(|t| (t.table, residue(t).removal_lines()))
            .filter(|(_, lines)| !lines.is_empty())
            .collect();
        let had_residue = !residues.is_empty();
        let in_place = same_shape(&saved, desired) && all_present(&bins, desired);
        let script = (!in_place).then(|| {
            desired.restore_with_cleanup(&|table| {
                residues
                    .iter()
                    .find(|(t, _)| *t == table)
                    .map(|(_, lines)| lines.clone())
                    .unwrap_or_default()
            })
        });
        Ok(Plan {
            family,
            bins,
            saved,
            script: script.filter(|s| !s.is_empty()),
            had_residue,
            removing: desired.rules.is_empty(),
        })
    }

    fn change(&self) -> Change {
        match (&self.script, self.removing, self.had_residue) {
            (None, true, _) => Change::NothingToRemove,
            (None, false, _) => Change::AlreadyInPlace,
            (Some(_), true, _) => Change::Removed,
            (Some(_), false, true) => Change::Replaced,
            (Some(_), false, false) => Change::Installed,
        }
    }

    /// The state of the tables this plan touches, as saved before, for putting them back.
    fn rollback_text(&self) -> Option<String> {
        let script = self.script.as_ref()?;
        let mut tables: Vec<Table> = script.lines.iter().filter_map(|(_, _, t)| *t).collect();
        tables.dedup();
        let mut text = String::new();
        for table in tables {
            match self.saved.iter().find(|s| s.table == table) {
                Some(s) => text.push_str(&s.text),
                // The table did not exist: restoring it empty removes what we added.
                None => text.push_str(&format!("*{}\nCOMMIT\n", table.name())),
            }
        }
        Some(text)
    }
}

/// Legacy iptables serialises writers with a file lock: wait for it, but not forever (istio-iptables
/// waits 30 s too). nft needs no lock.
const LEGACY_LOCK_WAIT: &str = "--wait=30";

/// Whether every desired rule exists (`iptables -C`, which compares as the kernel does).
fn all_present(bins: &Binaries, desired: &RuleSet) -> bool {
    desired.rules.iter().all(|rule| {
        let spec = rule.spec();
        let mut args = vec!["-t", rule.table.name(), "-C", rule.chain.name()];
        args.extend(spec.iter().map(String::as_str));
        if bins.backend == Backend::Legacy {
            args.push(LEGACY_LOCK_WAIT);
        }
        run(&bins.iptables, &args, None).is_ok()
    })
}

fn restore_args(bins: &Binaries, extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = extra.to_vec();
    if bins.backend == Backend::Legacy {
        args.push(LEGACY_LOCK_WAIT);
    }
    args
}

fn execute(plans: &[Plan]) -> Result<Vec<FamilyReport>, InitError> {
    // Parse and check everything before changing anything.
    for plan in plans {
        if let Some(script) = &plan.script {
            let args = restore_args(&plan.bins, &["--noflush", "--test"]);
            run(&plan.bins.restore, &args, Some(&script.text()))
                .map_err(|e| restore_error(&plan.bins, script, e))?;
        }
    }
    for (i, plan) in plans.iter().enumerate() {
        let Some(script) = &plan.script else { continue };
        tracing::info!(
            "running {} --noflush with:\n{}",
            plan.bins.restore,
            script.text().trim_end()
        );
        let args = restore_args(&plan.bins, &["--noflush"]);
        if let Err(e) = run(&plan.bins.restore, &args, Some(&script.text())) {
            let err = restore_error(&plan.bins, script, e);
            // Put back this family's tables and those of the families already applied.
            for done in plans[..=i].iter().rev() {
                if let Some(text) = done.rollback_text() {
                    let args = restore_args(&done.bins, &[]);
                    run(&done.bins.restore, &args, Some(&text)).map_err(|rb| {
                        InitError::RollbackFailed {
                            program: plan.bins.restore.clone(),
                            cause: err.to_string(),
                            rollback: rb.to_string(),
                        }
                    })?;
                }
            }
            return Err(err);
        }
    }
    Ok(plans
        .iter()
        .map(|p| FamilyReport {
            family: p.family,
            binaries: p.bins.clone(),
            change: p.change(),
        })
        .collect())
}

/// The line iptables-restore blames: `Error occurred at line: N` (the rule it could not parse)
/// if present, else `line N failed` (the COMMIT or rule the kernel refused).
pub fn failed_line(stderr: &str) -> Option<usize> {
    let number_after = |marker: &str| {
        stderr.find(marker).and_then(|i| {
            let digits: String = stderr[i + marker.len()..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    };
    number_after("Error occurred at line:").or_else(|| number_after(": line "))
}

/// Names the rule behind a failed `iptables-restore` run.
fn restore_error(bins: &Binaries, script: &RestoreScript, err: InitError) -> InitError {
    let stderr = match err {
        InitError::Command { stderr, .. } => stderr,
        other => return other,
    };
    let blamed = failed_line(&stderr).and_then(|n| script.line(n).map(|l| (n, l)));
    match blamed {
        // A COMMIT is blamed when the kernel refuses the table: name the table's rules instead.
        Some((n, (text, origin, table)))
            if *origin != LineOrigin::Structure || text != "COMMIT" =>
        {
            InitError::RuleRejected {
                program: bins.restore.clone(),
                line: n,
                table: table.map_or("?", Table::name).to_string(),
                rule: text.clone(),
                stderr,
            }
        }
        Some((n, (_, _, table))) => InitError::RuleRejected {
            program: bins.restore.clone(),
            line: n,
            table: table.map_or("?", Table::name).to_string(),
            rule: format!("COMMIT of the {} table", table.map_or("?", Table::name)),
            stderr,
        },
        None => InitError::RestoreFailed {
            program: bins.restore.clone(),
            stderr,
        },
    }
}

/// IPv6 loopback has only `::1`, so the proxy needs `::6` on `lo` to bind its inbound passthrough
/// connections to (the IPv6 counterpart of 127.0.0.6).
fn add_ipv6_passthrough_address() -> Result<(), InitError> {
    match run("ip", &["-6", "addr", "add", "::6/128", "dev", "lo"], None) {
        Err(InitError::Command { stderr, .. })
            if stderr.contains("File exists") || stderr.contains("already assigned") =>
        {
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

/// TPROXY policy routing: marked packets are delivered locally through `lo` (table `-r`).
fn tproxy_routes(cfg: &Config, add: bool) -> Result<(), InitError> {
    let mark = cfg.tproxy_mark.to_string();
    let table = cfg.tproxy_route_table.to_string();
    let mut families = vec!["inet"];
    if cfg.enable_ipv6 {
        families.push("inet6");
    }
    for fam in families {
        // `ip rule add` does not refuse duplicates: delete first (bounded) so re-runs stay idempotent.
        for _ in 0..16 {
            if run(
                "ip",
                &["-f", fam, "rule", "del", "fwmark", &mark, "lookup", &table],
                None,
            )
            .is_err()
            {
                break;
            }
        }
        if add {
            run(
                "ip",
                &["-f", fam, "rule", "add", "fwmark", &mark, "lookup", &table],
                None,
            )?;
            let route = [
                "-f", fam, "route", "replace", "local", "default", "dev", "lo", "table", &table,
            ];
            run("ip", &route, None)?;
        } else {
            run("ip", &["-f", fam, "route", "flush", "table", &table], None)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_blamed_line() {
        let legacy = "iptables-restore: line 3 failed\niptables-restore v1.8.9 (legacy): owner: Bad value for \
                      \"--gid-owner\" option: \"nosuchgroup\"\nError occurred at line: 2\nTry `iptables-restore -h'";
        assert_eq!(failed_line(legacy), Some(2));
        let nft = "iptables-nft-restore: line 9 failed: Bad rule (does a matching rule exist in that chain?).";
        assert_eq!(failed_line(nft), Some(9));
        assert_eq!(failed_line("something else"), None);
    }

    #[test]
    fn rejected_line_is_mapped_to_the_rule() {
        let set = RuleSet {
            rules: vec![crate::rules::Rule {
                table: Table::Nat,
                chain: crate::rules::Chain::IstioOutput,
                position: crate::rules::Position::Append,
                matches: vec![
                    "-m".into(),
                    "owner".into(),
                    "!".into(),
                    "--gid-owner".into(),
                    "nogroup1".into(),
                ],
                target: crate::rules::Target::Return,
            }],
        };
        let script = set.to_restore();
        let bins = Backend::Nft.binaries(Family::V4);
        let err = restore_error(
            &bins,
            &script,
            InitError::Command {
                program: bins.restore.clone(),
                args: String::new(),
                status: "exit status: 2".into(),
                stderr: "owner: Bad value\nError occurred at line: 3".into(),
            },
        );
        let msg = err.to_string();
        assert!(msg.contains("line 3 (nat table)"), "{msg}");
        assert!(
            msg.contains("`-A ISTIO_OUTPUT -m owner ! --gid-owner nogroup1 -j RETURN`"),
            "{msg}"
        );
    }

    #[test]
    fn rollback_puts_back_exactly_the_touched_tables() {
        let saved = parse_save(
            "*mangle\n:PREROUTING ACCEPT [1:2]\n-A PREROUTING -j MARK --set-mark 1\nCOMMIT\n\
             *nat\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n",
        );
        let script = RestoreScript {
            lines: vec![
                ("* nat".into(), LineOrigin::Structure, Some(Table::Nat)),
                (
                    "-F ISTIO_OUTPUT".into(),
                    LineOrigin::Cleanup,
                    Some(Table::Nat),
                ),
                ("COMMIT".into(), LineOrigin::Structure, Some(Table::Nat)),
                ("* raw".into(), LineOrigin::Structure, Some(Table::Raw)),
                ("COMMIT".into(), LineOrigin::Structure, Some(Table::Raw)),
            ],
        };
        let plan = Plan {
            family: Family::V4,
            bins: Backend::Nft.binaries(Family::V4),
            saved,
            script: Some(script),
            had_residue: true,
            removing: false,
        };
        assert_eq!(
            plan.rollback_text().unwrap(),
            "*nat\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n*raw\nCOMMIT\n"
        );
        assert_eq!(plan.change(), Change::Replaced);
        let nothing = Plan {
            script: None,
            ..plan
        };
        assert_eq!(nothing.rollback_text(), None);
        assert_eq!(nothing.change(), Change::AlreadyInPlace);
    }

    #[test]
    fn dry_run_lists_both_families() {
        let text = dry_run_text(&RuleSet::default(), Some(&RuleSet::default()));
        assert_eq!(
            text,
            "# IPv4: iptables-restore --noflush\n# IPv6: ip6tables-restore --noflush\n"
        );
    }
}
