//! `halyard install` / `halyard uninstall`: the CLI equivalents of applying `operator/deploy/` and a
//! MeshInstall (and of deleting them), waiting for the operator to report the result.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use halyard_crds::install::MeshInstall;
use halyard_operator::install::client;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// A MeshInstall manifest to apply instead of one built from the flags below.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["profile", "revision", "set_version"])]
    pub file: Option<PathBuf>,
    /// Installation profile: default, demo or minimal.
    #[arg(long)]
    pub profile: Option<String>,
    /// Control-plane revision (`istio.io/rev`), for a canary control plane beside the default one.
    #[arg(long)]
    pub revision: Option<String>,
    /// Mesh version to install (the operator's own when unset).
    #[arg(long = "set-version")]
    pub set_version: Option<String>,
    /// Name of the MeshInstall (built from flags).
    #[arg(long, default_value = "mesh")]
    pub name: String,
    /// Image of the operator (default: the one in the embedded manifests).
    #[arg(long)]
    pub operator_image: Option<String>,
    /// How long to wait for `Reconciled`.
    #[arg(long, default_value = "5m", value_parser = humantime_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Uninstall only this MeshInstall (the operator stays).
    #[arg(long)]
    pub name: Option<String>,
    /// Also delete the MeshInstall CRD (Istio CRDs go only with `spec.uninstall.purgeCRDs`).
    #[arg(long)]
    pub purge: bool,
    #[arg(long, default_value = "5m", value_parser = humantime_duration)]
    pub timeout: Duration,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration such as 90s or 5m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("\"{s}\" is not a duration such as 90s or 5m")),
    }
}

fn mesh_install(args: &InstallArgs) -> anyhow::Result<MeshInstall> {
    if let Some(path) = &args.file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mi: MeshInstall = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not a MeshInstall", path.display()))?;
        return Ok(mi);
    }
    let mut spec = serde_json::Map::new();
    if let Some(p) = &args.profile {
        spec.insert("profile".into(), p.clone().into());
    }
    if let Some(r) = &args.revision {
        spec.insert("revision".into(), r.clone().into());
    }
    if let Some(v) = &args.set_version {
        spec.insert("version".into(), v.clone().into());
    }
    let spec = serde_json::from_value(serde_json::Value::Object(spec))
        .context("--profile must be default, demo or minimal")?;
    Ok(MeshInstall::new(&args.name, spec))
}

pub fn run_install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let mi = mesh_install(&args)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let message = rt.block_on(async {
        let c = client::connect().await?;
        client::install(&c, &mi, args.operator_image.as_deref(), args.timeout).await
    })?;
    println!(
        "✔ MeshInstall {} reconciled: {message}",
        mi.metadata.name.as_deref().unwrap_or("")
    );
    println!("  kubectl get meshinstall -o wide   # Ready shows when every component is available");
    Ok(ExitCode::SUCCESS)
}

pub fn run_uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let removed = rt.block_on(async {
        let c = client::connect().await?;
        client::uninstall(&c, args.name.as_deref(), args.purge, args.timeout).await
    })?;
    if removed.is_empty() && args.name.is_some() {
        bail!("no MeshInstall was removed");
    }
    for n in &removed {
        println!("✔ MeshInstall {n} uninstalled (Istio CRDs and your Istio objects are kept)");
    }
    if args.name.is_none() {
        println!("✔ halyard-operator removed");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_mesh_install() {
        let args = InstallArgs {
            file: None,
            profile: Some("demo".into()),
            revision: Some("canary".into()),
            set_version: None,
            name: "m".into(),
            operator_image: None,
            timeout: Duration::from_secs(1),
        };
        let mi = mesh_install(&args).unwrap();
        assert_eq!(mi.spec.revision.as_deref(), Some("canary"));
        assert_eq!(mi.spec.profile, halyard_crds::install::Profile::Demo);
        let bad = InstallArgs {
            profile: Some("huge".into()),
            ..args
        };
        assert!(mesh_install(&bad).is_err());
        assert_eq!(humantime_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(humantime_duration("5 minutes").is_err());
    }
}
