//! Rendering: a pure function from a `MeshInstall` (resolved against its profile) to every Kubernetes object
//! of the installation, in apply order. Certificates come in as input so that the output is deterministic.
//!
//! Profiles (Istio's meaning): `default` = control plane + ingress gateway; `demo` = both gateways and
//! access logs on `/dev/stdout`; `minimal` = control plane only. Explicit `components.*.enabled` wins.

use std::collections::BTreeMap;

use halyard_crds::install::{GatewayComponent, InjectionPolicy, MeshInstall, Profile, ServiceType};
use halyard_crds::security::MutualTlsMode;
use halyard_webhook::InjectionTemplate;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::ca::ServingCert;
use super::{
    ANNOTATION_ALWAYS_REJECT, Error, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_OWNER, LABEL_REV,
    MANAGED_BY,
};

/// Operator-wide settings that are not part of a MeshInstall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    /// Image registry and repository prefix (`<hub>/halyard-webhook:<version>`).
    pub hub: String,
    /// Version installed when `spec.version` is unset.
    pub operator_version: String,
    /// Where proxies reach the discovery server (`host:port`).
    pub discovery_address: String,
    /// Out-of-cluster mode: the webhook already runs at this URL (`https://127.0.0.1:15017`); it is not
    /// deployed and the webhook configurations point at `<url>/inject` and `<url>/validate`.
    pub webhook_url: Option<String>,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            hub: "ghcr.io/halyard-mesh".to_string(),
            operator_version: env!("CARGO_PKG_VERSION").to_string(),
            discovery_address: "halyard-operator.halyard-system.svc:15010".to_string(),
            webhook_url: None,
        }
    }
}

/// Everything rendering depends on.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    pub install: &'a MeshInstall,
    pub settings: &'a RenderSettings,
    /// The webhook's serving certificate and the CA bundle its clients trust.
    pub serving: &'a ServingCert,
    /// Whether the validating webhook has proven it denies bad objects (`failurePolicy: Fail`), else `Ignore`.
    pub validation_fail_closed: bool,
    /// Whether the cluster runs native sidecars ([`super::cluster::detect_native_sidecars`]); used when
    /// `spec.injection.nativeSidecar` is `auto`.
    pub native_sidecars_supported: bool,
}

/// Names and labels derived from a MeshInstall, shared by rendering, status and cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The MeshInstall's name.
    pub owner: String,
    /// Control-plane namespace.
    pub namespace: String,
    /// `""` for the default revision, else `-<rev>`.
    pub suffix: String,
    /// Value of `istio.io/rev`: the revision or `default`.
    pub revision: String,
    pub version: String,
    pub ingress: bool,
    pub egress: bool,
}

impl Layout {
    /// Resolves a MeshInstall against its profile and checks the fields names are made of.
    pub fn of(mi: &MeshInstall, settings: &RenderSettings) -> Result<Layout, Error> {
        let owner = mi.metadata.name.clone().ok_or(Error::Unnamed)?;
        let bad = |field: &str, why: String| Error::InvalidSpec {
            name: owner.clone(),
            field: field.to_string(),
            why,
        };
        let spec = &mi.spec;
        check_dns_label(&spec.namespace, 63).map_err(|w| bad("namespace", w))?;
        let (suffix, revision) = match spec.revision.as_deref() {
            None | Some("") | Some("default") => (String::new(), "default".to_string()),
            Some(r) => {
                check_dns_label(r, 40).map_err(|w| bad("revision", w))?;
                (format!("-{r}"), r.to_string())
            }
        };
        let version = spec
            .version
            .clone()
            .unwrap_or_else(|| settings.operator_version.clone());
        super::upgrade::Version::parse(&version).map_err(|w| bad("version", w))?;
        let ingress = spec
            .components
            .ingress_gateway
            .enabled
            .unwrap_or(spec.profile != Profile::Minimal);
        let egress = spec
            .components
            .egress_gateway
            .enabled
            .unwrap_or(spec.profile == Profile::Demo);
        Ok(Layout {
            owner,
            namespace: spec.namespace.clone(),
            suffix,
            revision,
            version,
            ingress,
            egress,
        })
    }

