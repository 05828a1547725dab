//! Access log: Envoy/Istio-style TEXT or JSON lines, written by a background thread so the
//! request path never blocks on I/O. Off by default.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use http::Request;

use crate::metrics::ResponseFlags;

/// Output encoding (MeshConfig `accessLogEncoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Text,
    Json,
}

/// One request's log line.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub start: SystemTime,
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub authority: String,
    pub user_agent: String,
    pub request_id: String,
    pub forwarded_for: String,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    pub route_name: String,
    pub upstream_cluster: String,
    pub upstream_host: Option<SocketAddr>,
    pub code: u16,
    pub flags: ResponseFlags,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
}

fn hv<B>(req: &Request<B>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

impl LogEntry {
    pub fn from_request<B>(req: &Request<B>, remote: SocketAddr, local: SocketAddr) -> Self {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| hv(req, "host"));
        LogEntry {
            start: SystemTime::now(),
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.to_string()),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            authority,
            user_agent: hv(req, "user-agent"),
            request_id: hv(req, "x-request-id"),
            forwarded_for: hv(req, "x-forwarded-for"),
            downstream_remote: remote,
            downstream_local: local,
            route_name: String::new(),
            upstream_cluster: String::new(),
            upstream_host: None,
            code: 0,
            flags: ResponseFlags::NONE,
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0,
        }
    }

    fn dash(s: &str) -> &str {
        if s.is_empty() { "-" } else { s }
    }

    /// Istio's default TEXT format (the fields halyard knows).
    pub fn text(&self) -> String {
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {}\n",
            rfc3339(self.start),
            self.method,
            self.path,
            self.protocol,
            self.code,
            self.flags,
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            self.forwarded_for,
            self.user_agent,
            self.request_id,
            self.authority,
            self.upstream_host
                .map_or_else(|| "-".to_string(), |a| a.to_string()),
            Self::dash(&self.upstream_cluster),
            self.downstream_local,
            self.downstream_remote,
            Self::dash(&self.route_name),
        )
    }

    /// Istio's JSON format keys.
    pub fn json(&self) -> String {
        let v = serde_json::json!({
            "start_time": rfc3339(self.start),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.code,
            "response_flags": self.flags.to_string(),
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms,
            "x_forwarded_for": self.forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
            "upstream_host": self.upstream_host.map(|a| a.to_string()),
            "upstream_cluster": Self::dash(&self.upstream_cluster),
            "downstream_local_address": self.downstream_local.to_string(),
            "downstream_remote_address": self.downstream_remote.to_string(),
            "route_name": Self::dash(&self.route_name),
        });
        let mut s = v.to_string();
        s.push('\n');
        s
    }
}

/// `2006-01-02T15:04:05.000Z` from a SystemTime (UTC, civil-from-days).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Where log lines go.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<LogEntry>,
}

impl AccessLog {
    /// `path` is a file path or `/dev/stdout`.
    pub fn open(path: &str, encoding: Encoding) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = if path == "/dev/stdout" || path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (tx, rx) = sync_channel::<LogEntry>(8192);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Ok(e) = rx.recv() {
                    let line = match encoding {
                        Encoding::Text => e.text(),
                        Encoding::Json => e.json(),
                    };
                    let _ = out.write_all(line.as_bytes());
                    // Flush when the queue is momentarily empty: batches under load.
                    let mut pending = rx.try_iter();
                    for e in pending.by_ref() {
                        let line = match encoding {
                            Encoding::Text => e.text(),
                            Encoding::Json => e.json(),
                        };
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                }
            })?;
        Ok(AccessLog { tx })
    }

    /// Queue a line; dropped (never blocks) when the writer is behind.
    pub fn write(&self, e: LogEntry) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(e) {
            tracing::debug!("access log queue full, line dropped");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instant() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn text_and_json_lines() {
        let req = Request::get("http://reviews:9080/api?x=1")
            .header("user-agent", "curl")
            .header("x-request-id", "abc")
            .body(())
            .unwrap();
        let mut e = LogEntry::from_request(
            &req,
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:9080".parse().unwrap(),
        );
        e.code = 503;
        e.flags = ResponseFlags::UH;
        let t = e.text();
        assert!(t.contains("\"GET /api?x=1 HTTP/1.1\" 503 UH"), "{t}");
        assert!(t.contains("\"abc\" \"reviews:9080\""), "{t}");
        let j: serde_json::Value = serde_json::from_str(&e.json()).unwrap();
        assert_eq!(j["response_flags"], "UH");
        assert_eq!(j["authority"], "reviews:9080");
    }
}
