//! Resolving a request's credential to its signed-in user: the token cache
//! first, then the database. Every path checks expiry and that the user is
//! active; an expired token is removed when met.

use std::sync::Arc;

use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use super::cache::Lookup;
use super::last_used::LastUse;
use super::tokens::{Token, TokenDigest};
use super::{invalid_token, AuthService, Credential, Principal, User};
use crate::db::entities::{auth_token, user};
use crate::error::{AuthError, Unauthenticated};
use crate::metrics;

impl AuthService {
    /// Resolves a request's credential to its user: the cache first, then
    /// the database. Every path checks expiry and that the user is active.
    ///
    /// # Errors
    /// `Unauthenticated` with the reason, or a database error.
    pub async fn authenticate(&self, credential: &Credential) -> Result<Arc<Principal>, AuthError> {
        let result = self.resolve(credential).await;
        if let Err(AuthError::Unauthenticated(reason)) = &result {
            metrics::token_refused(reason.as_str());
        }
        result
    }

    async fn resolve(&self, credential: &Credential) -> Result<Arc<Principal>, AuthError> {
        use secrecy::ExposeSecret as _;
        let text = match credential {
            Credential::Missing => {
                return Err(AuthError::Unauthenticated(Unauthenticated::MissingToken))
            }
            Credential::Unsupported => return Err(invalid_token()),
            Credential::Token(text) => text,
        };
        // A token we could not have issued is refused without a lookup.
        let token = Token::parse(text.expose_secret()).map_err(|_| invalid_token())?;
        let digest = token.digest();
        let now = self.clock.now();
        if let Lookup::Hit(principal) = self.cache.get(&digest, now) {
            if principal.is_live_at(now) && !self.looks_idle(&principal, now) {
                self.last_used
                    .used(principal.session_id, &principal.last_used, now);
                metrics::token_resolved("cache");
                return Ok(principal);
            }
        }
        // Boxed: sea-orm's query futures are kilobytes, and every caller's
        // future (and each HTTP layer above it) would hold and copy them on
        // every request, cache hits included.
        Box::pin(self.resolve_from_database(digest, now)).await
    }

    async fn resolve_from_database(
        &self,
        digest: TokenDigest,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Arc<Principal>, AuthError> {
        let generation = self.cache.generation();
        let found = auth_token::Entity::find()
            .filter(auth_token::Column::Digest.eq(digest.to_hex()))
            .find_also_related(user::Entity)
            .one(&self.db)
            .await?;
        let Some((session, Some(owner))) = found else {
            return Err(invalid_token());
        };
        if session.expires_at <= now {
            self.forget_expired(session.id, &digest).await?;
            return Err(AuthError::Unauthenticated(Unauthenticated::TokenExpired));
        }
        if !owner.is_active {
            return Err(invalid_token());
        }
        if let Some(idle) = self.idle_timeout {
            // The database's view, with the lag of another instance's
            // writes allowed for: refused only when idle on every instance.
            let idle = idle + self.last_used.lag();
            let last = self.last_used.latest(
                session.id,
                session.last_used_at.unwrap_or(session.created_at),
            );
            if now - last >= idle && self.forget_if_idle(session.id, &digest, now - idle).await? {
                return Err(AuthError::Unauthenticated(Unauthenticated::TokenExpired));
            }
        }
        let principal = Arc::new(Principal::new(
            self.cache.share_user(User::from(&owner)),
            session.id,
            session.expires_at,
            LastUse::new(session.last_used_at.unwrap_or(session.created_at)),
        ));
        self.cache
            .insert(digest, Arc::clone(&principal), generation, now);
        self.last_used
            .used(principal.session_id, &principal.last_used, now);
        metrics::token_resolved("database");
        Ok(principal)
    }

    /// The cached view says idle: the database, which may know of use on
    /// another instance, decides. The lock-free view first; the notes of
    /// this instance only when that looks idle.
    fn looks_idle(&self, principal: &Principal, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.idle_timeout.is_some_and(|idle| {
            let known = principal.last_used.get();
            now - known >= idle && now - self.last_used.latest(principal.session_id, known) >= idle
        })
    }

    /// Removes the session if its row, as it is now, also shows no use
    /// since `cutoff`, in one statement: true if it did. The read before
    /// may be older than a use this instance wrote and forgot since (see
    /// `LastUsed::flush`), and a use written meanwhile keeps the session.
    async fn forget_if_idle(
        &self,
        session_id: i64,
        digest: &TokenDigest,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, AuthError> {
        let removed = auth_token::Entity::delete_many()
            .filter(auth_token::Column::Id.eq(session_id))
            .filter(super::sweeper::idle_since(cutoff))
            .exec(&self.db)
            .await?
            .rows_affected;
        if removed > 0 {
            self.cache.remove(digest);
        }
        Ok(removed > 0)
    }

    async fn forget_expired(&self, session_id: i64, digest: &TokenDigest) -> Result<(), AuthError> {
        self.cache.remove(digest);
        auth_token::Entity::delete_by_id(session_id)
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
