//! Bearer tokens: `aql_`, 256 random bits, then a checksum of them, all in
//! URL-safe base64. The prefix lets secret scanners spot a leaked token; the
//! checksum lets the server refuse a mistyped or made-up token before it
//! touches the database. Only the SHA-256 digest of a token is stored.
//! Other one-time secrets (MFA challenges, `aqm_`) share the format under
//! their own four-character prefixes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

pub const PREFIX: &str = "aql_";
/// The prefix of an MFA challenge (the second step of a login).
pub const CHALLENGE_PREFIX: &str = "aqm_";
const RANDOM_BYTES: usize = 32;
/// 32 bytes in unpadded base64.
const BODY_LEN: usize = 43;
const CHECKSUM_BYTES: usize = 4;
/// 4 bytes in unpadded base64.
const CHECKSUM_LEN: usize = 6;
pub const TOKEN_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;

/// A bearer token. Its `Debug` output is redacted and it has no `Display`.
#[derive(Clone, Debug)]
pub struct Token(SecretString);

/// The token is not one this server could have issued.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedToken;

impl Token {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self::generate_with(PREFIX)
    }

    /// A fresh token with another four-character prefix.
    pub fn generate_with(prefix: &'static str) -> Self {
        debug_assert_eq!(prefix.len(), PREFIX.len());
        let mut random = [0u8; RANDOM_BYTES];
        // A failing OS source panics rather than yield a weak token.
        UnwrapErr(SysRng).fill_bytes(&mut random);
        let body = URL_SAFE_NO_PAD.encode(random);
        let checksum = URL_SAFE_NO_PAD.encode(checksum(&random));
        Self(format!("{prefix}{body}{checksum}").into())
    }

    /// Checks the shape and the checksum, without any lookup.
    ///
    /// # Errors
    /// When the text is not a well-formed authql token.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        Self::parse_with(text, PREFIX)
    }

    /// [`parse`](Self::parse) for a token of another prefix.
    ///
    /// # Errors
    /// When the text is not a well-formed token with that prefix.
    pub fn parse_with(text: &str, prefix: &str) -> Result<Self, MalformedToken> {
        if text.len() != prefix.len() + BODY_LEN + CHECKSUM_LEN || !text.starts_with(prefix) {
            return Err(MalformedToken);
        }
        let (body, given) = text[prefix.len()..].split_at(BODY_LEN);
        // Decoded on the stack: every request that carries a token comes
        // here, and the lengths are fixed.
        let mut random = [0u8; RANDOM_BYTES + 3];
        let mut checksum_given = [0u8; CHECKSUM_BYTES + 3];
        let random = decoded(body, &mut random, RANDOM_BYTES)?;
        let given = decoded(given, &mut checksum_given, CHECKSUM_BYTES)?;
        if bool::from(checksum(random).ct_eq(given)) {
            Ok(Self(text.to_owned().into()))
        } else {
            Err(MalformedToken)
        }
    }

    /// The token text, to hand to the client once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.expose().as_bytes()).into())
    }
}

/// `text` decoded into `buffer`, which must come to exactly `len` bytes.
fn decoded<'a>(text: &str, buffer: &'a mut [u8], len: usize) -> Result<&'a [u8], MalformedToken> {
    match URL_SAFE_NO_PAD.decode_slice(text, buffer) {
        Ok(n) if n == len => Ok(&buffer[..n]),
        _ => Err(MalformedToken),
    }
}

fn checksum(random: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let hash = Sha256::digest(random);
    let mut out = [0u8; CHECKSUM_BYTES];
    out.copy_from_slice(&hash[..CHECKSUM_BYTES]);
    out
}

/// SHA-256 of a token: what the database stores and the cache is keyed by.
/// A digest is not a secret (it cannot be turned back into a token), but it
/// is still never logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Lower-case hex, as stored in `auth_tokens.digest`.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The digest's first 128 bits: what the token cache is keyed by, 16
    /// bytes an entry less than the whole digest. A token that is not the
    /// cached one yet hits its entry needs a second preimage of 128 bits
    /// of SHA-256 (about 2^128 tries; guessing the token is about 2^256).
    pub fn cache_key(self) -> u128 {
        let mut first = [0u8; 16];
        first.copy_from_slice(&self.0[..16]);
        u128::from_le_bytes(first)
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_has_the_documented_shape() {
        let token = Token::generate();
        let text = token.expose();
        assert!(text.starts_with("aql_"));
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn a_generated_token_parses_back() {
        let token = Token::generate();
        let parsed = Token::parse(token.expose()).expect("own token parses");
        assert_eq!(parsed.digest(), token.digest());
    }

    #[test]
    fn a_challenge_parses_only_as_a_challenge() {
        let challenge = Token::generate_with(CHALLENGE_PREFIX);
        assert!(challenge.expose().starts_with("aqm_"));
        assert!(Token::parse_with(challenge.expose(), CHALLENGE_PREFIX).is_ok());
        assert!(Token::parse(challenge.expose()).is_err());
        assert!(Token::parse_with(Token::generate().expose(), CHALLENGE_PREFIX).is_err());
    }

    #[test]
    fn the_cache_key_is_the_first_half_of_the_stored_digest() {
        let digest = Token::generate().digest();
        let key = hex::encode(digest.cache_key().to_le_bytes());
        assert_eq!(key, digest.to_hex()[..32]);
        assert_ne!(digest.cache_key(), Token::generate().digest().cache_key());
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(Token::generate().expose(), Token::generate().expose());
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let text = Token::generate().expose().to_owned();
        for position in [4, 20, TOKEN_LEN - 1] {
            let mut bytes = text.clone().into_bytes();
            bytes[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(
                Token::parse(&changed).unwrap_err(),
                MalformedToken,
                "at {position}"
            );
        }
    }

    #[test]
    fn wrong_prefix_length_or_alphabet_is_refused() {
        let text = Token::generate().expose().to_owned();
        assert!(Token::parse(&text.replacen("aql_", "ghp_", 1)).is_err());
        assert!(Token::parse(&text[..TOKEN_LEN - 1]).is_err());
        assert!(Token::parse(&format!("{text}A")).is_err());
        assert!(Token::parse(&text.replacen(&text[10..11], "+", 1)).is_err());
        assert!(Token::parse("").is_err());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = Token::generate();
        let printed = format!("{token:?} {:?}", token.digest());
        assert!(!printed.contains(&token.expose()[4..]));
        assert!(!printed.contains(&token.digest().to_hex()));
    }

    #[test]
    fn the_digest_is_sha256_hex() {
        let token = Token::generate();
        let hex = token.digest().to_hex();
        assert_eq!(hex.len(), 64);
        let expected: String = Sha256::digest(token.expose().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
    }
}
