//! GraphQL over HTTP: gathers the facts of the request (credential, client
//! IP, user agent), hands them to the schema, and enforces the HTTP-level
//! limits (content type, body size, batch size, no mutations over GET).

use std::sync::Arc;

use async_graphql::{BatchRequest, BatchResponse, Variables};
use async_graphql_poem::{GraphQLBatchResponse, GraphQLResponse};
use poem::http::{header, StatusCode};
use poem::web::{Data, Html};
use poem::{handler, Body, IntoResponse, Request, Response};
use serde::Deserialize;

use super::client_ip::{client_info, credential};
use crate::graphql::error::{internal_error, label_errors, Refused};
use crate::graphql::{self, RequestContext};
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
/// Most operations in one batched request.
pub const MAX_BATCH: usize = 10;

#[handler]
pub async fn post(req: &Request, body: Body, Data(state): Data<&AppState>) -> Response {
    if !is_json(req) {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /graphql takes Content-Type: application/json",
            "UNSUPPORTED_MEDIA_TYPE",
        );
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, body.into_bytes_limit(MAX_BODY_BYTES));
    let bytes = match read.await {
        Err(_) => {
            return refusal(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
                "BODY_TIMEOUT",
            )
        }
        Ok(Ok(bytes)) => bytes,
        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => {
            return refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                "BODY_TOO_LARGE",
            )
        }
        Ok(Err(_)) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "the body could not be read",
                "MALFORMED_REQUEST",
            )
        }
    };
    let Some(batch) = parse_batch(&bytes) else {
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
    let context = request_context(req, state);
    let batch = batch.data(context);
    let execution = tokio::time::timeout(EXECUTION_TIMEOUT, async {
        match batch {
            BatchRequest::Single(request) => BatchResponse::Single(
                graphql::execute(&state.schema, &state.documents, request).await,
            ),
            BatchRequest::Batch(requests) => {
                let mut responses = Vec::with_capacity(requests.len());
                for request in requests {
                    responses
                        .push(graphql::execute(&state.schema, &state.documents, request).await);
                }
                BatchResponse::Batch(responses)
            }
        }
    });
    let Ok(mut response) = execution.await else {
        return timed_out();
    };
    match &mut response {
        BatchResponse::Single(single) => label_errors(single),
        BatchResponse::Batch(many) => many.iter_mut().for_each(label_errors),
    }
    GraphQLBatchResponse(response).into_response()
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
}

#[handler]
pub async fn get(req: &Request, Data(state): Data<&AppState>) -> Response {
    let Ok(params) = req.params::<GetParams>() else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "the query string is malformed",
            "MALFORMED_REQUEST",
        );
    };
    let Some(query) = params.query else {
        if accepts_html(req) {
            return Html(
                async_graphql::http::GraphiQLSource::build()
                    .endpoint("/graphql")
                    .title("authql")
                    .finish(),
            )
            .into_response();
        }
        return refusal(
            StatusCode::BAD_REQUEST,
            "GET /graphql needs a ?query= parameter",
            "MALFORMED_REQUEST",
        );
    };
    let checked = match state.documents.check(&query) {
        Ok(checked) => checked,
        Err(refused) => return GraphQLResponse(refused.into_response()).into_response(),
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
    let mut request = async_graphql::Request::new(query);
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
    let request = request.data(request_context(req, state));
    let execution = tokio::time::timeout(
        EXECUTION_TIMEOUT,
        graphql::execute_checked(&state.schema, &state.documents, request, checked),
    );
    let Ok(mut response) = execution.await else {
        return timed_out();
    };
    label_errors(&mut response);
    GraphQLResponse(response).into_response()
}

fn request_context(req: &Request, state: &AppState) -> Arc<RequestContext> {
    Arc::new(RequestContext::new(
        state.auth.clone(),
        credential(req),
        client_info(req, state.trust_forwarded_for),
    ))
}

fn is_json(req: &Request) -> bool {
    req.content_type()
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
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
    let body = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}
