//! A small client of the debug endpoints, for `halyard proxy-status` and tests.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::discovery::status::SyncReport;
use crate::error::Error;

/// GETs `path` below `base` (e.g. `http://127.0.0.1:15014`) and returns the body of a 200 response.
pub async fn get(base: &str, path: &str) -> Result<Bytes, Error> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().map_err(|e| Error::DebugClient {
        url: url.clone(),
        reason: format!("invalid URL: {e}"),
    })?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(uri).await.map_err(|e| Error::DebugClient {
        url: url.clone(),
        reason: format!("request failed: {e}"),
    })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::DebugClient {
            url: url.clone(),
            reason: format!("reading the body failed: {e}"),
        })?
        .to_bytes();
    if !status.is_success() {
        return Err(Error::DebugClient {
            url,
            reason: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
        });
    }
    Ok(body)
}

/// Reads `/debug/syncz`.
pub async fn sync_report(base: &str) -> Result<SyncReport, Error> {
    let body = get(base, "/debug/syncz").await?;
    serde_json::from_slice(&body).map_err(|e| Error::DebugClient {
        url: format!("{}/debug/syncz", base.trim_end_matches('/')),
        reason: format!("unexpected JSON: {e}"),
    })
}
