//! The Prometheus metrics of a dts process (docs/metrics.md lists them).
//!
//! One registry per process, reached with [`metrics`]: a process is what
//! Prometheus scrapes, so in `dts up` the API, the scheduler and the worker
//! count into the same registry, and in distributed mode each `dts server`
//! and `dts worker` has its own. A crate of its own so the engine (which
//! counts items, errors and retries) and the API (which counts requests and
//! serves `/metrics`) both reach it without depending on each other.
//!
//! The per-item path is a few atomic adds and one histogram observe: the
//! worker takes its handles once ([`Metrics::worker`]) instead of looking
//! labels up for every item.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of a request no route matched: raw paths would give
/// every scanner's probe a series of its own.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Item run times: a few milliseconds (`echo`) to an hour.
const ITEM_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Submit to first item: planning and a free slot, or a long queue.
const LATENCY_SECONDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// HTTP requests: sub-millisecond reads to long submissions.
const HTTP_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One renewal of all of a worker's leases: a round trip, or a stall that
/// eats into the lease.
const RENEWAL_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the metrics could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The encoder refused the gathered families.
    #[error("cannot encode the metrics")]
    Encode(#[source] prometheus::Error),
}

/// Every metric family of a process.
pub struct Metrics {
    registry: Registry,
    items_started: IntCounter,
    items_succeeded: IntCounter,
    items_failed: IntCounter,
    item_duration: Histogram,
    first_item_latency: Histogram,
    worker_slots: IntGaugeVec,
    worker_slots_busy: IntGaugeVec,
    store_errors: IntCounterVec,
    store_retries: IntCounterVec,
    bus_errors: IntCounterVec,
    bus_retries: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    tasks_submitted: IntCounter,
    lease_renewal: Histogram,
    lease_renewal_failures: IntCounter,
    leases_lost: IntCounter,
    completion_events: IntCounterVec,
    schedule_firings: IntCounterVec,
    /// Registered by the first [`Metrics::set_store_stats`]: until the
    /// store is asked, there is no number to show, and a 0 would lie.
    store_gauges: OnceLock<StoreGauges>,
}

