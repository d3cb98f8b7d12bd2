//! Passwords: normalisation, the policy a new password must pass, and
//! bcrypt hashing on threads of its own (`super::hash_pool`) with a bound
//! on how many hashes run at once.

use std::sync::Arc;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization as _;

use super::hash_pool::HashPool;

/// bcrypt reads at most 72 bytes. The `bcrypt` crate appends a NUL and
/// truncates to 72, so a 72-byte password keeps every byte (only the NUL is
/// lost) while its `non_truncating_*` functions would refuse it. We allow up
/// to 72 bytes, refuse longer ones in the policy, and never let a longer
/// password reach bcrypt, so nothing is ever silently truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// How long a hash waits for a free slot before the request is refused as an
/// overload, so a flood cannot queue work without bound.
const HASH_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every hashing slot stayed busy for [`HASH_QUEUE_TIMEOUT`].
#[derive(Debug)]
pub struct HasherBusy;

impl std::fmt::Display for HasherBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every bcrypt slot is busy")
    }
}

impl std::error::Error for HasherBusy {}

/// A password as typed, NFC-normalised so that the same characters typed on
/// two keyboards are the same password. Redacted in `Debug`; no `Display`.
#[derive(Clone, Debug)]
pub struct Password(SecretString);

impl Password {
    pub fn new(raw: &str) -> Self {
        Self(raw.nfc().collect::<String>().into())
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    fn fits_bcrypt(&self) -> bool {
        self.expose().len() <= MAX_PASSWORD_BYTES
    }
}

/// Why a new password was refused (`extensions.reasons`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyViolation {
    TooShort,
    TooLong,
    Common,
    SimilarToUsername,
    SameAsOld,
}

impl PolicyViolation {
    pub fn code(self) -> &'static str {
        match self {
            Self::TooShort => "TOO_SHORT",
            Self::TooLong => "TOO_LONG",
            Self::Common => "COMMON_PASSWORD",
            Self::SimilarToUsername => "SIMILAR_TO_USERNAME",
            Self::SameAsOld => "SAME_AS_OLD_PASSWORD",
        }
    }

    pub fn describe(self, policy: &PasswordPolicy) -> String {
        match self {
            Self::TooShort => format!("it is shorter than {} characters", policy.min_length),
            Self::TooLong => format!("it is longer than {MAX_PASSWORD_BYTES} bytes"),
            Self::Common => "it is a commonly used or easily guessed password".into(),
            Self::SimilarToUsername => "it is the username or too similar to it".into(),
            Self::SameAsOld => "it is the same as the current password".into(),
        }
    }
}

/// The rules of NIST SP 800-63B-4 for a chosen password: a minimum length,
/// bcrypt's maximum, no common or easily guessed password, nothing built on
/// the username, not the old one. No composition rules.
#[derive(Clone, Debug)]
pub struct PasswordPolicy {
    pub min_length: usize,
}

/// A password that passed the policy.
#[derive(Debug)]
pub struct NewPassword(Password);

impl NewPassword {
    /// Checks every rule and reports every one that failed.
    ///
    /// # Errors
    /// The list of failed rules, in a stable order.
    pub fn parse(
        candidate: Password,
        username: &str,
        old: Option<&Password>,
        policy: &PasswordPolicy,
    ) -> Result<Self, Vec<PolicyViolation>> {
        let text = candidate.expose();
        let mut failed = Vec::new();
        if text.chars().count() < policy.min_length {
            failed.push(PolicyViolation::TooShort);
        }
        if !candidate.fits_bcrypt() {
            failed.push(PolicyViolation::TooLong);
        }
        if is_common(text, username) {
            failed.push(PolicyViolation::Common);
        }
        if is_similar_to_username(text, username) {
            failed.push(PolicyViolation::SimilarToUsername);
        }
        if old.is_some_and(|old| old.expose() == text) {
            failed.push(PolicyViolation::SameAsOld);
        }
        if failed.is_empty() {
            Ok(Self(candidate))
        } else {
            Err(failed)
        }
    }

    pub fn as_password(&self) -> &Password {
        &self.0
    }
}

/// zxcvbn matches the password against its embedded list of 30,000 common
/// passwords (with l33t and reversed variants), English words and names,
/// keyboard walks, repeats, sequences and dates. A password it can guess in
/// at most 10^6 tries is refused as common.
fn is_common(password: &str, username: &str) -> bool {
    // zxcvbn's cost grows with length; bcrypt's limit already refuses longer.
    let sample: String = password.chars().take(MAX_PASSWORD_BYTES).collect();
    if sample.is_empty() {
        return true;
    }
    let estimate = zxcvbn::zxcvbn(&sample, &[username]);
    estimate.score() <= zxcvbn::Score::One
}

