//! Compiled HTTP route tables and request matching (pure: no I/O).
//!
//! VirtualService semantics: virtual host chosen by authority (exact > `*.suffix` > `prefix.*` >
//! `*`, with and without the port), then routes in order, first match wins; a route's matches are
//! ORed, the conditions inside one match are ANDed.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use regex::Regex;

/// A string condition: exact, prefix or (whole-string) regex.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl StringMatch {
    /// Compile an RE2-style regex anchored at both ends, as Istio's `regex` matches the whole value.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(StringMatch::Regex(Regex::new(&format!("^(?:{pattern})$"))?))
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(e) => v == e,
            StringMatch::Prefix(p) => v.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_match(v),
        }
    }

    fn matches_ignore_case(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(e) => v.eq_ignore_ascii_case(e),
            StringMatch::Prefix(p) => {
                v.len() >= p.len()
                    && v.is_char_boundary(p.len())
                    && v[..p.len()].eq_ignore_ascii_case(p)
            }
            StringMatch::Regex(r) => r.is_match(&v.to_ascii_lowercase()) || r.is_match(v),
        }
    }
}

/// A header condition.
#[derive(Debug, Clone)]
pub enum HeaderMatch {
    Value(StringMatch),
    Present,
}

/// One `match` block of a VirtualService http route. All set conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    pub uri: Option<StringMatch>,
    pub ignore_uri_case: bool,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub headers: Vec<(HeaderName, HeaderMatch)>,
    /// `withoutHeaders`: the request must NOT satisfy any of these.
    pub without_headers: Vec<(HeaderName, HeaderMatch)>,
    pub query_params: Vec<(String, StringMatch)>,
    pub port: Option<u16>,
}

/// The parts of a request that matching looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub scheme: &'a str,
    pub authority: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The destination port the request arrived for.
    pub port: u16,
}

fn header_ok(headers: &HeaderMap, name: &HeaderName, m: &HeaderMatch) -> bool {
    match m {
        HeaderMatch::Present => headers.contains_key(name),
        HeaderMatch::Value(sm) => headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| sm.matches(s))),
    }
}

/// Value of query parameter `name` (first occurrence, not percent-decoded, as Envoy matches).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

impl RequestMatch {
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        if let Some(u) = &self.uri {
            let ok = if self.ignore_uri_case {
                u.matches_ignore_case(r.path)
            } else {
                u.matches(r.path)
            };
            if !ok {
                return false;
            }
        }
        if let Some(p) = self.port
            && p != r.port
        {
            return false;
        }
        if let Some(s) = &self.scheme
            && !s.matches(r.scheme)
        {
            return false;
        }
        if let Some(m) = &self.method
            && !m.matches(r.method.as_str())
        {
            return false;
        }
        if let Some(a) = &self.authority
            && !a.matches(r.authority)
        {
            return false;
        }
        if !self.headers.iter().all(|(n, m)| header_ok(r.headers, n, m)) {
            return false;
        }
        if self
            .without_headers
            .iter()
            .any(|(n, m)| header_ok(r.headers, n, m))
        {
            return false;
        }
        self.query_params
            .iter()
            .all(|(n, m)| query_param(r.query, n).is_some_and(|v| m.matches(v)))
    }
}

/// One weighted destination of a route (or TCP proxy).
#[derive(Debug, Clone, Default)]
pub struct WeightedDest {
    /// Index in the snapshot's cluster table.
    pub cluster: usize,
    cumulative: u64,
    /// VirtualService per-destination `headers`.
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// Destinations with weights; any positive weights, normalised by their sum.
#[derive(Debug, Clone, Default)]
pub struct WeightedClusters {
    entries: Vec<WeightedDest>,
    total: u64,
}

impl WeightedClusters {
    /// Entries with weight 0 are dropped.
    pub fn new(dests: impl IntoIterator<Item = (usize, u32)>) -> Self {
        Self::with_headers(
            dests
                .into_iter()
                .map(|(c, w)| (c, w, HeaderOps::default(), HeaderOps::default())),
        )
    }

