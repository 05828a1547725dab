//! Offline injection of YAML manifests (`halyard kube-inject`): the same [`Injector`] as the webhook, applied
//! to the pod template of each Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job and CronJob, and to
//! the items of `List` documents. Other kinds pass through unchanged. Re-running it on its own output gives
//! the same output (injection is idempotent), unlike Istio's `kube-inject`.

use serde_json::Value;

use crate::annotations::Labels;
use crate::error::Error;
use crate::inject::{Injector, Outcome, PodContext, WorkloadMeta};

/// Where a workload kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects every document of a (multi-document) YAML text and renders the result as YAML.
/// `namespace_labels`, when given, also applies the webhook's namespace selectors.
pub fn inject_documents(
    text: &str,
    injector: &Injector,
    namespace_labels: Option<&Labels>,
) -> Result<String, Error> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).map_err(|e| {
            Error::Parse {
                what: format!("YAML document {index}"),
                why: e.to_string(),
            }
        })?;
        if yaml.is_null() {
            continue;
        }
        let json: Value = serde_json::to_value(&yaml).map_err(|e| Error::Parse {
            what: format!("YAML document {index}"),
            why: e.to_string(),
        })?;
        let injected =
            inject_object(json, injector, namespace_labels).map_err(|e| Error::Document {
                index,
                what: describe(&yaml),
                source: Box::new(e),
            })?;
        out.push(serde_yaml::to_string(&injected).map_err(|e| Error::Parse {
            what: format!("result of document {index}"),
            why: e.to_string(),
        })?);
    }
    Ok(out.join("---\n"))
}

fn describe(doc: &serde_yaml::Value) -> String {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("?");
    format!("{kind} {name}")
}

/// Injects one object (Pod, workload or List); anything else is returned unchanged.
pub fn inject_object(
    mut obj: Value,
    injector: &Injector,
    namespace_labels: Option<&Labels>,
) -> Result<Value, Error> {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind == "List" {
        if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                let taken = std::mem::take(item);
                *item = inject_object(taken, injector, namespace_labels)?;
            }
        }
        return Ok(obj);
    }
    let text = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let workload = WorkloadMeta {
        name: text("/metadata/name"),
        namespace: Some(text("/metadata/namespace"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        kind: kind.clone(),
        api_version: text("/apiVersion"),
    };
    let namespace = workload.namespace.clone();
    let ctx = PodContext {
        namespace: Some(&namespace),
        namespace_labels,
        workload: Some(workload.clone()),
    };
    if kind == "Pod" {
        return Ok(match injector.inject(&obj, &ctx)? {
            Outcome::Injected(pod) => pod,
            Outcome::Skipped(_) => obj,
        });
    }
    let Some(path) = template_path(&kind) else {
        return Ok(obj);
    };
    let Some(template) = obj.pointer_mut(path) else {
        return Err(Error::NotInjectable {
            what: kind,
            why: format!(
                "{} is missing",
                path.trim_start_matches('/').replace('/', ".")
            ),
        });
    };
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    if let Outcome::Injected(injected) = injector.inject(&pod, &ctx)? {
        template["metadata"] = injected["metadata"].clone();
        template["spec"] = injected["spec"].clone();
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_and_passthrough() {
        let i = Injector::builtin().unwrap();
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: batch/v1
  kind: CronJob
  metadata: {name: c}
  spec:
    schedule: "* * * * *"
    jobTemplate:
      spec:
        template:
          spec:
            containers: [{name: job, image: busybox}]
            restartPolicy: Never
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 80}]}
"#;
        let out = inject_documents(text, &i, None).unwrap();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| {
                serde_json::to_value(
                    <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap(),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(docs.len(), 2);
        let pod_spec = &docs[0]["items"][0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod_spec["containers"][1]["name"], "istio-proxy");
        assert_eq!(docs[1]["kind"], "Service");
        assert!(docs[1]["spec"].get("containers").is_none());
        // Idempotent on its own output.
        assert_eq!(inject_documents(&out, &i, None).unwrap(), out);
    }

    #[test]
    fn errors_name_the_document() {
        let i = Injector::builtin().unwrap();
        let text = "kind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n";
        let err = inject_documents(text, &i, None).unwrap_err().to_string();
        assert_eq!(
            err,
            "document 0 (Deployment d): cannot inject Deployment: spec.template is missing"
        );
    }
}
