//! Sidecar injection as a pure function: pod JSON in, injected pod JSON or the RFC 6902 patch that injects
//! it out. `halyard kube-inject` calls [`Injector::inject`] (the whole injected pod); the admission server
//! calls [`Injector::admission_patch`], which writes the patch's operations directly from the decisions and
//! the template's pieces (adds to `/spec/initContainers`, `/spec/containers`, `/spec/volumes`, the metadata
//! maps, replacements of rewritten probes) instead of building the injected pod and diffing it. Both render
//! one `Plan`, so they cannot disagree; the goldens check that the patch applied gives the injected pod.
//! Nothing here does I/O.
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

mod ops;
mod parts;

use std::borrow::Cow;
use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value, json};

use crate::annotations::{self as ann, InterceptionMode, Labels, parse_bool};
use crate::decision::{self, Decision, PodFacts, SkipReason};
use crate::error::Error;
use crate::mesh::{MeshConfig, ProxyConfig};
use crate::probes::{self, Probers, Rewritten};
use crate::template::InjectionTemplate;
use ops::Ops;
use parts::{
    Capabilities, Chain, ContainerPort, Env, EnvVar, ExecCommand, ExecHandler, HttpGet,
    InitContainer, Item, Lifecycle, Mounts, Probe, ProxyContainer, ProxySecurityContext, Volume,
};

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

/// The admission answer for one pod, from [`Injector::admission_patch`].
#[derive(Debug, Clone, PartialEq)]
pub enum AdmissionPatch {
    Skipped(SkipReason),
    /// The JSON text of an RFC 6902 operation list, and how many operations it holds (0: nothing to change).
    Patch {
        json: Vec<u8>,
        operations: usize,
    },
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

/// A new value for one probe or lifecycle field of one of the pod's own containers (borrowing the pod).
struct Rewrite<'p> {
    list: &'static str,
    index: usize,
    field: &'static str,
    value: Rewritten<'p>,
}

/// String members to set in `metadata.annotations` or `metadata.labels`, resolved against the current ones.
struct MapEdit<'a, 'b> {
    current: &'b Labels,
    set: Vec<(&'a str, String)>,
}

impl<'a> MapEdit<'a, '_> {
    /// Sets `key`, whatever it was.
    fn set(&mut self, key: &'a str, value: String) {
        match self.set.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.set.push((key, value)),
        }
    }

    /// Sets `key` unless the pod or an earlier edit already has it.
    fn set_default(&mut self, key: &'a str, value: impl FnOnce() -> String) {
        if !self.current.contains_key(key) && !self.set.iter().any(|(k, _)| *k == key) {
            self.set.push((key, value()));
        }
    }
}

