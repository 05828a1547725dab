//! `halyard version`.
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    println!("halyard version {}", env!("CARGO_PKG_VERSION"));
    Ok(ExitCode::SUCCESS)
}
