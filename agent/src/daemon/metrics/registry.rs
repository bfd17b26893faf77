//! The agent's Prometheus metrics, kept and written out by `prometheus-client` (the
//! Prometheus project's Rust client) in the text exposition format 0.0.4. Event counts,
//! the open-streams gauge and the signing-latency histogram live in its registry; what
//! is read at scrape time (backend health, readiness, certificates) is written by a
//! [`Scraped`] collector made for each scrape.

use std::collections::BTreeMap;
use std::time::Duration;

use keyward_core::check::AlertLevel;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry as PromRegistry};
use time::OffsetDateTime;

use super::{CertRow, GenerationStatus, Health};

/// Upper bounds (seconds) of the signing latency buckets: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Labels of the issuance and signing counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOutcome {
    backend: String,
    outcome: &'static str,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

/// Labels of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Labels of the KeyService operation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyOpOutcome {
    op: &'static str,
    outcome: &'static str,
}

fn outcome(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// One backend's signing label sets, built once per signer so that recording a
/// signature allocates nothing.
#[derive(Debug, Clone)]
pub struct SigningLabels {
    succeeded: BackendOutcome,
    failed: BackendOutcome,
    backend: BackendLabel,
}

impl SigningLabels {
    /// The label sets of `backend`'s signing operations.
    pub fn new(backend: &str) -> Self {
        let counted = |ok| BackendOutcome {
            backend: backend.to_string(),
            outcome: outcome(ok),
        };
        SigningLabels {
            succeeded: counted(true),
            failed: counted(false),
            backend: BackendLabel {
                backend: backend.to_string(),
            },
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend.backend
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metrics counted as things happen, in the registry that writes them out.
pub struct Registry {
    registry: PromRegistry,
    issuance: Family<BackendOutcome, Counter>,
    signing: Family<BackendOutcome, Counter>,
    latency: Family<BackendLabel, Histogram>,
    denied: Family<ReasonLabel, Counter>,
    open_streams: Gauge,
    key_ops: Family<KeyOpOutcome, Counter>,
}

/// A counted metric's name and help text. Counters are named without `_total`: the
/// encoder appends it.
type Description = (&'static str, &'static str);

const ISSUANCE: Description = (
    "keyward_svid_issuance",
    "Workload SVID issuances, by the CA key's backend and outcome.",
);
const SIGNING: Description = (
    "keyward_ca_sign_operations",
    "Signing operations with CA keys (issuances and health probes), by backend and outcome.",
);
const LATENCY: Description = (
    "keyward_ca_sign_duration_seconds",
    "Time taken by CA signing operations, by backend.",
);
const DENIED: Description = (
    "keyward_workload_api_denied",
    "Workload API requests refused, by reason.",
);
const KEY_OPS: Description = (
    "keyward_key_operations",
    "KeyService operations on granted keys (sign, encrypt...), by op and outcome.",
);
const OPEN_STREAMS: Description = (
    "keyward_workload_api_open_streams",
    "Workload API streams open now.",
);

/// Registers `metric`; the help text ends with a period, which the registry adds itself.
fn register(registry: &mut PromRegistry, (name, help): Description, metric: impl Metric) {
    registry.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

impl Default for Registry {
    fn default() -> Self {
        let r = Registry {
            registry: PromRegistry::default(),
            issuance: Family::default(),
            signing: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            denied: Family::default(),
            open_streams: Gauge::default(),
            key_ops: Family::default(),
        };
        let mut registry = PromRegistry::default();
        register(&mut registry, ISSUANCE, r.issuance.clone());
        register(&mut registry, SIGNING, r.signing.clone());
        register(&mut registry, LATENCY, r.latency.clone());
        register(&mut registry, DENIED, r.denied.clone());
        register(&mut registry, OPEN_STREAMS, r.open_streams.clone());
        register(&mut registry, KEY_OPS, r.key_ops.clone());
        Registry { registry, ..r }
    }
}

impl Registry {
    /// Counts one SVID issuance.
    pub fn issued(&self, backend: &str, ok: bool) {
        let labels = BackendOutcome {
            backend: backend.to_string(),
            outcome: outcome(ok),
        };
        self.issuance.get_or_create(&labels).inc();
    }

    /// Records one CA signing operation.
    pub fn signed(&self, labels: &SigningLabels, took: Duration, ok: bool) {
        let counted = if ok {
            &labels.succeeded
        } else {
            &labels.failed
        };
        self.signing.get_or_create(counted).inc();
        self.latency
            .get_or_create(&labels.backend)
            .observe(took.as_secs_f64());
    }

    /// Counts one refused request.
    pub fn denied(&self, reason: &'static str) {
        self.denied.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one KeyService operation that passed the grant check.
    pub fn key_op(&self, op: &'static str, ok: bool) {
        let labels = KeyOpOutcome {
            op,
            outcome: outcome(ok),
        };
        self.key_ops.get_or_create(&labels).inc();
    }

    /// The gauge of Workload API streams open now.
    pub fn open_streams(&self) -> &Gauge {
        &self.open_streams
    }

    /// The whole exposition: the counted metrics, then `scraped`.
    pub fn render(&self, scraped: Scraped) -> String {
        let mut once = PromRegistry::default();
        once.register_collector(Box::new(scraped));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry).and_then(|()| encode(&mut out, &once));
        out
    }
}

/// State read at scrape time rather than counted.
#[derive(Debug)]
pub struct Scraped {
    /// The scrape time (expiry gauges count from it).
    pub now: OffsetDateTime,
    /// The certificates at the last alert evaluation.
    pub certificates: Vec<CertRow>,
    /// Every backend's last known health.
    pub health: BTreeMap<String, Health>,
    /// Whether `/readyz` would answer 200.
    pub ready: bool,
    /// Every kind of rotated generation, by kind.
    pub generations: BTreeMap<&'static str, GenerationStatus>,
}

/// Writes one gauge family: a `# HELP`/`# TYPE` header, then one sample per label set.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauges(
            &mut encoder,
            "keyward_backend_up",
            "1 when the backend answered its last signing operation or probe, else 0.",
            self.health
                .iter()
                .map(|(backend, h)| ([("backend", backend.as_str())], i64::from(h.ok))),
        )?;
        gauges(
            &mut encoder,
            "keyward_ready",
            "1 when the CA is loaded and its backend answers (as /readyz), else 0.",
            [([] as [(&str, &str); 0], i64::from(self.ready))],
        )?;
        gauges(
            &mut encoder,
            "keyward_generation_active",
            "The generation issuing now, by kind (local_intermediate, upstream_intermediate, jwt_key).",
            self.generations.iter().map(|(kind, g)| {
                (
                    [("kind", *kind)],
                    i64::try_from(g.active).unwrap_or(i64::MAX),
                )
            }),
        )?;
        gauges(
            &mut encoder,
            "keyward_generation_prepare_failures",
            "Failed attempts in a row to prepare the next generation, by kind (0 once one succeeds).",
            self.generations
                .iter()
                .map(|(kind, g)| ([("kind", *kind)], i64::from(g.failures))),
        )?;
        self.encode_certificates(&mut encoder)
    }
}

impl Scraped {
    /// Per-certificate expiry and alert level, and the count of certificates per level.
    fn encode_certificates(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauges(
            encoder,
            "keyward_certificate_expiry_seconds",
            "Seconds until the certificate expires (negative once expired).",
            self.certificates
                .iter()
                .map(|c| (cert_labels(c), (c.not_after - self.now).whole_seconds())),
        )?;
        gauges(
            encoder,
            "keyward_certificate_alert_level",
            "Alert level per certificate: 0 OK, 1 WARNING, 2 ERROR, 3 CRITICAL.",
            self.certificates.iter().map(|c| {
                let [role, name, subject, spiffe, serial] = cert_labels(c);
                let labels = [
                    role,
                    name,
                    subject,
                    spiffe,
                    serial,
                    ("level", c.level.as_str()),
                ];
                (labels, level_number(c.level))
            }),
        )?;
        let levels = [
            AlertLevel::Ok,
            AlertLevel::Warning,
            AlertLevel::Error,
            AlertLevel::Critical,
        ];
        gauges(
            encoder,
            "keyward_certificates",
            "Watched certificates, by alert level.",
            levels.map(|l| {
                let n = self.certificates.iter().filter(|c| c.level == l).count();
                (
                    [("level", l.as_str())],
                    i64::try_from(n).unwrap_or(i64::MAX),
                )
            }),
        )
    }
}

/// The labels that identify a certificate.
fn cert_labels(c: &CertRow) -> [(&'static str, &str); 5] {
    let spiffe = if c.role == "svid" {
        c.name.as_str()
    } else {
        ""
    };
    [
        ("role", c.role),
        ("name", c.name.as_str()),
        ("subject", c.subject.as_str()),
        ("spiffe_id", spiffe),
        ("serial", c.serial_hex.as_str()),
    ]
}

/// The numeric value of an alert level in the metrics.
fn level_number(l: AlertLevel) -> i64 {
    match l {
        AlertLevel::Critical => 3,
        AlertLevel::Error => 2,
        AlertLevel::Warning => 1,
        _ => 0,
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
