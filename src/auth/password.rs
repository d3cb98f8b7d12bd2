//! Changing the password (after checking the current one, counted by the
//! backoff), and the password policy as the domain applies it.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, TransactionTrait as _};

use super::passwords::{NewPassword, Password};
use super::{hashing_error, revocation, AuthService, ClientInfo, Issued, Principal};
use crate::db::entities::user;
use crate::error::AuthError;
use crate::metrics;

impl AuthService {
    /// Changes the password after checking the old one, revokes every token
    /// of the user and returns a fresh one.
    ///
    /// # Errors
    /// `WrongCurrentPassword` (counted by the account backoff), `RateLimited`,
    /// `BadUserInput` with every failed policy rule, `Unauthenticated` when
    /// this request's session was revoked since it began, or an internal
    /// error.
    pub async fn change_password(
        &self,
        principal: &Principal,
        old: &Password,
        new: Password,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let now = self.clock.now();
        // A session revoked since the request began (or a user deactivated,
        // which revokes too) is refused before any password is checked; the
        // same limits as login apply: a stolen token must not be an
        // unthrottled password oracle.
        let (account, _) = self
            .check_current_password(principal, old, client, "password_change_failed")
            .await?;
        let new = match self.check_policy(new, &account.username, Some(old)) {
            Ok(new) => new,
            Err(refused) => {
                // The current password was right: that resets the count.
                self.reset_failures(account.id).await?;
                return Err(refused);
            }
        };
        let hash = self.hasher.hash(&new).await.map_err(hashing_error)?;

        // The session may have been revoked during the hashing: the update
        // and the revocation each run only while it exists.
        let txn = self.db.begin().await?;
        let changed = user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash.as_str()))
            .col_expr(user::Column::FailedLogins, Expr::value(0))
            .col_expr(
                user::Column::LastFailedLogin,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(user::Column::Id.eq(account.id))
            .filter(user::Column::PasswordHash.eq(account.password_hash.as_str()))
            .filter(revocation::session_alive(principal))
            .exec(&txn)
            .await?
            .rows_affected;
        if changed == 0 {
            if !revocation::is_alive(&txn, principal).await? {
                return Err(self.revoker.session_gone(principal));
            }
            // Another change won the race; this one's old password is stale.
            return Err(AuthError::WrongCurrentPassword);
        }
        // A new password kills every mailed link (a reset link above all).
        Self::kill_links(&txn, account.id).await?;
        let Some(revoked) = revocation::revoke_in_on_behalf_of(&txn, principal, None).await? else {
            return Err(self.revoker.session_gone(principal));
        };
        let account = user::Model {
            password_hash: hash,
            failed_logins: 0,
            last_failed_login: None,
            ..account
        };
        let issued = self.issue(&txn, &account, client, now).await?;
        txn.commit().await?;
        self.revoker.after_commit(account.id);
        metrics::revoked("change_password", revoked);
        audit!(
            "password_changed",
            client,
            user_id = account.id,
            revoked,
            "password changed"
        );
        Ok(issued)
    }

    /// Applies the password policy, turning failures into `BadUserInput`.
    ///
    /// # Errors
    /// `BadUserInput` listing every failed rule.
    pub fn check_policy(
        &self,
        candidate: Password,
        username: &str,
        old: Option<&Password>,
    ) -> Result<NewPassword, AuthError> {
        NewPassword::parse(candidate, username, old, &self.policy).map_err(|failed| {
            let reasons = failed.iter().map(|v| v.code().to_owned()).collect();
            let why: Vec<String> = failed.iter().map(|v| v.describe(&self.policy)).collect();
            AuthError::bad_input(
                format!("the new password was refused: {}", why.join("; ")),
                reasons,
            )
        })
    }

    /// The signed-in user's row, while this request's session lives.
    pub(super) async fn signed_in_account(
        &self,
        principal: &Principal,
    ) -> Result<user::Model, AuthError> {
        user::Entity::find_by_id(principal.user.id)
            .filter(user::Column::IsActive.eq(true))
            .filter(revocation::session_alive(principal))
            .one(&self.db)
            .await?
            .ok_or_else(|| self.revoker.session_gone(principal))
    }

    /// Starts a check of a secret the signed-in user gives (the current
    /// password, or a code to confirm enrolment): the login limits, shared
    /// by every instance, then the account backoff. Returns whether the
    /// attempt was counted up front (in backoff).
    pub(super) async fn begin_check(
        &self,
        account: &user::Model,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        if let Err((limit, err)) = self
            .count_attempt(client.ip, &account.username, now)
            .await?
        {
            audit!("rate_limited", client, limit = ?limit, user_id = account.id, "refused by the rate limit");
            return Err(err);
        }
        self.begin_attempt(account, now).await.inspect_err(|_| {
            audit!(
                "rate_limited",
                client,
                limit = "account_backoff",
                user_id = account.id,
                "refused by the account backoff"
            );
        })
    }

    /// The signed-in user's row once `password` is checked as
    /// `changePassword` checks its `oldPassword`: the login limits, the
    /// account backoff, and a failure counted. The backoff is not reset.
    /// Also returns whether the attempt was counted up front (in backoff).
    pub(super) async fn check_current_password(
        &self,
        principal: &Principal,
        password: &Password,
        client: &ClientInfo,
        failed_event: &'static str,
    ) -> Result<(user::Model, bool), AuthError> {
        let now = self.clock.now();
        let account = self.signed_in_account(principal).await?;
        let counted = self.begin_check(&account, client, now).await?;
        if !self
            .hasher
            .verify(password, Some(&account.password_hash))
            .await
            .map_err(hashing_error)?
        {
            if !counted {
                self.record_failure(account.id, now).await?;
            }
            audit!(
                failed_event,
                client,
                user_id = account.id,
                "wrong current password"
            );
            return Err(AuthError::WrongCurrentPassword);
        }
        Ok((account, counted))
    }
}
