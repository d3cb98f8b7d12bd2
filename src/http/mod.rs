//! HTTP: the routes, CORS, request ids and panics caught at the edge.

pub mod client_ip;
pub mod cookie;
pub mod forward_auth;
pub mod graphiql;
pub mod graphql;
pub mod negotiation;
pub mod server;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use poem::endpoint::BoxEndpoint;
use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use poem::middleware::Cors;
use poem::{Endpoint, EndpointExt as _, IntoResponse, Request, Response};

use crate::state::AppState;

const REQUEST_ID: &str = "x-request-id";
/// Made at compile time, not parsed from text twice per request.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);
const READY_TIMEOUT: Duration = Duration::from_secs(2);
const ASSETS_PREFIX: &str = "/graphql/assets/";

/// Every route, with its middleware: request ids outermost, then CORS when
/// it is configured, then the routes, where a panic becomes a 500.
pub fn routes(state: AppState, cors_origins: &[String]) -> BoxEndpoint<'static, Response> {
    // Credentialed CORS (the session cookie) only when the cookie is on;
    // poem's Cors answers only listed origins, so only they get it.
    let credentials = state.cookie.is_some();
    let routes = Routes { state };
    if cors_origins.is_empty() {
        // No Cors middleware: browsers refuse cross-origin calls.
        return WithRequestId(routes).boxed();
    }
    let cors = Cors::new()
        .allow_origins(cors_origins.iter().map(String::as_str))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(["authorization", "content-type", REQUEST_ID])
        .expose_headers([REQUEST_ID])
        .allow_credentials(credentials)
        .max_age(600);
    WithRequestId(routes.with(cors).around(vary_by_origin)).boxed()
}

/// The paths authql serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path<'a> {
    Graphql,
    /// `/graphql/assets/NAME`, with the name.
    Asset(&'a str),
    Verify,
    Hasura,
    Healthz,
    Readyz,
    Metrics,
    Unknown,
}

impl<'a> Path<'a> {
    fn of(path: &'a str) -> Self {
        match path {
            "/graphql" => Self::Graphql,
            "/auth/verify" => Self::Verify,
            "/auth/hasura" => Self::Hasura,
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            "/metrics" => Self::Metrics,
            _ => match path.strip_prefix(ASSETS_PREFIX) {
                Some(name) if !name.is_empty() && !name.contains('/') => Self::Asset(name),
                _ => Self::Unknown,
            },
        }
    }

    /// A fixed label per route, never the raw path, for metrics.
    fn label(self) -> &'static str {
        match self {
            Self::Graphql => "graphql",
            Self::Asset(_) => "graphiql",
            Self::Verify => "auth_verify",
            Self::Hasura => "auth_hasura",
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Metrics => "metrics",
            Self::Unknown => "other",
        }
    }
}

/// The routes, chosen by a `match` on the path. poem's `Route` would add,
/// to every request, a radix-tree walk, two boxed endpoints (each moving
/// the request) and a path-pattern extension on the request and the
/// response (bench/RESULTS.md); the handlers here take the state directly
/// instead of from the request's extensions.
struct Routes {
    state: AppState,
}

impl Endpoint for Routes {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        // HEAD is answered as GET, without the body, as poem's router does.
        let head = req.method() == Method::HEAD;
        let mut response = or_internal_error(self.dispatch(req)).await?;
        if head {
            response.set_body(());
        }
        Ok(response)
    }
}

impl Routes {
    async fn dispatch(&self, req: Request) -> poem::Result<Response> {
        let state = &self.state;
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        Ok(match Path::of(req.uri().path()) {
            Path::Graphql if get => graphql::get(&req, state).await,
            Path::Graphql if req.method() == Method::POST => graphql::post(req, state).await,
            Path::Asset(name) if get => graphiql::asset(name, state),
            Path::Verify if get => forward_auth::verify(&req, state).await,
            Path::Hasura if get => forward_auth::hasura(&req, state).await,
            Path::Healthz if get => "ok".into_response(),
            // Boxed: its database ping is 14 KiB of future, which every
            // request would otherwise move.
            Path::Readyz if get => Box::pin(readyz(state)).await,
            Path::Metrics if get => metrics(state),
            Path::Unknown => return Err(NotFoundError.into()),
            _ => return Err(MethodNotAllowedError.into()),
        })
    }
}

