//! The domain's errors, one variant per code of the spec. They become
//! GraphQL errors in one place, `crate::graphql::error`.

/// Why a request has no signed-in user (`extensions.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    MissingToken,
    InvalidToken,
    TokenExpired,
}

impl Unauthenticated {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "MISSING_TOKEN",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::TokenExpired => "TOKEN_EXPIRED",
        }
    }
}

/// What went wrong, in the terms a client sees.
///
/// Deliberately not `Display`: async-graphql turns any `Display` type into an
/// error without extensions, so this type converts only through the `From`
/// impl below, which always sets `extensions.code`.
#[derive(Debug)]
pub enum AuthError {
    /// The field needs a signed-in user.
    Unauthenticated(Unauthenticated),
    /// Wrong username or password; deliberately the same for unknown and
    /// inactive users.
    InvalidCredentials,
    /// A signed-in user's current password is wrong (`changePassword`'s
    /// `oldPassword`): the same code as `InvalidCredentials`, in words that
    /// fit a user who is signed in.
    WrongCurrentPassword,
    CaptchaRequired,
    CaptchaInvalid,
    CaptchaUnavailable,
    RateLimited {
        retry_after: u64,
    },
    /// Input refused; `reasons` lists every rule it broke.
    BadUserInput {
        message: String,
        reasons: Vec<String>,
    },
    NotFound,
    /// The password was right, and the user has two-factor sign-in on: no
    /// token yet. `challenge` goes to `verifyMfa` with a code.
    MfaRequired {
        challenge: crate::auth::tokens::Token,
    },
    /// A wrong, replayed or unknown code, or a dead challenge: one answer
    /// for every refusal of a second factor.
    InvalidCode,
    /// Two-factor sign-in needs `secret-key`, which is not set.
    MfaUnavailable,
    /// `register` while registration is closed.
    RegistrationClosed,
    /// The right password, but `email-verification required` and the
    /// address is not verified yet.
    EmailNotVerified,
    /// The mutation sends mail and no mailer is configured.
    MailUnavailable,
    /// Anything else. The cause is logged; the client sees a fixed message.
    Internal(anyhow::Error),
}

impl AuthError {
    /// The message a client sees. It names the problem and never contains a
    /// password or a token.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(Unauthenticated::MissingToken) => {
                "sign in first: no bearer token was sent".into()
            }
            Self::Unauthenticated(Unauthenticated::InvalidToken) => {
                "the token is not valid (unknown, malformed or revoked)".into()
            }
            Self::Unauthenticated(Unauthenticated::TokenExpired) => {
                "the token has expired; sign in again".into()
            }
            Self::InvalidCredentials => "invalid username or password".into(),
            Self::WrongCurrentPassword => "the current password is wrong".into(),
            Self::CaptchaRequired => "a captcha answer is required".into(),
            Self::CaptchaInvalid => "the captcha answer was refused".into(),
            Self::CaptchaUnavailable => {
                "the captcha could not be verified right now; try again".into()
            }
            Self::RateLimited { retry_after: 1 } => "too many attempts; retry in 1 second".into(),
            Self::RateLimited { retry_after } => {
                format!("too many attempts; retry in {retry_after} seconds")
            }
            Self::BadUserInput { message, .. } => message.clone(),
            Self::NotFound => "no such session".into(),
            Self::MfaRequired { .. } => {
                "a second factor is required: send a code to verifyMfa with extensions.challenge"
                    .into()
            }
            Self::InvalidCode => {
                "the code is wrong or already used, or the challenge is no longer valid".into()
            }
            Self::MfaUnavailable => {
                "two-factor sign-in is not available: the server has no secret key".into()
            }
            Self::RegistrationClosed => {
                "registration is closed: accounts are created by an operator".into()
            }
            Self::EmailNotVerified => {
                "verify your email address first: follow the link mailed to it".into()
            }
            Self::MailUnavailable => "mail is not available: the server has no mailer".into(),
            Self::Internal(_) => "internal server error".into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::InvalidCredentials | Self::WrongCurrentPassword => "INVALID_CREDENTIALS",
            Self::CaptchaRequired => "CAPTCHA_REQUIRED",
            Self::CaptchaInvalid => "CAPTCHA_INVALID",
            Self::CaptchaUnavailable => "CAPTCHA_UNAVAILABLE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::BadUserInput { .. } => "BAD_USER_INPUT",
            Self::NotFound => "NOT_FOUND",
            Self::MfaRequired { .. } => "MFA_REQUIRED",
            Self::InvalidCode => "INVALID_CODE",
            Self::MfaUnavailable => "MFA_UNAVAILABLE",
            Self::RegistrationClosed => "REGISTRATION_CLOSED",
            Self::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            Self::MailUnavailable => "MAIL_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    pub fn bad_input(message: impl Into<String>, reasons: Vec<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            reasons,
        }
    }
}

impl From<anyhow::Error> for AuthError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

impl From<sea_orm::DbErr> for AuthError {
    fn from(err: sea_orm::DbErr) -> Self {
        crate::metrics::database_error();
        Self::Internal(anyhow::Error::new(err).context("database error"))
    }
}
