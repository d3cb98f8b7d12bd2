//! Login, in the spec's order: the rate limits, the account backoff,
//! the captcha, then the password; a refused attempt costs no bcrypt and no
//! call to the captcha service. A success completes in one transaction with
//! the new session, or, for a user with TOTP on, issues an MFA challenge
//! (the second step is `verify_mfa`, in `mfa.rs`).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, TransactionTrait as _};

use super::captcha::Verdict;
use super::passwords::Password;
use super::username::Username;
use super::{hashing_error, throttle, username, Attempted, AuthService, ClientInfo, Issued};
use crate::db::entities::user;
use crate::error::AuthError;
use crate::metrics;

impl AuthService {
    /// Exchanges credentials for a new token. Checks run in the spec's
    /// order: throttle (the rate limits, in memory then shared, then the
    /// account backoff),
    /// captcha, then password; a refused attempt costs no bcrypt and no call
    /// to the captcha service.
    ///
    /// # Errors
    /// `RateLimited`, a captcha error, `InvalidCredentials` or an internal
    /// error.
    pub async fn login(
        &self,
        username: &str,
        password: &Password,
        captcha: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let name = Username::parse(username).ok();
        // Throttle by the canonical name, so "Alice" and "ALICE" share a
        // budget; a name that cannot exist is cut to the longest real one, so
        // a flood of huge names cannot fill memory with huge keys.
        let key = name.as_ref().map_or_else(
            || {
                username
                    .chars()
                    .take(username::MAX_LEN)
                    .collect::<String>()
                    .to_lowercase()
            },
            |n| n.as_ref().to_owned(),
        );
        let username_hash = self.usernames_logged.hash(&key);
        let now = self.clock.now();
        // The name's backoff as an unknown name comes back with the rate
        // limit's one statement: an unknown name costs the round trips an
        // account does.
        let as_unknown = match self.count_attempt(client.ip, &key, now).await? {
            Ok(backoff) => backoff,
            Err((limit, err)) => {
                // Before the lookup: whether the name is an account is unknown.
                audit!("rate_limited", client, limit = ?limit, username_hash = %username_hash, "login refused by the rate limit");
                metrics::login("rate_limited");
                return Err(err);
            }
        };

        let account = match &name {
            Some(name) => {
                user::Entity::find()
                    .filter(user::Column::Username.eq(name.as_ref()))
                    .one(&self.db)
                    .await?
            }
            None => None,
        };
        let who = Attempted {
            username_hash: &username_hash,
            user_id: account.as_ref().map(|a| a.id),
            username: account.as_ref().map(|a| a.username.as_str()),
        };
        let refused_by_backoff = |err: AuthError| {
            audit!(
                "rate_limited",
                client,
                limit = "account_backoff",
                username_hash = who.username_hash,
                user_id = who.user_id,
                username = who.username,
                "login refused by the account backoff"
            );
            metrics::login("rate_limited");
            err
        };
        // A cheap look first, so that an attempt the backoff refuses costs
        // no call to the captcha service…
        match &account {
            Some(account) => {
                throttle::check_backoff(account.failed_logins, account.last_failed_login, now)
            }
            None => throttle::check_backoff(as_unknown.failures, as_unknown.last_failure, now),
        }
        .map_err(refused_by_backoff)?;
        self.check_captcha(captcha, &who, client).await?;
        // …then the atomic step that also counts the attempt when the
        // account is in backoff.
        let counted = match &account {
            Some(account) => self.begin_attempt(account, now).await,
            None => {
                self.throttle_store
                    .begin_unknown(&key, as_unknown, now)
                    .await
            }
        }
        .map_err(refused_by_backoff)?;

        let active = account.as_ref().filter(|a| a.is_active);
        let verified = self
            .hasher
            .verify(password, active.map(|a| a.password_hash.as_str()))
            .await
            .map_err(hashing_error)?;
        let Some(account) = active.filter(|_| verified) else {
            if !counted {
                match &account {
                    Some(account) => self.record_failure(account.id, now).await?,
                    None => {
                        self.throttle_store
                            .record_unknown_failure(&key, now)
                            .await?
                    }
                }
            }
            audit!(
                "login_failed",
                client,
                username_hash = who.username_hash,
                user_id = who.user_id,
                username = who.username,
                "login failed"
            );
            metrics::login("invalid_credentials");
            return Err(AuthError::InvalidCredentials);
        };

        if self.accounts.verification == crate::config::EmailVerification::Required
            && account.email_verified_at.is_none()
        {
            audit!(
                "login_refused",
                client,
                user_id = account.id,
                reason = "email_not_verified",
                "password right; address not verified"
            );
            metrics::login("email_not_verified");
            return Err(AuthError::EmailNotVerified);
        }
        if account.totp_secret.is_some() {
            // No token yet, and the backoff is not reset: only a passed
            // second step does that.
            let outcome = self.begin_second_step(account, now).await;
            let challenge = outcome.inspect_err(|_| metrics::login("mfa_unavailable"))?;
            audit!(
                "mfa_challenge_issued",
                client,
                user_id = account.id,
                username = account.username.as_str(),
                "password right; second factor required"
            );
            metrics::login("mfa_required");
            return Err(AuthError::MfaRequired { challenge });
        }
        let issued = self.complete_login(account, password, client, now).await?;
        audit!(
            "login_succeeded",
            client,
            username_hash = who.username_hash,
            user_id = issued.user.id,
            username = issued.user.username.as_str(),
            "login succeeded"
        );
        metrics::login("success");
        Ok(issued)
    }

