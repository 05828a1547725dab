//! The mesh model: every input (Istio config, Kubernetes Services / EndpointSlices / Pods /
//! Namespaces, or ServiceEntry / WorkloadEntry in local mode, and mesh config) indexed once per
//! change, so that translating for 1,000 proxies reads it without re-deriving anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use halyard_crds::networking::{
    DestinationRuleSpec, GatewaySpec, H2UpgradePolicy, LocalityLoadBalancerSetting,
    OutboundTrafficPolicyMode, ServiceEntryLocation, ServiceEntryResolution, ServiceEntrySpec,
    SidecarSpec, VirtualServiceSpec, WorkloadEntrySpec,
};
use halyard_crds::object::IstioObject;
use halyard_crds::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use halyard_crds::validation::rules::Protocol as PortProtocol;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::resources::Protocol;
use crate::resources::endpoint::Health;
use crate::static_config::FormatError;

/// Istio's root namespace: config here applies mesh-wide.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
/// Label Istio's injector puts on pods whose sidecar accepts Istio mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Service annotation limiting where a Kubernetes Service is visible.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// MeshConfig `outboundTrafficPolicy.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OutboundPolicy {
    /// Unknown destinations go to `PassthroughCluster` (Istio's default).
    #[default]
    AllowAny,
    /// Unknown destinations go to `BlackHoleCluster`.
    RegistryOnly,
}

/// The mesh-wide settings the translator needs ([`MeshConfig::from_yaml`] reads Istio's
/// `mesh` YAML).
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfig {
    pub outbound_traffic_policy: OutboundPolicy,
    /// `istio-system` by default.
    pub root_namespace: String,
    /// `cluster.local` by default; identities are `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    /// Kubernetes DNS suffix, `cluster.local`: service hosts are `<name>.<ns>.svc.<suffix>`.
    pub domain_suffix: String,
    /// Cluster connect timeout (MeshConfig `connectTimeout`, 10 s).
    pub connect_timeout_ms: u64,
    /// Use mTLS towards endpoints that have a sidecar when no DestinationRule sets TLS.
    pub enable_auto_mtls: bool,
    /// MeshConfig `localityLbSetting`: clusters whose DestinationRule sets none get it (a
    /// DestinationRule's replaces it whole, as in Istio).
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// MeshConfig `h2UpgradePolicy`: `UPGRADE` sends HTTP/1.1 to HTTP ports over HTTP/2 unless
    /// the DestinationRule's `connectionPool.http.h2UpgradePolicy` says otherwise (its
    /// `DEFAULT`, like unset, defers to this).
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            outbound_traffic_policy: OutboundPolicy::AllowAny,
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            trust_domain: "cluster.local".to_string(),
            domain_suffix: "cluster.local".to_string(),
            connect_timeout_ms: 10_000,
            enable_auto_mtls: true,
            locality_lb_setting: None,
            h2_upgrade_policy: None,
        }
    }
}

/// Istio's `mesh` YAML (the `mesh` key of the `istio` ConfigMap), the fields halyard honours;
/// the others are accepted and ignored, as a MeshConfig carries many halyard has no use for.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeshConfigYaml {
    outbound_traffic_policy: Option<OutboundTrafficPolicyYaml>,
    root_namespace: Option<String>,
    trust_domain: Option<String>,
    connect_timeout: Option<String>,
    enable_auto_mtls: Option<bool>,
    locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    h2_upgrade_policy: Option<H2UpgradePolicy>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct OutboundTrafficPolicyYaml {
    mode: Option<OutboundTrafficPolicyMode>,
}

impl MeshConfig {
    /// Reads Istio's `mesh` YAML (`outboundTrafficPolicy.mode`, `rootNamespace`, `trustDomain`,
    /// `connectTimeout`, `enableAutoMtls`, `localityLbSetting`, `h2UpgradePolicy`); what it leaves
    /// out keeps the default. `origin` names the input in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<MeshConfig, FormatError> {
        let y: MeshConfigYaml = if text.trim().is_empty() {
            MeshConfigYaml::default()
        } else {
            crate::static_config::from_yaml(origin, text)?
        };
        let mut mesh = MeshConfig::default();
        if let Some(mode) = y.outbound_traffic_policy.and_then(|p| p.mode) {
            mesh.outbound_traffic_policy = match mode {
                OutboundTrafficPolicyMode::AllowAny => OutboundPolicy::AllowAny,
                OutboundTrafficPolicyMode::RegistryOnly => OutboundPolicy::RegistryOnly,
            };
        }
        if let Some(ns) = y.root_namespace.filter(|s| !s.is_empty()) {
            mesh.root_namespace = ns;
        }
        if let Some(td) = y.trust_domain.filter(|s| !s.is_empty()) {
            mesh.trust_domain = td;
        }
        if let Some(t) = y.connect_timeout {
            let bad = |why: String| FormatError::Field {
                origin: origin.to_string(),
                path: "connectTimeout".to_string(),
                message: why,
            };
            let d = halyard_crds::validation::rules::parse_duration(&t).map_err(bad)?;
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                return Err(bad(format!("{t:?}: must be at least 1ms")));
            }
            mesh.connect_timeout_ms = ms;
        }
        if let Some(auto) = y.enable_auto_mtls {
            mesh.enable_auto_mtls = auto;
        }
        mesh.locality_lb_setting = y.locality_lb_setting;
        mesh.h2_upgrade_policy = y.h2_upgrade_policy;
        Ok(mesh)
    }
}

