//! `admission.k8s.io` AdmissionReview handling as pure functions: bytes in, HTTP status and bytes out.
//!
//! kube-core has AdmissionReview types, but it builds patches with a different major version of `json-patch`
//! than this workspace and cannot echo the uid of a review whose body is only partly valid; these few types
//! give exact control over both.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inject::{AdmissionPatch, Injector, PodContext};
use crate::validate;

/// What happened to one review, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Injection: patched. Validation: allowed after validation.
    Success,
    /// Injection: allowed unchanged (not selected, not a pod). Validation: not an Istio kind or a DELETE.
    Skip,
    /// Refused (bad annotations, invalid config, always-reject).
    Denied(&'static str),
    /// The review itself was unusable (HTTP 400).
    BadRequest,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSON patch, as the API requires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    pub fn allow(uid: &str) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            patch_type: None,
            patch: None,
            status: None,
            warnings: Vec::new(),
        }
    }

    pub fn deny(uid: &str, code: u16, message: impl Into<String>) -> Self {
        AdmissionResponse {
            allowed: false,
            status: Some(Status {
                code,
                message: message.into(),
            }),
            ..Self::allow(uid)
        }
    }

    pub fn with_patch(self, patch: &json_patch::Patch) -> Self {
        let json = serde_json::to_vec(patch).unwrap_or_default();
        self.with_patch_json(&json, patch.0.len())
    }

    /// The patch as JSON text (see [`crate::inject::AdmissionPatch`]); none when it has no operations.
    pub fn with_patch_json(mut self, json: &[u8], operations: usize) -> Self {
        if operations > 0 {
            self.patch_type = Some("JSONPatch");
            self.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
        }
        self
    }
}

/// A review the server answers with HTTP 400; the uid is echoed when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReview {
    pub uid: Option<String>,
    pub message: String,
}

const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Parses an AdmissionReview body; returns the request and the apiVersion to answer with.
pub fn parse(body: &[u8]) -> Result<(AdmissionRequest, String), BadReview> {
    let bad = |uid: Option<String>, message: String| BadReview { uid, message };
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| bad(None, format!("malformed JSON in AdmissionReview: {e}")))?;
    let Some(obj) = review.as_object_mut() else {
        return Err(bad(None, "AdmissionReview must be a JSON object".into()));
    };
    let uid = obj
        .get("request")
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let api_version = match obj.get("apiVersion") {
        None => API_VERSIONS[0].to_string(),
        Some(Value::String(v)) if API_VERSIONS.contains(&v.as_str()) => v.clone(),
        Some(other) => {
            return Err(bad(
                uid,
                format!(
                    "unsupported AdmissionReview apiVersion {other}, expected admission.k8s.io/v1"
                ),
            ));
        }
    };
    let Some(Value::Object(mut request)) = obj.remove("request") else {
        return Err(bad(uid, "AdmissionReview has no request".into()));
    };
    if uid.as_deref().is_none_or(str::is_empty) {
        return Err(bad(None, "AdmissionReview request.uid is missing".into()));
    }
    // The objects are taken out whole rather than deserialised again (they can be large).
    let object = request.remove("object").filter(|o| !o.is_null());
    let old_object = request.remove("oldObject").filter(|o| !o.is_null());
    let mut request: AdmissionRequest =
        serde_json::from_value(Value::Object(request)).map_err(|e| {
            bad(
                uid.clone(),
                format!("malformed AdmissionReview request: {e}"),
            )
        })?;
    request.object = object;
    request.old_object = old_object;
    Ok((request, api_version))
}

/// Renders the AdmissionReview answer.
pub fn render(api_version: &str, response: &AdmissionResponse) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Review<'a> {
        api_version: &'a str,
        kind: &'static str,
        response: &'a AdmissionResponse,
    }
    serde_json::to_vec(&Review {
        api_version,
        kind: "AdmissionReview",
        response,
    })
    .unwrap_or_default()
}

/// A full exchange: body in, (HTTP status, body out, verdict).
pub fn respond(
    body: &[u8],
    handle: impl FnOnce(&AdmissionRequest) -> (AdmissionResponse, Verdict),
) -> (u16, Vec<u8>, Verdict) {
    match parse(body) {
        Ok((request, api_version)) => {
            let (response, verdict) = handle(&request);
            (200, render(&api_version, &response), verdict)
        }
        Err(bad) => {
            let response =
                AdmissionResponse::deny(bad.uid.as_deref().unwrap_or(""), 400, bad.message);
            (400, render(API_VERSIONS[0], &response), Verdict::BadRequest)
        }
    }
}

