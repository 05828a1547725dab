//! Whether the demo's proxies run the control plane's current config (pure): the reading of one
//! `/debug/syncz` report.
//!
//! A proxy runs config version `v` when its stream's `config_version` is `v` (the registry snapshot its config
//! was computed from) and it has ACKed the last response of every type it subscribed to. The proxy ACKs only
//! after the config is applied (listeners bound, routes swapped), so "SYNCED at `v`" means traffic now follows
//! `v`.

use halyard_operator::discovery::status::{ProxyStatus, SyncReport, SyncState};

/// The types every proxy of the demo subscribes to and must have ACKed (istioctl's proxy-status columns).
pub const REQUIRED_TYPES: [&str; 4] = ["cds", "lds", "eds", "rds"];

/// One reading of `/debug/syncz` for the proxies the demo started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncView {
    /// Every proxy runs this config version.
    Synced(u64),
    /// Not yet; says what is missing.
    Waiting(String),
    /// A proxy refused (NACKed) the current config: waiting longer will not help.
    Refused(String),
}

/// Whether every proxy in `expected` (proxy ids) runs a config version newer than `newer_than`.
pub fn assess(report: &SyncReport, expected: &[String], newer_than: u64) -> SyncView {
    let current = report.config_version;
    if current <= newer_than {
        return SyncView::Waiting(format!(
            "the control plane has not read the change yet (its config version is {current})"
        ));
    }
    let mut waiting = Vec::new();
    for id in expected {
        let streams: Vec<&ProxyStatus> = report
            .proxies
            .iter()
            .filter(|p| &p.proxy_id == id)
            .collect();
        if streams.is_empty() {
            waiting.push(format!("{id} is not connected"));
            continue;
        }
        // A proxy that just reconnected may briefly have two streams; one in sync is enough.
        if streams.iter().any(|p| synced_at(p, current)) {
            continue;
        }
        for p in &streams {
            if let Some((ty, reason)) = nack(p)
                && p.config_version == current
            {
                return SyncView::Refused(format!(
                    "{id} refused config version {current} ({ty} NACKed: {reason})"
                ));
            }
        }
        let p = streams[streams.len() - 1];
        let states: Vec<String> = p
            .types
            .keys()
            .map(|t| format!("{t} {}", p.state(t)))
            .collect();
        waiting.push(format!(
            "{id} at config version {} ({})",
            p.config_version,
            states.join(", ")
        ));
    }
    if waiting.is_empty() {
        SyncView::Synced(current)
    } else {
        SyncView::Waiting(format!(
            "waiting for config version {current}: {}",
            waiting.join("; ")
        ))
    }
}

/// The stream runs `version` and has ACKed everything it subscribed to, including the required types.
fn synced_at(p: &ProxyStatus, version: u64) -> bool {
    p.config_version == version
        && REQUIRED_TYPES
            .iter()
            .all(|t| p.state(t) == SyncState::Synced)
        && p.types
            .keys()
            .all(|t| matches!(p.state(t), SyncState::Synced | SyncState::Ignored))
}

/// The first NACKed type of a stream and the proxy's reason.
fn nack(p: &ProxyStatus) -> Option<(String, String)> {
    p.types.iter().find_map(|(t, s)| {
        (p.state(t) == SyncState::Nacked).then(|| (t.clone(), s.nack.clone().unwrap_or_default()))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use halyard_operator::discovery::status::TypeStatus;

    use super::*;

    fn ty(sent: &str, acked: Option<&str>) -> TypeStatus {
        TypeStatus {
            subscribed: true,
            nonce_sent: Some(sent.into()),
            nonce_acked: acked.map(String::from),
            ..TypeStatus::default()
        }
    }

    fn proxy(id: &str, version: u64, types: &[(&str, TypeStatus)]) -> ProxyStatus {
        ProxyStatus {
            proxy_id: id.into(),
            connection_id: format!("{id}-1"),
            namespace: "default".into(),
            proxy_version: "0.1.0".into(),
            control_plane: "demo".into(),
            protocol: "sotw".into(),
            connected_at_unix: 1,
            config_version: version,
            types: types
                .iter()
                .map(|(t, s)| (t.to_string(), s.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn all_acked(id: &str, version: u64) -> ProxyStatus {
        proxy(
            id,
            version,
            &[
                ("cds", ty("4", Some("4"))),
                ("eds", ty("5", Some("5"))),
                ("lds", ty("6", Some("6"))),
                ("rds", ty("7", Some("7"))),
                ("sds", TypeStatus::default()),
            ],
        )
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn synced_only_when_every_expected_proxy_acked_the_newer_version() {
        let report = SyncReport {
            config_version: 3,
            proxies: vec![all_acked("a.default", 3), all_acked("b.default", 3)],
        };
        let want = ids(&["a.default", "b.default"]);
        assert_eq!(assess(&report, &want, 2), SyncView::Synced(3));
        // The change has not been read yet: the version is not newer.
        assert!(matches!(assess(&report, &want, 3), SyncView::Waiting(_)));
        // A proxy that is not connected at all.
        let want = ids(&["a.default", "c.default"]);
        match assess(&report, &want, 2) {
            SyncView::Waiting(w) => assert!(w.contains("c.default is not connected"), "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_older_version_or_an_unacked_type_is_waiting() {
        let behind = SyncReport {
            config_version: 4,
            proxies: vec![all_acked("a.default", 3)],
        };
        match assess(&behind, &ids(&["a.default"]), 3) {
            SyncView::Waiting(w) => assert!(w.contains("a.default at config version 3"), "{w}"),
            other => panic!("{other:?}"),
        }
        let stale = SyncReport {
            config_version: 4,
            proxies: vec![proxy(
                "a.default",
                4,
                &[
                    ("cds", ty("4", Some("4"))),
                    ("eds", ty("5", Some("5"))),
                    ("lds", ty("6", Some("5"))),
                    ("rds", ty("7", Some("7"))),
                ],
            )],
        };
        match assess(&stale, &ids(&["a.default"]), 3) {
            SyncView::Waiting(w) => assert!(w.contains("lds STALE"), "{w}"),
            other => panic!("{other:?}"),
        }
        // A required type the proxy never subscribed to is not in sync either.
        let missing = SyncReport {
            config_version: 4,
            proxies: vec![proxy("a.default", 4, &[("cds", ty("4", Some("4")))])],
        };
        assert!(matches!(
            assess(&missing, &ids(&["a.default"]), 3),
            SyncView::Waiting(_)
        ));
    }

    #[test]
    fn a_nack_of_the_current_version_is_refused_with_the_reason() {
        let mut lds = ty("6", Some("5"));
        lds.nack = Some("listener bind 127.10.0.1:9080: address in use".into());
        let report = SyncReport {
            config_version: 4,
            proxies: vec![proxy(
                "a.default",
                4,
                &[
                    ("cds", ty("4", Some("4"))),
                    ("eds", ty("5", Some("5"))),
                    ("lds", lds),
                    ("rds", ty("7", Some("7"))),
                ],
            )],
        };
        match assess(&report, &ids(&["a.default"]), 3) {
            SyncView::Refused(r) => {
                assert!(r.contains("lds NACKed"), "{r}");
                assert!(r.contains("address in use"), "{r}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_synced_stream_of_a_reconnecting_proxy_is_enough() {
        let mut old = all_acked("a.default", 2);
        old.connection_id = "a.default-0".into();
        let report = SyncReport {
            config_version: 3,
            proxies: vec![old, all_acked("a.default", 3)],
        };
        assert_eq!(
            assess(&report, &ids(&["a.default"]), 2),
            SyncView::Synced(3)
        );
    }
}
