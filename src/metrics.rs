//! Prometheus metrics. Every label value comes from a fixed set: never a
//! username, an IP or a token, so series stay few and nothing leaks.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

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

pub fn token_resolved(path: &'static str) {
    metrics::counter!("authql_token_resolutions_total", "path" => path, "reason" => "")
        .increment(1);
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
    metrics::histogram!("authql_operation_duration_seconds", "operation" => kind)
        .record(elapsed.as_secs_f64());
}

pub fn http_latency(route: &'static str, elapsed: Duration) {
    metrics::histogram!("authql_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
}

pub fn connection_refused() {
    metrics::counter!("authql_connections_refused_total").increment(1);
}
