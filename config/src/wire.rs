//! How a `ProxyResources` travels over the discovery protocol: split into named, versioned
//! per-type resources (server side) and assembled back (proxy side). One definition for both ends.

use std::collections::BTreeMap;

use prost::Message;

use crate::discovery::Resource;
use crate::resources::{
    AuthorizationPolicy, Cluster, ClusterEndpoints, Listener, RouteConfiguration, Secret,
};
use crate::{ProxyResources, type_urls};

/// A resource set that could not be decoded; names the type and resource.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("resource {name:?} of type {type_url}: cannot decode payload: {source}")]
    Decode {
        type_url: String,
        name: String,
        source: prost::DecodeError,
    },
    #[error("resource {name:?} listed under type {expected} carries a payload of type {actual:?}")]
    TypeMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("resource {name:?} of type {type_url} has no payload")]
    Missing { type_url: String, name: String },
}

/// Short name of a type (`cds`, `eds`, `lds`, `rds`, `sds`, `authz`) for metrics and proxy-status.
pub fn short_name(type_url: &str) -> &'static str {
    match type_url {
        type_urls::CLUSTER => "cds",
        type_urls::ENDPOINTS => "eds",
        type_urls::LISTENER => "lds",
        type_urls::ROUTE => "rds",
        type_urls::SECRET => "sds",
        type_urls::AUTHORIZATION => "authz",
        _ => "unknown",
    }
}

/// Stable 64-bit FNV-1a of the encoded resource, as hex: equal content, equal version, in
/// every process and build.
pub fn content_version(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn pack<M: Message>(type_url: &str, name: &str, m: &M) -> Resource {
    let value = m.encode_to_vec();
    Resource {
        name: name.to_string(),
        version: content_version(&value),
        resource: Some(prost_types::Any {
            type_url: type_url.to_string(),
            value,
        }),
        aliases: Vec::new(),
    }
}

/// The resources of one type in `r`, each named and versioned; an unknown type URL gives none.
pub fn split(r: &ProxyResources, type_url: &str) -> Vec<Resource> {
    match type_url {
        type_urls::CLUSTER => r
            .clusters
            .iter()
            .map(|c| pack(type_url, &c.name, c))
            .collect(),
        type_urls::ENDPOINTS => r
            .endpoints
            .iter()
            .map(|e| pack(type_url, &e.cluster_name, e))
            .collect(),
        type_urls::LISTENER => r
            .listeners
            .iter()
            .map(|l| pack(type_url, &l.name, l))
            .collect(),
        type_urls::ROUTE => r
            .route_configs
            .iter()
            .map(|rc| pack(type_url, &rc.name, rc))
            .collect(),
        type_urls::SECRET => r
            .secrets
            .iter()
            .map(|s| pack(type_url, &s.name, s))
            .collect(),
        type_urls::AUTHORIZATION => r
            .authorization
            .iter()
            .map(|a| pack(type_url, &a.name, a))
            .collect(),
        _ => Vec::new(),
    }
}

fn decode_all<M: Message + Default>(
    sets: &BTreeMap<String, BTreeMap<String, Resource>>,
    type_url: &str,
) -> Result<Vec<M>, WireError> {
    let Some(set) = sets.get(type_url) else {
        return Ok(Vec::new());
    };
    set.values()
        .map(|res| {
            let any = res.resource.as_ref().ok_or_else(|| WireError::Missing {
                type_url: type_url.to_string(),
                name: res.name.clone(),
            })?;
            if any.type_url != type_url {
                return Err(WireError::TypeMismatch {
                    name: res.name.clone(),
                    expected: type_url.to_string(),
                    actual: any.type_url.clone(),
                });
            }
            M::decode(any.value.as_slice()).map_err(|source| WireError::Decode {
                type_url: type_url.to_string(),
                name: res.name.clone(),
                source,
            })
        })
        .collect()
}

/// Rebuilds a snapshot from per-type resource sets (type URL -> name -> resource); missing types
/// are empty. Resources come out sorted by name.
pub fn assemble(
    sets: &BTreeMap<String, BTreeMap<String, Resource>>,
    version: &str,
) -> Result<ProxyResources, WireError> {
    Ok(ProxyResources {
        version: version.to_string(),
        listeners: decode_all::<Listener>(sets, type_urls::LISTENER)?,
        route_configs: decode_all::<RouteConfiguration>(sets, type_urls::ROUTE)?,
        clusters: decode_all::<Cluster>(sets, type_urls::CLUSTER)?,
        endpoints: decode_all::<ClusterEndpoints>(sets, type_urls::ENDPOINTS)?,
        secrets: decode_all::<Secret>(sets, type_urls::SECRET)?,
        authorization: decode_all::<AuthorizationPolicy>(sets, type_urls::AUTHORIZATION)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProxyResources {
        ProxyResources {
            version: "1".into(),
            clusters: vec![
                Cluster {
                    name: "outbound|9080||b.default.svc.cluster.local".into(),
                    connect_timeout_ms: 10_000,
                    ..Default::default()
                },
                Cluster {
                    name: "outbound|9080||a.default.svc.cluster.local".into(),
                    ..Default::default()
                },
            ],
            endpoints: vec![ClusterEndpoints {
                cluster_name: "outbound|9080||a.default.svc.cluster.local".into(),
                ..Default::default()
            }],
            listeners: vec![Listener {
                name: "0.0.0.0_15001".into(),
                port: 15001,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn sets(r: &ProxyResources) -> BTreeMap<String, BTreeMap<String, Resource>> {
        type_urls::PUSH_ORDER
            .iter()
            .map(|t| {
                let per: BTreeMap<String, Resource> = split(r, t)
                    .into_iter()
                    .map(|x| (x.name.clone(), x))
                    .collect();
                (t.to_string(), per)
            })
            .collect()
    }

    #[test]
    fn split_then_assemble_round_trips() {
        let r = sample();
        let back = assemble(&sets(&r), "1").unwrap();
        let mut want = r.clone();
        want.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back, want);
    }

    #[test]
    fn versions_follow_content() {
        let r = sample();
        let a = split(&r, type_urls::CLUSTER);
        let mut r2 = r.clone();
        r2.clusters[0].connect_timeout_ms = 5_000;
        let b = split(&r2, type_urls::CLUSTER);
        assert_ne!(a[0].version, b[0].version);
        assert_eq!(a[1].version, b[1].version);
        assert!(split(&r, "type.example/Unknown").is_empty());
    }

    #[test]
    fn decode_errors_name_the_resource() {
        let mut s = sets(&sample());
        let res = s
            .get_mut(type_urls::LISTENER)
            .and_then(|m| m.get_mut("0.0.0.0_15001"))
            .unwrap();
        res.resource.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
        let err = assemble(&s, "2").unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0_15001") && err.contains("Listener"),
            "{err}"
        );

        let mut s = sets(&sample());
        let res = s
            .get_mut(type_urls::LISTENER)
            .and_then(|m| m.get_mut("0.0.0.0_15001"))
            .unwrap();
        res.resource.as_mut().unwrap().type_url = type_urls::CLUSTER.into();
        let err = assemble(&s, "2").unwrap_err().to_string();
        assert!(err.contains("carries a payload of type"), "{err}");
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name(type_urls::CLUSTER), "cds");
        assert_eq!(short_name(type_urls::AUTHORIZATION), "authz");
        assert_eq!(short_name("x"), "unknown");
    }
}
