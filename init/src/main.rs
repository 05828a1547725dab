//! `halyard-init`: installs the traffic capture rules in the pod's network namespace.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;

use halyard_init::apply::{self, Change};
use halyard_init::config::{self, Config, Flags};
use halyard_init::{host, render};

/// Set up iptables traffic capture for the halyard sidecar (flags compatible with istio-iptables).
#[derive(Parser)]
#[command(name = "halyard-init", version, args_override_self = true)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = config::log_level(&cli.flags.log_output_level)?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let facts = host::gather(&cli.flags)?;
    let cfg = Config::from_flags(&cli.flags, &facts)?;

    if cli.flags.dry_run {
        let (v4, v6) = render::render_all(&cfg);
        print!(
            "{}",
            apply::dry_run_text(&v4, cfg.enable_ipv6.then_some(&v6))
        );
        return Ok(());
    }

    let reports = if cli.flags.cleanup {
        apply::cleanup(&cfg, cli.flags.backend).context("removing the capture rules")?
    } else {
        apply::install(&cfg, cli.flags.backend).context("installing the capture rules")?
    };
    for r in reports {
        let what = match r.change {
            Change::AlreadyInPlace => "rules already in place, nothing changed",
            Change::Installed => "rules installed",
            Change::Replaced => "rules from an earlier run replaced",
            Change::Removed => "rules removed",
            Change::NothingToRemove => "no rules to remove",
        };
        tracing::info!("{} ({}): {what}", r.family.name(), r.binaries.iptables);
    }
    Ok(())
}