/// Everything the control plane knows, as the registries deliver it.
#[derive(Clone, Debug, Default)]
pub struct MeshInput {
    pub mesh: MeshConfig,
    /// Istio config objects (already validated by the registry).
    pub istio: Vec<IstioObject>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
}

impl MeshInput {
    /// The registries' view with the default mesh config (`istio-system`, `cluster.local`,
    /// ALLOW_ANY); set `mesh` to change it.
    pub fn new(
        istio: Vec<IstioObject>,
        services: Vec<Service>,
        endpoint_slices: Vec<EndpointSlice>,
        pods: Vec<Pod>,
        namespaces: Vec<Namespace>,
    ) -> MeshInput {
        MeshInput {
            mesh: MeshConfig::default(),
            istio,
            services,
            endpoint_slices,
            pods,
            namespaces,
        }
    }
}

/// Something in the input the translator ignored or overrode, named by object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// `Kind namespace/name`.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// Where a config object or service may be seen (`exportTo`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ExportTo {
    All,
    Namespaces(BTreeSet<String>),
}

impl ExportTo {
    /// `.` = own namespace, `*` = everyone, `~` = nobody; empty = everyone (Istio's default).
    pub(crate) fn parse<S: AsRef<str>>(list: &[S], own_ns: &str) -> ExportTo {
        if list.is_empty() {
            return ExportTo::All;
        }
        let mut set = BTreeSet::new();
        for entry in list {
            match entry.as_ref().trim() {
                "*" => return ExportTo::All,
                "." => {
                    set.insert(own_ns.to_string());
                }
                "~" | "" => {}
                ns => {
                    set.insert(ns.to_string());
                }
            }
        }
        ExportTo::Namespaces(set)
    }

    pub(crate) fn visible_to(&self, ns: &str) -> bool {
        match self {
            ExportTo::All => true,
            ExportTo::Namespaces(set) => set.contains(ns),
        }
    }
}

/// Identity and provenance of one config object.
#[derive(Clone, Debug)]
pub(crate) struct ConfigMeta {
    pub name: String,
    pub namespace: String,
    pub created: Option<Time>,
    /// `/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews`.
    pub origin: String,
    /// `VirtualService default/reviews`, for warnings.
    pub display: String,
    /// Istio's `istio.io/dry-run: "true"` annotation (AuthorizationPolicy: evaluate, log only).
    pub dry_run: bool,
}

impl ConfigMeta {
    fn new(meta: &ObjectMeta, group_version: &str, kind: &str, slug: &str) -> ConfigMeta {
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        ConfigMeta {
            origin: format!("/apis/{group_version}/namespaces/{namespace}/{slug}/{name}"),
            display: format!("{kind} {namespace}/{name}"),
            created: meta.creation_timestamp.clone(),
            dry_run: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get("istio.io/dry-run"))
                .is_some_and(|v| v == "true"),
            name,
            namespace,
        }
    }

    /// Istio's conflict order: oldest first, then namespace/name.
    pub(crate) fn age_key(&self) -> (Option<&Time>, &str, &str) {
        // `None` (no timestamp, e.g. local files) sorts first, as the oldest.
        (self.created.as_ref(), &self.namespace, &self.name)
    }
}

/// A config object with its metadata and resolved bits.
#[derive(Clone, Debug)]
pub(crate) struct Cfg<T> {
    pub meta: ConfigMeta,
    pub spec: T,
    pub export_to: ExportTo,
    /// Hosts resolved to FQDNs (VirtualService hosts, DestinationRule host); wildcards kept.
    pub hosts: Vec<String>,
}

/// How a service's endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Endpoint IPs pushed by the control plane (Kubernetes, ServiceEntry STATIC).
    Static,
    /// The proxy resolves the endpoint host names (ServiceEntry DNS).
    Dns,
    /// Like Dns, first address only (ServiceEntry DNS_ROUND_ROBIN).
    DnsRoundRobin,
    /// Forward to the original destination (ServiceEntry NONE).
    Passthrough,
}

/// How a service port maps to the workload port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TargetPort {
    Number(u32),
    /// A named container port, resolved per pod.
    Name(String),
}

