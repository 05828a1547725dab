//! `halyard proxy-status`: every proxy connected to the control plane and, per resource type, whether it has
//! ACKed what it was sent (istioctl's SYNCED / STALE / NOT SENT, plus NACKED).

use std::process::ExitCode;

use clap::Args;
use halyard_operator::debug::client;
use halyard_operator::discovery::status::ProxyStatus;

/// Types shown, as (column header, short type name).
const COLUMNS: [(&str, &str); 4] = [
    ("CLUSTERS", "cds"),
    ("LISTENERS", "lds"),
    ("ENDPOINTS", "eds"),
    ("ROUTES", "rds"),
];

#[derive(Debug, Args)]
pub struct ProxyStatusArgs {
    /// Monitoring address of the control plane (its `/debug/syncz`).
    #[arg(
        long,
        env = "HALYARD_CONTROL_PLANE",
        default_value = "http://127.0.0.1:15014"
    )]
    pub control_plane: String,
    /// Show only this proxy (`<pod>.<namespace>`).
    pub proxy: Option<String>,
}

pub fn run(args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(client::sync_report(&args.control_plane))?;
    let proxies: Vec<&ProxyStatus> = report
        .proxies
        .iter()
        .filter(|p| args.proxy.as_deref().is_none_or(|want| p.proxy_id == want))
        .collect();
    if let Some(want) = &args.proxy
        && proxies.is_empty()
    {
        anyhow::bail!(
            "proxy {want:?} is not connected to the control plane at {}",
            args.control_plane
        );
    }
    print!("{}", render(&proxies));
    Ok(ExitCode::SUCCESS)
}

/// The table, columns padded to their widest cell like istioctl's tabwriter output.
pub fn render(proxies: &[&ProxyStatus]) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        ["NAME"]
            .into_iter()
            .chain(COLUMNS.iter().map(|(h, _)| *h))
            .chain(["ISTIOD", "VERSION"])
            .map(String::from)
            .collect(),
    ];
    let mut sorted = proxies.to_vec();
    sorted.sort_by(|a, b| {
        a.proxy_id
            .cmp(&b.proxy_id)
            .then(a.connection_id.cmp(&b.connection_id))
    });
    for p in sorted {
        let mut row = vec![p.proxy_id.clone()];
        row.extend(COLUMNS.iter().map(|(_, t)| p.state(t).to_string()));
        row.push(p.control_plane.clone());
        row.push(p.proxy_version.clone());
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use halyard_operator::discovery::status::{SyncReport, TypeStatus};

    use super::*;

    fn type_status(sent: Option<&str>, acked: Option<&str>, nack: Option<&str>) -> TypeStatus {
        TypeStatus {
            subscribed: true,
            nonce_sent: sent.map(String::from),
            nonce_acked: acked.map(String::from),
            nack: nack.map(String::from),
            ..TypeStatus::default()
        }
    }

    #[test]
    fn renders_every_state_in_istioctl_columns() {
        let proxy = ProxyStatus {
            proxy_id: "productpage-v1-123.default".into(),
            connection_id: "c1".into(),
            namespace: "default".into(),
            proxy_version: "0.1.0".into(),
            control_plane: "halyard-operator-0".into(),
            protocol: "sotw".into(),
            connected_at_unix: 0,
            config_version: 1,
            types: BTreeMap::from([
                ("cds".to_string(), type_status(Some("1"), Some("1"), None)),
                ("lds".to_string(), type_status(Some("2"), Some("1"), None)),
                ("eds".to_string(), type_status(None, None, None)),
                (
                    "rds".to_string(),
                    type_status(Some("3"), Some("2"), Some("bad route")),
                ),
            ]),
        };
        let report = SyncReport {
            config_version: 1,
            proxies: vec![proxy],
        };
        let text = render(&report.proxies.iter().collect::<Vec<_>>());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "CLUSTERS",
                "LISTENERS",
                "ENDPOINTS",
                "ROUTES",
                "ISTIOD",
                "VERSION"
            ]
        );
        assert!(
            lines[1].starts_with("productpage-v1-123.default   SYNCED"),
            "{text}"
        );
        assert!(lines[1].contains("STALE"), "{text}");
        assert!(lines[1].contains("NOT SENT"), "{text}");
        assert!(lines[1].contains("NACKED"), "{text}");
        assert!(lines[1].ends_with("halyard-operator-0   0.1.0"), "{text}");
        // columns line up: ISTIOD starts at the same offset in header and row
        assert_eq!(lines[0].find("ISTIOD"), lines[1].find("halyard-operator-0"));
    }

    #[test]
    fn empty_report_prints_only_the_header() {
        let text = render(&[]);
        assert_eq!(text.lines().count(), 1);
    }
}
