//! Automatic persisted queries, as Apollo's clients speak them: a request
//! may carry `extensions.persistedQuery { version: 1, sha256Hash }` and no
//! query; the server answers `PersistedQueryNotFound` until the client
//! sends the query with its hash once, and runs the kept text from then on.
//!
//! This module only turns a hash into a text. The text then goes through
//! [`super::DocumentCache::check`] like any other, so every bound still
//! applies to a persisted document; a text is kept here only once its
//! request passed validation (as the parsed-document cache does), weighed in
//! bytes within [`BUDGET_BYTES`].

use std::sync::Arc;

use mini_moka::sync::{Cache, ConcurrentCacheExt as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::error::Refused;

/// Memory the persisted texts may take, as weighed by [`weight`].
pub const BUDGET_BYTES: u64 = 4 * 1024 * 1024;
/// The key (64 hex digits), the `Arc` and the cache's bookkeeping.
const ENTRY_OVERHEAD: u64 = 512;

/// What a kept text of `text` costs.
fn weight(text: &str) -> u32 {
    u32::try_from(text.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// Query texts by their SHA-256, in lowercase hex.
#[derive(Clone)]
pub struct PersistedQueries {
    texts: Cache<String, Arc<str>>,
}

impl Default for PersistedQueries {
    fn default() -> Self {
        Self::with_budget(BUDGET_BYTES)
    }
}

/// `extensions.persistedQuery` as Apollo sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Extension {
    version: serde_json::Value,
    sha256_hash: String,
}

/// What a request's `persistedQuery` extension asks for.
pub enum Lookup {
    /// No extension: the request's query is used as it is.
    None,
    /// The kept text of a known hash.
    Found(Arc<str>),
    /// The query matches its hash; keep it once it validates.
    Register { hash: String },
}

impl PersistedQueries {
    pub fn with_budget(bytes: u64) -> Self {
        Self {
            texts: Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, text: &Arc<str>| weight(text))
                .build(),
        }
    }

    /// Reads the `persistedQuery` extension of a request whose query text is
    /// `query` (empty when the client sent only the hash).
    ///
    /// # Errors
    /// `PersistedQueryNotFound` (code `PERSISTED_QUERY_NOT_FOUND`) for an
    /// unknown hash without a query, as Apollo's clients expect before they
    /// retry with the text; `BAD_USER_INPUT` for a malformed extension, a
    /// version other than 1, or a query whose SHA-256 is not the hash.
    pub fn lookup(
        &self,
        extension: Option<&async_graphql::Value>,
        query: &str,
    ) -> Result<Lookup, Refused> {
        let Some(extension) = extension else {
            return Ok(Lookup::None);
        };
        let extension = extension
            .clone()
            .into_json()
            .ok()
            .and_then(|json| serde_json::from_value::<Extension>(json).ok())
            .ok_or_else(|| {
                Refused::new(
                    "PERSISTED_QUERY_MALFORMED",
                    "extensions.persistedQuery takes { version: 1, sha256Hash }",
                )
            })?;
        if extension.version != serde_json::json!(1) {
            return Err(Refused::new(
                "PERSISTED_QUERY_VERSION",
                "only version 1 of persisted queries is supported",
            ));
        }
        let hash = extension.sha256_hash.to_ascii_lowercase();
        if query.is_empty() {
            return match self.texts.get(&hash) {
                Some(text) => Ok(Lookup::Found(text)),
                None => Err(Refused::not_found_persisted()),
            };
        }
        if sha256_hex(query) != hash {
            return Err(Refused::new(
                "PERSISTED_QUERY_HASH_MISMATCH",
                "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query",
            ));
        }
        Ok(Lookup::Register { hash })
    }

    /// Keeps `text` under `hash` (the caller checked they match).
    pub fn keep(&self, hash: String, text: &str) {
        self.texts.insert(hash, Arc::from(text));
    }

    /// How many texts are kept (after pending housekeeping).
    pub fn len(&self) -> u64 {
        self.texts.sync();
        self.texts.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The summed weight of the kept texts.
    pub fn weighed_bytes(&self) -> u64 {
        self.texts.sync();
        self.texts.weighted_size()
    }
}

/// The SHA-256 of `text` in lowercase hex, as `sha256Hash` carries it.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extension(hash: &str) -> async_graphql::Value {
        async_graphql::Value::from_json(serde_json::json!({ "version": 1, "sha256Hash": hash }))
            .unwrap()
    }

    #[test]
    fn an_unknown_hash_is_not_found_and_a_wrong_one_is_refused() {
        let persisted = PersistedQueries::default();
        let hash = sha256_hex("{ me { id } }");
        let err = persisted.lookup(Some(&extension(&hash)), "").err().unwrap();
        assert_eq!(err.message, "PersistedQueryNotFound");
        let err = persisted
            .lookup(Some(&extension(&hash)), "{ me { username } }")
            .err()
            .unwrap();
        assert_eq!(err.reason, "PERSISTED_QUERY_HASH_MISMATCH");
        assert!(matches!(
            persisted.lookup(Some(&extension(&hash)), "{ me { id } }"),
            Ok(Lookup::Register { .. })
        ));
        persisted.keep(hash.clone(), "{ me { id } }");
        assert!(
            matches!(persisted.lookup(Some(&extension(&hash)), ""), Ok(Lookup::Found(t)) if &*t == "{ me { id } }")
        );
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let persisted = PersistedQueries::with_budget(64 * 1024);
        for i in 0..1000 {
            let text = format!("{{ me {{ id }} a{i}: me {{ username }} }}");
            persisted.keep(sha256_hex(&text), &text);
        }
        assert!(persisted.weighed_bytes() <= 64 * 1024);
        assert!(!persisted.is_empty());
    }
}
