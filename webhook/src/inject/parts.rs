//! The pieces injection adds to a pod, as typed values that borrow from the template, the settings and the
//! pod's annotations. They serialise straight into the admission patch (no `serde_json::Value` tree, no
//! hashing, few allocations) and into a `Value` (`serde_json::to_value`) when a whole injected pod is built;
//! field order is the order of the keys in the output, the same in both.

use std::borrow::Cow;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::Value;

pub(super) const PROXY_MOUNTS: [Mount; 8] = [
    Mount::new("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
    Mount::new("credential-socket", "/var/run/secrets/credential-uds"),
    Mount::new(
        "workload-certs",
        "/var/run/secrets/workload-spiffe-credentials",
    ),
    Mount::new("istiod-ca-cert", "/var/run/secrets/istio"),
    Mount::new("istio-data", "/var/lib/istio/data"),
    Mount::new("istio-envoy", "/etc/istio/proxy"),
    Mount::new("istio-token", "/var/run/secrets/tokens"),
    Mount::new("istio-podinfo", "/etc/istio/pod"),
];

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Mount {
    name: &'static str,
    mount_path: &'static str,
}

impl Mount {
    const fn new(name: &'static str, mount_path: &'static str) -> Self {
        Mount { name, mount_path }
    }
}

/// The proxy's volume mounts: ours, then the pod's `sidecar.istio.io/userVolumeMount` ones.
#[derive(Debug, Clone)]
pub(super) struct Mounts {
    pub ours: &'static [Mount],
    pub user: Vec<Value>,
}

impl Serialize for Mounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.ours.len() + self.user.len()))?;
        for m in self.ours {
            seq.serialize_element(m)?;
        }
        for m in &self.user {
            seq.serialize_element(m)?;
        }
        seq.end()
    }
}

/// One `env` entry: a literal value or a reference.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnvVar<'a> {
    pub name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource>,
}

