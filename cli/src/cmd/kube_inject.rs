//! `halyard kube-inject`: offline sidecar injection of manifests, like `istioctl kube-inject`, with the same
//! injector as the admission webhook. Pods and the pod templates of Deployment, ReplicaSet, StatefulSet,
//! DaemonSet, Job and CronJob (also inside `List` documents) are injected; other kinds pass through.
//! Unlike Istio's, re-running it on its own output changes nothing.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use halyard_webhook::Injector;
use halyard_webhook::kube_inject::inject_documents;

#[derive(Debug, clap::Args)]
pub struct KubeInjectArgs {
    /// Manifest to inject (`-` reads standard input).
    #[arg(short = 'f', long = "filename")]
    pub filename: PathBuf,
    /// Where to write the result (standard output when absent).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Injection template file, as the operator writes it (the built-in template when absent).
    #[arg(long = "injection-template", visible_alias = "injectConfigFile")]
    pub injection_template: Option<PathBuf>,
    /// Mesh config file (trustDomain, defaultConfig).
    #[arg(long = "mesh-config", visible_alias = "meshConfigFile")]
    pub mesh_config: Option<PathBuf>,
}

pub fn run(args: KubeInjectArgs) -> anyhow::Result<ExitCode> {
    let injector = Injector::from_files(
        args.injection_template.as_deref(),
        args.mesh_config.as_deref(),
    )?;
    let input = if args.filename.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.filename)
            .with_context(|| format!("cannot read {}", args.filename.display()))?
    };
    let name = args.filename.display().to_string();
    let output = inject_documents(&input, &injector, None)
        .with_context(|| format!("cannot inject {name}"))?;
    match &args.output {
        Some(path) => std::fs::write(path, output)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .write_all(output.as_bytes())
            .context("cannot write standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}
