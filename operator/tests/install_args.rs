//! The Deployments the operator renders (halyard-webhook, the gateways) and the one it is installed with
//! (`operator/deploy/operator.yaml`) start binaries with flags and files. Each container's command line is
//! parsed here with the binary's real parser (`halyard_webhook::cli::Args`, `halyard_proxy::cli::Args`,
//! `halyard_operator::run::Args`), after Kubernetes' `$(VAR)` expansion and with its environment applied as
//! the binary would read it, and then:
//! - every environment variable the container sets is read by the binary (or used in a `$(VAR)`), and every
//!   `$(VAR)` is defined;
//! - every file the parsed flags name lies under a volume mount, and the ConfigMap or Secret behind it has
//!   that key (rendered in the same installation, or published by the operator);
//! - every declared container port and probe port is one the binary listens on, and addresses that point
//!   at another component (the discovery address, Services) reach a port it listens on.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory, Parser};
use halyard_crds::install::MeshInstall;
use halyard_operator::install::ca::ServingCert;
use halyard_operator::install::client as install_client;
use halyard_operator::install::render::{self, RenderInput, RenderSettings};
use halyard_operator::install::root_cert;
use serde_json::Value;

fn serving() -> ServingCert {
    ServingCert {
        cert_chain_pem: "-----BEGIN CERTIFICATE-----\nU0VSVklORw==\n-----END CERTIFICATE-----\n"
            .into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n".into(),
        ca_bundle_pem: "-----BEGIN CERTIFICATE-----\nUk9PVA==\n-----END CERTIFICATE-----\n".into(),
    }
}

fn rendered(spec: &str) -> Vec<Value> {
    let mi: MeshInstall = serde_yaml::from_str(&format!(
        "apiVersion: install.halyard.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: mesh}}\nspec: {spec}\n"
    ))
    .unwrap();
    render::render(&RenderInput {
        install: &mi,
        settings: &RenderSettings::default(),
        serving: &serving(),
        validation_fail_closed: false,
        native_sidecars_supported: false,
    })
    .unwrap()
}

/// The installations whose Deployments are checked: every profile's components, and a canary revision in
/// another namespace (suffixed names).
fn installations() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("demo", rendered("{profile: demo}")),
        (
            "canary",
            rendered("{profile: demo, revision: canary, namespace: mesh-system}"),
        ),
    ]
}

fn deployments(objects: &[Value]) -> impl Iterator<Item = &Value> {
    objects.iter().filter(|o| o["kind"] == "Deployment")
}

fn find<'a>(objects: &'a [Value], kind: &str, ns: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| {
        o["kind"] == kind
            && o["metadata"]["name"] == name
            && o["metadata"]["namespace"].as_str().unwrap_or(ns) == ns
    })
}

/// What the downward API gives a `fieldRef` in this pod (a plausible value of the right shape).
fn field_value(deployment: &Value, path: &str) -> String {
    let spec = &deployment["spec"]["template"]["spec"];
    match path {
        "metadata.name" => format!(
            "{}-5d9c7b-x2x4q",
            deployment["metadata"]["name"].as_str().unwrap()
        ),
        "metadata.namespace" => deployment["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string(),
        "status.podIP" => "10.1.2.3".into(),
        "status.podIPs" => "10.1.2.3,fd00::3".into(),
        "status.hostIP" => "192.168.0.10".into(),
        "spec.nodeName" => "node-1".into(),
        "spec.serviceAccountName" => spec["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .into(),
        other => panic!("fieldRef {other} is not known to this test; add it"),
    }
}

/// A container's command line as the binary sees it: `$(VAR)` expanded from the container's environment,
/// then the environment variables the binary reads turned into the flags they stand for (unless the flag
/// is given). Fails on an undefined `$(VAR)` and on an environment variable nothing reads.
fn argv(deployment: &Value, container: &Value, binary: &str, cmd: &clap::Command) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(p)) => field_value(deployment, p),
            _ => panic!("env {name}: only values and fieldRefs are expected: {e}"),
        };
        env.push((name, value));
    }
    let lookup: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut referenced = Vec::new();
    let mut expand = |s: &str| -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("$(") {
            out.push_str(&rest[..i]);
            let end = rest[i..]
                .find(')')
                .map(|e| i + e)
                .unwrap_or_else(|| panic!("unclosed $( in {s}"));
            let var = &rest[i + 2..end];
            let value = lookup
                .get(var)
                .unwrap_or_else(|| panic!("{s}: $({var}) is not defined in the container's env (Kubernetes would pass it literally)"));
            out.push_str(value);
            referenced.push(var.to_string());
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    };
    let mut argv: Vec<String> = match container["command"].as_array() {
        Some(c) => c.iter().map(|a| expand(a.as_str().unwrap())).collect(),
        None => vec![binary.to_string()],
    };
    argv.extend(
        container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| expand(a.as_str().unwrap())),
    );
    let mut unread = Vec::new();
    for (name, value) in &env {
        let readers: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .collect();
        if readers.is_empty() && !referenced.contains(name) {
            unread.push(name.clone());
        }
        for a in readers {
            let long = format!("--{}", a.get_long().unwrap());
            if argv
                .iter()
                .any(|x| x == &long || x.starts_with(&format!("{long}=")))
            {
                continue;
            }
            match a.get_action() {
                ArgAction::SetTrue if value == "true" || value == "1" => argv.push(long),
                ArgAction::SetTrue => {}
                _ => {
                    argv.push(long);
                    argv.push(value.clone());
                }
            }
        }
    }
    assert!(
        unread.is_empty(),
        "{binary} in {}: env {unread:?} is read by nothing (not a flag's environment variable, not used in $(VAR))",
        deployment["metadata"]["name"]
    );
    argv
}

