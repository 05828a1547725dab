//! Golden tests of rendering: one MeshInstall per profile (and revision / out-of-cluster variants) →
//! `testdata/install/<case>.yaml`. Regenerate with `HALYARD_UPDATE_GOLDEN=1`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use halyard_crds::install::MeshInstall;
use halyard_operator::install::ca::ServingCert;
use halyard_operator::install::render::{self, Layout, RenderInput, RenderSettings};
use serde_json::Value;

/// Fixed certificate text so that goldens are stable (rendering never parses it).
fn serving() -> ServingCert {
    ServingCert {
        cert_chain_pem: "-----BEGIN CERTIFICATE-----\nU0VSVklORw==\n-----END CERTIFICATE-----\n"
            .into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n".into(),
        ca_bundle_pem: "-----BEGIN CERTIFICATE-----\nUk9PVA==\n-----END CERTIFICATE-----\n".into(),
    }
}

fn settings() -> RenderSettings {
    RenderSettings {
        hub: "registry.example/halyard".into(),
        operator_version: "1.0.0".into(),
        discovery_address: "halyard-operator.halyard-system.svc:15010".into(),
        webhook_url: None,
    }
}

fn mesh_install(yaml: &str) -> MeshInstall {
    serde_yaml::from_str(yaml).unwrap()
}

fn golden(
    case: &str,
    mi: &MeshInstall,
    settings: &RenderSettings,
    fail_closed: bool,
) -> Vec<Value> {
    let serving = serving();
    let objects = render::render(&RenderInput {
        install: mi,
        settings,
        serving: &serving,
        validation_fail_closed: fail_closed,
        native_sidecars_supported: false,
    })
    .unwrap();
    // CRDs are the crds crate's output, tested there; the golden lists their names only.
    let text = render::to_yaml(
        &objects
            .iter()
            .map(|o| {
                if o["kind"] == "CustomResourceDefinition" {
                    serde_json::json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": {"name": o["metadata"]["name"]}})
                } else {
                    o.clone()
                }
            })
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/install")
        .join(format!("{case}.yaml"));
    if std::env::var("HALYARD_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with HALYARD_UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == text,
        "{case}: rendering differs from {} (run with HALYARD_UPDATE_GOLDEN=1 and review the diff)",
        path.display()
    );
    objects
}

fn names(objects: &[Value], kind: &str) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

const DEFAULT: &str = "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {name: mesh}\nspec: {}\n";

#[test]
fn default_profile() {
    let objects = golden("default", &mesh_install(DEFAULT), &settings(), false);
    // namespace first, CRDs next, webhook configurations last
    assert_eq!(objects[0]["kind"], "Namespace");
    assert_eq!(
        objects[0]["metadata"]["labels"]["istio-injection"],
        "disabled"
    );
    assert_eq!(objects[1]["kind"], "CustomResourceDefinition");
    let n = objects.len();
    assert_eq!(objects[n - 2]["kind"], "MutatingWebhookConfiguration");
    assert_eq!(objects[n - 1]["kind"], "ValidatingWebhookConfiguration");
    assert!(
        !names(&objects, "CustomResourceDefinition")
            .iter()
            .any(|c| c.contains("halyard.dev"))
    );
    assert_eq!(
        names(&objects, "Deployment"),
        ["halyard-webhook", "istio-ingressgateway"]
    );
    let gw = find(&objects, "Service", "istio-ingressgateway");
    assert_eq!(gw["spec"]["type"], "LoadBalancer");
    assert_eq!(gw["spec"]["selector"]["istio"], "ingressgateway");
    let svc = find(&objects, "Service", "halyard-webhook");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 15017);
    assert_eq!(names(&objects, "PodDisruptionBudget").len(), 2);
    let cm = find(&objects, "ConfigMap", "istio");
    assert!(
        cm["data"]["mesh"]
            .as_str()
            .unwrap()
            .contains("trustDomain: cluster.local")
    );
    // the injection template is one the webhook accepts
    let t = find(&objects, "ConfigMap", "istio-sidecar-injector")["data"]["config"]
        .as_str()
        .unwrap();
    let t = halyard_webhook::InjectionTemplate::from_yaml(t, "golden").unwrap();
    assert_eq!(
        t.proxy.image,
        "registry.example/halyard/halyard-proxy:1.0.0"
    );
    assert_eq!(t.revision, "default");
    // every object but the CRDs carries the pruning labels
    for o in objects
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition" && o["kind"] != "Namespace")
    {
        let l = render::labels_of(o);
        assert_eq!(
            l.get("install.operator.istio.io/owning-resource")
                .map(String::as_str),
            Some("mesh"),
            "{o}"
        );
        assert_eq!(l.get("istio.io/rev").map(String::as_str), Some("default"));
    }
}

