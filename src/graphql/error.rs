//! The one boundary where errors become what clients see. Domain errors
//! ([`AuthError`]) and refusals of a request (by a bound of the document,
//! or by the HTTP layer before GraphQL runs) become GraphQL errors here, and
//! only here, with their `extensions`: `code` always, and `reason`,
//! `reasons`, `retryAfter` or `challenge` where the spec gives them.

use async_graphql::{ErrorExtensionValues, ErrorExtensions as _, ServerError};

use crate::error::AuthError;

impl From<AuthError> for async_graphql::Error {
    fn from(err: AuthError) -> Self {
        if let AuthError::Internal(cause) = &err {
            // The only place an internal failure is reported in full.
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        async_graphql::Error::new(err.message()).extend_with(|_, ext| {
            ext.set("code", err.code());
            match &err {
                AuthError::Unauthenticated(reason) => ext.set("reason", reason.as_str()),
                AuthError::RateLimited { retry_after } => ext.set("retryAfter", *retry_after),
                AuthError::BadUserInput { reasons, .. } => ext.set("reasons", reasons.clone()),
                AuthError::MfaRequired { challenge } => ext.set("challenge", challenge.expose()),
                _ => {}
            }
        })
    }
}

/// A request refused before it ran, by one of the request's bounds: a
/// stable reason (in `extensions.reasons`, under `BAD_USER_INPUT`) and a
/// sentence that names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

/// The code and message Apollo's clients look for before they send the
/// text of a persisted query.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";

impl Refused {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A hash-only request for a query this server does not hold.
    pub fn not_found_persisted() -> Self {
        Self::new(PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")
    }

    pub fn is_persisted_query_not_found(&self) -> bool {
        self.reason == PERSISTED_QUERY_NOT_FOUND
    }

    /// The refusal as the whole answer to its request.
    pub fn into_response(self) -> async_graphql::Response {
        let mut error = ServerError::new(self.message, None);
        error.extensions = Some(if self.reason == PERSISTED_QUERY_NOT_FOUND {
            // Exactly what Apollo's clients expect: the code, no reasons.
            let mut extensions = ErrorExtensionValues::default();
            extensions.set("code", PERSISTED_QUERY_NOT_FOUND);
            extensions
        } else {
            refusal_extensions(self.reason)
        });
        async_graphql::Response::from_errors(vec![error])
    }
}

/// The answer to a cookie-authenticated request from an origin that may
/// not use the cookie.
pub fn forbidden_cross_origin() -> async_graphql::Response {
    let mut error = ServerError::new(
        "the session cookie cannot be used from this origin; send the token in the Authorization header",
        None,
    );
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", "FORBIDDEN");
    extensions.set("reason", "CROSS_ORIGIN");
    error.extensions = Some(extensions);
    async_graphql::Response::from_errors(vec![error])
}

/// The answer to a request abandoned for taking too long (the cause is
/// logged where it is known).
pub fn internal_error() -> async_graphql::Response {
    AuthError::Internal(anyhow::anyhow!("request abandoned")).into_response()
}

impl AuthError {
    fn into_response(self) -> async_graphql::Response {
        let message = self.message();
        let mut error = ServerError::new(message, None);
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", self.code());
        error.extensions = Some(extensions);
        async_graphql::Response::from_errors(vec![error])
    }
}

/// Gives every error that async-graphql raised itself a code and a reason.
/// The shape bounds are checked before async-graphql runs, so what is left
/// is told apart by kind, not by its wording: an error of the document as a
/// whole (validation) has no path; an argument refused while a field ran
/// has one. Errors from resolvers carry their own codes already.
pub fn label_errors(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|ext| ext.get("code").is_some());
        if has_code {
            continue;
        }
        let reason = if error.path.is_empty() {
            "GRAPHQL_VALIDATION_FAILED"
        } else {
            "INVALID_ARGUMENT"
        };
        error.extensions = Some(refusal_extensions(reason));
    }
}

fn refusal_extensions(reason: &str) -> ErrorExtensionValues {
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", "BAD_USER_INPUT");
    extensions.set("reasons", vec![reason.to_owned()]);
    extensions
}
