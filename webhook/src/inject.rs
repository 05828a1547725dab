//! Sidecar injection as a pure function: pod JSON in, injected pod JSON (and the RFC 6902 patch between the
//! two) out. The admission server, `halyard kube-inject` and the operator all call [`Injector::inject`] or
//! [`Injector::patch`]; nothing here does I/O.
//!
//! What is added (names as in Istio, so `kubectl logs -c istio-proxy`, dashboards and scrape configs work):
//! the `istio-init` init container (runs `halyard-init` with istio-iptables' capture flags), the
//! `istio-proxy` container (runs `halyard-proxy`), their volumes, the `sidecar.istio.io/status` annotation
//! listing what was added, `istio.io/rev`, kubectl default-container annotations, merged Prometheus
//! annotations, and the `security.istio.io/tlsMode` / `service.istio.io/canonical-*` labels.
//!
//! Container order keeps every container networked:
//! * classic sidecar: `istio-init` runs last among init containers (users' init containers are not captured
//!   before any proxy exists) and `istio-proxy` is the last app container, or the first one with
//!   `holdApplicationUntilProxyStarts` (plus a `postStart` wait hook);
//! * native sidecar (`nativeSidecars` or `sidecar.istio.io/nativeSidecar`): `istio-init`, then `istio-proxy`
//!   with `restartPolicy: Always`, then users' init containers, which therefore have a working mesh.
//!
//! Jobs and CronJobs: with native sidecars the pod completes when its app containers exit. Without them the
//! proxy keeps the pod running until asked to stop: the Job's last command should end with
//! `curl -fsS -X POST http://127.0.0.1:15020/quitquitquit` (the proxy's status port), as with Istio.
//!
//! Re-injection is idempotent: when `sidecar.istio.io/status` is present, everything it lists is removed
//! first (original probes and Prometheus annotations recorded by the previous proxy are carried over).

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value, json};

use crate::annotations::{self as ann, InterceptionMode, Labels, parse_bool};
use crate::decision::{self, Decision, PodFacts, SkipReason};
use crate::error::Error;
use crate::mesh::{MeshConfig, ProxyConfig};
use crate::probes::{self, Probers};
use crate::template::InjectionTemplate;

pub const PROXY_CONTAINER: &str = "istio-proxy";
pub const INIT_CONTAINER: &str = "istio-init";
/// The proxy's Prometheus port and its readiness (`/healthz/ready`) port, fixed as in Istio.
pub const PROXY_PROMETHEUS_PORT: u16 = 15090;
pub const PROXY_HEALTH_PORT: u16 = 15021;
const PROMETHEUS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
/// Where the proxy serves the app's and its own metrics merged (on the status port).
const MERGED_METRICS_PATH: &str = "/stats/prometheus";
const VOLUMES: [&str; 8] = [
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
];

/// The workload a pod belongs to, for `ISTIO_META_WORKLOAD_NAME` / `ISTIO_META_OWNER`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadMeta {
    pub name: String,
    pub namespace: String,
    pub kind: String,
    pub api_version: String,
}

/// Where the pod lives. `namespace_labels: None` means the API server already applied the namespace
/// selectors (the admission path); offline callers that know the namespace can pass its labels.
#[derive(Debug, Clone, Default)]
pub struct PodContext<'a> {
    pub namespace: Option<&'a str>,
    pub namespace_labels: Option<&'a Labels>,
    pub workload: Option<WorkloadMeta>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Skipped(SkipReason),
    Injected(Value),
}

/// The `sidecar.istio.io/status` annotation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    #[serde(default)]
    pub init_containers: Option<Vec<String>>,
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<String>>,
    #[serde(default)]
    pub revision: String,
}

#[derive(Debug, Clone)]
pub struct Injector {
    pub template: InjectionTemplate,
    pub mesh: MeshConfig,
}

/// Per-pod settings after annotations are applied.
struct Settings {
    proxy_config: ProxyConfig,
    native: bool,
    hold: bool,
    mode: InterceptionMode,
    status_port: u16,
    rewrite_probes: bool,
}

impl Injector {
    pub fn new(template: InjectionTemplate, mesh: MeshConfig) -> Self {
        Injector { template, mesh }
    }

    /// The built-in template with the default mesh config: what `kube-inject` uses without flags.
    pub fn builtin() -> Result<Self, Error> {
        Ok(Self::new(
            InjectionTemplate::builtin()?,
            MeshConfig::default(),
        ))
    }

    pub fn decide(&self, pod: &Value, ctx: &PodContext<'_>) -> Result<Decision, Error> {
        let meta = pod.get("metadata");
        let labels = string_map(meta.and_then(|m| m.get("labels")), "metadata.labels")?;
        let annotations = string_map(
            meta.and_then(|m| m.get("annotations")),
            "metadata.annotations",
        )?;
        let namespace = namespace_of(pod, ctx);
        let host_network = pod
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let facts = PodFacts {
            namespace: &namespace,
            labels: &labels,
            annotations: &annotations,
            host_network,
        };
        Ok(decision::decide(
            &self.template,
            ctx.namespace_labels,
            facts,
        ))
    }