/// The gauges read from the store at scrape time.
struct StoreGauges {
    tasks: IntGaugeVec,
    shards_waiting: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The process's metrics, made on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    /// A registry with every family registered and no samples yet. Use
    /// [`metrics`] in the program; a fresh one is for tests.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            register(&registry, IntCounter::with_opts(Opts::new(name, help)))
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            register(
                &registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
            )
        };
        Metrics {
            items_started: counter(
                "dts_items_started_total",
                "Item runs started on this process's workers (each retry of an item counts again).",
            ),
            items_succeeded: counter(
                "dts_items_succeeded_total",
                "Items whose final result on this process's workers succeeded.",
            ),
            items_failed: counter(
                "dts_items_failed_total",
                "Items whose final result on this process's workers failed (after their retries, or not run).",
            ),
            item_duration: histogram(
                "dts_item_duration_seconds",
                "How long each item run took, from its process's start to its exit.",
                ITEM_SECONDS,
            ),
            first_item_latency: histogram(
                "dts_task_first_item_latency_seconds",
                "From a task's submission to the start of its first item.",
                LATENCY_SECONDS,
            ),
            worker_slots: gauges(
                "dts_worker_slots",
                "Items a worker runs at once (its cores).",
                &["worker"],
            ),
            worker_slots_busy: gauges(
                "dts_worker_slots_busy",
                "Items a worker is running now.",
                &["worker"],
            ),
            store_errors: counters(
                "dts_store_errors_total",
                "Store operations that failed, by operation.",
                &["operation"],
            ),
            store_retries: counters(
                "dts_store_retries_total",
                "Store operations tried again after a failure, by operation.",
                &["operation"],
            ),
            bus_errors: counters(
                "dts_bus_errors_total",
                "Bus operations that failed, by operation.",
                &["operation"],
            ),
            bus_retries: counters(
                "dts_bus_retries_total",
                "Bus operations tried again after a failure, by operation.",
                &["operation"],
            ),
            http_requests: counters(
                "dts_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "dts_http_request_duration_seconds",
                        "Time to answer an HTTP request (to the response head; a stream's body is not timed), by route template and method.",
                    )
                    .buckets(HTTP_SECONDS.to_vec()),
                    &["route", "method"],
                ),
            ),
            tasks_submitted: counter(
                "dts_tasks_submitted_total",
                "Tasks stored by this process: its API's submissions, or the one task of a `dts run`.",
            ),
            lease_renewal: histogram(
                "dts_lease_renewal_seconds",
                "How long a worker's renewal of all its shard leases took, one store call each.",
                RENEWAL_SECONDS,
            ),
            lease_renewal_failures: counter(
                "dts_lease_renewal_failures_total",
                "Renewals of a worker's shard leases that failed or timed out (each is tried again at once).",
            ),
            leases_lost: counter(
                "dts_leases_lost_total",
                "Leases on running shards a worker lost to another worker (or to a copy that completed the shard).",
            ),
            completion_events: counters(
                "dts_completion_events_published_total",
                "Completion events the bus accepted, by who published them: `end` (the process that ended the task) or `outbox` (a drainer, after that did not).",
                &["by"],
            ),
            schedule_firings: counters(
                "dts_schedule_firings_total",
                "Schedule firings this process decided, by outcome: `fired` (a task was created), `skipped-overlap` (the previous task still ran), `missed` (due while no server ran; dropped), `failed` (the task could not be created).",
                &["outcome"],
            ),
            store_gauges: OnceLock::new(),
            registry,
        }
    }

    /// The handles a worker counts its items with, taken once when it
    /// starts; its slots gauge is set to `cores`.
    pub fn worker(&self, id: &str, cores: u32) -> WorkerMetrics {
        let slots = gauge_of(&self.worker_slots, &[id]);
        slots.set(i64::from(cores));
        WorkerMetrics {
            started: self.items_started.clone(),
            succeeded: self.items_succeeded.clone(),
            failed: self.items_failed.clone(),
            duration: self.item_duration.clone(),
            first_item_latency: self.first_item_latency.clone(),
            busy: gauge_of(&self.worker_slots_busy, &[id]),
        }
    }

    /// Drops a stopped worker's slot gauges, so it no longer shows.
    pub fn forget_worker(&self, id: &str) {
        let _ = self.worker_slots.remove_label_values(&[id]);
        let _ = self.worker_slots_busy.remove_label_values(&[id]);
    }

    /// A store operation failed; `retried` if it will be tried again.
    pub fn store_error(&self, operation: &str, retried: bool) {
        count(&self.store_errors, operation);
        if retried {
            count(&self.store_retries, operation);
        }
    }

    /// A bus operation failed; `retried` if it will be tried again.
    pub fn bus_error(&self, operation: &str, retried: bool) {
        count(&self.bus_errors, operation);
        if retried {
            count(&self.bus_retries, operation);
        }
    }

    /// A schedule's firing was decided, with `outcome` (`fired`,
    /// `skipped-overlap`, `missed`, `failed`).
    pub fn schedule_firing(&self, outcome: &str) {
        count(&self.schedule_firings, outcome);
    }

    /// A task was accepted.
    pub fn task_submitted(&self) {
        self.tasks_submitted.inc();
    }

    /// A worker renewed its leases in one store call that took `elapsed`.
    pub fn lease_renewed(&self, elapsed: Duration) {
        self.lease_renewal.observe(elapsed.as_secs_f64());
    }

    /// A worker's lease renewal failed or timed out.
    pub fn lease_renewal_failed(&self) {
        self.lease_renewal_failures.inc();
    }

    /// A worker lost the lease on a shard it was running.
    pub fn lease_lost(&self) {
        self.leases_lost.inc();
    }

    /// A completion event was published, `by` `end` or `outbox`.
    pub fn completion_event_published(&self, by: &str) {
        count(&self.completion_events, by);
    }

    /// A request to `route` (the template, or [`UNMATCHED_ROUTE`]) was
    /// answered with `status` after `elapsed`.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// The hook for the numbers only the store knows, called when
    /// `/metrics` is scraped: `dts_tasks{status}` for each of `tasks` (a
    /// status name and how many tasks have it) and `dts_shards_waiting`.
    /// The first call registers both gauges.
    pub fn set_store_stats<'a>(
        &self,
        tasks: impl IntoIterator<Item = (&'a str, u64)>,
        shards_waiting: u64,
    ) {
        let gauges = self.store_gauges.get_or_init(|| StoreGauges {
            tasks: register(
                &self.registry,
                IntGaugeVec::new(
                    Opts::new("dts_tasks", "Tasks in the store, by status."),
                    &["status"],
                ),
            ),
            shards_waiting: register(
                &self.registry,
                IntGauge::with_opts(Opts::new(
                    "dts_shards_waiting",
                    "Shards planned and not yet claimed by a worker (the queue depth).",
                )),
            ),
        });
        for (status, n) in tasks {
            gauge_of(&gauges.tasks, &[status]).set(clamp(n));
        }
        gauges.shards_waiting.set(clamp(shards_waiting));
    }

    /// Every family in the text exposition format (version 0.0.4), for
    /// `GET /metrics`.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .map_err(MetricsError::Encode)?;
        // The encoder writes UTF-8 only: names, labels and help are ours
        // and label values are `&str`.
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

