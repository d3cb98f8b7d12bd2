//! What the token cache holds per cached session, beyond mini-moka's own
//! bookkeeping, counted by a counting allocator (hence a test binary of its
//! own). The user record is shared by a user's sessions, so a session adds
//! only its entry (generation, freshness, a pointer) and its principal
//! (session id, expiry, last use, the user pointer). bench/RESULTS.md has
//! the figures.

use std::sync::Arc;
use std::time::Duration;

use authql::auth::cache::TokenCache;
use authql::auth::last_used::LastUse;
use authql::auth::tokens::{Token, TokenDigest};
use authql::auth::{Principal, User};
use chrono::Utc;
use mini_moka::sync::ConcurrentCacheExt as _;

mod counting;

const SESSIONS: usize = 20_000;
const TTL: Duration = Duration::from_secs(300);
/// What a session may add to mini-moka's own cost: an entry of 24 bytes
/// and a principal of 48 (with its reference counts), and a little room.
const OURS_PER_SESSION: f64 = 80.0;

fn digests() -> Vec<TokenDigest> {
    (0..SESSIONS).map(|_| Token::generate().digest()).collect()
}

/// Bytes per entry of a mini-moka cache built as the token cache's is,
/// holding nothing: the bookkeeping any cache of these keys pays.
fn mini_moka_alone(digests: &[TokenDigest]) -> f64 {
    let before = counting::live_bytes();
    let cache = mini_moka::sync::Cache::builder()
        .max_capacity(SESSIONS as u64)
        .time_to_idle(TTL)
        .build();
    for digest in digests {
        cache.insert(digest.cache_key(), ());
    }
    cache.sync();
    let held = cache.entry_count();
    assert_eq!(held, SESSIONS as u64);
    let bytes = counting::live_bytes() - before;
    bytes as f64 / held as f64
}

fn token_cache(digests: &[TokenDigest]) -> f64 {
    let now = Utc::now();
    let user = Arc::new(User {
        id: 1,
        username: "someone".into(),
        email: None,
        email_verified: false,
        mfa_enabled: false,
        is_active: true,
        date_joined: now,
        last_login: None,
    });
    let before = counting::live_bytes();
    let cache = TokenCache::new(SESSIONS as u64, TTL);
    for (id, digest) in (1..).zip(digests) {
        let principal = Principal::new(
            Arc::clone(&user),
            id,
            now + chrono::Duration::hours(1),
            LastUse::new(now),
        );
        cache.insert(*digest, principal, cache.generation(), now);
    }
    let held = cache.len();
    assert_eq!(held, SESSIONS as u64);
    let bytes = counting::live_bytes() - before;
    bytes as f64 / held as f64
}

#[test]
fn a_cached_session_adds_little_to_mini_mokas_own_bookkeeping() {
    let digests = digests();
    let alone = mini_moka_alone(&digests);
    let ours = token_cache(&digests) - alone;
    println!(
        "per cached session: mini-moka's bookkeeping {alone:.0} bytes, authql's {ours:.0} bytes"
    );
    assert!(
        ours <= OURS_PER_SESSION,
        "a cached session costs {ours:.0} bytes beyond mini-moka's {alone:.0}, \
         more than the {OURS_PER_SESSION} budgeted"
    );
}
