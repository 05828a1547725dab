//! `halyard install` / `halyard uninstall` (`halyard_operator::install::client`) against the mocked API with
//! the operator's controllers running on it (kube-runtime Controllers over watches), as they would in the
//! cluster: install applies the operator's manifests and a MeshInstall and returns once the operator reports
//! `Reconciled`; uninstall deletes the MeshInstall, waits for the operator's finalizer to uninstall it, then
//! removes the operator, keeping the CRDs.

#![allow(clippy::unwrap_used)]

mod install_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use halyard_crds::install::MeshInstall;
use halyard_operator::install::client as install_client;
use halyard_operator::install::controller::{self, ControllerOptions};
use halyard_operator::install::render::RenderSettings;
use install_support::{State, client};
use serde_json::json;

const ADM: &str = "/apis/admissionregistration.k8s.io/v1";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1";
const MI: &str = "/apis/install.halyard.dev/v1alpha1";

#[tokio::test]
async fn install_waits_for_the_operator_and_uninstall_removes_it_last() {
    let state = Arc::new(Mutex::new(State {
        establish_crds: true,
        other_field_managers: vec![install_client::CLI_FIELD_MANAGER],
        honor_finalizers: true,
        ..State::default()
    }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ControllerOptions {
        render: RenderSettings {
            hub: "registry.example/halyard".into(),
            operator_version: "1.0.0".into(),
            ..RenderSettings::default()
        },
        instance: "test".into(),
        not_ready_requeue: Duration::from_millis(200),
        ..ControllerOptions::default()
    };
    let operator = tokio::spawn(controller::run_controller(
        client(state.clone()),
        opts,
        async {
            let _ = stop_rx.await;
        },
    ));

    let cli = client(state.clone());
    let mi = MeshInstall::new(
        "mesh",
        serde_json::from_value(json!({"profile": "minimal"})).unwrap(),
    );
    let message = tokio::time::timeout(
        Duration::from_secs(60),
        install_client::install(
            &cli,
            &mi,
            Some("r.example/halyard-operator:9.9.9"),
            Duration::from_secs(30),
        ),
    )
    .await
    .expect("install returns")
    .unwrap();
    assert!(message.contains("applied"), "{message}");
    {
        let st = state.lock().unwrap();
        let dep = st
            .get(
                "/apis/apps/v1",
                Some("halyard-system"),
                "deployments",
                "halyard-operator",
            )
            .expect("the operator's Deployment");
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"],
            "r.example/halyard-operator:9.9.9"
        );
        assert!(
            st.get(
                CRDS,
                None,
                "customresourcedefinitions",
                "meshinstalls.install.halyard.dev"
            )
            .is_some()
        );
        assert!(
            st.get(
                ADM,
                None,
                "mutatingwebhookconfigurations",
                "istio-sidecar-injector"
            )
            .is_some(),
            "the operator installed the mesh"
        );
        // the CLI applied the MeshInstall CRD before the MeshInstall, and waited for it
        let calls: Vec<String> = st.calls.iter().map(ToString::to_string).collect();
        let crd = calls
            .iter()
            .position(|c| c == "APPLY customresourcedefinitions meshinstalls.install.halyard.dev")
            .unwrap();
        let crd_read = calls
            .iter()
            .position(|c| c == "GET customresourcedefinitions meshinstalls.install.halyard.dev")
            .unwrap();
        let mi_apply = calls
            .iter()
            .position(|c| c == "APPLY meshinstalls mesh")
            .unwrap();
        assert!(crd < crd_read && crd_read < mi_apply, "{calls:#?}");
    }

    let removed = tokio::time::timeout(
        Duration::from_secs(60),
        install_client::uninstall(&cli, None, false, Duration::from_secs(30)),
    )
    .await
    .expect("uninstall returns")
    .unwrap();
    assert_eq!(removed, ["mesh"]);
    {
        let st = state.lock().unwrap();
        assert!(st.get(MI, None, "meshinstalls", "mesh").is_none());
        assert!(st.names("mutatingwebhookconfigurations").is_empty());
        assert!(
            st.names("deployments").is_empty(),
            "webhook and operator gone"
        );
        assert!(
            st.get(
                CRDS,
                None,
                "customresourcedefinitions",
                "meshinstalls.install.halyard.dev"
            )
            .is_some(),
            "the MeshInstall CRD stays without --purge"
        );
        assert!(
            st.get(
                CRDS,
                None,
                "customresourcedefinitions",
                "virtualservices.networking.istio.io"
            )
            .is_some(),
            "Istio CRDs stay"
        );
        // the operator uninstalled the mesh (webhook configurations first) before it was itself removed
        let deletes = st.calls_of("DELETE");
        let pos = |what: &str| {
            deletes
                .iter()
                .position(|d| d == what)
                .unwrap_or_else(|| panic!("no DELETE {what}: {deletes:#?}"))
        };
        assert!(
            pos("meshinstalls mesh") < pos("mutatingwebhookconfigurations istio-sidecar-injector")
        );
        assert!(
            pos("mutatingwebhookconfigurations istio-sidecar-injector")
                < pos("deployments halyard-system/halyard-operator")
        );
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), operator)
        .await
        .expect("the operator stops")
        .unwrap();
}
