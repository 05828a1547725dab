//! Whether a pod gets a sidecar, decided as Istio decides it.
//!
//! Two stages, as in Istio: (1) the MutatingWebhookConfiguration's namespace/object selectors decide whether
//! the API server calls the webhook at all ([`webhook_selects`]); (2) istiod's `injectRequired` decides
//! from the pod itself ([`injection_required`]). When the namespace labels are known (tests, offline
//! tools given a namespace) both stages run; the admission server only sees the pod, so only stage 2 runs
//! there, because the API server has already applied stage 1.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::annotations::{self, Labels, parse_bool};
use crate::template::{InjectionPolicy, InjectionTemplate};

/// Namespaces Istio never injects into.
pub const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// No webhook selector of the configuration matches the namespace and pod labels.
    NotSelected,
    HostNetwork,
    IgnoredNamespace(String),
    /// The pod's label or annotation `sidecar.istio.io/inject` says no.
    PodOptOut,
    /// `neverInjectSelector` matched.
    NeverInjectSelector,
    /// Nothing explicit and the policy is `disabled`.
    PolicyDisabled,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NotSelected => {
                f.write_str("no injection webhook selects this namespace/pod")
            }
            SkipReason::HostNetwork => f.write_str("pod uses hostNetwork"),
            SkipReason::IgnoredNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            SkipReason::PodOptOut => write!(f, "pod sets {} to false", annotations::INJECT),
            SkipReason::NeverInjectSelector => f.write_str("pod matches neverInjectSelector"),
            SkipReason::PolicyDisabled => {
                f.write_str("injection policy is disabled and the pod does not opt in")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(SkipReason),
}

/// What the decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
    pub annotations: &'a Labels,
    pub host_network: bool,
}

/// Both stages; `namespace_labels: None` means "the API server already selected this pod".
pub fn decide(
    template: &InjectionTemplate,
    namespace_labels: Option<&Labels>,
    pod: PodFacts<'_>,
) -> Decision {
    if let Some(ns) = namespace_labels
        && !webhook_selects(template, pod.namespace, ns, pod.labels)
    {
        return Decision::Skip(SkipReason::NotSelected);
    }
    injection_required(template, pod)
}

/// Stage 1: the selectors of Istio's MutatingWebhookConfiguration (see `shared/istio/README.md`).
pub fn webhook_selects(
    template: &InjectionTemplate,
    namespace: &str,
    ns_labels: &Labels,
    pod_labels: &Labels,
) -> bool {
    let rev = template.revision.as_str();
    let is_default_rev = rev.is_empty() || rev == "default";
    let ns_injection = ns_labels.get(annotations::LABEL_NS_INJECTION);
    let ns_rev = ns_labels.get(annotations::REV);
    let pod_rev = pod_labels.get(annotations::REV);
    let pod_inject = pod_labels
        .get(annotations::LABEL_INJECT)
        .map(String::as_str);
    let pod_not_false = pod_inject != Some("false");

    // rev.namespace: namespace asks for this revision and has no legacy label.
    let rev_namespace = ns_injection.is_none()
        && ns_rev.is_some_and(|r| r == rev || (is_default_rev && r == "default"))
        && pod_not_false;
    // rev.object: unlabeled namespace, pod asks for this revision.
    let rev_object = ns_injection.is_none()
        && ns_rev.is_none()
        && pod_rev.is_some_and(|r| r == rev || (is_default_rev && r == "default"))
        && pod_not_false;
    // namespace: legacy label (default revision only).
    let namespace_sel =
        is_default_rev && ns_injection.is_some_and(|v| v == "enabled") && pod_not_false;
    // object: unlabeled namespace, pod label inject=true without a revision (default revision only).
    let object_sel = is_default_rev
        && ns_injection.is_none()
        && ns_rev.is_none()
        && pod_inject == Some("true")
        && pod_rev.is_none();
    // auto: every unlabeled namespace outside the kube-system family, unlabeled pods.
    let auto_sel = is_default_rev
        && template.enable_namespaces_by_default
        && ns_injection.is_none()
        && ns_rev.is_none()
        && !IGNORED_NAMESPACES.contains(&namespace)
        && pod_inject.is_none()
        && pod_rev.is_none();
    rev_namespace || rev_object || namespace_sel || object_sel || auto_sel
}

