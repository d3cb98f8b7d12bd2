//! Accounts by mail: registration, email verification, requesting and
//! doing a password reset, and (in `verify_email`) following an email
//! change's link.
//!
//! A password reset reveals nothing about which addresses have accounts:
//! `request_password_reset` does the same work on the request path for
//! every address (the per-IP limit, the captcha) and hands the address to a
//! task that looks it up, applies the per-address limit, issues the link
//! and queues the mail after the answer is gone. `reset_password` consumes
//! the link in the transaction that sets the password, so of two
//! concurrent uses exactly one succeeds.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
    TransactionTrait as _,
};
use secrecy::SecretString;

use super::captcha::Verdict;
use super::links::{invalid_link, Purpose};
use super::passwords::Password;
use super::tokens::Token;
use super::username::Username;
use super::users::{self, Taken};
use super::{hashing_error, revocation, AuthService, ClientInfo, Issued, Principal};
use crate::config::{EmailVerification, Registration, Settings};
use crate::db::entities::{link_token, user};
use crate::error::AuthError;
use crate::mail::{Mail, Template};
use crate::metrics;

/// The captcha's reCAPTCHA v3 action for a password reset.
const RESET_ACTION: &str = "password_reset";

/// The account settings, as the domain uses them.
pub(super) struct AccountSettings {
    pub registration: Registration,
    pub verification: EmailVerification,
    reset_url: Option<String>,
    verify_url: Option<String>,
    reset_ttl: chrono::Duration,
    verify_ttl: chrono::Duration,
}

impl AccountSettings {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            registration: settings.registration,
            verification: settings.email_verification,
            reset_url: settings.reset_url.clone(),
            verify_url: settings.verify_url.clone(),
            reset_ttl: chrono::Duration::from_std(settings.reset_token_ttl)
                .context("reset-token-ttl too large")?,
            verify_ttl: chrono::Duration::from_std(settings.verify_token_ttl)
                .context("verify-token-ttl too large")?,
        })
    }

    /// The link a mail carries: the template with the token, or the bare
    /// token without a template.
    fn link(&self, purpose: Purpose, token: &Token) -> SecretString {
        let template = match purpose {
            Purpose::Reset => self.reset_url.as_deref(),
            Purpose::Verify | Purpose::EmailChange => self.verify_url.as_deref(),
        };
        match template {
            Some(template) => template.replace("{token}", token.expose()).into(),
            None => token.expose().to_owned().into(),
        }
    }
}

/// The users row whose address is `email`, compared as the unique index
/// compares (SQL `LOWER` on both sides).
fn by_email(email: &str) -> sea_orm::sea_query::SimpleExpr {
    ExprTrait::eq(
        Expr::expr(Func::lower(Expr::col(user::Column::Email))),
        Func::lower(Expr::val(email)),
    )
}

impl AuthService {
    /// Answers `true` for any address after the same work; the lookup, the
    /// per-address limit and the mail happen after the answer, in a task.
    ///
    /// # Errors
    /// `MAIL_UNAVAILABLE` without a mailer, `RATE_LIMITED` per IP, a
    /// captcha error: never one that depends on the address.
    pub async fn request_password_reset(
        self: &Arc<Self>,
        email: &str,
        captcha: Option<&str>,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        if self.mailer.is_none() {
            return Err(AuthError::MailUnavailable);
        }
        self.count_ip(client, "password reset").await?;
        self.check_captcha_for(captcha, RESET_ACTION, client)
            .await?;
        let this = Arc::clone(self);
        let email = email.trim().to_owned();
        let client = client.clone();
        // After the answer, so its time tells nothing; its lines still
        // carry the request's id.
        tokio::spawn(crate::telemetry::in_current_request(async move {
            if let Err(err) = this.send_reset_link(&email, &client).await {
                tracing::error!(error = format!("{err:?}"), "password reset mail not sent");
            }
        }));
        Ok(true)
    }

