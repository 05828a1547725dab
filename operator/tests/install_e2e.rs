//! End-to-end against a real cluster, with the operator's controllers and halyard-webhook running in this
//! process (out-of-cluster mode). Runs only when `KUBECONFIG` is set; prints why it skips otherwise (no
//! cluster exists under CI).
//!
//! The API server must reach the webhook at `HALYARD_E2E_WEBHOOK_URL` (default `https://127.0.0.1:15017`;
//! for kind use the host's address on the cluster's network, e.g. `https://172.18.0.1:15017`). The webhook is
//! started here, listening on `HALYARD_E2E_WEBHOOK_LISTEN` (default `0.0.0.0:<port of the URL>`), with the
//! certificate the operator writes to `HALYARD_E2E_CERT_DIR` (default a temporary directory) and the injection
//! template and mesh config the operator applied.
//!
//! Checked, in order (the list): the CRDs and a MeshInstall are applied; its status reaches
//! `Reconciled` for its generation; the webhook configurations exist with the root as `caBundle` and the
//! webhook's certificate is issued by it for the URL's host (the API server, which verifies the webhook
//! against the `caBundle`, then gets answers below); a new namespace gets `istio-ca-root-cert` with the root,
//! and gets it back when it is deleted; a pod created in a namespace labelled `istio-injection=enabled` is
//! injected; an invalid VirtualService is refused by `kubectl apply` (the API when kubectl is not installed)
//! with Istio's message; a webhook configuration deleted by hand is restored; deleting the MeshInstall removes
//! the webhook configurations and the control-plane objects and keeps the users' VirtualServices.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use halyard_crds::install::{CONDITION_RECONCILED, ConditionStatus, MeshInstall};
use halyard_operator::install::ca;
use halyard_operator::install::client as install_client;
use halyard_operator::install::controller::{ControllerOptions, apply_value, run_controller};
use halyard_operator::install::render::{RenderSettings, owner_selector, url_host};
use halyard_operator::install::root_cert;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const NS: &str = "halyard-e2e";
const ISTIO_DENIAL: &str =
    "admission webhook \"validation.istio.io\" denied the request: configuration is invalid: ";
const ROUTE_AND_REDIRECT: &str = "HTTP route cannot contain both route and redirect";

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..120 {
        match f().await {
            Ok(v) => return v,
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out waiting for {what}; last: {last}");
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

/// Starts halyard-webhook in this process, as its binary does, from the files the operator produced.
async fn start_webhook(
    listen: SocketAddr,
    cert_dir: &Path,
    template: &Path,
    mesh: &Path,
) -> tokio::sync::oneshot::Sender<()> {
    use halyard_webhook::server::{self, AppState, ServerOptions};
    let resolver = Arc::new(
        halyard_webhook::tls::ReloadingCertResolver::new(
            cert_dir.join("tls.crt"),
            cert_dir.join("tls.key"),
        )
        .unwrap(),
    );
    let tls = resolver.server_config().unwrap();
    let injector = halyard_webhook::Injector::new(
        halyard_webhook::InjectionTemplate::from_file(template).unwrap(),
        halyard_webhook::MeshConfig::from_file(mesh).unwrap(),
    );
    let state = AppState::new(injector, ServerOptions::default());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("the webhook cannot listen on {listen}: {e}"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server::serve(listener, tls, state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    tx
}

/// `kubectl apply -f` of `obj` (the API's create when kubectl is not installed); the error text on refusal.
async fn kubectl_apply(client: &Client, obj: &Value, dir: &Path) -> Result<(), String> {
    let kubectl = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if kubectl {
        let file = dir.join("bad-virtualservice.yaml");
        std::fs::write(&file, serde_yaml::to_string(obj).unwrap()).unwrap();
        let out = std::process::Command::new("kubectl")
            .args(["apply", "-n", NS, "-f"])
            .arg(&file)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    } else {
        eprintln!("install_e2e: kubectl not found; creating the VirtualService through the API");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &vs_resource());
        let o: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
        match api.create(&PostParams::default(), &o).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) => Err(s.message),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn bad_virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "bad", "namespace": NS},
        "spec": {"hosts": ["reviews"], "http": [{
            "redirect": {"uri": "/elsewhere"},
            "route": [{"destination": {"host": "reviews"}}],
        }]}
    })
}

