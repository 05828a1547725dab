//! Status: pure functions from what the controller observed to `MeshInstall.status`.
//!
//! Conditions:
//! - `Reconciled`: the last spec was applied (`True`, reason `Applied`), or why not (`False`, reasons
//!   `WaitingForCRDs`, `UpgradeRefused`, `InvalidSpec`, `CertificateError`, `ApplyFailed`, ...).
//! - `Ready`: every enabled component is available (`True`, `AllComponentsReady`), or which is not and why
//!   (`False`, `ComponentsNotReady`; `NotReconciled` when the spec could not be applied).

use std::collections::BTreeMap;

use halyard_crds::install::{
    CONDITION_READY, CONDITION_RECONCILED, ComponentState, ComponentStatus, ConditionStatus,
    MeshInstallCondition, MeshInstallStatus,
};
use k8s_openapi::api::apps::v1::Deployment;

/// Component keys of `status.components`.
pub const CONTROL_PLANE: &str = "controlPlane";
pub const WEBHOOK: &str = "webhook";
pub const INGRESS_GATEWAY: &str = "ingressGateway";
pub const EGRESS_GATEWAY: &str = "egressGateway";

/// State of one component from its Deployment (`None`: not found).
pub fn deployment_state(name: &str, deployment: Option<&Deployment>) -> ComponentStatus {
    let Some(d) = deployment else {
        return ComponentStatus {
            state: ComponentState::Pending,
            message: Some(format!("Deployment {name} does not exist yet")),
        };
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let available = st.available_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = st.observed_generation.unwrap_or(0);
    // A failed rollout says so in the Progressing condition (ProgressDeadlineExceeded).
    let stuck = st.conditions.as_ref().and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "Progressing" && c.status == "False")
            .map(|c| {
                c.message
                    .clone()
                    .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
            })
    });
    if let Some(why) = stuck {
        return ComponentStatus {
            state: ComponentState::Failed,
            message: Some(format!("Deployment {name}: {why}")),
        };
    }
    if observed >= generation && updated >= want && available >= want {
        ComponentStatus {
            state: ComponentState::Ready,
            message: Some(format!("{available}/{want} replicas available")),
        }
    } else {
        let unavailable = st
            .conditions
            .as_ref()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "Available" && c.status == "False")
                    .and_then(|c| c.message.clone())
            })
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        ComponentStatus {
            state: ComponentState::Progressing,
            message: Some(format!(
                "Deployment {name}: {available}/{want} replicas available, {updated}/{want} updated{unavailable}"
            )),
        }
    }
}

/// What a reconcile pass found.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `Ok` when the spec was applied; else (reason, message).
    pub reconciled: Result<(), (String, String)>,
    pub components: BTreeMap<String, ComponentStatus>,
    /// Version now running (kept from the previous status when nothing was applied).
    pub installed_version: Option<String>,
    pub connected_proxies: Option<u32>,
}

