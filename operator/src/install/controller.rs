//! The MeshInstall controller: server-side apply of the rendered objects (CRDs first, waited for until
//! `Established`), pruning of owned objects that are no longer desired, the certificate authority and the
//! webhook certificate, the validation webhook's switch to fail-closed, status, Events, and the uninstall
//! finalizer (webhook configurations first).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use halyard_crds::install::{
    CaSource, ComponentState, ComponentStatus, MeshInstall, MeshInstallStatus, NativeSidecar,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::ca::{self, CaMaterial, ServingCert};
use super::cluster;
use super::kinds::{self, KindInfo};
use super::render::{self, Layout, RenderInput, RenderSettings};
use super::root_cert::{self, RootCertOptions};
use super::status::{self, Observation};
use super::upgrade;
use super::{Error, FIELD_MANAGER, FINALIZER, LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY, Result};

/// Counts proxies connected to this control plane (provided by the discovery server).
pub type ProxyCounter = Arc<dyn Fn() -> u32 + Send + Sync>;

/// How the controller runs.
#[derive(Clone)]
pub struct ControllerOptions {
    pub render: RenderSettings,
    /// Number of connected proxies, for `status.connectedProxies`.
    pub connected_proxies: Option<ProxyCounter>,
    /// Out-of-cluster mode: also write the webhook's `tls.crt`, `tls.key` and `ca.crt` here, for a webhook
    /// process started by hand.
    pub cert_dir: Option<PathBuf>,
    /// Requeue while CRDs are not yet Established.
    pub crd_wait: Duration,
    /// Requeue while a component is not ready.
    pub not_ready_requeue: Duration,
    /// Periodic resync when everything is ready.
    pub resync: Duration,
    /// Name of this instance in Events.
    pub instance: String,
    /// The `istio-ca-root-cert` controller that runs beside the MeshInstall controller.
    pub root_cert: RootCertOptions,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            render: RenderSettings::default(),
            connected_proxies: None,
            cert_dir: None,
            crd_wait: Duration::from_secs(2),
            not_ready_requeue: Duration::from_secs(15),
            resync: Duration::from_secs(300),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "halyard-operator".to_string()),
            root_cert: RootCertOptions::default(),
        }
    }
}

impl std::fmt::Debug for ControllerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerOptions")
            .field("render", &self.render)
            .field("cert_dir", &self.cert_dir)
            .field("crd_wait", &self.crd_wait)
            .field("not_ready_requeue", &self.not_ready_requeue)
            .field("resync", &self.resync)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

/// Shared state of reconciles.
pub struct Context {
    pub client: Client,
    pub opts: ControllerOptions,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, opts: ControllerOptions) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: Some(opts.instance.clone()),
            },
        );
        Context {
            client,
            opts,
            recorder,
            failures: Mutex::new(HashMap::new()),
        }
    }

    async fn event(&self, mi: &MeshInstall, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &mi.object_ref(&())).await {
            warn!(error = %e, "could not publish an Event for MeshInstall {}", mi.name_any());
        }
    }

    /// Back-off after consecutive failures of one MeshInstall: 5 s doubling up to 5 min.
    fn backoff(&self, name: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(name.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 5u64.saturating_mul(1 << (*n - 1).min(6));
        Duration::from_secs(secs.min(300))
    }

    fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// Runs the MeshInstall controller and, beside it, the `istio-ca-root-cert` controller ([`root_cert::run`])
/// until `shutdown` completes (both under the same leader election).
pub async fn run_controller(
    client: Client,
    opts: ControllerOptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::FutureExt;
    let boxed: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(shutdown);
    let shutdown = boxed.shared();
    let roots = root_cert::run(client.clone(), opts.root_cert.clone(), shutdown.clone());
    let installs = run_mesh_install_controller(client, opts, shutdown);
    futures::join!(installs, roots);
}

/// Runs the MeshInstall controller until `shutdown` completes. Watches MeshInstalls and every kind it creates
/// (by the `app.kubernetes.io/managed-by` label), so that a deleted or edited object is restored.
pub async fn run_mesh_install_controller(
    client: Client,
    opts: ControllerOptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let managed = || watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let ctx = Arc::new(Context::new(client.clone(), opts));
    Controller::new(
        Api::<MeshInstall>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(Api::<Deployment>::all(client.clone()), managed(), owner_ref)
    .watches(Api::<Service>::all(client.clone()), managed(), owner_ref)
    .watches(Api::<ConfigMap>::all(client.clone()), managed(), owner_ref)
    .watches(Api::<Secret>::all(client.clone()), managed(), owner_ref)
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        managed(),
        owner_ref,
    )
    .watches(Api::<Role>::all(client.clone()), managed(), owner_ref)
    .watches(
        Api::<RoleBinding>::all(client.clone()),
        managed(),
        owner_ref,
    )
    .watches(
        Api::<PodDisruptionBudget>::all(client.clone()),
        managed(),
        owner_ref,
    )
    .watches(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        managed(),
        owner_ref,
    )
    .watches(
        Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        managed(),
        owner_ref,
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!("reconciled MeshInstall {}", obj.name),
            Err(e) => warn!(error = %e, "MeshInstall reconcile failed"),
        }
    })
    .await;
}

