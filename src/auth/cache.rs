//! The token cache: mini-moka in front of the database, keyed by the first
//! half of the token's digest ([`TokenDigest::cache_key`]).
//!
//! mini-moka cannot invalidate by predicate, so revoking every token of a
//! user cannot find that user's entries. Instead each user has a revocation
//! mark: a value of a global counter, taken when a revocation of that user
//! committed. An entry remembers the counter's value from *before* its
//! database read; an entry older than its user's mark is stale and dropped.
//! Reading the counter before the database closes the race in which a
//! request reads a row just before it is deleted and caches it just after.

mod marks;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mini_moka::sync::{Cache, ConcurrentCacheExt as _};

use self::marks::RevocationMarks;
use super::tokens::TokenDigest;
use super::{Principal, User};

#[derive(Clone)]
struct Entry {
    principal: Arc<Principal>,
    /// The counter's value before the database read that produced this.
    generation: u64,
    /// Trusted until then: the earlier of the token's expiry and `cache-ttl`,
    /// in whole seconds (rounded down) since 1970. 4 bytes where a
    /// `DateTime` took 12, which brings an entry to 24 bytes; past 2106 it
    /// saturates and every lookup misses.
    fresh_until_secs: u32,
    /// And in any case only until `cache-ttl` after the read began, in whole
    /// seconds (rounded up) of the monotonic clock since the cache was made:
    /// a wall clock stepped back must not stretch the trust past the life
    /// of the revocation marks.
    trusted_until_secs: u32,
}

/// What a cache lookup found.
pub enum Lookup {
    /// A live entry, to be checked against the token's expiry by the caller.
    Hit(Arc<Principal>),
    /// Nothing usable: read the database.
    Miss,
}

#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when `cache-capacity` is 0.
    entries: Option<Cache<u128, Entry>>,
    /// user id → the record the user's cached sessions share, so that a
    /// user with many sessions is held once (`None` with the cache off).
    users: Option<Cache<i64, Arc<User>>>,
    /// user id → the counter's value at the user's latest revocation.
    revoked: RevocationMarks,
    counter: AtomicU64,
    /// Entries read before this counter value are stale (set by `clear`).
    floor: AtomicU64,
    /// While set, the cache is bypassed: on PostgreSQL, when this instance
    /// is not listening for other instances' revocations.
    bypassed: AtomicBool,
    ttl: chrono::Duration,
    ttl_std: Duration,
    /// Where `Entry::trusted_until_secs` counts from.
    epoch: Instant,
}

/// Where a database read for the cache started: the counter's value and
/// the time.
#[derive(Clone, Copy, Debug)]
pub struct ReadTicket {
    generation: u64,
    started: Instant,
}

