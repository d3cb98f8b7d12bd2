//! One-time link tokens, mailed to a user: verification (`aqv_`), password
//! reset (`aqr_`) and email change (`aqe_`). They have the session token's
//! format (so secret scanners know them and a mistyped one costs no
//! lookup), only their SHA-256 digests are stored, and each is single-use:
//! consuming one is a conditional DELETE whose affected-row count decides,
//! so of two concurrent uses exactly one wins. Issuing one deletes the
//! user's older links of the same purpose; a password change deletes them
//! all; an expired one is deleted when met and by the sweep.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set,
};

use super::tokens::Token;
use super::AuthService;
use crate::db::entities::link_token;
use crate::error::AuthError;

/// What a link is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Verify,
    Reset,
    EmailChange,
}

impl Purpose {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Verify => "aqv_",
            Self::Reset => "aqr_",
            Self::EmailChange => "aqe_",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::EmailChange => "email_change",
        }
    }
}

/// A link token found and still valid, not yet consumed.
#[derive(Debug)]
pub struct Link {
    pub id: i64,
    pub user_id: i64,
    pub email: Option<String>,
}

/// The one answer for a wrong, used or expired link.
pub fn invalid_link() -> AuthError {
    AuthError::bad_input(
        "the link is not valid: it is wrong, already used or expired",
        vec!["INVALID_LINK_TOKEN".into()],
    )
}

impl AuthService {
    /// Issues a link for `user_id`, killing the user's older links of the
    /// same purpose, in the caller's connection or transaction.
    ///
    /// # Errors
    /// A database error.
    pub(super) async fn issue_link<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: i64,
        purpose: Purpose,
        email: Option<&str>,
        ttl: chrono::Duration,
    ) -> Result<Token, AuthError> {
        let now = self.clock.now();
        link_token::Entity::delete_many()
            .filter(link_token::Column::UserId.eq(user_id))
            .filter(link_token::Column::Purpose.eq(purpose.as_str()))
            .exec(conn)
            .await?;
        let token = Token::generate_with(purpose.prefix());
        link_token::ActiveModel {
            user_id: Set(user_id),
            purpose: Set(purpose.as_str().to_owned()),
            digest: Set(token.digest().to_hex()),
            email: Set(email.map(str::to_owned)),
            created_at: Set(now),
            expires_at: Set(now + ttl),
            ..Default::default()
        }
        .insert(conn)
        .await?;
        Ok(token)
    }

    /// Finds a live link of `purpose` without consuming it (so that input
    /// can be checked first); an expired one is deleted on the way.
    ///
    /// # Errors
    /// `INVALID_LINK_TOKEN` for a malformed, unknown or expired token.
    pub(super) async fn find_link(&self, text: &str, purpose: Purpose) -> Result<Link, AuthError> {
        let token = Token::parse_with(text, purpose.prefix()).map_err(|_| invalid_link())?;
        let row = link_token::Entity::find()
            .filter(link_token::Column::Digest.eq(token.digest().to_hex()))
            .filter(link_token::Column::Purpose.eq(purpose.as_str()))
            .one(&self.db)
            .await?
            .ok_or_else(invalid_link)?;
        if row.expires_at <= self.clock.now() {
            link_token::Entity::delete_by_id(row.id)
                .exec(&self.db)
                .await?;
            return Err(invalid_link());
        }
        Ok(Link {
            id: row.id,
            user_id: row.user_id,
            email: row.email,
        })
    }

    /// Consumes a link found by [`find_link`](Self::find_link): one
    /// conditional DELETE, so only one of any number of concurrent uses
    /// succeeds (run it inside the transaction that applies the link).
    ///
    /// # Errors
    /// `INVALID_LINK_TOKEN` when another use won, or a database error.
    pub(super) async fn consume_link<C: ConnectionTrait>(
        conn: &C,
        link: &Link,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let deleted = link_token::Entity::delete_many()
            .filter(link_token::Column::Id.eq(link.id))
            .filter(link_token::Column::ExpiresAt.gt(now))
            .exec(conn)
            .await?
            .rows_affected;
        if deleted == 1 {
            Ok(())
        } else {
            Err(invalid_link())
        }
    }

    /// Deletes every link of a user: its password changed.
    ///
    /// # Errors
    /// A database error.
    pub(super) async fn kill_links<C: ConnectionTrait>(
        conn: &C,
        user_id: i64,
    ) -> Result<u64, AuthError> {
        Ok(link_token::Entity::delete_many()
            .filter(link_token::Column::UserId.eq(user_id))
            .exec(conn)
            .await?
            .rows_affected)
    }
}