/// A panic below becomes a 500 for this request alone; the process keeps
/// serving. (A combinator, not an `async fn`, which would move `answer`
/// once more.)
fn or_internal_error(
    answer: impl Future<Output = poem::Result<Response>>,
) -> impl Future<Output = poem::Result<Response>> {
    AssertUnwindSafe(answer)
        .catch_unwind()
        .map(|caught| match caught {
            Ok(result) => result,
            Err(_) => {
                Ok((StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response())
            }
        })
}

/// With CORS on, every answer depends on the request's `Origin` (allowed,
/// refused, or none sent), so every answer says so, and a shared cache never
/// serves one origin's answer to another. poem's `Cors` says it only for
/// some of them, and replaces any `Vary` the endpoint set; this appends.
async fn vary_by_origin<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
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
/// to every log line of the request and echoes it in the response; times
/// the request for the metrics.
struct WithRequestId<E>(E);

impl<E: Endpoint> Endpoint for WithRequestId<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let id = req
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| is_well_formed_id(id))
            .map_or_else(new_request_id, Arc::from);
        let route = Path::of(req.uri().path()).label();
        let method = req.method().clone();
        let started = Instant::now();
        let header = HeaderValue::from_str(&id).ok();
        let answer = async {
            let response = match self.0.call(req).await {
                Ok(response) => response.into_response(),
                Err(err) => err.into_response(),
            };
            let elapsed = started.elapsed();
            crate::metrics::http_latency(route, elapsed);
            tracing::debug!(
                %method,
                route,
                status = response.status().as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request finished"
            );
            response
        };
        // The id, on every line logged while the request is served; the
        // route and method are in "request finished".
        let mut response = crate::telemetry::in_request(id, answer).await;
        if let Some(value) = header {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        Ok(response)
    }
}

fn is_well_formed_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn new_request_id() -> Arc<str> {
    use rand::Rng as _;
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    // Into a buffer: `hex::encode` collects its digits one `char` at a time.
    let mut text = [0u8; 24];
    hex::encode_to_slice(bytes, &mut text).expect("24 digits for 12 bytes");
    Arc::from(std::str::from_utf8(&text).expect("hex digits are ASCII"))
}

async fn readyz(state: &AppState) -> Response {
    if state.auth.is_ready(READY_TIMEOUT).await {
        "ready".into_response()
    } else {
        "database unavailable"
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response()
    }
}

fn metrics(state: &AppState) -> Response {
    crate::metrics::cache_entries(state.auth.cache().len());
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_below_becomes_a_500() {
        let answer = or_internal_error(async { panic!("a bug in a handler") }).await;
        let response = answer.expect("a response, not an error");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let fine = or_internal_error(async { Ok("ok".into_response()) }).await;
        assert_eq!(fine.expect("a response").status(), StatusCode::OK);
    }

    #[test]
    fn paths_are_matched_exactly() {
        assert_eq!(Path::of("/graphql"), Path::Graphql);
        assert_eq!(Path::of("/graphql/assets/x.js"), Path::Asset("x.js"));
        assert_eq!(Path::of("/graphql/assets/a/b"), Path::Unknown);
        assert_eq!(Path::of("/graphql/assets/"), Path::Unknown);
        assert_eq!(Path::of("/auth/verify/"), Path::Unknown);
        assert_eq!(Path::of("/auth/verify").label(), "auth_verify");
        assert_eq!(Path::of("/anything").label(), "other");
    }

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(is_well_formed_id("3f2a-77_b.c:1"));
        assert!(!is_well_formed_id(""));
        assert!(!is_well_formed_id(&"a".repeat(129)));
        assert!(!is_well_formed_id("a b"));
        assert!(!is_well_formed_id("a\nb"));
    }
}