    /// The injected pod, or why it is skipped. Errors are admission failures (bad annotations, not a pod).
    pub fn inject(&self, pod: &Value, ctx: &PodContext<'_>) -> Result<Outcome, Error> {
        if let Decision::Skip(reason) = self.decide(pod, ctx)? {
            return Ok(Outcome::Skipped(reason));
        }
        let mut pod = pod.clone();
        let root = pod
            .as_object_mut()
            .ok_or_else(|| not_pod("the object is not a JSON object"))?;
        if !root.get("spec").is_some_and(Value::is_object) {
            return Err(not_pod("spec is missing or not an object"));
        }
        if !root.get("metadata").is_some_and(Value::is_object) {
            root.insert("metadata".into(), json!({}));
        }
        let annotations = string_map(pod.pointer("/metadata/annotations"), "metadata.annotations")?;
        ann::validate(&annotations)?;
        let settings = self.settings(&annotations)?;

        let previous = strip(&mut pod)?;
        let (proxy_override, init_override) = take_user_overrides(&mut pod);
        let annotations = string_map(pod.pointer("/metadata/annotations"), "metadata.annotations")?;
        let labels = string_map(pod.pointer("/metadata/labels"), "metadata.labels")?;
        let workload = ctx
            .workload
            .clone()
            .unwrap_or_else(|| workload_of(&pod, ctx));

        // Probes of app containers and of users' native sidecars.
        let mut probers = Probers::new();
        if settings.rewrite_probes {
            for list in ["containers", "initContainers"] {
                for c in containers_mut(&mut pod, list) {
                    let native_sidecar =
                        c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
                    if list == "containers" || native_sidecar {
                        probes::rewrite_container(
                            c,
                            settings.status_port,
                            &previous.probers,
                            &mut probers,
                        );
                    }
                }
            }
        }

        let app_names: Vec<String> = containers(&pod, "containers")
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        let Some(first_app) = app_names.first().cloned() else {
            return Err(not_pod("spec.containers is empty"));
        };

        let prometheus_env =
            self.merge_prometheus(&mut pod, &annotations, &previous, settings.status_port);
        let mut proxy = self.proxy_container(
            &pod,
            &settings,
            &annotations,
            &labels,
            &workload,
            &app_names,
        );
        let proxy_env = proxy.get_mut("env").and_then(Value::as_array_mut);
        if let Some(env) = proxy_env {
            if !probers.is_empty() {
                let text = serde_json::to_string(&probers).unwrap_or_default();
                env.push(json!({ "name": probes::APP_PROBERS_ENV, "value": text }));
            }
            if let Some(p) = prometheus_env {
                env.push(json!({ "name": PROMETHEUS_ENV, "value": p }));
            }
        }
        // A user-supplied sidecar is the user's: it is not listed in the status, so re-injection merges it
        // again instead of dropping it.
        let proxy_overridden = proxy_override.is_some();
        let init_overridden = init_override.is_some();
        if let Some(o) = proxy_override {
            merge_override(&mut proxy, o);
        }
        let mut init = (settings.mode != InterceptionMode::None)
            .then(|| self.init_container(&settings, &annotations));
        if let (Some(i), Some(o)) = (init.as_mut(), init_override) {
            merge_override(i, o);
        }

        // Order (see module docs).
        let mut status = SidecarStatus {
            revision: self.revision().to_string(),
            ..Default::default()
        };
        let mut init_names = Vec::new();
        let spec = pod
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| not_pod("spec is not an object"))?;
        let mut user_inits = take_list(spec, "initContainers");
        let mut apps = take_list(spec, "containers");
        if settings.native {
            let mut ours = Vec::new();
            if let Some(i) = init {
                if !init_overridden {
                    init_names.push(INIT_CONTAINER.to_string());
                }
                ours.push(i);
            }
            if !proxy_overridden {
                init_names.push(PROXY_CONTAINER.to_string());
            }
            ours.push(proxy);
            ours.append(&mut user_inits);
            put_list(spec, "initContainers", ours);
            put_list(spec, "containers", apps);
        } else {
            if let Some(i) = init {
                if !init_overridden {
                    init_names.push(INIT_CONTAINER.to_string());
                }
                user_inits.push(i);
            }
            if settings.hold {
                apps.insert(0, proxy);
            } else {
                apps.push(proxy);
            }
            status.containers = (!proxy_overridden).then(|| vec![PROXY_CONTAINER.to_string()]);
            put_list(spec, "initContainers", user_inits);
            put_list(spec, "containers", apps);
        }
        status.init_containers = (!init_names.is_empty()).then_some(init_names);

        let mut volumes = take_list(spec, "volumes");
        volumes.retain(|v| !VOLUMES.contains(&name_of(v)));
        volumes.extend(self.volumes());
        put_list(spec, "volumes", volumes);
        status.volumes = Some(VOLUMES.iter().map(|s| s.to_string()).collect());

        if !self.template.image_pull_secrets.is_empty() {
            let mut secrets = take_list(spec, "imagePullSecrets");
            let mut added = Vec::new();
            for s in &self.template.image_pull_secrets {
                if !secrets.iter().any(|x| name_of(x) == s) {
                    secrets.push(json!({ "name": s }));
                    added.push(s.clone());
                }
            }
            put_list(spec, "imagePullSecrets", secrets);
            status.image_pull_secrets = (!added.is_empty()).then_some(added);
        }