#[derive(Clone, Debug)]
pub(crate) struct ServicePortInfo {
    pub name: String,
    pub port: u32,
    pub target: TargetPort,
    pub protocol: Protocol,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EndpointInfo {
    pub address: String,
    /// Service port -> workload port.
    pub ports: BTreeMap<u32, u32>,
    pub labels: BTreeMap<String, String>,
    pub locality: String,
    pub weight: u32,
    pub health: Health,
    pub identity: String,
    pub mesh_tls: bool,
    pub network: String,
}

/// A service as the registry sees it (Kubernetes Service or one host of a ServiceEntry).
#[derive(Clone, Debug)]
pub(crate) struct ServiceInfo {
    /// FQDN (`reviews.default.svc.cluster.local`) or the ServiceEntry host.
    pub host: String,
    pub namespace: String,
    /// Kubernetes Service name (gives the short names `reviews`, `reviews.default`).
    pub kube_name: Option<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePortInfo>,
    pub resolution: Resolution,
    pub mesh_external: bool,
    pub export_to: ExportTo,
    pub origin: String,
    pub endpoints: Vec<EndpointInfo>,
    pub subject_alt_names: Vec<String>,
    /// Kubernetes selector or ServiceEntry workloadSelector (for inbound: which workloads serve it).
    pub selector: Option<BTreeMap<String, String>>,
}

impl ServiceInfo {
    pub(crate) fn port(&self, number: u32) -> Option<&ServicePortInfo> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// What the model keeps of a pod.
#[derive(Clone, Debug)]
pub(crate) struct PodInfo {
    pub labels: BTreeMap<String, String>,
    pub ip: Option<String>,
    pub service_account: String,
    pub container_ports: BTreeMap<String, u32>,
    pub ready: bool,
}

/// The indexed mesh. Build once per change with [`MeshModel::build`]; translate with
/// [`crate::translate`].
#[derive(Clone, Debug)]
pub struct MeshModel {
    pub(crate) mesh: MeshConfig,
    pub(crate) services: Vec<ServiceInfo>,
    /// Host -> index of its first service (hosts are sorted, so the same each build).
    pub(crate) service_by_host: HashMap<String, usize>,
    pub(crate) virtual_services: Vec<Cfg<VirtualServiceSpec>>,
    pub(crate) destination_rules: Vec<Cfg<DestinationRuleSpec>>,
    pub(crate) gateways: Vec<Cfg<GatewaySpec>>,
    pub(crate) sidecars: Vec<Cfg<SidecarSpec>>,
    pub(crate) peer_authentications: Vec<Cfg<PeerAuthenticationSpec>>,
    pub(crate) authorization_policies: Vec<Cfg<AuthorizationPolicySpec>>,
    pub(crate) pods: HashMap<(String, String), PodInfo>,
    pub(crate) namespaces: BTreeSet<String>,
    warnings: Vec<Warning>,
}

impl MeshModel {
    /// Indexes the input. Never fails: objects it cannot use are skipped and reported in
    /// [`MeshModel::warnings`].
    pub fn build(input: &MeshInput) -> MeshModel {
        let mut b = Builder {
            mesh: input.mesh.clone(),
            warnings: Vec::new(),
            namespaces: BTreeSet::new(),
        };
        for ns in &input.namespaces {
            if let Some(name) = &ns.metadata.name {
                b.namespaces.insert(name.clone());
            }
        }
        for s in &input.services {
            if let Some(ns) = &s.metadata.namespace {
                b.namespaces.insert(ns.clone());
            }
        }
        for o in &input.istio {
            if let Some(ns) = o.namespace() {
                b.namespaces.insert(ns.to_string());
            }
        }

        let pods: HashMap<(String, String), PodInfo> = input
            .pods
            .iter()
            .filter_map(|p| {
                let key = (p.metadata.namespace.clone()?, p.metadata.name.clone()?);
                Some((key, pod_info(p)))
            })
            .collect();

        let mut model = MeshModel {
            mesh: input.mesh.clone(),
            services: Vec::new(),
            service_by_host: HashMap::new(),
            virtual_services: Vec::new(),
            destination_rules: Vec::new(),
            gateways: Vec::new(),
            sidecars: Vec::new(),
            peer_authentications: Vec::new(),
            authorization_policies: Vec::new(),
            pods,
            namespaces: BTreeSet::new(),
            warnings: Vec::new(),
        };

        let mut service_entries = Vec::new();
        let mut workload_entries = Vec::new();
        for o in &input.istio {
            match o {
                IstioObject::VirtualService(vs) => {
                    let meta = ConfigMeta::new(
                        &vs.metadata,
                        "networking.istio.io/v1",
                        "VirtualService",
                        "virtual-service",
                    );
                    let hosts = vs
                        .spec
                        .hosts
                        .iter()
                        .map(|h| b.fqdn(h, &meta.namespace))
                        .collect();
                    if vs.spec.http.iter().any(|r| r.delegate.is_some()) {
                        b.warn(
                            &meta,
                            "http delegate is not supported; delegating routes skipped",
                        );
                    }
                    model.virtual_services.push(Cfg {
                        export_to: ExportTo::parse(&vs.spec.export_to, &meta.namespace),
                        meta,
                        spec: vs.spec.clone(),
                        hosts,
                    });
                }
                IstioObject::DestinationRule(dr) => {
                    let meta = ConfigMeta::new(
                        &dr.metadata,
                        "networking.istio.io/v1",
                        "DestinationRule",
                        "destination-rule",
                    );
                    let hosts = vec![b.fqdn(&dr.spec.host, &meta.namespace)];
                    model.destination_rules.push(Cfg {
                        export_to: ExportTo::parse(&dr.spec.export_to, &meta.namespace),
                        meta,
                        spec: dr.spec.clone(),
                        hosts,
                    });
                }
                IstioObject::Gateway(gw) => {
                    let meta = ConfigMeta::new(
                        &gw.metadata,
                        "networking.istio.io/v1",
                        "Gateway",
                        "gateway",
                    );
                    model.gateways.push(Cfg {
                        meta,
                        spec: gw.spec.clone(),
                        export_to: ExportTo::All,
                        hosts: Vec::new(),
                    });
                }
                IstioObject::Sidecar(sc) => {
                    let meta = ConfigMeta::new(
                        &sc.metadata,
                        "networking.istio.io/v1",
                        "Sidecar",
                        "sidecar",
                    );
                    model.sidecars.push(Cfg {
                        meta,
                        spec: sc.spec.clone(),
                        export_to: ExportTo::All,
                        hosts: Vec::new(),
                    });
                }
                IstioObject::ServiceEntry(se) => {
                    let meta = ConfigMeta::new(
                        &se.metadata,
                        "networking.istio.io/v1",
                        "ServiceEntry",
                        "service-entry",
                    );
                    service_entries.push((meta, se.spec.clone()));
                }
                IstioObject::WorkloadEntry(we) => {
                    let meta = ConfigMeta::new(
                        &we.metadata,
                        "networking.istio.io/v1",
                        "WorkloadEntry",
                        "workload-entry",
                    );
                    workload_entries.push((meta, we.spec.clone()));
                }
                IstioObject::PeerAuthentication(pa) => {
                    let meta = ConfigMeta::new(
                        &pa.metadata,
                        "security.istio.io/v1",
                        "PeerAuthentication",
                        "peer-authentication",
                    );
                    model.peer_authentications.push(Cfg {
                        meta,
                        spec: pa.spec.clone(),
                        export_to: ExportTo::All,
                        hosts: Vec::new(),
                    });
                }
                IstioObject::AuthorizationPolicy(ap) => {
                    let meta = ConfigMeta::new(
                        &ap.metadata,
                        "security.istio.io/v1",
                        "AuthorizationPolicy",
                        "authorization-policy",
                    );
                    model.authorization_policies.push(Cfg {
                        meta,
                        spec: ap.spec.clone(),
                        export_to: ExportTo::All,
                        hosts: Vec::new(),
                    });
                }
                // Not inputs of proxy config (WorkloadGroup creates WorkloadEntries through the
                // registry; RequestAuthentication needs JWT support in the proxy).
                _ => {}
            }
        }

        for s in &input.services {
            if let Some(svc) =
                b.kube_service(s, &input.endpoint_slices, &model.pods, &workload_entries)
            {
                model.services.push(svc);
            }
        }
        for (meta, se) in &service_entries {
            model
                .services
                .extend(b.service_entry(meta, se, &workload_entries));
        }
        model
            .services
            .sort_by(|a, b| (&a.host, &a.namespace).cmp(&(&b.host, &b.namespace)));

        // Stable order everywhere: oldest first (Istio's conflict rule), then namespace/name.
        model
            .virtual_services
            .sort_by(|a, b| a.meta.age_key().cmp(&b.meta.age_key()));
        model
            .destination_rules
            .sort_by(|a, b| a.meta.age_key().cmp(&b.meta.age_key()));
        model
            .gateways
            .sort_by(|a, b| a.meta.age_key().cmp(&b.meta.age_key()));
        model
            .sidecars
            .sort_by(|a, b| a.meta.age_key().cmp(&b.meta.age_key()));
        model
            .peer_authentications
            .sort_by(|a, b| a.meta.age_key().cmp(&b.meta.age_key()));
        model
            .authorization_policies
            .sort_by(|a, b| a.meta.age_key().cmp(&b.meta.age_key()));

        report_virtual_service_conflicts(&model.virtual_services, &mut b.warnings);
        report_unknown_destinations(&model, &mut b);
        b.warnings.sort();
        b.warnings.dedup();
        model.warnings = b.warnings;
        model.namespaces = b.namespaces;
        for (i, svc) in model.services.iter().enumerate() {
            model.service_by_host.entry(svc.host.clone()).or_insert(i);
        }
        model
    }

