//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Routes are fixed at start-up, so every label value comes from the
//! configuration, never from a caller (an unknown route counts under `-`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::outbox::Stats;
use verge_nn::batch::{BatchStats, SIZE_BOUNDS};

/// Latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct RouteMetrics {
    requests: AtomicU64,
    latency: Histogram,
}

pub struct Metrics {
    started: Instant,
    routes: BTreeMap<String, RouteMetrics>,
    /// (route or "-", kind) → count.
    errors: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Which uplink carries the outbox (`verge_uplink_info`), once there is one.
    pub uplink: std::sync::OnceLock<&'static str>,
    pub uplink_connected: AtomicBool,
    pub uplink_published: AtomicU64,
    pub uplink_connects: AtomicU64,
    /// Outcomes the nucleus took for local pub/sub, and those it did not (or dropped).
    pub local_published: AtomicU64,
    pub local_failed: AtomicU64,
    pub components_loaded: AtomicU64,
    pub in_flight: AtomicU64,
    /// State writes refused over a component's budget (shared with the store).
    pub state_quota_refusals: std::sync::Arc<AtomicU64>,
    /// How each model was loaded: its backend, and whether it fell back.
    models: Mutex<Vec<crate::nn::Loaded>>,
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The route label for a caller-supplied name.
fn label<'a>(routes: &BTreeMap<String, RouteMetrics>, route: &'a str) -> &'a str {
    if routes.contains_key(route) {
        route
    } else {
        "-"
    }
}