        // Metadata.
        let meta = pod
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| not_pod("metadata is not an object"))?;
        let anns = object_entry(meta, "annotations");
        anns.insert(ann::REV.into(), json!(self.revision()));
        for key in [ann::DEFAULT_LOGS_CONTAINER, ann::DEFAULT_CONTAINER] {
            anns.entry(key).or_insert_with(|| json!(first_app));
        }
        for (k, v) in &self.template.injected_annotations {
            anns.entry(k.clone()).or_insert_with(|| json!(v));
        }
        let status_text = serde_json::to_string(&status).unwrap_or_default();
        anns.insert(ann::STATUS.into(), json!(status_text));

        let canonical_name = labels
            .get(ann::LABEL_CANONICAL_NAME)
            .or_else(|| labels.get("app.kubernetes.io/name"))
            .or_else(|| labels.get("app"))
            .cloned()
            .unwrap_or_else(|| workload.name.clone());
        let canonical_revision = labels
            .get(ann::LABEL_CANONICAL_REVISION)
            .or_else(|| labels.get("app.kubernetes.io/version"))
            .or_else(|| labels.get("version"))
            .map_or("latest", String::as_str)
            .to_string();
        let lbls = object_entry(meta, "labels");
        lbls.entry(ann::LABEL_TLS_MODE)
            .or_insert_with(|| json!("istio"));
        lbls.insert(
            ann::LABEL_CANONICAL_NAME.into(),
            json!(canonical_label(&canonical_name)),
        );
        lbls.insert(
            ann::LABEL_CANONICAL_REVISION.into(),
            json!(canonical_revision),
        );
        sort_map(meta, "annotations");
        sort_map(meta, "labels");
        Ok(Outcome::Injected(pod))
    }

    /// The JSON patch the admission response carries: empty when the pod is skipped.
    pub fn patch(
        &self,
        pod: &Value,
        ctx: &PodContext<'_>,
    ) -> Result<(Outcome, json_patch::Patch), Error> {
        let outcome = self.inject(pod, ctx)?;
        let patch = match &outcome {
            Outcome::Injected(injected) => object_patch(pod, injected),
            Outcome::Skipped(_) => json_patch::Patch(Vec::new()),
        };
        Ok((outcome, patch))
    }

    fn revision(&self) -> &str {
        if self.template.revision.is_empty() {
            "default"
        } else {
            &self.template.revision
        }
    }

    fn settings(&self, annotations: &Labels) -> Result<Settings, Error> {
        let over = match annotations.get(ann::PROXY_CONFIG) {
            Some(text) => ProxyConfig::from_yaml(text).map_err(|why| Error::InvalidAnnotation {
                name: ann::PROXY_CONFIG.into(),
                value: text.clone(),
                why,
            })?,
            None => ProxyConfig::default(),
        };
        let mut proxy_config = self.mesh.default_config.merged_with(&over);
        if proxy_config.discovery_address.is_none() {
            proxy_config.discovery_address = Some(self.template.discovery_address.clone());
        }
        let native = annotations
            .get(ann::NATIVE_SIDECAR)
            .and_then(|v| parse_bool(v))
            .unwrap_or(self.template.native_sidecars);
        let mode_text = annotations
            .get(ann::INTERCEPTION_MODE)
            .cloned()
            .or_else(|| proxy_config.interception_mode.clone())
            .unwrap_or_else(|| self.template.capture.interception_mode.clone());
        let mode = InterceptionMode::parse(&mode_text).map_err(|why| Error::InvalidAnnotation {
            name: ann::PROXY_CONFIG.into(),
            value: mode_text.clone(),
            why,
        })?;
        let status_port = match annotations.get(ann::STATUS_PORT) {
            Some(v) => v.trim().parse::<u16>().unwrap_or(0),
            None => proxy_config
                .status_port
                .unwrap_or(self.template.proxy.status_port),
        };
        let hold = (proxy_config
            .hold_application_until_proxy_starts
            .unwrap_or(false)
            || self.template.hold_application_until_proxy_starts)
            && !native;
        let rewrite_probes = annotations
            .get(ann::REWRITE_PROBERS)
            .and_then(|v| parse_bool(v))
            .unwrap_or(self.template.rewrite_app_http_probe)
            && status_port != 0;
        Ok(Settings {
            proxy_config,
            native,
            hold,
            mode,
            status_port,
            rewrite_probes,
        })
    }

    /// istio-iptables' flags, in the order Istio's template writes them.
    pub fn capture_args(
        &self,
        annotations: &Labels,
        mode: InterceptionMode,
        status_port: u16,
    ) -> Vec<String> {
        let cap = &self.template.capture;
        let get = |name: &str, default: &str| {
            annotations
                .get(name)
                .cloned()
                .unwrap_or_else(|| default.to_string())
        };
        let uid = if mode == InterceptionMode::Tproxy {
            "1337".to_string()
        } else {
            self.template.proxy.uid.to_string()
        };
        let excluded = exclude_inbound_port(
            status_port,
            &get(ann::EXCLUDE_INBOUND_PORTS, &cap.exclude_inbound_ports),
        );
        let mut d = format!("{PROXY_PROMETHEUS_PORT},{PROXY_HEALTH_PORT}");
        if !excluded.is_empty() {
            d = format!("{d},{excluded}");
        }
        let mut args: Vec<String> = vec![
            "-p".into(),
            cap.outbound_port.to_string(),
            "-z".into(),
            cap.inbound_port.to_string(),
            "-u".into(),
            uid,
            "-m".into(),
            mode.as_str().into(),
            "-i".into(),
            get(
                ann::INCLUDE_OUTBOUND_IP_RANGES,
                &cap.include_outbound_ip_ranges,
            ),
            "-x".into(),
            get(
                ann::EXCLUDE_OUTBOUND_IP_RANGES,
                &cap.exclude_outbound_ip_ranges,
            ),
            "-b".into(),
            get(ann::INCLUDE_INBOUND_PORTS, &cap.include_inbound_ports),
            "-d".into(),
            d,
        ];
        if annotations.contains_key(ann::INCLUDE_OUTBOUND_PORTS)
            || !cap.include_outbound_ports.is_empty()
        {
            args.push("-q".into());
            args.push(get(
                ann::INCLUDE_OUTBOUND_PORTS,
                &cap.include_outbound_ports,
            ));
        }
        if annotations.contains_key(ann::EXCLUDE_OUTBOUND_PORTS)
            || !cap.exclude_outbound_ports.is_empty()
        {
            args.push("-o".into());
            args.push(get(
                ann::EXCLUDE_OUTBOUND_PORTS,
                &cap.exclude_outbound_ports,
            ));
        }
        if let Some(k) = annotations
            .get(ann::REROUTE_VIRTUAL_INTERFACES)
            .or_else(|| annotations.get(ann::KUBEVIRT_INTERFACES))
        {
            args.push("-k".into());
            args.push(k.clone());
        }
        if let Some(c) = annotations.get(ann::EXCLUDE_INTERFACES) {
            args.push("-c".into());
            args.push(c.clone());
        }
        args
    }

    fn resources(&self, annotations: &Labels) -> Value {
        let pick = |a: &str, b: &str| -> Map<String, Value> {
            [("cpu", a), ("memory", b)]
                .iter()
                .filter_map(|(k, name)| {
                    annotations.get(*name).map(|v| ((*k).to_string(), json!(v)))
                })
                .collect()
        };
        let requests = pick(ann::PROXY_CPU, ann::PROXY_MEMORY);
        let limits = pick(ann::PROXY_CPU_LIMIT, ann::PROXY_MEMORY_LIMIT);
        if requests.is_empty() && limits.is_empty() {
            return self.template.proxy.resources.clone();
        }
        // As in Istio: any resource annotation replaces the template's resources entirely.
        let mut r = Map::new();
        if !requests.is_empty() {
            r.insert("requests".into(), Value::Object(requests));
        }
        if !limits.is_empty() {
            r.insert("limits".into(), Value::Object(limits));
        }
        Value::Object(r)
    }

    fn init_container(&self, s: &Settings, annotations: &Labels) -> Value {
        let mut c = json!({
            "name": INIT_CONTAINER,
            "image": self.template.init.image,
            "command": self.template.init.command,
            "args": self.capture_args(annotations, s.mode, s.status_port),
            "resources": self.resources(annotations),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                "readOnlyRootFilesystem": false,
                "runAsGroup": 0,
                "runAsNonRoot": false,
                "runAsUser": 0,
            },
        });
        if !self.template.proxy.image_pull_policy.is_empty() {
            c["imagePullPolicy"] = json!(self.template.proxy.image_pull_policy);
        }
        if !s.proxy_config.proxy_metadata.is_empty() {
            c["env"] = env_pairs(&s.proxy_config.proxy_metadata);
        }
        c
    }

    fn proxy_container(
        &self,
        pod: &Value,
        s: &Settings,
        annotations: &Labels,
        labels: &Labels,
        workload: &WorkloadMeta,
        app_names: &[String],
    ) -> Value {
        let t = &self.template;
        let image = annotations
            .get(ann::PROXY_IMAGE)
            .filter(|i| i.contains('/'))
            .unwrap_or(&t.proxy.image);
        let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
        let resource = |r: &str| json!({"resourceFieldRef": {"resource": r, "divisor": "1"}});
        let discovery = s.proxy_config.discovery_address.clone().unwrap_or_default();
        let pod_ports: Vec<Value> = containers(pod, "containers")
            .filter(|c| name_of(c) != PROXY_CONTAINER)
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let mesh_id = if t.mesh_id.is_empty() {
            self.mesh.trust_domain.clone()
        } else {
            t.mesh_id.clone()
        };
        let workload_name = labels
            .get(ann::LABEL_WORKLOAD_NAME)
            .cloned()
            .unwrap_or_else(|| workload.name.clone());
        let log_level = annotations
            .get(ann::LOG_LEVEL)
            .unwrap_or(&t.proxy.log_level);
        let component_log_level = annotations
            .get(ann::COMPONENT_LOG_LEVEL)
            .unwrap_or(&t.proxy.component_log_level);
        let mut env = vec![
            json!({"name": "DISCOVERY_ADDRESS", "value": discovery}),
            json!({"name": "CA_ADDR", "value": discovery}),
            json!({"name": "POD_NAME", "valueFrom": field("metadata.name")}),
            json!({"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")}),
            json!({"name": "INSTANCE_IP", "valueFrom": field("status.podIP")}),
            json!({"name": "SERVICE_ACCOUNT", "valueFrom": field("spec.serviceAccountName")}),
            json!({"name": "HOST_IP", "valueFrom": field("status.hostIP")}),
            json!({"name": "ISTIO_CPU_LIMIT", "valueFrom": resource("limits.cpu")}),
            json!({"name": "PROXY_CONFIG", "value": serde_json::to_string(&s.proxy_config).unwrap_or_default()}),
            json!({"name": "PROXY_LOG_LEVEL", "value": log_level}),
            json!({"name": "PROXY_COMPONENT_LOG_LEVEL", "value": component_log_level}),
            json!({"name": "CLUSTER_DOMAIN", "value": t.cluster_domain}),
            json!({"name": "ISTIO_META_POD_PORTS", "value": Value::Array(pod_ports).to_string()}),
            json!({"name": "ISTIO_META_APP_CONTAINERS", "value": app_names.iter().filter(|n| *n != PROXY_CONTAINER).cloned().collect::<Vec<_>>().join(",")}),
            json!({"name": "ISTIO_META_CLUSTER_ID", "value": t.cluster_id}),
            json!({"name": "ISTIO_META_NODE_NAME", "valueFrom": field("spec.nodeName")}),
            json!({"name": "ISTIO_META_INTERCEPTION_MODE", "value": s.mode.as_str()}),
            json!({"name": "ISTIO_META_WORKLOAD_NAME", "value": workload_name}),
        ];
        if !workload.kind.is_empty() && !workload.api_version.is_empty() {
            let owner = format!(
                "kubernetes://apis/{}/namespaces/{}/{}s/{}",
                workload.api_version,
                workload.namespace,
                workload.kind.to_ascii_lowercase(),
                workload.name
            );
            env.push(json!({"name": "ISTIO_META_OWNER", "value": owner}));
        }
        env.push(json!({"name": "ISTIO_META_MESH_ID", "value": mesh_id}));
        env.push(json!({"name": "TRUST_DOMAIN", "value": self.mesh.trust_domain}));
        if let Value::Array(extra) = env_pairs(&s.proxy_config.proxy_metadata) {
            env.extend(extra);
        }

        let tproxy = s.mode == InterceptionMode::Tproxy;
        let bind = annotations
            .get(ann::CAP_NET_BIND_SERVICE)
            .and_then(|v| parse_bool(v))
            .unwrap_or(false);
        let mut add = Vec::new();
        if tproxy {
            add.push("NET_ADMIN");
        }
        if bind {
            add.push("NET_BIND_SERVICE");
        }
        let mut caps = json!({"drop": ["ALL"]});
        if !add.is_empty() {
            caps["add"] = json!(add);
        }
        let (non_root, user) = if add.is_empty() {
            (true, t.proxy.uid)
        } else {
            (false, 0)
        };
        let mut c = json!({
            "name": PROXY_CONTAINER,
            "image": image,
            "command": t.proxy.command,
            "args": t.proxy.args,
            "ports": [{"containerPort": PROXY_PROMETHEUS_PORT, "protocol": "TCP", "name": "http-envoy-prom"}],
            "env": env,
            "resources": self.resources(annotations),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": caps,
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": non_root,
                "runAsUser": user,
                "runAsGroup": t.proxy.gid,
            },
            "volumeMounts": [
                {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
                {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
                {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
                {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
                {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
                {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
                {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
                {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
            ],
        });
        if !t.proxy.image_pull_policy.is_empty() {
            c["imagePullPolicy"] = json!(t.proxy.image_pull_policy);
        }
        if s.native {
            c["restartPolicy"] = json!("Always");
        }
        if s.hold {
            c["lifecycle"] = json!({"postStart": {"exec": {"command": t.proxy.wait_command}}});
        } else if s.native {
            c["lifecycle"] = json!({"preStop": {"exec": {"command": t.proxy.drain_command}}});
        }
        if s.status_port != 0 {
            let num = |name: &str, default: u32| {
                annotations
                    .get(name)
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(default)
            };
            let r = &t.proxy.readiness;
            c["readinessProbe"] = json!({
                "httpGet": {"path": "/healthz/ready", "port": PROXY_HEALTH_PORT},
                "initialDelaySeconds": num(ann::READINESS_INITIAL_DELAY, r.initial_delay_seconds),
                "periodSeconds": num(ann::READINESS_PERIOD, r.period_seconds),
                "timeoutSeconds": 3,
                "failureThreshold": num(ann::READINESS_FAILURE_THRESHOLD, r.failure_threshold),
            });
            if t.proxy.startup_probe.enabled {
                c["startupProbe"] = json!({
                    "httpGet": {"path": "/healthz/ready", "port": PROXY_HEALTH_PORT},
                    "initialDelaySeconds": 0,
                    "periodSeconds": 1,
                    "timeoutSeconds": 3,
                    "failureThreshold": t.proxy.startup_probe.failure_threshold,
                });
            }
        }
        c
    }

    fn volumes(&self) -> Vec<Value> {
        vec![
            json!({"name": "workload-socket", "emptyDir": {}}),
            json!({"name": "credential-socket", "emptyDir": {}}),
            json!({"name": "workload-certs", "emptyDir": {}}),
            json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
            json!({"name": "istio-data", "emptyDir": {}}),
            json!({"name": "istio-podinfo", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            ]}}),
            json!({"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                "path": "istio-token",
                "expirationSeconds": 43200,
                "audience": self.template.token_audience,
            }}]}}),
            json!({"name": "istiod-ca-cert", "configMap": {"name": self.template.ca_root_config_map}}),
        ]
    }

    /// Points the pod's Prometheus annotations at the proxy's merged endpoint, remembering the app's own
    /// (returned, for the proxy env) so the proxy can scrape the app and re-injection can restore them.
    fn merge_prometheus(
        &self,
        pod: &mut Value,
        annotations: &Labels,
        previous: &Previous,
        status_port: u16,
    ) -> Option<String> {
        let enabled = self.mesh.enable_prometheus_merge
            && annotations
                .get(ann::MERGE_METRICS)
                .and_then(|v| parse_bool(v))
                .unwrap_or(true)
            && annotations.get(ann::PROMETHEUS_SCRAPE).map(String::as_str) != Some("false")
            && status_port != 0;
        if !enabled {
            return None;
        }
        let target = status_port.to_string();
        let meta = pod.get_mut("metadata").and_then(Value::as_object_mut)?;
        let anns = object_entry(meta, "annotations");
        let keys = [
            ann::PROMETHEUS_SCRAPE,
            ann::PROMETHEUS_PATH,
            ann::PROMETHEUS_PORT,
        ];
        let original: Map<String, Value> = keys
            .iter()
            .filter_map(|k| anns.get(*k).map(|v| ((*k).to_string(), v.clone())))
            .collect();
        let recorded = previous.prometheus.clone().or_else(|| {
            let ours =
                anns.get(ann::PROMETHEUS_PORT).and_then(Value::as_str) == Some(target.as_str());
            (!original.is_empty() && !ours).then(|| Value::Object(original).to_string())
        });
        anns.insert(ann::PROMETHEUS_PORT.into(), json!(target));
        anns.insert(ann::PROMETHEUS_PATH.into(), json!(MERGED_METRICS_PATH));
        anns.insert(ann::PROMETHEUS_SCRAPE.into(), json!("true"));
        recorded
    }
}

