//! `halyard-operator`: the control plane binary.

use clap::Parser;
use halyard_operator::run::{Args, init_logging, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args)?;
    run(args).await?;
    Ok(())
}