impl<'a> EnvVar<'a> {
    pub fn value(name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    pub fn field(name: &'static str, field_path: &'static str) -> Self {
        EnvVar {
            name: Cow::Borrowed(name),
            value: None,
            value_from: Some(EnvSource::FieldRef { field_path }),
        }
    }

    pub fn resource(name: &'static str, resource: &'static str) -> Self {
        EnvVar {
            name: Cow::Borrowed(name),
            value: None,
            value_from: Some(EnvSource::ResourceFieldRef {
                resource,
                divisor: "1",
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) enum EnvSource {
    #[serde(rename = "fieldRef")]
    FieldRef {
        #[serde(rename = "fieldPath")]
        field_path: &'static str,
    },
    #[serde(rename = "resourceFieldRef")]
    ResourceFieldRef {
        resource: &'static str,
        divisor: &'static str,
    },
}

/// The proxy's env: the entries every proxy has, inline, then the others.
#[derive(Debug, Clone)]
pub(super) struct Env<'a> {
    pub fixed: [EnvVar<'a>; 18],
    pub rest: Vec<EnvVar<'a>>,
}

impl Serialize for Env<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.fixed.iter().chain(&self.rest))
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ContainerPort {
    pub container_port: u16,
    pub protocol: &'static str,
    pub name: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Capabilities {
    pub drop: [&'static str; 1],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProxySecurityContext {
    pub allow_privilege_escalation: bool,
    pub capabilities: Capabilities,
    pub privileged: bool,
    pub read_only_root_filesystem: bool,
    pub run_as_non_root: bool,
    pub run_as_user: u32,
    pub run_as_group: u32,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct ExecCommand<'a> {
    pub command: &'a [String],
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct ExecHandler<'a> {
    pub exec: ExecCommand<'a>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Lifecycle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_start: Option<ExecHandler<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<ExecHandler<'a>>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct HttpGet {
    pub path: &'static str,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Probe {
    pub http_get: HttpGet,
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub failure_threshold: u32,
}

/// The `istio-proxy` container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProxyContainer<'a> {
    pub name: &'static str,
    pub image: &'a str,
    pub command: &'a [String],
    pub args: &'a [String],
    pub ports: [ContainerPort; 1],
    pub env: Env<'a>,
    pub resources: Cow<'a, Value>,
    pub security_context: ProxySecurityContext,
    pub volume_mounts: Mounts,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub image_pull_policy: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct InitCapabilities {
    add: [&'static str; 2],
    drop: [&'static str; 1],
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InitSecurityContext {
    allow_privilege_escalation: bool,
    privileged: bool,
    capabilities: InitCapabilities,
    read_only_root_filesystem: bool,
    run_as_group: u32,
    run_as_non_root: bool,
    run_as_user: u32,
}

/// istio-init needs root with NET_ADMIN/NET_RAW to install the capture rules.
pub(super) const INIT_SECURITY_CONTEXT: InitSecurityContext = InitSecurityContext {
    allow_privilege_escalation: false,
    privileged: false,
    capabilities: InitCapabilities {
        add: ["NET_ADMIN", "NET_RAW"],
        drop: ["ALL"],
    },
    read_only_root_filesystem: false,
    run_as_group: 0,
    run_as_non_root: false,
    run_as_user: 0,
};

/// The `istio-init` container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InitContainer<'a> {
    pub name: &'static str,
    pub image: &'a str,
    pub command: &'a [String],
    pub args: Vec<Cow<'a, str>>,
    pub resources: Cow<'a, Value>,
    pub security_context: InitSecurityContext,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub image_pull_policy: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar<'a>>>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct EmptyDir {
    #[serde(skip_serializing_if = "Option::is_none")]
    medium: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct FieldPath {
    #[serde(rename = "fieldPath")]
    field_path: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DownwardItem {
    path: &'static str,
    field_ref: FieldPath,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct DownwardApi {
    items: [DownwardItem; 2],
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Token<'a> {
    path: &'static str,
    expiration_seconds: u32,
    audience: &'a str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenSource<'a> {
    service_account_token: Token<'a>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Projected<'a> {
    sources: [TokenSource<'a>; 1],
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct NameRef<'a> {
    pub name: &'a str,
}

/// One of the volumes the proxy mounts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Volume<'a> {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    empty_dir: Option<EmptyDir>,
    #[serde(rename = "downwardAPI", skip_serializing_if = "Option::is_none")]
    downward_api: Option<DownwardApi>,
    #[serde(skip_serializing_if = "Option::is_none")]
    projected: Option<Projected<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_map: Option<NameRef<'a>>,
}

impl<'a> Volume<'a> {
    const fn empty_dir(name: &'static str, medium: Option<&'static str>) -> Self {
        Volume {
            name,
            empty_dir: Some(EmptyDir { medium }),
            downward_api: None,
            projected: None,
            config_map: None,
        }
    }

    /// The volumes named in `super::VOLUMES`, in the order they are added to the pod.
    pub fn all(token_audience: &'a str, ca_root_config_map: &'a str) -> [Volume<'a>; 8] {
        let field = |path, field_path| DownwardItem {
            path,
            field_ref: FieldPath { field_path },
        };
        [
            Volume::empty_dir("workload-socket", None),
            Volume::empty_dir("credential-socket", None),
            Volume::empty_dir("workload-certs", None),
            Volume::empty_dir("istio-envoy", Some("Memory")),
            Volume::empty_dir("istio-data", None),
            Volume {
                name: "istio-podinfo",
                empty_dir: None,
                downward_api: Some(DownwardApi {
                    items: [
                        field("labels", "metadata.labels"),
                        field("annotations", "metadata.annotations"),
                    ],
                }),
                projected: None,
                config_map: None,
            },
            Volume {
                name: "istio-token",
                empty_dir: None,
                downward_api: None,
                projected: Some(Projected {
                    sources: [TokenSource {
                        service_account_token: Token {
                            path: "istio-token",
                            expiration_seconds: 43200,
                            audience: token_audience,
                        },
                    }],
                }),
                config_map: None,
            },
            Volume {
                name: "istiod-ca-cert",
                empty_dir: None,
                downward_api: None,
                projected: None,
                config_map: Some(NameRef {
                    name: ca_root_config_map,
                }),
            },
        ]
    }
}

/// Any one item added to a pod list.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item<'p, 'a> {
    Init(&'p InitContainer<'a>),
    Proxy(&'p ProxyContainer<'a>),
    Volume(&'p Volume<'a>),
    Secret(&'a str),
    /// A `sidecar.istio.io/userVolume` volume.
    Json(&'p Value),
}

impl Serialize for Item<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Init(c) => c.serialize(s),
            Item::Proxy(c) => c.serialize(s),
            Item::Volume(v) => v.serialize(s),
            Item::Secret(name) => NameRef { name }.serialize(s),
            Item::Json(v) => v.serialize(s),
        }
    }
}

/// Two runs of items serialised as one JSON array.
pub(super) struct Chain<'x, 'p, 'a>(pub &'x [Item<'p, 'a>], pub &'x [Item<'p, 'a>]);

impl Serialize for Chain<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().chain(self.1))
    }
}
