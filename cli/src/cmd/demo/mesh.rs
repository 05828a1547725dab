//! The demo mesh on loopback (pure: addresses and Istio YAML, no I/O).
//!
//! Addresses, with `N` the topology's second octet (10 by default):
//! - service VIPs `127.N.0.x:9080` (productpage .1, details .2, reviews .3, ratings .4), bound by the demo
//!   client's proxy, which is where the tour's requests and a user's `curl` enter the mesh;
//! - each workload's "pod IP" `127.N.1.i`: its sidecar's inbound listener (`:9080`, the WorkloadEntry address),
//!   admin (`:15000`), readiness (`:15021`) and Prometheus (`:15090`);
//! - each workload's "pod localhost" `127.N.2.i`: the application (`:9080`), reached only through the
//!   sidecar's inbound listener;
//! - each workload's egress address `127.N.3.i` (the node's `local_bind_address`): the sidecar's outbound
//!   listener (`:9080`), where the application sends its calls, routed by `Host` as Istio's `0.0.0.0:9080`
//!   listener does;
//! - the control plane (`halyard-operator` in local mode) at `127.N.4.1`: discovery on Istio's `:15010`,
//!   monitoring and `/debug/*` on `:15014`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde_json::{Value, json};

use super::app::{Role, SERVICE_PORT};

pub const NAMESPACE: &str = "default";

/// The services of the demo, in VIP order.
pub const SERVICES: [Role; 4] = [
    Role::Productpage,
    Role::Details,
    Role::Reviews,
    Role::Ratings,
];

/// One workload (a "pod"): a sample service version with its sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub role: Role,
    pub version: &'static str,
    /// Last octet of its addresses.
    pub index: u8,
}

impl Workload {
    /// `reviews-v2`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.role.name(), self.version)
    }

    /// Istio's proxy id, `<pod>.<namespace>`.
    pub fn proxy_id(&self) -> String {
        format!("{}.{NAMESPACE}", self.name())
    }

    pub fn service_account(&self) -> String {
        format!("bookinfo-{}", self.role.name())
    }
}

/// Bookinfo's workloads.
pub const WORKLOADS: [Workload; 6] = [
    Workload {
        role: Role::Productpage,
        version: "v1",
        index: 1,
    },
    Workload {
        role: Role::Details,
        version: "v1",
        index: 2,
    },
    Workload {
        role: Role::Reviews,
        version: "v1",
        index: 3,
    },
    Workload {
        role: Role::Reviews,
        version: "v2",
        index: 4,
    },
    Workload {
        role: Role::Reviews,
        version: "v3",
        index: 5,
    },
    Workload {
        role: Role::Ratings,
        version: "v1",
        index: 6,
    },
];

/// The demo's client (Istio's `sleep` pod): a proxy with no application, binding the service VIPs.
pub const CLIENT_NAME: &str = "demo-client";
const CLIENT_INDEX: u8 = 100;

pub const ADMIN_PORT: u16 = 15000;
pub const READY_PORT: u16 = 15021;
pub const PROMETHEUS_PORT: u16 = 15090;
/// The control plane's plaintext discovery and monitoring ports (Istio's).
pub const DISCOVERY_PORT: u16 = 15010;
pub const MONITORING_PORT: u16 = 15014;

/// Where everything listens: `127.<octet>.x.y`. Tests pick another octet so they can run beside a demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub octet: u8,
}