    pub fn webhook_name(&self) -> String {
        format!("halyard-webhook{}", self.suffix)
    }
    pub fn webhook_secret(&self) -> String {
        format!("halyard-webhook-certs{}", self.suffix)
    }
    pub fn mesh_config_map(&self) -> String {
        format!("istio{}", self.suffix)
    }
    pub fn injector_config_map(&self) -> String {
        format!("istio-sidecar-injector{}", self.suffix)
    }
    pub fn ingress_name(&self) -> String {
        format!("istio-ingressgateway{}", self.suffix)
    }
    pub fn egress_name(&self) -> String {
        format!("istio-egressgateway{}", self.suffix)
    }
    /// Istio's name of the MutatingWebhookConfiguration.
    pub fn mutating_webhook_name(&self) -> String {
        if self.namespace == "istio-system" {
            format!("istio-sidecar-injector{}", self.suffix)
        } else {
            format!("istio-sidecar-injector{}-{}", self.suffix, self.namespace)
        }
    }
    /// Istio's name of the ValidatingWebhookConfiguration.
    pub fn validating_webhook_name(&self) -> String {
        if self.suffix.is_empty() {
            "istiod-default-validator".to_string()
        } else {
            format!("istio-validator{}-{}", self.suffix, self.namespace)
        }
    }
    /// Name of the validating webhook inside it, which is what `kubectl apply` errors quote.
    pub fn validating_webhook_entry(&self) -> &'static str {
        if self.suffix.is_empty() {
            "validation.istio.io"
        } else {
            "rev.validation.istio.io"
        }
    }

    fn labels(&self, component: &str) -> Value {
        json!({
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_OWNER: self.owner,
            LABEL_COMPONENT: component,
            LABEL_REV: self.revision,
            "app.kubernetes.io/version": self.version,
        })
    }
}

/// The label selector of everything a MeshInstall owns.
pub fn owner_selector(owner: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_OWNER}={owner}")
}

/// DNS names or IP addresses the webhook's serving certificate must cover.
pub fn webhook_hosts(layout: &Layout, settings: &RenderSettings) -> Vec<String> {
    match &settings.webhook_url {
        Some(url) => vec![url_host(url)],
        None => vec![
            format!("{}.{}.svc", layout.webhook_name(), layout.namespace),
            format!(
                "{}.{}.svc.cluster.local",
                layout.webhook_name(),
                layout.namespace
            ),
        ],
    }
}

/// The host part of a URL (`https://[::1]:15017/x` → `::1`).
pub fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority.split(':').next().unwrap_or(authority).to_string()
}

fn check_dns_label(s: &str, max: usize) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{s}\" is not a DNS label (lower-case letters, digits and '-', at most {max} characters, \
             starting and ending with a letter or digit)"
        ))
    }
}

/// 64-bit FNV-1a, stable across Rust releases (used for rollout annotations).
fn fnv1a(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

fn image(settings: &RenderSettings, name: &str, version: &str) -> String {
    format!(
        "{}/{}:{}",
        settings.hub.trim_end_matches('/'),
        name,
        version
    )
}

fn to_value<T: serde::Serialize>(what: &str, v: &T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::Render {
        what: what.to_string(),
        why: e.to_string(),
    })
}

