//! `/validate`, answering as Istio's validating webhook does: CREATE and UPDATE of Istio kinds are checked by
//! `halyard_crds::validation`; an invalid object is refused with `configuration is invalid: ...` (kubectl
//! prints `admission webhook "validation.istio.io" denied the request: configuration is invalid: ...`);
//! warnings travel in `warnings`; an object carrying `internal.istio.io/webhook-always-reject` is always
//! refused (the operator proves the webhook is live with it before making it fail-closed); DELETE and other
//! operations, and kinds outside Istio's groups, are allowed.

use serde_json::Value;

use crate::review::{AdmissionRequest, AdmissionResponse, Verdict};

pub const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";

/// Istio's validated API groups.
fn is_istio_group(group: &str) -> bool {
    group.ends_with(".istio.io")
}

pub fn review(request: &AdmissionRequest) -> (AdmissionResponse, Verdict) {
    let uid = request.uid.as_str();
    if !matches!(request.operation.as_str(), "CREATE" | "UPDATE")
        || !is_istio_group(&request.kind.group)
    {
        return (AdmissionResponse::allow(uid), Verdict::Skip);
    }
    let Some(object) = request.object.as_ref().filter(|o| o.is_object()) else {
        return (
            AdmissionResponse::deny(
                uid,
                400,
                "cannot decode configuration: the review has no object",
            ),
            Verdict::Denied("decode_error"),
        );
    };
    if object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(ALWAYS_REJECT))
    {
        return (
            AdmissionResponse::deny(
                uid,
                400,
                format!("{ALWAYS_REJECT:?} annotation found, rejecting"),
            ),
            Verdict::Denied("always_reject"),
        );
    }
    let report = halyard_crds::validation::validate_value(object);
    let warnings = report.warnings.clone();
    if report.is_valid() {
        let mut response = AdmissionResponse::allow(uid);
        response.warnings = warnings;
        (response, Verdict::Success)
    } else {
        let mut response = AdmissionResponse::deny(uid, 400, report.denial_message());
        response.warnings = warnings;
        (response, Verdict::Denied("invalid_config"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::GroupVersionKind;
    use serde_json::json;

    fn request(operation: &str, object: Value) -> AdmissionRequest {
        AdmissionRequest {
            uid: "u".into(),
            kind: GroupVersionKind {
                group: "networking.istio.io".into(),
                version: "v1".into(),
                kind: "VirtualService".into(),
            },
            operation: operation.into(),
            namespace: Some("default".into()),
            name: Some("vs".into()),
            object: Some(object),
            old_object: None,
            dry_run: None,
        }
    }

    fn vs(hosts: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "default"},
            "spec": {"hosts": hosts, "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
        })
    }

    #[test]
    fn valid_invalid_always_reject_delete() {
        let (r, v) = review(&request("CREATE", vs(json!(["reviews"]))));
        assert!(r.allowed, "{r:?}");
        assert_eq!(v, Verdict::Success);

        let (r, v) = review(&request("UPDATE", vs(json!(["*"]))));
        assert!(!r.allowed);
        assert_eq!(v, Verdict::Denied("invalid_config"));
        let msg = r.status.unwrap().message;
        assert!(msg.starts_with("configuration is invalid: "), "{msg}");

        let mut rejected = vs(json!(["reviews"]));
        rejected["metadata"]["annotations"] = json!({ALWAYS_REJECT: "true"});
        let (r, v) = review(&request("CREATE", rejected.clone()));
        assert!(!r.allowed);
        assert_eq!(v, Verdict::Denied("always_reject"));

        let (r, v) = review(&request("DELETE", rejected));
        assert!(r.allowed);
        assert_eq!(v, Verdict::Skip);
    }

    #[test]
    fn other_groups_pass() {
        let mut req = request("CREATE", json!({"kind": "ConfigMap"}));
        req.kind.group = String::new();
        assert!(review(&req).0.allowed);
    }
}
