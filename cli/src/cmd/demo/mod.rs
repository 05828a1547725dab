//! `halyard demo`: the Bookinfo mesh on this machine (control plane, one proxy per workload, sample services,
//! all on loopback) and a scripted tour of traffic management, every step checked from observed traffic.
//!
//! The pieces run as child processes of this same executable through hidden subcommands, so
//! `cargo run --bin halyard -- demo` needs no other binary.

pub mod app;
pub mod load;
pub mod mesh;
pub mod observe;
pub mod steps;
pub mod supervisor;

use std::process::ExitCode;

/// Run a sample service (hidden; started by `halyard demo`).
pub fn run_app(args: app::AppArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(app::run(args))?;
    Ok(ExitCode::SUCCESS)
}
