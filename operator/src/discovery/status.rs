//! Per-proxy, per-type sync status: what `/debug/syncz` serves and `halyard proxy-status` prints.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The body of `/debug/syncz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Version of the newest registry snapshot the control plane has seen (bumped on every config change,
    /// before debouncing).
    pub config_version: u64,
    pub proxies: Vec<ProxyStatus>,
}

/// One connected proxy as seen by one control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// Istio's proxy id, `<pod>.<namespace>`.
    pub proxy_id: String,
    /// Unique per stream: the same proxy reconnecting gets a new one.
    pub connection_id: String,
    pub namespace: String,
    pub proxy_version: String,
    /// The control-plane instance holding the stream (ISTIOD column).
    pub control_plane: String,
    /// `sotw` or `delta`.
    pub protocol: String,
    /// Seconds since the Unix epoch when the stream was opened.
    pub connected_at_unix: u64,
    /// The registry snapshot version this proxy's config was last computed from. With every type SYNCED and
    /// this equal to [`SyncReport::config_version`], the proxy runs the current config.
    pub config_version: u64,
    /// Keyed by the type's short name (`cds`, `eds`, `lds`, `rds`, `sds`, `authz`).
    pub types: BTreeMap<String, TypeStatus>,
}

/// ACK/NACK bookkeeping for one resource type on one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeStatus {
    pub type_url: String,
    /// Whether the proxy asked for this type at all.
    pub subscribed: bool,
    pub nonce_sent: Option<String>,
    pub version_sent: Option<String>,
    pub nonce_acked: Option<String>,
    pub version_acked: Option<String>,
    /// The reason given by the proxy's last NACK, cleared by the next ACK of the latest response.
    pub nack: Option<String>,
    /// Resources in the last response sent.
    pub resources_sent: usize,
    /// [`TypeStatus::state`] when the snapshot was taken (for readers of the JSON).
    #[serde(default)]
    pub status: Option<SyncState>,
}

/// The per-type state as `proxy-status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    #[serde(rename = "SYNCED")]
    Synced,
    #[serde(rename = "STALE")]
    Stale,
    #[serde(rename = "NOT SENT")]
    NotSent,
    #[serde(rename = "NACKED")]
    Nacked,
    /// The proxy never subscribed to this type.
    #[serde(rename = "IGNORED")]
    Ignored,
}

impl TypeStatus {
    /// Istio's rules: a NACK wins, then nothing sent, then sent-but-not-acked.
    pub fn state(&self) -> SyncState {
        if !self.subscribed {
            return SyncState::Ignored;
        }
        if self.nack.is_some() {
            return SyncState::Nacked;
        }
        match (&self.nonce_sent, &self.nonce_acked) {
            (None, _) => SyncState::NotSent,
            (Some(sent), Some(acked)) if sent == acked => SyncState::Synced,
            _ => SyncState::Stale,
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::NotSent => "NOT SENT",
            SyncState::Nacked => "NACKED",
            SyncState::Ignored => "IGNORED",
        })
    }
}

impl ProxyStatus {
    /// The state of one type; a type the proxy has no entry for was never subscribed.
    pub fn state(&self, short_type: &str) -> SyncState {
        self.types
            .get(short_type)
            .map(TypeStatus::state)
            .unwrap_or(SyncState::Ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(nonce: &str) -> TypeStatus {
        TypeStatus {
            subscribed: true,
            nonce_sent: Some(nonce.into()),
            ..TypeStatus::default()
        }
    }

    #[test]
    fn states_follow_istio_rules() {
        let unsubscribed = TypeStatus::default();
        assert_eq!(unsubscribed.state(), SyncState::Ignored);

        let not_sent = TypeStatus {
            subscribed: true,
            ..TypeStatus::default()
        };
        assert_eq!(not_sent.state(), SyncState::NotSent);

        assert_eq!(sent("2").state(), SyncState::Stale);

        let mut acked = sent("2");
        acked.nonce_acked = Some("2".into());
        assert_eq!(acked.state(), SyncState::Synced);

        let mut behind = sent("3");
        behind.nonce_acked = Some("2".into());
        assert_eq!(behind.state(), SyncState::Stale);

        let mut nacked = acked.clone();
        nacked.nack = Some("bad route".into());
        assert_eq!(nacked.state(), SyncState::Nacked);
    }

    #[test]
    fn display_uses_proxy_status_words() {
        assert_eq!(SyncState::NotSent.to_string(), "NOT SENT");
        assert_eq!(SyncState::Nacked.to_string(), "NACKED");
    }

    #[test]
    fn round_trips_through_json() {
        let status = ProxyStatus {
            proxy_id: "productpage-v1-1.default".into(),
            connection_id: "productpage-v1-1.default-7".into(),
            namespace: "default".into(),
            proxy_version: "0.1.0".into(),
            control_plane: "halyard-operator-0".into(),
            protocol: "sotw".into(),
            connected_at_unix: 1,
            config_version: 3,
            types: BTreeMap::from([("cds".to_string(), sent("1"))]),
        };
        let json = serde_json::to_string(&status).unwrap();
        let back: ProxyStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);
        assert_eq!(back.state("cds"), SyncState::Stale);
        assert_eq!(back.state("rds"), SyncState::Ignored);
    }
}
