//! Two-factor sign-in with TOTP (RFC 6238: SHA-1, 6 digits, 30-second
//! steps, what every authenticator app reads).
//!
//! Enrolment is two steps: `enroll_totp` (password checked, counted by the
//! account backoff) stores a pending secret and shows it once;
//! `confirm_totp` with a first code turns it on and returns the recovery
//! codes. A login with the right password for such a user gets a
//! challenge instead of a token ([`AuthService::begin_second_step`], called
//! by login); `verify_mfa` redeems it with a code. `disable_totp` and the
//! `reset-mfa` command (in `users.rs`) turn it off.
//!
//! At rest: secrets are sealed with XChaCha20-Poly1305 under a key derived
//! from `secret-key` and bound to their user (a sealed secret copied onto
//! another row does not open); recovery codes and challenges are stored as
//! SHA-256 digests. Every check accepts the previous, current and next step,
//! and never a step at or before the last one accepted for the user.

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate as _, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rand::Rng as _;
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, TransactionTrait as _,
};
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};

use super::passwords::Password;
use super::tokens::{Token, CHALLENGE_PREFIX};
use super::{revocation, AuthService, ClientInfo, Issued, Principal};
use crate::config::SecretKey;
use crate::db::entities::{auth_token, mfa_challenge, recovery_code, user};
use crate::error::AuthError;
use crate::metrics;

/// Seconds per TOTP step.
pub const STEP_SECONDS: u64 = 30;
/// Digits of a TOTP code.
pub const DIGITS: u8 = 6;
/// Recovery codes made by `confirm_totp`.
pub const RECOVERY_CODES: usize = 10;
/// Wrong codes a challenge survives.
pub const MAX_CHALLENGE_FAILURES: i32 = 5;
/// Bytes of a new TOTP secret (160 bits, RFC 4226's recommendation).
const SECRET_BYTES: usize = 20;
/// Characters of a recovery code (5 bits each: 80 bits).
const RECOVERY_CODE_CHARS: usize = 16;
/// Lower case, no i, l, o, u: nothing to misread when copied by hand.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Versioned, so that a later change of cipher can read old rows.
const SEALED_PREFIX: &str = "v1.";

/// Seals and opens TOTP secrets. Built from `secret-key`; its `Debug` shows
/// nothing of the key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// The cipher key is HMAC-SHA256 of a fixed label under `secret-key`:
    /// a key of any length (at least 32 bytes) gives a 32-byte key, and the
    /// same `secret-key` could key another purpose later without reuse.
    pub fn new(key: &SecretKey) -> Self {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"authql totp secret v1");
        let derived: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            cipher: XChaCha20Poly1305::new(&derived.into()),
        }
    }

    fn aad(user_id: i64) -> Vec<u8> {
        format!("authql totp user {user_id}").into_bytes()
    }

    fn seal(&self, user_id: i64, secret: &[u8]) -> anyhow::Result<String> {
        let nonce = XNonce::generate();
        let aad = Self::aad(user_id);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("cannot seal the TOTP secret"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    fn open(&self, user_id: i64, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|body| URL_SAFE_NO_PAD.decode(body).ok())
            .context("a sealed TOTP secret is malformed")?;
        anyhow::ensure!(bytes.len() > 24, "a sealed TOTP secret is too short");
        let (nonce, sealed) = bytes.split_at(24);
        let nonce = XNonce::try_from(nonce).context("a sealed TOTP secret is malformed")?;
        let aad = Self::aad(user_id);
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot open the TOTP secret of user {user_id}: was secret-key changed since \
                     it was sealed?"
                )
            })
    }
}

/// A new TOTP secret, shown once: for typing, as a URI, as a QR code.
/// `Debug` prints none of them (the QR code encodes the secret too).
pub struct TotpEnrollment {
    /// Base32, without padding.
    pub secret: SecretString,
    pub otpauth_uri: SecretString,
    /// An SVG document of the URI.
    pub qr_code_svg: String,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrollment([redacted])")
    }
}

/// What the user typed as a second factor, once normalised.
enum Code {
    Totp(String),
    Recovery(String),
    Neither,
}

