//! `Session.lastUsedAt`, written off the request path: a request only notes
//! its session in memory (at most once per `last-used-interval` per
//! session), and a background task writes the notes in one transaction
//! every second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, Condition, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _,
    TransactionTrait as _,
};

use crate::db::entities::auth_token;

/// How often the notes are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct LastUsed {
    interval: chrono::Duration,
    /// Sessions used since the last write, with when.
    pending: Mutex<HashMap<i64, DateTime<Utc>>>,
    /// When this instance last noted each session.
    noted: Mutex<HashMap<i64, DateTime<Utc>>>,
}

impl LastUsed {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX),
            pending: Mutex::default(),
            noted: Mutex::default(),
        }
    }

    /// A request used `session`, last known used at `known`: note it unless
    /// that was less than `last-used-interval` ago.
    pub fn used(&self, session: i64, known: DateTime<Utc>, now: DateTime<Utc>) {
        if now - known < self.interval {
            return;
        }
        let Ok(mut noted) = self.noted.lock() else {
            return;
        };
        if noted
            .get(&session)
            .is_some_and(|at| now - *at < self.interval)
        {
            return;
        }
        noted.insert(session, now);
        drop(noted);
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(session, now);
        }
    }

    /// The latest use this instance knows of beyond `known`.
    pub fn latest(&self, session: i64, known: DateTime<Utc>) -> DateTime<Utc> {
        self.noted
            .lock()
            .ok()
            .and_then(|noted| noted.get(&session).copied())
            .map_or(known, |at| at.max(known))
    }

    /// How far behind the database may be on a session another instance
    /// is using: a use is written only once per interval, and a second or
    /// so after it.
    pub fn lag(&self) -> chrono::Duration {
        self.interval + chrono::Duration::from_std(FLUSH_EVERY * 2).unwrap_or_default()
    }

    /// Writes the pending notes in one transaction (a row only moves
    /// forward); forgets notes older than the interval.
    ///
    /// # Errors
    /// A database error; the notes are then dropped (the next use notes
    /// the session again).
    pub async fn flush(&self, db: &DatabaseConnection, now: DateTime<Utc>) -> Result<usize, DbErr> {
        let pending = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Ok(0),
        };
        if let Ok(mut noted) = self.noted.lock() {
            noted.retain(|_, at| now - *at < self.interval);
        }
        if pending.is_empty() {
            return Ok(0);
        }
        let txn = db.begin().await?;
        for (session, at) in &pending {
            auth_token::Entity::update_many()
                .col_expr(auth_token::Column::LastUsedAt, Expr::value(*at))
                .filter(auth_token::Column::Id.eq(*session))
                .filter(
                    Condition::any()
                        .add(auth_token::Column::LastUsedAt.is_null())
                        .add(auth_token::Column::LastUsedAt.lt(*at)),
                )
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(pending.len())
    }
}

/// Writes the notes every [`FLUSH_EVERY`] until the task is aborted.
pub async fn run(auth: std::sync::Arc<super::AuthService>) {
    let mut ticks = tokio::time::interval(FLUSH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = auth.last_used().flush(auth.db(), auth.clock().now()).await {
            tracing::warn!(error = %err, "writing lastUsedAt failed");
        }
    }
}
