//! Periodic housekeeping: deletes expired tokens, expired MFA challenges
//! and the shared throttle's rows that remember nothing any more, in small
//! batches (short transactions, no long locks, on both backends), and lets
//! the in-memory login throttle forget idle keys.

use std::time::Duration;

use sea_orm::{
    ColumnTrait as _, Condition, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _,
    QuerySelect as _,
};

use super::AuthService;
use crate::db::entities::{auth_token, link_token, mfa_challenge};

/// How often housekeeping runs.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Expired tokens deleted per statement.
pub const BATCH: u64 = 500;

/// Runs until the task is aborted, first one [`INTERVAL`] after start.
///
/// Nothing at start-up needs a sweep: an expired, idle or forgotten row is
/// refused or ignored whether or not it is gone. A pass at start, run
/// whenever the runtime got to it, raced the first requests instead: on a
/// loaded machine it swept rows that tests had just made and meant to
/// count.
pub async fn run(auth: std::sync::Arc<AuthService>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        auth.throttle().forget_idle();
        match sweep_expired(auth.db(), auth.clock().now()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired tokens swept"),
            Err(err) => tracing::warn!(error = %err, "expired-token sweep failed"),
        }
        if let Some(idle) = auth.idle_timeout() {
            let cutoff = auth.clock().now() - idle - auth.last_used().lag();
            match sweep_idle(auth.db(), cutoff).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "idle tokens swept"),
                Err(err) => tracing::warn!(error = %err, "idle-token sweep failed"),
            }
        }
        match auth.throttle_store().sweep(auth.clock().now()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "idle throttle rows swept"),
            Err(err) => tracing::warn!(error = %err, "throttle sweep failed"),
        }
        match sweep_expired_challenges(auth.db(), auth.clock().now()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired MFA challenges swept"),
            Err(err) => tracing::warn!(error = %err, "expired-challenge sweep failed"),
        }
        match sweep_expired_links(auth.db(), auth.clock().now()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired mailed links swept"),
            Err(err) => tracing::warn!(error = %err, "expired-link sweep failed"),
        }
    }
}

/// Deletes every mailed link (verification, reset, email change) expired
/// at `now`; returns how many.
///
/// # Errors
/// A database error.
pub async fn sweep_expired_links(
    db: &DatabaseConnection,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    Ok(link_token::Entity::delete_many()
        .filter(link_token::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?
        .rows_affected)
}

/// Deletes every token expired at `now`, `BATCH` at a time; returns how
/// many.
///
/// # Errors
/// A database error; the batches already deleted stay deleted.
pub async fn sweep_expired(
    db: &DatabaseConnection,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    sweep_tokens(
        db,
        Condition::all().add(auth_token::Column::ExpiresAt.lte(now)),
    )
    .await
}

/// Deletes every token last used before `cutoff` (a session older than
/// `lastUsedAt`: created before it), `BATCH` at a time; returns how many.
///
/// # Errors
/// A database error; the batches already deleted stay deleted.
pub async fn sweep_idle(
    db: &DatabaseConnection,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    sweep_tokens(db, idle_since(cutoff)).await
}

/// The sessions not used since `cutoff` (a session never used counts from
/// its creation).
pub(crate) fn idle_since(cutoff: chrono::DateTime<chrono::Utc>) -> Condition {
    Condition::any()
        .add(auth_token::Column::LastUsedAt.lt(cutoff))
        .add(
            Condition::all()
                .add(auth_token::Column::LastUsedAt.is_null())
                .add(auth_token::Column::CreatedAt.lt(cutoff)),
        )
}

async fn sweep_tokens(db: &DatabaseConnection, which: Condition) -> Result<u64, DbErr> {
    let mut total = 0;
    loop {
        let ids: Vec<i64> = auth_token::Entity::find()
            .select_only()
            .column(auth_token::Column::Id)
            .filter(which.clone())
            .limit(BATCH)
            .into_tuple()
            .all(db)
            .await?;
        if ids.is_empty() {
            return Ok(total);
        }
        let batch_len = ids.len() as u64;
        total += auth_token::Entity::delete_many()
            .filter(auth_token::Column::Id.is_in(ids))
            .exec(db)
            .await?
            .rows_affected;
        if batch_len < BATCH {
            return Ok(total);
        }
        // Let other writers in between batches.
        tokio::task::yield_now().await;
    }
}

/// Deletes every MFA challenge expired at `now`; returns how many. One
/// statement: challenges live minutes, so there are never many.
///
/// # Errors
/// A database error.
pub async fn sweep_expired_challenges(
    db: &DatabaseConnection,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    Ok(mfa_challenge::Entity::delete_many()
        .filter(mfa_challenge::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?
        .rows_affected)
}
