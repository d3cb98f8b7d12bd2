//! HTTP: the routes, CORS, request ids and panics caught at the edge.

pub mod client_ip;
pub mod cookie;
pub mod forward_auth;
pub mod graphiql;
pub mod graphql;
pub mod negotiation;
pub mod server;

use std::time::{Duration, Instant};

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::middleware::{CatchPanic, Cors};
use poem::web::Data;
use poem::{get, handler, Endpoint, EndpointExt as _, IntoResponse, Request, Response, Route};
use tracing::Instrument as _;

use crate::state::AppState;

const REQUEST_ID: &str = "x-request-id";
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Every route, with its middleware.
pub fn routes(
    state: AppState,
    cors_origins: &[String],
) -> poem::endpoint::BoxEndpoint<'static, Response> {
    // Credentialed CORS (the session cookie) only when the cookie is on;
    // poem's Cors answers only listed origins, so only they get it.
    let credentials = state.cookie.is_some();
    let route = Route::new()
        .at("/graphql", get(graphql::get).post(graphql::post))
        .at("/graphql/assets/:name", get(graphiql::asset))
        .at("/auth/verify", get(forward_auth::verify))
        .at("/auth/hasura", get(forward_auth::hasura))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics))
        .data(state)
        .with(CatchPanic::new());
    let route = if cors_origins.is_empty() {
        // No Cors middleware: browsers refuse cross-origin calls.
        route.boxed()
    } else {
        route
            .with(
                Cors::new()
                    .allow_origins(cors_origins.iter().map(String::as_str))
                    .allow_methods([Method::GET, Method::POST])
                    .allow_headers(["authorization", "content-type", REQUEST_ID])
                    .expose_headers([REQUEST_ID])
                    .allow_credentials(credentials)
                    .max_age(600),
            )
            .around(vary_by_origin)
            .boxed()
    };
    route.around(with_request_id).map_to_response().boxed()
}

/// With CORS on, every answer depends on the request's `Origin` (allowed,
/// refused, or none sent), so every answer says so, and a shared cache never
/// serves one origin's answer to another. poem's `Cors` says it only for
/// some of them, and replaces any `Vary` the endpoint set; this appends.
async fn vary_by_origin<E: Endpoint>(
    next: std::sync::Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let mut response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    };
    let varies = response
        .headers()
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("origin") || name.trim() == "*");
    if !varies {
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(response)
}

/// Gives each request an id (the client's, when well-formed), attaches it
/// to every log line of the request and echoes it in the response.
async fn with_request_id<E: Endpoint>(
    next: std::sync::Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_well_formed_id(id))
        .map_or_else(new_request_id, str::to_owned);
    let route = route_label(req.uri().path());
    // The id alone: the layer formats a span's fields when it is made, on
    // every request, and the route and method are in "request finished".
    let span = tracing::info_span!("request", request_id = id.as_str());
    let method = req.method().clone();
    let started = Instant::now();
    let mut response = match next.call(req).instrument(span.clone()).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    };
    let elapsed = started.elapsed();
    crate::metrics::http_latency(route, elapsed);
    span.in_scope(|| {
        tracing::debug!(
            %method,
            route,
            status = response.status().as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "request finished"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

fn is_well_formed_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn new_request_id() -> String {
    use rand::Rng as _;
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A fixed label per route, never the raw path, for metrics.
fn route_label(path: &str) -> &'static str {
    match path {
        "/graphql" => "graphql",
        path if path.starts_with("/graphql/assets/") => "graphiql",
        "/auth/verify" => "auth_verify",
        "/auth/hasura" => "auth_hasura",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ => "other",
    }
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
async fn readyz(Data(state): Data<&AppState>) -> Response {
    if state.auth.is_ready(READY_TIMEOUT).await {
        "ready".into_response()
    } else {
        "database unavailable"
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response()
    }
}

#[handler]
fn metrics(Data(state): Data<&AppState>) -> Response {
    crate::metrics::cache_entries(state.auth.cache().len());
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::is_well_formed_id;

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(is_well_formed_id("3f2a-77_b.c:1"));
        assert!(!is_well_formed_id(""));
        assert!(!is_well_formed_id(&"a".repeat(129)));
        assert!(!is_well_formed_id("a b"));
        assert!(!is_well_formed_id("a\nb"));
    }
}