impl Topology {
    fn ip(&self, third: u8, fourth: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.octet, third, fourth)
    }

    fn addr(&self, third: u8, fourth: u8, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip(third, fourth), port))
    }

    /// The VIP of `service` (its position in [`SERVICES`] + 1).
    pub fn vip(&self, service: Role) -> Ipv4Addr {
        let pos = SERVICES.iter().position(|s| *s == service).unwrap_or(0) as u8;
        self.ip(0, pos + 1)
    }

    pub fn service_addr(&self, service: Role) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.vip(service), SERVICE_PORT))
    }

    /// The workload's "pod IP" (its WorkloadEntry address).
    pub fn pod_ip(&self, w: &Workload) -> Ipv4Addr {
        self.ip(1, w.index)
    }

    /// The sidecar's inbound listener.
    pub fn inbound_addr(&self, w: &Workload) -> SocketAddr {
        self.addr(1, w.index, SERVICE_PORT)
    }

    /// Where the application itself listens ("pod localhost").
    pub fn app_addr(&self, w: &Workload) -> SocketAddr {
        self.addr(2, w.index, SERVICE_PORT)
    }

    /// The sidecar's egress bind address (the node's `local_bind_address`).
    pub fn egress_ip(&self, w: &Workload) -> Ipv4Addr {
        self.ip(3, w.index)
    }

    /// The sidecar's outbound listener, where the application sends its calls.
    pub fn outbound_addr(&self, w: &Workload) -> SocketAddr {
        self.addr(3, w.index, SERVICE_PORT)
    }

    pub fn proxy_port(&self, w: &Workload, port: u16) -> SocketAddr {
        self.addr(1, w.index, port)
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        self.ip(1, CLIENT_INDEX)
    }

    pub fn client_port(&self, port: u16) -> SocketAddr {
        self.addr(1, CLIENT_INDEX, port)
    }

    /// The control plane's discovery (gRPC) address.
    pub fn discovery_addr(&self) -> SocketAddr {
        self.addr(4, 1, DISCOVERY_PORT)
    }

    /// The control plane's monitoring address (`/ready`, `/debug/syncz`, ...).
    pub fn monitoring_addr(&self) -> SocketAddr {
        self.addr(4, 1, MONITORING_PORT)
    }

    /// What proxies are given as `--discovery-address`.
    pub fn discovery_url(&self) -> String {
        format!("http://{}", self.discovery_addr())
    }

    /// What `halyard proxy-status --control-plane` is given.
    pub fn monitoring_url(&self) -> String {
        format!("http://{}", self.monitoring_addr())
    }
}

/// The `Host` header a client sends to reach `service`: its fully qualified name and port.
pub fn service_host(service: Role) -> String {
    format!("{}:{SERVICE_PORT}", fqdn(service))
}

/// The fully qualified host name of a service, as a Kubernetes Service would have it.
pub fn fqdn(service: Role) -> String {
    format!("{}.{NAMESPACE}.svc.cluster.local", service.name())
}

fn metadata(name: &str) -> Value {
    json!({"name": name, "namespace": NAMESPACE})
}

/// The ServiceEntry standing in for a Kubernetes Service: VIP, HTTP port, and the workloads selected by `app`.
pub fn service_entry(t: &Topology, service: Role) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": metadata(service.name()),
        "spec": {
            "hosts": [fqdn(service)],
            "addresses": [t.vip(service).to_string()],
            "ports": [{"number": SERVICE_PORT, "name": "http", "protocol": "HTTP"}],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "workloadSelector": {"labels": {"app": service.name()}},
        },
    })
}

/// The WorkloadEntry standing in for a pod: its address (the sidecar's inbound) and labels.
pub fn workload_entry(t: &Topology, w: &Workload) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": metadata(&w.name()),
        "spec": {
            "address": t.pod_ip(w).to_string(),
            "labels": {"app": w.role.name(), "version": w.version},
            "serviceAccount": w.service_account(),
        },
    })
}

/// The registry part of the mesh: every ServiceEntry and WorkloadEntry.
pub fn registry(t: &Topology) -> Vec<Value> {
    let mut docs: Vec<Value> = SERVICES.iter().map(|s| service_entry(t, *s)).collect();
    docs.extend(WORKLOADS.iter().map(|w| workload_entry(t, w)));
    docs
}

/// Bookinfo's `destination-rule-all.yaml`: one subset per version present.
pub fn destination_rule(service: Role, traffic_policy: Option<Value>) -> Value {
    let subsets: Vec<Value> = WORKLOADS
        .iter()
        .filter(|w| w.role == service)
        .map(|w| json!({"name": w.version, "labels": {"version": w.version}}))
        .collect();
    let mut spec = json!({"host": service.name(), "subsets": subsets});
    if let (Some(policy), Some(obj)) = (traffic_policy, spec.as_object_mut()) {
        obj.insert("trafficPolicy".into(), policy);
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": metadata(service.name()),
        "spec": spec,
    })
}