    pub fn with_headers(
        dests: impl IntoIterator<Item = (usize, u32, HeaderOps, HeaderOps)>,
    ) -> Self {
        let mut entries = Vec::new();
        let mut total = 0u64;
        for (cluster, w, request_headers, response_headers) in dests {
            if w == 0 {
                continue;
            }
            total += u64::from(w);
            entries.push(WeightedDest {
                cluster,
                cumulative: total,
                request_headers,
                response_headers,
            });
        }
        WeightedClusters { entries, total }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pick a destination with a uniform random number.
    pub fn pick_dest(&self, rand: u64) -> Option<&WeightedDest> {
        match self.entries.as_slice() {
            [] => None,
            [d] => Some(d),
            e => {
                let unit = rand % self.total;
                let pos = e.partition_point(|d| d.cumulative <= unit);
                e.get(pos)
            }
        }
    }

    /// Pick a cluster index with a uniform random number.
    pub fn pick(&self, rand: u64) -> Option<usize> {
        self.pick_dest(rand).map(|d| d.cluster)
    }

    pub fn clusters(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|d| d.cluster)
    }
}

/// Rewrites applied before forwarding.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Replaces the matched uri prefix (or the whole path for exact/regex/no uri match).
    pub uri: Option<String>,
    /// Replaces the whole path.
    pub full_path: Option<String>,
    /// `uriRegexRewrite`: (pattern, substitution with `\1`-style groups).
    pub uri_regex: Option<(Regex, String)>,
    pub authority: Option<String>,
}

impl Rewrite {
    /// The new path (without query) for `path` matched by `m`, or `None` to keep it.
    pub fn path(&self, path: &str, m: Option<&RequestMatch>) -> Option<String> {
        if let Some((re, sub)) = &self.uri_regex {
            // Envoy's regex rewrite substitutes every match; `\1` style groups become `${1}`.
            let sub = convert_groups(sub);
            return Some(re.replace_all(path, sub.as_str()).into_owned());
        }
        if let Some(p) = &self.full_path {
            return Some(p.clone());
        }
        let new = self.uri.as_ref()?;
        match m.and_then(|m| m.uri.as_ref()) {
            Some(StringMatch::Prefix(p)) if path.len() >= p.len() => {
                let rest = &path[p.len()..];
                // Avoid "//" when both the replacement ends and the remainder starts with '/'.
                if new.ends_with('/') && rest.starts_with('/') {
                    Some(format!("{new}{}", &rest[1..]))
                } else {
                    Some(format!("{new}{rest}"))
                }
            }
            _ => Some(new.clone()),
        }
    }
}

fn convert_groups(sub: &str) -> String {
    let mut out = String::with_capacity(sub.len() + 4);
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(d) = chars.peek().copied()
            && d.is_ascii_digit()
        {
            chars.next();
            out.push_str("${");
            out.push(d);
            out.push('}');
            continue;
        }
        if c == '$' {
            out.push_str("$$");
            continue;
        }
        out.push(c);
    }
    out
}

/// Header edits: set (replace), add (append), remove.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

/// CORS policy of a route.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatch>,
    pub allow_methods: Option<HeaderValue>,
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
}

