//! The tour's traffic: bounded batches of requests with bounded concurrency and a per-request time limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::HeaderValue;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::app::{self, Reply};
use super::observe::Observation;

/// No single request of the tour may take longer than this (the slowest step injects a 2 s delay).
pub const REQUEST_LIMIT: Duration = Duration::from_secs(8);

/// What to request and how.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Where the request is sent (a service VIP bound by the client's proxy).
    pub target: SocketAddr,
    /// Its `Host` header.
    pub host: String,
    pub path: String,
    /// Extra headers, e.g. `end-user: jason`.
    pub headers: Vec<(String, HeaderValue)>,
    pub count: usize,
    pub concurrency: usize,
}

pub struct Driver {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Driver {
    fn default() -> Self {
        Driver {
            client: app::http_client(),
        }
    }
}

impl Driver {
    /// Send the batch; one observation per request, in completion order.
    pub async fn run(&self, batch: &Batch) -> Vec<Observation> {
        futures::stream::iter(0..batch.count)
            .map(|_| self.one(batch))
            .buffer_unordered(batch.concurrency.max(1))
            .collect()
            .await
    }

    async fn one(&self, batch: &Batch) -> Observation {
        let started = Instant::now();
        let result = tokio::time::timeout(
            REQUEST_LIMIT,
            app::get(
                &self.client,
                batch.target,
                &batch.host,
                &batch.path,
                &batch.headers,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no response within {REQUEST_LIMIT:?}")));
        let elapsed = started.elapsed();
        match result {
            Ok((status, headers, body)) => {
                let reply = serde_json::from_slice::<Reply>(&body).ok();
                let flags = headers
                    .get("x-halyard-response-flags")
                    .or_else(|| headers.get("x-envoy-response-flags"))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| {
                        headers
                            .contains_key("x-envoy-overloaded")
                            .then(|| "UO".to_string())
                    });
                let error = reply
                    .is_none()
                    .then(|| String::from_utf8_lossy(&body).chars().take(120).collect());
                Observation {
                    status: Some(status),
                    elapsed,
                    reply,
                    flags,
                    error,
                }
            }
            Err(e) => Observation {
                status: None,
                elapsed,
                reply: None,
                flags: None,
                error: Some(e),
            },
        }
    }

    /// GET a plain text document (metrics, debug endpoints) from `addr`.
    pub async fn text(&self, addr: SocketAddr, path: &str) -> Result<String, String> {
        let host = addr.to_string();
        let (status, _, body) = tokio::time::timeout(
            Duration::from_secs(3),
            app::get(&self.client, addr, &host, path, &[]),
        )
        .await
        .unwrap_or_else(|_| Err(format!("GET http://{addr}{path}: no response within 3s")))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if !(200..300).contains(&status) {
            return Err(format!(
                "GET http://{addr}{path}: status {status}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::demo::app::{AppArgs, Role};
    use tokio::net::TcpListener;

    async fn start(
        service: Role,
        version: &str,
        deps: Vec<(String, SocketAddr)>,
        delay_ms: u64,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let args = AppArgs {
            service,
            version: version.into(),
            listen: addr,
            deps,
            namespace: "default".into(),
            delay_ms,
            exit_with_parent: false,
        };
        let app = app::App::new(&args).unwrap();
        tokio::spawn(app::serve(app, listener));
        addr
    }

    fn batch(target: SocketAddr, path: &str, count: usize) -> Batch {
        Batch {
            target,
            host: "productpage:9080".into(),
            path: path.into(),
            headers: vec![("end-user".into(), HeaderValue::from_static("jason"))],
            count,
            concurrency: 4,
        }
    }

    #[tokio::test]
    async fn bookinfo_chain_answers_with_versions_and_forwards_headers() {
        let ratings = start(Role::Ratings, "v1", vec![], 0).await;
        let reviews = start(Role::Reviews, "v3", vec![("ratings".into(), ratings)], 0).await;
        let details = start(Role::Details, "v1", vec![], 0).await;
        let page = start(
            Role::Productpage,
            "v1",
            vec![("details".into(), details), ("reviews".into(), reviews)],
            0,
        )
        .await;
        let obs = Driver::default().run(&batch(page, "/productpage", 8)).await;
        assert_eq!(obs.len(), 8);
        for o in &obs {
            assert_eq!(o.status, Some(200), "{o:?}");
            assert_eq!(o.reviews_version(), Some("v3"));
            let ratings = o.ratings_call().unwrap();
            assert_eq!(ratings.status, Some(200));
            assert_eq!(ratings.reply.as_ref().unwrap().service, "ratings");
            assert_eq!(
                o.reply.as_ref().unwrap().call("details").unwrap().status,
                Some(200)
            );
        }
    }

    #[tokio::test]
    async fn a_dead_dependency_fails_the_chain_with_502_and_says_which() {
        // A port nobody listens on: bind, note, drop.
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let reviews = start(Role::Reviews, "v2", vec![("ratings".into(), dead)], 0).await;
        let obs = Driver::default()
            .run(&batch(reviews, "/reviews/0", 1))
            .await;
        assert_eq!(obs[0].status, Some(502));
        let reply = obs[0].reply.as_ref().unwrap();
        assert!(
            reply.error.as_deref().unwrap().contains("ratings failed"),
            "{reply:?}"
        );
        assert_eq!(reply.calls[0].status, None);
    }

    #[tokio::test]
    async fn delay_knobs_slow_replies_down() {
        let details = start(Role::Details, "v1", vec![], 100).await;
        let obs = Driver::default()
            .run(&batch(details, "/details/0?delay_ms=50", 2))
            .await;
        for o in &obs {
            assert_eq!(o.status, Some(200));
            assert!(o.elapsed >= Duration::from_millis(150), "{:?}", o.elapsed);
        }
        let health = Driver::default().text(details, "/health").await.unwrap();
        assert!(health.contains("ok"));
    }

    #[tokio::test]
    async fn missing_dependency_address_is_refused_at_start() {
        let args = AppArgs {
            service: Role::Productpage,
            version: "v1".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            deps: vec![("details".into(), "127.0.0.1:1".parse().unwrap())],
            namespace: "default".into(),
            delay_ms: 0,
            exit_with_parent: false,
        };
        let err = app::App::new(&args).err().unwrap().to_string();
        assert!(err.contains("--dep reviews="), "{err}");
    }

    #[tokio::test]
    async fn unreachable_target_is_observed_not_fatal() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let obs = Driver::default().run(&batch(dead, "/productpage", 2)).await;
        assert!(obs.iter().all(|o| o.status.is_none() && o.error.is_some()));
    }
}
