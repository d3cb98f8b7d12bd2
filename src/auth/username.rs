//! Usernames, in one canonical form: NFKC-normalised and lower-cased, so
//! that "Alice", "ALICE" and a full-width "Ａｌｉｃｅ" are one account and
//! one throttling key; and the form in which an attempted name is logged.

use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rand::Rng as _;
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization as _;

pub const MAX_LEN: usize = 150;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Letters, digits and `@ . + - _` (Django's rule), 1 to 150 of them.
    ///
    /// # Errors
    /// Every rule the name breaks, as reason codes.
    pub fn parse(raw: &str) -> Result<Self, Vec<&'static str>> {
        let canonical: String = raw.trim().nfkc().flat_map(char::to_lowercase).collect();
        let mut failed = Vec::new();
        let len = canonical.chars().count();
        if len == 0 {
            failed.push("EMPTY");
        }
        if len > MAX_LEN {
            failed.push("TOO_LONG");
        }
        if !canonical
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c))
        {
            failed.push("INVALID_CHARACTERS");
        }
        if failed.is_empty() {
            Ok(Self(canonical))
        } else {
            Err(failed)
        }
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Hex digits of a [`UsernameHasher`] hash: 64 bits, plenty to tell apart
/// the names seen in one process's logs.
const HASH_HEX_LEN: usize = 16;

/// Turns the name a login attempt typed into a keyed hash for its log lines
/// (`username_hash`). What is typed into the username field is sometimes a
/// password; its hash lets an operator see that attempts share a name
/// without the log recording the name. Keyed, so that a short or common
/// secret cannot be found by hashing guesses; the key comes from the OS
/// CSPRNG at start, so hashes compare within one process only.
pub struct UsernameHasher {
    /// HMAC-SHA256 keyed and ready; each hash works on a copy.
    mac: Hmac<Sha256>,
}

impl UsernameHasher {
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        UnwrapErr(SysRng).fill_bytes(&mut key);
        // HMAC takes a key of any length: this cannot fail.
        let mac = Hmac::new_from_slice(&key).expect("HMAC accepts any key length");
        Self { mac }
    }

    /// The first 64 bits of HMAC-SHA256(key, name), in lower-case hex.
    pub fn hash(&self, name: &str) -> String {
        use std::fmt::Write as _;
        let mut mac = self.mac.clone();
        mac.update(name.as_bytes());
        let tag = mac.finalize().into_bytes();
        tag.iter().take(HASH_HEX_LEN / 2).fold(
            String::with_capacity(HASH_HEX_LEN),
            |mut out, byte| {
                let _ = write!(out, "{byte:02x}");
                out
            },
        )
    }
}

impl Default for UsernameHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for UsernameHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsernameHasher([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_hashes_alike_and_two_names_differ() {
        let hasher = UsernameHasher::new();
        let hash = hasher.hash("s3cr3t-hunter2-typed-as-a-name");
        assert_eq!(hash, hasher.hash("s3cr3t-hunter2-typed-as-a-name"));
        assert_ne!(hash, hasher.hash("s3cr3t-hunter3-typed-as-a-name"));
        assert_ne!(hasher.hash("alice"), hasher.hash("bob"));
        assert_eq!(hash.len(), HASH_HEX_LEN);
        assert!(hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn a_hash_never_contains_what_was_hashed() {
        let hasher = UsernameHasher::new();
        for name in [
            "correct horse battery staple",
            "s3cr3t-P@ssw0rd!",
            "hunter2hunter2hunter2",
            "zoë-ünïcode-päss",
        ] {
            let hash = hasher.hash(name);
            assert!(!hash.contains(name), "{hash} contains {name}");
            // Not even a telling piece of it.
            assert!(!hash.contains("s3cr3t") && !hash.contains("hunter"));
        }
    }

    #[test]
    fn the_key_is_drawn_per_hasher_and_never_printed() {
        let (one, other) = (UsernameHasher::new(), UsernameHasher::new());
        assert_ne!(one.hash("alice"), other.hash("alice"));
        assert_eq!(format!("{one:?}"), "UsernameHasher([redacted])");
    }

    #[test]
    fn case_and_width_variants_are_one_name() {
        let canonical = Username::parse("alice").unwrap();
        assert_eq!(Username::parse("Alice").unwrap(), canonical);
        assert_eq!(Username::parse(" ALICE ").unwrap(), canonical);
        assert_eq!(Username::parse("Ａｌｉｃｅ").unwrap(), canonical);
    }

    #[test]
    fn allowed_punctuation_passes() {
        assert!(Username::parse("a.b+c-d_e@example.com").is_ok());
        assert!(Username::parse("zoë").is_ok());
    }

    #[test]
    fn bad_names_report_every_rule() {
        assert_eq!(Username::parse("").unwrap_err(), vec!["EMPTY"]);
        assert_eq!(
            Username::parse("a b").unwrap_err(),
            vec!["INVALID_CHARACTERS"]
        );
        assert_eq!(
            Username::parse(&"x;".repeat(80)).unwrap_err(),
            vec!["TOO_LONG", "INVALID_CHARACTERS"]
        );
    }
}