impl Code {
    /// Spaces and dashes are ignored, and case: codes are read out and
    /// copied by hand.
    fn parse(text: &str) -> Self {
        let text: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        if text.len() == usize::from(DIGITS) && text.bytes().all(|b| b.is_ascii_digit()) {
            Self::Totp(text)
        } else if text.len() == RECOVERY_CODE_CHARS
            && text.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))
        {
            Self::Recovery(text)
        } else {
            Self::Neither
        }
    }
}

/// The TOTP generator of `secret`, with the parameters of RFC 6238's
/// defaults and one step of tolerance either way.
fn totp(secret: Vec<u8>) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(1)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret)
        .build_noncompliant()
}

/// The step whose code `code` is, among the previous, current and next
/// steps at `now`, if any.
fn matching_step(secret: Vec<u8>, code: &str, now: DateTime<Utc>) -> Option<i64> {
    let unix = u64::try_from(now.timestamp()).ok()?;
    totp(secret)
        .check(code, unix)
        .and_then(|step| i64::try_from(step).ok())
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// A fresh recovery code, `xxxx-xxxx-xxxx-xxxx`, 80 random bits.
fn recovery_code() -> String {
    let mut random = [0u8; 10];
    UnwrapErr(SysRng).fill_bytes(&mut random);
    let mut bits = random
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let mut chars = Vec::with_capacity(RECOVERY_CODE_CHARS);
    for _ in 0..RECOVERY_CODE_CHARS {
        chars.push(RECOVERY_ALPHABET[(bits & 31) as usize]);
        bits >>= 5;
    }
    let text = String::from_utf8(chars).unwrap_or_default();
    text.as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes().fold(String::new(), |mut out, byte| {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
        out
    })
}

/// Key URI Format, as authenticator apps read it.
fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={secret_base32}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent_encode(account)
    )
}

fn qr_code_svg(uri: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).context("the URI does not fit a QR code")?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build())
}

impl AuthService {
    /// Whether two-factor sign-in can be used (a `secret-key` is set).
    pub fn mfa_available(&self) -> bool {
        self.sealer.is_some()
    }

    fn sealer(&self) -> Result<&Sealer, AuthError> {
        self.sealer.as_ref().ok_or(AuthError::MfaUnavailable)
    }