fn owner_ref<K: Resource>(obj: K) -> Option<ObjectRef<MeshInstall>> {
    obj.labels().get(LABEL_OWNER).map(|n| ObjectRef::new(n))
}

/// One reconcile: the finalizer decides between install/upgrade and uninstall.
pub async fn reconcile(mi: Arc<MeshInstall>, ctx: Arc<Context>) -> Result<Action> {
    let api = Api::<MeshInstall>::all(ctx.client.clone());
    let c = ctx.clone();
    finalizer(&api, FINALIZER, mi, |event| async move {
        match event {
            Finalizer::Apply(mi) => apply(&mi, &c).await,
            Finalizer::Cleanup(mi) => match cleanup(&mi, &c).await {
                Ok(action) => Ok(action),
                Err(e) => {
                    // The MeshInstall keeps its finalizer (and is retried); say why it is not going away.
                    c.event(
                        &mi,
                        EventType::Warning,
                        "UninstallFailed",
                        format!("uninstall will be retried: {e}"),
                    )
                    .await;
                    Err(e)
                }
            },
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Requeues a failed reconcile with back-off (the error is already reported in status and Events).
pub fn error_policy(mi: Arc<MeshInstall>, err: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff(&mi.name_any());
    warn!(error = %err, "MeshInstall {}: retrying in {wait:?}", mi.name_any());
    Action::requeue(wait)
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Install or upgrade: everything but uninstall.
pub async fn apply(mi: &MeshInstall, ctx: &Context) -> Result<Action> {
    let name = mi.name_any();
    let prev = mi.status.as_ref();
    let layout = match Layout::of(mi, &ctx.opts.render) {
        Ok(l) => l,
        Err(e) => {
            // A spec error does not heal by retrying: report it and wait for the next edit.
            report_failure(mi, ctx, &e).await?;
            return Ok(Action::await_change());
        }
    };
    let installed = prev.and_then(|s| s.installed_version.as_deref());
    if let Err(why) = upgrade::plan(installed, &layout.version) {
        report_failure(mi, ctx, &Error::UpgradeRefused(why)).await?;
        return Ok(Action::await_change());
    }
    match install(mi, ctx, &layout).await {
        Ok(action) => {
            ctx.succeeded(&name);
            Ok(action)
        }
        Err(Error::CrdsNotEstablished(which)) => {
            let e = Error::CrdsNotEstablished(which);
            report_failure(mi, ctx, &e).await?;
            Ok(Action::requeue(ctx.opts.crd_wait))
        }
        Err(e) => {
            report_failure(mi, ctx, &e).await?;
            Err(e)
        }
    }
}

async fn report_failure(mi: &MeshInstall, ctx: &Context, e: &Error) -> Result<()> {
    let obs = Observation {
        reconciled: Err((e.reason().to_string(), e.to_string())),
        components: mi
            .status
            .as_ref()
            .map(|s| s.components.clone())
            .unwrap_or_default(),
        installed_version: None,
        connected_proxies: ctx.opts.connected_proxies.as_ref().map(|f| f()),
    };
    let changed = write_status(mi, ctx, &obs).await?;
    if changed {
        ctx.event(mi, EventType::Warning, e.reason(), e.to_string())
            .await;
    }
    Ok(())
}

/// Writes the status when it differs from the current one; returns whether it did.
async fn write_status(mi: &MeshInstall, ctx: &Context, obs: &Observation) -> Result<bool> {
    let prev = mi.status.as_ref();
    let new = status::build(prev, mi.metadata.generation, obs, &now_rfc3339());
    if prev == Some(&new) {
        return Ok(false);
    }
    let name = mi.name_any();
    Api::<MeshInstall>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": new })),
        )
        .await
        .map_err(|e| Error::kube("patch status of", "MeshInstall", &name, e))?;
    Ok(true)
}

pub(crate) fn dynamic_api(
    client: &Client,
    k: &KindInfo,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (k.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &k.api_resource()),
        _ => Api::all_with(client.clone(), &k.api_resource()),
    }
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The signing CA: the user's `cacerts` Secret, or the generated root (created on first use).
async fn load_ca(mi: &MeshInstall, ctx: &Context, layout: &Layout) -> Result<CaMaterial> {
    let ns = &layout.namespace;
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let (secret_name, plugged) = match mi.spec.ca.source {
        CaSource::CacertsSecret => (mi.spec.ca.secret_name.clone(), true),
        CaSource::SelfSigned => (ca::SELF_SIGNED_SECRET.to_string(), false),
    };
    let existing = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|e| Error::kube("get", "Secret", &format!("{ns}/{secret_name}"), e))?;
    let data = |s: &Secret| -> BTreeMap<String, Vec<u8>> {
        s.data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    };
    match existing {
        Some(s) => CaMaterial::from_secret_data(&data(&s), (ns, &secret_name)),
        None if plugged => Err(Error::CaSecret {
            namespace: ns.clone(),
            name: secret_name,
            why: "not found; spec.ca.source is cacertsSecret, so create it with ca-cert.pem, ca-key.pem, \
                  root-cert.pem and cert-chain.pem (or set spec.ca.source: selfSigned)"
                .to_string(),
        }),
        None => {
            let generated =
                CaMaterial::generate(&mi.spec.mesh_config.trust_domain, OffsetDateTime::now_utc())?;
            ensure_namespace(ctx, layout).await?;
            // The root is not labelled as owned: it outlives uninstall and reinstall so that workloads keep
            // trusting each other.
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(secret_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(BTreeMap::from([(
                        LABEL_MANAGED_BY.to_string(),
                        MANAGED_BY.to_string(),
                    )])),
                    ..Default::default()
                },
                type_: Some("istio.io/ca-root".to_string()),
                data: Some(
                    generated
                        .to_secret_data()
                        .into_iter()
                        .map(|(k, v)| (k, ByteString(v)))
                        .collect(),
                ),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    ctx.event(
                        mi,
                        EventType::Normal,
                        "RootCreated",
                        format!("generated a self-signed root CA in Secret {ns}/{secret_name}"),
                    )
                    .await;
                    Ok(generated)
                }
                // Another replica won the race: use its root.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let s = secrets
                        .get(&secret_name)
                        .await
                        .map_err(|e| Error::kube("get", "Secret", &format!("{ns}/{secret_name}"), e))?;
                    CaMaterial::from_secret_data(&data(&s), (ns, &secret_name))
                }
                Err(e) => Err(Error::kube("create", "Secret", &format!("{ns}/{secret_name}"), e)),
            }
        }
    }
}

