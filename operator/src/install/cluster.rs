//! What the cluster supports, read from the API server: today, whether injected proxies can run as Kubernetes
//! native sidecars (an init container with `restartPolicy: Always`).
//!
//! Istio's rule for `ENABLE_NATIVE_SIDECARS=auto` (its default; `webhook.go` `DetectNativeSidecar`): native
//! sidecars are used only when the cluster runs Kubernetes 1.33 or later **and every node's kubelet** is 1.33
//! or later; a single older node keeps classic sidecars. `spec.injection.nativeSidecar: true|false` skips the
//! detection, and a pod's `sidecar.istio.io/nativeSidecar` annotation still overrides per pod (webhook).

use halyard_crds::install::NativeSidecar;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::{Error, Result};

/// The first Kubernetes minor version (of 1.x) whose API server and kubelets run native sidecars for Istio.
pub const NATIVE_SIDECAR_MIN_MINOR: u32 = 33;

/// The outcome of detection, with the reason shown in status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSidecarSupport {
    pub supported: bool,
    pub reason: String,
}

/// `(major, minor)` of a version text: `v1.33.2`, `1.33`, `v1.33.1-gke.1200`, or the API server's `major`
/// and `minor` fields (`"1"`, `"33+"`), whose non-digit suffixes are ignored.
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let t = text.trim().trim_start_matches('v');
    let mut parts = t.split('.');
    let num = |s: Option<&str>| -> Option<u32> {
        let s = s?;
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((num(parts.next())?, num(parts.next())?))
}

fn at_least(v: (u32, u32)) -> bool {
    v.0 > 1 || (v.0 == 1 && v.1 >= NATIVE_SIDECAR_MIN_MINOR)
}

/// Istio's rule as a pure function: the API server's version (`git_version` or `major.minor`) and every
/// node's kubelet version.
pub fn native_sidecar_support(server: &str, kubelets: &[(String, String)]) -> NativeSidecarSupport {
    let min = format!("1.{NATIVE_SIDECAR_MIN_MINOR}");
    let Some(sv) = parse_version(server) else {
        return NativeSidecarSupport {
            supported: false,
            reason: format!("API server version {server:?} is not understood; classic sidecars"),
        };
    };
    if !at_least(sv) {
        return NativeSidecarSupport {
            supported: false,
            reason: format!(
                "Kubernetes {}.{} is older than {min}; classic sidecars",
                sv.0, sv.1
            ),
        };
    }
    let old: Vec<String> = kubelets
        .iter()
        .filter(|(_, v)| !parse_version(v).is_some_and(at_least))
        .map(|(n, v)| format!("{n} ({v})"))
        .collect();
    if !old.is_empty() {
        return NativeSidecarSupport {
            supported: false,
            reason: format!(
                "kubelet older than {min} on node {}; classic sidecars",
                old.join(", ")
            ),
        };
    }
    NativeSidecarSupport {
        supported: true,
        reason: format!(
            "Kubernetes {}.{} and every kubelet ({}) at {min} or later; native sidecars",
            sv.0,
            sv.1,
            kubelets.len()
        ),
    }
}

/// Reads the API server's version and the nodes' kubelet versions and applies [`native_sidecar_support`].
pub async fn detect_native_sidecars(client: &Client) -> Result<NativeSidecarSupport> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|e| Error::kube("get", "API server version", "/version", e))?;
    let server = if info.git_version.is_empty() {
        format!("{}.{}", info.major, info.minor)
    } else {
        info.git_version.clone()
    };
    if !parse_version(&server).is_some_and(at_least) {
        // No need to look at the nodes.
        return Ok(native_sidecar_support(&server, &[]));
    }
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list", "Node", "*", e))?;
    let kubelets: Vec<(String, String)> = nodes
        .items
        .iter()
        .map(|n| {
            let v = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default();
            (n.name_any(), v)
        })
        .collect();
    Ok(native_sidecar_support(&server, &kubelets))
}

/// The injection template's `nativeSidecars`: an explicit setting wins, `auto` takes the detection.
pub fn native_sidecars(setting: NativeSidecar, auto_supported: bool) -> bool {
    match setting {
        NativeSidecar::Enabled => true,
        NativeSidecar::Disabled => false,
        NativeSidecar::Auto => auto_supported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(vs: &[&str]) -> Vec<(String, String)> {
        vs.iter()
            .enumerate()
            .map(|(i, v)| (format!("node-{i}"), v.to_string()))
            .collect()
    }

    #[test]
    fn versions_parse_in_every_form_the_api_uses() {
        assert_eq!(parse_version("v1.33.2"), Some((1, 33)));
        assert_eq!(parse_version("1.33+"), Some((1, 33)));
        assert_eq!(parse_version("v1.32.4-gke.1200"), Some((1, 32)));
        assert_eq!(parse_version("v2.0.0"), Some((2, 0)));
        assert_eq!(parse_version("latest"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn native_sidecars_need_the_server_and_every_kubelet_at_1_33() {
        assert!(native_sidecar_support("v1.33.0", &nodes(&["v1.33.1", "v1.34.0"])).supported);
        assert!(native_sidecar_support("v1.34.0", &[]).supported);
        let old_server = native_sidecar_support("v1.32.9", &nodes(&["v1.33.1"]));
        assert!(!old_server.supported);
        assert!(
            old_server.reason.contains("1.32 is older than 1.33"),
            "{}",
            old_server.reason
        );
        let one_old_node = native_sidecar_support("v1.33.0", &nodes(&["v1.33.1", "v1.29.3"]));
        assert!(!one_old_node.supported);
        assert!(
            one_old_node.reason.contains("node-1 (v1.29.3)"),
            "{}",
            one_old_node.reason
        );
        assert!(
            !native_sidecar_support("v1.33.0", &nodes(&[""])).supported,
            "unknown kubelet"
        );
    }

    #[test]
    fn explicit_settings_win_over_detection() {
        assert!(native_sidecars(NativeSidecar::Enabled, false));
        assert!(!native_sidecars(NativeSidecar::Disabled, true));
        assert!(native_sidecars(NativeSidecar::Auto, true));
        assert!(!native_sidecars(NativeSidecar::Auto, false));
    }
}
