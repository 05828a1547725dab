//! Reconcile tests against kube's mocked API (tower-test) with a scripted in-memory API server:
//! first install, no-op second pass, drift repaired, pruning, status, validation fail-closed, finalizer
//! cleanup order, API errors requeued with back-off, CRDs waited for, upgrade refused, leader election.

#![allow(clippy::unwrap_used)]

mod install_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use halyard_crds::install::{ComponentState, ConditionStatus, MeshInstall};
use halyard_operator::install::controller::{self, Context, ControllerOptions};
use halyard_operator::install::leader::{self, LeaseSettings};
use halyard_operator::install::render::RenderSettings;
use install_support::{Failure, State, client};
use kube::runtime::controller::Action;
use serde::Serialize;
use serde_json::{Value, json};

const MI: &str = "/apis/install.halyard.dev/v1alpha1";
const APPS: &str = "/apis/apps/v1";
const ADM: &str = "/apis/admissionregistration.k8s.io/v1";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1";
const NS: Option<&str> = Some("istio-system");

fn opts() -> ControllerOptions {
    ControllerOptions {
        render: RenderSettings {
            hub: "registry.example/halyard".into(),
            operator_version: "1.0.0".into(),
            ..RenderSettings::default()
        },
        connected_proxies: Some(Arc::new(|| 7)),
        instance: "test".into(),
        ..ControllerOptions::default()
    }
}

struct Harness {
    state: Arc<Mutex<State>>,
    ctx: Arc<Context>,
}

impl Harness {
    fn new(spec: Value) -> Harness {
        Harness::with_opts(spec, opts())
    }

    fn with_opts(spec: Value, opts: ControllerOptions) -> Harness {
        let state = Arc::new(Mutex::new(State {
            establish_crds: true,
            ..State::default()
        }));
        state.lock().unwrap().insert(
            State::key(MI, None, "meshinstalls", "mesh"),
            json!({"apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
                   "metadata": {"name": "mesh"}, "spec": spec}),
        );
        let ctx = Arc::new(Context::new(client(state.clone()), opts));
        Harness { state, ctx }
    }

