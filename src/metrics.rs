//! Prometheus metrics. Every label value comes from a fixed set: never a
//! username, an IP or a token, so series stay few and nothing leaks.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The series every request touches, registered once: `counter!` and
/// `histogram!` look their series up in the registry on each call (hashing
/// and comparing the key and labels), which on a cached `me` costs more than
/// the count itself. Set with the recorder; until then the macros serve.
static HOT: OnceLock<HotSeries> = OnceLock::new();

/// The `route` label values of `authql_http_request_duration_seconds`.
const ROUTES: [&str; 8] = [
    "graphql",
    "graphiql",
    "auth_verify",
    "auth_hasura",
    "healthz",
    "readyz",
    "metrics",
    "other",
];
/// The `operation` label values of `authql_operation_duration_seconds`.
const OPERATIONS: [&str; 4] = ["query", "mutation", "subscription", "unknown"];

struct HotSeries {
    resolved_from_cache: Counter,
    resolved_from_database: Counter,
    http: [Histogram; ROUTES.len()],
    operations: [Histogram; OPERATIONS.len()],
}

impl HotSeries {
    fn register() -> Self {
        Self {
            resolved_from_cache: resolution_counter("cache"),
            resolved_from_database: resolution_counter("database"),
            http: ROUTES.map(http_histogram),
            operations: OPERATIONS.map(operation_histogram),
        }
    }
}

fn resolution_counter(path: &'static str) -> Counter {
    metrics::counter!("authql_token_resolutions_total", "path" => path, "reason" => "")
}

fn http_histogram(route: &'static str) -> Histogram {
    metrics::histogram!("authql_http_request_duration_seconds", "route" => route)
}

fn operation_histogram(kind: &'static str) -> Histogram {
    metrics::histogram!("authql_operation_duration_seconds", "operation" => kind)
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was set; ours then stays empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            let _ = HOT.set(HotSeries::register());
            handle
        })
        .clone()
}

/// Drains histogram samples into their buckets every few seconds (the
/// exporter's own listener would; without it samples pile up between
/// scrapes, or forever when nothing scrapes). Runs until aborted.
pub async fn run_upkeep(handle: PrometheusHandle) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    metrics::describe_counter!("authql_logins_total", "Login attempts by outcome.");
    metrics::describe_counter!(
        "authql_token_resolutions_total",
        "Bearer token resolutions by path (cache, database, refused) and refusal reason."
    );
    metrics::describe_counter!(
        "authql_mails_total",
        "Mails by outcome (sent, retried, failed, dropped) and template."
    );
    metrics::describe_counter!("authql_revocations_total", "Tokens revoked, by kind.");
    metrics::describe_gauge!("authql_token_cache_entries", "Entries in the token cache.");
    metrics::describe_counter!(
        "authql_database_errors_total",
        "Failed database operations."
    );
    metrics::describe_histogram!(
        "authql_operation_duration_seconds",
        "GraphQL operation latency by operation type."
    );
    metrics::describe_histogram!(
        "authql_http_request_duration_seconds",
        "HTTP request latency by route."
    );
    metrics::describe_counter!(
        "authql_connections_refused_total",
        "Connections closed on arrival because --max-connections were open."
    );
}

/// A mail's fate: `sent`, `retried`, `failed` or `dropped`.
pub fn mail(outcome: &'static str, template: &'static str) {
    metrics::counter!("authql_mails_total", "outcome" => outcome, "template" => template)
        .increment(1);
}

pub fn login(outcome: &'static str) {
    metrics::counter!("authql_logins_total", "outcome" => outcome).increment(1);
}

/// A token resolved from the `cache` or the `database`.
pub fn token_resolved(path: &'static str) {
    match (HOT.get(), path) {
        (Some(hot), "cache") => hot.resolved_from_cache.increment(1),
        (Some(hot), "database") => hot.resolved_from_database.increment(1),
        _ => resolution_counter(path).increment(1),
    }
}

pub fn token_refused(reason: &'static str) {
    metrics::counter!("authql_token_resolutions_total", "path" => "refused", "reason" => reason)
        .increment(1);
}

pub fn revoked(kind: &'static str, count: u64) {
    metrics::counter!("authql_revocations_total", "kind" => kind).increment(count);
}

pub fn database_error() {
    metrics::counter!("authql_database_errors_total").increment(1);
}

pub fn cache_entries(entries: u64) {
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!("authql_token_cache_entries").set(entries as f64);
}

pub fn operation_latency(kind: &'static str, elapsed: Duration) {
    match held(|hot| &hot.operations, &OPERATIONS, kind) {
        Some(histogram) => histogram.record(elapsed.as_secs_f64()),
        None => operation_histogram(kind).record(elapsed.as_secs_f64()),
    }
}

pub fn http_latency(route: &'static str, elapsed: Duration) {
    match held(|hot| &hot.http, &ROUTES, route) {
        Some(histogram) => histogram.record(elapsed.as_secs_f64()),
        None => http_histogram(route).record(elapsed.as_secs_f64()),
    }
}

/// The histogram held for `label` (one of `labels`, in the order `series`
/// holds them), once the recorder is installed.
fn held(
    series: fn(&'static HotSeries) -> &'static [Histogram],
    labels: &[&str],
    label: &str,
) -> Option<&'static Histogram> {
    let index = labels.iter().position(|known| *known == label)?;
    HOT.get().map(|hot| &series(hot)[index])
}

pub fn connection_refused() {
    metrics::counter!("authql_connections_refused_total").increment(1);
}