/// What a worker counts per item: clones of the process's handles, so
/// counting is an atomic add with no label lookup.
#[derive(Clone)]
pub struct WorkerMetrics {
    started: IntCounter,
    succeeded: IntCounter,
    failed: IntCounter,
    duration: Histogram,
    first_item_latency: Histogram,
    busy: IntGauge,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics").finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    /// An item's process is about to start: a busy slot and a start.
    pub fn item_started(&self) {
        self.started.inc();
        self.busy.inc();
    }

    /// The process of an item ended after `elapsed` (`None`: it could not
    /// start); its slot is free again.
    pub fn item_run_ended(&self, elapsed: Option<Duration>) {
        self.busy.dec();
        if let Some(elapsed) = elapsed {
            self.duration.observe(elapsed.as_secs_f64());
        }
    }

    /// An item got its final result on this worker.
    pub fn item_finished(&self, succeeded: bool) {
        if succeeded {
            self.succeeded.inc();
        } else {
            self.failed.inc();
        }
    }

    /// A task's first item started `latency` after the task was submitted.
    pub fn first_item_started(&self, latency: Duration) {
        self.first_item_latency.observe(latency.as_secs_f64());
    }
}

/// Registers `metric`; the names and labels are constants, which the
/// tests register, so a refusal is a bug in this file.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric names and labels are constants the unit tests check");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric name is registered once; the unit tests check");
    metric
}

/// The gauge of `labels`. `with_label_values` panics only when the count
/// of labels differs from the family's, and every caller passes the one
/// label its family has.
fn gauge_of(family: &IntGaugeVec, labels: &[&str]) -> IntGauge {
    family.with_label_values(labels)
}