/// Renders the whole installation, in apply order: namespace, CRDs, then everything that needs them.
pub fn render(input: &RenderInput<'_>) -> Result<Vec<Value>, Error> {
    let mi = input.install;
    let settings = input.settings;
    let l = Layout::of(mi, settings)?;
    let ns = l.namespace.as_str();
    let mut out = Vec::new();

    out.push(json!({
        "apiVersion": "v1", "kind": "Namespace",
        // Shared by every revision installed here, so it carries no owner or revision label (two
        // MeshInstalls would otherwise flip them on each pass), and it is never pruned.
        "metadata": {"name": ns, "labels": {LABEL_MANAGED_BY: MANAGED_BY, "istio-injection": "disabled"}},
    }));

    for crd in halyard_crds::crd::all_crds().map_err(|e| Error::Render {
        what: "Istio CRDs".to_string(),
        why: e.to_string(),
    })? {
        // MeshInstall's own CRD is installed with the operator (operator/deploy), not by a MeshInstall.
        if crd.spec.group == halyard_crds::install::GROUP {
            continue;
        }
        let mut v = to_value("CRD", &crd)?;
        v["apiVersion"] = json!("apiextensions.k8s.io/v1");
        v["kind"] = json!("CustomResourceDefinition");
        let labels = v["metadata"]["labels"].take();
        v["metadata"]["labels"] = merge(
            if labels.is_object() {
                labels
            } else {
                json!({})
            },
            json!({LABEL_MANAGED_BY: MANAGED_BY}),
        );
        out.push(v);
    }

    let mesh = mesh_config(mi, &l, settings)?;
    let template = injection_template(mi, &l, settings, input.native_sidecars_supported)?;
    let external = settings.webhook_url.is_some();

    // ServiceAccounts and least-privilege RBAC. The webhook reads its config from mounted files and needs
    // no API access (its token is not even mounted); gateways read TLS Secrets of their own namespace
    // (Gateway `credentialName`).
    if !external {
        out.push(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": l.webhook_name(), "namespace": ns, "labels": l.labels("Webhook")},
            "automountServiceAccountToken": false,
        }));
    }
    for (enabled, name, component) in gateways(&l) {
        if !enabled {
            continue;
        }
        let sa = format!("{name}-service-account");
        let labels = l.labels(component);
        out.push(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": ns, "labels": labels},
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": format!("{name}-sds"), "namespace": ns, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}],
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{name}-sds"), "namespace": ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{name}-sds")},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }));
    }

    out.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": l.mesh_config_map(), "namespace": ns, "labels": l.labels("Pilot")},
        "data": {"mesh": mesh},
    }));
    out.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": l.injector_config_map(), "namespace": ns, "labels": l.labels("Pilot")},
        "data": {"config": template},
    }));
    // `istio-ca-root-cert` (the root, mounted by gateways and sidecars) is not rendered here: the root-cert
    // controller publishes it into every namespace, this one included (`super::root_cert`).

    if mi.spec.mesh_config.default_mtls_mode != MutualTlsMode::Permissive {
        // Istio's way of a mesh-wide mTLS mode: a PeerAuthentication named `default` in the root namespace.
        out.push(json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ns, "labels": l.labels("Pilot")},
            "spec": {"mtls": {"mode": to_value("mTLS mode", &mi.spec.mesh_config.default_mtls_mode)?}},
        }));
    }

    // The serving certificate is stored in-cluster in both modes: renewal reads it back, and an
    // out-of-cluster webhook can be given the same files.
    out.push(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": l.webhook_secret(), "namespace": ns, "labels": l.labels("Webhook")},
        "data": {
            "tls.crt": to_base64(input.serving.cert_chain_pem.as_bytes()),
            "tls.key": to_base64(input.serving.key_pem.as_bytes()),
            "ca.crt": to_base64(input.serving.ca_bundle_pem.as_bytes()),
        },
    }));
    if !external {
        out.extend(webhook_workload(
            mi,
            &l,
            settings,
            input.serving,
            &mesh,
            &template,
        )?);
    }
    for (enabled, name, component) in gateways(&l) {
        if enabled {
            let spec = if component == "IngressGateways" {
                &mi.spec.components.ingress_gateway
            } else {
                &mi.spec.components.egress_gateway
            };
            out.extend(gateway(
                &l,
                settings,
                spec,
                &name,
                component,
                &mi.spec.mesh_config.trust_domain,
            )?);
        }
    }

    out.push(mutating_webhook(&l, settings, &input.serving.ca_bundle_pem));
    out.push(validating_webhook(
        &l,
        settings,
        &input.serving.ca_bundle_pem,
        input.validation_fail_closed,
    ));
    Ok(out)
}

