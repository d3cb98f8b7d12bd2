//! What a resolver knows about its request: the caller and, resolved at most
//! once per HTTP request (even for a batch), the signed-in user.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::auth::{AuthService, ClientInfo, Credential, Principal};
use crate::error::{AuthError, Unauthenticated};

/// What the request's mutations did to the session cookie; the HTTP layer
/// turns the last one into `Set-Cookie` when the cookie is on.
#[derive(Debug)]
pub enum SessionCookie {
    Set {
        token: secrecy::SecretString,
        max_age: std::time::Duration,
    },
    Clear,
}

pub struct RequestContext {
    pub auth: Arc<AuthService>,
    pub credential: Credential,
    pub client: ClientInfo,
    /// The outcome of resolving the credential, refusals included, so that
    /// every field of the request sees the same answer and a refused token
    /// costs one lookup, not one per field. Internal errors are not kept:
    /// a later field may try again.
    principal: OnceCell<Result<Arc<Principal>, Unauthenticated>>,
    cookie: std::sync::Mutex<Option<SessionCookie>>,
}

impl RequestContext {
    pub fn new(auth: Arc<AuthService>, credential: Credential, client: ClientInfo) -> Self {
        Self {
            auth,
            credential,
            client,
            principal: OnceCell::new(),
            cookie: std::sync::Mutex::new(None),
        }
    }

    /// A session was issued: hand it out as the cookie too.
    pub fn issued(&self, issued: &crate::auth::Issued) {
        let max_age = (issued.expires_at - self.auth.clock().now())
            .to_std()
            .unwrap_or_default();
        let token = secrecy::SecretString::from(issued.token.expose().to_owned());
        self.change_cookie(SessionCookie::Set { token, max_age });
    }

    /// The session ended: clear the cookie.
    pub fn signed_out(&self) {
        self.change_cookie(SessionCookie::Clear);
    }

    fn change_cookie(&self, change: SessionCookie) {
        if let Ok(mut cookie) = self.cookie.lock() {
            *cookie = Some(change);
        }
    }

    /// The last change the request's mutations made to the cookie.
    pub fn take_cookie(&self) -> Option<SessionCookie> {
        self.cookie.lock().ok().and_then(|mut cookie| cookie.take())
    }

    /// The signed-in user, resolved on first use.
    ///
    /// # Errors
    /// `Unauthenticated` with the reason, or an internal error.
    pub async fn principal(&self) -> Result<Arc<Principal>, AuthError> {
        let outcome = self
            .principal
            .get_or_try_init(|| async {
                match self.auth.authenticate(&self.credential).await {
                    Ok(principal) => Ok(Ok(principal)),
                    Err(AuthError::Unauthenticated(reason)) => Ok(Err(reason)),
                    Err(other) => Err(other),
                }
            })
            .await?;
        outcome.clone().map_err(AuthError::Unauthenticated)
    }
}

/// The request's context, attached by the HTTP handler.
pub fn request<'a>(ctx: &async_graphql::Context<'a>) -> Result<&'a RequestContext, AuthError> {
    ctx.data::<Arc<RequestContext>>()
        .map(AsRef::as_ref)
        .map_err(|_| AuthError::Internal(anyhow::anyhow!("request context missing")))
}