    /// What the model skipped or overrode (e.g. the loser of a VirtualService host conflict).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    pub fn mesh_config(&self) -> &MeshConfig {
        &self.mesh
    }

    pub(crate) fn service(&self, host: &str) -> Option<&ServiceInfo> {
        self.service_by_host.get(host).map(|i| &self.services[*i])
    }

    /// The locality (`region/zone/subzone`) of the workload behind a proxy, as its endpoints
    /// carry it, so that the proxy compares itself with endpoints the same way: an endpoint of a
    /// service in `namespace` at one of the proxy's addresses (or its pod's IP) — WorkloadEntry
    /// `locality`, the pod's `istio-locality` / topology labels, the node zone of its
    /// EndpointSlice — else the labels of the pod `<pod>.<namespace>` names. Empty: unknown.
    pub fn workload_locality(
        &self,
        namespace: &str,
        pod_name: &str,
        addresses: &[String],
    ) -> String {
        let pod = self
            .pods
            .get(&(namespace.to_string(), pod_name.to_string()));
        let is_mine = |a: &str| {
            addresses.iter().any(|x| x == a) || pod.and_then(|p| p.ip.as_deref()) == Some(a)
        };
        let from_endpoints = self
            .services
            .iter()
            .filter(|s| s.namespace == namespace)
            .flat_map(|s| s.endpoints.iter())
            .find(|e| !e.locality.is_empty() && is_mine(&e.address));
        match (from_endpoints, pod) {
            (Some(e), _) => e.locality.clone(),
            (None, Some(p)) => locality_of(&p.labels, None),
            (None, None) => String::new(),
        }
    }

    /// Resolves a host as written in config of namespace `ns` to the FQDN the registry uses.
    pub fn resolve_host(&self, host: &str, ns: &str) -> String {
        resolve_host(host, ns, &self.mesh.domain_suffix, &self.namespaces)
    }
}

fn spiffe(trust_domain: &str, ns: &str, sa: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}")
}

