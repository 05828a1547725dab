//! The kinds the operator renders, with what the API needs to address them (no discovery round trip).

use kube::discovery::{ApiResource, Scope};

/// One kind the operator creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl KindInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    pub fn scope(&self) -> Scope {
        if self.namespaced {
            Scope::Namespaced
        } else {
            Scope::Cluster
        }
    }
}

const fn k(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> KindInfo {
    KindInfo {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

pub const NAMESPACE: KindInfo = k("", "v1", "Namespace", "namespaces", false);
pub const CRD: KindInfo = k(
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    false,
);
pub const SERVICE_ACCOUNT: KindInfo = k("", "v1", "ServiceAccount", "serviceaccounts", true);
pub const CONFIG_MAP: KindInfo = k("", "v1", "ConfigMap", "configmaps", true);
pub const SECRET: KindInfo = k("", "v1", "Secret", "secrets", true);
pub const SERVICE: KindInfo = k("", "v1", "Service", "services", true);
pub const ROLE: KindInfo = k("rbac.authorization.k8s.io", "v1", "Role", "roles", true);
pub const ROLE_BINDING: KindInfo = k(
    "rbac.authorization.k8s.io",
    "v1",
    "RoleBinding",
    "rolebindings",
    true,
);
pub const DEPLOYMENT: KindInfo = k("apps", "v1", "Deployment", "deployments", true);
pub const PDB: KindInfo = k(
    "policy",
    "v1",
    "PodDisruptionBudget",
    "poddisruptionbudgets",
    true,
);
pub const MUTATING_WEBHOOK: KindInfo = k(
    "admissionregistration.k8s.io",
    "v1",
    "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
    false,
);
pub const VALIDATING_WEBHOOK: KindInfo = k(
    "admissionregistration.k8s.io",
    "v1",
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
    false,
);
pub const PEER_AUTHENTICATION: KindInfo = k(
    "security.istio.io",
    "v1",
    "PeerAuthentication",
    "peerauthentications",
    true,
);

/// Every kind the renderer may produce.
pub const ALL: [KindInfo; 13] = [
    NAMESPACE,
    CRD,
    SERVICE_ACCOUNT,
    ROLE,
    ROLE_BINDING,
    CONFIG_MAP,
    SECRET,
    SERVICE,
    DEPLOYMENT,
    PDB,
    MUTATING_WEBHOOK,
    VALIDATING_WEBHOOK,
    PEER_AUTHENTICATION,
];

/// Kinds whose owned objects are pruned when no longer desired and deleted on uninstall, in uninstall
/// order: the webhook configurations first (a fail-closed webhook whose server is gone would block every pod
/// and every Istio object), then the workloads, then what they used. The namespace and the CRDs are never
/// pruned (CRDs go only with `spec.uninstall.purgeCRDs`).
pub const PRUNE_ORDER: [KindInfo; 11] = [
    MUTATING_WEBHOOK,
    VALIDATING_WEBHOOK,
    PEER_AUTHENTICATION,
    DEPLOYMENT,
    PDB,
    SERVICE,
    ROLE_BINDING,
    ROLE,
    SERVICE_ACCOUNT,
    CONFIG_MAP,
    SECRET,
];

pub const CLUSTER_ROLE: KindInfo = k(
    "rbac.authorization.k8s.io",
    "v1",
    "ClusterRole",
    "clusterroles",
    false,
);
pub const CLUSTER_ROLE_BINDING: KindInfo = k(
    "rbac.authorization.k8s.io",
    "v1",
    "ClusterRoleBinding",
    "clusterrolebindings",
    false,
);
pub const MESH_INSTALL: KindInfo = k(
    "install.halyard.dev",
    "v1alpha1",
    "MeshInstall",
    "meshinstalls",
    false,
);

/// Kinds of the operator's own manifests (`halyard install`) that MeshInstalls never render.
pub const OPERATOR_ONLY: [KindInfo; 3] = [CLUSTER_ROLE, CLUSTER_ROLE_BINDING, MESH_INSTALL];

/// The kind of an `apiVersion`/`kind` pair, if the operator knows it.
pub fn lookup(api_version: &str, kind: &str) -> Option<KindInfo> {
    ALL.into_iter()
        .chain(OPERATOR_ONLY)
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_core_and_grouped_kinds() {
        assert_eq!(lookup("v1", "Secret"), Some(SECRET));
        assert_eq!(lookup("apps/v1", "Deployment"), Some(DEPLOYMENT));
        assert_eq!(lookup("apps/v1beta1", "Deployment"), None);
        assert_eq!(DEPLOYMENT.api_resource().api_version, "apps/v1");
    }
}
