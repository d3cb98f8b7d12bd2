//! Sessions: issuing a token, the per-user session cap, listing a user's
//! sessions, and the three kinds of logout and revoking one session. Every
//! revocation made on behalf of a session runs only while that session lives.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _,
};

use super::tokens::Token;
use super::{AuthService, ClientInfo, Issued, Principal, Session, User};
use crate::db::entities::{auth_token, user};
use crate::error::AuthError;
use crate::metrics;

/// Longest user agent stored with a session.
const MAX_USER_AGENT_CHARS: usize = 512;

impl AuthService {
    /// Stores a new session and, with a session cap, revokes the oldest
    /// sessions beyond it (never refusing the login).
    pub(super) async fn issue<C: ConnectionTrait>(
        &self,
        conn: &C,
        account: &user::Model,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Issued, AuthError> {
        let token = Token::generate();
        let expires_at = now + self.token_ttl;
        let user_agent = client
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect::<String>());
        auth_token::ActiveModel {
            user_id: Set(account.id),
            digest: Set(token.digest().to_hex()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            user_agent: Set(user_agent),
            ip: Set(client.ip.map(|ip| ip.to_string())),
            last_used_at: Set(Some(now)),
            ..Default::default()
        }
        .insert(conn)
        .await?;
        Ok(Issued {
            token,
            expires_at,
            user: User::from(account),
        })
    }

    pub(super) async fn enforce_session_cap(
        &self,
        user_id: i64,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if self.max_sessions_per_user == 0 {
            return Ok(());
        }
        // A user has few sessions: read their ids and skip the newest in Rust
        // (SQLite has no OFFSET without LIMIT).
        let newest_first: Vec<i64> = auth_token::Entity::find()
            .select_only()
            .column(auth_token::Column::Id)
            .filter(auth_token::Column::UserId.eq(user_id))
            .order_by_desc(auth_token::Column::CreatedAt)
            .order_by_desc(auth_token::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?;
        let cap = usize::try_from(self.max_sessions_per_user).unwrap_or(usize::MAX);
        let beyond_cap: Vec<i64> = newest_first.into_iter().skip(cap).collect();
        if !beyond_cap.is_empty() {
            let revoked = self
                .revoker
                .revoke(user_id, Some(auth_token::Column::Id.is_in(beyond_cap)))
                .await?;
            audit!(
                "session_revoked",
                client,
                user_id,
                count = revoked,
                reason = "session_cap",
                "oldest sessions revoked by the session cap"
            );
            metrics::revoked("session_cap", revoked);
        }
        Ok(())
    }

    /// The user's live sessions, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn sessions(&self, principal: &Principal) -> Result<Vec<Session>, AuthError> {
        let rows = auth_token::Entity::find()
            .filter(auth_token::Column::UserId.eq(principal.user.id))
            .filter(auth_token::Column::ExpiresAt.gt(self.clock.now()))
            .order_by_desc(auth_token::Column::CreatedAt)
            .order_by_desc(auth_token::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Session {
                id: row.id,
                created_at: row.created_at,
                expires_at: row.expires_at,
                user_agent: row.user_agent,
                ip: row.ip,
                last_used_at: row.last_used_at.unwrap_or(row.created_at),
            })
            .collect())
    }

    /// Revokes the token of this request. Never answers `false`: a session
    /// revoked since the request began is refused as `INVALID_TOKEN`, the
    /// answer the same token gets on its next request.
    ///
    /// # Errors
    /// `Unauthenticated` when the session is gone, or a database error.
    pub async fn logout(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let revoked = self
            .revoker
            .revoke_on_behalf_of(
                principal,
                Some(auth_token::Column::Id.eq(principal.session_id)),
            )
            .await?;
        audit!(
            "logout",
            client,
            user_id = principal.user.id,
            session_id = principal.session_id,
            "logged out"
        );
        metrics::revoked("logout", revoked);
        Ok(revoked > 0)
    }

    /// Revokes every token of the user; returns how many.
    ///
    /// # Errors
    /// `Unauthenticated` when this request's session was revoked since it
    /// began, or a database error.
    pub async fn logout_all(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let revoked = self.revoker.revoke_on_behalf_of(principal, None).await?;
        audit!(
            "logout_all",
            client,
            user_id = principal.user.id,
            count = revoked,
            "logged out everywhere"
        );
        metrics::revoked("logout_all", revoked);
        Ok(revoked)
    }

    /// Revokes every token of the user but this request's; returns how many.
    ///
    /// # Errors
    /// `Unauthenticated` when this request's session was revoked since it
    /// began, or a database error.
    pub async fn logout_others(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let revoked = self
            .revoker
            .revoke_on_behalf_of(
                principal,
                Some(auth_token::Column::Id.ne(principal.session_id)),
            )
            .await?;
        audit!(
            "logout_others",
            client,
            user_id = principal.user.id,
            count = revoked,
            "other sessions logged out"
        );
        metrics::revoked("logout_others", revoked);
        Ok(revoked)
    }

    /// Revokes one of the user's sessions by id.
    ///
    /// # Errors
    /// `NotFound` when the id is not one of the user's sessions,
    /// `Unauthenticated` when this request's session was revoked since it
    /// began.
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let id: i64 = id.parse().map_err(|_| AuthError::NotFound)?;
        let revoked = self
            .revoker
            .revoke_on_behalf_of(principal, Some(auth_token::Column::Id.eq(id)))
            .await?;
        if revoked == 0 {
            return Err(AuthError::NotFound);
        }
        audit!(
            "session_revoked",
            client,
            user_id = principal.user.id,
            session_id = id,
            "session revoked"
        );
        metrics::revoked("revoke_session", revoked);
        Ok(true)
    }
}