/// Everything injection does to one pod, decided from the pod (which it does not modify), the template and
/// the settings; the new values of the pod's own probe fields come beside it, as [`Rewrite`]s borrowing the
/// pod. [`Plan::apply`] performs it on a copy of the pod ([`Injector::inject`]); [`Plan::write`] writes it as
/// RFC 6902 operations ([`Injector::admission_patch`]). One decision, two renderings.
struct Plan<'a> {
    native: bool,
    hold: bool,
    init: Option<InitContainer<'a>>,
    proxy: ProxyContainer<'a>,
    /// Indices of the pod's volumes named like ours or like a user volume, which replace them.
    replaced_volumes: Vec<usize>,
    volumes: [Volume<'a>; 8],
    /// `sidecar.istio.io/userVolume`, added after ours.
    user_volumes: Vec<Value>,
    /// `None`: the template has no image pull secrets and the list is left alone.
    secrets: Option<Vec<&'a str>>,
    annotations: Vec<(&'a str, String)>,
    labels: Vec<(&'a str, String)>,
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

    /// The template and mesh config from the files the operator writes; the built-in template
    /// and the default mesh config for a file not given (the server and `kube-inject` alike).
    pub fn from_files(
        template: Option<&std::path::Path>,
        mesh: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let template = match template {
            Some(path) => InjectionTemplate::from_file(path)?,
            None => InjectionTemplate::builtin()?,
        };
        let mesh = match mesh {
            Some(path) => MeshConfig::from_file(path)?,
            None => MeshConfig::default(),
        };
        Ok(Self::new(template, mesh))
    }

    pub fn decide(&self, pod: &Value, ctx: &PodContext<'_>) -> Result<Decision, Error> {
        let (labels, annotations) = labels_and_annotations(pod)?;
        Ok(self.decide_with(pod, ctx, &labels, &annotations))
    }

    fn decide_with(
        &self,
        pod: &Value,
        ctx: &PodContext<'_>,
        labels: &Labels,
        annotations: &Labels,
    ) -> Decision {
        let namespace = namespace_of(pod, ctx);
        let host_network = pod
            .get("spec")
            .and_then(|s| s.get("hostNetwork"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let facts = PodFacts {
            namespace,
            labels,
            annotations,
            host_network,
        };
        decision::decide(&self.template, ctx.namespace_labels, facts)
    }

    /// The injected pod, or why it is skipped. Errors are admission failures (bad annotations, not a pod).
    pub fn inject(&self, pod: &Value, ctx: &PodContext<'_>) -> Result<Outcome, Error> {
        let (labels, annotations) = labels_and_annotations(pod)?;
        if let Decision::Skip(reason) = self.decide_with(pod, ctx, &labels, &annotations) {
            return Ok(Outcome::Skipped(reason));
        }
        check_shape(pod)?;
        ann::validate(&annotations)?;
        let settings = self.settings(&annotations)?;

        let mut pod = pod.clone();
        if let Some(root) = pod.as_object_mut()
            && !root.get("metadata").is_some_and(Value::is_object)
        {
            root.insert("metadata".into(), json!({}));
        }
        let previous = strip(&mut pod)?;
        let (proxy_override, init_override) = take_user_overrides(&mut pod);
        let (labels, annotations) = labels_and_annotations(&pod)?;
        let overridden = (proxy_override.is_some(), init_override.is_some());
        let (plan, rewrites) = self.plan(
            &pod,
            ctx,
            &settings,
            &annotations,
            &labels,
            &previous,
            overridden,
        )?;
        let rewrites = rewrites
            .into_iter()
            .map(|r| Ok((r.list, r.index, r.field, to_value(&r.value)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        plan.apply(&mut pod, rewrites, proxy_override, init_override)?;
        Ok(Outcome::Injected(pod))
    }

    /// The JSON patch the admission response carries: what [`Injector::admission_patch`] writes, as
    /// operations, beside the injected pod it produces. Empty when the pod is skipped.
    pub fn patch(
        &self,
        pod: &Value,
        ctx: &PodContext<'_>,
    ) -> Result<(Outcome, json_patch::Patch), Error> {
        let outcome = self.inject(pod, ctx)?;
        let patch = match self.admission_patch(pod, ctx)? {
            AdmissionPatch::Patch { json, .. } => {
                serde_json::from_slice(&json).map_err(|e| Error::Parse {
                    what: "the admission patch".into(),
                    why: e.to_string(),
                })?
            }
            AdmissionPatch::Skipped(_) => json_patch::Patch(Vec::new()),
        };
        Ok((outcome, patch))
    }

    /// The admission server's work for one pod: decide, then write the RFC 6902 operations that inject it,
    /// from the pieces of the template, without copying the pod or building the injected one. A pod that
    /// already carries a sidecar (re-injection) or its own `istio-proxy`/`istio-init` (an override) is
    /// injected whole and diffed instead ([`object_patch`]), since its lists are rebuilt, not appended to.
    pub fn admission_patch(
        &self,
        pod: &Value,
        ctx: &PodContext<'_>,
    ) -> Result<AdmissionPatch, Error> {
        let (labels, annotations) = labels_and_annotations(pod)?;
        if let Decision::Skip(reason) = self.decide_with(pod, ctx, &labels, &annotations) {
            return Ok(AdmissionPatch::Skipped(reason));
        }
        check_shape(pod)?;
        let rebuilt = annotations.contains_key(ann::STATUS)
            || containers(pod, "containers").any(|c| name_of(c) == PROXY_CONTAINER)
            || containers(pod, "initContainers")
                .any(|c| matches!(name_of(c), PROXY_CONTAINER | INIT_CONTAINER));
        if rebuilt {
            let Outcome::Injected(injected) = self.inject(pod, ctx)? else {
                // Decided above, from the same inputs.
                return Err(not_pod("the injection decision changed"));
            };
            let patch = object_patch(pod, &injected);
            let json = serde_json::to_vec(&patch).map_err(|e| Error::Parse {
                what: "the admission patch".into(),
                why: e.to_string(),
            })?;
            return Ok(AdmissionPatch::Patch {
                json,
                operations: patch.0.len(),
            });
        }
        ann::validate(&annotations)?;
        let settings = self.settings(&annotations)?;
        let (plan, rewrites) = self.plan(
            pod,
            ctx,
            &settings,
            &annotations,
            &labels,
            &Previous::default(),
            (false, false),
        )?;
        let mut ops = Ops::new();
        plan.write(pod, &rewrites, &mut ops)?;
        let (json, operations) = ops.finish();
        Ok(AdmissionPatch::Patch { json, operations })
    }

    /// Decides every change (see [`Plan`]). `pod` is the pod as it will be changed: stripped of a previous
    /// injection and of user overrides of our containers, which `overridden` reports (proxy, init).
    #[allow(clippy::too_many_arguments)]
    fn plan<'a, 'p>(
        &'a self,
        pod: &'p Value,
        ctx: &PodContext<'_>,
        settings: &'a Settings,
        annotations: &'a Labels,
        labels: &Labels,
        previous: &Previous,
        overridden: (bool, bool),
    ) -> Result<(Plan<'a>, Vec<Rewrite<'p>>), Error> {
        let workload = ctx
            .workload
            .clone()
            .unwrap_or_else(|| workload_of(pod, ctx));

        // Probes of app containers and of users' native sidecars.
        // Originals of rewritten probes by status-port path (a later one replaces an earlier one), as a
        // list: a BTreeMap of Values would allocate a 1 KiB node for one or two entries.
        let mut probers: Vec<(String, Value)> = Vec::new();
        let mut rewrites = Vec::new();
        if settings.rewrite_probes {
            for list in ["containers", "initContainers"] {
                for (index, c) in containers(pod, list).enumerate() {
                    let native_sidecar =
                        c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
                    if list == "containers" || native_sidecar {
                        let fields = probes::rewritten_fields(
                            c,
                            settings.status_port,
                            &previous.probers,
                            &mut probers,
                        );
                        rewrites.extend(fields.into_iter().map(|(field, value)| Rewrite {
                            list,
                            index,
                            field,
                            value,
                        }));
                    }
                }
            }
        }

        let app_names: Vec<&str> = containers(pod, "containers")
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect();
        let Some(first_app) = app_names.first().map(|s| s.to_string()) else {
            return Err(not_pod("spec.containers is empty"));
        };

        let current_annotations = annotations;
        let mut annotations_edit = MapEdit {
            current: current_annotations,
            set: Vec::new(),
        };
        let prometheus_env = self.merge_prometheus(
            &mut annotations_edit,
            current_annotations,
            previous,
            settings.status_port,
        );
        let mut proxy = self.proxy_container(
            pod,
            settings,
            current_annotations,
            labels,
            &workload,
            &app_names,
        );
        proxy.volume_mounts.user = user_objects(current_annotations, ann::USER_VOLUME_MOUNT)?;
        if !probers.is_empty() {
            proxy.env.rest.push(EnvVar::value(
                probes::APP_PROBERS_ENV,
                probers_json(probers),
            ));
        }
        if let Some(p) = prometheus_env {
            proxy.env.rest.push(EnvVar::value(PROMETHEUS_ENV, p));
        }
        let init = (settings.mode != InterceptionMode::None)
            .then(|| self.init_container(settings, current_annotations));

        // What the status annotation lists: ours, not a user-supplied override (re-injection merges an
        // override again instead of dropping it).
        let (proxy_overridden, init_overridden) = overridden;
        let mut status = SidecarStatus {
            revision: self.revision().to_string(),
            ..Default::default()
        };
        let mut init_names = Vec::new();
        if init.is_some() && !init_overridden {
            init_names.push(INIT_CONTAINER.to_string());
        }
        if settings.native {
            if !proxy_overridden {
                init_names.push(PROXY_CONTAINER.to_string());
            }
        } else {
            status.containers = (!proxy_overridden).then(|| vec![PROXY_CONTAINER.to_string()]);
        }
        status.init_containers = (!init_names.is_empty()).then_some(init_names);

        let user_volumes = user_objects(current_annotations, ann::USER_VOLUME)?;
        let replaced_volumes = containers(pod, "volumes")
            .enumerate()
            .filter(|(_, v)| is_added_volume(name_of(v), &user_volumes))
            .map(|(i, _)| i)
            .collect();
        status.volumes = Some(
            VOLUMES
                .iter()
                .copied()
                .chain(user_volumes.iter().map(name_of))
                .map(str::to_string)
                .collect(),
        );

        let secrets = (!self.template.image_pull_secrets.is_empty()).then(|| {
            let mut added: Vec<&'a str> = Vec::new();
            for s in &self.template.image_pull_secrets {
                let present = containers(pod, "imagePullSecrets").any(|x| name_of(x) == s)
                    || added.contains(&s.as_str());
                if !present {
                    added.push(s);
                }
            }
            added
        });
        if let Some(added) = secrets.as_ref().filter(|a| !a.is_empty()) {
            status.image_pull_secrets = Some(added.iter().map(|s| s.to_string()).collect());
        }

        // Metadata.
        annotations_edit.set(ann::REV, self.revision().to_string());
        for key in [ann::DEFAULT_LOGS_CONTAINER, ann::DEFAULT_CONTAINER] {
            annotations_edit.set_default(key, || first_app.clone());
        }
        for (k, v) in &self.template.injected_annotations {
            annotations_edit.set_default(k, || v.clone());
        }
        let status_text = serde_json::to_string(&status).unwrap_or_default();
        annotations_edit.set(ann::STATUS, status_text);

        let canonical_name = labels
            .get(ann::LABEL_CANONICAL_NAME)
            .or_else(|| labels.get("app.kubernetes.io/name"))
            .or_else(|| labels.get("app"))
            .unwrap_or(&workload.name);
        let canonical_revision = labels
            .get(ann::LABEL_CANONICAL_REVISION)
            .or_else(|| labels.get("app.kubernetes.io/version"))
            .or_else(|| labels.get("version"))
            .map_or("latest", String::as_str);
        let mut labels_edit = MapEdit {
            current: labels,
            set: Vec::new(),
        };
        labels_edit.set_default(ann::LABEL_TLS_MODE, || "istio".to_string());
        labels_edit.set(ann::LABEL_CANONICAL_NAME, canonical_label(canonical_name));
        labels_edit.set(
            ann::LABEL_CANONICAL_REVISION,
            canonical_revision.to_string(),
        );

        let plan = Plan {
            native: settings.native,
            hold: settings.hold,
            init,
            proxy,
            replaced_volumes,
            user_volumes,
            volumes: Volume::all(
                &self.template.token_audience,
                &self.template.ca_root_config_map,
            ),
            secrets,
            annotations: annotations_edit.set,
            labels: labels_edit.set,
        };
        Ok((plan, rewrites))
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
    pub fn capture_args<'a>(
        &'a self,
        annotations: &'a Labels,
        mode: InterceptionMode,
        status_port: u16,
    ) -> Vec<Cow<'a, str>> {
        let cap = &self.template.capture;
        let get = |name: &str, default: &'a str| -> Cow<'a, str> {
            Cow::Borrowed(annotations.get(name).map_or(default, String::as_str))
        };
        let uid = if mode == InterceptionMode::Tproxy {
            Cow::Borrowed("1337")
        } else {
            Cow::Owned(self.template.proxy.uid.to_string())
        };
        let excluded = exclude_inbound_port(
            status_port,
            &get(ann::EXCLUDE_INBOUND_PORTS, &cap.exclude_inbound_ports),
        );
        let mut d = format!("{PROXY_PROMETHEUS_PORT},{PROXY_HEALTH_PORT}");
        if !excluded.is_empty() {
            d.push(',');
            d.push_str(&excluded);
        }
        let mut args: Vec<Cow<'a, str>> = Vec::with_capacity(24);
        args.extend([
            "-p".into(),
            cap.outbound_port.to_string().into(),
            "-z".into(),
            cap.inbound_port.to_string().into(),
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
            d.into(),
        ]);
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
            args.push(k.as_str().into());
        }
        if let Some(c) = annotations.get(ann::EXCLUDE_INTERFACES) {
            args.push("-c".into());
            args.push(c.as_str().into());
        }
        args
    }

    fn resources<'a>(&'a self, annotations: &Labels) -> Cow<'a, Value> {
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
            return Cow::Borrowed(&self.template.proxy.resources);
        }
        // As in Istio: any resource annotation replaces the template's resources entirely.
        let mut r = Map::new();
        if !requests.is_empty() {
            r.insert("requests".into(), Value::Object(requests));
        }
        if !limits.is_empty() {
            r.insert("limits".into(), Value::Object(limits));
        }
        Cow::Owned(Value::Object(r))
    }

    fn init_container<'a>(&'a self, s: &'a Settings, annotations: &'a Labels) -> InitContainer<'a> {
        InitContainer {
            name: INIT_CONTAINER,
            image: &self.template.init.image,
            command: &self.template.init.command,
            args: self.capture_args(annotations, s.mode, s.status_port),
            resources: self.resources(annotations),
            security_context: parts::INIT_SECURITY_CONTEXT,
            image_pull_policy: &self.template.proxy.image_pull_policy,
            env: (!s.proxy_config.proxy_metadata.is_empty())
                .then(|| env_pairs(&s.proxy_config.proxy_metadata)),
        }
    }

    fn proxy_container<'a>(
        &'a self,
        pod: &Value,
        s: &'a Settings,
        annotations: &'a Labels,
        labels: &Labels,
        workload: &WorkloadMeta,
        app_names: &[&str],
    ) -> ProxyContainer<'a> {
        let t = &self.template;
        let image = annotations
            .get(ann::PROXY_IMAGE)
            .filter(|i| i.contains('/'))
            .unwrap_or(&t.proxy.image);
        let discovery = s.proxy_config.discovery_address.as_deref().unwrap_or("");
        let pod_ports: Vec<&Value> = containers(pod, "containers")
            .filter(|c| name_of(c) != PROXY_CONTAINER)
            .filter_map(|c| c.get("ports").and_then(Value::as_array))
            .flatten()
            .collect();
        let pod_ports = serde_json::to_string(&pod_ports).unwrap_or_default();
        let mesh_id = if t.mesh_id.is_empty() {
            &self.mesh.trust_domain
        } else {
            &t.mesh_id
        };
        let workload_name = labels
            .get(ann::LABEL_WORKLOAD_NAME)
            .unwrap_or(&workload.name)
            .clone();
        let log_level = annotations
            .get(ann::LOG_LEVEL)
            .unwrap_or(&t.proxy.log_level);
        let component_log_level = annotations
            .get(ann::COMPONENT_LOG_LEVEL)
            .unwrap_or(&t.proxy.component_log_level);
        let app_containers = app_names
            .iter()
            .filter(|n| **n != PROXY_CONTAINER)
            .copied()
            .collect::<Vec<_>>()
            .join(",");
        let proxy_config = serde_json::to_string(&s.proxy_config).unwrap_or_default();
        let fixed = [
            EnvVar::value("DISCOVERY_ADDRESS", discovery),
            EnvVar::value("CA_ADDR", discovery),
            EnvVar::field("POD_NAME", "metadata.name"),
            EnvVar::field("POD_NAMESPACE", "metadata.namespace"),
            EnvVar::field("INSTANCE_IP", "status.podIP"),
            EnvVar::field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            EnvVar::field("HOST_IP", "status.hostIP"),
            EnvVar::resource("ISTIO_CPU_LIMIT", "limits.cpu"),
            EnvVar::value("PROXY_CONFIG", proxy_config),
            EnvVar::value("PROXY_LOG_LEVEL", log_level.as_str()),
            EnvVar::value("PROXY_COMPONENT_LOG_LEVEL", component_log_level.as_str()),
            EnvVar::value("CLUSTER_DOMAIN", t.cluster_domain.as_str()),
            EnvVar::value("ISTIO_META_POD_PORTS", pod_ports),
            EnvVar::value("ISTIO_META_APP_CONTAINERS", app_containers),
            EnvVar::value("ISTIO_META_CLUSTER_ID", t.cluster_id.as_str()),
            EnvVar::field("ISTIO_META_NODE_NAME", "spec.nodeName"),
            EnvVar::value("ISTIO_META_INTERCEPTION_MODE", s.mode.as_str()),
            EnvVar::value("ISTIO_META_WORKLOAD_NAME", workload_name),
        ];
        let mut rest = Vec::with_capacity(8 + s.proxy_config.proxy_metadata.len());
        if !workload.kind.is_empty() && !workload.api_version.is_empty() {
            let owner = format!(
                "kubernetes://apis/{}/namespaces/{}/{}s/{}",
                workload.api_version,
                workload.namespace,
                workload.kind.to_ascii_lowercase(),
                workload.name
            );
            rest.push(EnvVar::value("ISTIO_META_OWNER", owner));
        }
        rest.push(EnvVar::value("ISTIO_META_MESH_ID", mesh_id.as_str()));
        rest.push(EnvVar::value(
            "TRUST_DOMAIN",
            self.mesh.trust_domain.as_str(),
        ));
        rest.extend(env_pairs(&s.proxy_config.proxy_metadata));
        let env = Env { fixed, rest };

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
        let (non_root, user) = if add.is_empty() {
            (true, t.proxy.uid)
        } else {
            (false, 0)
        };
        let lifecycle = if s.hold {
            Some(Lifecycle {
                post_start: Some(ExecHandler {
                    exec: ExecCommand {
                        command: &t.proxy.wait_command,
                    },
                }),
                pre_stop: None,
            })
        } else if s.native {
            Some(Lifecycle {
                post_start: None,
                pre_stop: Some(ExecHandler {
                    exec: ExecCommand {
                        command: &t.proxy.drain_command,
                    },
                }),
            })
        } else {
            None
        };
        let (readiness_probe, startup_probe) = if s.status_port != 0 {
            let num = |name: &str, default: u32| {
                annotations
                    .get(name)
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(default)
            };
            let r = &t.proxy.readiness;
            let ready = || HttpGet {
                path: "/healthz/ready",
                port: PROXY_HEALTH_PORT,
            };
            let readiness = Probe {
                http_get: ready(),
                initial_delay_seconds: num(ann::READINESS_INITIAL_DELAY, r.initial_delay_seconds),
                period_seconds: num(ann::READINESS_PERIOD, r.period_seconds),
                timeout_seconds: 3,
                failure_threshold: num(ann::READINESS_FAILURE_THRESHOLD, r.failure_threshold),
            };
            let startup = t.proxy.startup_probe.enabled.then(|| Probe {
                http_get: ready(),
                initial_delay_seconds: 0,
                period_seconds: 1,
                timeout_seconds: 3,
                failure_threshold: t.proxy.startup_probe.failure_threshold,
            });
            (Some(readiness), startup)
        } else {
            (None, None)
        };
        ProxyContainer {
            name: PROXY_CONTAINER,
            image,
            command: &t.proxy.command,
            args: &t.proxy.args,
            ports: [ContainerPort {
                container_port: PROXY_PROMETHEUS_PORT,
                protocol: "TCP",
                name: "http-envoy-prom",
            }],
            env,
            resources: self.resources(annotations),
            security_context: ProxySecurityContext {
                allow_privilege_escalation: false,
                capabilities: Capabilities { drop: ["ALL"], add },
                privileged: false,
                read_only_root_filesystem: true,
                run_as_non_root: non_root,
                run_as_user: user,
                run_as_group: t.proxy.gid,
            },
            volume_mounts: Mounts {
                ours: &parts::PROXY_MOUNTS,
                user: Vec::new(),
            },
            image_pull_policy: &t.proxy.image_pull_policy,
            restart_policy: s.native.then_some("Always"),
            lifecycle,
            readiness_probe,
            startup_probe,
        }
    }

    /// Points the pod's Prometheus annotations at the proxy's merged endpoint, remembering the app's own
    /// (returned, for the proxy env) so the proxy can scrape the app and re-injection can restore them.
    fn merge_prometheus(
        &self,
        edit: &mut MapEdit<'_, '_>,
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
        let keys = [
            ann::PROMETHEUS_SCRAPE,
            ann::PROMETHEUS_PATH,
            ann::PROMETHEUS_PORT,
        ];
        let original: Map<String, Value> = keys
            .iter()
            .filter_map(|k| {
                annotations
                    .get(*k)
                    .map(|v| ((*k).to_string(), Value::String(v.clone())))
            })
            .collect();
        let recorded = previous.prometheus.clone().or_else(|| {
            let ours = annotations.get(ann::PROMETHEUS_PORT) == Some(&target);
            (!original.is_empty() && !ours).then(|| Value::Object(original).to_string())
        });
        edit.set(ann::PROMETHEUS_PORT, target);
        edit.set(ann::PROMETHEUS_PATH, MERGED_METRICS_PATH.to_string());
        edit.set(ann::PROMETHEUS_SCRAPE, "true".to_string());
        recorded
    }
}