/// What a previous injection left that the next one must carry forward.
#[derive(Default)]
struct Previous {
    probers: Probers,
    /// The app's own Prometheus annotations (JSON), as recorded in the previous proxy's env.
    prometheus: Option<String>,
}

/// RFC 6902 operations turning `from` into `to`. Objects are compared member by member; anything else
/// (arrays included) is replaced whole. As valid as a full diff (`json_patch::diff`) and about as fast as
/// cloning the changed parts, since containers and volumes change as whole lists anyway.
pub fn object_patch(from: &Value, to: &Value) -> json_patch::Patch {
    let mut ops = Vec::new();
    let mut path = PointerBuf::root();
    diff_into(&mut path, from, to, &mut ops);
    json_patch::Patch(ops)
}

fn diff_into(path: &mut PointerBuf, from: &Value, to: &Value, ops: &mut Vec<PatchOperation>) {
    if from == to {
        return;
    }
    let (Value::Object(a), Value::Object(b)) = (from, to) else {
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: to.clone(),
        }));
        return;
    };
    for key in a.keys().filter(|k| !b.contains_key(*k)) {
        let mut p = path.clone();
        p.push_back(key.as_str());
        ops.push(PatchOperation::Remove(RemoveOperation { path: p }));
    }
    for (key, value) in b {
        match a.get(key) {
            None => {
                let mut p = path.clone();
                p.push_back(key.as_str());
                ops.push(PatchOperation::Add(AddOperation {
                    path: p,
                    value: value.clone(),
                }));
            }
            Some(old) => {
                path.push_back(key.as_str());
                diff_into(path, old, value, ops);
                path.pop_back();
            }
        }
    }
}