    /// The part of a reset request that depends on the address.
    async fn send_reset_link(&self, email: &str, client: &ClientInfo) -> Result<(), AuthError> {
        let Some(mailer) = &self.mailer else {
            return Ok(());
        };
        let account = user::Entity::find()
            .filter(by_email(email))
            .filter(user::Column::IsActive.eq(true))
            .one(&self.db)
            .await?;
        let Some(account) = account else {
            audit!(
                "password_reset_requested",
                client,
                known = false,
                "password reset requested for an address with no account"
            );
            return Ok(());
        };
        let Some(address) = account.email.clone() else {
            return Ok(());
        };
        if !self
            .throttle_store
            .admit_address(&address.to_lowercase(), self.clock.now())
            .await?
        {
            audit!(
                "rate_limited",
                client,
                limit = "reset_address",
                user_id = account.id,
                "password reset mail not sent: 3 an hour per address"
            );
            return Ok(());
        }
        let token = self
            .issue_link(
                &self.db,
                account.id,
                Purpose::Reset,
                Some(&address),
                self.accounts.reset_ttl,
            )
            .await?;
        mailer.send(Mail {
            to: address,
            template: Template::Reset,
            username: account.username.clone(),
            link: Some(self.accounts.link(Purpose::Reset, &token)),
        });
        audit!(
            "password_reset_requested",
            client,
            known = true,
            user_id = account.id,
            "password reset link mailed"
        );
        Ok(())
    }

    /// Sets a new password with a reset link: the policy applies, every
    /// session and link of the user ends, the backoff is cleared, the
    /// address counts as verified (the link proved it), and a fresh session
    /// is returned.
    ///
    /// # Errors
    /// `BAD_USER_INPUT` with `INVALID_LINK_TOKEN` for a wrong, used or
    /// expired link (or one whose user is gone or inactive), or with every
    /// failed policy rule; `RATE_LIMITED` when hashing is saturated.
    pub async fn reset_password(
        &self,
        token: &str,
        new: Password,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let link = self.find_link(token, Purpose::Reset).await?;
        let account = user::Entity::find_by_id(link.user_id)
            .filter(user::Column::IsActive.eq(true))
            .one(&self.db)
            .await?
            .ok_or_else(invalid_link)?;
        let new = self.check_policy(new, &account.username, None)?;
        let hash = self.hasher.hash(&new).await.map_err(hashing_error)?;
        let now = self.clock.now();

        let txn = self.db.begin().await?;
        Self::consume_link(&txn, &link, now).await?;
        // Verified only if the address is still the one the link went to.
        let verified_at = match (&account.email, &link.email) {
            (Some(current), Some(mailed)) if current.eq_ignore_ascii_case(mailed) => {
                Some(account.email_verified_at.unwrap_or(now))
            }
            _ => account.email_verified_at,
        };
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash.as_str()))
            .col_expr(user::Column::FailedLogins, Expr::value(0))
            .col_expr(
                user::Column::LastFailedLogin,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(user::Column::EmailVerifiedAt, Expr::value(verified_at))
            .filter(user::Column::Id.eq(account.id))
            .exec(&txn)
            .await?;
        Self::kill_links(&txn, account.id).await?;
        let revoked = revocation::revoke_in(&txn, account.id, None).await?;
        let account = user::Model {
            password_hash: hash,
            failed_logins: 0,
            last_failed_login: None,
            email_verified_at: verified_at,
            ..account
        };
        let issued = self.issue(&txn, &account, client, now).await?;
        txn.commit().await?;
        self.revoker.after_commit(account.id);
        metrics::revoked("reset_password", revoked);
        audit!(
            "password_reset",
            client,
            user_id = account.id,
            revoked,
            "password reset through a mailed link"
        );
        Ok(issued)
    }

    /// Counts a request against the per-IP login limit.
    async fn count_ip(&self, client: &ClientInfo, what: &str) -> Result<(), AuthError> {
        let now = self.clock.now();
        // The username bucket is keyed by the IP too, so no global bucket
        // is shared by everyone.
        let key = format!("\u{0}{}", client.ip_text());
        if let Err((limit, err)) = self.count_attempt(client.ip, &key, now).await? {
            audit!("rate_limited", client, limit = ?limit, what, "refused by the per-IP limit");
            return Err(err);
        }
        Ok(())
    }

    /// The captcha, when one is configured, for a v3 `action`.
    async fn check_captcha_for(
        &self,
        answer: Option<&str>,
        action: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let Some(verifier) = &self.captcha else {
            return Ok(());
        };
        let Some(answer) = answer.filter(|a| !a.is_empty()) else {
            return Err(AuthError::CaptchaRequired);
        };
        match verifier.verify_for(answer, client.ip, action).await {
            Verdict::Passed => Ok(()),
            Verdict::Refused => {
                audit!("captcha_refused", client, action, "captcha refused");
                Err(AuthError::CaptchaInvalid)
            }
            Verdict::Unavailable => Err(AuthError::CaptchaUnavailable),
        }
    }
}

