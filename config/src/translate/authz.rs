//! AuthorizationPolicies that apply to a workload: the root namespace's (mesh-wide) and the
//! workload namespace's, each either selector-less or with a selector matching the workload.

use halyard_crds::security::AuthorizationPolicyAction;

use super::Scope;
use crate::mesh::selector_matches;
use crate::resources::{
    AuthorizationCondition, AuthorizationOperation, AuthorizationPolicy, AuthorizationRule,
    AuthorizationSource, ProxyResources, authorization_policy,
};

pub(crate) fn policies(scope: &Scope<'_>, out: &mut ProxyResources) {
    let m = scope.model;
    let td = &m.mesh.trust_domain;
    for ap in &m.authorization_policies {
        let ns = ap.meta.namespace.as_str();
        if ns != scope.namespace && ns != m.mesh.root_namespace {
            continue;
        }
        // targetRef(s) bind policies to Gateway API objects, which halyard does not model.
        if ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty() {
            continue;
        }
        let applies = ap
            .spec
            .selector
            .as_ref()
            .is_none_or(|s| selector_matches(&s.match_labels, scope.labels));
        if !applies {
            continue;
        }
        let action = match ap.spec.action {
            Some(AuthorizationPolicyAction::Deny) => authorization_policy::Action::Deny,
            Some(AuthorizationPolicyAction::Audit) => authorization_policy::Action::Audit,
            Some(AuthorizationPolicyAction::Custom) => authorization_policy::Action::Custom,
            Some(AuthorizationPolicyAction::Allow) | None => authorization_policy::Action::Allow,
        };
        // `serviceAccounts: [ns/sa]` is shorthand for the principal `<td>/ns/<ns>/sa/<sa>`.
        let principal = |sa: &String| match sa.split_once('/') {
            Some((sa_ns, name)) => format!("{td}/ns/{sa_ns}/sa/{name}"),
            None => format!("{td}/ns/{ns}/sa/{sa}"),
        };
        let rules = ap
            .spec
            .rules
            .iter()
            .map(|r| AuthorizationRule {
                from: r
                    .from
                    .iter()
                    .filter_map(|f| f.source.as_ref())
                    .map(|s| AuthorizationSource {
                        principals: s
                            .principals
                            .iter()
                            .cloned()
                            .chain(s.service_accounts.iter().map(principal))
                            .collect(),
                        not_principals: s
                            .not_principals
                            .iter()
                            .cloned()
                            .chain(s.not_service_accounts.iter().map(principal))
                            .collect(),
                        request_principals: s.request_principals.clone(),
                        not_request_principals: s.not_request_principals.clone(),
                        namespaces: s.namespaces.clone(),
                        not_namespaces: s.not_namespaces.clone(),
                        ip_blocks: s.ip_blocks.clone(),
                        not_ip_blocks: s.not_ip_blocks.clone(),
                        remote_ip_blocks: s.remote_ip_blocks.clone(),
                        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
                    })
                    .collect(),
                to: r
                    .to
                    .iter()
                    .filter_map(|t| t.operation.as_ref())
                    .map(|o| AuthorizationOperation {
                        hosts: o.hosts.clone(),
                        not_hosts: o.not_hosts.clone(),
                        ports: o.ports.clone(),
                        not_ports: o.not_ports.clone(),
                        methods: o.methods.clone(),
                        not_methods: o.not_methods.clone(),
                        paths: o.paths.clone(),
                        not_paths: o.not_paths.clone(),
                    })
                    .collect(),
                when: r
                    .when
                    .iter()
                    .map(|c| AuthorizationCondition {
                        key: c.key.clone(),
                        values: c.values.clone(),
                        not_values: c.not_values.clone(),
                    })
                    .collect(),
            })
            .collect();
        out.authorization.push(AuthorizationPolicy {
            name: format!("{ns}/{}", ap.meta.name),
            action: action as i32,
            rules,
            provider: ap
                .spec
                .provider
                .as_ref()
                .and_then(|p| p.name.clone())
                .unwrap_or_default(),
            dry_run: ap.meta.dry_run,
            config: ap.meta.origin.clone(),
        });
    }
}