/// Istio's short-name expansion: `reviews` in namespace `default` is
/// `reviews.default.svc.cluster.local`; `reviews.prod` (a known namespace) is
/// `reviews.prod.svc.cluster.local`; FQDNs, wildcards and IPs stay as they are.
pub(crate) fn resolve_host(
    host: &str,
    ns: &str,
    suffix: &str,
    namespaces: &BTreeSet<String>,
) -> String {
    let host = host.trim_end_matches('.');
    if host.starts_with('*') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_string();
    }
    match host.split_once('.') {
        None => format!("{host}.{ns}.svc.{suffix}"),
        Some((name, rest)) if !rest.contains('.') && namespaces.contains(rest) => {
            format!("{name}.{rest}.svc.{suffix}")
        }
        Some(_) => host.to_string(),
    }
}

/// Whether a host pattern (`reviews.default.svc.cluster.local`, `*.example.com`, `*`) covers a
/// host (which may itself be a wildcard).
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        // `*.example.com` covers `a.example.com` and `*.a.example.com`, not `example.com`.
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

/// Specificity of a pattern for most-specific-wins: exact beats any wildcard; longer
/// wildcard suffix beats shorter.
pub(crate) fn host_specificity(pattern: &str) -> (bool, usize) {
    (!pattern.starts_with('*'), pattern.len())
}

/// Whether `labels` satisfy a selector (every selector label equal; an empty selector matches).
pub(crate) fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Protocol from a port's `appProtocol`, else its name (`<protocol>[-<suffix>]`); TCP otherwise.
pub(crate) fn port_protocol(name: &str, app_protocol: Option<&str>) -> Protocol {
    if let Some(app) = app_protocol {
        let app = app.rsplit('/').next().unwrap_or(app);
        let mapped = match app {
            "h2c" => Some(Protocol::Http2),
            "ws" | "wss" => Some(Protocol::Http),
            other => PortProtocol::parse(other).map(to_proto_protocol),
        };
        if let Some(p) = mapped {
            return p;
        }
    }
    let prefix = name.split('-').next().unwrap_or(name);
    PortProtocol::parse(prefix).map_or(Protocol::Tcp, to_proto_protocol)
}

/// Protocol from an explicit Istio protocol field (ServiceEntry / Gateway `protocol`).
pub(crate) fn explicit_protocol(protocol: &str) -> Option<Protocol> {
    PortProtocol::parse(protocol).map(to_proto_protocol)
}

fn to_proto_protocol(p: PortProtocol) -> Protocol {
    match p {
        PortProtocol::Grpc | PortProtocol::GrpcWeb => Protocol::Grpc,
        PortProtocol::Http | PortProtocol::HttpProxy => Protocol::Http,
        PortProtocol::Http2 => Protocol::Http2,
        PortProtocol::Https => Protocol::Https,
        PortProtocol::Tls => Protocol::Tls,
        PortProtocol::Udp => Protocol::Udp,
        PortProtocol::Mongo => Protocol::Mongo,
        PortProtocol::Redis => Protocol::Redis,
        PortProtocol::Mysql => Protocol::Mysql,
        PortProtocol::Tcp | PortProtocol::Hbone => Protocol::Tcp,
    }
}

pub(crate) fn is_http(p: Protocol) -> bool {
    matches!(p, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
}

fn pod_info(p: &Pod) -> PodInfo {
    let spec = p.spec.as_ref();
    let container_ports = spec
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|cp| {
                    let port = u32::try_from(cp.container_port).ok()?;
                    Some((cp.name.clone()?, port))
                })
                .collect()
        })
        .unwrap_or_default();
    PodInfo {
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string()),
        container_ports,
        ready: pod_ready(p),
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Loser reports: two VirtualServices that claim the same host for the same gateway.
fn report_virtual_service_conflicts(vss: &[Cfg<VirtualServiceSpec>], warnings: &mut Vec<Warning>) {
    // (gateway context, host) -> first (oldest) owner.
    let mut owner: HashMap<(String, String), &ConfigMeta> = HashMap::new();
    for vs in vss {
        for gw in vs_gateways(vs) {
            for host in &vs.hosts {
                let key = (gw.clone(), host.clone());
                match owner.get(&key) {
                    Some(first) => warnings.push(Warning {
                        object: vs.meta.display.clone(),
                        message: format!(
                            "host {host:?} (gateway {gw}) is already claimed by older {}; this VirtualService is ignored for it",
                            first.display
                        ),
                    }),
                    None => {
                        owner.insert(key, &vs.meta);
                    }
                }
            }
        }
    }
}

/// Destinations naming a host no Service or ServiceEntry provides (requests there get 503).
fn report_unknown_destinations(model: &MeshModel, b: &mut Builder) {
    let known: BTreeSet<&str> = model.services.iter().map(|s| s.host.as_str()).collect();
    for vs in &model.virtual_services {
        let dests = vs
            .spec
            .http
            .iter()
            .flat_map(|r| r.route.iter().map(|d| &d.destination))
            .chain(
                vs.spec
                    .tcp
                    .iter()
                    .flat_map(|r| r.route.iter().map(|d| &d.destination)),
            )
            .chain(
                vs.spec
                    .tls
                    .iter()
                    .flat_map(|r| r.route.iter().map(|d| &d.destination)),
            );
        let mut missing = BTreeSet::new();
        for d in dests {
            let host = b.fqdn(&d.host, &vs.meta.namespace);
            if !known.contains(host.as_str()) {
                missing.insert(host);
            }
        }
        for host in missing {
            b.warn(
                &vs.meta,
                &format!("destination host {host:?} is not in the service registry; requests routed there fail with 503"),
            );
        }
    }
    // Istio ignores a DestinationRule whose host matches nothing in the registry.
    for dr in &model.destination_rules {
        let used = dr
            .hosts
            .iter()
            .any(|h| model.services.iter().any(|s| host_matches(h, &s.host)));
        if !used {
            b.warn(
                &dr.meta,
                &format!(
                    "host {:?} matches no service in the registry; this DestinationRule has no effect",
                    dr.spec.host
                ),
            );
        }
    }
}