fn gateways(l: &Layout) -> [(bool, String, &'static str); 2] {
    [
        (l.ingress, l.ingress_name(), "IngressGateways"),
        (l.egress, l.egress_name(), "EgressGateways"),
    ]
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Istio's mesh config (ConfigMap `istio`, key `mesh`) as YAML text.
fn mesh_config(mi: &MeshInstall, l: &Layout, settings: &RenderSettings) -> Result<String, Error> {
    let mc = &mi.spec.mesh_config;
    let access_log = mc.access_log_file.clone().unwrap_or_else(|| {
        if mi.spec.profile == Profile::Demo {
            "/dev/stdout".to_string()
        } else {
            String::new()
        }
    });
    let mut default_config = json!({
        "discoveryAddress": settings.discovery_address,
        "drainDuration": mc.default_config.drain_duration,
        "holdApplicationUntilProxyStarts": mc.default_config.hold_application_until_proxy_starts,
    });
    if let Some(c) = mc.default_config.concurrency {
        default_config["concurrency"] = json!(c);
    }
    if !mc.default_config.proxy_metadata.is_empty() {
        default_config["proxyMetadata"] =
            to_value("proxyMetadata", &mc.default_config.proxy_metadata)?;
    }
    let v = json!({
        "accessLogFile": access_log,
        "accessLogEncoding": to_value("accessLogEncoding", &mc.access_log_encoding)?,
        "defaultConfig": default_config,
        "enablePrometheusMerge": true,
        "outboundTrafficPolicy": to_value("outboundTrafficPolicy", &mc.outbound_traffic_policy)?,
        "rootNamespace": l.namespace,
        "trustDomain": mc.trust_domain,
    });
    serde_yaml::to_string(&v).map_err(|e| Error::Render {
        what: "mesh config".to_string(),
        why: e.to_string(),
    })
}

/// The injection template the webhook reads (`halyard_webhook::InjectionTemplate`), with this
/// installation's images, revision, policy and addresses.
fn injection_template(
    mi: &MeshInstall,
    l: &Layout,
    settings: &RenderSettings,
    native_sidecars_supported: bool,
) -> Result<String, Error> {
    let err = |e: halyard_webhook::Error| Error::Render {
        what: "injection template".to_string(),
        why: e.to_string(),
    };
    let mut t = InjectionTemplate::builtin().map_err(err)?;
    let spec = &mi.spec;
    t.revision = l.revision.clone();
    t.policy = match spec.injection.policy {
        InjectionPolicy::Enabled => halyard_webhook::template::InjectionPolicy::Enabled,
        InjectionPolicy::Disabled => halyard_webhook::template::InjectionPolicy::Disabled,
    };
    t.never_inject_selector = spec.injection.never_inject_selector.clone();
    t.always_inject_selector = spec.injection.always_inject_selector.clone();
    // The template has no "auto": the operator resolves it against what the cluster supports (Istio's rule:
    // Kubernetes and every kubelet at 1.33 or later); explicit true/false win.
    t.native_sidecars =
        super::cluster::native_sidecars(spec.injection.native_sidecar, native_sidecars_supported);
    t.hold_application_until_proxy_starts = spec
        .mesh_config
        .default_config
        .hold_application_until_proxy_starts;
    t.discovery_address = settings.discovery_address.clone();
    t.ca_root_config_map = super::root_cert::CONFIG_MAP.to_string();
    t.proxy.image = spec
        .proxy
        .image
        .clone()
        .unwrap_or_else(|| image(settings, "halyard-proxy", &l.version));
    t.init.image = image(settings, "halyard-init", &l.version);
    t.proxy.log_level = to_value("proxy.logLevel", &spec.proxy.log_level)?
        .as_str()
        .unwrap_or("warning")
        .to_string();
    if let Some(r) = &spec.proxy.resources {
        t.proxy.resources = to_value("proxy.resources", r)?;
    }
    // Round-trip through the webhook's own parser so that the operator never writes a template the webhook
    // refuses.
    let text = t.to_yaml().map_err(err)?;
    InjectionTemplate::from_yaml(&text, "rendered template").map_err(err)?;
    Ok(text)
}

fn security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": 1337,
        "runAsGroup": 1337,
    })
}

fn pdb(l: &Layout, name: &str, component: &str, app: &Value, replicas: i32) -> Value {
    // With one replica, `minAvailable: 1` would block every node drain; allow one disruption instead.
    let budget = if replicas > 1 {
        json!({"minAvailable": 1})
    } else {
        json!({"maxUnavailable": 1})
    };
    merge(
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": l.namespace, "labels": l.labels(component)},
        }),
        json!({"spec": merge(budget, json!({"selector": {"matchLabels": app}}))}),
    )
}