impl Metrics {
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a String>) -> Metrics {
        Metrics {
            started: Instant::now(),
            routes: routes
                .into_iter()
                .map(|r| (r.clone(), RouteMetrics::default()))
                .collect(),
            errors: Mutex::default(),
            uplink: std::sync::OnceLock::new(),
            uplink_connected: AtomicBool::new(false),
            uplink_published: AtomicU64::new(0),
            uplink_connects: AtomicU64::new(0),
            local_published: AtomicU64::new(0),
            local_failed: AtomicU64::new(0),
            components_loaded: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            state_quota_refusals: std::sync::Arc::default(),
            models: Mutex::default(),
        }
    }

    pub fn set_models(&self, models: Vec<crate::nn::Loaded>) {
        *self.models.lock().unwrap_or_else(|e| e.into_inner()) = models;
    }

    /// Requests that reached a component, over all routes.
    pub fn total_requests(&self) -> u64 {
        self.routes
            .values()
            .map(|m| m.requests.load(Ordering::Relaxed))
            .sum()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A call that reached a component (whatever its result).
    pub fn request(&self, route: &str, took: Duration) {
        if let Some(m) = self.routes.get(route) {
            m.requests.fetch_add(1, Ordering::Relaxed);
            m.latency.observe(took);
        }
    }

    pub fn error(&self, route: &str, kind: &'static str) {
        let key = (label(&self.routes, route).to_string(), kind);
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// The Prometheus text; `batches` is what each batched model's batcher did.
    pub fn render(&self, outbox: Option<&Stats>, batches: &[(String, BatchStats)]) -> String {
        let mut out = String::new();
        head(
            &mut out,
            "verge_requests_total",
            "counter",
            "Inference requests that reached a component, by route.",
        );
        for (route, m) in &self.routes {
            let _ = writeln!(
                out,
                "verge_requests_total{{route=\"{route}\"}} {}",
                m.requests.load(Ordering::Relaxed)
            );
        }
        head(
            &mut out,
            "verge_databases_moved_aside_total",
            "counter",
            "State or outbox databases found corrupt at start, moved aside and started anew.",
        );
        let _ = writeln!(
            out,
            "verge_databases_moved_aside_total {}",
            crate::state::MOVED_ASIDE.load(Ordering::Relaxed)
        );
        head(
            &mut out,
            "verge_state_quota_refusals_total",
            "counter",
            "State writes refused because they would take a component over its [state] budget.",
        );
        let _ = writeln!(
            out,
            "verge_state_quota_refusals_total {}",
            self.state_quota_refusals.load(Ordering::Relaxed)
        );
        head(
            &mut out,
            "verge_errors_total",
            "counter",
            "Failed requests, by route and kind.",
        );
        for ((route, kind), n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "verge_errors_total{{route=\"{route}\",kind=\"{kind}\"}} {n}"
            );
        }
        head(
            &mut out,
            "verge_request_duration_seconds",
            "histogram",
            "Time from request to outcome, by route.",
        );
        for (route, m) in &self.routes {
            let h = &m.latency;
            for (le, b) in BUCKETS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "verge_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                    b.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "verge_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}\n\
                 verge_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 verge_request_duration_seconds_count{{route=\"{route}\"}} {count}",
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        if let Some(s) = outbox {
            let gauges = [
                (
                    "verge_outbox_depth_messages",
                    "gauge",
                    "Messages waiting for the cloud.",
                    &s.depth,
                ),
                (
                    "verge_outbox_bytes",
                    "gauge",
                    "Bytes waiting for the cloud.",
                    &s.bytes,
                ),
                (
                    "verge_outbox_dropped_messages_total",
                    "counter",
                    "Messages dropped to make room (drop-oldest).",
                    &s.dropped_messages,
                ),
                (
                    "verge_outbox_dropped_bytes_total",
                    "counter",
                    "Bytes dropped to make room (drop-oldest).",
                    &s.dropped_bytes,
                ),
                (
                    "verge_outbox_rejected_messages_total",
                    "counter",
                    "Messages refused by a full outbox (reject-new) or too large.",
                    &s.rejected_messages,
                ),
                (
                    "verge_outbox_rejected_bytes_total",
                    "counter",
                    "Bytes refused by a full outbox (reject-new) or too large.",
                    &s.rejected_bytes,
                ),
            ];
            for (name, kind, help, v) in gauges {
                head(&mut out, name, kind, help);
                let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
            }
        }
        let plain = [
            (
                "verge_uplink_connected",
                "gauge",
                "1 while the uplink is connected (verge_uplink_info says which).",
                u64::from(self.uplink_connected.load(Ordering::Relaxed)),
            ),
            (
                "verge_uplink_published_total",
                "counter",
                "Outbox messages the other side accepted (MQTT: the broker's PUBACK; Greengrass IPC: the nucleus's answer).",
                self.uplink_published.load(Ordering::Relaxed),
            ),
            (
                "verge_uplink_connects_total",
                "counter",
                "Successful uplink connections.",
                self.uplink_connects.load(Ordering::Relaxed),
            ),
            (
                "verge_local_published_total",
                "counter",
                "Outcomes the Greengrass nucleus took for local pub/sub (PublishToTopic).",
                self.local_published.load(Ordering::Relaxed),
            ),
            (
                "verge_local_failed_total",
                "counter",
                "Outcomes for local pub/sub that the nucleus refused, or dropped with its queue full.",
                self.local_failed.load(Ordering::Relaxed),
            ),
            (
                "verge_components_loaded",
                "gauge",
                "Components compiled and ready.",
                self.components_loaded.load(Ordering::Relaxed),
            ),
            (
                "verge_requests_in_flight",
                "gauge",
                "Calls running or waiting for a worker.",
                self.in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in plain {
            head(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
        if let Some(uplink) = self.uplink.get() {
            head(
                &mut out,
                "verge_uplink_info",
                "gauge",
                "The uplink that carries the outbox, by type.",
            );
            let _ = writeln!(out, "verge_uplink_info{{type=\"{uplink}\"}} 1");
        }
        let models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        head(
            &mut out,
            "verge_model_backend",
            "gauge",
            "The engine serving each model (1), with its execution providers.",
        );
        for m in models.iter() {
            let _ = writeln!(
                out,
                "verge_model_backend{{model=\"{}\",backend=\"{}\",providers=\"{}\"}} 1",
                escape(&m.name),
                m.backend,
                escape(&m.providers.join(","))
            );
        }
        head(
            &mut out,
            "verge_model_fallbacks",
            "gauge",
            "Models running on tract because their configured backend could not load them.",
        );
        let fallbacks = models.iter().filter(|m| m.fallback.is_some()).count();
        let _ = writeln!(out, "verge_model_fallbacks {fallbacks}");
        drop(models);
        render_batches(&mut out, batches);
        head(
            &mut out,
            "verge_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
        );
        let _ = writeln!(
            out,
            "verge_uptime_seconds {:.3}",
            self.uptime().as_secs_f64()
        );
        out
    }
}

/// A series' `# HELP` and `# TYPE` lines.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Per batched model: its batches' sizes (calls per run) as a histogram,
/// and the calls, rows, retries and queue time behind them.
fn render_batches(out: &mut String, batches: &[(String, BatchStats)]) {
    if batches.is_empty() {
        return;
    }
    head(
        out,
        "verge_batch_size",
        "histogram",
        "Calls joined in each batched run of a model.",
    );
    for (model, b) in batches {
        let model = escape(model);
        let mut count = 0;
        for (i, n) in b.sizes.iter().enumerate() {
            count += n;
            let le = SIZE_BOUNDS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "verge_batch_size_bucket{{model=\"{model}\",le=\"{le}\"}} {count}"
            );
        }
        let _ = writeln!(out, "verge_batch_size_sum{{model=\"{model}\"}} {}", b.calls);
        let _ = writeln!(
            out,
            "verge_batch_size_count{{model=\"{model}\"}} {}",
            b.batches
        );
    }
    type Series = (&'static str, &'static str, fn(&BatchStats) -> String);
    let series: [Series; 3] = [
        (
            "verge_batch_rows_total",
            "Rows run in batches, by model.",
            |b| b.rows.to_string(),
        ),
        (
            "verge_batch_retried_total",
            "Batches that failed or could not be split and ran again call by call.",
            |b| b.retried.to_string(),
        ),
        (
            "verge_batch_queue_seconds_total",
            "Time calls waited for their batch to run, in total, by model.",
            |b| format!("{:.6}", b.queued.as_secs_f64()),
        ),
    ];
    for (name, help, value) in series {
        head(out, name, "counter", help);
        for (model, b) in batches {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(model), value(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let routes = ["a".to_string()];
        let m = Metrics::new(&routes);
        m.request("a", Duration::from_millis(3));
        m.error("a", "trap");
        m.error("no-such-route", "unknown-route");
        let text = m.render(Some(&Stats::default()), &[]);
        assert!(text.contains("verge_requests_total{route=\"a\"} 1"));
        assert!(text.contains("verge_errors_total{route=\"a\",kind=\"trap\"} 1"));
        assert!(text.contains("verge_errors_total{route=\"-\",kind=\"unknown-route\"} 1"));
        assert!(
            text.contains("verge_request_duration_seconds_bucket{route=\"a\",le=\"0.0025\"} 0")
        );
        assert!(text.contains("verge_request_duration_seconds_bucket{route=\"a\",le=\"0.005\"} 1"));
        assert!(text.contains("verge_outbox_depth_messages 0"));
        assert!(!text.contains("no-such-route"));
    }
}