/// What `register` answers: the same shape for a fresh and (under
/// `required`) a taken address.
#[derive(Debug)]
pub struct Registered {
    /// A session when the account may sign in at once.
    pub session: Option<Issued>,
    /// A verification link was mailed.
    pub verification_sent: bool,
}

/// The captcha's reCAPTCHA v3 action for a registration.
const REGISTER_ACTION: &str = "register";

impl AuthService {
    /// Creates an account while registration is open: the username rules,
    /// the password policy, the captcha and the per-IP limit apply. Under
    /// `email-verification required` a taken address gets the answer a
    /// fresh one gets and its owner a notice, so no address is revealed.
    ///
    /// # Errors
    /// `REGISTRATION_CLOSED`, `RATE_LIMITED`, a captcha error,
    /// `BAD_USER_INPUT` (username rules, `INVALID_EMAIL`, policy,
    /// `USERNAME_TAKEN`, `EMAIL_TAKEN` outside `required`).
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: Password,
        captcha: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Registered, AuthError> {
        if self.accounts.registration != Registration::Open {
            return Err(AuthError::RegistrationClosed);
        }
        self.count_ip(client, "register").await?;
        self.check_captcha_for(captcha, REGISTER_ACTION, client)
            .await?;
        let verification = self.accounts.verification;
        if verification != EmailVerification::Off && self.mailer.is_none() {
            return Err(AuthError::MailUnavailable);
        }
        let name = Username::parse(username).map_err(|reasons| {
            AuthError::bad_input(
                "the username must be 1 to 150 letters, digits or @.+-_",
                reasons.into_iter().map(str::to_owned).collect(),
            )
        })?;
        let email = email.trim();
        if !users::looks_like_email(email) {
            return Err(AuthError::bad_input(
                "the email address is not valid",
                vec!["INVALID_EMAIL".into()],
            ));
        }
        let password = self.check_policy(password, name.as_ref(), None)?;
        let hash = self.hasher.hash(&password).await.map_err(hashing_error)?;
        let now = self.clock.now();
        let txn = self.db.begin().await?;
        let inserted = user::ActiveModel {
            username: Set(name.as_ref().to_owned()),
            email: Set(Some(email.to_owned())),
            email_verified_at: Set(None),
            password_hash: Set(hash),
            is_active: Set(true),
            date_joined: Set(now),
            failed_logins: Set(0),
            ..Default::default()
        }
        .insert(&txn)
        .await;
        let account = match inserted {
            Ok(account) => account,
            Err(err) => {
                drop(txn);
                return match users::taken(&err) {
                    Some(Taken::Email) if verification == EmailVerification::Required => {
                        self.notify_taken(email, client).await?;
                        Ok(Registered {
                            session: None,
                            verification_sent: true,
                        })
                    }
                    Some(Taken::Email) => Err(AuthError::bad_input(
                        "the email address belongs to another account",
                        vec!["EMAIL_TAKEN".into()],
                    )),
                    Some(Taken::Username) => Err(AuthError::bad_input(
                        format!("the username {} is taken", name.as_ref()),
                        vec!["USERNAME_TAKEN".into()],
                    )),
                    None => Err(err.into()),
                };
            }
        };
        let verification_sent = if verification == EmailVerification::Off {
            false
        } else {
            self.mail_verification(&txn, &account).await?;
            true
        };
        let session = if verification == EmailVerification::Required {
            None
        } else {
            Some(self.issue(&txn, &account, client, now).await?)
        };
        txn.commit().await?;
        audit!(
            "registered",
            client,
            user_id = account.id,
            username = account.username.as_str(),
            "account registered"
        );
        Ok(Registered {
            session,
            verification_sent,
        })
    }