/// The gateways a VirtualService binds to, as `namespace/name` or `mesh`.
pub(crate) fn vs_gateways(vs: &Cfg<VirtualServiceSpec>) -> Vec<String> {
    if vs.spec.gateways.is_empty() {
        return vec!["mesh".to_string()];
    }
    vs.spec
        .gateways
        .iter()
        .map(|g| qualify_gateway(g, &vs.meta.namespace))
        .collect()
}

/// `mesh` stays; `name` becomes `<ns>/name`.
pub(crate) fn qualify_gateway(gw: &str, ns: &str) -> String {
    if gw == "mesh" || gw.contains('/') {
        gw.to_string()
    } else {
        // `name.namespace.svc.cluster.local` form: Istio accepts it too.
        match gw.split_once('.') {
            Some((name, rest)) => {
                let gw_ns = rest.split('.').next().unwrap_or(ns);
                format!("{gw_ns}/{name}")
            }
            None => format!("{ns}/{gw}"),
        }
    }
}

struct Builder {
    mesh: MeshConfig,
    warnings: Vec<Warning>,
    namespaces: BTreeSet<String>,
}

impl Builder {
    fn warn(&mut self, meta: &ConfigMeta, message: &str) {
        self.warnings.push(Warning {
            object: meta.display.clone(),
            message: message.to_string(),
        });
    }

    fn fqdn(&self, host: &str, ns: &str) -> String {
        resolve_host(host, ns, &self.mesh.domain_suffix, &self.namespaces)
    }