/// Removes everything the status annotation lists; returns what the old proxy recorded.
fn strip(pod: &mut Value) -> Result<Previous, Error> {
    let Some(status_text) = pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            ann::STATUS.replace('/', "~1")
        ))
        .and_then(Value::as_str)
    else {
        return Ok(Previous::default());
    };
    let status: SidecarStatus =
        serde_json::from_str(status_text).map_err(|e| Error::InvalidAnnotation {
            name: ann::STATUS.into(),
            value: status_text.to_string(),
            why: format!("not a sidecar status: {e}"),
        })?;
    let mut previous = Previous::default();
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| not_pod("spec is not an object"))?;
    for (list, names) in [
        ("initContainers", status.init_containers.unwrap_or_default()),
        ("containers", status.containers.unwrap_or_default()),
        ("volumes", status.volumes.unwrap_or_default()),
        (
            "imagePullSecrets",
            status.image_pull_secrets.unwrap_or_default(),
        ),
    ] {
        if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
            // Listed or user-owned, the previous proxy holds the originals of rewritten probes.
            for item in items.iter().filter(|i| name_of(i) == PROXY_CONTAINER) {
                {
                    previous
                        .probers
                        .extend(probes::probers_from_container(item));
                    previous.prometheus = env_value(item, PROMETHEUS_ENV);
                }
            }
            items.retain(|i| !names.iter().any(|n| n == name_of(i)));
        }
    }
    let meta = pod.get_mut("metadata").and_then(Value::as_object_mut);
    if let Some(anns) = meta
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        anns.shift_remove(ann::STATUS);
        // Only scrape annotations that look like our merge are undone; the app's own are left alone.
        let merged = anns.get(ann::PROMETHEUS_PATH).and_then(Value::as_str)
            == Some(MERGED_METRICS_PATH)
            && anns.get(ann::PROMETHEUS_SCRAPE).and_then(Value::as_str) == Some("true");
        if merged {
            for k in [
                ann::PROMETHEUS_SCRAPE,
                ann::PROMETHEUS_PATH,
                ann::PROMETHEUS_PORT,
            ] {
                anns.shift_remove(k);
            }
            // Put back the app's own scrape settings, if the previous proxy recorded any.
            if let Some(Value::Object(orig)) = previous
                .prometheus
                .as_deref()
                .and_then(|p| serde_json::from_str::<Value>(p).ok())
            {
                anns.extend(orig);
            }
        }
    }
    Ok(previous)
}

