//! The domain: every rule of the spec about users, passwords, tokens and
//! sessions lives here. Nothing in this module knows HTTP or GraphQL.

pub mod cache;
pub mod captcha;
pub mod listener;
pub mod passwords;
pub mod revocation;
pub mod sweeper;
pub mod throttle;
pub mod tokens;
pub mod username;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DatabaseConnection,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, TransactionTrait as _,
};

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::entities::{auth_token, user};
use crate::error::{AuthError, Unauthenticated};
use crate::metrics;
use cache::{Lookup, TokenCache};
use captcha::{CaptchaVerifier, Verdict};
use passwords::{NewPassword, Password, PasswordHasher, PasswordPolicy};
use revocation::Revoker;
use throttle::LoginThrottle;
use tokens::{Token, TokenDigest};
use username::Username;

/// Compare-and-set rounds before an attempt under heavy contention gives up.
const RESERVE_ATTEMPTS: usize = 5;

/// Longest user agent stored with a session.
const MAX_USER_AGENT_CHARS: usize = 512;

/// Logs an authentication event once, at info, with a stable `event` name,
/// the client's IP and user agent, and the given fields (never a secret).
macro_rules! audit {
    ($event:literal, $client:expr, $($rest:tt)*) => {
        tracing::info!(
            event = $event,
            ip = %$client.ip_text(),
            user_agent = %$client.user_agent_text(),
            $($rest)*
        )
    };
}

/// A user as clients see it: no password hash, no throttle state.
#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub is_active: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

impl From<&user::Model> for User {
    fn from(row: &user::Model) -> Self {
        Self {
            id: row.id,
            username: row.username.clone(),
            email: row.email.clone(),
            is_active: row.is_active,
            date_joined: row.date_joined,
            last_login: row.last_login,
        }
    }
}

/// The signed-in user of a request and the session its token belongs to.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub session_id: i64,
    pub expires_at: DateTime<Utc>,
}

/// One live token of a user.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// A token just issued, to be shown to the client once.
#[derive(Debug)]
pub struct Issued {
    pub token: Token,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

/// What the transport layer knows about the caller.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The IP for log lines ("-" when unknown).
    pub fn ip_text(&self) -> String {
        self.ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
    }

    /// The user agent for log lines, with control characters escaped.
    pub fn user_agent_text(&self) -> String {
        self.user_agent
            .as_deref()
            .unwrap_or("-")
            .escape_debug()
            .to_string()
    }
}

/// The credential a request carried.
#[derive(Clone, Debug)]
pub enum Credential {
    Missing,
    /// An `Authorization` header with a scheme other than Bearer or Token.
    Unsupported,
    Token(secrecy::SecretString),
}

/// The use-cases, with everything they need. Cheap to share behind an `Arc`.
pub struct AuthService {
    db: DatabaseConnection,
    cache: TokenCache,
    revoker: Revoker,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    throttle: LoginThrottle,
    captcha: Option<CaptchaVerifier>,
    clock: Clock,
    token_ttl: chrono::Duration,
    max_sessions_per_user: u32,
}