impl Plan<'_> {
    /// The items added to `initContainers` and `containers`: (front, back) of each.
    fn container_items(&self) -> [(Vec<Item<'_, '_>>, Vec<Item<'_, '_>>); 2] {
        let init = self.init.as_ref().map(Item::Init);
        let proxy = Item::Proxy(&self.proxy);
        if self.native {
            // istio-init, then istio-proxy, then users' init containers; app containers unchanged.
            let front = init.into_iter().chain([proxy]).collect();
            [(front, Vec::new()), (Vec::new(), Vec::new())]
        } else if self.hold {
            [
                (Vec::new(), init.into_iter().collect()),
                (vec![proxy], Vec::new()),
            ]
        } else {
            [
                (Vec::new(), init.into_iter().collect()),
                (Vec::new(), vec![proxy]),
            ]
        }
    }

    fn secret_items(&self) -> Option<Vec<Item<'_, '_>>> {
        self.secrets
            .as_ref()
            .map(|s| s.iter().map(|name| Item::Secret(name)).collect())
    }

    /// Performs the plan on `pod` (the pod it was made from, already shaped by `inject`: an object with a
    /// `spec` and `metadata` objects). A user's override of our container replaces fields of ours.
    fn apply(
        self,
        pod: &mut Value,
        rewrites: Vec<(&str, usize, &str, Value)>,
        proxy_override: Option<Value>,
        init_override: Option<Value>,
    ) -> Result<(), Error> {
        let overridden = |item: &Item<'_, '_>| -> Result<Value, Error> {
            let mut v = to_value(item)?;
            match item {
                Item::Proxy(_) => {
                    if let Some(o) = proxy_override.clone() {
                        merge_override(&mut v, o);
                    }
                }
                Item::Init(_) => {
                    if let Some(o) = init_override.clone() {
                        merge_override(&mut v, o);
                    }
                }
                Item::Volume(_) | Item::Secret(_) | Item::Json(_) => {}
            }
            Ok(v)
        };
        let spec = pod
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| not_pod("spec is not an object"))?;
        for (list, index, field, value) in rewrites {
            if let Some(c) = spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .and_then(|l| l.get_mut(index))
                .and_then(Value::as_object_mut)
            {
                c.insert(field.to_string(), value);
            }
        }
        let [(init_front, init_back), (app_front, app_back)] = self.container_items();
        for (key, front, back) in [
            ("initContainers", init_front, init_back),
            ("containers", app_front, app_back),
        ] {
            let mut list: Vec<Value> = front.iter().map(overridden).collect::<Result<_, _>>()?;
            list.append(&mut take_list(spec, key));
            for item in &back {
                list.push(overridden(item)?);
            }
            put_list(spec, key, list);
        }

        let mut volumes = take_list(spec, "volumes");
        volumes.retain(|v| !is_added_volume(name_of(v), &self.user_volumes));
        for v in &self.volumes {
            volumes.push(to_value(&Item::Volume(v))?);
        }
        volumes.extend(self.user_volumes.iter().cloned());
        put_list(spec, "volumes", volumes);

        if let Some(items) = self.secret_items() {
            let mut secrets = take_list(spec, "imagePullSecrets");
            for item in &items {
                secrets.push(to_value(item)?);
            }
            put_list(spec, "imagePullSecrets", secrets);
        }

        let meta = pod
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| not_pod("metadata is not an object"))?;
        for (key, edits) in [("annotations", &self.annotations), ("labels", &self.labels)] {
            let map = object_entry(meta, key);
            for (k, v) in edits {
                map.insert((*k).to_string(), Value::String(v.clone()));
            }
            // Sorted, as the API server returns maps, so output is stable across re-injection.
            map.sort_keys();
        }
        Ok(())
    }

    /// Writes the plan as RFC 6902 operations against `pod`, the unmodified pod it was made from (no
    /// previous injection, no override of our containers): field replacements first (at the pod's own
    /// indices), then removals from the end, then insertions.
    fn write(&self, pod: &Value, rewrites: &[Rewrite<'_>], ops: &mut Ops) -> Result<(), Error> {
        let spec = pod
            .get("spec")
            .and_then(Value::as_object)
            .ok_or_else(|| not_pod("spec is not an object"))?;
        for r in rewrites {
            ops.replace(
                &format!("/spec/{}/{}/{}", r.list, r.index, r.field),
                &r.value,
            )?;
        }
        let [(init_front, init_back), (app_front, app_back)] = self.container_items();
        write_list(spec, "initContainers", &[], &init_front, &init_back, ops)?;
        write_list(spec, "containers", &[], &app_front, &app_back, ops)?;
        let volumes: Vec<Item<'_, '_>> = (self.volumes.iter().map(Item::Volume))
            .chain(self.user_volumes.iter().map(Item::Json))
            .collect();
        write_list(spec, "volumes", &self.replaced_volumes, &[], &volumes, ops)?;
        if let Some(items) = self.secret_items() {
            write_list(spec, "imagePullSecrets", &[], &[], &items, ops)?;
        }

        let sorted = |edits: &[(&str, String)]| -> BTreeMap<String, String> {
            edits
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect()
        };
        let Some(meta) = pod.get("metadata").and_then(Value::as_object) else {
            let mut meta = Map::new();
            meta.insert("annotations".into(), json!(sorted(&self.annotations)));
            meta.insert("labels".into(), json!(sorted(&self.labels)));
            return ops.add("/metadata", &meta);
        };
        for (key, edits) in [("annotations", &self.annotations), ("labels", &self.labels)] {
            match meta.get(key).and_then(Value::as_object) {
                Some(current) => {
                    for (k, v) in edits {
                        if current.get(*k).and_then(Value::as_str) != Some(v.as_str()) {
                            ops.add(&format!("/metadata/{key}/{}", ops::escape(k)), v)?;
                        }
                    }
                }
                None => ops.add(&format!("/metadata/{key}"), &sorted(edits))?,
            }
        }
        Ok(())
    }
}

