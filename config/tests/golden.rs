//! Golden snapshots of whole proxy configurations (also examples of the static config format).
//! Regenerate with `HALYARD_UPDATE_GOLDEN=1 cargo test -p halyard-config --test golden`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use halyard_config::mesh::MeshModel;
use halyard_config::static_config::{parse_proxy_resources, to_json};
use halyard_config::translate::translate;

fn check(
    name: &str,
    files: &[&str],
    node: fn(&halyard_config::mesh::MeshInput) -> halyard_config::discovery::Node,
) {
    let Some(mut input) = bookinfo() else { return };
    for f in files {
        apply(&mut input, f);
    }
    let res = translate(&MeshModel::build(&input), &node(&input)).unwrap();
    let json = to_json(&res) + "\n";
    let path =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata")).join(name);
    if std::env::var("HALYARD_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &json).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with HALYARD_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert!(
        want == json,
        "{} differs from the translation; if the change is intended regenerate with HALYARD_UPDATE_GOLDEN=1",
        path.display()
    );
    // The snapshot is a valid static config file.
    assert_eq!(parse_proxy_resources(name, &want).unwrap(), res);
}

#[test]
fn productpage_with_reviews_90_10() {
    check(
        "productpage-reviews-90-10.json",
        &[
            "destination-rule-all.yaml",
            "virtual-service-reviews-90-10.yaml",
        ],
        |input| sidecar(input, "productpage"),
    );
}

#[test]
fn ingress_gateway_with_bookinfo_gateway() {
    check(
        "ingressgateway-bookinfo.json",
        &["bookinfo-gateway.yaml", "destination-rule-all.yaml"],
        |_| ingress_gateway(),
    );
}