async fn ensure_namespace(ctx: &Context, layout: &Layout) -> Result<()> {
    let ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": layout.namespace, "labels": {"istio-injection": "disabled", LABEL_MANAGED_BY: MANAGED_BY}},
    });
    apply_object(ctx, &ns).await
}

/// The webhook's serving certificate: the stored one while it is valid for the hosts and far from expiry,
/// else a new one.
async fn serving_cert(ctx: &Context, layout: &Layout, ca: &CaMaterial) -> Result<ServingCert> {
    let hosts = render::webhook_hosts(layout, &ctx.opts.render);
    let ns = &layout.namespace;
    let name = layout.webhook_secret();
    let existing = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube("get", "Secret", &format!("{ns}/{name}"), e))?;
    if let Some(s) = existing {
        let d = s.data.unwrap_or_default();
        let text = |k: &str| {
            d.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .unwrap_or_default()
        };
        let (crt, key, bundle) = (text("tls.crt"), text("tls.key"), text("ca.crt"));
        if !key.is_empty()
            && !ca::serving_needs_renewal(&crt, &bundle, ca, &hosts, OffsetDateTime::now_utc())
        {
            return Ok(ServingCert {
                cert_chain_pem: crt,
                key_pem: key,
                ca_bundle_pem: bundle,
            });
        }
    }
    info!(
        "issuing the webhook serving certificate for {}",
        hosts.join(", ")
    );
    ca.issue_serving(&hosts, OffsetDateTime::now_utc(), ca::SERVING_LIFETIME)
}