/// A user container named like ours (and not from a previous injection) overrides fields of ours.
fn take_user_overrides(pod: &mut Value) -> (Option<Value>, Option<Value>) {
    let mut take = |list: &str, name: &str| {
        let items = pod.pointer_mut(&format!("/spec/{list}"))?.as_array_mut()?;
        let idx = items.iter().position(|c| name_of(c) == name)?;
        Some(items.remove(idx))
    };
    let proxy =
        take("containers", PROXY_CONTAINER).or_else(|| take("initContainers", PROXY_CONTAINER));
    let init = take("initContainers", INIT_CONTAINER);
    (proxy, init)
}

fn merge_override(ours: &mut Value, theirs: Value) {
    let (Some(ours), Value::Object(theirs)) = (ours.as_object_mut(), theirs) else {
        return;
    };
    for (k, v) in theirs {
        if k == "env"
            && let (Some(Value::Array(mine)), Value::Array(extra)) = (ours.get_mut("env"), &v)
        {
            // The injector recomputes these from the pod; a stale copy must not win.
            let owned = [probes::APP_PROBERS_ENV, PROMETHEUS_ENV];
            for e in extra.iter().filter(|e| !owned.contains(&name_of(e))) {
                mine.retain(|m| name_of(m) != name_of(e));
                mine.push(e.clone());
            }
            continue;
        }
        ours.insert(k, v);
    }
}