    fn kube_service(
        &mut self,
        s: &Service,
        slices: &[EndpointSlice],
        pods: &HashMap<(String, String), PodInfo>,
        workload_entries: &[(ConfigMeta, WorkloadEntrySpec)],
    ) -> Option<ServiceInfo> {
        let name = s.metadata.name.clone()?;
        let ns = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let spec = s.spec.as_ref()?;
        let display = format!("Service {ns}/{name}");
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            let Ok(port) = u32::try_from(p.port) else {
                self.warnings.push(Warning {
                    object: display.clone(),
                    message: format!("port {} is out of range; skipped", p.port),
                });
                continue;
            };
            let pname = p.name.clone().unwrap_or_default();
            let target = match &p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(u32::try_from(*n).unwrap_or(port)),
                Some(IntOrString::String(s)) => match s.parse::<u32>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(s.clone()),
                },
                None => TargetPort::Number(port),
            };
            let protocol = if p.protocol.as_deref() == Some("UDP") {
                Protocol::Udp
            } else {
                port_protocol(&pname, p.app_protocol.as_deref())
            };
            ports.push(ServicePortInfo {
                name: pname,
                port,
                target,
                protocol,
            });
        }
        let addresses: Vec<String> = spec
            .cluster_ips
            .clone()
            .filter(|v| !v.is_empty())
            .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
            .unwrap_or_default()
            .into_iter()
            .filter(|ip| !ip.is_empty() && ip != "None")
            .collect();
        let export: Vec<String> = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
            .map(|v| v.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default();
        let host = format!("{name}.{ns}.svc.{}", self.mesh.domain_suffix);
        let selector = spec.selector.clone();

        let own_slices: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|sl| {
                sl.metadata.namespace.as_deref() == Some(ns.as_str())
                    && sl
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        == Some(&name)
            })
            .collect();
        let mut endpoints = if own_slices.is_empty() {
            self.endpoints_from_pods(&ns, selector.as_ref(), &ports, pods)
        } else {
            self.endpoints_from_slices(&ns, &own_slices, &ports, pods)
        };
        if let Some(sel) = &selector {
            for (meta, we) in workload_entries {
                if meta.namespace == ns && !sel.is_empty() && selector_matches(sel, &we.labels) {
                    endpoints.extend(self.workload_entry_endpoint(meta, we, &ports));
                }
            }
        }
        Some(ServiceInfo {
            host,
            namespace: ns.clone(),
            kube_name: Some(name.clone()),
            addresses,
            ports,
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: ExportTo::parse(&export, &ns),
            origin: format!("/apis/v1/namespaces/{ns}/service/{name}"),
            endpoints,
            subject_alt_names: Vec::new(),
            selector,
        })
    }

    fn endpoints_from_slices(
        &mut self,
        ns: &str,
        slices: &[&EndpointSlice],
        ports: &[ServicePortInfo],
        pods: &HashMap<(String, String), PodInfo>,
    ) -> Vec<EndpointInfo> {
        let mut out: Vec<EndpointInfo> = Vec::new();
        for sl in slices {
            if sl.address_type == "FQDN" {
                continue;
            }
            // Service port -> endpoint port, matched by port name as Kubernetes does.
            let mut port_map = BTreeMap::new();
            for sp in ports {
                let found = sl
                    .ports
                    .iter()
                    .flatten()
                    .find(|ep| ep.name.clone().unwrap_or_default() == sp.name);
                if let Some(n) = found
                    .and_then(|ep| ep.port)
                    .and_then(|n| u32::try_from(n).ok())
                {
                    port_map.insert(sp.port, n);
                }
            }
            for ep in &sl.endpoints {
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
                let health = if terminating {
                    Health::Draining
                } else if ready {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                };
                let pod = ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        let pns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
                        pods.get(&(pns, r.name.clone()?))
                    });
                let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
                let sa = pod.map(|p| p.service_account.clone());
                let locality = locality_of(&labels, ep.zone.as_deref());
                for addr in &ep.addresses {
                    out.push(EndpointInfo {
                        address: addr.clone(),
                        ports: port_map.clone(),
                        mesh_tls: labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio"),
                        labels: labels.clone(),
                        locality: locality.clone(),
                        weight: 1,
                        health,
                        identity: sa
                            .as_deref()
                            .map(|sa| spiffe(&self.mesh.trust_domain, ns, sa))
                            .unwrap_or_default(),
                        network: String::new(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.address.cmp(&b.address));
        out.dedup_by(|a, b| a.address == b.address && a.ports == b.ports);
        out
    }

    fn endpoints_from_pods(
        &mut self,
        ns: &str,
        selector: Option<&BTreeMap<String, String>>,
        ports: &[ServicePortInfo],
        pods: &HashMap<(String, String), PodInfo>,
    ) -> Vec<EndpointInfo> {
        // Without EndpointSlices (e.g. inputs assembled by hand) the selector picks the pods.
        let Some(sel) = selector.filter(|s| !s.is_empty()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut keys: Vec<&(String, String)> = pods.keys().filter(|(pns, _)| pns == ns).collect();
        keys.sort();
        for key in keys {
            let pod = &pods[key];
            let Some(ip) = &pod.ip else { continue };
            if !selector_matches(sel, &pod.labels) {
                continue;
            }
            let port_map = ports
                .iter()
                .filter_map(|sp| {
                    let target = match &sp.target {
                        TargetPort::Number(n) => Some(*n),
                        TargetPort::Name(name) => pod.container_ports.get(name).copied(),
                    }?;
                    Some((sp.port, target))
                })
                .collect();
            out.push(EndpointInfo {
                address: ip.clone(),
                ports: port_map,
                mesh_tls: pod.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio"),
                locality: locality_of(&pod.labels, None),
                labels: pod.labels.clone(),
                weight: 1,
                health: if pod.ready {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                },
                identity: spiffe(&self.mesh.trust_domain, ns, &pod.service_account),
                network: String::new(),
            });
        }
        out
    }

    fn workload_entry_endpoint(
        &mut self,
        meta: &ConfigMeta,
        we: &WorkloadEntrySpec,
        ports: &[ServicePortInfo],
    ) -> Option<EndpointInfo> {
        let Some(address) = we.address.clone().filter(|a| !a.is_empty()) else {
            self.warn(meta, "no address; endpoint skipped");
            return None;
        };
        let port_map = ports
            .iter()
            .map(|sp| {
                let target = we.ports.get(&sp.name).copied().unwrap_or(match &sp.target {
                    TargetPort::Number(n) => *n,
                    TargetPort::Name(_) => sp.port,
                });
                (sp.port, target)
            })
            .collect();
        let sa = we
            .service_account
            .clone()
            .unwrap_or_else(|| "default".to_string());
        Some(EndpointInfo {
            address,
            ports: port_map,
            mesh_tls: we.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio"),
            labels: we.labels.clone(),
            locality: we.locality.clone().unwrap_or_default(),
            weight: we.weight.unwrap_or(1).max(1),
            health: Health::Healthy,
            identity: spiffe(&self.mesh.trust_domain, &meta.namespace, &sa),
            network: we.network.clone().unwrap_or_default(),
        })
    }

    fn service_entry(
        &mut self,
        meta: &ConfigMeta,
        se: &ServiceEntrySpec,
        workload_entries: &[(ConfigMeta, WorkloadEntrySpec)],
    ) -> Vec<ServiceInfo> {
        let resolution = match se.resolution.unwrap_or(ServiceEntryResolution::None) {
            ServiceEntryResolution::None => Resolution::Passthrough,
            ServiceEntryResolution::Static => Resolution::Static,
            ServiceEntryResolution::Dns | ServiceEntryResolution::DynamicDns => Resolution::Dns,
            ServiceEntryResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
        };
        let mesh_external = se.location.unwrap_or(ServiceEntryLocation::MeshExternal)
            == ServiceEntryLocation::MeshExternal;
        let ports: Vec<ServicePortInfo> = se
            .ports
            .iter()
            .map(|p| ServicePortInfo {
                name: p.name.clone(),
                port: p.number,
                target: TargetPort::Number(p.target_port.unwrap_or(p.number)),
                protocol: p
                    .protocol
                    .as_deref()
                    .and_then(explicit_protocol)
                    .unwrap_or_else(|| port_protocol(&p.name, None)),
            })
            .collect();
        let mut endpoints: Vec<EndpointInfo> = se
            .endpoints
            .iter()
            .filter_map(|we| self.workload_entry_endpoint(meta, we, &ports))
            .collect();
        if let Some(sel) = se.workload_selector.as_ref().map(|s| &s.labels) {
            for (we_meta, we) in workload_entries {
                if we_meta.namespace == meta.namespace && selector_matches(sel, &we.labels) {
                    endpoints.extend(self.workload_entry_endpoint(we_meta, we, &ports));
                }
            }
        }
        let export_to = ExportTo::parse(&se.export_to, &meta.namespace);
        se.hosts
            .iter()
            .map(|h| {
                let host = self.fqdn(h, &meta.namespace);
                let mut eps = endpoints.clone();
                if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
                    && eps.is_empty()
                {
                    // DNS without endpoints: the proxy resolves the host itself.
                    eps.push(EndpointInfo {
                        address: host.clone(),
                        ports: ports.iter().map(|p| (p.port, p.port)).collect(),
                        labels: BTreeMap::new(),
                        locality: String::new(),
                        weight: 1,
                        health: Health::Healthy,
                        identity: String::new(),
                        mesh_tls: false,
                        network: String::new(),
                    });
                }
                ServiceInfo {
                    host,
                    namespace: meta.namespace.clone(),
                    kube_name: None,
                    addresses: se.addresses.clone(),
                    ports: ports.clone(),
                    resolution,
                    mesh_external,
                    export_to: export_to.clone(),
                    origin: meta.origin.clone(),
                    endpoints: eps,
                    subject_alt_names: se.subject_alt_names.clone(),
                    selector: se.workload_selector.as_ref().map(|s| s.labels.clone()),
                }
            })
            .collect()
    }
}

/// `region/zone/subzone` from Istio's `istio-locality` / topology labels and the slice zone.
fn locality_of(labels: &BTreeMap<String, String>, zone: Option<&str>) -> String {
    if let Some(l) = labels.get("istio-locality") {
        return l.replace('.', "/");
    }
    let region = labels
        .get("topology.kubernetes.io/region")
        .map(String::as_str)
        .unwrap_or("");
    let zone = zone
        .or_else(|| {
            labels
                .get("topology.kubernetes.io/zone")
                .map(String::as_str)
        })
        .unwrap_or("");
    let subzone = labels
        .get("topology.istio.io/subzone")
        .map(String::as_str)
        .unwrap_or("");
    if region.is_empty() && zone.is_empty() && subzone.is_empty() {
        return String::new();
    }
    format!("{region}/{zone}/{subzone}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces() -> BTreeSet<String> {
        ["default", "prod"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_resolution_table() {
        let cases = [
            ("reviews", "default", "reviews.default.svc.cluster.local"),
            ("reviews.prod", "default", "reviews.prod.svc.cluster.local"),
            (
                "reviews.prod.svc.cluster.local",
                "default",
                "reviews.prod.svc.cluster.local",
            ),
            ("www.example.com", "default", "www.example.com"),
            ("example.com", "default", "example.com"),
            ("*.example.com", "default", "*.example.com"),
            ("*", "default", "*"),
            ("10.0.0.1", "default", "10.0.0.1"),
        ];
        for (host, ns, want) in cases {
            assert_eq!(
                resolve_host(host, ns, "cluster.local", &namespaces()),
                want,
                "{host}"
            );
        }
    }

    #[test]
    fn wildcard_matching_table() {
        let cases = [
            ("*", "anything.example.com", true),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "*.a.example.com", true),
            ("a.example.com", "a.example.com", true),
            ("a.example.com", "b.example.com", false),
        ];
        for (pattern, host, want) in cases {
            assert_eq!(host_matches(pattern, host), want, "{pattern} vs {host}");
        }
        assert!(host_specificity("a.example.com") > host_specificity("*.a.example.com"));
        assert!(host_specificity("*.a.example.com") > host_specificity("*.example.com"));
        assert!(host_specificity("*.example.com") > host_specificity("*"));
    }

    #[test]
    fn protocol_from_port_name_and_app_protocol() {
        let cases = [
            ("http", None, Protocol::Http),
            ("http-web", None, Protocol::Http),
            ("http2", None, Protocol::Http2),
            ("grpc-api", None, Protocol::Grpc),
            ("tcp-db", None, Protocol::Tcp),
            ("https", None, Protocol::Https),
            ("tls-x", None, Protocol::Tls),
            ("mongo", None, Protocol::Mongo),
            ("redis", None, Protocol::Redis),
            ("mysql", None, Protocol::Mysql),
            // Istio: `http2myservice` is not a valid prefix; unnamed ports are TCP.
            ("http2myservice", None, Protocol::Tcp),
            ("", None, Protocol::Tcp),
            ("web", Some("http"), Protocol::Http),
            ("web", Some("kubernetes.io/h2c"), Protocol::Http2),
            ("tcp", Some("grpc"), Protocol::Grpc),
        ];
        for (name, app, want) in cases {
            assert_eq!(port_protocol(name, app), want, "{name} {app:?}");
        }
    }

    #[test]
    fn export_to_table() {
        let e = ExportTo::parse(&["."], "a");
        assert!(e.visible_to("a") && !e.visible_to("b"));
        assert!(ExportTo::parse::<&str>(&[], "a").visible_to("b"));
        assert!(ExportTo::parse(&["*"], "a").visible_to("b"));
        assert!(!ExportTo::parse(&["~"], "a").visible_to("a"));
        let e = ExportTo::parse(&[".", "b"], "a");
        assert!(e.visible_to("a") && e.visible_to("b") && !e.visible_to("c"));
    }

    #[test]
    fn gateway_names_are_qualified() {
        assert_eq!(qualify_gateway("mesh", "x"), "mesh");
        assert_eq!(
            qualify_gateway("bookinfo-gateway", "default"),
            "default/bookinfo-gateway"
        );
        assert_eq!(
            qualify_gateway("istio-system/gw", "default"),
            "istio-system/gw"
        );
        assert_eq!(
            qualify_gateway("gw.istio-system.svc.cluster.local", "default"),
            "istio-system/gw"
        );
    }
}