/// Server-side apply of one rendered object.
pub async fn apply_object(ctx: &Context, obj: &Value) -> Result<()> {
    apply_value(&ctx.client, obj, FIELD_MANAGER).await
}

/// Server-side apply (forced, with `field_manager`) of any object of a kind in [`kinds::lookup`].
pub async fn apply_value(client: &Client, obj: &Value, field_manager: &str) -> Result<()> {
    let (api_version, kind, namespace, name) = render::identity(obj);
    let k = kinds::lookup(&api_version, &kind).ok_or_else(|| Error::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
        name: name.clone(),
    })?;
    dynamic_api(client, &k, namespace.as_deref())
        .patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|e| Error::kube("apply", &kind, &qualified(namespace.as_deref(), &name), e))?;
    Ok(())
}

fn qualified(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

pub(crate) fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Whether the validating webhook was already switched to `Fail`.
async fn validation_fail_closed(ctx: &Context, layout: &Layout) -> Result<bool> {
    let name = layout.validating_webhook_name();
    let live = Api::<ValidatingWebhookConfiguration>::all(ctx.client.clone())
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube("get", "ValidatingWebhookConfiguration", &name, e))?;
    Ok(live.and_then(|v| v.webhooks).is_some_and(|ws| {
        ws.iter()
            .any(|w| w.failure_policy.as_deref() == Some("Fail"))
    }))
}

/// Dry-run create of an object the webhook must deny: denied means validation works.
async fn validation_proven(ctx: &Context, layout: &Layout) -> bool {
    let probe = render::always_reject_probe(layout);
    let gw = kube::discovery::ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &layout.namespace, &gw);
    let obj: DynamicObject = match serde_json::from_value(probe) {
        Ok(o) => o,
        Err(_) => return false,
    };
    let pp = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.to_string()),
    };
    match api.create(&pp, &obj).await {
        Err(kube::Error::Api(s)) => s.message.contains("denied the request"),
        _ => false,
    }
}