    fn mesh_install(&self) -> MeshInstall {
        let v = self
            .st()
            .get(MI, None, "meshinstalls", "mesh")
            .unwrap()
            .clone();
        serde_json::from_value(v).unwrap()
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    async fn reconcile(&self) -> Result<Action, halyard_operator::install::Error> {
        controller::reconcile(Arc::new(self.mesh_install()), self.ctx.clone()).await
    }

    /// Adds the finalizer (first pass) and installs (second pass), then forgets the calls.
    async fn installed(spec: Value) -> Harness {
        let h = Harness::new(spec);
        h.reconcile().await.unwrap();
        h.reconcile().await.unwrap();
        h.st().calls.clear();
        h.st().events.clear();
        h
    }

    fn condition(&self, type_: &str) -> (ConditionStatus, String, String) {
        let mi = self.mesh_install();
        let c = mi
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap();
        (c.status, c.reason.unwrap(), c.message.unwrap())
    }

    fn make_deployments_ready(&self) {
        let mut st = self.st();
        for name in st.names("deployments") {
            let d = st.get_mut(APPS, NS, "deployments", &name).unwrap();
            let r = d["spec"]["replicas"].clone();
            let g = d["metadata"]["generation"].clone();
            d["status"] = json!({"observedGeneration": g, "replicas": r, "availableReplicas": r, "updatedReplicas": r});
        }
    }
}

fn position(calls: &[String], pred: impl Fn(&str) -> bool) -> usize {
    calls
        .iter()
        .position(|c| pred(c))
        .unwrap_or_else(|| panic!("no such call in {calls:#?}"))
}

#[tokio::test]
async fn first_install_applies_crds_first_and_reports_status() {
    let h = Harness::new(json!({}));
    // first pass only adds the finalizer
    assert_eq!(h.reconcile().await.unwrap(), Action::await_change());
    assert_eq!(h.st().calls_of("JSONPATCH"), ["meshinstalls mesh"]);
    assert_eq!(
        h.mesh_install().metadata.finalizers.unwrap(),
        ["install.halyard.dev/uninstall"]
    );

    let action = h.reconcile().await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(15)),
        "components are not ready yet"
    );
    let st = h.st();
    // the generated root is created once, in the control-plane namespace
    let creates: Vec<String> = st
        .calls_of("CREATE")
        .into_iter()
        .filter(|c| !c.starts_with("events"))
        .collect();
    assert_eq!(creates, ["secrets istio-system/istio-ca-secret"]);
    let applies = st.calls_of("APPLY");
    let first_crd = position(&applies, |c| c.starts_with("customresourcedefinitions"));
    let last_crd = applies
        .iter()
        .rposition(|c| c.starts_with("customresourcedefinitions"))
        .unwrap();
    let first_other = position(&applies, |c| c.starts_with("serviceaccounts"));
    assert!(
        first_crd < first_other && last_crd < first_other,
        "CRDs before everything that needs them: {applies:#?}"
    );
    // the CRDs were read back (Established) before the rest was applied
    let calls: Vec<String> = st.calls.iter().map(|c| c.to_string()).collect();
    let crd_get = position(&calls, |c| c.starts_with("GET customresourcedefinitions"));
    let sa_apply = position(&calls, |c| c.starts_with("APPLY serviceaccounts"));
    assert!(crd_get < sa_apply);
    // webhook configurations last, after the webhook Deployment
    let dep = position(&applies, |c| {
        c == "deployments istio-system/halyard-webhook"
    });
    let mwc = position(&applies, |c| {
        c == "mutatingwebhookconfigurations istio-sidecar-injector"
    });
    let vwc = position(&applies, |c| {
        c == "validatingwebhookconfigurations istiod-default-validator"
    });
    assert!(dep < mwc && mwc < vwc);
    // caBundle is the generated root
    let root =
        st.get("/api/v1", NS, "secrets", "istio-ca-secret").unwrap()["data"]["root-cert.pem"]
            .clone();
    let bundle = st
        .get(
            ADM,
            None,
            "mutatingwebhookconfigurations",
            "istio-sidecar-injector",
        )
        .unwrap()["webhooks"][0]["clientConfig"]["caBundle"]
        .clone();
    assert_eq!(root, bundle);
    assert!(
        st.get(
            CRDS,
            None,
            "customresourcedefinitions",
            "virtualservices.networking.istio.io"
        )
        .is_some()
    );
    assert!(
        st.get(
            CRDS,
            None,
            "customresourcedefinitions",
            "meshinstalls.install.halyard.dev"
        )
        .is_none()
    );
    assert!(
        st.get(APPS, NS, "deployments", "istio-ingressgateway")
            .is_some()
    );
    assert!(
        st.get(APPS, NS, "deployments", "istio-egressgateway")
            .is_none(),
        "default profile: no egress"
    );
    drop(st);

    let mi = h.mesh_install();
    let status = mi.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.installed_version.as_deref(), Some("1.0.0"));
    assert_eq!(status.connected_proxies, Some(7));
    assert_eq!(
        status.components["egressGateway"].state,
        ComponentState::Disabled
    );
    assert_eq!(
        status.components["webhook"].state,
        ComponentState::Progressing
    );
    assert_eq!(h.condition("Reconciled").0, ConditionStatus::True);
    let (ready, reason, message) = h.condition("Ready");
    assert_eq!(
        (ready, reason.as_str()),
        (ConditionStatus::False, "ComponentsNotReady")
    );
    assert!(
        message.contains("webhook: Deployment halyard-webhook: 0/1 replicas available"),
        "{message}"
    );
    // an Event tells the user the root was generated and the version installed
    let reasons: Vec<String> = h
        .st()
        .events
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["RootCreated", "Installed"]);
}

#[tokio::test]
async fn second_pass_changes_nothing() {
    let h = Harness::installed(json!({"profile": "demo"})).await;
    let before = h.st().objects.clone();
    h.reconcile().await.unwrap();
    let st = h.st();
    assert_eq!(
        st.objects, before,
        "no object changed (same resourceVersions, same serving certificate)"
    );
    assert!(st.calls_of("DELETE").is_empty());
    assert!(st.calls_of("CREATE").is_empty());
    assert!(
        st.calls_of("MERGE").is_empty(),
        "status unchanged, not rewritten"
    );
    assert!(st.events.is_empty());
}

