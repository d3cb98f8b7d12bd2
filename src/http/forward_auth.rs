//! Forward authentication: `GET /auth/verify` for reverse proxies (nginx
//! `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`) and
//! `GET /auth/hasura` for Hasura's webhook mode. Both resolve the request's
//! credential through `AuthService::authenticate`, the path `/graphql`
//! takes (same cache, same metrics, same refusals), and nothing else: no
//! GraphQL parsing or execution, so a check costs less than a cached `me`.

use std::time::Duration;

use poem::http::{header, HeaderName, HeaderValue, StatusCode};
use poem::{IntoResponse as _, Request, Response};

use super::cookie::{request_credential, CrossOrigin};
use crate::auth::{Credential, Principal};
use crate::error::{AuthError, Unauthenticated};
use crate::state::AppState;

pub const USER_ID: &str = "x-authql-user-id";
pub const USERNAME: &str = "x-authql-username";
pub const SESSION_ID: &str = "x-authql-session-id";
// Made at compile time: `from_static` at run time checks every byte again.
const USER_ID_HEADER: HeaderName = HeaderName::from_static(USER_ID);
const USERNAME_HEADER: HeaderName = HeaderName::from_static(USERNAME);
const SESSION_ID_HEADER: HeaderName = HeaderName::from_static(SESSION_ID);
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// 200 with the user's id, name and session id in headers, for the proxy
/// to pass on; or 401 with an RFC 6750 challenge.
pub async fn verify(req: &Request, state: &AppState) -> Response {
    let principal = match resolve(req, state).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal.into_response(),
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CACHE_CONTROL, NO_STORE)
        .finish();
    let headers = response.headers_mut();
    headers.insert(USER_ID_HEADER, HeaderValue::from(principal.user.id));
    headers.insert(SESSION_ID_HEADER, HeaderValue::from(principal.session_id));
    // Usernames are letters, digits and `@ . + - _`: always a valid header
    // value, non-ASCII letters as their UTF-8 bytes.
    if let Ok(name) = HeaderValue::from_bytes(principal.user.username.as_bytes()) {
        headers.insert(USERNAME_HEADER, name);
    }
    response
}

/// Hasura's webhook mode: 200 with the session variables as JSON, and a
/// `Cache-Control` that never lets Hasura keep the answer past the token's
/// remaining life nor past `cache-ttl` (so a revocation reaches Hasura no
/// later than it reaches another authql instance); or 401.
pub async fn hasura(req: &Request, state: &AppState) -> Response {
    let principal = match resolve(req, state).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal.into_response(),
    };
    let remaining = (principal.expires_at() - state.auth.clock().now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let max_age = remaining.min(state.cache_ttl).as_secs();
    let body = serde_json::json!({
        "X-Hasura-User-Id": principal.user.id.to_string(),
        "X-Hasura-Role": "user",
        "Cache-Control": format!("max-age={max_age}"),
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CACHE_CONTROL, "no-store")
        .content_type("application/json")
        .body(body.to_string())
}

async fn resolve(req: &Request, state: &AppState) -> Result<std::sync::Arc<Principal>, Refusal> {
    let credential = request_credential(req, state).map_err(|CrossOrigin| Refusal::CrossOrigin)?;
    let sent = !matches!(credential, Credential::Missing);
    match state.auth.authenticate(&credential).await {
        Ok(principal) => Ok(principal),
        Err(AuthError::Unauthenticated(reason)) => Err(Refusal::Unauthenticated { reason, sent }),
        Err(err) => {
            tracing::error!(error = ?err, "forward authentication failed");
            Err(Refusal::Internal)
        }
    }
}

enum Refusal {
    /// `sent`: a credential came with the request (and was refused).
    Unauthenticated {
        reason: Unauthenticated,
        sent: bool,
    },
    /// The session cookie, sent from an origin that may not use it.
    CrossOrigin,
    Internal,
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated { reason, sent } => {
                let (challenge, text) = challenge(reason, sent);
                text.with_status(StatusCode::UNAUTHORIZED)
                    .with_header(header::WWW_AUTHENTICATE, challenge)
                    .with_header(header::CACHE_CONTROL, "no-store")
                    .into_response()
            }
            Self::CrossOrigin => "cross-origin request"
                .with_status(StatusCode::FORBIDDEN)
                .with_header(header::CACHE_CONTROL, "no-store")
                .into_response(),
            Self::Internal => "internal error"
                .with_status(StatusCode::INTERNAL_SERVER_ERROR)
                .with_header(header::CACHE_CONTROL, "no-store")
                .into_response(),
        }
    }
}

/// RFC 6750 §3: no error code when the request carried no credential,
/// `invalid_token` when it carried one that was refused.
fn challenge(reason: Unauthenticated, sent: bool) -> (&'static str, &'static str) {
    if !sent {
        return ("Bearer", "missing token");
    }
    match reason {
        Unauthenticated::TokenExpired => (
            r#"Bearer error="invalid_token", error_description="the token expired""#,
            "token expired",
        ),
        Unauthenticated::MissingToken | Unauthenticated::InvalidToken => (
            r#"Bearer error="invalid_token", error_description="the token is invalid""#,
            "invalid token",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_error_code_without_a_credential() {
        assert_eq!(challenge(Unauthenticated::MissingToken, false).0, "Bearer");
        for reason in [Unauthenticated::InvalidToken, Unauthenticated::TokenExpired] {
            assert!(challenge(reason, true)
                .0
                .starts_with(r#"Bearer error="invalid_token""#));
        }
    }
}
