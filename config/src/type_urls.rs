//! Type URLs of the resources carried by the discovery protocol (the one place that names them).
//!
//! Each type's resources are `halyard.config.v1` messages packed in `google.protobuf.Any`.

/// `halyard.config.v1.Cluster`, named `outbound|<port>|<subset>|<fqdn>` / `inbound|<port>||`.
pub const CLUSTER: &str = "type.halyard.dev/halyard.config.v1.Cluster";
/// `halyard.config.v1.ClusterEndpoints`, named like the cluster it belongs to.
pub const ENDPOINTS: &str = "type.halyard.dev/halyard.config.v1.ClusterEndpoints";
/// `halyard.config.v1.Listener`, named `<address>_<port>` (e.g. `0.0.0.0_15001`).
pub const LISTENER: &str = "type.halyard.dev/halyard.config.v1.Listener";
/// `halyard.config.v1.RouteConfiguration`, named by port (`9080`) or gateway route (`http.80`).
pub const ROUTE: &str = "type.halyard.dev/halyard.config.v1.RouteConfiguration";
/// `halyard.config.v1.Secret` (workload certificate, gateway certificates, root CA).
pub const SECRET: &str = "type.halyard.dev/halyard.config.v1.Secret";
/// `halyard.config.v1.AuthorizationPolicy`, named `<namespace>/<name>`.
pub const AUTHORIZATION: &str = "type.halyard.dev/halyard.config.v1.AuthorizationPolicy";

/// Order in which a push delivers types so that nothing references a resource the proxy lacks:
/// secrets and clusters, then endpoints, then listeners, then routes, then authorization.
pub const PUSH_ORDER: [&str; 6] = [SECRET, CLUSTER, ENDPOINTS, LISTENER, ROUTE, AUTHORIZATION];
