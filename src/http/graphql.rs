//! GraphQL over HTTP: gathers the facts of the request (credential, client
//! IP, user agent), hands them to the schema, and enforces the HTTP-level
//! limits (content type, body size, batch size, no mutations over GET).
//! The answer's media type and, under `application/graphql-response+json`,
//! its status follow the `Accept` header (see [`super::negotiation`]).

use std::sync::Arc;

use async_graphql::{BatchRequest, Variables};
use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use poem::http::{header, StatusCode};
use poem::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::client_ip::client_info;
use super::cookie::{request_credential, set_cookie, CrossOrigin};
use super::negotiation::{negotiate, MediaType};
use crate::graphql::error::{forbidden_cross_origin, internal_error, label_errors, Refused};
use crate::graphql::{self, Outcome, Reached, RequestContext};
use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest wait for the whole body, so slow senders cannot hold a request
/// open.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest a request may run: past it, something below (a database
/// connection gone silent) is stuck, and the client gets an error instead of
/// a hang. Well above a login's worst case (a full hashing queue, 10 s).
pub const EXECUTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest query string of a GET (the document, variables and extensions).
pub const MAX_GET_QUERY_BYTES: usize = 32 * 1024;
/// Most operations in one batched request.
pub const MAX_BATCH: usize = 10;

/// `POST /graphql`.
pub async fn post(mut req: Request, state: &AppState) -> Response {
    let Some(media) = negotiate(accept(&req)) else {
        return not_acceptable();
    };
    let body = req.take_body();
    // Boxed: every layer above a handler moves the handler's future, and
    // this one holds the body read and the execution (as does the GET's).
    in_media(media, Box::pin(post_as(media, &req, body, state)).await)
}

async fn post_as(media: MediaType, req: &Request, body: Body, state: &AppState) -> Response {
    if !is_json(req) {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /graphql takes Content-Type: application/json",
            "UNSUPPORTED_MEDIA_TYPE",
        );
    }
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, read_body(body)).await {
        Err(_) => {
            return refusal(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
                "BODY_TIMEOUT",
            )
        }
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => {
            return refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                "BODY_TOO_LARGE",
            )
        }
        Ok(Err(BodyError::Unreadable)) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "the body could not be read",
                "MALFORMED_REQUEST",
            )
        }
    };
    let batch = parse_batch(&bytes);
    // Not held through the execution.
    drop(bytes);
    let Some(batch) = batch else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "the body is not a GraphQL request: expected a JSON object with a \"query\" string, or an array of them",
            "MALFORMED_REQUEST",
        );
    };
    if let BatchRequest::Batch(requests) = &batch {
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return refusal(
                StatusCode::BAD_REQUEST,
                &format!(
                    "a batch holds 1 to {MAX_BATCH} operations, not {}",
                    requests.len()
                ),
                "BATCH_TOO_LARGE",
            );
        }
    }
    let context = match request_context(req, state) {
        Ok(context) => context,
        Err(CrossOrigin) => return cross_origin(),
    };
    let batch = batch.data(Arc::clone(&context));
    let (single, requests) = match batch {
        BatchRequest::Single(request) => (true, vec![request]),
        BatchRequest::Batch(requests) => (false, requests),
    };
    let execution = tokio::time::timeout(EXECUTION_TIMEOUT, async {
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            outcomes.push(graphql::execute(&state.schema, &state.documents, request).await);
        }
        outcomes
    });
    let Ok(mut outcomes) = execution.await else {
        return timed_out();
    };
    let status = status_of(media, &outcomes);
    outcomes
        .iter_mut()
        .for_each(|outcome| label_errors(&mut outcome.response));
    let body = if single {
        outcomes.pop().map(|o| body_of(&o)).unwrap_or_default()
    } else {
        let responses: Vec<_> = outcomes.iter().map(AnswerJson).collect();
        serde_json::to_vec(&responses).unwrap_or_default()
    };
    let response = json_bytes(status, body);
    with_cookie(response, &context, state)
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// The body, up to [`MAX_BODY_BYTES`], copied piece by piece into one
/// buffer (poem's `into_bytes_limit` also zeroes a 4 KiB buffer per
/// request and copies through it). Each piece is released as soon as it
/// is copied, so the connection's read buffer is reused, and a body sent
/// a byte per chunk holds its bytes and no more.
async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    let mut body: BoxBody<Bytes, std::io::Error> = body.into();
    let mut whole = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if whole.len() + data.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        whole.extend_from_slice(&data);
    }
    Ok(whole.freeze())
}

