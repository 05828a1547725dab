//! What the tour observes (pure): request outcomes, counts by version, statistical tolerances, and Prometheus
//! samples. Every verdict of the demo is computed here from traffic, never from the config it applied.

use std::collections::BTreeMap;
use std::time::Duration;

use super::app::{Call, Reply};

/// One request sent by the tour, as the client saw it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// `None` when no response arrived (connection error or the tour's own per-request timeout).
    pub status: Option<u16>,
    pub elapsed: Duration,
    /// The body, when it was a sample-service reply.
    pub reply: Option<Reply>,
    /// The response-flags header set by the proxy, if any (`UO`, `UT`, ...).
    pub flags: Option<String>,
    /// Transport error, or a short prefix of a non-JSON body.
    pub error: Option<String>,
}

impl Observation {
    pub fn ok(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }

    /// productpage's call to reviews.
    pub fn reviews_call(&self) -> Option<&Call> {
        self.reply.as_ref()?.call("reviews")
    }

    /// The reviews version that answered productpage, when the call succeeded.
    pub fn reviews_version(&self) -> Option<&str> {
        let call = self.reviews_call()?;
        if !call.succeeded() {
            return None;
        }
        call.reply.as_ref().map(|r| r.version.as_str())
    }

    /// reviews' call to ratings (reviews v2 and v3 make one).
    pub fn ratings_call(&self) -> Option<&Call> {
        self.reviews_call()?.reply.as_ref()?.call("ratings")
    }
}

/// A label for an outcome: the reviews version for a success, or what went wrong.
pub fn outcome(o: &Observation) -> String {
    match (o.status, o.reviews_version()) {
        (Some(s), Some(v)) if (200..300).contains(&s) => v.to_string(),
        (Some(s), _) => format!("HTTP {s}"),
        (None, _) => "no response".to_string(),
    }
}

/// Observations grouped by [`outcome`].
pub fn tally(obs: &[Observation]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for o in obs {
        *counts.entry(outcome(o)).or_insert(0) += 1;
    }
    counts
}