/// Runs everywhere: the object the cluster test expects to be refused is one halyard-webhook refuses, with
/// the rule's text (so a cluster failure means the cluster path is wrong, not the test's object).
#[test]
fn the_invalid_virtual_service_is_refused_by_the_webhook_itself() {
    let request: halyard_webhook::review::AdmissionRequest = serde_json::from_value(json!({
        "uid": "e2e",
        "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
        "operation": "CREATE", "namespace": NS, "name": "bad",
        "object": bad_virtual_service(),
    }))
    .unwrap();
    let (response, _) = halyard_webhook::validate::review(&request);
    assert!(!response.allowed);
    let message = response.status.unwrap().message;
    assert!(
        message.starts_with("configuration is invalid: "),
        "{message}"
    );
    assert!(message.contains(ROUTE_AND_REDIRECT), "{message}");
}

#[tokio::test]
async fn install_inject_validate_repair_uninstall_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
        eprintln!(
            "SKIPPED install_e2e: KUBECONFIG is not set, so there is no cluster to install on (set it to run)"
        );
        return;
    }
    let client = Client::try_default().await.unwrap();
    let webhook_url = std::env::var("HALYARD_E2E_WEBHOOK_URL")
        .unwrap_or_else(|_| "https://127.0.0.1:15017".to_string());
    let url: http::Uri = webhook_url.parse().unwrap();
    let listen: SocketAddr = std::env::var("HALYARD_E2E_WEBHOOK_LISTEN")
        .unwrap_or_else(|_| format!("0.0.0.0:{}", url.port_u16().unwrap_or(443)))
        .parse()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cert_dir = std::env::var("HALYARD_E2E_CERT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("certs"));
    eprintln!(
        "install_e2e: webhook at {webhook_url} (listening on {listen}); its certificate goes to {}",
        cert_dir.display()
    );

    // 1. The MeshInstall CRD, as `halyard install` applies it, Established before it is used.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for o in install_client::documents(install_client::CRD_YAML, "crd").unwrap() {
        apply_value(&client, &o, "halyard-e2e").await.unwrap();
    }
    eventually("the MeshInstall CRD to be Established", async || {
        let crd = crds
            .get("meshinstalls.install.halyard.dev")
            .await
            .map_err(|e| e.to_string())?;
        let ok = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if ok {
            Ok(())
        } else {
            Err("not Established".into())
        }
    })
    .await;

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

    // 2. A MeshInstall; its status reaches Reconciled for its generation.
    let mis = Api::<MeshInstall>::all(client.clone());
    let mi = json!({
        "apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "e2e"}, "spec": {"profile": "minimal"}
    });
    apply_value(&client, &mi, "halyard-e2e").await.unwrap();
    eventually("Reconciled=True", async || {
        let live = mis.get("e2e").await.map_err(|e| e.to_string())?;
        let st = live.status.ok_or("no status yet")?;
        if st.observed_generation != live.metadata.generation {
            return Err(format!("observedGeneration {:?}", st.observed_generation));
        }
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_RECONCILED)
            .ok_or("no Reconciled condition")?;
        if c.status == ConditionStatus::True {
            Ok(())
        } else {
            Err(format!("{:?}: {:?}", c.reason, c.message))
        }
    })
    .await;

    // 3. The webhook configurations carry the root as caBundle; the webhook's certificate is issued by it for
    // the URL's host.
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
        assert_eq!(w.client_config.ca_bundle.unwrap().0, root, "{}", w.name);
        assert_eq!(
            w.client_config.url.as_deref(),
            Some(format!("{}/inject", webhook_url.trim_end_matches('/')).as_str())
        );
    }
    let vwc = vwcs.get("istiod-default-validator").await.unwrap();
    let vw = &vwc.webhooks.unwrap()[0];
    assert_eq!(vw.client_config.ca_bundle.clone().unwrap().0, root);
    assert_eq!(vw.name, "validation.istio.io");
    let crt = eventually("the webhook certificate files", async || {
        std::fs::read_to_string(cert_dir.join("tls.crt")).map_err(|e| e.to_string())
    })
    .await;
    let info = ca::cert_info(&crt).unwrap();
    assert!(
        info.hosts.contains(&url_host(&webhook_url)),
        "{:?}",
        info.hosts
    );
    let subject_of = |pem: &[u8]| {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem).unwrap();
        let c = p.parse_x509().unwrap();
        (c.subject().to_string(), c.issuer().to_string())
    };
    assert_eq!(
        subject_of(crt.as_bytes()).1,
        subject_of(&root).0,
        "issued by the root"
    );

    // The webhook, started from what the operator wrote and applied.
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "istio-system");
    let data = |cm: ConfigMap, key: &str| cm.data.unwrap().remove(key).unwrap();
    let template = tmp.path().join("injection-template.yaml");
    let mesh = tmp.path().join("mesh.yaml");
    std::fs::write(
        &template,
        data(cms.get("istio-sidecar-injector").await.unwrap(), "config"),
    )
    .unwrap();
    std::fs::write(&mesh, data(cms.get("istio").await.unwrap(), "mesh")).unwrap();
    let webhook_stop = start_webhook(listen, &cert_dir, &template, &mesh).await;

    // 4. A new namespace gets istio-ca-root-cert with the root, and gets it back when it is deleted.
    let ns_api = Api::<Namespace>::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}}),
    )
    .unwrap();
    match ns_api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {NS}: {e}"),
    }
    let ns_cms = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let root_text = String::from_utf8(root.clone()).unwrap();
    let published = async || -> Result<(), String> {
        let cm = ns_cms
            .get_opt(root_cert::CONFIG_MAP)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not there")?;
        let got = cm
            .data
            .and_then(|mut d| d.remove(root_cert::ROOT_CERT_KEY))
            .unwrap_or_default();
        if got == root_text {
            Ok(())
        } else {
            Err("a different root".into())
        }
    };
    eventually("istio-ca-root-cert in the new namespace", published).await;
    ns_cms
        .delete(root_cert::CONFIG_MAP, &DeleteParams::default())
        .await
        .unwrap();
    eventually("istio-ca-root-cert to be restored", published).await;

    // A user's VirtualService, which must survive uninstall.
    let vs_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &vs_resource());
    let good: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    }))
    .unwrap();
    match vs_api.create(&PostParams::default(), &good).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("a valid VirtualService was refused: {e}"),
    }

    // 5. Injection in an istio-injection=enabled namespace.
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sleep"},
        "spec": {"containers": [{"name": "sleep", "image": "curlimages/curl", "command": ["sleep", "3600"]}]}
    }))
    .unwrap();
    let created = eventually("the pod to be created through the injector", async || {
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
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
    assert!(
        created
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("sidecar.istio.io/status"),
        "no injection status annotation"
    );
    let _ = pods.delete("sleep", &DeleteParams::default()).await;

    // 6. An invalid VirtualService is refused with Istio's message.
    let bad = bad_virtual_service();
    let refusal =
        eventually(
            "the invalid VirtualService to be refused",
            async || match kubectl_apply(&client, &bad, tmp.path()).await {
                Ok(()) => {
                    let _ = vs_api.delete("bad", &DeleteParams::default()).await;
                    Err("accepted".to_string())
                }
                Err(text) if text.contains("denied the request") => Ok(text),
                Err(other) => Err(other),
            },
        )
        .await;
    assert!(refusal.contains(ISTIO_DENIAL), "{refusal}");
    assert!(refusal.contains(ROUTE_AND_REDIRECT), "{refusal}");

    // 7. A webhook configuration deleted by hand comes back.
    mwcs.delete("istio-sidecar-injector", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the MutatingWebhookConfiguration to be restored",
        async || {
            mwcs.get_opt("istio-sidecar-injector")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still deleted".to_string())
        },
    )
    .await;

    // 8. Uninstall: webhook configurations and control-plane objects go, users' VirtualServices stay.
    mis.delete("e2e", &DeleteParams::default()).await.unwrap();
    eventually("the MeshInstall to be gone", async || {
        match mis.get_opt("e2e").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
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
    let owned = ListParams::default().labels(&owner_selector("e2e"));
    assert!(
        cms.list(&owned).await.unwrap().items.is_empty(),
        "ConfigMaps left"
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), "istio-system")
            .list(&owned)
            .await
            .unwrap()
            .items
            .is_empty(),
        "Secrets left"
    );
    assert!(
        Api::<Deployment>::all(client.clone())
            .list(&owned)
            .await
            .unwrap()
            .items
            .is_empty(),
        "Deployments left"
    );
    assert!(vs_api.get_opt("reviews").await.unwrap().is_some());
    assert!(
        crds.get_opt("virtualservices.networking.istio.io")
            .await
            .unwrap()
            .is_some(),
        "Istio CRDs kept"
    );

    let _ = stop_tx.send(());
    controller.await.unwrap();
    let _ = webhook_stop.send(());
    let _ = ns_api.delete(NS, &DeleteParams::default()).await;
}