impl CorsPolicy {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| match m {
            StringMatch::Exact(e) => e == "*" || e == origin,
            other => other.matches(origin),
        })
    }

    /// Is this a preflight the proxy answers itself?
    pub fn is_preflight(&self, method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(http::header::ORIGIN)
            && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Headers for the preflight answer (origin already checked).
    pub fn preflight_headers(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        use http::header::*;
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Some(v) = &self.allow_methods {
            h.insert(ACCESS_CONTROL_ALLOW_METHODS, v.clone());
        }
        if let Some(v) = &self.allow_headers {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.allow_credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Headers added to a normal response for an allowed origin.
    pub fn response_headers(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        use http::header::*;
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Some(v) = &self.expose_headers {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if self.allow_credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// Redirect target parts; unset parts keep the request's.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub code: StatusCode,
}

impl Redirect {
    /// The `Location` for a request.
    pub fn location(&self, scheme: &str, authority: &str, path_and_query: &str) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let mut host = self.authority.as_deref().unwrap_or(authority).to_string();
        if let Some(p) = self.port {
            host = format!("{}:{p}", strip_port(&host));
        }
        let path = self.path.as_deref().unwrap_or(path_and_query);
        format!("{scheme}://{host}{path}")
    }
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum Action {
    Forward(Box<Forward>),
    Redirect(Redirect),
    Direct { status: StatusCode, body: Bytes },
}

/// Forwarding to clusters, with what happens on the way. Resilience policies (retries, faults,
/// mirrors, issue 4) attach here.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    pub clusters: WeightedClusters,
    pub rewrite: Rewrite,
    /// Total time for the request; `None` = no timeout (Istio's default).
    pub timeout: Option<std::time::Duration>,
    /// Retries, fault injection and mirrors.
    pub resilience: crate::resilience::RoutePolicy,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// ORed; empty means "match everything".
    pub matches: Vec<RequestMatch>,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub cors: Option<CorsPolicy>,
}

impl Route {
    /// The match block that selected this request, if the route applies (`Some(None)` for a
    /// route without matches).
    pub fn matched<'r>(&'r self, req: &RequestView<'_>) -> Option<Option<&'r RequestMatch>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches.iter().find(|m| m.matches(req)).map(Some)
    }
}

/// A virtual host: domains and ordered routes.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

/// A compiled route configuration (one per listener/port).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    /// (suffix including the dot, vhost) longest first, for `*.example.com`.
    suffix: Vec<(String, usize)>,
    /// (prefix including the dot, vhost) longest first, for `example.*`.
    prefix: Vec<(String, usize)>,
    any: Option<usize>,
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

impl RouteTable {
    pub fn new(name: String, vhosts: Vec<VirtualHost>) -> Self {
        let mut t = RouteTable {
            name,
            ..Default::default()
        };
        for (i, vh) in vhosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    t.any.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    t.suffix.push((s.to_string(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    t.prefix.push((p.to_string(), i));
                } else {
                    t.exact.entry(d).or_insert(i);
                }
            }
        }
        t.suffix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        t.prefix.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        t.vhosts = vhosts;
        t
    }

    /// The virtual host for an authority (case-insensitive, with or without `:port`).
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let lower;
        let auth = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = authority.to_ascii_lowercase();
            lower.as_str()
        } else {
            authority
        };
        let host = strip_port(auth);
        let idx = self
            .exact
            .get(auth)
            .or_else(|| self.exact.get(host))
            .copied()
            .or_else(|| {
                [auth, host].iter().find_map(|h| {
                    self.suffix
                        .iter()
                        .find(|(s, _)| h.len() > s.len() && h.ends_with(s.as_str()))
                        .map(|(_, i)| *i)
                })
            })
            .or_else(|| {
                [auth, host].iter().find_map(|h| {
                    self.prefix
                        .iter()
                        .find(|(p, _)| h.len() > p.len() && h.starts_with(p.as_str()))
                        .map(|(_, i)| *i)
                })
            })
            .or(self.any)?;
        self.vhosts.get(idx)
    }

    /// First matching route of the request's virtual host, with the match block that selected it.
    pub fn route<'t>(
        &'t self,
        req: &RequestView<'_>,
    ) -> Option<(&'t VirtualHost, &'t Route, Option<&'t RequestMatch>)> {
        let vh = self.vhost(req.authority)?;
        vh.routes
            .iter()
            .find_map(|r| r.matched(req).map(|m| (vh, r, m)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view<'a>(
        method: &'a Method,
        authority: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            method,
            scheme: "http",
            authority,
            path,
            query,
            headers,
            port: 80,
        }
    }

    fn route(name: &str, m: Vec<RequestMatch>) -> Route {
        Route {
            name: name.into(),
            matches: m,
            action: Action::Direct {
                status: StatusCode::OK,
                body: Bytes::new(),
            },
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            cors: None,
        }
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        RouteTable::new(
            "80".into(),
            vec![VirtualHost {
                name: "svc".into(),
                domains: vec!["svc".into(), "svc:80".into()],
                routes,
            }],
        )
    }

    #[test]
    fn domain_priority_exact_suffix_prefix_any() {
        let vh = |n: &str, d: &[&str]| VirtualHost {
            name: n.into(),
            domains: d.iter().map(|s| s.to_string()).collect(),
            routes: vec![],
        };
        let t = RouteTable::new(
            "t".into(),
            vec![
                vh("any", &["*"]),
                vh("pre", &["api.*"]),
                vh("suf", &["*.example.com"]),
                vh("longsuf", &["*.b.example.com"]),
                vh("exact", &["a.example.com", "a.example.com:8080"]),
            ],
        );
        let name = |a: &str| t.vhost(a).map(|v| v.name.clone()).unwrap();
        assert_eq!(name("a.example.com"), "exact");
        assert_eq!(name("A.Example.COM:8080"), "exact");
        assert_eq!(name("a.example.com:9999"), "exact"); // falls back to host without port
        assert_eq!(name("x.b.example.com"), "longsuf");
        assert_eq!(name("z.example.com:80"), "suf");
        assert_eq!(name("api.internal"), "pre");
        assert_eq!(name("other"), "any");
        assert_eq!(name("[::1]:80"), "any");
    }

    #[test]
    fn first_match_wins_in_order() {
        let t = table(vec![
            route(
                "a",
                vec![RequestMatch {
                    uri: Some(StringMatch::Prefix("/api".into())),
                    ..Default::default()
                }],
            ),
            route(
                "b",
                vec![RequestMatch {
                    uri: Some(StringMatch::Exact("/api/x".into())),
                    ..Default::default()
                }],
            ),
            route("c", vec![]),
        ]);
        let h = HeaderMap::new();
        let m = Method::GET;
        let r = |p| {
            t.route(&view(&m, "svc", p, None, &h))
                .map(|(_, r, _)| r.name.clone())
        };
        assert_eq!(r("/api/x").as_deref(), Some("a"));
        assert_eq!(r("/other").as_deref(), Some("c"));
        assert!(t.route(&view(&m, "nope", "/", None, &h)).is_none());
    }

    #[test]
    fn uri_kinds_and_ignore_case() {
        let h = HeaderMap::new();
        let m = Method::GET;
        let re = RequestMatch {
            uri: Some(StringMatch::regex("/v[0-9]+/.*").unwrap()),
            ..Default::default()
        };
        assert!(re.matches(&view(&m, "svc", "/v2/items", None, &h)));
        assert!(
            !re.matches(&view(&m, "svc", "/x/v2/items", None, &h)),
            "regex is anchored"
        );
        let ic = RequestMatch {
            uri: Some(StringMatch::Exact("/Login".into())),
            ignore_uri_case: true,
            ..Default::default()
        };
        assert!(ic.matches(&view(&m, "svc", "/LOGIN", None, &h)));
        let cs = RequestMatch {
            uri: Some(StringMatch::Exact("/Login".into())),
            ..Default::default()
        };
        assert!(!cs.matches(&view(&m, "svc", "/LOGIN", None, &h)));
    }

    #[test]
    fn headers_query_method_port_authority_and_without() {
        let mut h = HeaderMap::new();
        h.insert("end-user", HeaderValue::from_static("jason"));
        h.insert("cookie", HeaderValue::from_static("a=1; user=jason"));
        let m = Method::POST;
        let v = view(&m, "svc:80", "/p", Some("debug=1&x=y"), &h);
        let base = RequestMatch::default();
        let with = |f: &dyn Fn(&mut RequestMatch)| {
            let mut r = base.clone();
            f(&mut r);
            r.matches(&v)
        };
        assert!(with(&|r| r.headers = vec![(
            HeaderName::from_static("end-user"),
            HeaderMatch::Value(StringMatch::Exact("jason".into()))
        )]));
        assert!(!with(&|r| r.headers = vec![(
            HeaderName::from_static("end-user"),
            HeaderMatch::Value(StringMatch::Exact("bob".into()))
        )]));
        assert!(with(&|r| r.headers = vec![(
            HeaderName::from_static("cookie"),
            HeaderMatch::Value(StringMatch::regex(".*user=jason.*").unwrap())
        )]));
        assert!(with(&|r| r.headers = vec![(
            HeaderName::from_static("end-user"),
            HeaderMatch::Value(StringMatch::Prefix("ja".into()))
        )]));
        assert!(with(&|r| r.headers = vec![(
            HeaderName::from_static("end-user"),
            HeaderMatch::Present
        )]));
        assert!(!with(&|r| r.headers = vec![(
            HeaderName::from_static("x-missing"),
            HeaderMatch::Present
        )]));
        assert!(!with(&|r| r.without_headers = vec![(
            HeaderName::from_static("end-user"),
            HeaderMatch::Present
        )]));
        assert!(with(&|r| r.without_headers = vec![(
            HeaderName::from_static("x-missing"),
            HeaderMatch::Present
        )]));
        assert!(with(
            &|r| r.query_params = vec![("debug".into(), StringMatch::Exact("1".into()))]
        ));
        assert!(!with(
            &|r| r.query_params = vec![("debug".into(), StringMatch::Exact("2".into()))]
        ));
        assert!(!with(
            &|r| r.query_params = vec![("nope".into(), StringMatch::regex(".*").unwrap())]
        ));
        assert!(with(&|r| r.method = Some(StringMatch::Exact("POST".into()))));
        assert!(!with(&|r| r.method = Some(StringMatch::Exact("GET".into()))));
        assert!(with(&|r| r.port = Some(80)));
        assert!(!with(&|r| r.port = Some(81)));
        assert!(with(&|r| r.scheme = Some(StringMatch::Exact("http".into()))));
        assert!(with(
            &|r| r.authority = Some(StringMatch::Prefix("svc".into()))
        ));
        assert!(!with(
            &|r| r.authority = Some(StringMatch::Exact("other".into()))
        ));
    }

    #[test]
    fn weighted_clusters_normalise_any_positive_weights() {
        let w = WeightedClusters::new([(0, 3), (1, 0), (2, 1)]);
        let mut counts = [0usize; 3];
        for r in 0..4000u64 {
            counts[w.pick(r).unwrap()] += 1;
        }
        assert_eq!(counts, [3000, 0, 1000]);
        assert!(WeightedClusters::new([(0, 0)]).pick(1).is_none());
    }

    #[test]
    fn rewrites() {
        let pre = RequestMatch {
            uri: Some(StringMatch::Prefix("/old".into())),
            ..Default::default()
        };
        let rw = Rewrite {
            uri: Some("/new".into()),
            ..Default::default()
        };
        assert_eq!(rw.path("/old/a", Some(&pre)).as_deref(), Some("/new/a"));
        let slash = Rewrite {
            uri: Some("/".into()),
            ..Default::default()
        };
        assert_eq!(slash.path("/old/a", Some(&pre)).as_deref(), Some("/a"));
        assert_eq!(rw.path("/zzz", None).as_deref(), Some("/new"));
        let re = Rewrite {
            uri_regex: Some((
                Regex::new("^/service/([^/]+)(/.*)$").unwrap(),
                "\\2/instance/\\1".into(),
            )),
            ..Default::default()
        };
        assert_eq!(
            re.path("/service/foo/v1/api", None).as_deref(),
            Some("/v1/api/instance/foo")
        );
        assert_eq!(Rewrite::default().path("/x", None), None);
    }

    #[test]
    fn header_ops_and_redirect_location() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            set: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("2"),
            )],
            add: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("3"),
            )],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        ops.apply(&mut h);
        let vals: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(vals, vec!["2", "3"]);
        assert!(!h.contains_key("x-gone"));
        let r = Redirect {
            scheme: Some("https".into()),
            authority: None,
            port: Some(8443),
            path: Some("/v2".into()),
            code: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(r.location("http", "svc:80", "/v1?q"), "https://svc:8443/v2");
    }

    #[test]
    fn cors_origins() {
        let c = CorsPolicy {
            allow_origins: vec![
                StringMatch::Exact("https://a.com".into()),
                StringMatch::regex("https://.*\\.b\\.com").unwrap(),
            ],
            ..Default::default()
        };
        assert!(c.origin_allowed("https://a.com"));
        assert!(c.origin_allowed("https://x.b.com"));
        assert!(!c.origin_allowed("https://evil.com"));
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_static("https://a.com"));
        h.insert(
            "access-control-request-method",
            HeaderValue::from_static("PUT"),
        );
        assert!(c.is_preflight(&Method::OPTIONS, &h));
        assert!(!c.is_preflight(&Method::GET, &h));
    }
}
