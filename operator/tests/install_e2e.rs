//! End-to-end against a real cluster, with the MeshInstall controller running in this process (out-of-cluster
//! mode). Runs only when `KUBECONFIG` is set; prints why it skips otherwise (no cluster exists under CI).
//!
//! The webhook is expected at `HALYARD_E2E_WEBHOOK_URL` (default `https://127.0.0.1:15017`), started by hand
//! with the certificate the operator writes to `HALYARD_E2E_CERT_DIR` (default a temporary directory,
//! printed). When nothing listens there, the injection and validation checks are skipped with a message;
//! everything else (CRDs, status, caBundle, drift repair, uninstall keeping users' objects) still runs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use halyard_crds::install::{CONDITION_RECONCILED, ConditionStatus, MeshInstall};
use halyard_operator::install::ca;
use halyard_operator::install::client as install_client;
use halyard_operator::install::controller::{ControllerOptions, run_controller};
use halyard_operator::install::render::RenderSettings;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..120 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out waiting for {what}");
}

fn vs_resource() -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    }
}

#[tokio::test]
async fn install_inject_validate_repair_uninstall_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "SKIPPED install_e2e: KUBECONFIG is not set, so there is no cluster to install on (set it to run)"
        );
        return;
    }
    let client = Client::try_default().await.unwrap();
    let webhook_url = std::env::var("HALYARD_E2E_WEBHOOK_URL")
        .unwrap_or_else(|_| "https://127.0.0.1:15017".to_string());
    let tmp = tempfile::tempdir().unwrap();
    let cert_dir = std::env::var("HALYARD_E2E_CERT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    eprintln!(
        "install_e2e: webhook expected at {webhook_url}; its certificate goes to {}",
        cert_dir.display()
    );

    // The MeshInstall CRD, as `halyard install` applies it.
    for o in install_client::documents(install_client::CRD_YAML, "crd").unwrap() {
        halyard_operator::install::controller::apply_value(&client, &o, "halyard-e2e")
            .await
            .unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ControllerOptions {
        render: RenderSettings {
            webhook_url: Some(webhook_url.clone()),
            ..RenderSettings::default()
        },
        cert_dir: Some(cert_dir.clone()),
        not_ready_requeue: Duration::from_secs(3),
        ..ControllerOptions::default()
    };
    let controller = tokio::spawn(run_controller(client.clone(), opts, async {
        let _ = stop_rx.await;
    }));

    let mis = Api::<MeshInstall>::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "e2e"}, "spec": {"profile": "minimal"}
    }))
    .unwrap();
    halyard_operator::install::controller::apply_value(
        &client,
        &serde_json::to_value(&mi).unwrap(),
        "halyard-e2e",
    )
    .await
    .unwrap();
    eventually("Reconciled=True", async || {
        let live = mis.get("e2e").await.ok()?;
        let st = live.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == CONDITION_RECONCILED && c.status == ConditionStatus::True)
            .then_some(())
    })
    .await;

    // caBundle is the root of istio-ca-secret, and the serving certificate chains to it.
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let vwcs = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let root = Api::<Secret>::namespaced(client.clone(), "istio-system")
        .get(ca::SELF_SIGNED_SECRET)
        .await
        .unwrap()
        .data
        .unwrap()[ca::ROOT_CERT]
        .0
        .clone();
    let mwc = mwcs.get("istio-sidecar-injector").await.unwrap();
    for w in mwc.webhooks.unwrap() {
        assert_eq!(w.client_config.ca_bundle.unwrap().0, root);
        assert!(w.client_config.url.unwrap().ends_with("/inject"));
    }
    let vwc = vwcs.get("istiod-default-validator").await.unwrap();
    assert_eq!(
        vwc.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
            .unwrap()
            .0,
        root
    );
    ca::cert_info(&std::fs::read_to_string(cert_dir.join("tls.crt")).unwrap()).unwrap();

    // A user's VirtualService, kept through uninstall.
    let ns_api = Api::<Namespace>::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "halyard-e2e", "labels": {"istio-injection": "enabled"}}}),
    )
    .unwrap();
    let _ = ns_api.create(&PostParams::default(), &ns).await;
    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "halyard-e2e", &vs_resource());
    let good: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    }))
    .unwrap();
    let _ = vs_api.create(&PostParams::default(), &good).await;

    let webhook_up = tokio::net::TcpStream::connect(
        webhook_url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap(),
    )
    .await
    .is_ok();
    if webhook_up {
        // injection
        let pods = Api::<Pod>::namespaced(client.clone(), "halyard-e2e");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "sleep"},
            "spec": {"containers": [{"name": "sleep", "image": "curlimages/curl", "command": ["sleep", "3600"]}]}
        }))
        .unwrap();
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        let spec = created.spec.unwrap();
        let names: Vec<String> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| c.name.clone())
            .collect();
        assert!(
            names.iter().any(|n| n == "istio-proxy"),
            "not injected: {names:?}"
        );
        let _ = pods.delete("sleep", &DeleteParams::default()).await;
        // validation: Istio's message
        let bad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "bad"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]}
        }))
        .unwrap();
        eventually("validation to be enforced", async || {
            match vs_api.create(&PostParams::default(), &bad).await {
                Err(kube::Error::Api(s)) if s.message.contains("denied the request") => Some(()),
                Ok(_) => {
                    let _ = vs_api.delete("bad", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            }
        })
        .await;
    } else {
        eprintln!(
            "install_e2e: nothing listens at {webhook_url}; injection and validation checks skipped (start halyard-webhook with the files in {})",
            cert_dir.display()
        );
    }

    // Drift: a webhook configuration deleted by hand comes back.
    mwcs.delete("istio-sidecar-injector", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the MutatingWebhookConfiguration to be restored",
        async || mwcs.get_opt("istio-sidecar-injector").await.ok().flatten(),
    )
    .await;

    // Uninstall: webhook configurations and control-plane objects go, users' VirtualServices stay.
    mis.delete("e2e", &DeleteParams::default()).await.unwrap();
    eventually("the MeshInstall to be gone", async || {
        matches!(mis.get_opt("e2e").await, Ok(None)).then_some(())
    })
    .await;
    assert!(
        mwcs.get_opt("istio-sidecar-injector")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        vwcs.get_opt("istiod-default-validator")
            .await
            .unwrap()
            .is_none()
    );
    assert!(vs_api.get_opt("reviews").await.unwrap().is_some());
    let _ = stop_tx.send(());
    controller.await.unwrap();
    let _ = ns_api.delete("halyard-e2e", &DeleteParams::default()).await;
}