    /// Records the success and stores the session in one transaction, on the
    /// condition that the password hash is still the one just verified: a
    /// login racing a password change cannot keep a session past it. When the
    /// hash did change, the password is verified once more against the new
    /// one, so that logins racing a mere re-hash (a cost upgrade by a
    /// parallel login) still succeed.
    async fn complete_login(
        &self,
        account: &user::Model,
        password: &Password,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Issued, AuthError> {
        let mut verified_hash = account.password_hash.clone();
        for _ in 0..2 {
            let new_hash = self
                .hasher
                .rehash_if_needed(password, &verified_hash)
                .await
                .map_err(hashing_error)?;
            let stored_hash = new_hash.clone().unwrap_or_else(|| verified_hash.clone());
            let success = user::Entity::update_many()
                .col_expr(user::Column::LastLogin, Expr::value(now))
                .col_expr(user::Column::FailedLogins, Expr::value(0))
                .col_expr(
                    user::Column::LastFailedLogin,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .col_expr(
                    user::Column::PasswordHash,
                    Expr::value(stored_hash.as_str()),
                )
                .filter(user::Column::Id.eq(account.id))
                .filter(user::Column::IsActive.eq(true))
                .filter(user::Column::PasswordHash.eq(verified_hash.as_str()));
            let txn = self.db.begin().await?;
            if success.exec(&txn).await?.rows_affected == 1 {
                if new_hash.is_some() {
                    tracing::info!(
                        user_id = account.id,
                        "password re-hashed at the configured bcrypt cost"
                    );
                }
                let signed_in = user::Model {
                    last_login: Some(now),
                    failed_logins: 0,
                    last_failed_login: None,
                    password_hash: stored_hash,
                    ..account.clone()
                };
                let issued = self.issue(&txn, &signed_in, client, now).await?;
                txn.commit().await?;
                self.enforce_session_cap(account.id, client).await?;
                return Ok(issued);
            }
            drop(txn);
            // Changed meanwhile: deactivated, a new password, or a re-hash.
            let Some(current) = user::Entity::find_by_id(account.id)
                .one(&self.db)
                .await?
                .filter(|a| a.is_active)
            else {
                break;
            };
            if !self
                .hasher
                .verify(password, Some(&current.password_hash))
                .await
                .map_err(hashing_error)?
            {
                break;
            }
            verified_hash = current.password_hash;
        }
        audit!(
            "login_failed",
            client,
            user_id = account.id,
            reason = "changed_during_login",
            "login lost a race with a password change"
        );
        metrics::login("invalid_credentials");
        Err(AuthError::InvalidCredentials)
    }

    async fn check_captcha(
        &self,
        answer: Option<&str>,
        who: &Attempted<'_>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let Some(verifier) = &self.captcha else {
            return Ok(());
        };
        let Some(answer) = answer.filter(|a| !a.is_empty()) else {
            metrics::login("captcha_required");
            return Err(AuthError::CaptchaRequired);
        };
        match verifier.verify(answer, client.ip).await {
            Verdict::Passed => Ok(()),
            Verdict::Refused => {
                audit!(
                    "captcha_refused",
                    client,
                    username_hash = who.username_hash,
                    user_id = who.user_id,
                    username = who.username,
                    "captcha refused"
                );
                metrics::login("captcha_invalid");
                Err(AuthError::CaptchaInvalid)
            }
            Verdict::Unavailable => {
                metrics::login("captcha_unavailable");
                Err(AuthError::CaptchaUnavailable)
            }
        }
    }
}