#[test]
fn mutating_webhook_follows_istio_precedence() {
    let objects = golden("default", &mesh_install(DEFAULT), &settings(), false);
    let mwc = find(
        &objects,
        "MutatingWebhookConfiguration",
        "istio-sidecar-injector",
    );
    let hooks = mwc["webhooks"].as_array().unwrap();
    let hook_names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(
        hook_names,
        [
            "rev.namespace.sidecar-injector.istio.io",
            "rev.object.sidecar-injector.istio.io",
            "namespace.sidecar-injector.istio.io",
            "object.sidecar-injector.istio.io"
        ]
    );
    for h in hooks {
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["sideEffects"], "None");
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(h["rules"][0]["operations"], serde_json::json!(["CREATE"]));
        assert_eq!(h["rules"][0]["resources"], serde_json::json!(["pods"]));
        assert_eq!(h["clientConfig"]["service"]["path"], "/inject");
        assert_eq!(
            h["clientConfig"]["caBundle"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClVrOVBWQT09Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"
        );
        let excluded = h["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .unwrap();
        assert_eq!(excluded["operator"], "NotIn");
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "local-path-storage",
            "istio-system",
        ] {
            assert!(
                excluded["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == ns),
                "{ns}"
            );
        }
    }
    // rev.namespace: the legacy istio-injection label wins over istio.io/rev
    assert_eq!(
        hooks[0]["namespaceSelector"]["matchExpressions"][1],
        serde_json::json!({"key": "istio-injection", "operator": "DoesNotExist"})
    );
    // object: only pods labelled inject=true and not asking for a revision
    assert_eq!(
        hooks[3]["objectSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["true"])
    );
    let vwc = find(
        &objects,
        "ValidatingWebhookConfiguration",
        "istiod-default-validator",
    );
    assert_eq!(vwc["webhooks"][0]["name"], "validation.istio.io");
    assert_eq!(vwc["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(
        vwc["webhooks"][0]["clientConfig"]["service"]["path"],
        "/validate"
    );
}

#[test]
fn validation_fail_closed_only_changes_the_failure_policy() {
    let mi = mesh_install(DEFAULT);
    let serving = serving();
    let s = settings();
    let render = |fc| {
        render::render(&RenderInput {
            install: &mi,
            settings: &s,
            serving: &serving,
            validation_fail_closed: fc,
            native_sidecars_supported: false,
        })
        .unwrap()
    };
    let (open, closed) = (render(false), render(true));
    assert_eq!(open.len(), closed.len());
    for (a, b) in open.iter().zip(&closed) {
        if a["kind"] == "ValidatingWebhookConfiguration" {
            assert_eq!(b["webhooks"][0]["failurePolicy"], "Fail");
        } else {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn demo_profile() {
    let mi = mesh_install(
        "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {name: demo}\nspec: {profile: demo, meshConfig: {defaultMtlsMode: STRICT}}\n",
    );
    let objects = golden("demo", &mi, &settings(), false);
    assert_eq!(
        names(&objects, "Deployment"),
        [
            "halyard-webhook",
            "istio-ingressgateway",
            "istio-egressgateway"
        ]
    );
    let egress = find(&objects, "Service", "istio-egressgateway");
    assert_eq!(egress["spec"]["type"], "ClusterIP");
    assert_eq!(egress["spec"]["selector"]["istio"], "egressgateway");
    let mesh = find(&objects, "ConfigMap", "istio")["data"]["mesh"]
        .as_str()
        .unwrap();
    assert!(mesh.contains("accessLogFile: /dev/stdout"), "{mesh}");
    let pa = find(&objects, "PeerAuthentication", "default");
    assert_eq!(pa["spec"]["mtls"]["mode"], "STRICT");
    assert_eq!(pa["metadata"]["namespace"], "istio-system");
}

#[test]
fn minimal_profile() {
    let mi = mesh_install(
        "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {name: mesh}\nspec: {profile: minimal, namespace: mesh-system}\n",
    );
    let objects = golden("minimal", &mi, &settings(), false);
    assert_eq!(names(&objects, "Deployment"), ["halyard-webhook"]);
    assert!(names(&objects, "PeerAuthentication").is_empty());
    // outside istio-system Istio suffixes the injector configuration with the namespace
    assert_eq!(
        names(&objects, "MutatingWebhookConfiguration"),
        ["istio-sidecar-injector-mesh-system"]
    );
}

#[test]
fn canary_revision_runs_beside_the_default() {
    let mi = mesh_install(
        "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {name: canary}\nspec: {revision: canary, version: 1.1.0, profile: minimal}\n",
    );
    let objects = golden("revision-canary", &mi, &settings(), false);
    let default = render::render(&RenderInput {
        install: &mesh_install(DEFAULT),
        settings: &settings(),
        serving: &serving(),
        validation_fail_closed: false,
        native_sidecars_supported: false,
    })
    .unwrap();
    // no name collides with the default revision's (except the shared namespace and CRDs)
    for o in objects
        .iter()
        .filter(|o| o["kind"] != "Namespace" && o["kind"] != "CustomResourceDefinition")
    {
        let id = render::identity(o);
        assert!(
            !default.iter().any(|d| render::identity(d) == id),
            "{id:?} collides"
        );
    }
    let mwc = find(
        &objects,
        "MutatingWebhookConfiguration",
        "istio-sidecar-injector-canary",
    );
    assert_eq!(
        mwc["webhooks"].as_array().unwrap().len(),
        2,
        "only the rev.* webhooks"
    );
    assert_eq!(
        mwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["canary"])
    );
    assert_eq!(
        mwc["webhooks"][0]["clientConfig"]["service"]["name"],
        "halyard-webhook-canary"
    );
    let vwc = find(
        &objects,
        "ValidatingWebhookConfiguration",
        "istio-validator-canary-istio-system",
    );
    assert_eq!(vwc["webhooks"][0]["name"], "rev.validation.istio.io");
    let dep = find(&objects, "Deployment", "halyard-webhook-canary");
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/halyard/halyard-webhook:1.1.0"
    );
}

#[test]
fn out_of_cluster_webhook_uses_urls() {
    let s = RenderSettings {
        webhook_url: Some("https://127.0.0.1:15017".into()),
        ..settings()
    };
    let objects = golden("out-of-cluster", &mesh_install(DEFAULT), &s, false);
    assert_eq!(names(&objects, "Deployment"), ["istio-ingressgateway"]);
    let mwc = find(
        &objects,
        "MutatingWebhookConfiguration",
        "istio-sidecar-injector",
    );
    for h in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(h["clientConfig"]["url"], "https://127.0.0.1:15017/inject");
        assert!(h["clientConfig"]["service"].is_null());
        assert!(h["clientConfig"]["caBundle"].is_string());
    }
    let vwc = find(
        &objects,
        "ValidatingWebhookConfiguration",
        "istiod-default-validator",
    );
    assert_eq!(
        vwc["webhooks"][0]["clientConfig"]["url"],
        "https://127.0.0.1:15017/validate"
    );
    let l = Layout::of(&mesh_install(DEFAULT), &s).unwrap();
    assert_eq!(render::webhook_hosts(&l, &s), ["127.0.0.1"]);
}

#[test]
fn bad_specs_are_refused_with_the_field() {
    let s = settings();
    let bad = |spec: &str| {
        let mi = mesh_install(&format!(
            "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: m}}\nspec: {spec}\n"
        ));
        Layout::of(&mi, &s).unwrap_err().to_string()
    };
    assert_eq!(
        bad("{revision: Canary_1}"),
        "MeshInstall m: spec.revision: \"Canary_1\" is not a DNS label (lower-case letters, digits and '-', at most 40 characters, starting and ending with a letter or digit)"
    );
    assert!(
        bad("{version: latest}")
            .starts_with("MeshInstall m: spec.version: \"latest\" is not a version")
    );
    assert!(bad("{namespace: Istio}").starts_with("MeshInstall m: spec.namespace:"));
}

#[test]
fn native_sidecar_auto_follows_the_cluster_and_explicit_settings_win() {
    let s = settings();
    let serving = serving();
    // (spec.injection.nativeSidecar, cluster supports native sidecars) -> template nativeSidecars
    for (setting, supported, want) in [
        ("auto", true, true),
        ("auto", false, false),
        ("\"true\"", false, true),
        ("\"false\"", true, false),
    ] {
        let mi = mesh_install(&format!(
            "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: mesh}}\nspec: {{injection: {{nativeSidecar: {setting}}}}}\n"
        ));
        let objects = render::render(&RenderInput {
            install: &mi,
            settings: &s,
            serving: &serving,
            validation_fail_closed: false,
            native_sidecars_supported: supported,
        })
        .unwrap();
        let text = find(&objects, "ConfigMap", "istio-sidecar-injector")["data"]["config"]
            .as_str()
            .unwrap();
        let t = halyard_webhook::InjectionTemplate::from_yaml(text, "rendered").unwrap();
        assert_eq!(
            t.native_sidecars, want,
            "nativeSidecar {setting}, cluster supports: {supported}"
        );
    }
}

#[test]
fn the_root_certificate_is_not_rendered_but_mounted_under_istios_name() {
    for (case, spec) in [("default", "{}"), ("canary", "{revision: canary}")] {
        let mi = mesh_install(&format!(
            "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: mesh}}\nspec: {spec}\n"
        ));
        let objects = render::render(&RenderInput {
            install: &mi,
            settings: &settings(),
            serving: &serving(),
            validation_fail_closed: false,
            native_sidecars_supported: false,
        })
        .unwrap();
        // published into every namespace by the root-cert controller, never pruned with a MeshInstall
        assert!(
            !names(&objects, "ConfigMap")
                .iter()
                .any(|n| n.starts_with("istio-ca-root-cert")),
            "{case}"
        );
        let gw = objects
            .iter()
            .find(|o| {
                o["kind"] == "Deployment"
                    && o["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .starts_with("istio-ingressgateway")
            })
            .unwrap();
        assert_eq!(
            gw["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"], "istio-ca-root-cert",
            "{case}"
        );
        let t = find(
            &objects,
            "ConfigMap",
            objects
                .iter()
                .find(|o| {
                    o["kind"] == "ConfigMap"
                        && o["metadata"]["name"]
                            .as_str()
                            .unwrap()
                            .starts_with("istio-sidecar-injector")
                })
                .unwrap()["metadata"]["name"]
                .as_str()
                .unwrap(),
        )["data"]["config"]
            .as_str()
            .unwrap();
        let t = halyard_webhook::InjectionTemplate::from_yaml(t, "rendered").unwrap();
        assert_eq!(t.ca_root_config_map, "istio-ca-root-cert", "{case}");
    }
}
