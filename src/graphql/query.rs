//! Query resolvers: one call into `crate::auth` each.

use async_graphql::{Context, Object};

use super::context::request;
use super::types::{SessionObject, UserObject};
use crate::error::AuthError;

pub struct Query;

#[Object]
impl Query {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<UserObject, AuthError> {
        let principal = request(ctx)?.principal().await?;
        Ok(UserObject::from(&*principal.user))
    }

    /// The signed-in user's live sessions (unexpired tokens), newest first.
    async fn sessions(&self, ctx: &Context<'_>) -> Result<Vec<SessionObject>, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        let sessions = request.auth.sessions(&principal).await?;
        Ok(sessions
            .into_iter()
            .map(|s| SessionObject::new(s, principal.session_id))
            .collect())
    }
}
