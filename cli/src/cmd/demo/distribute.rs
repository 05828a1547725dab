//! Config distribution in the demo (pure): the config directory's YAML into the mesh model, and the model into
//! each proxy's resources with the translator the operator uses.

use halyard_config::ProxyResources;
use halyard_config::discovery::Node;
use halyard_config::mesh::{MeshInput, MeshModel};
use serde_json::Value;

/// The documents of a multi-document YAML file (empty documents skipped); `origin` names the file in errors.
pub fn documents(origin: &str, text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = <Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("{origin}: document {}: {e}", i + 1))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// The mesh input of Istio documents (ServiceEntry and WorkloadEntry give the services and endpoints).
pub fn mesh_input(docs: &[Value]) -> Result<MeshInput, String> {
    let mut istio = Vec::with_capacity(docs.len());
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or("?");
        let name = d["metadata"]["name"].as_str().unwrap_or("?");
        let parsed = halyard_crds::parse_object(d).map_err(|e| format!("{kind} {name}: {e}"))?;
        istio.push(parsed.object);
    }
    Ok(MeshInput {
        istio,
        ..MeshInput::default()
    })
}

/// One proxy's resources, stamped with `version` (what its admin `/server_info` reports once applied).
pub fn resources_for(
    model: &MeshModel,
    node: &Node,
    version: &str,
) -> Result<ProxyResources, String> {
    let mut res = halyard_config::translate::translate(model, node)
        .map_err(|e| format!("translating for {}: {e}", node.id))?;
    res.version = version.to_string();
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_skip_empty_ones_and_name_the_file_on_errors() {
        let docs = documents("x.yaml", "---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        let err = documents("x.yaml", "a: [1\n").unwrap_err();
        assert!(err.starts_with("x.yaml: document 1"), "{err}");
    }

    #[test]
    fn bad_objects_are_named() {
        let doc = serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": "not-a-list"},
        });
        let err = mesh_input(&[doc]).unwrap_err();
        assert!(err.starts_with("VirtualService reviews:"), "{err}");
    }

    #[test]
    fn resources_carry_the_version() {
        let model = MeshModel::build(&MeshInput::default());
        let node = Node {
            id: "x.default".into(),
            namespace: "default".into(),
            ..Node::default()
        };
        assert_eq!(
            resources_for(&model, &node, "demo-7").unwrap().version,
            "demo-7"
        );
    }
}
