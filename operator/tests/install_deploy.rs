//! The manifests that install the operator itself (`operator/deploy/`): the MeshInstall CRD is the one the
//! crds crate generates (regenerate with `HALYARD_UPDATE_GOLDEN=1`), and the operator's ClusterRole grants
//! every verb the controller uses on every kind it renders.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use halyard_crds::object::Kind;
use halyard_operator::install::kinds;
use serde::Deserialize;
use serde_json::Value;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn meshinstall_crd_is_generated() {
    let crd = halyard_crds::crd::crd_for(Kind::MeshInstall).unwrap();
    let text = format!(
        "# Generated from halyard-crds (MeshInstall); regenerate with HALYARD_UPDATE_GOLDEN=1 cargo test -p halyard-operator --test install_deploy\n{}",
        halyard_crds::crd::to_yaml(&[crd]).unwrap()
    );
    let path = deploy("crd-meshinstall.yaml");
    if std::env::var("HALYARD_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert!(
        want == text,
        "{} is stale: run with HALYARD_UPDATE_GOLDEN=1",
        path.display()
    );
}

fn allowed(rules: &[Value], group: &str, plural: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        let has = |field: &str, want: &str| {
            r[field]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == want || v == "*"))
        };
        has("apiGroups", group) && has("resources", plural) && has("verbs", verb)
    })
}

#[test]
fn operator_rbac_covers_what_the_controller_does() {
    let docs = documents("operator.yaml");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let rules = role["rules"].as_array().unwrap();
    for k in kinds::ALL {
        for verb in ["get", "list", "watch", "create", "patch"] {
            assert!(
                allowed(rules, k.group, k.plural, verb),
                "ClusterRole lacks {verb} on {}",
                k.plural
            );
        }
    }
    for k in kinds::PRUNE_ORDER {
        assert!(allowed(rules, k.group, k.plural, "delete"), "{}", k.plural);
    }
    for (group, plural, verb) in [
        ("install.halyard.dev", "meshinstalls", "patch"),
        ("install.halyard.dev", "meshinstalls/status", "patch"),
        ("install.halyard.dev", "meshinstalls/finalizers", "update"),
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "delete",
        ),
        ("networking.istio.io", "gateways", "create"),
        ("events.k8s.io", "events", "create"),
        // istio-ca-root-cert in every namespace
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("", "configmaps", "list"),
        ("", "configmaps", "watch"),
        ("", "configmaps", "get"),
        ("", "configmaps", "patch"),
        ("", "configmaps", "create"),
        // nativeSidecar: auto reads every node's kubelet version
        ("", "nodes", "list"),
    ] {
        assert!(allowed(rules, group, plural, verb), "{verb} {plural}");
    }
    // leader election is namespaced
    let lease_role = docs
        .iter()
        .find(|d| {
            d["kind"] == "Role" && d["metadata"]["name"] == "halyard-operator-leader-election"
        })
        .unwrap();
    let lease_rules = lease_role["rules"].as_array().unwrap();
    for verb in ["get", "create", "update"] {
        assert!(allowed(lease_rules, "coordination.k8s.io", "leases", verb));
    }
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args = &dep["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--install-controller")
    );
}

#[test]
fn there_is_a_dockerfile_per_binary() {
    for bin in [
        "halyard",
        "halyard-operator",
        "halyard-webhook",
        "halyard-proxy",
        "halyard-init",
    ] {
        let text = std::fs::read_to_string(deploy(&format!("docker/Dockerfile.{bin}"))).unwrap();
        assert!(text.contains(&format!("--bin {bin}")), "{bin}");
    }
}