    /// Mails the owner of a taken address that someone tried to register it.
    async fn notify_taken(&self, email: &str, client: &ClientInfo) -> Result<(), AuthError> {
        let owner = user::Entity::find()
            .filter(by_email(email))
            .one(&self.db)
            .await?;
        if let (Some(owner), Some(mailer)) = (owner, &self.mailer) {
            if let Some(address) = owner.email.clone() {
                mailer.send(Mail {
                    to: address,
                    template: Template::AddressTaken,
                    username: owner.username.clone(),
                    link: None,
                });
                audit!(
                    "registration_address_taken",
                    client,
                    user_id = owner.id,
                    "registration with a taken address; its owner notified"
                );
            }
        }
        Ok(())
    }

    /// Issues a verification link for the account's address and queues it.
    async fn mail_verification<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        account: &user::Model,
    ) -> Result<(), AuthError> {
        let (Some(mailer), Some(address)) = (&self.mailer, account.email.clone()) else {
            return Err(AuthError::MailUnavailable);
        };
        let token = self
            .issue_link(
                conn,
                account.id,
                Purpose::Verify,
                Some(&address),
                self.accounts.verify_ttl,
            )
            .await?;
        mailer.send(Mail {
            to: address,
            template: Template::Verify,
            username: account.username.clone(),
            link: Some(self.accounts.link(Purpose::Verify, &token)),
        });
        Ok(())
    }

    /// Follows a verification link (`aqv_`: the address is verified) or an
    /// email-change link (`aqe_`: the address becomes the new one, verified).
    ///
    /// # Errors
    /// `BAD_USER_INPUT` with `INVALID_LINK_TOKEN` for a wrong, used or
    /// expired link, or one whose address is no longer the account's (or
    /// now another account's).
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> Result<bool, AuthError> {
        let purpose = if token.starts_with(Purpose::EmailChange.prefix()) {
            Purpose::EmailChange
        } else {
            Purpose::Verify
        };
        let link = self.find_link(token, purpose).await?;
        let mailed = link.email.clone().ok_or_else(invalid_link)?;
        let now = self.clock.now();
        let txn = self.db.begin().await?;
        Self::consume_link(&txn, &link, now).await?;
        let mut update = user::Entity::update_many()
            .col_expr(user::Column::EmailVerifiedAt, Expr::value(now))
            .filter(user::Column::Id.eq(link.user_id));
        if purpose == Purpose::EmailChange {
            update = update.col_expr(user::Column::Email, Expr::value(mailed.as_str()));
        } else {
            // Only while the address is still the one the link went to.
            update = update.filter(by_email(&mailed));
        }
        let changed = match update.exec(&txn).await {
            Ok(result) => result.rows_affected,
            Err(err) if users::taken(&err).is_some() => return Err(invalid_link()),
            Err(err) => return Err(err.into()),
        };
        if changed != 1 {
            return Err(invalid_link());
        }
        if purpose == Purpose::EmailChange {
            // The old address's verification links are for nothing now.
            link_token::Entity::delete_many()
                .filter(link_token::Column::UserId.eq(link.user_id))
                .filter(link_token::Column::Purpose.eq("verify"))
                .exec(&txn)
                .await?;
        }
        // Cached entries carry the old address or its unverified state:
        // every instance drops them and reads the new record at its next
        // request, not after `cache-ttl`.
        revocation::announce_in(&txn, link.user_id).await?;
        txn.commit().await?;
        self.revoker.after_commit(link.user_id);
        if purpose == Purpose::EmailChange {
            audit!(
                "email_changed",
                client,
                user_id = link.user_id,
                "email address changed"
            );
        } else {
            audit!(
                "email_verified",
                client,
                user_id = link.user_id,
                "email address verified"
            );
        }
        Ok(true)
    }

    /// Mails a fresh verification link to the signed-in user's unverified
    /// address; `false` when there is nothing to verify.
    ///
    /// # Errors
    /// `MAIL_UNAVAILABLE` without a mailer, `RATE_LIMITED` per IP.
    pub async fn resend_verification(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        if self.mailer.is_none() {
            return Err(AuthError::MailUnavailable);
        }
        self.count_ip(client, "resend verification").await?;
        let account = user::Entity::find_by_id(principal.user.id)
            .one(&self.db)
            .await?
            .ok_or_else(|| self.revoker.session_gone(principal))?;
        if account.email.is_none() || account.email_verified_at.is_some() {
            return Ok(false);
        }
        self.mail_verification(&self.db, &account).await?;
        audit!(
            "verification_resent",
            client,
            user_id = account.id,
            "verification link mailed"
        );
        Ok(true)
    }
}

