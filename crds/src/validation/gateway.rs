//! Gateway rules: servers, hosts, ports, binds and server-side TLS.

use super::common::enum_field;
use super::node::Node;
use super::report::Ctx;
use super::rules::{self, Protocol};

pub(crate) fn validate(spec: &Node, name: &str, cx: &mut Ctx) {
    if !rules::is_dns1123_label(name) {
        cx.err("metadata.name", format!("invalid gateway name: {name:?}"));
    }
    let servers = spec.list("servers", cx);
    if servers.is_empty() {
        cx.err(&spec.at("servers"), "gateway must have at least one server");
    }
    let mut port_names: Vec<String> = Vec::new();
    for s in &servers {
        if !s.is_object(cx) {
            continue;
        }
        validate_server(s, cx);
        if let Some(port) = s.get("port").filter(|p| p.v.is_object()) {
            let pname = port.str_or_empty("name", cx).to_string();
            if port_names.contains(&pname) {
                cx.err(
                    &port.at("name"),
                    format!("port names in servers must be unique: duplicate name {pname}"),
                );
            }
            port_names.push(pname);
            let proto = Protocol::parse(port.str_or_empty("protocol", cx));
            let redirect = s
                .get("tls")
                .and_then(|t| t.v.get("httpsRedirect"))
                .and_then(|v| v.as_bool());
            if !proto.is_some_and(Protocol::is_http) && redirect == Some(true) {
                cx.warn(
                    &s.at("tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

fn validate_server(s: &Node, cx: &mut Ctx) {
    let hosts = s.str_list("hosts", cx);
    if hosts.is_empty() {
        cx.err(
            &s.at("hosts"),
            "server config must contain at least one host",
        );
    }
    for (path, h) in &hosts {
        for e in rules::validate_namespace_slash_wildcard_hostname(h, true) {
            cx.err(path, e);
        }
    }
    let bind = s.str_or_empty("bind", cx);
    let tls = s.obj("tls", cx);
    let port_ok = match s.obj("port", cx) {
        None => {
            cx.err(&s.at("port"), "port is required");
            false
        }
        Some(port) => validate_server_port(&port, bind, cx),
    };
    if let Some(unix) = bind.strip_prefix("unix://") {
        cx.check(&s.at("bind"), rules::validate_unix_address(unix));
        if let Some(n) = s
            .get("port")
            .and_then(|p| p.v.get("number"))
            .and_then(|v| v.as_i64())
            && n != 0
        {
            cx.err(
                &s.at("port.number"),
                format!("port number must be 0 for unix domain socket: {n}"),
            );
        }
    } else if !bind.is_empty() {
        cx.check(&s.at("bind"), rules::validate_ip_address(bind));
    }
    if let Some(t) = &tls {
        validate_server_tls(t, cx);
    }
    if !port_ok {
        return;
    }
    let protocol = s
        .get("port")
        .and_then(|p| p.v.get("protocol"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let Some(p) = Protocol::parse(protocol) else {
        return;
    };
    match &tls {
        None if p.is_tls() => cx.err(
            &s.at("tls"),
            "server must have TLS settings for HTTPS/TLS protocols",
        ),
        Some(t) if !p.is_tls() => {
            if p.is_http() {
                // Plain HTTP servers may only carry an HTTPS redirect.
                let mut quiet = Ctx::default();
                let only_redirect = ["caCertificates", "privateKey", "serverCertificate"]
                    .iter()
                    .all(|k| t.str_or_empty(k, &mut quiet).is_empty())
                    && matches!(t.str("mode", &mut quiet), None | Some("PASSTHROUGH"));
                if !only_redirect {
                    cx.err(
                        &t.path,
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            } else {
                cx.err(
                    &t.path,
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
            }
        }
        _ => {}
    }
}

/// Returns whether the port is well-formed enough for protocol-dependent checks.
fn validate_server_port(port: &Node, bind: &str, cx: &mut Ctx) -> bool {
    let mut ok = true;
    let protocol = port.str_or_empty("protocol", cx);
    if Protocol::parse(protocol).is_none() {
        cx.err(
            &port.at("protocol"),
            format!(
                "invalid protocol {protocol:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"
            ),
        );
        ok = false;
    }
    let number = port.i64("number", cx).unwrap_or(0);
    if (number > 0 || !bind.starts_with("unix://"))
        && let Err(e) = rules::validate_port(number)
    {
        cx.err(&port.at("number"), e);
        ok = false;
    }
    if port.i64("targetPort", cx).is_some_and(|t| t > 0) {
        cx.err(
            &port.at("targetPort"),
            "targetPort has no impact on Gateways",
        );
        ok = false;
    }
    if port.str_or_empty("name", cx).is_empty() {
        cx.err(
            &port.at("name"),
            format!("port name must be set: {}", port.v),
        );
        ok = false;
    }
    ok
}

const SERVER_TLS_MODES: &[&str] = &[
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];
const TLS_VERSIONS: &[&str] = &["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];

const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

fn is_valid_cipher_suite(cs: &str) -> bool {
    // Expressions starting with an operator (`-`, `+`, `!`, `[`) are passed through as Istio does.
    cs.is_empty()
        || cs == "ALL"
        || !cs.starts_with(|c: char| c.is_alphanumeric())
        || VALID_CIPHER_SUITES.contains(&cs)
}

/// Server-side TLS settings (Gateway servers and Sidecar ingress listeners).
pub(crate) fn validate_server_tls(tls: &Node, cx: &mut Ctx) {
    let mode = enum_field(tls, "mode", SERVER_TLS_MODES, cx).unwrap_or("PASSTHROUGH");
    enum_field(tls, "minProtocolVersion", TLS_VERSIONS, cx);
    enum_field(tls, "maxProtocolVersion", TLS_VERSIONS, cx);
    let ciphers = tls.str_list("cipherSuites", cx);
    let min_version = tls
        .v
        .get("minProtocolVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if (min_version == "TLSV1_0" || min_version == "TLSV1_1") && ciphers.is_empty() {
        cx.warn(
            &tls.at("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let mut invalid: Vec<&str> = Vec::new();
    let mut valid: Vec<&str> = Vec::new();
    let mut dup: Vec<&str> = Vec::new();
    for (_, cs) in &ciphers {
        if !is_valid_cipher_suite(cs) {
            invalid.push(cs);
        } else if valid.contains(cs) {
            dup.push(cs);
        } else {
            valid.push(cs);
        }
    }
    invalid.sort_unstable();
    dup.sort_unstable();
    if !invalid.is_empty() {
        cx.warn(
            &tls.at("cipherSuites"),
            format!("ignoring invalid cipher suites: [{}]", invalid.join(" ")),
        );
    }
    if !dup.is_empty() {
        cx.warn(
            &tls.at("cipherSuites"),
            format!("ignoring duplicate cipher suites: [{}]", dup.join(" ")),
        );
    }

    let s = |k: &str, cx: &mut Ctx| tls.str_or_empty(k, cx).to_string();
    let cert = s("serverCertificate", cx);
    let key = s("privateKey", cx);
    let ca = s("caCertificates", cx);
    let cred = s("credentialName", cx);
    let crl = s("caCrl", cx);
    let creds_list = tls.len("credentialNames") > 0;
    let tls_certs = tls.len("tlsCertificates") > 0;
    let cred_kinds =
        usize::from(!cred.is_empty()) + usize::from(creds_list) + usize::from(tls_certs);
    if !cred.is_empty() && creds_list {
        cx.err(
            &tls.path,
            "only one of credentialName or credentialNames can be set",
        );
    }
    if !cred.is_empty() && tls_certs {
        cx.err(
            &tls.path,
            "only one of credentialName or tlsCertificates can be set",
        );
    }
    if creds_list && tls_certs {
        cx.err(
            &tls.path,
            "only one of credentialNames or tlsCertificates can be set",
        );
    }

    if mode == "ISTIO_MUTUAL" {
        // ISTIO_MUTUAL uses the workload certificate; any other certificate source is a mistake.
        if !cert.is_empty() {
            cx.err(
                &tls.at("serverCertificate"),
                "ISTIO_MUTUAL TLS cannot have associated server certificate",
            );
        }
        if !key.is_empty() {
            cx.err(
                &tls.at("privateKey"),
                "ISTIO_MUTUAL TLS cannot have associated private key",
            );
        }
        if !ca.is_empty() {
            cx.err(
                &tls.at("caCertificates"),
                "ISTIO_MUTUAL TLS cannot have associated CA bundle",
            );
        }
        if !cred.is_empty() {
            cx.err(
                &tls.at("credentialName"),
                "ISTIO_MUTUAL TLS cannot have associated credentialName",
            );
        }
        return;
    }
    if (mode == "PASSTHROUGH" || mode == "AUTO_PASSTHROUGH")
        && (!crl.is_empty()
            || !cert.is_empty()
            || !key.is_empty()
            || !ca.is_empty()
            || !cred.is_empty())
    {
        cx.warn(
            &tls.path,
            format!("{mode} mode does not use certificates, they will be ignored"),
        );
    }
    let mutual = mode == "MUTUAL" || mode == "OPTIONAL_MUTUAL";
    if (mode == "SIMPLE" || mutual) && cred_kinds > 0 {
        // Credentials come from a Secret (or the listed certificates); no file paths needed.
        if !crl.is_empty() && !cred.is_empty() {
            cx.err(&tls.at("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the credential");
        }
        return;
    }
    if mode == "SIMPLE" {
        if cert.is_empty() {
            cx.err(
                &tls.at("serverCertificate"),
                "SIMPLE TLS requires a server certificate",
            );
        }
        if key.is_empty() {
            cx.err(&tls.at("privateKey"), "SIMPLE TLS requires a private key");
        }
    } else if mutual {
        if cert.is_empty() {
            cx.err(
                &tls.at("serverCertificate"),
                "MUTUAL TLS requires a server certificate",
            );
        }
        if key.is_empty() {
            cx.err(&tls.at("privateKey"), "MUTUAL TLS requires a private key");
        }
        if ca.is_empty() {
            cx.err(
                &tls.at("caCertificates"),
                "MUTUAL TLS requires a client CA bundle",
            );
        }
    }
    if !crl.is_empty() && mode == "SIMPLE" {
        cx.err(&tls.at("caCrl"), "CRL is not supported with SIMPLE TLS");
    }
}