#[tokio::test]
async fn drift_is_repaired() {
    let h = Harness::installed(json!({})).await;
    {
        let mut st = h.st();
        st.objects.remove(&State::key(
            ADM,
            None,
            "mutatingwebhookconfigurations",
            "istio-sidecar-injector",
        ));
        st.get_mut(APPS, NS, "deployments", "halyard-webhook")
            .unwrap()["spec"]["replicas"] = json!(0);
        st.get_mut("/api/v1", NS, "configmaps", "istio").unwrap()["data"]["mesh"] =
            json!("edited: by hand\n");
    }
    h.reconcile().await.unwrap();
    let st = h.st();
    let mwc = st
        .get(
            ADM,
            None,
            "mutatingwebhookconfigurations",
            "istio-sidecar-injector",
        )
        .unwrap();
    assert_eq!(mwc["webhooks"].as_array().unwrap().len(), 4);
    assert_eq!(
        st.get(APPS, NS, "deployments", "halyard-webhook").unwrap()["spec"]["replicas"],
        1
    );
    assert!(
        st.get("/api/v1", NS, "configmaps", "istio").unwrap()["data"]["mesh"]
            .as_str()
            .unwrap()
            .contains("trustDomain")
    );
}

#[tokio::test]
async fn objects_no_longer_wanted_are_pruned() {
    let h = Harness::installed(json!({"profile": "demo"})).await;
    assert!(
        h.st()
            .get(APPS, NS, "deployments", "istio-egressgateway")
            .is_some()
    );
    h.st().get_mut(MI, None, "meshinstalls", "mesh").unwrap()["spec"] =
        json!({"profile": "minimal"});
    h.reconcile().await.unwrap();
    let st = h.st();
    let deleted = st.calls_of("DELETE");
    for gone in [
        "deployments istio-system/istio-ingressgateway",
        "deployments istio-system/istio-egressgateway",
        "services istio-system/istio-egressgateway",
        "poddisruptionbudgets istio-system/istio-ingressgateway",
        "serviceaccounts istio-system/istio-ingressgateway-service-account",
        "roles istio-system/istio-egressgateway-sds",
        "rolebindings istio-system/istio-ingressgateway-sds",
    ] {
        assert!(
            deleted.iter().any(|d| d == gone),
            "{gone} not pruned: {deleted:#?}"
        );
    }
    assert!(st.get(APPS, NS, "deployments", "halyard-webhook").is_some());
    // objects of someone else (no owner label) are never touched
    assert!(!deleted.iter().any(|d| d.contains("istio-ca-secret")));
    drop(st);
    assert_eq!(
        h.mesh_install().status.unwrap().components["ingressGateway"].state,
        ComponentState::Disabled
    );
}

#[tokio::test]
async fn ready_components_and_validation_switches_to_fail_closed() {
    let h = Harness::installed(json!({})).await;
    h.make_deployments_ready();
    h.st().validation_denies = true;
    let action = h.reconcile().await.unwrap();
    {
        let st = h.st();
        assert_eq!(
            st.calls_of("DRYRUN"),
            ["gateways istio-system/halyard-validation-probe"]
        );
        let vwc = st
            .get(
                ADM,
                None,
                "validatingwebhookconfigurations",
                "istiod-default-validator",
            )
            .unwrap();
        assert_eq!(vwc["webhooks"][0]["failurePolicy"], "Fail");
        assert!(
            st.events
                .iter()
                .any(|e| e["reason"] == "ValidationEnforced")
        );
    }
    let (ready, reason, _) = h.condition("Ready");
    assert_eq!(
        (ready, reason.as_str()),
        (ConditionStatus::True, "AllComponentsReady")
    );
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(300)),
        "resync when all is well"
    );
    // Fail stays: the next pass reads it back and does not probe again
    h.st().calls.clear();
    h.reconcile().await.unwrap();
    assert!(h.st().calls_of("DRYRUN").is_empty());
    let st = h.st();
    assert_eq!(
        st.get(
            ADM,
            None,
            "validatingwebhookconfigurations",
            "istiod-default-validator"
        )
        .unwrap()["webhooks"][0]["failurePolicy"],
        "Fail"
    );
}

#[tokio::test]
async fn validation_stays_ignore_while_the_webhook_does_not_deny() {
    let h = Harness::installed(json!({})).await;
    h.make_deployments_ready();
    h.reconcile().await.unwrap();
    let st = h.st();
    assert_eq!(st.calls_of("DRYRUN").len(), 1);
    assert_eq!(
        st.get(
            ADM,
            None,
            "validatingwebhookconfigurations",
            "istiod-default-validator"
        )
        .unwrap()["webhooks"][0]["failurePolicy"],
        "Ignore"
    );
}

