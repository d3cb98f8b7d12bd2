//! Revocation: delete token rows, then make every cache forget them.
//!
//! This instance's cache is told at once (after the commit). On PostgreSQL
//! the same transaction sends `NOTIFY authql_revocations, '<user id>'`, so
//! every instance listening (see `crate::auth::listener`) drops that user's
//! entries too; the notification is delivered only if the delete commits.

use sea_orm::sea_query::{Condition, SimpleExpr};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait as _,
    QueryFilter as _, Statement, TransactionTrait as _,
};

use super::cache::TokenCache;
use crate::db::entities::auth_token;

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
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), user_id.to_string().into()],
        ))
        .await?;
    }
    Ok(deleted)
}