fn webhook_workload(
    mi: &MeshInstall,
    l: &Layout,
    settings: &RenderSettings,
    serving: &ServingCert,
    mesh: &str,
    template: &str,
) -> Result<Vec<Value>, Error> {
    let name = l.webhook_name();
    let ns = &l.namespace;
    let labels = l.labels("Webhook");
    let app = json!({"app": name, LABEL_REV: l.revision});
    let spec = &mi.spec.components.webhook;
    let resources = match &spec.resources {
        Some(r) => to_value("components.webhook.resources", r)?,
        None => {
            json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
        }
    };
    // Pods restart when what they read from files changes (config, template, certificate).
    let hash = fnv1a(&[mesh, template, &serving.cert_chain_pem, &serving.key_pem]);
    Ok(vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": spec.replicas,
                "selector": {"matchLabels": app},
                "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {
                        "labels": merge(app.clone(), json!({"sidecar.istio.io/inject": "false", "app.kubernetes.io/version": l.version})),
                        "annotations": {"halyard.dev/config-hash": hash},
                    },
                    "spec": {
                        "serviceAccountName": name,
                        "automountServiceAccountToken": false,
                        "containers": [{
                            "name": "webhook",
                            "image": image(settings, "halyard-webhook", &l.version),
                            "args": [
                                "--addr", "0.0.0.0",
                                "--port", "15017",
                                "--tls-cert", "/etc/halyard/certs/tls.crt",
                                "--tls-key", "/etc/halyard/certs/tls.key",
                                "--injection-template", "/etc/istio/inject/config",
                                "--mesh-config", "/etc/istio/config/mesh",
                            ],
                            "ports": [{"name": "https-webhook", "containerPort": 15017, "protocol": "TCP"}],
                            "readinessProbe": {"tcpSocket": {"port": 15017}, "periodSeconds": 5},
                            "livenessProbe": {"tcpSocket": {"port": 15017}, "periodSeconds": 10, "failureThreshold": 6},
                            "resources": resources,
                            "securityContext": security_context(),
                            "volumeMounts": [
                                {"name": "certs", "mountPath": "/etc/halyard/certs", "readOnly": true},
                                {"name": "inject", "mountPath": "/etc/istio/inject", "readOnly": true},
                                {"name": "config", "mountPath": "/etc/istio/config", "readOnly": true},
                            ],
                        }],
                        "volumes": [
                            {"name": "certs", "secret": {"secretName": l.webhook_secret()}},
                            {"name": "inject", "configMap": {"name": l.injector_config_map()}},
                            {"name": "config", "configMap": {"name": l.mesh_config_map()}},
                        ],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "selector": app,
                "ports": [{"name": "https-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"}],
            },
        }),
        pdb(l, &name, "Webhook", &app, spec.replicas),
    ])
}

/// The URL a proxy's `--discovery-address` takes (`http://host:port`) from Istio's `host:port` form.
pub fn discovery_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// `k=v,k=v` (halyard-proxy's `--labels`) of a JSON object of labels, in key order.
fn label_list(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            pairs.sort();
            pairs.join(",")
        })
        .unwrap_or_default()
}

