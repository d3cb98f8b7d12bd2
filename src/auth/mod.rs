//! The domain: every rule of the spec about users, passwords, tokens and
//! sessions lives here. Nothing in this module knows HTTP or GraphQL.

/// Logs an authentication event once, at info, with a stable `event` name,
/// the client's IP and user agent, and the given fields (never a secret).
macro_rules! audit {
    ($event:expr, $client:expr, $($rest:tt)*) => {
        tracing::info!(
            event = $event,
            ip = %$client.ip_text(),
            user_agent = %$client.user_agent_text(),
            $($rest)*
        )
    };
}

mod accounts;
mod backoff;
pub mod cache;
pub mod captcha;
mod hash_pool;
mod health;
pub mod last_used;
pub mod links;
pub mod listener;
mod login;
pub mod mfa;
mod password;
pub mod passwords;
mod resolve;
pub mod revocation;
mod sessions;
pub mod sweeper;
pub mod throttle;
pub mod throttle_store;
pub mod tokens;
pub mod username;
pub mod users;

pub use accounts::Registered;
pub use mfa::TotpEnrollment;
pub use passwords::Password;
pub use users::UserListing;

use std::net::IpAddr;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::entities::user;
use crate::error::{AuthError, Unauthenticated};
use cache::TokenCache;
use captcha::CaptchaVerifier;
use passwords::{PasswordHasher, PasswordPolicy};
use revocation::Revoker;
use throttle::LoginThrottle;
use throttle_store::ThrottleStore;
use tokens::Token;
use username::UsernameHasher;

/// A user as clients see it: no password hash, no throttle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// TOTP is on: a login needs a second step.
    pub mfa_enabled: bool,
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
            email_verified: row.email.is_some() && row.email_verified_at.is_some(),
            mfa_enabled: row.totp_secret.is_some(),
            is_active: row.is_active,
            date_joined: row.date_joined,
            last_login: row.last_login,
        }
    }
}

/// The signed-in user of a request and the session its token belongs to.
/// The token cache holds one per token, so it is kept small: the user's
/// record is shared by all of that user's cached sessions.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: std::sync::Arc<User>,
    pub session_id: i64,
    /// The token's expiry in microseconds since 1970, the precision stored:
    /// 8 bytes where a `DateTime` takes 12, which keeps a cached principal
    /// at 48 bytes with its reference counts, not 56.
    expires_at_micros: i64,
    /// When the session last authenticated a request, as far as this
    /// instance knows.
    pub last_used: last_used::LastUse,
}

impl Principal {
    pub fn new(
        user: std::sync::Arc<User>,
        session_id: i64,
        expires_at: DateTime<Utc>,
        last_used: last_used::LastUse,
    ) -> Self {
        Self {
            user,
            session_id,
            expires_at_micros: expires_at.timestamp_micros(),
            last_used,
        }
    }

    /// True while the token has not expired: on every request, so compared
    /// in microseconds rather than rebuilding the `DateTime`.
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        now.timestamp_micros() < self.expires_at_micros
    }

    /// When the token expires.
    pub fn expires_at(&self) -> DateTime<Utc> {
        // Every `DateTime` fits in i64 microseconds; were it not, the token
        // would be taken as expired.
        DateTime::from_timestamp_micros(self.expires_at_micros).unwrap_or(DateTime::UNIX_EPOCH)
    }
}

/// One live token of a user.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub last_used_at: DateTime<Utc>,
    pub ip: Option<String>,
}

/// A token just issued, to be shown to the client once.
#[derive(Debug)]
pub struct Issued {
    pub token: Token,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

/// Whom a login attempt named, as its log lines show it: always the keyed
/// hash of the name (one name, one hash, across the lines of this process),
/// and the account when the name is one. Never the typed text: a name
/// matching no account may be a password typed into the wrong field.
struct Attempted<'a> {
    username_hash: &'a str,
    user_id: Option<i64>,
    username: Option<&'a str>,
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
    last_used: last_used::LastUsed,
    /// `token-idle-timeout`, when set.
    idle_timeout: Option<chrono::Duration>,
    revoker: Revoker,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    throttle: LoginThrottle,
    throttle_store: ThrottleStore,
    captcha: Option<CaptchaVerifier>,
    usernames_logged: UsernameHasher,
    clock: Clock,
    token_ttl: chrono::Duration,
    max_sessions_per_user: u32,
    /// Seals TOTP secrets; `None` without `secret-key` (no MFA then).
    sealer: Option<mfa::Sealer>,
    mfa_issuer: String,
    mfa_challenge_ttl: chrono::Duration,
    /// `None` without `smtp-url` or `mail-dir`: no mail, `MAIL_UNAVAILABLE`.
    mailer: Option<crate::mail::Mailer>,
    accounts: accounts::AccountSettings,
}

impl AuthService {
    /// # Errors
    /// When the dummy hash or the captcha client cannot be made, or the
    /// throttle key cannot be read.
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
            throttle_store: ThrottleStore::open(db.clone(), settings.login_rate).await?,
            captcha: CaptchaVerifier::from_settings(settings)?,
            usernames_logged: UsernameHasher::new(),
            token_ttl: chrono::Duration::from_std(settings.token_ttl)
                .context("token-ttl too large")?,
            max_sessions_per_user: settings.max_sessions_per_user,
            sealer: settings.secret_key.as_ref().map(mfa::Sealer::new),
            mfa_issuer: settings.mfa_issuer.clone(),
            mfa_challenge_ttl: chrono::Duration::from_std(settings.mfa_challenge_ttl)
                .context("mfa-challenge-ttl too large")?,
            last_used: last_used::LastUsed::new(settings.last_used_interval),
            idle_timeout: (!settings.token_idle_timeout.is_zero())
                .then(|| chrono::Duration::from_std(settings.token_idle_timeout))
                .transpose()
                .context("token-idle-timeout too large")?,
            mailer: crate::mail::Mailer::from_settings(settings)?,
            accounts: accounts::AccountSettings::from_settings(settings)?,
            db,
            cache,
            clock,
        })
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn idle_timeout(&self) -> Option<chrono::Duration> {
        self.idle_timeout
    }

    pub fn last_used(&self) -> &last_used::LastUsed {
        &self.last_used
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    pub fn throttle_store(&self) -> &ThrottleStore {
        &self.throttle_store
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
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
