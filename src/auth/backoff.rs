//! The per-account backoff, kept in the database so every instance agrees:
//! counting failed password checks (atomically, across instances) and
//! refusing attempts while the wait runs. Login and password change share it.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use super::{throttle, AuthService};
use crate::db::entities::user;
use crate::error::AuthError;

/// Compare-and-set rounds before an attempt under heavy contention gives up.
const RESERVE_ATTEMPTS: usize = 5;

impl AuthService {
    /// Starts a password check on `account`: refuses it while the backoff
    /// runs; once the account is in backoff, counts it as a failure before
    /// the check, with a compare-and-set on the count so that concurrent
    /// attempts on any number of instances cannot all pass one backoff check
    /// (a success resets the count). Returns whether it was counted.
    pub(super) async fn begin_attempt(
        &self,
        account: &user::Model,
        now: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        let (mut failures, mut last) = (account.failed_logins, account.last_failed_login);
        for _ in 0..RESERVE_ATTEMPTS {
            throttle::check_backoff(failures, last, now)?;
            let effective = throttle::effective_failures(failures, last, now);
            if effective < throttle::FREE_FAILURES {
                return Ok(false);
            }
            let reserved = user::Entity::update_many()
                .col_expr(
                    user::Column::FailedLogins,
                    Expr::value(effective.saturating_add(1)),
                )
                .col_expr(user::Column::LastFailedLogin, Expr::value(now))
                .filter(user::Column::Id.eq(account.id))
                .filter(user::Column::FailedLogins.eq(failures))
                .exec(&self.db)
                .await?
                .rows_affected
                == 1;
            if reserved {
                return Ok(true);
            }
            // Another attempt counted first: look again.
            let fresh = user::Entity::find_by_id(account.id)
                .one(&self.db)
                .await?
                .ok_or(AuthError::InvalidCredentials)?;
            (failures, last) = (fresh.failed_logins, fresh.last_failed_login);
        }
        Err(AuthError::RateLimited { retry_after: 1 })
    }

    /// Counts one failed password check, atomically, so that concurrent
    /// failures on several instances are all counted (starting again at 1
    /// when the previous failure is forgotten).
    pub(super) async fn record_failure(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let forgotten_before = now
            - chrono::Duration::from_std(throttle::FAILURE_MEMORY).unwrap_or(chrono::Duration::MAX);
        let next_count = Expr::case(
            Expr::col(user::Column::LastFailedLogin).lt(forgotten_before),
            1,
        )
        .finally(Expr::col(user::Column::FailedLogins).add(1));
        user::Entity::update_many()
            .col_expr(user::Column::FailedLogins, next_count.into())
            .col_expr(user::Column::LastFailedLogin, Expr::value(now))
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Resets the failure count after a right password.
    pub(super) async fn reset_failures(&self, user_id: i64) -> Result<(), AuthError> {
        user::Entity::update_many()
            .col_expr(user::Column::FailedLogins, Expr::value(0))
            .col_expr(
                user::Column::LastFailedLogin,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