/// Parses with the binary's parser, its environment fallbacks switched off: [`argv`] already turned the
/// container's environment into flags, and this test process's own environment (a `KUBECONFIG`, a
/// `POD_NAMESPACE` in CI) must not leak in.
fn parse<A: Parser>(argv: &[String], what: &str) -> A {
    let cmd = A::command().mut_args(|a| a.env(None::<&'static str>));
    let matches = cmd
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("{what}: {argv:?} does not parse:\n{e}"));
    A::from_arg_matches(&matches)
        .unwrap_or_else(|e| panic!("{what}: {argv:?} does not parse:\n{e}"))
}

/// `path` is a file inside a mounted ConfigMap or Secret that has the key.
fn assert_file_provided(objects: &[Value], deployment: &Value, container: &Value, path: &Path) {
    let ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let what = format!("{} {}", deployment["metadata"]["name"], path.display());
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("{what}: no volume is mounted there"));
    let relative = path
        .strip_prefix(mount["mountPath"].as_str().unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let relative = match mount["subPath"].as_str() {
        Some(sub) => format!("{sub}/{relative}")
            .trim_end_matches('/')
            .to_string(),
        None => relative,
    };
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{what}: mount {} has no volume", mount["name"]));
    // `items` remap keys to paths
    let key_for = |source: &Value| -> String {
        match source["items"].as_array() {
            Some(items) => items
                .iter()
                .find(|i| i["path"] == relative.as_str())
                .and_then(|i| i["key"].as_str())
                .unwrap_or_else(|| panic!("{what}: no item maps to {relative}"))
                .to_string(),
            None => relative.clone(),
        }
    };
    if let Some(name) = volume["configMap"]["name"].as_str() {
        let key = key_for(&volume["configMap"]);
        if name == root_cert::CONFIG_MAP {
            // published into every namespace by the root-cert controller, not rendered
            assert_eq!(key, root_cert::ROOT_CERT_KEY, "{what}");
            return;
        }
        let cm = find(objects, "ConfigMap", ns, name)
            .unwrap_or_else(|| panic!("{what}: ConfigMap {ns}/{name} is not rendered"));
        assert!(
            cm["data"].get(&key).is_some(),
            "{what}: ConfigMap {name} has no key {key}"
        );
    } else if let Some(name) = volume["secret"]["secretName"].as_str() {
        let key = key_for(&volume["secret"]);
        let secret = find(objects, "Secret", ns, name)
            .unwrap_or_else(|| panic!("{what}: Secret {ns}/{name} is not rendered"));
        assert!(
            secret["data"].get(&key).is_some(),
            "{what}: Secret {name} has no key {key}"
        );
    } else {
        panic!("{what}: volume {volume} provides no file");
    }
}

fn probe_ports(container: &Value) -> Vec<u16> {
    ["readinessProbe", "livenessProbe", "startupProbe"]
        .iter()
        .filter_map(|p| {
            let probe = &container[*p];
            probe["httpGet"]["port"]
                .as_u64()
                .or_else(|| probe["tcpSocket"]["port"].as_u64())
                .or_else(|| probe["grpc"]["port"].as_u64())
        })
        .map(|p| u16::try_from(p).unwrap())
        .collect()
}

fn container_ports(container: &Value) -> Vec<(Option<String>, u16)> {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().map(str::to_string),
                u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn webhook_deployments_parse_and_have_their_files() {
    let cmd = halyard_webhook::cli::Args::command();
    let mut checked = 0;
    for (case, objects) in installations() {
        for d in deployments(&objects).filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("halyard-webhook")
        }) {
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            let argv = argv(d, c, "halyard-webhook", &cmd);
            let args: halyard_webhook::cli::Args = parse(&argv, case);
            let files: Vec<PathBuf> = [Some(args.tls_cert.clone()), Some(args.tls_key.clone())]
                .into_iter()
                .chain([args.injection_template.clone(), args.mesh_config.clone()])
                .flatten()
                .collect();
            assert_eq!(
                files.len(),
                4,
                "{case}: the operator's template and mesh config are passed"
            );
            for f in &files {
                assert_file_provided(&objects, d, c, f);
            }
            // the template file holds what the webhook's own loader accepts
            let ns = d["metadata"]["namespace"].as_str().unwrap();
            let inject_cm = d["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| {
                    args.injection_template.as_ref().unwrap().starts_with(
                        c["volumeMounts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|m| m["name"] == v["name"])
                            .map(|m| m["mountPath"].as_str().unwrap())
                            .unwrap_or("/nonexistent"),
                    )
                })
                .unwrap()["configMap"]["name"]
                .as_str()
                .unwrap();
            let key = args
                .injection_template
                .as_ref()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            let text = find(&objects, "ConfigMap", ns, inject_cm).unwrap()["data"][key]
                .as_str()
                .unwrap();
            halyard_webhook::InjectionTemplate::from_yaml(text, "mounted template").unwrap();

            // ports: what is declared and probed is what it listens on; its Service targets it
            for (_, p) in container_ports(c) {
                assert_eq!(p, args.port, "{case}: container port");
            }
            for p in probe_ports(c) {
                assert_eq!(p, args.port, "{case}: probe port");
            }
            let svc = find(
                &objects,
                "Service",
                ns,
                d["metadata"]["name"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(
                svc["spec"]["ports"][0]["targetPort"].as_u64(),
                Some(u64::from(args.port))
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}

/// The operator as `operator/deploy/operator.yaml` runs it, with its Service.
fn operator() -> (halyard_operator::run::Args, Vec<Value>) {
    let objects = install_client::operator_objects(None).unwrap();
    let d = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap()
        .clone();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let cmd = halyard_operator::run::Args::command();
    let argv = argv(&d, c, "halyard-operator", &cmd);
    let args: halyard_operator::run::Args = parse(&argv, "operator.yaml");
    (args, objects)
}

#[test]
fn the_operator_deployment_parses_and_listens_where_it_says() {
    let (args, objects) = operator();
    let d = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(args.install.enabled, "the MeshInstall controller runs");
    assert!(args.install.leader_elect, "two replicas elect a leader");
    assert_eq!(
        args.install.lease_namespace, "halyard-system",
        "POD_NAMESPACE"
    );
    assert!(args.config_dir.is_none(), "Kubernetes mode");
    // files: none is named, so nothing needs a mount (it runs with a read-only root filesystem)
    for f in [
        args.kubeconfig.as_ref(),
        args.install.webhook_cert_dir.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert_file_provided(&objects, d, c, f);
    }
    let listening = [args.grpc_addr.port(), args.monitoring_addr.port()];
    for (name, p) in container_ports(c) {
        assert!(
            listening.contains(&p),
            "container port {name:?} {p} is not one the operator listens on ({listening:?})"
        );
    }
    for p in probe_ports(c) {
        assert_eq!(
            p,
            args.monitoring_addr.port(),
            "readiness is on the monitoring port"
        );
    }
    let svc = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    for sp in svc["spec"]["ports"].as_array().unwrap() {
        let target = sp["targetPort"].as_u64().or(sp["port"].as_u64()).unwrap();
        assert!(
            listening.contains(&u16::try_from(target).unwrap()),
            "Service port {sp} reaches nothing"
        );
    }
}

#[test]
fn gateway_deployments_parse_with_the_proxy_cli_and_reach_the_operator() {
    let (operator_args, operator_objects) = operator();
    let operator_svc = operator_objects
        .iter()
        .find(|o| o["kind"] == "Service")
        .unwrap();
    let cmd = halyard_proxy::cli::Args::command();
    let mut checked = 0;
    for (case, objects) in installations() {
        for d in deployments(&objects).filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("istio-")
        }) {
            let name = d["metadata"]["name"].as_str().unwrap();
            let what = format!("{case} {name}");
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            let argv = argv(d, c, "halyard-proxy", &cmd);
            let args: halyard_proxy::cli::Args = parse(&argv, &what);
            // discovery mode, as a gateway, with an identity
            assert!(args.config.is_none(), "{what}");
            let node = args
                .discovery_node()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                node.proxy_type,
                halyard_config::discovery::ProxyType::Router as i32,
                "{what}"
            );
            let ns = d["metadata"]["namespace"].as_str().unwrap();
            assert!(
                node.id.ends_with(&format!(".{ns}")) && node.id.starts_with(name),
                "{what}: node id {}",
                node.id
            );
            assert_eq!(node.namespace, ns, "{what}");
            assert!(!node.ip_addresses.is_empty(), "{what}: INSTANCE_IPS");
            assert_eq!(node.workload_name, name, "{what}");
            // Gateway selectors match the proxy's labels, which are the pod's
            let pod_labels = d["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .unwrap();
            for (k, v) in &node.labels {
                assert_eq!(
                    pod_labels.get(k).and_then(Value::as_str),
                    Some(v.as_str()),
                    "{what}: label {k}"
                );
            }
            assert!(
                node.labels.contains_key("istio"),
                "{what}: istio=…gateway label"
            );
            assert!(
                args.node().unwrap().principal.starts_with(&format!(
                    "spiffe://cluster.local/ns/{ns}/sa/{name}-service-account"
                )),
                "{what}"
            );
            // the discovery address is the operator's Service, on the port the operator serves discovery
            assert_eq!(args.discovery_address.len(), 1, "{what}");
            let url: http::Uri = args.discovery_address[0].parse().unwrap();
            assert_eq!(
                url.scheme_str(),
                Some("http"),
                "{what}: plaintext discovery"
            );
            assert_eq!(
                url.host(),
                Some(
                    format!(
                        "{}.{}.svc",
                        operator_svc["metadata"]["name"].as_str().unwrap(),
                        operator_svc["metadata"]["namespace"].as_str().unwrap()
                    )
                    .as_str()
                ),
                "{what}"
            );
            let port = url.port_u16().unwrap();
            let svc_port = operator_svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["port"].as_u64() == Some(u64::from(port)))
                .unwrap_or_else(|| panic!("{what}: the operator's Service has no port {port}"));
            let target = svc_port["targetPort"]
                .as_u64()
                .or(svc_port["port"].as_u64())
                .unwrap();
            assert_eq!(
                target,
                u64::from(operator_args.grpc_addr.port()),
                "{what}: discovery reaches the operator's gRPC listener"
            );
            // files (access log aside, stdout) are mounted
            for f in [args.config.as_ref()].into_iter().flatten() {
                assert_file_provided(&objects, d, c, f);
            }
            if let Some(log) = &args.access_log
                && log != "/dev/stdout"
            {
                assert_file_provided(&objects, d, c, Path::new(log));
            }
            // probes and the metrics port are the proxy's status and Prometheus listeners
            for p in probe_ports(c) {
                assert_eq!(p, args.status_address.port(), "{what}: probe");
            }
            let prom = container_ports(c)
                .into_iter()
                .find(|(n, _)| n.as_deref() == Some("http-envoy-prom"))
                .unwrap();
            assert_eq!(prom.1, args.prometheus_address.port(), "{what}");
            assert_eq!(
                d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
                args.prometheus_address.port().to_string(),
                "{what}"
            );
            // the root certificate is mounted where Istio mounts it
            assert_file_provided(
                &objects,
                d,
                c,
                Path::new("/var/run/secrets/istio/root-cert.pem"),
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "ingress and egress of both installations");
}

/// A gateway container as the operator rendered it before these checks existed.
fn stale_gateway() -> Value {
    serde_json::json!({
        "kind": "Deployment",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {"template": {"spec": {"serviceAccountName": "istio-ingressgateway-service-account", "containers": [{
            "name": "istio-proxy",
            "args": ["--discovery-address", "http://halyard-operator.halyard-system.svc:15010", "--node-id", "$(POD_NAME).$(POD_NAMESPACE)"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ],
        }]}}},
    })
}

#[test]
#[should_panic(expected = "env [\"INSTANCE_IP\"] is read by nothing")]
fn an_environment_variable_the_binary_does_not_read_is_caught() {
    let d = stale_gateway();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    argv(&d, c, "halyard-proxy", &halyard_proxy::cli::Args::command());
}

#[test]
#[should_panic(expected = "$(POD_IP) is not defined")]
fn an_undefined_variable_reference_is_caught() {
    let mut d = stale_gateway();
    d["spec"]["template"]["spec"]["containers"][0]["args"] =
        serde_json::json!(["--ip", "$(POD_IP)"]);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    argv(&d, c, "halyard-proxy", &halyard_proxy::cli::Args::command());
}

#[test]
#[should_panic(expected = "does not parse")]
fn a_flag_the_binary_does_not_have_is_caught() {
    let argv: Vec<String> = ["halyard-webhook", "--listen", "0.0.0.0:15017"]
        .map(String::from)
        .to_vec();
    let _: halyard_webhook::cli::Args = parse(&argv, "webhook as rendered before");
}

#[test]
#[should_panic(expected = "has no key")]
fn a_file_missing_from_its_config_map_is_caught() {
    let objects = rendered("{profile: minimal}");
    let d = deployments(&objects).next().unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_file_provided(&objects, d, c, Path::new("/etc/istio/inject/values"));
}