/// `v1: 903, v3: 97`.
pub fn format_tally(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What went wrong with the first failed request, if any (its transport error or the body's error), to
/// show beside the counts.
pub fn first_failure(obs: &[Observation]) -> Option<String> {
    let o = obs.iter().find(|o| !o.ok())?;
    let detail = o
        .error
        .clone()
        .or_else(|| o.reply.as_ref().and_then(|r| r.error.clone()))
        .unwrap_or_default();
    Some(format!("{}: {detail}", outcome(o)))
}

/// Counts, and the first failure when there is one.
fn describe(obs: &[Observation]) -> String {
    let counts = format_tally(&tally(obs));
    match first_failure(obs) {
        Some(f) => format!("{counts} (first failure: {f})"),
        None => counts,
    }
}

/// How far a measured share may stray from `p` over `n` independent requests: four standard deviations of the
/// binomial proportion, sqrt(p(1-p)/n). A correct weighted choice lands outside with probability about 6e-5
/// (so the demo does not flake), while over 1,000 requests a 90/10 split is checked to +-3.8 points and 50/50
/// to +-6.3, far from the neighbouring configurations (80/20, 100/0) a routing bug would produce. A share of
/// exactly 0 or 1 has no tolerance: every request must go there.
pub fn share_tolerance(n: usize, p: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    4.0 * (p * (1.0 - p) / n as f64).sqrt()
}

/// One verdict line of the tour.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub expected: String,
    pub observed: String,
    pub ok: bool,
}

impl Check {
    pub fn new(expected: impl Into<String>, observed: impl Into<String>, ok: bool) -> Check {
        Check {
            expected: expected.into(),
            observed: observed.into(),
            ok,
        }
    }
}

/// Every request succeeded and was answered by reviews `version`.
pub fn all_to(obs: &[Observation], version: &str, who: &str) -> Check {
    let counts = tally(obs);
    let hits = counts.get(version).copied().unwrap_or(0);
    Check::new(
        format!(
            "all {} requests{who} answered by reviews {version}",
            obs.len()
        ),
        describe(obs),
        !obs.is_empty() && hits == obs.len(),
    )
}

/// Every request succeeded and the shares of reviews versions match `weights` (percent) within
/// [`share_tolerance`].
pub fn split(obs: &[Observation], weights: &[(&str, u32)]) -> Check {
    let counts = tally(obs);
    let n = obs.len();
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut ok = n > 0 && total > 0;
    let mut expected = Vec::new();
    let mut seen = 0;
    for (version, weight) in weights {
        let p = f64::from(*weight) / f64::from(total.max(1));
        let tol = share_tolerance(n, p);
        let got = counts.get(*version).copied().unwrap_or(0);
        seen += got;
        let share = got as f64 / n.max(1) as f64;
        ok &= (share - p).abs() <= tol + f64::EPSILON;
        expected.push(format!("{version} {:.0}% +-{:.1}", p * 100.0, tol * 100.0));
    }
    // Nothing may land outside the configured versions, and nothing may fail.
    ok &= seen == n;
    let shares = weights
        .iter()
        .map(|(v, _)| {
            let got = counts.get(*v).copied().unwrap_or(0);
            format!("{v} {:.1}%", 100.0 * got as f64 / n.max(1) as f64)
        })
        .collect::<Vec<_>>()
        .join(", ");
    Check::new(
        format!("{n} requests split {}", expected.join(" / ")),
        format!("{} ({shares})", format_tally(&counts)),
        ok,
    )
}

/// The share of requests that failed with `status` matches `p` within [`share_tolerance`], the rest succeeded.
pub fn failure_share(obs: &[Observation], status: u16, p: f64) -> Check {
    let n = obs.len();
    let failed = obs.iter().filter(|o| o.status == Some(status)).count();
    let succeeded = obs.iter().filter(|o| o.ok()).count();
    let tol = share_tolerance(n, p);
    let share = failed as f64 / n.max(1) as f64;
    Check::new(
        format!(
            "{:.0}% +-{:.1} of {n} requests fail with {status}, the rest succeed",
            p * 100.0,
            tol * 100.0
        ),
        format!(
            "{failed} failed with {status} ({:.1}%), {succeeded} succeeded",
            share * 100.0
        ),
        n > 0 && (share - p).abs() <= tol + f64::EPSILON && failed + succeeded == n,
    )
}

/// At most `max_failures` requests did not succeed.
pub fn mostly_ok(obs: &[Observation], max_failures: usize) -> Check {
    let failed = obs.iter().filter(|o| !o.ok()).count();
    Check::new(
        format!("at most {max_failures} of {} requests fail", obs.len()),
        describe(obs),
        !obs.is_empty() && failed <= max_failures,
    )
}

/// Every request's latency lies in `[min, max)`.
pub fn latency_within(obs: &[Observation], min: Duration, max: Duration, who: &str) -> Check {
    let lat: Vec<u128> = obs.iter().map(|o| o.elapsed.as_millis()).collect();
    let ok = !obs.is_empty() && obs.iter().all(|o| o.elapsed >= min && o.elapsed < max);
    Check::new(
        format!(
            "{who} latency between {} and {} ms",
            min.as_millis(),
            max.as_millis()
        ),
        format!("{} ms ({})", summarize_ms(&lat), format_tally(&tally(obs))),
        ok,
    )
}

/// `min 2003 / max 2011` for a set of latencies.
pub fn summarize_ms(lat: &[u128]) -> String {
    match (lat.iter().min(), lat.iter().max()) {
        (Some(min), Some(max)) => format!("min {min} / max {max}"),
        _ => "none".to_string(),
    }
}

/// One Prometheus sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parse the Prometheus text exposition format (comments skipped; label values unescaped).
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(|e| format!("line {}: {e}: `{line}`", i + 1))?;
        out.push(sample);
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return Err("no value".into()),
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label `{key}` has no quoted value"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label `{key}` value is not terminated"));
            }
            labels.insert(key.trim().to_string(), value);
        }
        let end = end.ok_or("labels not closed with `}`")?;
        &body[end + 1..]
    } else {
        rest
    };
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("no value")?
        .parse::<f64>()
        .map_err(|e| format!("value: {e}"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Sum of `metric` over samples whose labels include every `(name, value)` of `filter`, grouped by `by`.
pub fn sum_by(
    samples: &[Sample],
    metric: &str,
    filter: &[(&str, &str)],
    by: &str,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == metric) {
        if filter
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        {
            let key = s.labels.get(by).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
    }
    out
}

/// `after - before` per key (keys missing before count from zero).
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(version: Option<&str>, status: u16, ms: u64) -> Observation {
        let reply = version.map(|v| Reply {
            service: "productpage".into(),
            version: "v1".into(),
            calls: vec![Call {
                service: "reviews".into(),
                status: Some(200),
                elapsed_ms: 1,
                reply: Some(Box::new(Reply {
                    service: "reviews".into(),
                    version: v.into(),
                    calls: vec![],
                    error: None,
                    data: serde_json::Value::Null,
                })),
                error: None,
            }],
            error: None,
            data: serde_json::Value::Null,
        });
        Observation {
            status: Some(status),
            elapsed: Duration::from_millis(ms),
            reply,
            flags: None,
            error: None,
        }
    }

    fn many(v: &str, n: usize) -> Vec<Observation> {
        (0..n).map(|_| obs(Some(v), 200, 1)).collect()
    }

    #[test]
    fn tolerance_is_four_sigma_and_zero_at_the_extremes() {
        assert!((share_tolerance(1000, 0.1) - 0.03795).abs() < 1e-4);
        assert!((share_tolerance(1000, 0.5) - 0.06325).abs() < 1e-4);
        assert_eq!(share_tolerance(1000, 1.0), 0.0);
        assert_eq!(share_tolerance(0, 0.5), 0.0);
    }

    #[test]
    fn split_accepts_sampling_noise_and_rejects_a_wrong_split() {
        let mut o = many("v1", 880);
        o.extend(many("v3", 120));
        assert!(split(&o, &[("v1", 90), ("v3", 10)]).ok);
        // 80/20 is not 90/10.
        let mut o = many("v1", 800);
        o.extend(many("v3", 200));
        assert!(!split(&o, &[("v1", 90), ("v3", 10)]).ok);
        // A version outside the split, or a failure, fails the check.
        let mut o = many("v1", 900);
        o.extend(many("v2", 100));
        assert!(!split(&o, &[("v1", 90), ("v3", 10)]).ok);
        let mut o = many("v1", 500);
        o.extend(many("v3", 499));
        o.push(obs(None, 503, 1));
        assert!(!split(&o, &[("v1", 50), ("v3", 50)]).ok);
        assert!(!split(&[], &[("v1", 50)]).ok);
    }

    #[test]
    fn all_to_requires_every_request() {
        assert!(all_to(&many("v1", 10), "v1", "").ok);
        let mut o = many("v1", 10);
        o.push(obs(Some("v2"), 200, 1));
        let c = all_to(&o, "v1", "");
        assert!(!c.ok);
        assert_eq!(c.observed, "v1: 10, v2: 1");
        assert!(!all_to(&[], "v1", "").ok);
    }

    #[test]
    fn failure_share_and_latency() {
        let mut o: Vec<Observation> = (0..50).map(|_| obs(None, 503, 1)).collect();
        o.extend(many("v2", 50));
        assert!(failure_share(&o, 503, 0.5).ok);
        assert!(!failure_share(&o, 503, 0.1).ok);
        assert!(!mostly_ok(&o, 2).ok);
        assert!(mostly_ok(&many("v2", 5), 0).ok);
        let slow = vec![obs(Some("v2"), 200, 2005), obs(Some("v2"), 200, 2100)];
        assert!(latency_within(&slow, Duration::from_secs(2), Duration::from_secs(3), "").ok);
        assert!(!latency_within(&slow, Duration::ZERO, Duration::from_secs(1), "").ok);
    }

    #[test]
    fn prometheus_text_is_parsed_and_summed() {
        let text = r#"
# HELP istio_requests_total Total requests.
# TYPE istio_requests_total counter
istio_requests_total{reporter="source",destination_service_name="reviews",destination_version="v1",response_flags="-"} 90
istio_requests_total{reporter="source",destination_service_name="reviews",destination_version="v3",response_flags="-"} 10
istio_requests_total{reporter="destination",destination_service_name="reviews",destination_version="v1",response_flags="-"} 90
istio_requests_total{reporter="source",destination_service_name="details",destination_version="v1",response_flags="UO"} 3
up 1
weird{a="x\"y,}"} 2.5
"#;
        let s = parse_prometheus(text).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[5].labels["a"], "x\"y,}");
        let by = sum_by(
            &s,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("destination_service_name", "reviews"),
            ],
            "destination_version",
        );
        assert_eq!(
            by,
            BTreeMap::from([("v1".into(), 90.0), ("v3".into(), 10.0)])
        );
        let flags = sum_by(&s, "istio_requests_total", &[], "response_flags");
        assert_eq!(flags["UO"], 3.0);
        let before = BTreeMap::from([("v1".to_string(), 40.0)]);
        assert_eq!(
            delta(&before, &by),
            BTreeMap::from([("v1".into(), 50.0), ("v3".into(), 10.0)])
        );
        assert!(parse_prometheus("x{a=1} 2").is_err());
    }
}
