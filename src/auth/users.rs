//! Managing users from the command line: create, set a password,
//! deactivate, turn TOTP off. The last three revoke every token of the user.

use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, SqlErr, TransactionTrait as _,
};

use super::passwords::Password;
use super::revocation;
use super::username::Username;
use super::{AuthService, User};
use crate::db::entities::user;
use crate::error::AuthError;

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
        let change = user::ActiveModel {
            id: Set(account.id),
            is_active: Set(false),
            ..Default::default()
        };
        let revoked = self.update_and_revoke_all(account.id, change).await?;
        tracing::info!(
            event = "user_deactivated",
            user_id = account.id,
            revoked,
            "user deactivated"
        );
        Ok(revoked)
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

/// One `@` with something on both sides and a dot in the domain: enough to
/// catch typos without refusing valid addresses.
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