/// Operations turning the list `spec[key]` into `front + (list without removed) + back`. A list that is
/// absent (or not a list) is written whole, as `inject` does.
fn write_list(
    spec: &Map<String, Value>,
    key: &str,
    removed: &[usize],
    front: &[Item<'_, '_>],
    back: &[Item<'_, '_>],
    ops: &mut Ops,
) -> Result<(), Error> {
    match spec.get(key) {
        Some(Value::Array(_)) => {
            for i in removed.iter().rev() {
                ops.remove(&format!("/spec/{key}/{i}"))?;
            }
            for (i, item) in front.iter().enumerate() {
                ops.add(&format!("/spec/{key}/{i}"), item)?;
            }
            let end = format!("/spec/{key}/-");
            for item in back {
                ops.add(&end, item)?;
            }
            Ok(())
        }
        existing => {
            if existing.is_some() || !front.is_empty() || !back.is_empty() {
                ops.add(&format!("/spec/{key}"), &Chain(front, back))?;
            }
            Ok(())
        }
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

fn namespace_of<'p>(pod: &'p Value, ctx: &PodContext<'p>) -> &'p str {
    ctx.namespace
        .or_else(|| {
            pod.get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
}

/// The workload behind a pod seen by the webhook: Deployment (through its ReplicaSet), other controller,
/// or the pod itself.
pub fn workload_of(pod: &Value, ctx: &PodContext<'_>) -> WorkloadMeta {
    let namespace = namespace_of(pod, ctx).to_string();
    let meta = pod.get("metadata");
    fn text<'v>(v: Option<&'v Value>, k: &str) -> &'v str {
        v.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
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
        if kind == "ReplicaSet" {
            let hash = text(meta.and_then(|m| m.get("labels")), "pod-template-hash");
            let deployment = name
                .strip_suffix(hash)
                .and_then(|n| n.strip_suffix('-'))
                .filter(|_| !hash.is_empty());
            if let Some(dep) = deployment {
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
                name: name.to_string(),
                namespace,
                kind: kind.to_string(),
                api_version: text(Some(o), "apiVersion").to_string(),
            };
        }
    }
    let pod_name = text(meta, "name");
    let name = if pod_name.is_empty() {
        text(meta, "generateName").trim_end_matches('-')
    } else {
        pod_name
    };
    WorkloadMeta {
        name: name.to_string(),
        namespace,
        kind: "Pod".into(),
        api_version: "v1".into(),
    }
}

/// Whether a pod volume of this name is replaced by one injection adds (ours or a user volume).
fn is_added_volume(name: &str, user_volumes: &[Value]) -> bool {
    VOLUMES.contains(&name) || user_volumes.iter().any(|u| name_of(u) == name)
}

/// The entries of a `userVolume` / `userVolumeMount` annotation (validated before; see
/// [`ann::named_objects`]).
fn user_objects(annotations: &Labels, name: &str) -> Result<Vec<Value>, Error> {
    match annotations.get(name) {
        None => Ok(Vec::new()),
        Some(text) => ann::named_objects(text).map_err(|why| Error::InvalidAnnotation {
            name: name.to_string(),
            value: text.clone(),
            why,
        }),
    }
}

/// A piece of the injected pod as a `Value` (`inject`'s rendering of the plan).
fn to_value(piece: &impl serde::Serialize) -> Result<Value, Error> {
    serde_json::to_value(piece).map_err(|e| Error::Parse {
        what: "an injected container".into(),
        why: e.to_string(),
    })
}

fn not_pod(why: &str) -> Error {
    Error::NotInjectable {
        what: "pod".into(),
        why: why.into(),
    }
}

/// What injection needs of a pod before anything else: an object with a `spec` object.
fn check_shape(pod: &Value) -> Result<(), Error> {
    let root = pod
        .as_object()
        .ok_or_else(|| not_pod("the object is not a JSON object"))?;
    if !root.get("spec").is_some_and(Value::is_object) {
        return Err(not_pod("spec is missing or not an object"));
    }
    Ok(())
}

/// The pod's labels and annotations.
fn labels_and_annotations(pod: &Value) -> Result<(Labels, Labels), Error> {
    let meta = pod.get("metadata");
    let labels = string_map(meta.and_then(|m| m.get("labels")), "metadata.labels")?;
    let annotations = string_map(
        meta.and_then(|m| m.get("annotations")),
        "metadata.annotations",
    )?;
    Ok((labels, annotations))
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

/// The `ISTIO_KUBE_APP_PROBERS` value: a JSON object sorted by path; of two originals recorded for one path,
/// the later wins (as inserting into a map would).
fn probers_json(mut probers: Vec<(String, Value)>) -> String {
    struct Sorted<'x>(&'x [(String, Value)]);
    impl serde::Serialize for Sorted<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }
    probers.reverse();
    probers.sort_by(|a, b| a.0.cmp(&b.0));
    probers.dedup_by(|dup, kept| dup.0 == kept.0);
    serde_json::to_string(&Sorted(&probers)).unwrap_or_default()
}

fn env_pairs(m: &BTreeMap<String, String>) -> Vec<EnvVar<'_>> {
    m.iter()
        .map(|(k, v)| EnvVar::value(k.as_str(), v.as_str()))
        .collect()
}

fn containers<'a>(pod: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    pod.get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
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
