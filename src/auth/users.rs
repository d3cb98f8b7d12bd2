//! Managing users from the command line: create, list, set a password,
//! deactivate, activate, delete, turn TOTP off. Everything that takes
//! sessions away (a password set, a deactivation, a deletion, TOTP reset)
//! revokes every token of the user the way the server does: deleted in
//! the transaction that makes the change, announced to every PostgreSQL
//! instance by the same commit.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, SqlErr,
    TransactionTrait as _,
};

use super::passwords::Password;
use super::revocation;
use super::username::Username;
use super::{AuthService, User};
use crate::db::entities::{auth_token, user};
use crate::error::AuthError;

/// A user as `authql user list` shows it.
#[derive(Clone, Debug)]
pub struct UserListing {
    pub user: User,
    /// Sessions not past their expiry. A server with `token-idle-timeout`
    /// may still refuse an idle one at its next use: this process does not
    /// know that setting.
    pub live_sessions: u64,
}

impl AuthService {
    /// Creates an active user.
    ///
    /// # Errors
    /// `BadUserInput` for a bad or taken username, a bad email or a password
    /// the policy refuses.
    pub async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password: Password,
    ) -> Result<User, AuthError> {
        let username = Username::parse(username).map_err(|reasons| {
            AuthError::bad_input(
                "the username must be 1 to 150 letters, digits or @.+-_",
                reasons.into_iter().map(str::to_owned).collect(),
            )
        })?;
        let email = email.map(str::trim).filter(|e| !e.is_empty());
        if let Some(email) = email {
            if !looks_like_email(email) {
                return Err(AuthError::bad_input(
                    "the email address is not valid",
                    vec!["INVALID_EMAIL".into()],
                ));
            }
        }
        let password = self.check_policy(password, username.as_ref(), None)?;
        let hash = self.hasher().hash(&password).await?;
        let created = user::ActiveModel {
            username: Set(username.as_ref().to_owned()),
            email: Set(email.map(str::to_owned)),
            // The operator vouches for the address.
            email_verified_at: Set(email.map(|_| self.clock().now())),
            password_hash: Set(hash),
            is_active: Set(true),
            date_joined: Set(self.clock().now()),
            last_login: Set(None),
            failed_logins: Set(0),
            last_failed_login: Set(None),
            ..Default::default()
        }
        .insert(self.db())
        .await;
        match created {
            Ok(row) => {
                tracing::info!(event = "user_created", user_id = row.id, "user created");
                Ok(User::from(&row))
            }
            Err(err) if taken(&err) == Some(Taken::Email) => Err(AuthError::bad_input(
                "the email address belongs to another account",
                vec!["EMAIL_TAKEN".into()],
            )),
            Err(err) if taken(&err) == Some(Taken::Username) => Err(AuthError::bad_input(
                format!("the username {} is taken", username.as_ref()),
                vec!["USERNAME_TAKEN".into()],
            )),
            Err(err) => Err(err.into()),
        }
    }

    /// Sets a password without knowing the old one, and revokes every token
    /// of the user.
    ///
    /// # Errors
    /// `NotFound` for an unknown user, `BadUserInput` for a refused password.
    pub async fn set_password(&self, username: &str, password: Password) -> Result<u64, AuthError> {
        let account = self.find_user(username).await?;
        let password = self.check_policy(password, &account.username, None)?;
        let hash = self.hasher().hash(&password).await?;
        let change = user::ActiveModel {
            id: Set(account.id),
            password_hash: Set(hash),
            failed_logins: Set(0),
            last_failed_login: Set(None),
            ..Default::default()
        };
        let revoked = self.update_and_revoke_all(account.id, change).await?;
        tracing::info!(
            event = "password_set",
            user_id = account.id,
            revoked,
            "password set from the command line"
        );
        Ok(revoked)
    }

    /// Deactivates a user and revokes every token of the user.
    ///
    /// # Errors
    /// `NotFound` for an unknown user.
    pub async fn deactivate(&self, username: &str) -> Result<u64, AuthError> {
        let account = self.find_user(username).await?;
        let revoked = self.set_active(account.id, false).await?;
        tracing::info!(
            event = "user_deactivated",
            user_id = account.id,
            revoked,
            "user deactivated"
        );
        Ok(revoked)
    }

    /// Re-activates a deactivated user, who then signs in with the same
    /// password; `false` (and nothing changes) when the user is active.
    /// Any session still stored from before the deactivation is revoked
    /// and any mailed link killed: `deactivate` leaves none, but a row
    /// edited by hand might, and no token issued before a deactivation
    /// should work again.
    ///
    /// # Errors
    /// `NotFound` for an unknown user.
    pub async fn activate(&self, username: &str) -> Result<bool, AuthError> {
        let account = self.find_user(username).await?;
        if account.is_active {
            return Ok(false);
        }
        let revoked = self.set_active(account.id, true).await?;
        tracing::info!(
            event = "user_activated",
            user_id = account.id,
            revoked,
            "user activated"
        );
        Ok(true)
    }

    /// Every user, oldest first, with the number of live sessions.
    ///
    /// # Errors
    /// A database error.
    pub async fn list_users(&self) -> Result<Vec<UserListing>, AuthError> {
        let rows = user::Entity::find()
            .order_by_asc(user::Column::Id)
            .all(self.db())
            .await?;
        let sessions = self.live_sessions(None).await?;
        Ok(rows
            .iter()
            .map(|row| UserListing {
                user: User::from(row),
                live_sessions: sessions.get(&row.id).copied().unwrap_or(0),
            })
            .collect())
    }

    /// One user as [`list_users`](Self::list_users) shows it, for a command
    /// to show what it is about to change.
    ///
    /// # Errors
    /// `NotFound` for an unknown user.
    pub async fn describe_user(&self, username: &str) -> Result<UserListing, AuthError> {
        let row = self.find_user(username).await?;
        let sessions = self.live_sessions(Some(row.id)).await?;
        Ok(UserListing {
            user: User::from(&row),
            live_sessions: sessions.get(&row.id).copied().unwrap_or(0),
        })
    }

    /// Deletes the user `user_id` (an id, so that the user deleted is the
    /// one the operator confirmed, even if the name changed hands since)
    /// with its sessions, mailed links, recovery codes and MFA challenges,
    /// in one transaction; returns how many sessions were revoked. The
    /// foreign keys cascade too, but the sessions are deleted through the
    /// revocation path so that every instance's cache hears of it.
    ///
    /// # Errors
    /// `NotFound` when no such user exists (any more).
    pub async fn delete_user(&self, user_id: i64) -> Result<u64, AuthError> {
        let txn = self.db().begin().await?;
        let account = user::Entity::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or(AuthError::NotFound)?;
        Self::kill_links(&txn, user_id).await?;
        super::mfa::forget_second_factors(&txn, user_id).await?;
        let revoked = revocation::revoke_in(&txn, user_id, None).await?;
        let deleted = user::Entity::delete_by_id(user_id)
            .exec(&txn)
            .await?
            .rows_affected;
        if deleted != 1 {
            // Deleted by someone else meanwhile: roll back, say so.
            return Err(AuthError::NotFound);
        }
        txn.commit().await?;
        self.revoker().after_commit(user_id);
        tracing::info!(
            event = "user_deleted",
            user_id,
            username = account.username.as_str(),
            revoked,
            "user deleted"
        );
        Ok(revoked)
    }

    /// Live (unexpired) sessions per user: of every user, or of one.
    async fn live_sessions(&self, of: Option<i64>) -> Result<HashMap<i64, u64>, AuthError> {
        let mut query = auth_token::Entity::find()
            .select_only()
            .column(auth_token::Column::UserId)
            .column_as(
                Expr::expr(Func::count(Expr::col(auth_token::Column::Id))),
                "sessions",
            )
            .filter(auth_token::Column::ExpiresAt.gt(self.clock().now()))
            .group_by(auth_token::Column::UserId);
        if let Some(user_id) = of {
            query = query.filter(auth_token::Column::UserId.eq(user_id));
        }
        let counts: Vec<(i64, i64)> = query.into_tuple().all(self.db()).await?;
        Ok(counts
            .into_iter()
            .map(|(user_id, count)| (user_id, u64::try_from(count).unwrap_or(0)))
            .collect())
    }

    /// Sets whether the user is active, revoking every token of the user.
    async fn set_active(&self, user_id: i64, active: bool) -> Result<u64, AuthError> {
        let change = user::ActiveModel {
            id: Set(user_id),
            is_active: Set(active),
            ..Default::default()
        };
        self.update_and_revoke_all(user_id, change).await
    }

    /// Applies `change` to a user and revokes every token of the user, in
    /// one transaction; returns how many tokens were revoked.
    async fn update_and_revoke_all(
        &self,
        user_id: i64,
        change: user::ActiveModel,
    ) -> Result<u64, AuthError> {
        let txn = self.db().begin().await?;
        change.update(&txn).await?;
        // A password set or an account deactivated kills its mailed links.
        Self::kill_links(&txn, user_id).await?;
        let revoked = revocation::revoke_in(&txn, user_id, None).await?;
        txn.commit().await?;
        self.revoker().after_commit(user_id);
        Ok(revoked)
    }

    /// Turns the user's TOTP off (secret, pending enrolment, recovery codes
    /// and open challenges) and revokes every token of the user. Needs no
    /// `secret-key`: it is how an operator lets in a user who lost the
    /// second factor, or who cannot sign in while the key is missing.
    ///
    /// # Errors
    /// `NotFound` for an unknown user.
    pub async fn reset_mfa(&self, username: &str) -> Result<(bool, u64), AuthError> {
        let account = self.find_user(username).await?;
        let was_on = account.totp_secret.is_some();
        let txn = self.db().begin().await?;
        user::ActiveModel {
            id: Set(account.id),
            totp_secret: Set(None),
            totp_pending: Set(None),
            ..Default::default()
        }
        .update(&txn)
        .await?;
        super::mfa::forget_second_factors(&txn, account.id).await?;
        let revoked = revocation::revoke_in(&txn, account.id, None).await?;
        txn.commit().await?;
        self.revoker().after_commit(account.id);
        tracing::info!(
            event = "mfa_reset",
            user_id = account.id,
            was_on,
            revoked,
            "TOTP reset from the command line"
        );
        Ok((was_on, revoked))
    }

    /// How many users exist.
    ///
    /// # Errors
    /// A database error.
    pub async fn count_users(&self) -> Result<u64, AuthError> {
        Ok(user::Entity::find().count(self.db()).await?)
    }

    async fn find_user(&self, username: &str) -> Result<user::Model, AuthError> {
        let name = Username::parse(username).map_err(|_| AuthError::NotFound)?;
        user::Entity::find()
            .filter(user::Column::Username.eq(name.as_ref()))
            .one(self.db())
            .await?
            .ok_or(AuthError::NotFound)
    }
}

/// Which unique column an insert or update collided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Taken {
    Username,
    Email,
}

/// Tells a taken address from a taken username by the index named in the
/// error (`idx_users_email_lower` on both backends).
pub(super) fn taken(err: &sea_orm::DbErr) -> Option<Taken> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) if message.contains("email") => {
            Some(Taken::Email)
        }
        Some(SqlErr::UniqueConstraintViolation(_)) => Some(Taken::Username),
        _ => None,
    }
}

/// One `@` with something on both sides and a dot in the domain: enough to
/// catch typos without refusing valid addresses.
pub(super) fn looks_like_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && email.len() <= 254
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_email;

    #[test]
    fn plausible_emails_pass_and_typos_do_not() {
        assert!(looks_like_email("a@example.com"));
        assert!(!looks_like_email("a.example.com"));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("a@@b.com"));
        assert!(!looks_like_email("a b@c.com"));
    }
}
