//! End to end against a real cluster, run only when `KUBECONFIG` is set (there is no cluster in CI, so it
//! skips there too, saying why). The webhook runs here, out of cluster, and is registered with
//! `clientConfig.url`, so the API server must reach this machine: set `HALYARD_E2E_WEBHOOK_HOST` to this
//! machine's address as seen from the cluster (for kind, the docker bridge gateway, e.g. 172.18.0.1).
//!
//! Checks: a pod created (server-side dry run) in a namespace labelled `istio-injection=enabled` comes back
//! injected; `kubectl apply` of an invalid VirtualService prints Istio's denial text.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use base64::Engine;
use halyard_webhook::Injector;
use halyard_webhook::server::{self, AppState, ServerOptions};
use halyard_webhook::tls::ReloadingCertResolver;

const ISTIO_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/crds/crd-all.gen.yaml"
);

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Removes what the test created, even when an assertion fails.
struct Cleanup {
    namespace: String,
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "mutatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ],
            None,
        );
        let _ = kubectl(
            &[
                "delete",
                "validatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ],
            None,
        );
        let _ = kubectl(
            &[
                "delete",
                "namespace",
                &self.namespace,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

#[tokio::test]
async fn injection_and_validation_through_a_real_api_server() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("SKIPPED: KUBECONFIG is not set, so there is no cluster to test against");
        return;
    }
    let Ok(host) = std::env::var("HALYARD_E2E_WEBHOOK_HOST") else {
        eprintln!(
            "SKIPPED: set HALYARD_E2E_WEBHOOK_HOST to this machine's address as the cluster sees it \
             (the API server calls the out-of-cluster webhook there)"
        );
        return;
    };
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("KUBECONFIG is set but kubectl is not installed");
    }

    // Serving certificate for the address the API server will call.
    let ck = rcgen::generate_simple_self_signed(vec![host.clone()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), ck.signing_key.serialize_pem()).unwrap();
    let resolver = Arc::new(
        ReloadingCertResolver::new(dir.path().join("tls.crt"), dir.path().join("tls.key")).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(Injector::builtin().unwrap(), ServerOptions::default());
    let server = tokio::spawn(server::serve(
        listener,
        resolver.server_config().unwrap(),
        state,
        async {
            let _ = stopped.await;
        },
    ));

    let suffix = std::process::id();
    let cleanup = Cleanup {
        namespace: format!("halyard-e2e-{suffix}"),
        name: format!("halyard-e2e-{suffix}"),
    };
    let ca = base64::engine::general_purpose::STANDARD.encode(ck.cert.pem());
    let url = |path: &str| format!("https://{host}:{port}{path}");

    if kubectl(&["get", "crd", "virtualservices.networking.istio.io"], None)
        .status
        .success()
    {
        eprintln!("VirtualService CRD already installed");
    } else {
        let out = kubectl(&["apply", "--server-side", "-f", ISTIO_CRDS], None);
        assert!(
            out.status.success(),
            "installing CRDs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/virtualservices.networking.istio.io",
            ],
            None,
        );
    }

    let webhooks = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
- name: namespace.sidecar-injector.istio.io
  clientConfig: {{url: "{inject}", caBundle: "{ca}"}}
  rules: [{{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}}]
  namespaceSelector: {{matchLabels: {{istio-injection: enabled, halyard-e2e: "{suffix}"}}}}
  objectSelector: {{matchExpressions: [{{key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}}]}}
  sideEffects: None
  admissionReviewVersions: [v1]
  failurePolicy: Fail
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
- name: validation.istio.io
  clientConfig: {{url: "{validate}", caBundle: "{ca}"}}
  rules: [{{apiGroups: [networking.istio.io, security.istio.io], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: ["*"]}}]
  namespaceSelector: {{matchLabels: {{halyard-e2e: "{suffix}"}}}}
  sideEffects: None
  admissionReviewVersions: [v1]
  failurePolicy: Fail
"#,
        name = cleanup.name,
        inject = url("/inject"),
        validate = url("/validate"),
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&webhooks));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels: {{istio-injection: enabled, halyard-e2e: \"{suffix}\"}}\n",
        cleanup.namespace
    );
    assert!(kubectl(&["apply", "-f", "-"], Some(&ns)).status.success());

    // Server-side dry run runs admission without scheduling anything.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: {}}}\nspec:\n  containers: [{{name: web, image: nginx}}]\n",
        cleanup.namespace
    );
    let out = kubectl(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&pod),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |list: &str| -> Vec<String> {
        created["spec"][list]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        names("containers").contains(&"istio-proxy".to_string()),
        "{created}"
    );
    assert!(
        names("initContainers").contains(&"istio-init".to_string()),
        "{created}"
    );
    assert!(created["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());

    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bad, namespace: {}}}\nspec:\n  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n",
        cleanup.namespace
    );
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&vs));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admission webhook \"validation.istio.io\" denied the request: configuration is invalid:"),
        "{err}"
    );

    drop(cleanup);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
