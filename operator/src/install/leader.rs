//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder runs the MeshInstall controller;
//! every replica keeps serving discovery. Optimistic concurrency (the Lease's resourceVersion) makes two
//! candidates racing for an expired Lease end with one holder.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Error;
use super::controller::{ControllerOptions, run_controller};

/// Which Lease, who we are, and the timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This candidate (the pod name).
    pub identity: String,
    /// A holder that has not renewed for this long loses the Lease.
    pub lease_duration: Duration,
    /// How often the holder renews (and candidates retry).
    pub renew_every: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: &str, identity: &str) -> LeaseSettings {
        LeaseSettings {
            namespace: namespace.to_string(),
            name: "halyard-operator-install".to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn err(&self, why: String) -> Error {
        Error::Lease {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            why,
        }
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One election round at time `now`: takes the Lease if it is free or expired, renews it if held.
/// Returns whether this candidate holds it afterwards.
pub async fn try_acquire_or_renew(
    client: &Client,
    s: &LeaseSettings,
    now: Timestamp,
) -> Result<bool, Error> {
    let api = Api::<Lease>::namespaced(client.clone(), &s.namespace);
    let duration_secs = i32::try_from(s.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let existing = api
        .get_opt(&s.name)
        .await
        .map_err(|e| s.err(format!("get: {e}")))?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(s.err(format!("create: {e}"))),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mut new_spec = spec.clone();
    if holder == s.identity {
        new_spec.renew_time = Some(MicroTime(now));
        new_spec.lease_duration_seconds = Some(duration_secs);
    } else {
        let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(duration_secs));
        let expired = match &spec.renew_time {
            Some(MicroTime(t)) => *t + SignedDuration::from_secs(held_for) < now,
            None => true,
        };
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        new_spec.holder_identity = Some(s.identity.clone());
        new_spec.acquire_time = Some(MicroTime(now));
        new_spec.renew_time = Some(MicroTime(now));
        new_spec.lease_duration_seconds = Some(duration_secs);
        new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(new_spec);
    // `replace` sends the resourceVersion we read: a concurrent writer makes this fail with 409.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if conflict(&e) => Ok(false),
        Err(e) => Err(s.err(format!("update: {e}"))),
    }
}

/// Runs the controller while this replica holds the Lease, until `shutdown` completes. Leadership lost
/// (another holder, or no successful renewal within the lease duration) stops the controller; the replica
/// then competes again.
pub async fn run_with_leader_election(
    client: Client,
    lease: LeaseSettings,
    opts: ControllerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_all_tx, stop_all_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_all_tx.send(true);
    });
    let stopped = |rx: &watch::Receiver<bool>| *rx.borrow();
    loop {
        if stopped(&stop_all_rx) {
            return;
        }
        match try_acquire_or_renew(&client, &lease, Timestamp::now()).await {
            Ok(true) => {}
            Ok(false) => {
                sleep_or_stop(lease.renew_every, stop_all_rx.clone()).await;
                continue;
            }
            Err(e) => {
                warn!(error = %e, "leader election");
                sleep_or_stop(lease.renew_every, stop_all_rx.clone()).await;
                continue;
            }
        }
        info!(identity = %lease.identity, "acquired Lease {}/{}; running the MeshInstall controller", lease.namespace, lease.name);
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let mut all_rx = stop_all_rx.clone();
        let stop = async move {
            tokio::select! {
                _ = lost_rx.wait_for(|v| *v) => {}
                _ = all_rx.wait_for(|v| *v) => {}
            }
        };
        let controller = tokio::spawn(run_controller(client.clone(), opts.clone(), stop));
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            sleep_or_stop(lease.renew_every, stop_all_rx.clone()).await;
            if stopped(&stop_all_rx) {
                break;
            }
            match try_acquire_or_renew(&client, &lease, Timestamp::now()).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(
                        "Lease {}/{} taken by another replica",
                        lease.namespace, lease.name
                    );
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "renewing the Lease");
                    if last_renewal.elapsed() >= lease.lease_duration {
                        break;
                    }
                }
            }
        }
        let _ = lost_tx.send(true);
        if let Err(e) = controller.await {
            warn!(error = %e, "MeshInstall controller task ended abnormally");
        }
    }
}

async fn sleep_or_stop(d: Duration, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.wait_for(|v| *v) => {}
    }
}