/// A VirtualService for `service` in the mesh with the given HTTP routes.
pub fn virtual_service(service: Role, http: Vec<Value>) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(service.name()),
        "spec": {"hosts": [service.name()], "http": http},
    })
}

/// A route destination: `service`'s subset `version`, with an optional weight.
pub fn destination(service: Role, version: &str, weight: Option<u32>) -> Value {
    let mut d = json!({"destination": {"host": service.name(), "subset": version}});
    if let (Some(w), Some(obj)) = (weight, d.as_object_mut()) {
        obj.insert("weight".into(), json!(w));
    }
    d
}

/// A match on `end-user: <user>` (how Bookinfo's login is seen by the mesh).
pub fn match_user(user: &str) -> Value {
    json!([{"headers": {"end-user": {"exact": user}}}])
}

/// A multi-document YAML stream of `docs`.
pub fn to_yaml(docs: &[Value]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(doc)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback_and_follow_the_plan() {
        let t = Topology { octet: 10 };
        assert_eq!(t.service_addr(Role::Reviews).to_string(), "127.10.0.3:9080");
        let w = WORKLOADS[3];
        assert_eq!(w.name(), "reviews-v2");
        assert_eq!(w.proxy_id(), "reviews-v2.default");
        assert_eq!(t.inbound_addr(&w).to_string(), "127.10.1.4:9080");
        assert_eq!(t.app_addr(&w).to_string(), "127.10.2.4:9080");
        assert_eq!(t.outbound_addr(&w).to_string(), "127.10.3.4:9080");
        assert_eq!(t.discovery_url(), "http://127.10.4.1:15010");
        assert_eq!(t.monitoring_url(), "http://127.10.4.1:15014");
        let mut all: Vec<SocketAddr> = WORKLOADS
            .iter()
            .flat_map(|w| {
                [
                    t.inbound_addr(w),
                    t.app_addr(w),
                    t.outbound_addr(w),
                    t.proxy_port(w, ADMIN_PORT),
                    t.proxy_port(w, READY_PORT),
                    t.proxy_port(w, PROMETHEUS_PORT),
                ]
            })
            .chain(SERVICES.iter().map(|s| t.service_addr(*s)))
            .chain([
                t.client_port(ADMIN_PORT),
                t.discovery_addr(),
                t.monitoring_addr(),
            ])
            .collect();
        assert!(all.iter().all(|a| a.ip().is_loopback()));
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "every listener has its own address");
    }

    #[test]
    fn registry_has_an_entry_per_service_and_workload() {
        let t = Topology { octet: 10 };
        let docs = registry(&t);
        assert_eq!(docs.len(), SERVICES.len() + WORKLOADS.len());
        let se = &docs[2];
        assert_eq!(se["kind"], "ServiceEntry");
        assert_eq!(se["spec"]["addresses"][0], "127.10.0.3");
        assert_eq!(se["spec"]["hosts"][0], "reviews.default.svc.cluster.local");
        let we = docs
            .iter()
            .find(|d| d["metadata"]["name"] == "reviews-v3")
            .unwrap();
        assert_eq!(we["spec"]["address"], "127.10.1.5");
        assert_eq!(we["spec"]["labels"]["version"], "v3");
    }

    #[test]
    fn destination_rules_list_the_versions_present() {
        let dr = destination_rule(Role::Reviews, None);
        let names: Vec<&str> = dr["spec"]["subsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["v1", "v2", "v3"]);
        assert!(dr["spec"].get("trafficPolicy").is_none());
    }

    #[test]
    fn yaml_is_a_document_stream() {
        let docs = vec![
            virtual_service(
                Role::Reviews,
                vec![json!({"route": [destination(Role::Reviews, "v1", None)]})],
            ),
            virtual_service(
                Role::Ratings,
                vec![json!({"route": [destination(Role::Ratings, "v1", Some(100))]})],
            ),
        ];
        let yaml = to_yaml(&docs).unwrap();
        assert_eq!(yaml.matches("---\n").count(), 2);
        assert!(yaml.contains("subset: v1"));
        assert!(yaml.contains("weight: 100"));
    }
}