fn count(family: &IntCounterVec, label: &str) {
    family.with_label_values(&[label]).inc();
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `text` for `name` (the whole name before `{` or
    /// a space), without comments.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .collect()
    }

    #[test]
    fn a_workers_items_show_in_the_counters_and_the_duration_histogram() {
        let metrics = Metrics::new();
        let worker = metrics.worker("w1", 4);
        for ok in [true, true, false] {
            worker.item_started();
            worker.item_run_ended(Some(Duration::from_millis(20)));
            worker.item_finished(ok);
        }
        let text = metrics.render().unwrap();
        assert_eq!(
            samples(&text, "dts_items_started_total"),
            ["dts_items_started_total 3"]
        );
        assert_eq!(
            samples(&text, "dts_items_succeeded_total"),
            ["dts_items_succeeded_total 2"]
        );
        assert_eq!(
            samples(&text, "dts_items_failed_total"),
            ["dts_items_failed_total 1"]
        );
        assert_eq!(
            samples(&text, "dts_item_duration_seconds_count"),
            ["dts_item_duration_seconds_count 3"]
        );
        assert_eq!(
            samples(&text, "dts_worker_slots"),
            [r#"dts_worker_slots{worker="w1"} 4"#]
        );
        assert_eq!(
            samples(&text, "dts_worker_slots_busy"),
            [r#"dts_worker_slots_busy{worker="w1"} 0"#]
        );
    }

    #[test]
    fn a_busy_slot_shows_until_its_item_ends_and_a_stopped_worker_disappears() {
        let metrics = Metrics::new();
        let worker = metrics.worker("w1", 2);
        worker.item_started();
        let text = metrics.render().unwrap();
        assert_eq!(
            samples(&text, "dts_worker_slots_busy"),
            [r#"dts_worker_slots_busy{worker="w1"} 1"#]
        );
        worker.item_run_ended(None);
        metrics.forget_worker("w1");
        let text = metrics.render().unwrap();
        assert!(samples(&text, "dts_worker_slots").is_empty(), "{text}");
        assert!(samples(&text, "dts_worker_slots_busy").is_empty(), "{text}");
    }

    #[test]
    fn http_requests_are_counted_by_route_template_method_and_status() {
        let metrics = Metrics::new();
        metrics.http_request("/v1/tasks/{id}", "GET", 200, Duration::from_millis(3));
        metrics.http_request("/v1/tasks/{id}", "GET", 200, Duration::from_millis(3));
        metrics.http_request(UNMATCHED_ROUTE, "GET", 404, Duration::from_millis(1));
        let text = metrics.render().unwrap();
        assert_eq!(
            samples(&text, "dts_http_requests_total"),
            [
                r#"dts_http_requests_total{method="GET",route="/v1/tasks/{id}",status="200"} 2"#,
                r#"dts_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            ]
        );
        assert_eq!(
            samples(&text, "dts_http_request_duration_seconds_count"),
            [
                r#"dts_http_request_duration_seconds_count{method="GET",route="/v1/tasks/{id}"} 2"#,
                r#"dts_http_request_duration_seconds_count{method="GET",route="unmatched"} 1"#,
            ]
        );
    }

    #[test]
    fn errors_and_retries_are_counted_by_operation() {
        let metrics = Metrics::new();
        metrics.store_error("record_results", true);
        metrics.store_error("record_results", false);
        metrics.bus_error("publish_task", true);
        let text = metrics.render().unwrap();
        assert_eq!(
            samples(&text, "dts_store_errors_total"),
            [r#"dts_store_errors_total{operation="record_results"} 2"#]
        );
        assert_eq!(
            samples(&text, "dts_store_retries_total"),
            [r#"dts_store_retries_total{operation="record_results"} 1"#]
        );
        assert_eq!(
            samples(&text, "dts_bus_errors_total"),
            [r#"dts_bus_errors_total{operation="publish_task"} 1"#]
        );
        assert_eq!(
            samples(&text, "dts_bus_retries_total"),
            [r#"dts_bus_retries_total{operation="publish_task"} 1"#]
        );
    }

    #[test]
    fn the_store_gauges_show_only_once_the_store_was_asked() {
        let metrics = Metrics::new();
        let text = metrics.render().unwrap();
        assert!(!text.contains("dts_shards_waiting"), "{text}");
        assert!(!text.contains("dts_tasks{"), "{text}");
        metrics.set_store_stats([("COMPLETED", 3), ("WAITING", 1)], 7);
        metrics.set_store_stats([("COMPLETED", 4), ("WAITING", 0)], 5);
        let text = metrics.render().unwrap();
        assert_eq!(
            samples(&text, "dts_shards_waiting"),
            ["dts_shards_waiting 5"]
        );
        assert_eq!(
            samples(&text, "dts_tasks"),
            [
                r#"dts_tasks{status="COMPLETED"} 4"#,
                r#"dts_tasks{status="WAITING"} 0"#
            ]
        );
    }

    /// A registry in which every family has a sample, so every family
    /// renders.
    fn every_family() -> Metrics {
        let metrics = Metrics::new();
        // Families without samples are not rendered: give each one.
        let worker = metrics.worker("w", 1);
        worker.item_started();
        worker.item_run_ended(Some(Duration::from_secs(1)));
        worker.item_finished(true);
        worker.item_finished(false);
        worker.first_item_started(Duration::from_secs(2));
        metrics.store_error("op", true);
        metrics.bus_error("op", true);
        metrics.task_submitted();
        metrics.lease_renewed(Duration::from_millis(3));
        metrics.lease_renewal_failed();
        metrics.lease_lost();
        metrics.http_request("/healthz", "GET", 200, Duration::ZERO);
        metrics.set_store_stats([("WAITING", 0)], 0);
        metrics
    }

    /// The families' names and types, as rendered.
    fn families(text: &str) -> Vec<(&str, &str)> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .collect()
    }

    fn doc(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_family_has_help_and_a_type_and_counters_end_in_total() {
        let text = every_family().render().unwrap();
        let types = families(&text);
        assert_eq!(types.len(), 19, "{text}");
        for (name, kind) in types {
            assert!(name.starts_with("dts_"), "{name}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no help"
            );
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
            if kind == "histogram" {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
        assert_eq!(
            CONTENT_TYPE,
            format!("{}; charset=utf-8", prometheus::TEXT_FORMAT)
        );
    }

    #[test]
    fn docs_metrics_md_lists_every_family_with_its_type() {
        let text = every_family().render().unwrap();
        let table = doc("metrics.md");
        for (name, kind) in families(&text) {
            let row = format!("| `{name}` | {kind} |");
            assert!(
                table.contains(&row),
                "docs/metrics.md has no row starting {row}"
            );
        }
    }

    #[test]
    fn the_grafana_dashboard_is_json_and_queries_only_metrics_dts_has() {
        let text = every_family().render().unwrap();
        let names: Vec<&str> = families(&text).into_iter().map(|(name, _)| name).collect();
        let dashboard = doc("grafana-dashboard.json");
        let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
        assert!(
            parsed["panels"].as_array().is_some_and(|p| p.len() >= 8),
            "{parsed}"
        );
        let mut queried = 0;
        for (at, _) in dashboard.match_indices("dts_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| names.contains(base))
                .unwrap_or(&name);
            assert!(
                names.contains(&family),
                "the dashboard queries {name}, which dts does not have"
            );
            queried += 1;
        }
        assert!(queried >= 10, "{queried}");
    }
}