/// Istio's `excludeInboundPort`: add the status port to the excluded inbound ports unless already there.
pub fn exclude_inbound_port(status_port: u16, excluded: &str) -> String {
    if status_port == 0 {
        return excluded.to_string();
    }
    let port = status_port.to_string();
    let mut out: Vec<&str> = Vec::new();
    for p in excluded.split(',') {
        if p == port {
            return excluded.to_string();
        }
        let p = p.trim();
        if !p.is_empty() {
            out.push(p);
        }
    }
    out.push(&port);
    out.join(",")
}

/// Lower-case, at most 63 characters, no leading/trailing `-_.`: a valid label value.
fn canonical_label(name: &str) -> String {
    let truncated: String = name.chars().take(63).collect();
    truncated
        .trim_matches(|c| c == '-' || c == '_' || c == '.')
        .to_string()
}

fn namespace_of(pod: &Value, ctx: &PodContext<'_>) -> String {
    ctx.namespace
        .map(str::to_string)
        .or_else(|| {
            pod.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "default".to_string())
}

/// The workload behind a pod seen by the webhook: Deployment (through its ReplicaSet), other controller,
/// or the pod itself.
pub fn workload_of(pod: &Value, ctx: &PodContext<'_>) -> WorkloadMeta {
    let namespace = namespace_of(pod, ctx);
    let meta = pod.get("metadata");
    let text = |v: Option<&Value>, k: &str| {
        v.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let pod_name = text(meta, "name");
    let generate = text(meta, "generateName");
    let owner = meta
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .and_then(|o| {
            o.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .or_else(|| o.first())
        });
    if let Some(o) = owner {
        let kind = text(Some(o), "kind");
        let name = text(Some(o), "name");
        let api_version = text(Some(o), "apiVersion");
        if kind == "ReplicaSet" {
            let hash = pod
                .pointer("/metadata/labels/pod-template-hash")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(dep) = name
                .strip_suffix(&format!("-{hash}"))
                .filter(|_| !hash.is_empty())
            {
                return WorkloadMeta {
                    name: dep.to_string(),
                    namespace,
                    kind: "Deployment".into(),
                    api_version: "apps/v1".into(),
                };
            }
        }
        if !kind.is_empty() && !name.is_empty() {
            return WorkloadMeta {
                name,
                namespace,
                kind,
                api_version,
            };
        }
    }
    let name = if pod_name.is_empty() {
        generate.trim_end_matches('-').to_string()
    } else {
        pod_name
    };
    WorkloadMeta {
        name,
        namespace,
        kind: "Pod".into(),
        api_version: "v1".into(),
    }
}

fn not_pod(why: &str) -> Error {
    Error::NotInjectable {
        what: "pod".into(),
        why: why.into(),
    }
}

/// A `map[string]string` field; absent or null is empty, anything else that is not strings is an error.
pub fn string_map(v: Option<&Value>, field: &str) -> Result<Labels, Error> {
    match v {
        None | Some(Value::Null) => Ok(Labels::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(not_pod(&format!("{field}.{k} is not a string"))),
            })
            .collect(),
        Some(_) => Err(not_pod(&format!("{field} is not an object"))),
    }
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    container
        .get("env")?
        .as_array()?
        .iter()
        .find(|e| name_of(e) == name)?
        .get("value")?
        .as_str()
        .map(str::to_string)
}

fn env_pairs(m: &BTreeMap<String, String>) -> Value {
    Value::Array(
        m.iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect(),
    )
}

fn containers<'a>(pod: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    pod.get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn containers_mut<'a>(pod: &'a mut Value, list: &str) -> impl Iterator<Item = &'a mut Value> {
    pod.get_mut("spec")
        .and_then(|s| s.get_mut(list))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Takes a list out of `spec`, leaving the key (and so its position in the output) in place.
fn take_list(spec: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match spec.get_mut(key).map(std::mem::take) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

/// Puts a list back; an empty list goes back only where the pod already had the key.
fn put_list(spec: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    if items.is_empty() && !spec.contains_key(key) {
        return;
    }
    spec.insert(key.to_string(), Value::Array(items));
}

/// Maps in sorted key order, as the API server returns them, so output is stable across re-injection.
fn sort_map(m: &mut Map<String, Value>, key: &str) {
    if let Some(Value::Object(inner)) = m.get_mut(key) {
        let mut entries: Vec<(String, Value)> = std::mem::take(inner).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        inner.extend(entries);
    }
}

fn object_entry<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = m.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    match v {
        Value::Object(o) => o,
        // Unreachable: replaced by an object just above.
        _ => unreachable!("entry was just made an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injector() -> Injector {
        Injector::builtin().unwrap()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        })
    }

    fn injected(i: &Injector, p: &Value) -> Value {
        match i.inject(p, &PodContext::default()).unwrap() {
            Outcome::Injected(v) => v,
            Outcome::Skipped(r) => panic!("skipped: {r}"),
        }
    }

    #[test]
    fn patch_applies_to_bare_pod_and_is_idempotent() {
        let i = injector();
        let p = pod();
        let (outcome, patch) = i.patch(&p, &PodContext::default()).unwrap();
        let Outcome::Injected(expected) = outcome else {
            panic!()
        };
        let mut applied = p.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(applied, expected);
        let again = injected(&i, &expected);
        assert_eq!(again, expected);
        let (_, second) = i.patch(&expected, &PodContext::default()).unwrap();
        assert!(second.0.is_empty(), "{second:?}");
    }

    #[test]
    fn classic_order_init_last_proxy_last() {
        let i = injector();
        let mut p = pod();
        p["spec"]["initContainers"] = json!([{"name": "setup", "image": "x"}]);
        let out = injected(&i, &p);
        let names = |l: &str| -> Vec<String> {
            out["spec"][l]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| name_of(c).to_string())
                .collect()
        };
        assert_eq!(names("initContainers"), ["setup", "istio-init"]);
        assert_eq!(names("containers"), ["app", "istio-proxy"]);
    }

    #[test]
    fn hold_puts_proxy_first_with_wait_hook() {
        let i = injector();
        let mut p = pod();
        p["metadata"]["annotations"] =
            json!({"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"});
        let out = injected(&i, &p);
        assert_eq!(name_of(&out["spec"]["containers"][0]), "istio-proxy");
        assert!(out["spec"]["containers"][0]["lifecycle"]["postStart"].is_object());
    }

    #[test]
    fn native_sidecar_order() {
        let i = injector();
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"sidecar.istio.io/nativeSidecar": "true"});
        p["spec"]["initContainers"] = json!([{"name": "setup", "image": "x"}]);
        let out = injected(&i, &p);
        let inits: Vec<&str> = out["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(name_of)
            .collect();
        assert_eq!(inits, ["istio-init", "istio-proxy", "setup"]);
        assert_eq!(out["spec"]["initContainers"][1]["restartPolicy"], "Always");
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn interception_none_means_no_init_container() {
        let i = injector();
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"sidecar.istio.io/interceptionMode": "NONE"});
        let out = injected(&i, &p);
        assert!(out["spec"].get("initContainers").is_none());
    }

    #[test]
    fn invalid_annotation_fails() {
        let i = injector();
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"sidecar.istio.io/proxyCPU": "lots"});
        let err = i
            .inject(&p, &PodContext::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid value 'lots' for annotation 'sidecar.istio.io/proxyCPU': "),
            "{err}"
        );
    }

    #[test]
    fn object_patch_escapes_and_applies() {
        let from =
            json!({"metadata": {"annotations": {"a/b": "1", "gone": "x"}}, "spec": {"l": [1, 2]}});
        let to = json!({"metadata": {"annotations": {"a/b": "2", "new~x": "y"}}, "spec": {"l": [1]}, "extra": true});
        let patch = object_patch(&from, &to);
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.contains("/metadata/annotations/a~1b") && text.contains("new~0x"),
            "{text}"
        );
        let mut applied = from.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(applied, to);
        assert!(object_patch(&to, &to).0.is_empty());
        let mut whole = json!(1);
        json_patch::patch(&mut whole, &object_patch(&json!(1), &json!({"a": 1}))).unwrap();
        assert_eq!(whole, json!({"a": 1}));
    }

    #[test]
    fn status_port_exclusion() {
        assert_eq!(exclude_inbound_port(15020, ""), "15020");
        assert_eq!(exclude_inbound_port(15020, "4,5,6"), "4,5,6,15020");
        assert_eq!(exclude_inbound_port(15020, "15020"), "15020");
        assert_eq!(exclude_inbound_port(0, "4"), "4");
    }

    #[test]
    fn non_pods_are_errors_not_panics() {
        let i = injector();
        for bad in [
            json!(null),
            json!([1]),
            json!({"spec": 3}),
            json!({"spec": {"containers": []}}),
            json!({"metadata": {"labels": {"a": 1}}, "spec": {"containers": [{"name": "a"}]}}),
        ] {
            assert!(i.inject(&bad, &PodContext::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn workload_from_replicaset_owner() {
        let p = json!({"metadata": {"name": "web-5d8-abc", "namespace": "shop",
            "labels": {"pod-template-hash": "5d8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8", "controller": true}]}});
        let w = workload_of(&p, &PodContext::default());
        assert_eq!(
            (w.name.as_str(), w.kind.as_str(), w.namespace.as_str()),
            ("web", "Deployment", "shop")
        );
    }
}