impl AuthService {
    /// Starts an email change after checking the password (counted by the
    /// account backoff): mails a link to the new address and a notice to
    /// the old one. The address changes when the link is followed
    /// (`verify_email`).
    ///
    /// # Errors
    /// `MAIL_UNAVAILABLE`, `RATE_LIMITED`, `INVALID_CREDENTIALS`,
    /// `BAD_USER_INPUT` (`INVALID_EMAIL`, or `EMAIL_TAKEN` outside
    /// `required`), `UNAUTHENTICATED` when the session was revoked.
    pub async fn change_email(
        &self,
        principal: &Principal,
        password: &Password,
        new_email: &str,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let Some(mailer) = &self.mailer else {
            return Err(AuthError::MailUnavailable);
        };
        let (account, _) = self
            .check_current_password(principal, password, client, "email_change_failed")
            .await?;
        self.reset_failures(account.id).await?;
        let new_email = new_email.trim();
        if !users::looks_like_email(new_email) {
            return Err(AuthError::bad_input(
                "the email address is not valid",
                vec!["INVALID_EMAIL".into()],
            ));
        }
        let holder = user::Entity::find()
            .filter(by_email(new_email))
            .one(&self.db)
            .await?;
        if let Some(holder) = holder {
            if holder.id == account.id {
                return Err(AuthError::bad_input(
                    "that is already the account's email address",
                    vec!["EMAIL_UNCHANGED".into()],
                ));
            }
            if self.accounts.verification != EmailVerification::Required {
                return Err(AuthError::bad_input(
                    "the email address belongs to another account",
                    vec!["EMAIL_TAKEN".into()],
                ));
            }
            // Under `required` no address is revealed: the same answer, and
            // no link (it could never apply).
            audit!(
                "email_change_requested",
                client,
                user_id = account.id,
                taken = true,
                "email change to a taken address; nothing mailed"
            );
            return Ok(true);
        }
        let token = self
            .issue_link(
                &self.db,
                account.id,
                Purpose::EmailChange,
                Some(new_email),
                self.accounts.verify_ttl,
            )
            .await?;
        mailer.send(Mail {
            to: new_email.to_owned(),
            template: Template::EmailChange,
            username: account.username.clone(),
            link: Some(self.accounts.link(Purpose::EmailChange, &token)),
        });
        if let Some(old) = account.email.clone() {
            mailer.send(Mail {
                to: old,
                template: Template::EmailChangeNotice,
                username: account.username.clone(),
                link: None,
            });
        }
        audit!(
            "email_change_requested",
            client,
            user_id = account.id,
            "email change link mailed"
        );
        Ok(true)
    }
}