async fn install(mi: &MeshInstall, ctx: &Context, layout: &Layout) -> Result<Action> {
    let ca = load_ca(mi, ctx, layout).await?;
    let serving = serving_cert(ctx, layout, &ca).await?;
    let mut fail_closed = validation_fail_closed(ctx, layout).await?;
    // Only `auto` asks the cluster; explicit true/false need no API call.
    let native = match mi.spec.injection.native_sidecar {
        NativeSidecar::Auto => Some(cluster::detect_native_sidecars(&ctx.client).await?),
        _ => None,
    };
    let input = RenderInput {
        install: mi,
        settings: &ctx.opts.render,
        serving: &serving,
        validation_fail_closed: fail_closed,
        native_sidecars_supported: native.as_ref().is_some_and(|n| n.supported),
    };
    let objects = render::render(&input)?;

    // 1. Namespace and CRDs, then wait for the CRDs to be Established.
    let (first, rest): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(|o| {
        matches!(
            o.get("kind").and_then(Value::as_str),
            Some("Namespace" | "CustomResourceDefinition")
        )
    });
    for o in &first {
        apply_object(ctx, o).await?;
    }
    let crds = Api::<CustomResourceDefinition>::all(ctx.client.clone());
    let mut pending = Vec::new();
    for o in first
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        let (_, _, _, name) = render::identity(o);
        let live = crds
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("get", "CustomResourceDefinition", &name, e))?;
        if !live.as_ref().is_some_and(is_established) {
            pending.push(name);
        }
    }
    if !pending.is_empty() {
        return Err(Error::CrdsNotEstablished(pending.join(", ")));
    }

    // 2. Everything else, in render order (webhook configurations last).
    for o in &rest {
        apply_object(ctx, o).await?;
    }

    // 3. Prune what this MeshInstall owns and no longer wants.
    let desired: BTreeSet<(String, Option<String>, String)> = objects
        .iter()
        .map(|o| {
            let (_, kind, ns, name) = render::identity(o);
            (kind, ns, name)
        })
        .collect();
    prune(ctx, &layout.owner, |kind, ns, name| {
        !desired.contains(&(kind.to_string(), ns.map(str::to_string), name.to_string()))
    })
    .await?;

    // 4. Components.
    let mut components = BTreeMap::new();
    components.insert(
        status::CONTROL_PLANE.to_string(),
        ComponentStatus {
            state: ComponentState::Ready,
            message: Some(format!(
                "discovery served by halyard-operator at {}; {}",
                ctx.opts.render.discovery_address,
                match &native {
                    Some(n) => format!("nativeSidecar auto: {}", n.reason),
                    None => format!(
                        "nativeSidecar {}",
                        if cluster::native_sidecars(mi.spec.injection.native_sidecar, false) {
                            "true: native sidecars"
                        } else {
                            "false: classic sidecars"
                        }
                    ),
                }
            )),
        },
    );
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &layout.namespace);
    let observe = async |enabled: bool, name: String| -> Result<ComponentStatus> {
        Ok(if enabled {
            let d = deployments.get_opt(&name).await.map_err(|e| {
                Error::kube(
                    "get",
                    "Deployment",
                    &format!("{}/{name}", layout.namespace),
                    e,
                )
            })?;
            status::deployment_state(&name, d.as_ref())
        } else {
            ComponentStatus {
                state: ComponentState::Disabled,
                message: None,
            }
        })
    };
    match &ctx.opts.render.webhook_url {
        None => {
            let st = observe(true, layout.webhook_name()).await?;
            components.insert(status::WEBHOOK.to_string(), st);
        }
        Some(url) => {
            components.insert(
                status::WEBHOOK.to_string(),
                ComponentStatus {
                    state: ComponentState::Ready,
                    message: Some(format!("running outside the cluster at {url}")),
                },
            );
        }
    }
    let st = observe(layout.ingress, layout.ingress_name()).await?;
    components.insert(status::INGRESS_GATEWAY.to_string(), st);
    let st = observe(layout.egress, layout.egress_name()).await?;
    components.insert(status::EGRESS_GATEWAY.to_string(), st);

    // 5. Validation fail-closed once it is proven to deny.
    let webhook_ready = components
        .get(status::WEBHOOK)
        .is_some_and(|c| c.state == ComponentState::Ready);
    if !fail_closed && webhook_ready && validation_proven(ctx, layout).await {
        let input = RenderInput {
            validation_fail_closed: true,
            ..input
        };
        if let Some(vwc) = render::render(&input)?
            .into_iter()
            .find(|o| o["kind"] == "ValidatingWebhookConfiguration")
        {
            apply_object(ctx, &vwc).await?;
            fail_closed = true;
            ctx.event(
                mi,
                EventType::Normal,
                "ValidationEnforced",
                format!(
                    "{} denied a dry-run object; its failurePolicy is now Fail",
                    layout.validating_webhook_name()
                ),
            )
            .await;
        }
    }

    if let Some(dir) = &ctx.opts.cert_dir {
        write_cert_files(dir, &serving)?;
    }

    let obs = Observation {
        reconciled: Ok(()),
        components,
        installed_version: Some(layout.version.clone()),
        connected_proxies: ctx.opts.connected_proxies.as_ref().map(|f| f()),
    };
    let all_ready = obs
        .components
        .values()
        .all(|c| matches!(c.state, ComponentState::Ready | ComponentState::Disabled));
    if write_status(mi, ctx, &obs).await? {
        let previous = mi.status.as_ref().and_then(|s| s.installed_version.clone());
        if previous.as_deref() != Some(layout.version.as_str()) {
            let (reason, note) = match previous {
                Some(p) => (
                    "Upgraded",
                    format!("upgraded from {p} to {}", layout.version),
                ),
                None => ("Installed", format!("installed version {}", layout.version)),
            };
            ctx.event(mi, EventType::Normal, reason, note).await;
        }
    }

    let mut wait = if all_ready && fail_closed {
        ctx.opts.resync
    } else {
        ctx.opts.not_ready_requeue
    };
    if let Some(due) = ca::renewal_due(&serving.cert_chain_pem) {
        let secs = (due - OffsetDateTime::now_utc()).whole_seconds().max(1) as u64;
        wait = wait.min(Duration::from_secs(secs));
    }
    Ok(Action::requeue(wait))
}