/// The username, case-insensitively, inside the password or the password
/// inside the username.
fn is_similar_to_username(password: &str, username: &str) -> bool {
    let password = password.to_lowercase();
    let username = username.to_lowercase();
    if username.chars().count() < 3 {
        return password == username;
    }
    password.contains(&username) || username.contains(&password)
}

/// Hashes and verifies with bcrypt on hashing threads of its own (below the
/// async workers' priority, see [`HashPool`]), at most `concurrency` at
/// once, so that a flood of logins queues here instead of taking every core
/// from the requests that need none.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    permits: Arc<Semaphore>,
    /// As many threads as permits.
    pool: Arc<HashPool>,
    /// Verified against when the user is unknown or inactive, so that such
    /// a login takes as long as a real one.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    /// Makes the dummy hash at `cost`, so it costs what a real one does.
    ///
    /// # Errors
    /// When bcrypt fails (an invalid cost).
    pub async fn new(cost: u32, concurrency: usize) -> anyhow::Result<Self> {
        let concurrency = concurrency.max(1);
        let pool = HashPool::new(concurrency).context("cannot start the hashing threads")?;
        let dummy = pool
            .run(move || bcrypt::hash(crate::auth::tokens::Token::generate().expose(), cost))
            .await
            .context("dummy hash task failed")?
            .context("cannot make the dummy bcrypt hash")?;
        Ok(Self {
            cost,
            permits: Arc::new(Semaphore::new(concurrency)),
            pool: Arc::new(pool),
            dummy_hash: dummy.into(),
        })
    }

    /// # Errors
    /// When the password is over 72 bytes or bcrypt fails.
    pub async fn hash(&self, password: &NewPassword) -> anyhow::Result<String> {
        self.hash_password(password.as_password()).await
    }

    /// Re-hashes a password that was just verified (for a cost upgrade).
    async fn hash_password(&self, password: &Password) -> anyhow::Result<String> {
        anyhow::ensure!(password.fits_bcrypt(), "password longer than 72 bytes");
        let password = password.clone();
        let cost = self.cost;
        self.run(move || bcrypt::hash(password.expose(), cost))
            .await?
            .context("bcrypt hash failed")
    }

    /// Verifies `password` against `hash`, or against the dummy hash when
    /// there is no user, so that both take the same time. A password over
    /// 72 bytes never matches (bcrypt would compare only its first 72).
    ///
    /// # Errors
    /// When the blocking task fails or the stored hash is unreadable.
    pub async fn verify(&self, password: &Password, hash: Option<&str>) -> anyhow::Result<bool> {
        let usable = password.fits_bcrypt() && hash.is_some();
        let hash: Arc<str> = hash.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let password = password.clone();
        let matched = self
            .run(move || bcrypt::verify(password.expose(), &hash))
            .await?
            // bcrypt's own error quotes the stored hash: keep it out of logs.
            .map_err(|_| anyhow::anyhow!("the stored password hash is not a bcrypt hash"))?;
        Ok(usable && matched)
    }

    /// True when `hash` was made at another cost than the configured one.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        bcrypt_cost(hash) != Some(self.cost)
    }

    /// Upgrades a just-verified password's hash, if its cost is not current.
    ///
    /// # Errors
    /// When hashing fails.
    pub async fn rehash_if_needed(
        &self,
        password: &Password,
        hash: &str,
    ) -> anyhow::Result<Option<String>> {
        if self.needs_rehash(hash) {
            self.hash_password(password).await.map(Some)
        } else {
            Ok(None)
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        // The permit moves into the hashing thread: if the request is
        // dropped mid-hash, the slot stays taken until the hash really ends.
        let permit = tokio::time::timeout(HASH_QUEUE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HasherBusy)?
            .context("hash semaphore closed")?;
        self.pool
            .run(move || {
                let _permit = permit;
                work()
            })
            .await
            .context("bcrypt task failed")
    }
}