impl AuthService {
    /// # Errors
    /// When the dummy hash or the captcha client cannot be made.
    pub async fn new(
        db: DatabaseConnection,
        settings: &Settings,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let cache = TokenCache::new(settings.cache_capacity, settings.cache_ttl);
        Ok(Self {
            revoker: Revoker::new(db.clone(), cache.clone()),
            hasher: PasswordHasher::new(settings.bcrypt_cost, settings.hash_concurrency()).await?,
            policy: PasswordPolicy {
                min_length: settings.password_min_length as usize,
            },
            throttle: LoginThrottle::new(settings.login_rate),
            captcha: CaptchaVerifier::from_settings(settings)?,
            token_ttl: chrono::Duration::from_std(settings.token_ttl)
                .context("token-ttl too large")?,
            max_sessions_per_user: settings.max_sessions_per_user,
            db,
            cache,
            clock,
        })
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Resolves a request's credential to its user: the cache first, then
    /// the database. Every path checks expiry and that the user is active.
    ///
    /// # Errors
    /// `Unauthenticated` with the reason, or a database error.
    pub async fn authenticate(&self, credential: &Credential) -> Result<Arc<Principal>, AuthError> {
        let result = self.resolve(credential).await;
        if let Err(AuthError::Unauthenticated(reason)) = &result {
            metrics::token_refused(*reason);
        }
        result
    }

    async fn resolve(&self, credential: &Credential) -> Result<Arc<Principal>, AuthError> {
        use secrecy::ExposeSecret as _;
        let text = match credential {
            Credential::Missing => {
                return Err(AuthError::Unauthenticated(Unauthenticated::MissingToken))
            }
            Credential::Unsupported => return Err(invalid_token()),
            Credential::Token(text) => text,
        };
        // A token we could not have issued is refused without a lookup.
        let token = Token::parse(text.expose_secret()).map_err(|_| invalid_token())?;
        let digest = token.digest();
        let now = self.clock.now();
        if let Lookup::Hit(principal) = self.cache.get(&digest, now) {
            if now < principal.expires_at {
                metrics::token_resolved("cache");
                return Ok(principal);
            }
        }
        let generation = self.cache.generation();
        let found = auth_token::Entity::find()
            .filter(auth_token::Column::Digest.eq(digest.to_hex()))
            .find_also_related(user::Entity)
            .one(&self.db)
            .await?;
        let Some((session, Some(owner))) = found else {
            return Err(invalid_token());
        };
        if session.expires_at <= now {
            self.forget_expired(session.id, &digest).await?;
            return Err(AuthError::Unauthenticated(Unauthenticated::TokenExpired));
        }
        if !owner.is_active {
            return Err(invalid_token());
        }
        let principal = Principal {
            user: User::from(&owner),
            session_id: session.id,
            expires_at: session.expires_at,
        };
        let principal = Arc::new(principal);
        self.cache
            .insert(digest, Arc::clone(&principal), generation, now);
        metrics::token_resolved("database");
        Ok(principal)
    }

    async fn forget_expired(&self, session_id: i64, digest: &TokenDigest) -> Result<(), AuthError> {
        self.cache.remove(digest);
        auth_token::Entity::delete_by_id(session_id)
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Exchanges credentials for a new token. Checks run in the spec's
    /// order: throttle (the in-memory limits, then the account backoff),
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
        if let Err((limit, err)) = self.throttle.check(client.ip, &key) {
            audit!("rate_limited", client, limit = ?limit, username = %key.escape_debug(), "login refused by the rate limit");
            metrics::login("rate_limited");
            return Err(err);
        }

        let now = self.clock.now();
        let account = match &name {
            Some(name) => {
                user::Entity::find()
                    .filter(user::Column::Username.eq(name.as_ref()))
                    .one(&self.db)
                    .await?
            }
            None => None,
        };
        let refused_by_backoff = |err: AuthError| {
            audit!("rate_limited", client, limit = "account_backoff", username = %key.escape_debug(), "login refused by the account backoff");
            metrics::login("rate_limited");
            err
        };
        // A cheap look first, so that an attempt the backoff refuses costs
        // no call to the captcha service…
        match &account {
            Some(account) => {
                throttle::check_backoff(account.failed_logins, account.last_failed_login, now)
            }
            None => self.throttle.check_unknown(&key, now),
        }
        .map_err(refused_by_backoff)?;
        self.check_captcha(captcha, &key, client).await?;
        // …then the atomic step that also counts the attempt when the
        // account is in backoff.
        let counted = match &account {
            Some(account) => self.begin_attempt(account, now).await,
            None => self.throttle.begin_unknown(&key, now),
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
                    None => self.throttle.record_unknown_failure(&key, now),
                }
            }
            audit!("login_failed", client, username = %key.escape_debug(), "login failed");
            metrics::login("invalid_credentials");
            return Err(AuthError::InvalidCredentials);
        };