fn condition(
    prev: Option<&MeshInstallStatus>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> MeshInstallCondition {
    let old = prev.and_then(|p| p.conditions.iter().find(|c| c.type_ == type_));
    let last_transition_time = match old {
        Some(o) if o.status == status => o.last_transition_time.clone(),
        _ => Some(now.to_string()),
    };
    MeshInstallCondition {
        type_: type_.to_string(),
        status,
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time,
        observed_generation: generation,
    }
}

/// The status to write. `now` is an RFC 3339 time, used only for conditions whose status changed.
pub fn build(
    prev: Option<&MeshInstallStatus>,
    generation: Option<i64>,
    obs: &Observation,
    now: &str,
) -> MeshInstallStatus {
    let reconciled = match &obs.reconciled {
        Ok(()) => condition(
            prev,
            CONDITION_RECONCILED,
            ConditionStatus::True,
            "Applied",
            "every object of the installation is applied".to_string(),
            generation,
            now,
        ),
        Err((reason, message)) => condition(
            prev,
            CONDITION_RECONCILED,
            ConditionStatus::False,
            reason,
            message.clone(),
            generation,
            now,
        ),
    };
    let not_ready: Vec<String> = obs
        .components
        .iter()
        .filter(|(_, c)| !matches!(c.state, ComponentState::Ready | ComponentState::Disabled))
        .map(|(k, c)| match &c.message {
            Some(m) => format!("{k}: {m}"),
            None => format!("{k}: {:?}", c.state),
        })
        .collect();
    let ready = if let Err((_, message)) = &obs.reconciled {
        condition(
            prev,
            CONDITION_READY,
            ConditionStatus::False,
            "NotReconciled",
            format!("the installation is not applied: {message}"),
            generation,
            now,
        )
    } else if not_ready.is_empty() {
        condition(
            prev,
            CONDITION_READY,
            ConditionStatus::True,
            "AllComponentsReady",
            "every enabled component is available".to_string(),
            generation,
            now,
        )
    } else {
        condition(
            prev,
            CONDITION_READY,
            ConditionStatus::False,
            "ComponentsNotReady",
            not_ready.join("; "),
            generation,
            now,
        )
    };
    MeshInstallStatus {
        observed_generation: generation,
        conditions: vec![reconciled, ready],
        components: obs.components.clone(),
        installed_version: obs
            .installed_version
            .clone()
            .or_else(|| prev.and_then(|p| p.installed_version.clone())),
        connected_proxies: obs.connected_proxies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn dep(replicas: i32, available: i32, generation: i64, observed: i64) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: Some(available),
                updated_replicas: Some(available),
                observed_generation: Some(observed),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deployment_states() {
        assert_eq!(deployment_state("w", None).state, ComponentState::Pending);
        assert_eq!(
            deployment_state("w", Some(&dep(2, 2, 3, 3))).state,
            ComponentState::Ready
        );
        let p = deployment_state("w", Some(&dep(2, 1, 3, 3)));
        assert_eq!(p.state, ComponentState::Progressing);
        assert_eq!(
            p.message.as_deref(),
            Some("Deployment w: 1/2 replicas available, 1/2 updated")
        );
        // a spec change not yet observed is not ready even if the old pods are
        assert_eq!(
            deployment_state("w", Some(&dep(2, 2, 4, 3))).state,
            ComponentState::Progressing
        );
    }

    #[test]
    fn conditions_name_the_component_and_keep_transition_times() {
        let mut components = BTreeMap::new();
        components.insert(
            WEBHOOK.to_string(),
            ComponentStatus {
                state: ComponentState::Progressing,
                message: Some("Deployment halyard-webhook: 0/1 replicas available".into()),
            },
        );
        components.insert(
            EGRESS_GATEWAY.to_string(),
            ComponentStatus {
                state: ComponentState::Disabled,
                message: None,
            },
        );
        let obs = Observation {
            reconciled: Ok(()),
            components,
            installed_version: Some("1.0.0".into()),
            connected_proxies: Some(3),
        };
        let s1 = build(None, Some(1), &obs, "t1");
        assert_eq!(s1.conditions[0].status, ConditionStatus::True);
        assert_eq!(
            s1.conditions[1].reason.as_deref(),
            Some("ComponentsNotReady")
        );
        assert_eq!(
            s1.conditions[1].message.as_deref(),
            Some("webhook: Deployment halyard-webhook: 0/1 replicas available")
        );
        let s2 = build(Some(&s1), Some(1), &obs, "t2");
        assert_eq!(s2, s1, "unchanged observation gives an identical status");
        let failed = Observation {
            reconciled: Err(("UpgradeRefused".into(), "cannot move".into())),
            installed_version: None,
            ..obs
        };
        let s3 = build(Some(&s2), Some(2), &failed, "t3");
        assert_eq!(s3.conditions[0].last_transition_time.as_deref(), Some("t3"));
        assert_eq!(s3.conditions[1].reason.as_deref(), Some("NotReconciled"));
        assert_eq!(s3.installed_version.as_deref(), Some("1.0.0"));
        assert_eq!(s3.observed_generation, Some(2));
    }
}