/// The cost field of a `$2?$NN$…` hash.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy { min_length: 15 }
    }

    fn check(candidate: &str, username: &str, old: Option<&str>) -> Vec<PolicyViolation> {
        let old = old.map(Password::new);
        NewPassword::parse(Password::new(candidate), username, old.as_ref(), &policy())
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn a_long_unusual_passphrase_passes() {
        assert!(check("correct horse battery staple", "alice", None).is_empty());
    }

    #[test]
    fn length_counts_code_points_not_bytes() {
        // 14 characters, 28 bytes: too short despite its bytes.
        assert_eq!(
            check("ééééééééééééé1", "alice", None).first(),
            Some(&PolicyViolation::TooShort)
        );
        // 15 characters of mixed scripts pass the length rule.
        assert!(!check("日本語のパスワードはとても長い", "alice", None)
            .contains(&PolicyViolation::TooShort));
    }

    #[test]
    fn passwords_over_72_bytes_are_refused() {
        let at_71 = format!("{}{}", "Vq7#kLm2pZ9x".repeat(5), "Rt8wNb3yHcX");
        let at_72 = format!("{at_71}J");
        let at_73 = format!("{at_72}u");
        assert_eq!((at_71.len(), at_72.len(), at_73.len()), (71, 72, 73));
        assert!(!check(&at_71, "alice", None).contains(&PolicyViolation::TooLong));
        assert!(!check(&at_72, "alice", None).contains(&PolicyViolation::TooLong));
        assert!(check(&at_73, "alice", None).contains(&PolicyViolation::TooLong));
    }

    #[test]
    fn the_byte_limit_applies_to_multibyte_characters() {
        // 24 three-byte characters are 72 bytes; one more is 75.
        let at_72 = "語".repeat(24);
        let at_75 = "語".repeat(25);
        assert!(!check(&at_72, "alice", None).contains(&PolicyViolation::TooLong));
        assert!(check(&at_75, "alice", None).contains(&PolicyViolation::TooLong));
    }

    #[test]
    fn common_and_predictable_passwords_are_refused() {
        for common in [
            "passwordpassword",
            "qwertyuiopasdfghjkl",
            "123456789012345",
            "aaaaaaaaaaaaaaaa",
        ] {
            assert!(
                check(common, "alice", None).contains(&PolicyViolation::Common),
                "{common}"
            );
        }
    }

    #[test]
    fn the_username_may_not_be_the_password() {
        assert!(check("Wonderland-Alice-Liddell", "alice", None)
            .contains(&PolicyViolation::SimilarToUsername));
        assert!(check("verylongusernamehere", "verylongusernamehere", None)
            .contains(&PolicyViolation::SimilarToUsername));
    }

    #[test]
    fn the_old_password_may_not_be_reused() {
        let same = "correct horse battery staple";
        assert_eq!(
            check(same, "alice", Some(same)),
            vec![PolicyViolation::SameAsOld]
        );
    }

    #[test]
    fn every_failed_rule_is_reported() {
        let failed = check("alice", "alice", Some("alice"));
        assert!(failed.contains(&PolicyViolation::TooShort));
        assert!(failed.contains(&PolicyViolation::Common));
        assert!(failed.contains(&PolicyViolation::SimilarToUsername));
        assert!(failed.contains(&PolicyViolation::SameAsOld));
    }

    #[test]
    fn composed_and_decomposed_forms_are_one_password() {
        let composed = Password::new("caf\u{e9} au lait, s'il vous pla\u{ee}t");
        let decomposed = Password::new("cafe\u{301} au lait, s'il vous plai\u{302}t");
        assert_eq!(composed.expose(), decomposed.expose());
    }

    #[tokio::test]
    async fn hashing_keeps_every_one_of_72_bytes() {
        let hasher = PasswordHasher::new(4, 2).await.unwrap();
        let base = "x".repeat(71);
        let stored = NewPassword(Password::new(&format!("{base}A")));
        let hash = hasher.hash(&stored).await.unwrap();
        assert!(hasher
            .verify(&Password::new(&format!("{base}A")), Some(&hash))
            .await
            .unwrap());
        assert!(!hasher
            .verify(&Password::new(&format!("{base}B")), Some(&hash))
            .await
            .unwrap());
        // bcrypt would see only the first 72 bytes: refuse, never truncate.
        assert!(!hasher
            .verify(&Password::new(&format!("{base}AZ")), Some(&hash))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let hasher = PasswordHasher::new(4, 1).await.unwrap();
        assert!(!hasher
            .verify(&Password::new("anything at all"), None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_hash_of_another_cost_needs_rehash() {
        let hasher = PasswordHasher::new(5, 1).await.unwrap();
        let old = bcrypt::hash("some password", 4).unwrap();
        assert!(hasher.needs_rehash(&old));
        let current = bcrypt::hash("some password", 5).unwrap();
        assert!(!hasher.needs_rehash(&current));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let printed = format!("{:?}", Password::new("hunter2-but-longer"));
        assert!(!printed.contains("hunter2"));
    }
}