#[tokio::test]
async fn uninstall_deletes_webhook_configurations_first_and_keeps_crds() {
    let h = Harness::installed(json!({})).await;
    // a user's VirtualService and the delete request
    h.st().insert(
        State::key("/apis/networking.istio.io/v1", Some("default"), "virtualservices", "reviews"),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"}}),
    );
    h.st().get_mut(MI, None, "meshinstalls", "mesh").unwrap()["metadata"]["deletionTimestamp"] =
        json!("2026-01-01T00:00:00Z");
    assert_eq!(h.reconcile().await.unwrap(), Action::await_change());
    let st = h.st();
    let deleted = st.calls_of("DELETE");
    assert_eq!(
        &deleted[..2],
        [
            "mutatingwebhookconfigurations istio-sidecar-injector",
            "validatingwebhookconfigurations istiod-default-validator"
        ]
    );
    let dep = position(&deleted, |d| d.starts_with("deployments"));
    assert!(dep > 1);
    assert!(
        st.names("deployments").is_empty()
            && st.names("services").is_empty()
            && st.names("mutatingwebhookconfigurations").is_empty()
    );
    assert!(
        !st.names("customresourcedefinitions").is_empty(),
        "CRDs kept"
    );
    assert!(
        st.get(
            "/apis/networking.istio.io/v1",
            Some("default"),
            "virtualservices",
            "reviews"
        )
        .is_some()
    );
    assert!(
        st.get("/api/v1", NS, "secrets", "istio-ca-secret")
            .is_some(),
        "root kept for a reinstall"
    );
    // the finalizer is removed last
    let last = st.calls.last().unwrap().to_string();
    assert_eq!(last, "JSONPATCH meshinstalls mesh");
    assert!(
        st.get(MI, None, "meshinstalls", "mesh").unwrap()["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn uninstall_with_purge_deletes_crds() {
    let h = Harness::installed(json!({"uninstall": {"purgeCRDs": true}})).await;
    h.st().get_mut(MI, None, "meshinstalls", "mesh").unwrap()["metadata"]["deletionTimestamp"] =
        json!("2026-01-01T00:00:00Z");
    h.reconcile().await.unwrap();
    let st = h.st();
    assert!(st.names("customresourcedefinitions").is_empty());
    let deleted = st.calls_of("DELETE");
    let first_crd = position(&deleted, |d| d.starts_with("customresourcedefinitions"));
    let last_workload = deleted
        .iter()
        .rposition(|d| d.starts_with("deployments"))
        .unwrap();
    assert!(last_workload < first_crd);
}

#[tokio::test]
async fn api_errors_are_reported_and_requeued_with_backoff() {
    let h = Harness::installed(json!({})).await;
    h.st().failures.push(Failure {
        verb: "APPLY",
        plural: "deployments",
        code: 500,
        times: 2,
    });
    let mi = Arc::new(h.mesh_install());
    let err = h.reconcile().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("apply Deployment istio-system/halyard-webhook"),
        "{text}"
    );
    let (status, reason, message) = h.condition("Reconciled");
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "ApplyFailed")
    );
    assert!(
        message.contains("istio-system/halyard-webhook"),
        "{message}"
    );
    assert_eq!(h.condition("Ready").1, "NotReconciled");
    assert!(
        h.st()
            .events
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "ApplyFailed")
    );
    assert_eq!(
        controller::error_policy(mi.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert!(h.reconcile().await.is_err());
    assert_eq!(
        controller::error_policy(mi.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    // the failure clears: reconcile succeeds, status recovers, back-off resets
    h.reconcile().await.unwrap();
    assert_eq!(h.condition("Reconciled").0, ConditionStatus::True);
    assert_eq!(
        controller::error_policy(mi, &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn waits_for_crds_to_be_established() {
    let h = Harness::new(json!({}));
    h.st().establish_crds = false;
    h.reconcile().await.unwrap();
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    let (status, reason, message) = h.condition("Reconciled");
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "WaitingForCRDs")
    );
    assert!(
        message.contains("virtualservices.networking.istio.io"),
        "{message}"
    );
    assert!(
        h.st().names("deployments").is_empty(),
        "nothing applied before the CRDs exist"
    );
    h.st().establish_crds = true;
    h.reconcile().await.unwrap();
    assert_eq!(h.condition("Reconciled").0, ConditionStatus::True);
}

#[tokio::test]
async fn multi_minor_upgrade_is_refused_and_adjacent_one_rolls() {
    let h = Harness::installed(json!({"version": "1.0.0"})).await;
    h.st().get_mut(MI, None, "meshinstalls", "mesh").unwrap()["spec"]["version"] = json!("1.2.0");
    assert_eq!(h.reconcile().await.unwrap(), Action::await_change());
    let (status, reason, message) = h.condition("Reconciled");
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "UpgradeRefused")
    );
    assert!(
        message.contains("set spec.version to 1.1.x first"),
        "{message}"
    );
    assert!(h.st().calls_of("APPLY").is_empty(), "nothing rolled");
    assert_eq!(
        h.mesh_install()
            .status
            .unwrap()
            .installed_version
            .as_deref(),
        Some("1.0.0")
    );

    h.st().get_mut(MI, None, "meshinstalls", "mesh").unwrap()["spec"]["version"] = json!("1.1.0");
    h.reconcile().await.unwrap();
    let st = h.st();
    let image = &st.get(APPS, NS, "deployments", "halyard-webhook").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["image"];
    assert_eq!(image, "registry.example/halyard/halyard-webhook:1.1.0");
    drop(st);
    assert_eq!(
        h.mesh_install()
            .status
            .unwrap()
            .installed_version
            .as_deref(),
        Some("1.1.0")
    );
    assert!(h.st().events.iter().any(|e| {
        e["note"]
            .as_str()
            .is_some_and(|n| n.contains("upgraded from 1.0.0 to 1.1.0"))
    }));
}

#[tokio::test]
async fn missing_cacerts_secret_is_reported() {
    let h = Harness::new(json!({"ca": {"source": "cacertsSecret"}}));
    h.reconcile().await.unwrap();
    assert!(h.reconcile().await.is_err());
    let (_, reason, message) = h.condition("Reconciled");
    assert_eq!(reason, "CertificateError");
    assert!(
        message.contains("Secret istio-system/cacerts: not found"),
        "{message}"
    );
}

#[tokio::test]
async fn leader_election_acquires_respects_and_takes_over_leases() {
    let state = Arc::new(Mutex::new(State::default()));
    let c = client(state.clone());
    let now = k8s_openapi::jiff::Timestamp::now();
    let a = LeaseSettings::new("halyard-system", "a");
    let b = LeaseSettings::new("halyard-system", "b");
    assert!(
        leader::try_acquire_or_renew(&c, &a, now).await.unwrap(),
        "free lease is taken"
    );
    assert!(
        !leader::try_acquire_or_renew(&c, &b, now).await.unwrap(),
        "fresh lease is respected"
    );
    assert!(
        leader::try_acquire_or_renew(&c, &a, now).await.unwrap(),
        "holder renews"
    );
    let later = now + k8s_openapi::jiff::SignedDuration::from_secs(16);
    assert!(
        leader::try_acquire_or_renew(&c, &b, later).await.unwrap(),
        "expired lease is taken over"
    );
    let st = state.lock().unwrap();
    let lease = st
        .get(
            "/apis/coordination.k8s.io/v1",
            Some("halyard-system"),
            "leases",
            "halyard-operator-install",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn out_of_cluster_mode_points_webhooks_at_the_url_and_writes_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.render.webhook_url = Some("https://127.0.0.1:15017".into());
    o.cert_dir = Some(dir.path().join("certs"));
    let h = Harness::with_opts(json!({"profile": "minimal"}), o);
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    {
        let st = h.st();
        assert!(
            st.names("deployments").is_empty(),
            "nothing to deploy in minimal + external webhook"
        );
        let mwc = st
            .get(
                ADM,
                None,
                "mutatingwebhookconfigurations",
                "istio-sidecar-injector",
            )
            .unwrap();
        assert_eq!(
            mwc["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:15017/inject"
        );
    }
    let crt = std::fs::read_to_string(dir.path().join("certs/tls.crt")).unwrap();
    let info = halyard_operator::install::ca::cert_info(&crt).unwrap();
    assert_eq!(info.hosts, ["127.0.0.1"]);
    assert!(
        std::fs::read_to_string(dir.path().join("certs/tls.key"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let (ready, reason, _) = h.condition("Ready");
    assert_eq!(
        (ready, reason.as_str()),
        (ConditionStatus::True, "AllComponentsReady")
    );
}

#[tokio::test]
async fn a_canary_revision_is_pruned_without_touching_the_default_one() {
    let h = Harness::installed(json!({"profile": "minimal"})).await;
    // a second MeshInstall for revision canary, reconciled by the same controller
    h.st().insert(
        State::key(MI, None, "meshinstalls", "canary"),
        json!({"apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
               "metadata": {"name": "canary"}, "spec": {"profile": "minimal", "revision": "canary"}}),
    );
    let canary = |h: &Harness| -> MeshInstall {
        serde_json::from_value(
            h.st()
                .get(MI, None, "meshinstalls", "canary")
                .unwrap()
                .clone(),
        )
        .unwrap()
    };
    controller::reconcile(Arc::new(canary(&h)), h.ctx.clone())
        .await
        .unwrap();
    controller::reconcile(Arc::new(canary(&h)), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        h.st().names("deployments"),
        ["halyard-webhook", "halyard-webhook-canary"]
    );
    assert!(
        h.st().calls_of("DELETE").is_empty(),
        "installing canary prunes nothing of default"
    );
    // the default revision's next pass does not prune the canary either
    h.reconcile().await.unwrap();
    assert!(h.st().calls_of("DELETE").is_empty());
    // uninstalling the canary leaves the default revision alone
    h.st().get_mut(MI, None, "meshinstalls", "canary").unwrap()["metadata"]["deletionTimestamp"] =
        json!("2026-01-01T00:00:00Z");
    controller::reconcile(Arc::new(canary(&h)), h.ctx.clone())
        .await
        .unwrap();
    let st = h.st();
    assert_eq!(st.names("deployments"), ["halyard-webhook"]);
    assert_eq!(
        st.names("mutatingwebhookconfigurations"),
        ["istio-sidecar-injector"]
    );
    assert!(
        st.calls_of("DELETE").iter().all(|d| d.contains("canary")),
        "{:#?}",
        st.calls_of("DELETE")
    );
}

fn node(name: &str, kubelet: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"nodeInfo": {"kubeletVersion": kubelet, "architecture": "amd64", "bootID": "b",
            "containerRuntimeVersion": "containerd://2.0", "kernelVersion": "6.1", "kubeProxyVersion": kubelet,
            "machineID": "m", "operatingSystem": "linux", "osImage": "Linux", "systemUUID": "u"}}})
}

fn template_native_sidecars(h: &Harness) -> bool {
    let st = h.st();
    let text = st
        .get("/api/v1", NS, "configmaps", "istio-sidecar-injector")
        .unwrap()["data"]["config"]
        .as_str()
        .unwrap()
        .to_string();
    halyard_webhook::InjectionTemplate::from_yaml(&text, "applied")
        .unwrap()
        .native_sidecars
}

fn control_plane_message(h: &Harness) -> String {
    h.mesh_install().status.unwrap().components["controlPlane"]
        .message
        .clone()
        .unwrap()
}

#[tokio::test]
async fn native_sidecar_auto_follows_the_api_server_and_every_kubelet() {
    // (API server, kubelets, native sidecars?) — Istio's rule: 1.33 or later everywhere
    for (server, kubelets, want) in [
        ("v1.32.5", vec!["v1.32.5"], false),
        ("v1.33.1", vec!["v1.33.1", "v1.34.0"], true),
        ("v1.33.1", vec!["v1.33.1", "v1.31.4"], false),
    ] {
        let h = Harness::new(json!({}));
        {
            let mut st = h.st();
            st.kubernetes_version = Some(server.to_string());
            for (i, k) in kubelets.iter().enumerate() {
                st.insert(
                    State::key("/api/v1", None, "nodes", &format!("node-{i}")),
                    node(&format!("node-{i}"), k),
                );
            }
        }
        h.reconcile().await.unwrap();
        h.reconcile().await.unwrap();
        assert_eq!(
            template_native_sidecars(&h),
            want,
            "server {server}, kubelets {kubelets:?}"
        );
        let message = control_plane_message(&h);
        assert!(
            message.contains(if want {
                "native sidecars"
            } else {
                "classic sidecars"
            }),
            "{message}"
        );
    }
}

#[tokio::test]
async fn upgrading_the_last_old_node_switches_auto_to_native_sidecars() {
    let h = Harness::new(json!({}));
    {
        let mut st = h.st();
        st.kubernetes_version = Some("v1.33.0".into());
        st.insert(
            State::key("/api/v1", None, "nodes", "a"),
            node("a", "v1.33.0"),
        );
        st.insert(
            State::key("/api/v1", None, "nodes", "b"),
            node("b", "v1.32.0"),
        );
    }
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert!(!template_native_sidecars(&h));
    assert!(
        control_plane_message(&h).contains("b (v1.32.0)"),
        "{}",
        control_plane_message(&h)
    );
    let hash = |h: &Harness| {
        h.st()
            .get(APPS, NS, "deployments", "halyard-webhook")
            .unwrap()["spec"]["template"]["metadata"]["annotations"]["halyard.dev/config-hash"]
            .clone()
    };
    let before = hash(&h);
    h.st().insert(
        State::key("/api/v1", None, "nodes", "b"),
        node("b", "v1.33.2"),
    );
    h.reconcile().await.unwrap();
    assert!(template_native_sidecars(&h));
    assert_ne!(
        hash(&h),
        before,
        "the webhook rolls to read the new template"
    );
}

#[tokio::test]
async fn explicit_native_sidecar_settings_win_without_asking_the_cluster() {
    for (setting, server, want) in [(true, "v1.28.0", true), (false, "v1.34.0", false)] {
        let h = Harness::new(json!({"injection": {"nativeSidecar": setting.to_string()}}));
        h.st().kubernetes_version = Some(server.to_string());
        h.reconcile().await.unwrap();
        h.reconcile().await.unwrap();
        assert_eq!(
            template_native_sidecars(&h),
            want,
            "nativeSidecar {setting}"
        );
        let st = h.st();
        assert!(
            !st.calls
                .iter()
                .any(|c| c.plural == "version" || c.plural == "nodes"),
            "no detection when the spec decides: {:?}",
            st.calls_of("GET")
        );
    }
}

#[tokio::test]
async fn a_failed_version_lookup_is_reported_and_requeued() {
    let h = Harness::installed(json!({})).await;
    assert!(
        template_native_sidecars(&h),
        "mock default: Kubernetes 1.33, no nodes"
    );
    h.st().failures.push(Failure {
        verb: "GET",
        plural: "version",
        code: 500,
        times: 1,
    });
    let mi = Arc::new(h.mesh_install());
    let err = h.reconcile().await.unwrap_err();
    let (status, reason, message) = h.condition("Reconciled");
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "ApplyFailed")
    );
    assert!(message.contains("/version"), "{message}");
    assert_eq!(
        controller::error_policy(mi, &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    // the template was not flipped to classic by the failure
    assert!(template_native_sidecars(&h));
    h.reconcile().await.unwrap();
    assert_eq!(h.condition("Reconciled").0, ConditionStatus::True);
}

#[tokio::test]
async fn a_failed_uninstall_keeps_the_finalizer_says_why_and_is_retried() {
    let h = Harness::installed(json!({})).await;
    h.st().failures.push(Failure {
        verb: "DELETE",
        plural: "deployments",
        code: 500,
        times: 1,
    });
    h.st().get_mut(MI, None, "meshinstalls", "mesh").unwrap()["metadata"]["deletionTimestamp"] =
        json!("2026-01-01T00:00:00Z");
    let mi = Arc::new(h.mesh_install());
    let err = h.reconcile().await.unwrap_err();
    assert!(err.to_string().contains("delete Deployment"), "{err}");
    {
        let st = h.st();
        assert_eq!(
            st.get(MI, None, "meshinstalls", "mesh").unwrap()["metadata"]["finalizers"],
            json!(["install.halyard.dev/uninstall"]),
            "the finalizer stays until the uninstall is done"
        );
        // the webhook configurations went first, before the failure
        assert!(st.names("mutatingwebhookconfigurations").is_empty());
        let ev = st
            .events
            .iter()
            .find(|e| e["reason"] == "UninstallFailed")
            .expect("a Warning Event says why");
        assert_eq!(ev["type"], "Warning");
    }
    assert_eq!(
        controller::error_policy(mi, &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    h.reconcile().await.unwrap();
    assert!(h.st().names("deployments").is_empty());
    assert!(
        h.st().get(MI, None, "meshinstalls", "mesh").unwrap()["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Both controllers as `halyard-operator --install-controller` runs them (kube-runtime Controllers over the
/// mocked API, with their watches): the MeshInstall is installed and reports Reconciled, the control-plane
/// namespace gets `istio-ca-root-cert` with the generated root, and a webhook configuration deleted by hand
/// is restored through the watch.
#[tokio::test]
async fn the_running_controllers_install_publish_the_root_and_repair_drift() {
    let h = Harness::new(json!({}));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(controller::run_controller(
        client(h.state.clone()),
        opts(),
        async {
            let _ = stop_rx.await;
        },
    ));
    until("Reconciled=True", || {
        h.mesh_install().status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Reconciled" && c.status == ConditionStatus::True)
        })
    })
    .await;
    let mwc = State::key(
        ADM,
        None,
        "mutatingwebhookconfigurations",
        "istio-sidecar-injector",
    );
    assert!(h.st().objects.contains_key(&mwc));
    until("istio-ca-root-cert in istio-system", || {
        let st = h.st();
        let root = st
            .get("/api/v1", NS, "secrets", "istio-ca-secret")
            .and_then(|s| s["data"]["root-cert.pem"].as_str().map(str::to_string));
        let published = st
            .get("/api/v1", NS, "configmaps", "istio-ca-root-cert")
            .and_then(|c| c["data"]["root-cert.pem"].as_str().map(str::to_string));
        // the Secret holds base64, the ConfigMap the PEM text
        match (root, published) {
            (Some(r), Some(p)) => {
                r == k8s_openapi::ByteString(p.into_bytes())
                    .serialize(serde_json::value::Serializer)
                    .unwrap()
            }
            _ => false,
        }
    })
    .await;

    h.st().remove(&mwc);
    until(
        "the deleted MutatingWebhookConfiguration to come back",
        || h.st().objects.contains_key(&mwc),
    )
    .await;
    assert_eq!(
        h.st()
            .get(
                ADM,
                None,
                "mutatingwebhookconfigurations",
                "istio-sidecar-injector"
            )
            .unwrap()["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controllers stop on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_new_root_reissues_the_webhook_certificate_and_every_ca_bundle() {
    let h = Harness::installed(json!({})).await;
    let hash = |h: &Harness| {
        h.st()
            .get(APPS, NS, "deployments", "halyard-webhook")
            .unwrap()["spec"]["template"]["metadata"]["annotations"]["halyard.dev/config-hash"]
            .clone()
    };
    let before = hash(&h);
    // the root is replaced (e.g. a new istio-ca-secret)
    let new = halyard_operator::install::ca::CaMaterial::generate(
        "cluster.local",
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let data: std::collections::BTreeMap<String, k8s_openapi::ByteString> = new
        .to_secret_data()
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
        .collect();
    h.st()
        .get_mut("/api/v1", NS, "secrets", "istio-ca-secret")
        .unwrap()["data"] = serde_json::to_value(data).unwrap();
    h.reconcile().await.unwrap();

    let st = h.st();
    let b64 = |pem: &str| {
        k8s_openapi::ByteString(pem.as_bytes().to_vec())
            .serialize(serde_json::value::Serializer)
            .unwrap()
    };
    let want = b64(&new.root_cert_pem);
    for w in st
        .get(
            ADM,
            None,
            "mutatingwebhookconfigurations",
            "istio-sidecar-injector",
        )
        .unwrap()["webhooks"]
        .as_array()
        .unwrap()
    {
        assert_eq!(w["clientConfig"]["caBundle"], want);
    }
    assert_eq!(
        st.get(
            ADM,
            None,
            "validatingwebhookconfigurations",
            "istiod-default-validator"
        )
        .unwrap()["webhooks"][0]["clientConfig"]["caBundle"],
        want
    );
    let secret = st
        .get("/api/v1", NS, "secrets", "halyard-webhook-certs")
        .unwrap();
    assert_eq!(secret["data"]["ca.crt"], want);
    let crt: k8s_openapi::ByteString =
        serde_json::from_value(secret["data"]["tls.crt"].clone()).unwrap();
    assert!(
        String::from_utf8(crt.0)
            .unwrap()
            .ends_with(&new.cert_chain_pem),
        "the serving certificate is issued by the new CA"
    );
    drop(st);
    assert_ne!(
        hash(&h),
        before,
        "the webhook rolls to serve the new certificate"
    );
}
