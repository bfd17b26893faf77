//! Counters and histograms, and their Prometheus text exposition (format 0.0.4):
//! `# HELP` and `# TYPE` once per family, label values escaped, histograms with
//! cumulative `_bucket{le=..}` series ending at `+Inf`, then `_sum` and `_count`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use time::OffsetDateTime;

use super::{CertRow, Health};

/// Upper bounds (seconds) of the signing latency buckets: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One latency histogram.
#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative), plus one for `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

/// The event counts the agent accumulates.
#[derive(Default)]
pub struct Registry {
    issuance: BTreeMap<(String, &'static str), u64>,
    signing: BTreeMap<(String, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    denied: BTreeMap<&'static str, u64>,
}

/// State read at scrape time rather than counted.
pub struct Extra<'a> {
    /// The scrape time (expiry gauges count from it).
    pub now: OffsetDateTime,
    /// The certificates at the last alert evaluation.
    pub certificates: &'a [CertRow],
    /// Every backend's last known health.
    pub health: &'a BTreeMap<String, Health>,
    /// Workload API streams open now.
    pub open_streams: i64,
    /// Whether `/readyz` would answer 200.
    pub ready: bool,
}

fn outcome(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// A label value escaped for the text format (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{a="x",b="y"}` (empty when there are no labels).
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float in the text format (`+Inf`, `-Inf`, `NaN` spelled as Prometheus does).
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, pairs: &[(&str, &str)], value: f64) {
    let _ = writeln!(out, "{name}{} {}", labels(pairs), num(value));
}

impl Registry {
    /// Counts one SVID issuance.
    pub fn issued(&mut self, backend: &str, ok: bool) {
        *self
            .issuance
            .entry((backend.to_string(), outcome(ok)))
            .or_default() += 1;
    }

    /// Records one CA signing operation.
    pub fn signed(&mut self, backend: &str, took: Duration, ok: bool) {
        *self
            .signing
            .entry((backend.to_string(), outcome(ok)))
            .or_default() += 1;
        self.latency
            .entry(backend.to_string())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Counts one refused request.
    pub fn denied(&mut self, reason: &'static str) {
        *self.denied.entry(reason).or_default() += 1;
    }

    /// The whole exposition.
    pub fn render(&self, x: Extra<'_>) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "keyward_svid_issuance_total",
            "counter",
            "Workload SVID issuances, by the CA key's backend and outcome.",
        );
        for ((backend, result), n) in &self.issuance {
            let l = [("backend", backend.as_str()), ("outcome", *result)];
            sample(&mut out, "keyward_svid_issuance_total", &l, *n as f64);
        }
        family(
            &mut out,
            "keyward_ca_sign_operations_total",
            "counter",
            "Signing operations with CA keys (issuances and health probes), by backend and outcome.",
        );
        for ((backend, result), n) in &self.signing {
            let l = [("backend", backend.as_str()), ("outcome", *result)];
            sample(&mut out, "keyward_ca_sign_operations_total", &l, *n as f64);
        }
        self.render_latency(&mut out);
        family(
            &mut out,
            "keyward_workload_api_denied_total",
            "counter",
            "Workload API requests refused, by reason.",
        );
        for (reason, n) in &self.denied {
            sample(
                &mut out,
                "keyward_workload_api_denied_total",
                &[("reason", reason)],
                *n as f64,
            );
        }
        family(
            &mut out,
            "keyward_workload_api_open_streams",
            "gauge",
            "Workload API streams open now.",
        );
        sample(
            &mut out,
            "keyward_workload_api_open_streams",
            &[],
            x.open_streams as f64,
        );
        family(
            &mut out,
            "keyward_backend_up",
            "gauge",
            "1 when the backend answered its last signing operation or probe, else 0.",
        );
        for (backend, h) in x.health {
            let v = if h.ok { 1.0 } else { 0.0 };
            sample(&mut out, "keyward_backend_up", &[("backend", backend)], v);
        }
        family(
            &mut out,
            "keyward_ready",
            "gauge",
            "1 when the CA is loaded and its backend answers (as /readyz), else 0.",
        );
        sample(
            &mut out,
            "keyward_ready",
            &[],
            if x.ready { 1.0 } else { 0.0 },
        );
        render_certificates(&mut out, &x);
        out
    }

    fn render_latency(&self, out: &mut String) {
        let name = "keyward_ca_sign_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Time taken by CA signing operations, by backend.",
        );
        for (backend, h) in &self.latency {
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| num(*b));
                let l = [("backend", backend.as_str()), ("le", le.as_str())];
                sample(out, &format!("{name}_bucket"), &l, cumulative as f64);
            }
            let l = [("backend", backend.as_str())];
            sample(out, &format!("{name}_sum"), &l, h.sum);
            sample(out, &format!("{name}_count"), &l, h.count as f64);
        }
    }
}

/// Per-certificate expiry and alert level, and the count of certificates per level.
fn render_certificates(out: &mut String, x: &Extra<'_>) {
    let expiry = "keyward_certificate_expiry_seconds";
    family(
        out,
        expiry,
        "gauge",
        "Seconds until the certificate expires (negative once expired).",
    );
    let ids = |c: &CertRow| {
        let spiffe = if c.role == "svid" {
            c.name.clone()
        } else {
            String::new()
        };
        (c.role, c.name.clone(), spiffe, c.serial_hex.clone())
    };
    for c in x.certificates {
        let (role, name, spiffe, serial) = ids(c);
        let l = [
            ("role", role),
            ("name", name.as_str()),
            ("subject", c.subject.as_str()),
            ("spiffe_id", spiffe.as_str()),
            ("serial", serial.as_str()),
        ];
        let secs = (c.not_after - x.now).whole_seconds();
        sample(out, expiry, &l, secs as f64);
    }
    let level = "keyward_certificate_alert_level";
    family(
        out,
        level,
        "gauge",
        "Alert level per certificate: 0 OK, 1 WARNING, 2 ERROR, 3 CRITICAL.",
    );
    for c in x.certificates {
        let (role, name, spiffe, serial) = ids(c);
        let l = [
            ("role", role),
            ("name", name.as_str()),
            ("subject", c.subject.as_str()),
            ("spiffe_id", spiffe.as_str()),
            ("serial", serial.as_str()),
            ("level", c.level.as_str()),
        ];
        sample(out, level, &l, f64::from(level_number(c.level)));
    }
    let count = "keyward_certificates";
    family(out, count, "gauge", "Watched certificates, by alert level.");
    for l in [
        keyward_core::check::AlertLevel::Ok,
        keyward_core::check::AlertLevel::Warning,
        keyward_core::check::AlertLevel::Error,
        keyward_core::check::AlertLevel::Critical,
    ] {
        let n = x.certificates.iter().filter(|c| c.level == l).count();
        sample(out, count, &[("level", l.as_str())], n as f64);
    }
}

/// The numeric value of an alert level in the metrics.
pub fn level_number(l: keyward_core::check::AlertLevel) -> u8 {
    use keyward_core::check::AlertLevel::*;
    match l {
        Critical => 3,
        Error => 2,
        Warning => 1,
        _ => 0,
    }
}