    /// Begins TOTP enrolment: checks the password, stores a new pending
    /// secret (replacing any earlier one) and returns it. Nothing else
    /// changes until [`confirm_totp`](Self::confirm_totp).
    ///
    /// # Errors
    /// `MfaUnavailable` without `secret-key`, `WrongCurrentPassword` (counted
    /// by the account backoff), `RateLimited`, `Unauthenticated` when this
    /// request's session is gone.
    pub async fn enroll_totp(
        &self,
        principal: &Principal,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<TotpEnrollment, AuthError> {
        let sealer = self.sealer()?;
        let (account, _) = self
            .check_current_password(principal, password, client, "totp_enrollment_failed")
            .await?;
        // Replacing an active second factor must take that factor, as
        // turning it off does: a stolen session and password alone must not
        // swap it (and lock the owner out).
        if account.totp_secret.is_some() {
            return Err(AuthError::bad_input(
                "two-factor sign-in is on already; turn it off with disableTotp first",
                vec!["MFA_ALREADY_ENABLED".into()],
            ));
        }
        self.reset_failures(account.id).await?;
        let mut secret = [0u8; SECRET_BYTES];
        UnwrapErr(SysRng).fill_bytes(&mut secret);
        let sealed = sealer.seal(account.id, &secret)?;
        let stored = user::Entity::update_many()
            .col_expr(user::Column::TotpPending, Expr::value(sealed))
            .filter(user::Column::Id.eq(account.id))
            .filter(revocation::session_alive(principal))
            .exec(&self.db)
            .await?
            .rows_affected;
        if stored == 0 {
            return Err(self.revoker.session_gone(principal));
        }
        let base32 = totp_rs::Secret::from(secret).to_base32();
        let uri = otpauth_uri(&self.mfa_issuer, &account.username, &base32);
        let svg = qr_code_svg(&uri)?;
        audit!(
            "totp_enrollment_started",
            client,
            user_id = account.id,
            "TOTP enrolment started"
        );
        Ok(TotpEnrollment {
            secret: base32.into(),
            otpauth_uri: uri.into(),
            qr_code_svg: svg,
        })
    }

    /// Turns TOTP on with a first code of the pending secret; returns the
    /// recovery codes (replacing any earlier ones), to be shown once. Every
    /// other session of the user is revoked.
    ///
    /// # Errors
    /// `InvalidCode` for a wrong or replayed code or no pending enrolment,
    /// `MfaUnavailable`, `Unauthenticated` when this session is gone.
    pub async fn confirm_totp(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, AuthError> {
        let sealer = self.sealer()?;
        let now = self.clock.now();
        let account = self.signed_in_account(principal).await?;
        let Some(pending) = account.totp_pending.clone() else {
            return Err(AuthError::InvalidCode);
        };
        // A stolen session must not guess the pending secret's codes freely.
        let counted = self.begin_check(&account, client, now).await?;
        let step = match Code::parse(code) {
            Code::Totp(code) => matching_step(sealer.open(account.id, &pending)?, &code, now),
            _ => None,
        };
        let Some(step) = step.filter(|s| account.totp_last_step.is_none_or(|last| *s > last))
        else {
            if !counted {
                self.record_failure(account.id, now).await?;
            }
            audit!(
                "totp_confirmation_failed",
                client,
                user_id = account.id,
                "TOTP confirmation refused: wrong code"
            );
            return Err(AuthError::InvalidCode);
        };
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();

        let txn = self.db.begin().await?;
        let turned_on = user::Entity::update_many()
            .col_expr(user::Column::TotpSecret, Expr::value(pending.as_str()))
            .col_expr(
                user::Column::TotpPending,
                Expr::value(Option::<String>::None),
            )
            .col_expr(user::Column::TotpLastStep, Expr::value(step))
            .filter(user::Column::Id.eq(account.id))
            .filter(user::Column::TotpPending.eq(pending.as_str()))
            .filter(not_after_last_step(step))
            .filter(revocation::session_alive(principal))
            .exec(&txn)
            .await?
            .rows_affected;
        if turned_on == 0 {
            if !revocation::is_alive(&txn, principal).await? {
                return Err(self.revoker.session_gone(principal));
            }
            // Another confirmation or enrolment came first.
            return Err(AuthError::InvalidCode);
        }
        forget_second_factors(&txn, account.id).await?;
        for code in &codes {
            recovery_code::ActiveModel {
                user_id: Set(account.id),
                digest: Set(sha256_hex(&code.replace('-', ""))),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
        let revoked = self.revoke_others_in(&txn, principal).await?;
        txn.commit().await?;
        self.revoker.after_commit(account.id);
        metrics::revoked("totp_enrolled", revoked);
        audit!(
            "totp_enrolled",
            client,
            user_id = account.id,
            revoked,
            "TOTP turned on"
        );
        Ok(codes)
    }

    /// Turns TOTP off after checking the password and a code (a TOTP code
    /// or a recovery code). Every other session of the user is revoked.
    ///
    /// # Errors
    /// `WrongCurrentPassword` (counted), `InvalidCode` (counted), `RateLimited`,
    /// `BadUserInput` (`MFA_NOT_ENABLED`), `MfaUnavailable` for a TOTP code
    /// without `secret-key`, `Unauthenticated` when this session is gone.
    pub async fn disable_totp(
        &self,
        principal: &Principal,
        password: &Password,
        code: &str,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let now = self.clock.now();
        let (account, counted) = self
            .check_current_password(principal, password, client, "totp_disable_failed")
            .await?;
        let Some(sealed) = account.totp_secret.clone() else {
            return Err(AuthError::bad_input(
                "two-factor sign-in is not on",
                vec!["MFA_NOT_ENABLED".into()],
            ));
        };
        let txn = self.db.begin().await?;
        let accepted = self.accept_code(&txn, &account, &sealed, code, now).await?;
        if !accepted {
            txn.rollback().await?;
            if !counted {
                self.record_failure(account.id, now).await?;
            }
            audit!(
                "totp_disable_failed",
                client,
                user_id = account.id,
                "TOTP not turned off: wrong code"
            );
            return Err(AuthError::InvalidCode);
        }
        let turned_off = user::Entity::update_many()
            .col_expr(
                user::Column::TotpSecret,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                user::Column::TotpPending,
                Expr::value(Option::<String>::None),
            )
            .col_expr(user::Column::FailedLogins, Expr::value(0))
            .col_expr(
                user::Column::LastFailedLogin,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(user::Column::Id.eq(account.id))
            .filter(user::Column::TotpSecret.eq(sealed.as_str()))
            .filter(revocation::session_alive(principal))
            .exec(&txn)
            .await?
            .rows_affected;
        if turned_off == 0 {
            if !revocation::is_alive(&txn, principal).await? {
                return Err(self.revoker.session_gone(principal));
            }
            return Err(AuthError::InvalidCode);
        }
        forget_second_factors(&txn, account.id).await?;
        let revoked = self.revoke_others_in(&txn, principal).await?;
        txn.commit().await?;
        self.revoker.after_commit(account.id);
        metrics::revoked("totp_disabled", revoked);
        audit!(
            "totp_disabled",
            client,
            user_id = account.id,
            revoked,
            "TOTP turned off"
        );
        Ok(true)
    }

    /// Called by login once the password of a user with TOTP on is right:
    /// stores a challenge for the second step and returns it. The backoff
    /// is not reset: only a passed second step resets it.
    ///
    /// # Errors
    /// `MfaUnavailable` without `secret-key` (logged for the operator: the
    /// user cannot sign in until the key is set), or a database error.
    pub(super) async fn begin_second_step(
        &self,
        account: &user::Model,
        now: DateTime<Utc>,
    ) -> Result<Token, AuthError> {
        if self.sealer.is_none() {
            tracing::error!(
                user_id = account.id,
                "login refused: this user has two-factor sign-in on, and no --secret-key \
                 (AUTHQL_SECRET_KEY) is set; start the server with the key the TOTP secrets were \
                 sealed under, or turn the user's TOTP off with `authql user reset-mfa`"
            );
            return Err(AuthError::MfaUnavailable);
        }
        let challenge = Token::generate_with(CHALLENGE_PREFIX);
        mfa_challenge::ActiveModel {
            user_id: Set(account.id),
            digest: Set(challenge.digest().to_hex()),
            created_at: Set(now),
            expires_at: Set(now + self.mfa_challenge_ttl),
            failed_attempts: Set(0),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        Ok(challenge)
    }

    /// The second step of a login: a live challenge and a right code give
    /// the session, through the same path as a login (session cap, audit,
    /// metrics). The challenge is single-use and dies after
    /// [`MAX_CHALLENGE_FAILURES`] wrong codes; wrong codes count toward the
    /// account backoff, and a passed step resets it.
    ///
    /// # Errors
    /// `InvalidCode` for every refusal of the code or the challenge,
    /// `RateLimited` while the backoff runs, `MfaUnavailable`, or an
    /// internal error.
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let now = self.clock.now();
        let refused = |user_id: Option<i64>, why: &'static str| {
            audit!(
                "mfa_failed",
                client,
                user_id,
                reason = why,
                "MFA challenge failed"
            );
            metrics::login("invalid_code");
            AuthError::InvalidCode
        };
        let Ok(challenge) = Token::parse_with(challenge, CHALLENGE_PREFIX) else {
            return Err(refused(None, "malformed_challenge"));
        };
        let Some(row) = mfa_challenge::Entity::find()
            .filter(mfa_challenge::Column::Digest.eq(challenge.digest().to_hex()))
            .one(&self.db)
            .await?
        else {
            return Err(refused(None, "unknown_challenge"));
        };
        if row.expires_at <= now {
            mfa_challenge::Entity::delete_by_id(row.id)
                .exec(&self.db)
                .await?;
            return Err(refused(Some(row.user_id), "expired_challenge"));
        }
        let account = user::Entity::find_by_id(row.user_id)
            .one(&self.db)
            .await?
            .filter(|a| a.is_active);
        let Some((account, sealed)) =
            account.and_then(|a| a.totp_secret.clone().map(|sealed| (a, sealed)))
        else {
            mfa_challenge::Entity::delete_by_id(row.id)
                .exec(&self.db)
                .await?;
            return Err(refused(Some(row.user_id), "second_factor_gone"));
        };
        if let Err((limit, err)) = self
            .count_attempt(client.ip, &account.username, now)
            .await?
        {
            audit!("rate_limited", client, limit = ?limit, user_id = account.id, "second step refused by the rate limit");
            metrics::login("rate_limited");
            return Err(err);
        }
        let counted = self.begin_attempt(&account, now).await.inspect_err(|_| {
            audit!(
                "rate_limited",
                client,
                limit = "account_backoff",
                user_id = account.id,
                "second step refused by the account backoff"
            );
            metrics::login("rate_limited");
        })?;

        let txn = self.db.begin().await?;
        // Single use: of two requests with one challenge, one deletes it.
        let consumed = mfa_challenge::Entity::delete_many()
            .filter(mfa_challenge::Column::Id.eq(row.id))
            .filter(mfa_challenge::Column::FailedAttempts.lt(MAX_CHALLENGE_FAILURES))
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        let accepted = consumed && self.accept_code(&txn, &account, &sealed, code, now).await?;
        if !accepted {
            txn.rollback().await?;
            if consumed {
                self.count_wrong_code(row.id).await?;
            }
            if !counted {
                self.record_failure(account.id, now).await?;
            }
            return Err(refused(Some(account.id), "wrong_code"));
        }
        let signed_in = user::Entity::update_many()
            .col_expr(user::Column::LastLogin, Expr::value(now))
            .col_expr(user::Column::FailedLogins, Expr::value(0))
            .col_expr(
                user::Column::LastFailedLogin,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(user::Column::Id.eq(account.id))
            .filter(user::Column::IsActive.eq(true))
            .filter(user::Column::TotpSecret.eq(sealed.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        if signed_in == 0 {
            return Err(refused(Some(account.id), "changed_during_login"));
        }
        let account = user::Model {
            last_login: Some(now),
            failed_logins: 0,
            last_failed_login: None,
            ..account
        };
        let issued = self.issue(&txn, &account, client, now).await?;
        txn.commit().await?;
        self.enforce_session_cap(account.id, client).await?;
        audit!(
            "mfa_passed",
            client,
            user_id = account.id,
            "MFA challenge passed"
        );
        audit!(
            "login_succeeded",
            client,
            user_id = issued.user.id,
            username = issued.user.username.as_str(),
            "login succeeded"
        );
        metrics::login("success");
        Ok(issued)
    }

    /// Accepts `code` for `account` inside `txn`: a TOTP code of a step
    /// after the last accepted one (recorded, so it is not accepted again),
    /// or an unused recovery code (deleted). Returns whether it was.
    async fn accept_code<C: ConnectionTrait>(
        &self,
        txn: &C,
        account: &user::Model,
        sealed: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        match Code::parse(code) {
            Code::Totp(code) => {
                let secret = self.sealer()?.open(account.id, sealed)?;
                let Some(step) = matching_step(secret, &code, now) else {
                    return Ok(false);
                };
                // The condition makes a replay lose even against a
                // concurrent request with the same code.
                Ok(user::Entity::update_many()
                    .col_expr(user::Column::TotpLastStep, Expr::value(step))
                    .filter(user::Column::Id.eq(account.id))
                    .filter(not_after_last_step(step))
                    .exec(txn)
                    .await?
                    .rows_affected
                    == 1)
            }
            Code::Recovery(code) => Ok(recovery_code::Entity::delete_many()
                .filter(recovery_code::Column::UserId.eq(account.id))
                .filter(recovery_code::Column::Digest.eq(sha256_hex(&code)))
                .exec(txn)
                .await?
                .rows_affected
                == 1),
            Code::Neither => Ok(false),
        }
    }

    /// Puts a challenge back after a wrong code, one failure more; at the
    /// limit it stays deleted.
    async fn count_wrong_code(&self, challenge_id: i64) -> Result<(), AuthError> {
        let Some(row) = mfa_challenge::Entity::find_by_id(challenge_id)
            .one(&self.db)
            .await?
        else {
            // The transaction that deleted it was rolled back: it is there
            // unless another request consumed it meanwhile.
            return Ok(());
        };
        if row.failed_attempts + 1 >= MAX_CHALLENGE_FAILURES {
            mfa_challenge::Entity::delete_by_id(row.id)
                .exec(&self.db)
                .await?;
        } else {
            mfa_challenge::Entity::update_many()
                .col_expr(
                    mfa_challenge::Column::FailedAttempts,
                    Expr::col(mfa_challenge::Column::FailedAttempts).add(1),
                )
                .filter(mfa_challenge::Column::Id.eq(row.id))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// Revokes every session of the user but this request's, inside `txn`.
    async fn revoke_others_in<C: ConnectionTrait>(
        &self,
        txn: &C,
        principal: &Principal,
    ) -> Result<u64, AuthError> {
        revocation::revoke_in_on_behalf_of(
            txn,
            principal,
            Some(auth_token::Column::Id.ne(principal.session_id)),
        )
        .await?
        .ok_or_else(|| self.revoker.session_gone(principal))
    }
}

/// True while `step` is after the last step accepted for the row's user.
fn not_after_last_step(step: i64) -> Condition {
    Condition::any()
        .add(user::Column::TotpLastStep.is_null())
        .add(user::Column::TotpLastStep.lt(step))
}

/// Deletes the user's recovery codes and open challenges: they belong to a
/// second factor that is being replaced or turned off.
///
/// # Errors
/// A database error.
pub(super) async fn forget_second_factors<C: ConnectionTrait>(
    conn: &C,
    user_id: i64,
) -> Result<(), sea_orm::DbErr> {
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    mfa_challenge::Entity::delete_many()
        .filter(mfa_challenge::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B, SHA-1 rows: the seed is the ASCII of
    /// "12345678901234567890"; the RFC prints 8 digits, a 6-digit code is
    /// their last six.
    #[test]
    fn rfc_6238_sha1_test_vectors() {
        let seed = b"12345678901234567890".to_vec();
        let vectors: [(u64, &str); 6] = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let generator = totp(seed);
        for (time, eight) in vectors {
            assert_eq!(
                generator.generate(time).to_string(),
                eight[2..],
                "at {time}"
            );
        }
    }

    #[test]
    fn a_code_matches_its_step_and_the_neighbouring_ones_only() {
        let secret = vec![7u8; SECRET_BYTES];
        let now = DateTime::from_timestamp(1_700_000_010, 0).unwrap();
        let step = now.timestamp() / 30;
        let code_at = |s: i64| totp(secret.clone()).generate((s * 30) as u64).to_string();
        for offset in [-1, 0, 1] {
            assert_eq!(
                matching_step(secret.clone(), &code_at(step + offset), now),
                Some(step + offset)
            );
        }
        assert_eq!(matching_step(secret.clone(), &code_at(step + 2), now), None);
        assert_eq!(matching_step(secret.clone(), &code_at(step - 2), now), None);
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_user_and_key() {
        let key: SecretKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
            .parse()
            .unwrap();
        let other: SecretKey = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
            .parse()
            .unwrap();
        let sealed = Sealer::new(&key).seal(1, b"the secret").unwrap();
        assert!(!sealed.contains("the secret"));
        assert_eq!(Sealer::new(&key).open(1, &sealed).unwrap(), b"the secret");
        assert!(Sealer::new(&key).open(2, &sealed).is_err());
        assert!(Sealer::new(&other).open(1, &sealed).is_err());
        assert_ne!(sealed, Sealer::new(&key).seal(1, b"the secret").unwrap());
    }

    #[test]
    fn recovery_codes_read_back_as_recovery_codes() {
        let code = recovery_code();
        assert_eq!(code.len(), 19, "{code}");
        assert!(matches!(Code::parse(&code), Code::Recovery(_)));
        assert!(matches!(
            Code::parse(&code.to_uppercase()),
            Code::Recovery(_)
        ));
        assert!(matches!(Code::parse(" 123 456 "), Code::Totp(_)));
        assert!(matches!(Code::parse("12345"), Code::Neither));
        assert_ne!(recovery_code(), recovery_code());
    }

    #[test]
    fn the_uri_names_issuer_and_account_encoded() {
        let uri = otpauth_uri("Acme Corp", "bob+test@example.com", "ABC");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Corp:bob%2Btest%40example.com?secret=ABC&issuer=Acme%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        assert!(qr_code_svg(&uri).unwrap().contains("<svg"));
    }
}