/// The status of an answer: always 200 under `application/json`; under
/// `application/graphql-response+json`, 400 for a request refused before
/// execution (for a batch: when every one of its requests was). A
/// `PersistedQueryNotFound` answer is 200 under both, as Apollo's clients
/// take a 400 to mean that the server has no persisted queries at all.
fn status_of(media: MediaType, outcomes: &[Outcome]) -> StatusCode {
    let refused = |o: &Outcome| o.reached == Reached::Refusal;
    if media == MediaType::GraphqlResponseJson && outcomes.iter().all(refused) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

/// An object is one request, an array a batch; anything else is refused.
/// (Parse errors are not reported in detail: serde's messages can quote the
/// body, which may hold a password.)
fn parse_batch(bytes: &[u8]) -> Option<BatchRequest> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace())? {
        b'{' => serde_json::from_slice(bytes).ok().map(BatchRequest::Single),
        b'[' => serde_json::from_slice(bytes).ok().map(BatchRequest::Batch),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql`: GraphiQL for a browser, or a query.
pub async fn get(req: &Request, state: &AppState) -> Response {
    let mut response = get_answer(req, state).await;
    // The page or JSON, by `Accept`: caches must keep them apart.
    response
        .headers_mut()
        .append(header::VARY, header::HeaderValue::from_static("accept"));
    response
}

async fn get_answer(req: &Request, state: &AppState) -> Response {
    // A GET carries its document in the URL, so its length is bounded here
    // (the body limit does not apply).
    if req.uri().query().map_or(0, str::len) > MAX_GET_QUERY_BYTES {
        return refusal(
            StatusCode::URI_TOO_LONG,
            &format!("the query string is longer than {MAX_GET_QUERY_BYTES} bytes; send the document in a POST"),
            "QUERY_TOO_LONG",
        );
    }
    let params = req.params::<GetParams>().ok();
    let asks_nothing = params
        .as_ref()
        .is_some_and(|p| p.query.is_none() && p.extensions.is_none());
    if asks_nothing && accepts_html(req) && state.graphiql {
        return super::graphiql::page();
    }
    let Some(media) = negotiate(accept(req)) else {
        return not_acceptable();
    };
    in_media(media, Box::pin(get_as(media, req, params, state)).await)
}

async fn get_as(
    media: MediaType,
    req: &Request,
    params: Option<GetParams>,
    state: &AppState,
) -> Response {
    let Some(params) = params else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "the query string is malformed",
            "MALFORMED_REQUEST",
        );
    };
    if params.query.is_none() && params.extensions.is_none() {
        return refusal(
            StatusCode::BAD_REQUEST,
            "GET /graphql needs a ?query= parameter",
            "MALFORMED_REQUEST",
        );
    }
    let mut request = async_graphql::Request::new(params.query.unwrap_or_default());
    if let Some(extensions) = params.extensions.as_deref() {
        match serde_json::from_str(extensions) {
            Ok(extensions) => request.extensions = extensions,
            Err(_) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "extensions must be a JSON object",
                    "MALFORMED_REQUEST",
                )
            }
        }
    }
    let checked = match state.documents.check_request(&mut request) {
        Ok(checked) => checked,
        Err(refused) => {
            let outcome = Outcome::refused(refused);
            let status = status_of(media, std::slice::from_ref(&outcome));
            return json_bytes(status, body_of(&outcome));
        }
    };
    if checked.selects_mutation(params.operation_name.as_deref()) {
        let mut response = refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "mutations are accepted over POST only",
            "METHOD_NOT_ALLOWED",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    request.variables = match params
        .variables
        .as_deref()
        .map(serde_json::from_str::<Variables>)
    {
        None => Variables::default(),
        Some(Ok(variables)) => variables,
        Some(Err(_)) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "variables must be a JSON object",
                "MALFORMED_REQUEST",
            )
        }
    };
    let context = match request_context(req, state) {
        Ok(context) => context,
        Err(CrossOrigin) => return cross_origin(),
    };
    let request = request.data(context);
    let execution = tokio::time::timeout(
        EXECUTION_TIMEOUT,
        graphql::execute_checked(&state.schema, &state.documents, request, checked),
    );
    let Ok(mut outcome) = execution.await else {
        return timed_out();
    };
    let status = status_of(media, std::slice::from_ref(&outcome));
    label_errors(&mut outcome.response);
    json_bytes(status, body_of(&outcome))
}

/// The JSON of an answer. A request that did not run has no `data` entry
/// at all (the GraphQL spec's request errors), not `data: null`, which
/// would say that execution started and failed.
///
/// An answer that ran is written as it is, without a `serde_json::Value`
/// in between: that tree cost allocations per field, and its map sorts
/// keys, where the spec wants the fields in the order they were selected.
struct AnswerJson<'a>(&'a Outcome);

impl Serialize for AnswerJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let outcome = self.0;
        if outcome.reached == Reached::Execution {
            return outcome.response.serialize(serializer);
        }
        // Refused before it ran: errors only (and extensions, if any).
        let mut body =
            serde_json::to_value(&outcome.response).map_err(serde::ser::Error::custom)?;
        if let Some(object) = body.as_object_mut() {
            object.remove("data");
        }
        body.serialize(serializer)
    }
}

/// [`AnswerJson`] as bytes.
fn body_of(outcome: &Outcome) -> Vec<u8> {
    serde_json::to_vec(&AnswerJson(outcome)).unwrap_or_default()
}

/// The request's context, unless its cookie came from another origin.
fn request_context(req: &Request, state: &AppState) -> Result<Arc<RequestContext>, CrossOrigin> {
    let credential = request_credential(req, state)?;
    Ok(Arc::new(RequestContext::new(
        state.auth.clone(),
        credential,
        client_info(req, state.trust_forwarded_for),
    )))
}

/// 403 for a cookie sent from another origin; refused before it ran, so
/// no `data` entry.
fn cross_origin() -> Response {
    let refused = Outcome {
        response: forbidden_cross_origin(),
        reached: Reached::Refusal,
    };
    json_bytes(StatusCode::FORBIDDEN, body_of(&refused))
}

/// The `Set-Cookie` of what the request's mutations did to the session,
/// when the cookie is on.
fn with_cookie(mut response: Response, context: &RequestContext, state: &AppState) -> Response {
    let change = context.take_cookie();
    if let (Some(settings), Some(change)) = (&state.cookie, change) {
        if let Some(value) = set_cookie(settings, &change) {
            response.headers_mut().append(header::SET_COOKIE, value);
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
        }
    }
    response
}

fn is_json(req: &Request) -> bool {
    req.content_type()
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn accept(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
}

/// An `Accept` that allows neither JSON media type: said in JSON anyway,
/// the one format every GraphQL client reads.
fn not_acceptable() -> Response {
    refusal(
        StatusCode::NOT_ACCEPTABLE,
        "Accept allows neither application/graphql-response+json nor application/json",
        "NOT_ACCEPTABLE",
    )
}

/// Labels a JSON answer with the negotiated media type.
fn in_media(media: MediaType, mut response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == b"application/json");
    if is_json && media == MediaType::GraphqlResponseJson {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/graphql-response+json; charset=utf-8"),
        );
    }
    response
}

fn accepts_html(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A request abandoned after [`EXECUTION_TIMEOUT`].
fn timed_out() -> Response {
    tracing::error!("request abandoned after {} s", EXECUTION_TIMEOUT.as_secs());
    json_response(StatusCode::SERVICE_UNAVAILABLE, &internal_error())
}

/// A request refused before GraphQL runs, in the GraphQL error shape.
pub fn refusal(status: StatusCode, message: &str, reason: &'static str) -> Response {
    json_response(status, &Refused::new(reason, message).into_response())
}

fn json_response(status: StatusCode, body: &async_graphql::Response) -> Response {
    json_bytes(status, serde_json::to_vec(body).unwrap_or_default())
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}
