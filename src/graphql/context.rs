//! What a resolver knows about its request: the caller and, resolved at most
//! once per HTTP request (even for a batch), the signed-in user.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::auth::{AuthService, ClientInfo, Credential, Principal};
use crate::error::AuthError;

pub struct RequestContext {
    pub auth: Arc<AuthService>,
    pub credential: Credential,
    pub client: ClientInfo,
    principal: OnceCell<Arc<Principal>>,
}

impl RequestContext {
    pub fn new(auth: Arc<AuthService>, credential: Credential, client: ClientInfo) -> Self {
        Self {
            auth,
            credential,
            client,
            principal: OnceCell::new(),
        }
    }

    /// The signed-in user, resolved on first use.
    ///
    /// # Errors
    /// `Unauthenticated` with the reason, or an internal error.
    pub async fn principal(&self) -> Result<Arc<Principal>, AuthError> {
        self.principal
            .get_or_try_init(|| self.auth.authenticate(&self.credential))
            .await
            .cloned()
    }
}

/// The request's context, attached by the HTTP handler.
pub fn request<'a>(ctx: &async_graphql::Context<'a>) -> Result<&'a RequestContext, AuthError> {
    ctx.data::<Arc<RequestContext>>()
        .map(AsRef::as_ref)
        .map_err(|_| AuthError::Internal(anyhow::anyhow!("request context missing")))
}
