//! `halyard-proxy`: the data plane binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = halyard_proxy::cli::Args::parse();
    match halyard_proxy::cli::main_with(args).map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halyard-proxy: {e:#}");
            ExitCode::from(1)
        }
    }
}