fn gateway(
    l: &Layout,
    settings: &RenderSettings,
    spec: &GatewayComponent,
    name: &str,
    component: &str,
    trust_domain: &str,
) -> Result<Vec<Value>, Error> {
    let ingress = component == "IngressGateways";
    let istio = if ingress {
        "ingressgateway"
    } else {
        "egressgateway"
    };
    let ns = &l.namespace;
    let labels = l.labels(component);
    let app = json!({"app": name, "istio": istio, LABEL_REV: l.revision});
    let mut ports: Vec<(String, u16, u16, Option<u16>)> = spec
        .service
        .ports
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.port,
                p.target_port.unwrap_or(p.port),
                p.node_port,
            )
        })
        .collect();
    if ports.is_empty() {
        ports = vec![
            ("status-port".into(), 15021, 15021, None),
            ("http2".into(), 80, 8080, None),
            ("https".into(), 443, 8443, None),
        ];
    }
    let service_type = spec.service.type_.unwrap_or(if ingress {
        ServiceType::LoadBalancer
    } else {
        ServiceType::ClusterIP
    });
    let svc_ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, t, np)| {
            let mut v = json!({"name": n, "port": p, "targetPort": t, "protocol": "TCP"});
            if let Some(np) = np {
                v["nodePort"] = json!(np);
            }
            v
        })
        .collect();
    let mut container_ports: Vec<Value> = ports
        .iter()
        .map(|(_, _, t, _)| json!({"containerPort": t, "protocol": "TCP"}))
        .collect();
    container_ports
        .push(json!({"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}));
    container_ports.dedup();
    let resources = match &spec.resources {
        Some(r) => to_value(&format!("components.{component}.resources"), r)?,
        None => {
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}})
        }
    };
    Ok(vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": spec.replicas,
                "selector": {"matchLabels": app},
                "template": {
                    "metadata": {
                        "labels": merge(app.clone(), json!({"sidecar.istio.io/inject": "false", "app.kubernetes.io/version": l.version})),
                        "annotations": {"prometheus.io/port": "15090", "prometheus.io/scrape": "true", "prometheus.io/path": "/stats/prometheus"},
                    },
                    "spec": {
                        "serviceAccountName": format!("{name}-service-account"),
                        "containers": [{
                            "name": "istio-proxy",
                            "image": image(settings, "halyard-proxy", &l.version),
                            // halyard-proxy's flags (`halyard_proxy::cli::Args`); a test parses them.
                            "args": [
                                "--discovery-address", discovery_url(&settings.discovery_address),
                                "--proxy-type", "router",
                                "--node-id", "$(POD_NAME).$(POD_NAMESPACE)",
                                "--labels", label_list(&app),
                                "--workload", name,
                                "--trust-domain", trust_domain,
                            ],
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "INSTANCE_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                                {"name": "SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                                {"name": "CLUSTER_ID", "value": "Kubernetes"},
                            ],
                            "ports": container_ports,
                            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 2, "failureThreshold": 30},
                            "resources": resources,
                            "securityContext": security_context(),
                            "volumeMounts": [{"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio", "readOnly": true}],
                        }],
                        "volumes": [{"name": "istiod-ca-cert", "configMap": {"name": super::root_cert::CONFIG_MAP}}],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": merge(labels.clone(), app.clone())},
            "spec": {"type": to_value("service type", &service_type)?, "selector": app, "ports": svc_ports},
        }),
        pdb(l, name, component, &app, spec.replicas),
    ])
}

fn client_config(l: &Layout, settings: &RenderSettings, path: &str, ca_bundle: &str) -> Value {
    let ca = to_base64(ca_bundle.as_bytes());
    match &settings.webhook_url {
        Some(url) => json!({"url": format!("{}{path}", url.trim_end_matches('/')), "caBundle": ca}),
        None => json!({
            "service": {"name": l.webhook_name(), "namespace": l.namespace, "path": path, "port": 443},
            "caBundle": ca,
        }),
    }
}

/// Namespaces never injected: the kube-system family and the control plane's own namespace.
fn excluded_namespaces(l: &Layout) -> Value {
    let mut values: Vec<&str> = halyard_webhook::decision::IGNORED_NAMESPACES.to_vec();
    values.push(&l.namespace);
    json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": values})
}