fn write_cert_files(dir: &std::path::Path, serving: &ServingCert) -> Result<()> {
    let io = |p: &std::path::Path, e: std::io::Error| Error::Io {
        path: p.display().to_string(),
        why: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (file, text) in [
        ("tls.crt", &serving.cert_chain_pem),
        ("tls.key", &serving.key_pem),
        ("ca.crt", &serving.ca_bundle_pem),
    ] {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// Deletes owned objects for which `unwanted(kind, namespace, name)` holds, kind by kind in
/// [`kinds::PRUNE_ORDER`]. Returns what was deleted (`Kind ns/name`).
async fn prune(
    ctx: &Context,
    owner: &str,
    unwanted: impl Fn(&str, Option<&str>, &str) -> bool,
) -> Result<Vec<String>> {
    let selector = render::owner_selector(owner);
    let mut deleted = Vec::new();
    for k in kinds::PRUNE_ORDER {
        let api = dynamic_api(&ctx.client, &k, None);
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(l) => l,
            // A kind whose CRD is gone (PeerAuthentication after a purge) has nothing to prune.
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(Error::kube("list", k.kind, &selector, e)),
        };
        for obj in list.items {
            let name = obj.name_any();
            let ns = obj.metadata.namespace.clone();
            if !unwanted(k.kind, ns.as_deref(), &name) {
                continue;
            }
            let api = dynamic_api(&ctx.client, &k, ns.as_deref());
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(Error::kube(
                        "delete",
                        k.kind,
                        &qualified(ns.as_deref(), &name),
                        e,
                    ));
                }
            }
            info!("deleted {} {}", k.kind, qualified(ns.as_deref(), &name));
            deleted.push(format!("{} {}", k.kind, qualified(ns.as_deref(), &name)));
        }
    }
    Ok(deleted)
}

/// Uninstall: webhook configurations first, then workloads and the rest of what the MeshInstall owns;
/// CRDs (and so users' Istio objects) only with `spec.uninstall.purgeCRDs`. The namespace and the root CA
/// are kept.
pub async fn cleanup(mi: &MeshInstall, ctx: &Context) -> Result<Action> {
    let owner = mi.name_any();
    let deleted = prune(ctx, &owner, |_, _, _| true).await?;
    let mut purged = 0;
    if mi.spec.uninstall.purge_crds {
        let api = Api::<CustomResourceDefinition>::all(ctx.client.clone());
        let crds = halyard_crds::crd::all_crds().map_err(|e| Error::Render {
            what: "Istio CRDs".to_string(),
            why: e.to_string(),
        })?;
        for crd in crds {
            if crd.spec.group == halyard_crds::install::GROUP {
                continue;
            }
            let name = crd.name_any();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => purged += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube("delete", "CustomResourceDefinition", &name, e)),
            }
        }
    }
    ctx.event(
        mi,
        EventType::Normal,
        "Uninstalled",
        format!(
            "deleted {} objects{}",
            deleted.len(),
            if mi.spec.uninstall.purge_crds {
                format!(" and {purged} CRDs")
            } else {
                "; Istio CRDs and their objects are kept".to_string()
            }
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// The last status a MeshInstall had (for callers such as `halyard install`).
pub fn reconciled_condition(status: Option<&MeshInstallStatus>) -> Option<(bool, String)> {
    status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == halyard_crds::install::CONDITION_RECONCILED)
            .map(|c| {
                (
                    c.status == halyard_crds::install::ConditionStatus::True
                        && s.observed_generation.is_some(),
                    c.message.clone().unwrap_or_default(),
                )
            })
    })
}