/// Stage 2: istiod's `injectRequired`.
pub fn injection_required(template: &InjectionTemplate, pod: PodFacts<'_>) -> Decision {
    if pod.host_network {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    if IGNORED_NAMESPACES.contains(&pod.namespace) {
        return Decision::Skip(SkipReason::IgnoredNamespace(pod.namespace.to_string()));
    }
    // The label is the current API; it wins over the deprecated annotation of the same name.
    let explicit = pod
        .labels
        .get(annotations::LABEL_INJECT)
        .or_else(|| pod.annotations.get(annotations::INJECT))
        .map(String::as_str)
        .filter(|v| !v.is_empty());
    let explicit = match explicit {
        None => None,
        Some(v) => match parse_bool(v) {
            Some(b) => Some(b),
            None => {
                tracing::warn!(
                    value = v,
                    "invalid {} value; using the default policy",
                    annotations::INJECT
                );
                None
            }
        },
    };
    match explicit {
        Some(true) => return Decision::Inject,
        Some(false) => return Decision::Skip(SkipReason::PodOptOut),
        None => {}
    }
    if template
        .never_inject_selector
        .iter()
        .any(|s| selector_matches(s, pod.labels))
    {
        return Decision::Skip(SkipReason::NeverInjectSelector);
    }
    if template
        .always_inject_selector
        .iter()
        .any(|s| selector_matches(s, pod.labels))
    {
        return Decision::Inject;
    }
    match template.policy {
        InjectionPolicy::Enabled => Decision::Inject,
        InjectionPolicy::Disabled => Decision::Skip(SkipReason::PolicyDisabled),
    }
}

/// Kubernetes label-selector semantics; an empty selector matches nothing here, as in Istio's injector.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let match_labels = selector.match_labels.as_ref();
    let exprs = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(|m| m.is_empty()) && exprs.is_empty() {
        return false;
    }
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = exprs.iter().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let current = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => current.is_some_and(|v| values.contains(v)),
            "NotIn" => current.is_none_or(|v| !values.contains(v)),
            "Exists" => current.is_some(),
            "DoesNotExist" => current.is_none(),
            // An unknown operator cannot match (the API server would have refused it).
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn facts<'a>(l: &'a Labels, a: &'a Labels) -> PodFacts<'a> {
        PodFacts {
            namespace: "default",
            labels: l,
            annotations: a,
            host_network: false,
        }
    }

    #[test]
    fn label_beats_annotation_and_bad_values_fall_back() {
        let t = InjectionTemplate::builtin().unwrap();
        let l = labels(&[("sidecar.istio.io/inject", "true")]);
        let a = labels(&[("sidecar.istio.io/inject", "false")]);
        assert_eq!(injection_required(&t, facts(&l, &a)), Decision::Inject);
        let l = labels(&[("sidecar.istio.io/inject", "false")]);
        let a = labels(&[("sidecar.istio.io/inject", "true")]);
        assert_eq!(
            injection_required(&t, facts(&l, &a)),
            Decision::Skip(SkipReason::PodOptOut)
        );
        let l = labels(&[("sidecar.istio.io/inject", "maybe")]);
        let none = Labels::new();
        assert_eq!(injection_required(&t, facts(&l, &none)), Decision::Inject);
        let mut disabled = t.clone();
        disabled.policy = InjectionPolicy::Disabled;
        assert_eq!(
            injection_required(&disabled, facts(&l, &none)),
            Decision::Skip(SkipReason::PolicyDisabled)
        );
    }

    #[test]
    fn selectors_never_then_always() {
        let mut t = InjectionTemplate::builtin().unwrap();
        t.policy = InjectionPolicy::Disabled;
        t.always_inject_selector = vec![LabelSelector {
            match_labels: Some(labels(&[("app", "a")])),
            ..Default::default()
        }];
        t.never_inject_selector = vec![LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["db".into()]),
            }]),
            ..Default::default()
        }];
        let none = Labels::new();
        let l = labels(&[("app", "a")]);
        assert_eq!(injection_required(&t, facts(&l, &none)), Decision::Inject);
        let l = labels(&[("app", "a"), ("tier", "db")]);
        assert_eq!(
            injection_required(&t, facts(&l, &none)),
            Decision::Skip(SkipReason::NeverInjectSelector)
        );
        // Explicit pod choice wins over selectors.
        let l = labels(&[
            ("app", "a"),
            ("tier", "db"),
            ("sidecar.istio.io/inject", "true"),
        ]);
        assert_eq!(injection_required(&t, facts(&l, &none)), Decision::Inject);
    }

    #[test]
    fn host_network_and_system_namespaces_never() {
        let t = InjectionTemplate::builtin().unwrap();
        let l = labels(&[("sidecar.istio.io/inject", "true")]);
        let none = Labels::new();
        let mut f = facts(&l, &none);
        f.host_network = true;
        assert_eq!(
            injection_required(&t, f),
            Decision::Skip(SkipReason::HostNetwork)
        );
        let mut f = facts(&l, &none);
        f.namespace = "kube-system";
        assert!(matches!(
            injection_required(&t, f),
            Decision::Skip(SkipReason::IgnoredNamespace(_))
        ));
    }

    #[test]
    fn namespace_selection_table() {
        let t = InjectionTemplate::builtin().unwrap();
        let none = Labels::new();
        let enabled = labels(&[("istio-injection", "enabled")]);
        let disabled = labels(&[("istio-injection", "disabled")]);
        let rev = labels(&[("istio.io/rev", "default")]);
        let both = labels(&[("istio-injection", "disabled"), ("istio.io/rev", "default")]);
        let pod_true = labels(&[("sidecar.istio.io/inject", "true")]);
        let pod_false = labels(&[("sidecar.istio.io/inject", "false")]);
        let pod_rev = labels(&[("istio.io/rev", "default")]);
        assert!(webhook_selects(&t, "a", &enabled, &none));
        assert!(!webhook_selects(&t, "a", &enabled, &pod_false));
        assert!(!webhook_selects(&t, "a", &disabled, &pod_true));
        assert!(webhook_selects(&t, "a", &rev, &none));
        // The legacy label wins over the namespace revision label.
        assert!(!webhook_selects(&t, "a", &both, &none));
        assert!(!webhook_selects(&t, "a", &none, &none));
        assert!(webhook_selects(&t, "a", &none, &pod_true));
        assert!(webhook_selects(&t, "a", &none, &pod_rev));
        // A pod annotation alone is invisible to the selectors.
        let mut by_default = t.clone();
        by_default.enable_namespaces_by_default = true;
        assert!(webhook_selects(&by_default, "a", &none, &none));
        assert!(!webhook_selects(&by_default, "kube-system", &none, &none));
    }

    #[test]
    fn selector_operators() {
        let l = labels(&[("a", "1")]);
        let req = |op: &str, v: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: op.into(),
                values: Some(v.iter().map(|s| s.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&req("In", &["1"]), &l));
        assert!(!selector_matches(&req("NotIn", &["1"]), &l));
        assert!(selector_matches(&req("Exists", &[]), &l));
        assert!(!selector_matches(&req("DoesNotExist", &[]), &l));
        assert!(!selector_matches(&LabelSelector::default(), &l));
    }
}
