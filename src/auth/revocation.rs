//! Revocation: delete token rows, then make every cache forget them.
//!
//! This instance's cache is told at once (after the commit). On PostgreSQL
//! the same transaction sends `NOTIFY authql_revocations, '<user id>'`, so
//! every instance listening (see `crate::auth::listener`) drops that user's
//! entries too; the notification is delivered only if the delete commits.
//! The notice means "forget what you cached about this user", so changes
//! to a user's cached record that revoke nothing (an address verified or
//! changed) send it too ([`announce_in`]).
//!
//! A revocation asked for by a signed-in request runs only while the
//! request's own session still exists, checked by the deleting statement
//! itself (see [`session_alive`]): the request was authenticated when it
//! began, and by now its session may be gone, revoked by a password change
//! or by another device. Such a request must not revoke the sessions that
//! came after.

use sea_orm::sea_query::ExprTrait as _;
use sea_orm::sea_query::{Alias, Condition, Expr, Query, SimpleExpr};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait as _,
    QueryFilter as _, Statement, TransactionTrait as _,
};

use super::cache::TokenCache;
use super::Principal;
use crate::db::entities::auth_token;
use crate::error::{AuthError, Unauthenticated};

/// The PostgreSQL channel revocations are announced on.
pub const CHANNEL: &str = "authql_revocations";

#[derive(Clone)]
pub struct Revoker {
    db: DatabaseConnection,
    cache: TokenCache,
}

impl Revoker {
    pub fn new(db: DatabaseConnection, cache: TokenCache) -> Self {
        Self { db, cache }
    }

    /// Deletes the tokens of `user_id` that match `condition` (all of them
    /// when it is `None`); returns how many there were.
    ///
    /// # Errors
    /// A database error; then nothing was revoked.
    pub async fn revoke(&self, user_id: i64, condition: Option<SimpleExpr>) -> Result<u64, DbErr> {
        let txn = self.db.begin().await?;
        let deleted = revoke_in(&txn, user_id, condition).await?;
        txn.commit().await?;
        self.cache.revoke_user(user_id);
        Ok(deleted)
    }

    /// [`revoke`](Self::revoke) on behalf of the session `principal` acts
    /// through: only while that session still exists.
    ///
    /// # Errors
    /// `Unauthenticated(InvalidToken)` when the session is gone (then
    /// nothing was revoked), or a database error.
    pub async fn revoke_on_behalf_of(
        &self,
        principal: &Principal,
        condition: Option<SimpleExpr>,
    ) -> Result<u64, AuthError> {
        let txn = self.db.begin().await?;
        let Some(deleted) = revoke_in_on_behalf_of(&txn, principal, condition).await? else {
            // Dropping the transaction rolls it back, notification and all.
            return Err(self.session_gone(principal));
        };
        txn.commit().await?;
        self.cache.revoke_user(principal.user.id);
        Ok(deleted)
    }

    /// The refusal for a request whose session was revoked while it ran:
    /// the answer the same token gets on its next request. Its cache entry
    /// may still be here (another instance's revocation not heard yet); the
    /// cache is keyed by token digest, which a principal does not carry, so
    /// every entry of the user is dropped (each costs one database read).
    pub fn session_gone(&self, principal: &Principal) -> AuthError {
        self.cache.revoke_user(principal.user.id);
        tracing::info!(
            user_id = principal.user.id,
            session_id = principal.session_id,
            "request refused: its session was revoked while it ran"
        );
        AuthError::Unauthenticated(Unauthenticated::InvalidToken)
    }

    /// Tells this instance's cache that `user_id` lost tokens in a
    /// transaction that [`revoke_in`] ran and the caller committed.
    pub fn after_commit(&self, user_id: i64) {
        self.cache.revoke_user(user_id);
    }
}

/// Deletes and announces inside the caller's transaction, for changes that
/// must commit together with the revocation (a new password hash). Call
/// [`Revoker::after_commit`] once committed.
///
/// # Errors
/// A database error.
pub async fn revoke_in<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    condition: Option<SimpleExpr>,
) -> Result<u64, DbErr> {
    let mut filter = Condition::all().add(auth_token::Column::UserId.eq(user_id));
    if let Some(condition) = condition {
        filter = filter.add(condition);
    }
    let deleted = auth_token::Entity::delete_many()
        .filter(filter)
        .exec(txn)
        .await?
        .rows_affected;
    announce_in(txn, user_id).await?;
    Ok(deleted)
}

/// Tells every instance, once the caller's transaction commits, to forget
/// what its cache holds about `user_id` (on PostgreSQL; elsewhere there is
/// no one to tell). A revocation sends it; so does any change to what a
/// cached entry carries about the user (the address, whether it is
/// verified), so that no instance serves the old value for `cache-ttl`.
/// Call [`Revoker::after_commit`] once committed, for this instance.
///
/// # Errors
/// A database error.
pub async fn announce_in<C: ConnectionTrait>(txn: &C, user_id: i64) -> Result<(), DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), user_id.to_string().into()],
        ))
        .await?;
    }
    Ok(())
}

/// True while the session `principal` acts through exists: a condition for
/// any statement made on its behalf. Checked inside that statement, it is
/// race-free: on PostgreSQL a statement sees one snapshot (under READ
/// COMMITTED), so a revocation either committed before it (the session is
/// gone, nothing matches) or did not (the statement sees neither the
/// revocation nor any session created with it); SQLite runs writes one at a
/// time. Session ids are never reused (AUTOINCREMENT, sequences).
pub fn session_alive(principal: &Principal) -> SimpleExpr {
    let acting = Alias::new("acting");
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from_as(auth_token::Entity, acting.clone())
            .and_where(Expr::col((acting.clone(), auth_token::Column::Id)).eq(principal.session_id))
            .and_where(Expr::col((acting, auth_token::Column::UserId)).eq(principal.user.id))
            .to_owned(),
    )
}

/// [`revoke_in`] on behalf of the session `principal` acts through: deletes
/// only while that session exists. Returns `None` when it is gone; then the
/// caller must not commit.
///
/// # Errors
/// A database error.
pub async fn revoke_in_on_behalf_of<C: ConnectionTrait>(
    txn: &C,
    principal: &Principal,
    condition: Option<SimpleExpr>,
) -> Result<Option<u64>, DbErr> {
    let alive = session_alive(principal);
    let condition = match condition {
        Some(condition) => condition.and(alive),
        None => alive,
    };
    let deleted = revoke_in(txn, principal.user.id, Some(condition)).await?;
    // Nothing deleted: nothing matched, or the session is gone. A session
    // gone now was gone then too (ids are not reused).
    if deleted == 0 && !is_alive(txn, principal).await? {
        return Ok(None);
    }
    Ok(Some(deleted))
}

/// Whether the session `principal` acts through exists now.
///
/// # Errors
/// A database error.
pub async fn is_alive<C: ConnectionTrait>(conn: &C, principal: &Principal) -> Result<bool, DbErr> {
    Ok(auth_token::Entity::find_by_id(principal.session_id)
        .filter(auth_token::Column::UserId.eq(principal.user.id))
        .one(conn)
        .await?
        .is_some())
}
