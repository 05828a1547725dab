//! What `halyard install` and `halyard uninstall` do against a cluster: apply the operator's own manifests
//! (`operator/deploy/`, embedded), then a MeshInstall, and wait for it to be `Reconciled`; or delete the
//! MeshInstalls (the operator's finalizer uninstalls), wait for them to go, then remove the operator.

use std::time::Duration;

use halyard_crds::install::{CONDITION_RECONCILED, ConditionStatus, MeshInstall};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::Value;

use super::controller::{apply_value, dynamic_api, is_established, is_not_found};
use super::{Error, kinds, render};

/// The MeshInstall CRD (generated from the crds crate; kept in sync by a test).
pub const CRD_YAML: &str = include_str!("../../deploy/crd-meshinstall.yaml");
/// Namespace, RBAC, Deployment and Service of the operator.
pub const OPERATOR_YAML: &str = include_str!("../../deploy/operator.yaml");
/// Field manager of the CLI's applies.
pub const CLI_FIELD_MANAGER: &str = "halyard-cli";

/// Parses a multi-document YAML text into objects; `source` names it in errors.
pub fn documents(text: &str, source: &str) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(d).map_err(|e| Error::Render {
            what: format!("{source} document {}", i + 1),
            why: e.to_string(),
        })?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The operator's manifests, with its image replaced when `image` is given.
pub fn operator_objects(image: Option<&str>) -> Result<Vec<Value>, Error> {
    let mut objs = documents(CRD_YAML, "crd-meshinstall.yaml")?;
    objs.extend(documents(OPERATOR_YAML, "operator.yaml")?);
    if let Some(image) = image {
        for o in objs.iter_mut().filter(|o| o["kind"] == "Deployment") {
            if let Some(cs) = o
                .pointer_mut("/spec/template/spec/containers")
                .and_then(Value::as_array_mut)
            {
                for c in cs {
                    c["image"] = Value::String(image.to_string());
                }
            }
        }
    }
    Ok(objs)
}

/// A client from `$KUBECONFIG`, `~/.kube/config` or the in-cluster environment.
pub async fn connect() -> Result<Client, Error> {
    Client::try_default()
        .await
        .map_err(|e| Error::kube("connect to", "cluster", "(kubeconfig)", e))
}

async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut poll: impl AsyncFnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = poll().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Render {
                what: what.to_string(),
                why: format!("still not done after {timeout:?}"),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Installs (or upgrades) the operator and applies `mi`; waits up to `timeout` for `Reconciled=True` of
/// the applied generation. Returns the condition's message.
pub async fn install(
    client: &Client,
    mi: &MeshInstall,
    operator_image: Option<&str>,
    timeout: Duration,
) -> Result<String, Error> {
    let objs = operator_objects(operator_image)?;
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = objs
        .iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    for o in &crds {
        apply_value(client, o, CLI_FIELD_MANAGER).await?;
    }
    let crd_api = Api::<CustomResourceDefinition>::all(client.clone());
    for o in &crds {
        let (_, _, _, name) = render::identity(o);
        wait_for(timeout, &format!("CRD {name} Established"), async || {
            let crd = crd_api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube("get", "CustomResourceDefinition", &name, e))?;
            Ok(crd.filter(is_established).map(|_| ()))
        })
        .await?;
    }
    for o in &rest {
        apply_value(client, o, CLI_FIELD_MANAGER).await?;
    }
    let mut value = serde_json::to_value(mi).map_err(|e| Error::Render {
        what: "MeshInstall".to_string(),
        why: e.to_string(),
    })?;
    if let Some(m) = value.as_object_mut() {
        m.remove("status");
    }
    apply_value(client, &value, CLI_FIELD_MANAGER).await?;
    let name = mi.name_any();
    let api = Api::<MeshInstall>::all(client.clone());
    wait_for(
        timeout,
        &format!("MeshInstall {name} Reconciled"),
        async || {
            let live = api
                .get(&name)
                .await
                .map_err(|e| Error::kube("get", "MeshInstall", &name, e))?;
            let Some(status) = &live.status else {
                return Ok(None);
            };
            if status.observed_generation != live.metadata.generation {
                return Ok(None);
            }
            let Some(c) = status
                .conditions
                .iter()
                .find(|c| c.type_ == CONDITION_RECONCILED)
            else {
                return Ok(None);
            };
            let message = c.message.clone().unwrap_or_default();
            match (c.status, c.reason.as_deref()) {
                (ConditionStatus::True, _) => Ok(Some(message)),
                // These do not heal by waiting.
                (ConditionStatus::False, Some(r @ ("UpgradeRefused" | "InvalidSpec"))) => {
                    Err(Error::InvalidSpec {
                        name: name.clone(),
                        field: r.to_string(),
                        why: message,
                    })
                }
                _ => Ok(None),
            }
        },
    )
    .await
}

/// Deletes the MeshInstalls (all, or the one named), waits for the operator to finish uninstalling them,
/// then removes the operator itself (its MeshInstall CRD only with `purge`).
pub async fn uninstall(
    client: &Client,
    name: Option<&str>,
    purge: bool,
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    let api = Api::<MeshInstall>::all(client.clone());
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => match api.list(&ListParams::default()).await {
            Ok(l) => l.items.iter().map(|m| m.name_any()).collect(),
            Err(e) if is_not_found(&e) => Vec::new(),
            Err(e) => return Err(Error::kube("list", "MeshInstall", "*", e)),
        },
    };
    for n in &names {
        match api.delete(n, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube("delete", "MeshInstall", n, e)),
        }
    }
    for n in &names {
        wait_for(
            timeout,
            &format!("MeshInstall {n} uninstalled"),
            async || match api.get_opt(n).await {
                Ok(None) => Ok(Some(())),
                Ok(Some(_)) => Ok(None),
                Err(e) => Err(Error::kube("get", "MeshInstall", n, e)),
            },
        )
        .await?;
    }
    if name.is_some() {
        return Ok(names);
    }
    // The operator goes last-in first-out: Deployment before its RBAC, the namespace at the end.
    let mut objs = operator_objects(None)?;
    objs.reverse();
    for o in objs {
        if o["kind"] == "CustomResourceDefinition" && !purge {
            continue;
        }
        let (api_version, kind, ns, obj_name) = render::identity(&o);
        let Some(k) = kinds::lookup(&api_version, &kind) else {
            continue;
        };
        match dynamic_api(client, &k, ns.as_deref())
            .delete(&obj_name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube("delete", &kind, &obj_name, e)),
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifests_are_known_kinds_and_image_is_replaced() {
        let objs = operator_objects(Some("r.example/halyard-operator:9.9.9")).unwrap();
        assert_eq!(objs[0]["kind"], "CustomResourceDefinition");
        for o in &objs {
            let (v, k, _, n) = render::identity(o);
            assert!(kinds::lookup(&v, &k).is_some(), "{v} {k} {n}");
        }
        let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"],
            "r.example/halyard-operator:9.9.9"
        );
    }
}