        let issued = self.complete_login(account, password, client, now).await?;
        audit!(
            "login_succeeded",
            client,
            user_id = issued.user.id,
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
        username: &str,
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
                audit!("captcha_refused", client, username = %username.escape_debug(), "captcha refused");
                metrics::login("captcha_invalid");
                Err(AuthError::CaptchaInvalid)
            }
            Verdict::Unavailable => {
                metrics::login("captcha_unavailable");
                Err(AuthError::CaptchaUnavailable)
            }
        }
    }

    /// Starts a password check on `account`: refuses it while the backoff
    /// runs; once the account is in backoff, counts it as a failure before
    /// the check, with a compare-and-set on the count so that concurrent
    /// attempts on any number of instances cannot all pass one backoff check
    /// (a success resets the count). Returns whether it was counted.
    async fn begin_attempt(
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
    async fn record_failure(&self, user_id: i64, now: DateTime<Utc>) -> Result<(), AuthError> {
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
    async fn reset_failures(&self, user_id: i64) -> Result<(), AuthError> {
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

    /// Stores a new session and, with a session cap, revokes the oldest
    /// sessions beyond it (never refusing the login).
    async fn issue<C: ConnectionTrait>(
        &self,
        conn: &C,
        account: &user::Model,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Issued, AuthError> {
        let token = Token::generate();
        let expires_at = now + self.token_ttl;
        let user_agent = client
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect::<String>());
        auth_token::ActiveModel {
            user_id: Set(account.id),
            digest: Set(token.digest().to_hex()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            user_agent: Set(user_agent),
            ip: Set(client.ip.map(|ip| ip.to_string())),
            ..Default::default()
        }
        .insert(conn)
        .await?;
        Ok(Issued {
            token,
            expires_at,
            user: User::from(account),
        })
    }

    async fn enforce_session_cap(
        &self,
        user_id: i64,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if self.max_sessions_per_user == 0 {
            return Ok(());
        }
        // A user has few sessions: read their ids and skip the newest in Rust
        // (SQLite has no OFFSET without LIMIT).
        let newest_first: Vec<i64> = auth_token::Entity::find()
            .select_only()
            .column(auth_token::Column::Id)
            .filter(auth_token::Column::UserId.eq(user_id))
            .order_by_desc(auth_token::Column::CreatedAt)
            .order_by_desc(auth_token::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?;
        let cap = usize::try_from(self.max_sessions_per_user).unwrap_or(usize::MAX);
        let beyond_cap: Vec<i64> = newest_first.into_iter().skip(cap).collect();
        if !beyond_cap.is_empty() {
            let revoked = self
                .revoker
                .revoke(user_id, Some(auth_token::Column::Id.is_in(beyond_cap)))
                .await?;
            audit!(
                "session_revoked",
                client,
                user_id,
                count = revoked,
                reason = "session_cap",
                "oldest sessions revoked by the session cap"
            );
            metrics::revoked("session_cap", revoked);
        }
        Ok(())
    }

    /// The user's live sessions, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn sessions(&self, principal: &Principal) -> Result<Vec<Session>, AuthError> {
        let rows = auth_token::Entity::find()
            .filter(auth_token::Column::UserId.eq(principal.user.id))
            .filter(auth_token::Column::ExpiresAt.gt(self.clock.now()))
            .order_by_desc(auth_token::Column::CreatedAt)
            .order_by_desc(auth_token::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Session {
                id: row.id,
                created_at: row.created_at,
                expires_at: row.expires_at,
                user_agent: row.user_agent,
                ip: row.ip,
            })
            .collect())
    }

    /// Revokes the token of this request.
    ///
    /// # Errors
    /// A database error.
    pub async fn logout(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let revoked = self
            .revoker
            .revoke(
                principal.user.id,
                Some(auth_token::Column::Id.eq(principal.session_id)),
            )
            .await?;
        audit!(
            "logout",
            client,
            user_id = principal.user.id,
            session_id = principal.session_id,
            "logged out"
        );
        metrics::revoked("logout", revoked);
        Ok(revoked > 0)
    }

    /// Revokes every token of the user; returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn logout_all(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let revoked = self.revoker.revoke(principal.user.id, None).await?;
        audit!(
            "logout_all",
            client,
            user_id = principal.user.id,
            count = revoked,
            "logged out everywhere"
        );
        metrics::revoked("logout_all", revoked);
        Ok(revoked)
    }

    /// Revokes every token of the user but this request's; returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn logout_others(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let revoked = self
            .revoker
            .revoke(
                principal.user.id,
                Some(auth_token::Column::Id.ne(principal.session_id)),
            )
            .await?;
        audit!(
            "logout_others",
            client,
            user_id = principal.user.id,
            count = revoked,
            "other sessions logged out"
        );
        metrics::revoked("logout_others", revoked);
        Ok(revoked)
    }

    /// Revokes one of the user's sessions by id.
    ///
    /// # Errors
    /// `NotFound` when the id is not one of the user's sessions.
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let id: i64 = id.parse().map_err(|_| AuthError::NotFound)?;
        let revoked = self
            .revoker
            .revoke(principal.user.id, Some(auth_token::Column::Id.eq(id)))
            .await?;
        if revoked == 0 {
            return Err(AuthError::NotFound);
        }
        audit!(
            "session_revoked",
            client,
            user_id = principal.user.id,
            session_id = id,
            "session revoked"
        );
        metrics::revoked("revoke_session", revoked);
        Ok(true)
    }

    /// Changes the password after checking the old one, revokes every token
    /// of the user and returns a fresh one.
    ///
    /// # Errors
    /// `InvalidCredentials` (counted by the account backoff), `RateLimited`,
    /// `BadUserInput` with every failed policy rule, or an internal error.
    pub async fn change_password(
        &self,
        principal: &Principal,
        old: &Password,
        new: Password,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let now = self.clock.now();
        let account = user::Entity::find_by_id(principal.user.id)
            .one(&self.db)
            .await?
            .filter(|a| a.is_active)
            .ok_or_else(invalid_token)?;
        // The same limits as login: a stolen token must not be an
        // unthrottled password oracle.
        if let Err((limit, err)) = self.throttle.check(client.ip, &account.username) {
            audit!("rate_limited", client, limit = ?limit, user_id = account.id, "password change refused by the rate limit");
            return Err(err);
        }
        let counted = self.begin_attempt(&account, now).await.inspect_err(|_| {
            audit!(
                "rate_limited",
                client,
                limit = "account_backoff",
                user_id = account.id,
                "password change refused by the account backoff"
            );
        })?;
        if !self
            .hasher
            .verify(old, Some(&account.password_hash))
            .await
            .map_err(hashing_error)?
        {
            if !counted {
                self.record_failure(account.id, now).await?;
            }
            audit!(
                "password_change_failed",
                client,
                user_id = account.id,
                "wrong current password"
            );
            return Err(AuthError::InvalidCredentials);
        }
        let new = match self.check_policy(new, &account.username, Some(old)) {
            Ok(new) => new,
            Err(refused) => {
                // The current password was right: that resets the count.
                self.reset_failures(account.id).await?;
                return Err(refused);
            }
        };
        let hash = self.hasher.hash(&new).await.map_err(hashing_error)?;

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
            .exec(&txn)
            .await?
            .rows_affected;
        if changed == 0 {
            // Another change won the race; this one's old password is stale.
            return Err(AuthError::InvalidCredentials);
        }
        let revoked = revocation::revoke_in(&txn, account.id, None).await?;
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

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub fn revoker(&self) -> &Revoker {
        &self.revoker
    }
}

/// A full hashing queue is an overload: ask the client to retry shortly.
fn hashing_error(err: anyhow::Error) -> AuthError {
    if err.is::<passwords::HasherBusy>() {
        tracing::warn!(
            event = "rate_limited",
            limit = "hash_queue",
            "every bcrypt slot stayed busy; attempt refused"
        );
        AuthError::RateLimited { retry_after: 1 }
    } else {
        AuthError::Internal(err)
    }
}

fn invalid_token() -> AuthError {
    AuthError::Unauthenticated(Unauthenticated::InvalidToken)
}
