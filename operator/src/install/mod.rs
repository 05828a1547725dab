//! The `MeshInstall` lifecycle: rendering a MeshInstall into Kubernetes objects ([`render`]), the
//! certificate authority and the webhook's serving certificate ([`ca`]), the controller that applies,
//! prunes, reports status and uninstalls ([`controller`]), the upgrade rules ([`upgrade`]), and leader
//! election with a Lease ([`leader`]); the mesh root published into every namespace as `istio-ca-root-cert`
//! ([`root_cert`]); what the cluster supports, e.g. native sidecars ([`cluster`]).
//!
//! Entry point: [`run_controller`] (or [`leader::run_with_leader_election`] when several replicas run).

pub mod args;
pub mod ca;
pub mod client;
pub mod cluster;
pub mod controller;
pub mod kinds;
pub mod leader;
pub mod render;
pub mod root_cert;
pub mod status;
pub mod upgrade;

pub use args::{InstallArgs, run};
pub use controller::{Context, ControllerOptions, ProxyCounter, run_controller};
pub use render::{RenderInput, RenderSettings, render};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "halyard-operator";
/// Finalizer that runs the uninstall before a MeshInstall disappears.
pub const FINALIZER: &str = "install.halyard.dev/uninstall";
/// Label naming the MeshInstall that owns an object (Istio's pruning label).
pub const LABEL_OWNER: &str = "install.operator.istio.io/owning-resource";
/// Label naming the component an object belongs to (Istio's).
pub const LABEL_COMPONENT: &str = "operator.istio.io/component";
/// Label marking everything the operator manages.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "halyard-operator";
/// Revision label (Istio's).
pub const LABEL_REV: &str = "istio.io/rev";
/// Annotation that makes the validating webhook deny an object (Istio's readiness check of validation).
pub const ANNOTATION_ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";

/// Everything that can go wrong while installing, upgrading or uninstalling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MeshInstall {name}: spec.{field}: {why}")]
    InvalidSpec {
        name: String,
        field: String,
        why: String,
    },
    #[error("MeshInstall has no metadata.name")]
    Unnamed,
    #[error("rendering {what}: {why}")]
    Render { what: String, why: String },
    #[error("certificate authority: {0}")]
    Ca(String),
    #[error("Secret {namespace}/{name}: {why}")]
    CaSecret {
        namespace: String,
        name: String,
        why: String,
    },
    #[error("{verb} {kind} {name}: {source}")]
    Kube {
        verb: &'static str,
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("unknown kind {api_version}/{kind} in rendered object {name}")]
    UnknownKind {
        api_version: String,
        kind: String,
        name: String,
    },
    #[error("CRDs not yet Established: {0}")]
    CrdsNotEstablished(String),
    #[error("upgrade refused: {0}")]
    UpgradeRefused(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("writing {path}: {why}")]
    Io { path: String, why: String },
    #[error("leader election on Lease {namespace}/{name}: {why}")]
    Lease {
        namespace: String,
        name: String,
        why: String,
    },
}

impl Error {
    pub(crate) fn kube(verb: &'static str, kind: &str, name: &str, source: kube::Error) -> Self {
        Error::Kube {
            verb,
            kind: kind.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        }
    }

    /// Short machine-readable reason, used for condition reasons and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec { .. } | Error::Unnamed => "InvalidSpec",
            Error::Render { .. } => "RenderFailed",
            Error::Ca(_) | Error::CaSecret { .. } => "CertificateError",
            Error::Kube { .. } | Error::UnknownKind { .. } => "ApplyFailed",
            Error::CrdsNotEstablished(_) => "WaitingForCRDs",
            Error::UpgradeRefused(_) => "UpgradeRefused",
            Error::Finalizer(_) => "FinalizerFailed",
            Error::Io { .. } => "WriteFailed",
            Error::Lease { .. } => "LeaderElectionFailed",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