impl TokenCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        // An entry is trusted until its `fresh_until_secs`, which every hit
        // checks; mini-moka only has to free what nobody reads any more.
        // Its time-to-idle does that with the queue it keeps anyway (a
        // time-to-live would keep a second one, 32 bytes an entry). Idle
        // time counts from a read no earlier than the insert, so no entry
        // is freed while trusted; a read after its trust ends removes it,
        // so every entry is freed within about twice `ttl` of its insert
        // (in mini-moka's housekeeping, which runs on cache activity).
        let entries = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(ttl)
                .build()
        });
        // The records users' sessions share, as many as there can be
        // sessions, freed once unread for `ttl`. A record is never trusted
        // on its own: an entry holds the one it was read with, as fresh as
        // itself, and a newer read replaces a record that differs.
        let users = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(ttl)
                .build()
        });
        // A mark must outlive the trust of every entry it can veto. Such an
        // entry's read began before the mark was set, and its trust ends
        // at most `ttl` after that, on the monotonic clock (rounded up to
        // a second, and `cache-ttl` is whole seconds): a mark kept twice
        // `ttl` outlives it.
        let revoked = RevocationMarks::new(ttl.saturating_mul(2));
        Self {
            inner: Arc::new(Inner {
                entries,
                users,
                revoked,
                counter: AtomicU64::new(1),
                floor: AtomicU64::new(0),
                bypassed: AtomicBool::new(false),
                ttl_std: ttl,
                ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
                epoch: Instant::now(),
            }),
        }
    }

    #[cfg(test)]
    fn is_enabled(&self) -> bool {
        self.inner.entries.is_some()
    }

    /// Call before reading the database for a token; pass the ticket to
    /// [`insert`](Self::insert).
    pub fn generation(&self) -> ReadTicket {
        ReadTicket {
            generation: self.inner.counter.load(Ordering::SeqCst),
            started: Instant::now(),
        }
    }

    pub fn get(&self, digest: &TokenDigest, now: DateTime<Utc>) -> Lookup {
        let Some(entries) = self.active() else {
            return Lookup::Miss;
        };
        let key = digest.cache_key();
        let Some(entry) = entries.get(&key) else {
            return Lookup::Miss;
        };
        let revoked_at = self
            .inner
            .revoked
            .get(entry.principal.user.id)
            .max(self.inner.floor.load(Ordering::SeqCst));
        if entry.generation < revoked_at
            || now.timestamp() >= i64::from(entry.fresh_until_secs)
            || self.inner.epoch.elapsed().as_secs() >= u64::from(entry.trusted_until_secs)
        {
            entries.invalidate(&key);
            // An expired token must still be reported as expired, which the
            // caller learns from the database row.
            return Lookup::Miss;
        }
        Lookup::Hit(entry.principal)
    }

    pub fn insert(
        &self,
        digest: TokenDigest,
        principal: impl Into<Arc<Principal>>,
        ticket: ReadTicket,
        now: DateTime<Utc>,
    ) {
        // A revocation mark outlives an entry only if the entry is inserted
        // within `ttl` of its read; a slower read is not cached.
        if ticket.started.elapsed() >= self.inner.ttl_std {
            return;
        }
        let generation = ticket.generation;
        if let Some(entries) = self.active() {
            let principal = principal.into();
            let fresh_until = principal.expires_at().min(now + self.inner.ttl);
            let fresh_until_secs =
                u32::try_from(fresh_until.timestamp().max(0)).unwrap_or(u32::MAX);
            let deadline = ticket
                .started
                .saturating_duration_since(self.inner.epoch)
                .saturating_add(self.inner.ttl_std);
            let deadline_secs = deadline
                .as_secs()
                .saturating_add(u64::from(deadline.subsec_nanos() > 0));
            entries.insert(
                digest.cache_key(),
                Entry {
                    principal,
                    generation,
                    fresh_until_secs,
                    trusted_until_secs: u32::try_from(deadline_secs).unwrap_or(u32::MAX),
                },
            );
        }
    }

    /// The shared record for `user`, as just read from the database: the one
    /// already held when it is the same, else `user`, which replaces it
    /// (entries made from the older record keep theirs until they are
    /// reloaded, as they would unshared).
    pub fn share_user(&self, user: User) -> Arc<User> {
        let Some(users) = &self.inner.users else {
            return Arc::new(user);
        };
        if let Some(held) = users.get(&user.id) {
            if *held == user {
                return held;
            }
        }
        let user = Arc::new(user);
        users.insert(user.id, Arc::clone(&user));
        user
    }

    /// Drops one token's entry.
    pub fn remove(&self, digest: &TokenDigest) {
        if let Some(entries) = &self.inner.entries {
            entries.invalidate(&digest.cache_key());
        }
    }

    /// Vetoes every entry of `user_id` read before now. Call after the
    /// database change has committed.
    pub fn revoke_user(&self, user_id: i64) {
        // Two revocations of one user may race: `raise` keeps the larger
        // mark, or an entry read between them would survive the later one.
        let mark = self.inner.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.revoked.raise(user_id, mark);
    }

    /// Forgets everything, including entries being loaded right now, e.g.
    /// when revocations from other instances may have been missed.
    pub fn clear(&self) {
        let floor = self.inner.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.floor.store(floor, Ordering::SeqCst);
        if let Some(entries) = &self.inner.entries {
            entries.invalidate_all();
        }
    }

    /// Stops (`true`) or resumes (`false`) trusting the cache. Resuming
    /// clears it first, so nothing from before is trusted.
    pub fn set_bypassed(&self, bypassed: bool) {
        if !bypassed {
            self.clear();
        }
        self.inner.bypassed.store(bypassed, Ordering::SeqCst);
        if bypassed {
            self.clear();
        }
    }

    /// True while the cache is bypassed (see [`set_bypassed`](Self::set_bypassed)).
    pub fn is_bypassed(&self) -> bool {
        self.inner.bypassed.load(Ordering::SeqCst)
    }

    fn active(&self) -> Option<&Cache<u128, Entry>> {
        if self.inner.bypassed.load(Ordering::SeqCst) {
            return None;
        }
        self.inner.entries.as_ref()
    }

    /// Entries held now, for metrics. mini-moka counts lazily, during its
    /// housekeeping, so run that first (off the request path: only the
    /// metrics scrape asks).
    pub fn len(&self) -> u64 {
        self.inner.entries.as_ref().map_or(0, |entries| {
            entries.sync();
            entries.entry_count()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::Token;

    fn principal(user_id: i64, expires_at: DateTime<Utc>) -> Principal {
        let user = Arc::new(User {
            id: user_id,
            username: format!("user{user_id}"),
            email: None,
            email_verified: false,
            mfa_enabled: false,
            is_active: true,
            date_joined: Utc::now(),
            last_login: None,
        });
        let last_used = crate::auth::last_used::LastUse::new(expires_at);
        Principal::new(user, 1, expires_at, last_used)
    }

    /// Caches a session of user 1 that expires in an hour, read just now.
    fn insert_live(cache: &TokenCache, digest: TokenDigest, now: DateTime<Utc>) {
        let principal = principal(1, now + chrono::Duration::hours(1));
        cache.insert(digest, principal, cache.generation(), now);
    }

    fn hit(lookup: Lookup) -> bool {
        matches!(lookup, Lookup::Hit(_))
    }

    #[test]
    fn an_entry_and_its_principal_stay_small() {
        // mini-moka holds an entry inline, in an allocation of its own (with
        // 16 bytes of its bookkeeping): 40 bytes, where 8 more made it 48.
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        // With the two reference counts: 48 bytes, where 8 more made it 56.
        assert_eq!(std::mem::size_of::<Principal>(), 32);
    }

    #[test]
    fn a_principal_keeps_its_expiry_to_the_microsecond() {
        let expires_at = crate::clock::Clock::default().now() + chrono::Duration::hours(1);
        let principal = principal(1, expires_at);
        assert_eq!(principal.expires_at(), expires_at);
        assert!(principal.is_live_at(expires_at - chrono::Duration::microseconds(1)));
        assert!(!principal.is_live_at(expires_at));
    }

    #[test]
    fn an_inserted_entry_is_found() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let digest = Token::generate().digest();
        let now = Utc::now();
        insert_live(&cache, digest, now);
        assert!(hit(cache.get(&digest, now)));
    }

    #[test]
    fn an_entry_is_not_trusted_past_cache_ttl_or_expiry() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let now = Utc::now();
        let long_lived = Token::generate().digest();
        insert_live(&cache, long_lived, now);
        assert!(!hit(
            cache.get(&long_lived, now + chrono::Duration::seconds(61))
        ));

        let short_lived = Token::generate().digest();
        cache.insert(
            short_lived,
            principal(1, now + chrono::Duration::seconds(5)),
            cache.generation(),
            now,
        );
        assert!(!hit(
            cache.get(&short_lived, now + chrono::Duration::seconds(5))
        ));
    }

    #[test]
    fn revoking_a_user_drops_all_of_that_users_entries_only() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        let (a1, a2, b) = (
            Token::generate().digest(),
            Token::generate().digest(),
            Token::generate().digest(),
        );
        cache.insert(a1, principal(1, later), cache.generation(), now);
        cache.insert(a2, principal(1, later), cache.generation(), now);
        cache.insert(b, principal(2, later), cache.generation(), now);
        cache.revoke_user(1);
        assert!(!hit(cache.get(&a1, now)));
        assert!(!hit(cache.get(&a2, now)));
        assert!(hit(cache.get(&b, now)));
    }

    #[test]
    fn revocation_marks_live_twice_cache_ttl() {
        let ttl = Duration::from_secs(60);
        let cache = TokenCache::new(10, ttl);
        assert_eq!(cache.inner.revoked.life(), ttl * 2);
    }

    #[test]
    fn an_entry_read_before_a_revocation_but_inserted_after_is_stale() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let now = Utc::now();
        let digest = Token::generate().digest();
        let read_at = cache.generation();
        cache.revoke_user(1);
        cache.insert(
            digest,
            principal(1, now + chrono::Duration::hours(1)),
            read_at,
            now,
        );
        assert!(!hit(cache.get(&digest, now)));
    }

    #[test]
    fn clearing_vetoes_entries_being_loaded() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let now = Utc::now();
        let digest = Token::generate().digest();
        let read_at = cache.generation();
        cache.clear();
        cache.insert(
            digest,
            principal(1, now + chrono::Duration::hours(1)),
            read_at,
            now,
        );
        assert!(!hit(cache.get(&digest, now)));
    }

    #[test]
    fn a_bypassed_cache_neither_serves_nor_keeps() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let now = Utc::now();
        let digest = Token::generate().digest();
        insert_live(&cache, digest, now);
        cache.set_bypassed(true);
        assert!(!hit(cache.get(&digest, now)));
        insert_live(&cache, digest, now);
        cache.set_bypassed(false);
        assert!(!hit(cache.get(&digest, now)));
    }

    #[test]
    fn a_read_slower_than_cache_ttl_is_not_cached() {
        let cache = TokenCache::new(10, Duration::from_millis(5));
        let now = Utc::now();
        let digest = Token::generate().digest();
        let ticket = cache.generation();
        std::thread::sleep(Duration::from_millis(10));
        cache.insert(
            digest,
            principal(1, now + chrono::Duration::hours(1)),
            ticket,
            now,
        );
        assert!(!hit(cache.get(&digest, now)));
    }

    #[test]
    fn the_entry_count_is_current_even_after_an_idle_spell() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(600));
        let now = Utc::now();
        insert_live(&cache, Token::generate().digest(), now);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_wall_clock_stepped_back_does_not_stretch_the_trust() {
        let ttl = Duration::from_secs(1);
        let cache = TokenCache::new(10, ttl);
        // The wall clock stands still (as if stepped back) while the entry
        // is read often enough for mini-moka to keep it.
        let now = Utc::now();
        let digest = Token::generate().digest();
        insert_live(&cache, digest, now);
        let started = Instant::now();
        assert!(hit(cache.get(&digest, now)));
        let mut trusted_for = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
            if !hit(cache.get(&digest, now)) {
                break;
            }
            trusted_for = started.elapsed();
        }
        // `ttl` rounded up to the next whole second of the cache's clock.
        assert!(trusted_for < Duration::from_secs(2), "{trusted_for:?}");
    }

    #[test]
    fn an_entry_nobody_reads_is_freed_after_cache_ttl() {
        let ttl = Duration::from_millis(200);
        let cache = TokenCache::new(10, ttl);
        let now = Utc::now();
        insert_live(&cache, Token::generate().digest(), now);
        assert_eq!(cache.len(), 1);
        std::thread::sleep(ttl + ttl / 2);
        // Gone, not merely untrusted.
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn capacity_zero_turns_the_cache_off() {
        let cache = TokenCache::new(0, Duration::from_secs(60));
        let now = Utc::now();
        let digest = Token::generate().digest();
        insert_live(&cache, digest, now);
        assert!(!cache.is_enabled());
        assert!(!hit(cache.get(&digest, now)));
    }

    #[test]
    fn sessions_of_one_user_share_one_record_until_it_changes() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let now = Utc::now();
        let record = principal(7, now).user;
        let first = cache.share_user((*record).clone());
        let second = cache.share_user((*record).clone());
        assert!(Arc::ptr_eq(&first, &second));

        let mut changed = (*record).clone();
        changed.email_verified = true;
        let third = cache.share_user(changed.clone());
        assert!(!Arc::ptr_eq(&first, &third));
        assert!(third.email_verified);
        assert!(Arc::ptr_eq(&third, &cache.share_user(changed)));
    }

    #[test]
    fn with_the_cache_off_nothing_is_shared() {
        let cache = TokenCache::new(0, Duration::from_secs(60));
        let record = principal(7, Utc::now()).user;
        let first = cache.share_user((*record).clone());
        assert!(!Arc::ptr_eq(&first, &cache.share_user((*record).clone())));
    }
}