/// `/inject`: pods on CREATE get the sidecar patch; everything else is allowed unchanged.
pub fn handle_inject(
    request: &AdmissionRequest,
    injector: &Injector,
) -> (AdmissionResponse, Verdict) {
    let uid = request.uid.as_str();
    if request.kind.kind != "Pod" || !request.kind.group.is_empty() || request.operation != "CREATE"
    {
        return (AdmissionResponse::allow(uid), Verdict::Skip);
    }
    let Some(pod) = request.object.as_ref() else {
        return (
            AdmissionResponse::deny(uid, 400, "cannot inject: the review has no object"),
            Verdict::Denied("no_object"),
        );
    };
    let ctx = PodContext {
        namespace: request.namespace.as_deref().filter(|n| !n.is_empty()),
        namespace_labels: None,
        workload: None,
    };
    match injector.admission_patch(pod, &ctx) {
        Ok(AdmissionPatch::Patch { json, operations }) => {
            let mut response = AdmissionResponse::allow(uid).with_patch_json(&json, operations);
            response.warnings = not_applicable(pod);
            (response, Verdict::Success)
        }
        Ok(AdmissionPatch::Skipped(reason)) => {
            tracing::debug!(uid, %reason, "injection skipped");
            (AdmissionResponse::allow(uid), Verdict::Skip)
        }
        Err(e) => {
            tracing::info!(uid, error = %e, "injection refused");
            (
                AdmissionResponse::deny(uid, 400, e.to_string()),
                Verdict::Denied("injection_error"),
            )
        }
    }
}

/// Warnings for the pod's Istio annotations that have no effect here (see `annotations::NOT_APPLICABLE`).
fn not_applicable(pod: &Value) -> Vec<String> {
    let annotations = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    let Some(annotations) = annotations else {
        return Vec::new();
    };
    crate::annotations::NOT_APPLICABLE
        .iter()
        .filter(|(name, _)| annotations.contains_key(*name))
        .map(|(name, why)| format!("annotation {name} has no effect: {why}"))
        .collect()
}

/// `/validate`: see [`validate::review`].
pub fn handle_validate(request: &AdmissionRequest) -> (AdmissionResponse, Verdict) {
    validate::review(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_are_400_with_uid_when_known() {
        let (code, body, v) = respond(b"{not json", |_| unreachable!());
        assert_eq!((code, v), (400, Verdict::BadRequest));
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            out["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("malformed JSON")
        );

        let (code, body, _) = respond(br#"{"request":{"uid":"u1","kind":7}}"#, |_| unreachable!());
        assert_eq!(code, 400);
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(out["response"]["uid"], "u1");

        let (_, body, _) = respond(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            |_| unreachable!(),
        );
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            out["response"]["status"]["message"],
            "AdmissionReview has no request"
        );
    }

    #[test]
    fn patch_is_base64_json_patch() {
        let injector = Injector::builtin().unwrap();
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "abc", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE", "namespace": "ns",
                "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "a"}]}},
            }
        });
        let (code, out, v) = respond(&serde_json::to_vec(&body).unwrap(), |r| {
            handle_inject(r, &injector)
        });
        assert_eq!((code, v), (200, Verdict::Success));
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["response"]["uid"], "abc");
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut pod = body["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["containers"][1]["name"], "istio-proxy");
        assert!(out["response"].get("warnings").is_none());
    }

    #[test]
    fn annotations_without_effect_are_warned_about() {
        let injector = Injector::builtin().unwrap();
        let body = serde_json::json!({
            "request": {
                "uid": "w", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                "object": {"metadata": {"annotations": {"sidecar.istio.io/bootstrapOverride": "my-bootstrap"}},
                           "spec": {"containers": [{"name": "a", "image": "a"}]}},
            }
        });
        let (code, out, v) = respond(&serde_json::to_vec(&body).unwrap(), |r| {
            handle_inject(r, &injector)
        });
        assert_eq!((code, v), (200, Verdict::Success));
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out["response"]["warnings"],
            serde_json::json!([
                "annotation sidecar.istio.io/bootstrapOverride has no effect: halyard has no Envoy, so there is no Envoy bootstrap to override"
            ])
        );
        assert_eq!(out["response"]["patchType"], "JSONPatch");
    }
}
