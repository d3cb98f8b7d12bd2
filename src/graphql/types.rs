//! The GraphQL object types, converted by hand from the domain's types so
//! that no column a client should not see can leak through.

use async_graphql::{SimpleObject, ID};
use chrono::{DateTime, Utc};

use crate::auth;

/// A user account.
#[derive(SimpleObject)]
#[graphql(name = "User")]
pub struct UserObject {
    /// The user's id.
    pub id: ID,
    /// The username, lower-cased: usernames are compared without case, so `Alice` and `alice` are one account.
    pub username: String,
    /// The email address, when one was given.
    pub email: Option<String>,
    /// True when the user showed that the address is theirs (by following a link mailed to it, or by resetting the password through one).
    pub email_verified: bool,
    /// True when two-factor sign-in (TOTP) is on: a login then needs a code too (see verifyMfa).
    pub mfa_enabled: bool,
    /// False once the user is deactivated; a deactivated user cannot sign in.
    pub is_active: bool,
    /// When the account was created.
    pub date_joined: DateTime<Utc>,
    /// When the user last signed in; null before the first sign-in.
    pub last_login: Option<DateTime<Utc>>,
}

impl From<&auth::User> for UserObject {
    fn from(user: &auth::User) -> Self {
        Self {
            id: ID(user.id.to_string()),
            username: user.username.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            mfa_enabled: user.mfa_enabled,
            is_active: user.is_active,
            date_joined: user.date_joined,
            last_login: user.last_login,
        }
    }
}

/// A signed-in device: one live token.
#[derive(SimpleObject)]
#[graphql(name = "Session")]
pub struct SessionObject {
    /// The session's id, for `revokeSession`.
    pub id: ID,
    /// When the user signed in on this device.
    pub created_at: DateTime<Utc>,
    /// When this session's token stops working.
    pub expires_at: DateTime<Utc>,
    /// The `User-Agent` header the sign-in came with, if any.
    pub user_agent: Option<String>,
    /// The client's IP address at sign-in, if known.
    pub ip: Option<String>,
    /// When the token last authenticated a request (precise to `last-used-interval`).
    pub last_used_at: DateTime<Utc>,
    /// True for the session whose token made this request.
    pub current: bool,
}

impl SessionObject {
    pub fn new(session: auth::Session, current_id: i64) -> Self {
        Self {
            id: ID(session.id.to_string()),
            current: session.id == current_id,
            created_at: session.created_at,
            expires_at: session.expires_at,
            user_agent: session.user_agent,
            ip: session.ip,
            last_used_at: session.last_used_at,
        }
    }
}

/// A new bearer token and its user.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send it as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    /// When the token stops working; sign in again then.
    pub expires_at: DateTime<Utc>,
    /// The signed-in user.
    pub user: UserObject,
}

impl From<auth::Issued> for AuthPayload {
    fn from(issued: auth::Issued) -> Self {
        Self {
            token: issued.token.expose().to_owned(),
            expires_at: issued.expires_at,
            user: UserObject::from(&issued.user),
        }
    }
}

/// A new TOTP secret, shown once. Nothing changes until confirmTotp is called with a first code.
#[derive(SimpleObject)]
pub struct TotpEnrollment {
    /// Base32 secret, for typing into an authenticator app.
    pub secret: String,
    /// otpauth:// URI with issuer and account name.
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_code_svg: String,
}

impl From<auth::TotpEnrollment> for TotpEnrollment {
    fn from(enrollment: auth::TotpEnrollment) -> Self {
        use secrecy::ExposeSecret as _;
        Self {
            secret: enrollment.secret.expose_secret().to_owned(),
            otpauth_uri: enrollment.otpauth_uri.expose_secret().to_owned(),
            qr_code_svg: enrollment.qr_code_svg,
        }
    }
}

/// The answer to register.
#[derive(SimpleObject)]
pub struct RegisterPayload {
    /// The new session when the account may sign in at once; null while its email must be verified first.
    pub session: Option<AuthPayload>,
    /// True when a verification link was mailed.
    pub verification_sent: bool,
}

impl From<auth::Registered> for RegisterPayload {
    fn from(registered: auth::Registered) -> Self {
        Self {
            session: registered.session.map(AuthPayload::from),
            verification_sent: registered.verification_sent,
        }
    }
}