/// The MutatingWebhookConfiguration, with Istio's selectors: for every revision `rev.namespace.` (namespace
/// `istio.io/rev=<rev>` and no `istio-injection` label, so the legacy label wins) and `rev.object.`
/// (unlabelled namespace, pod `istio.io/rev=<rev>`); for the default revision also `namespace.`
/// (`istio-injection=enabled`) and `object.` (unlabelled namespace, pod label `sidecar.istio.io/inject=true`
/// without `istio.io/rev`). A pod label `sidecar.istio.io/inject=false` opts out everywhere.
fn mutating_webhook(l: &Layout, settings: &RenderSettings, ca_bundle: &str) -> Value {
    let not_false =
        json!({"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]});
    let rev = json!({"key": LABEL_REV, "operator": "In", "values": [l.revision]});
    let no = |key: &str| json!({"key": key, "operator": "DoesNotExist"});
    let mut selectors = vec![
        (
            "rev.namespace.",
            json!([rev, no("istio-injection"), excluded_namespaces(l)]),
            json!([not_false]),
        ),
        (
            "rev.object.",
            json!([no(LABEL_REV), no("istio-injection"), excluded_namespaces(l)]),
            json!([not_false, rev]),
        ),
    ];
    if l.suffix.is_empty() {
        selectors.push((
            "namespace.",
            json!([{"key": "istio-injection", "operator": "In", "values": ["enabled"]}, excluded_namespaces(l)]),
            json!([not_false]),
        ));
        selectors.push((
            "object.",
            json!([no("istio-injection"), no(LABEL_REV), excluded_namespaces(l)]),
            json!([{"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]}, no(LABEL_REV)]),
        ));
    }
    let webhooks: Vec<Value> = selectors
        .into_iter()
        .map(|(prefix, ns_sel, obj_sel)| {
            json!({
                "name": format!("{prefix}sidecar-injector.istio.io"),
                "clientConfig": client_config(l, settings, "/inject", ca_bundle),
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "*"}],
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "reinvocationPolicy": "Never",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
                "namespaceSelector": {"matchExpressions": ns_sel},
                "objectSelector": {"matchExpressions": obj_sel},
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": l.mutating_webhook_name(), "labels": merge(l.labels("Webhook"), json!({"app": "sidecar-injector"}))},
        "webhooks": webhooks,
    })
}

/// The ValidatingWebhookConfiguration for every Istio kind. Installed `Ignore` and switched to `Fail` once
/// the webhook has denied a dry-run object annotated [`ANNOTATION_ALWAYS_REJECT`].
fn validating_webhook(
    l: &Layout,
    settings: &RenderSettings,
    ca_bundle: &str,
    fail_closed: bool,
) -> Value {
    let mut webhook = json!({
        "name": l.validating_webhook_entry(),
        "clientConfig": client_config(l, settings, "/validate", ca_bundle),
        "rules": [{
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"],
            "apiVersions": ["*"],
            "resources": ["*"],
            "scope": "*",
        }],
        "failurePolicy": if fail_closed { "Fail" } else { "Ignore" },
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 10,
    });
    if !l.suffix.is_empty() {
        // A revision validates only the objects of namespaces (or objects) that selected it.
        webhook["objectSelector"] = json!({"matchExpressions": [{"key": LABEL_REV, "operator": "In", "values": [l.revision]}]});
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": l.validating_webhook_name(), "labels": merge(l.labels("Webhook"), json!({"app": "istiod"}))},
        "webhooks": [webhook],
    })
}

/// A Gateway that the validating webhook must deny (dry-run only): proves validation works before the
/// webhook is made fail-closed.
pub fn always_reject_probe(l: &Layout) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {
            "name": "halyard-validation-probe", "namespace": l.namespace,
            "annotations": {ANNOTATION_ALWAYS_REJECT: "true"},
            "labels": {LABEL_REV: l.revision},
        },
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
    })
}

fn to_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `namespace/name` (or `name`) of a rendered object, and its `apiVersion` and `kind`.
pub fn identity(obj: &Value) -> (String, String, Option<String>, String) {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_string);
    (
        s("/apiVersion").unwrap_or_default(),
        s("/kind").unwrap_or_default(),
        s("/metadata/namespace"),
        s("/metadata/name").unwrap_or_default(),
    )
}

/// Renders to a multi-document YAML text (goldens, `--dry-run`).
pub fn to_yaml(objects: &[Value]) -> Result<String, Error> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).map_err(|e| Error::Render {
            what: "YAML".to_string(),
            why: e.to_string(),
        })?);
    }
    Ok(out)
}

/// Labels of a rendered object (for tests and pruning).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The MeshInstall's name for messages.
pub fn display_name(mi: &MeshInstall) -> String {
    mi.name_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(to_base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn url_host_handles_ports_paths_and_ipv6() {
        assert_eq!(url_host("https://127.0.0.1:15017"), "127.0.0.1");
        assert_eq!(url_host("https://webhook.example:443/x"), "webhook.example");
        assert_eq!(url_host("https://[::1]:15017/inject"), "::1");
    }

    #[test]
    fn dns_labels_are_checked() {
        assert!(check_dns_label("canary-1", 40).is_ok());
        assert!(check_dns_label("Canary", 40).is_err());
        assert!(check_dns_label("-a", 40).is_err());
        assert!(check_dns_label(&"a".repeat(41), 40).is_err());
    }
}
