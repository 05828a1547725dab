//! Istio's cluster names: `outbound|<port>|<subset>|<fqdn>`, `inbound|<port>||` and the fixed
//! names of the passthrough and blackhole clusters. The one place that builds and parses them.

use std::fmt;
use std::str::FromStr;

/// A cluster name, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterName {
    /// `outbound|<port>|<subset>|<host>` (subset may be empty).
    Outbound {
        port: u32,
        subset: String,
        host: String,
    },
    /// `inbound|<port>||` (Istio leaves subset and host empty for sidecar inbound clusters).
    Inbound { port: u32 },
    /// `PassthroughCluster`: original destination (outboundTrafficPolicy ALLOW_ANY).
    Passthrough,
    /// `InboundPassthroughCluster`: inbound traffic to ports no Service declares.
    InboundPassthrough,
    /// `BlackHoleCluster`: drop (outboundTrafficPolicy REGISTRY_ONLY).
    BlackHole,
}

pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// Why a string is not a cluster name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "cluster name {name:?}: expected `outbound|<port>|<subset>|<host>` or `inbound|<port>||`"
    )]
    Shape { name: String },
    #[error("cluster name {name:?}: port {port:?} is not a number between 1 and 65535")]
    Port { name: String, port: String },
    #[error("cluster name {name:?}: outbound cluster has an empty host")]
    EmptyHost { name: String },
}

impl ClusterName {
    pub fn outbound(port: u32, subset: &str, host: &str) -> Self {
        ClusterName::Outbound {
            port,
            subset: subset.to_string(),
            host: host.to_string(),
        }
    }

    /// The name as a string (same as `to_string()`).
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterName::Outbound { port, subset, host } => {
                write!(f, "outbound|{port}|{subset}|{host}")
            }
            ClusterName::Inbound { port } => write!(f, "inbound|{port}||"),
            ClusterName::Passthrough => f.write_str(PASSTHROUGH_CLUSTER),
            ClusterName::InboundPassthrough => f.write_str(INBOUND_PASSTHROUGH_CLUSTER),
            ClusterName::BlackHole => f.write_str(BLACKHOLE_CLUSTER),
        }
    }
}

impl FromStr for ClusterName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, NameError> {
        match name {
            PASSTHROUGH_CLUSTER => return Ok(ClusterName::Passthrough),
            INBOUND_PASSTHROUGH_CLUSTER => return Ok(ClusterName::InboundPassthrough),
            BLACKHOLE_CLUSTER => return Ok(ClusterName::BlackHole),
            _ => {}
        }
        let shape = || NameError::Shape {
            name: name.to_string(),
        };
        let parts: Vec<&str> = name.splitn(4, '|').collect();
        let [direction, port, subset, host] = parts.as_slice() else {
            return Err(shape());
        };
        let port_num = port
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| NameError::Port {
                name: name.to_string(),
                port: (*port).to_string(),
            })?;
        match *direction {
            "outbound" if host.is_empty() => Err(NameError::EmptyHost {
                name: name.to_string(),
            }),
            "outbound" => Ok(ClusterName::outbound(port_num, subset, host)),
            // Istio also names inbound clusters `inbound|<port>|<subset>|<host>` in some versions;
            // the port is what identifies the local application.
            "inbound" => Ok(ClusterName::Inbound { port: port_num }),
            _ => Err(shape()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        for name in [
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound|80||www.example.com",
            "inbound|9080||",
            "PassthroughCluster",
            "InboundPassthroughCluster",
            "BlackHoleCluster",
        ] {
            let parsed: ClusterName = name.parse().unwrap();
            assert_eq!(parsed.to_string(), name);
        }
    }

    #[test]
    fn parses_fields() {
        assert_eq!(
            "outbound|9080|v3|reviews.default.svc.cluster.local".parse::<ClusterName>(),
            Ok(ClusterName::outbound(
                9080,
                "v3",
                "reviews.default.svc.cluster.local"
            ))
        );
    }

    #[test]
    fn rejects_malformed_names_with_reason() {
        let cases = [
            ("outbound|x|v1|h", "port \"x\""),
            ("outbound|0||h", "port \"0\""),
            ("outbound|80||", "empty host"),
            ("sideways|80||h", "expected"),
            ("outbound|80", "expected"),
        ];
        for (name, want) in cases {
            let err = name.parse::<ClusterName>().unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
