//! Login throttling: the rules, and the in-memory first filter.
//!
//! Layer one limits attempts per client IP and, separately, per username
//! (GCRA: `N/minute` allows a burst of N, then one more every minute/N). It
//! runs once per `login` field, so aliases and batches cannot get around it.
//! The budget that counts is the shared one in the database
//! (`throttle_store`), one per IP and per name across every instance and
//! restart; the `governor` limiter here counts the same budget in this
//! process's memory, in front, so a flood is refused without a database
//! round trip. It can only refuse earlier than the store, never admit more.
//!
//! Layer two is the per-account backoff: after [`FREE_FAILURES`] consecutive
//! failed password checks, each further attempt waits twice as long as the
//! last after the latest failure. Known accounts keep their count in the
//! `users` row; unknown usernames keep theirs in the shared store, under the
//! same rules and with the same round trips, so the backoff does not reveal
//! which usernames exist, on any instance or after a restart.
//!
//! Once an account is in backoff, an attempt is counted as a failure before
//! its password is checked, in the same atomic step as the backoff check, so
//! concurrent attempts cannot all pass one check (a success resets the
//! count). Before that, attempts run concurrently and each failure is counted
//! when it happens: several right logins at once must all succeed, and the
//! per-username limit of layer one bounds how many guesses can be in flight.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LoginRate;
use crate::error::AuthError;

/// Failed password checks allowed before the backoff starts.
pub const FREE_FAILURES: i32 = 5;
/// The longest wait the backoff imposes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// How long consecutive failures are remembered after the latest one. Known
/// accounts (their row) and unknown usernames (the shared store) forget
/// alike, so the backoff reveals nothing about which usernames exist.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// How long after the latest failure the next attempt must wait, given
/// `failures` consecutive failures: none up to 5, then 1 s, 2 s, 4 s, …
pub fn backoff_after(failures: i32) -> Option<Duration> {
    let beyond = failures.checked_sub(FREE_FAILURES)?;
    let secs = 1u64
        .checked_shl(u32::try_from(beyond).ok()?)
        .unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_BACKOFF))
}

/// Refuses an attempt made while the backoff of `failures` failures, the
/// latest at `last_failure`, still runs.
///
/// # Errors
/// `RateLimited` with the seconds left.
pub fn check_backoff(
    failures: i32,
    last_failure: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let (Some(wait), Some(last)) = (backoff_after(failures), last_failure) else {
        return Ok(());
    };
    if is_forgotten(last, now) {
        return Ok(());
    }
    let until = last + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    if now < until {
        let left = (until - now).to_std().unwrap_or_default();
        return Err(rate_limited(left));
    }
    Ok(())
}

/// The failures that still count: none once the latest is forgotten.
pub fn effective_failures(failures: i32, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> i32 {
    match last {
        Some(last) if is_forgotten(last, now) => 0,
        _ => failures,
    }
}

/// True when a failure at `last` is older than [`FAILURE_MEMORY`].
pub fn is_forgotten(last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - last >= chrono::Duration::from_std(FAILURE_MEMORY).unwrap_or(chrono::Duration::MAX)
}

pub(crate) fn rate_limited(wait: Duration) -> AuthError {
    // Whole seconds, rounded up, at least 1.
    let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AuthError::RateLimited {
        retry_after: retry_after.max(1),
    }
}

#[derive(Clone)]
pub struct LoginThrottle {
    inner: Arc<Inner>,
}

struct Inner {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_username: DefaultKeyedRateLimiter<String>,
}

/// Which limit refused an attempt (for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Ip,
    Username,
}

impl LoginThrottle {
    pub fn new(rate: LoginRate) -> Self {
        let quota = quota(rate);
        Self {
            inner: Arc::new(Inner {
                per_ip: RateLimiter::keyed(quota),
                per_username: RateLimiter::keyed(quota),
            }),
        }
    }

    /// Counts one attempt against the IP and the username.
    ///
    /// # Errors
    /// The limit hit, with the time until the next attempt is allowed.
    pub fn check(&self, ip: Option<IpAddr>, username: &str) -> Result<(), (Limit, AuthError)> {
        let now = DefaultClock::default().now();
        if let Some(ip) = ip.map(network_of) {
            if let Err(not_until) = self.inner.per_ip.check_key(&ip) {
                return Err((Limit::Ip, rate_limited(not_until.wait_time_from(now))));
            }
        }
        if let Err(not_until) = self.inner.per_username.check_key(&username.to_owned()) {
            return Err((Limit::Username, rate_limited(not_until.wait_time_from(now))));
        }
        Ok(())
    }

    /// Drops keys whose budget is full again, bounding memory under a flood
    /// of distinct IPs and usernames. Called periodically.
    pub fn forget_idle(&self) {
        self.inner.per_ip.retain_recent();
        self.inner.per_ip.shrink_to_fit();
        self.inner.per_username.retain_recent();
        self.inner.per_username.shrink_to_fit();
    }

    /// Keys held by the in-memory limiters.
    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.inner.per_ip.len() + self.inner.per_username.len()
    }
}

/// The key an IP is throttled by: an IPv4 address itself, an IPv6 address
/// by its /64 network, since one subscriber usually holds a whole /64 and
/// could otherwise rotate through 2^64 addresses.
pub(crate) fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
    }
}

fn quota(rate: LoginRate) -> Quota {
    let period = rate.per / rate.count.get();
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(rate.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> LoginRate {
        s.parse().unwrap()
    }

    fn retry_after(err: &AuthError) -> u64 {
        match err {
            AuthError::RateLimited { retry_after } => *retry_after,
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[test]
    fn the_backoff_doubles_from_the_sixth_attempt_and_stops_at_15_minutes() {
        assert_eq!(backoff_after(4), None);
        assert_eq!(backoff_after(5), Some(Duration::from_secs(1)));
        assert_eq!(backoff_after(6), Some(Duration::from_secs(2)));
        assert_eq!(backoff_after(8), Some(Duration::from_secs(8)));
        assert_eq!(backoff_after(15), Some(MAX_BACKOFF));
        assert_eq!(backoff_after(i32::MAX), Some(MAX_BACKOFF));
    }

    #[test]
    fn an_attempt_inside_the_backoff_is_refused_with_the_time_left() {
        let last = Utc::now();
        let err =
            check_backoff(7, Some(last), last + chrono::Duration::milliseconds(1500)).unwrap_err();
        assert_eq!(retry_after(&err), 3);
        assert!(check_backoff(7, Some(last), last + chrono::Duration::seconds(4)).is_ok());
        assert!(check_backoff(4, Some(last), last).is_ok());
    }

    #[test]
    fn failures_are_forgotten_a_day_after_the_latest() {
        let last = Utc::now();
        let a_day_later = last + chrono::Duration::hours(24);
        assert!(check_backoff(20, Some(last), a_day_later).is_ok());
        assert_eq!(effective_failures(20, Some(last), a_day_later), 0);
        assert_eq!(
            effective_failures(20, Some(last), a_day_later - chrono::Duration::seconds(1)),
            20
        );
    }

    #[test]
    fn the_limit_plus_one_attempt_per_username_is_refused() {
        let throttle = LoginThrottle::new(rate("3/minute"));
        for i in 0..3u8 {
            let ip = Some(IpAddr::from([10, 0, 0, i]));
            assert!(throttle.check(ip, "alice").is_ok());
        }
        let (limit, err) = throttle
            .check(Some(IpAddr::from([10, 0, 0, 9])), "alice")
            .unwrap_err();
        assert_eq!(limit, Limit::Username);
        assert!((1..=20).contains(&retry_after(&err)));
        assert!(throttle
            .check(Some(IpAddr::from([10, 0, 0, 9])), "bob")
            .is_ok());
    }

    #[test]
    fn the_limit_plus_one_attempt_per_ip_is_refused() {
        let throttle = LoginThrottle::new(rate("2/hour"));
        let ip = Some(IpAddr::from([192, 0, 2, 1]));
        assert!(throttle.check(ip, "a").is_ok());
        assert!(throttle.check(ip, "b").is_ok());
        assert_eq!(throttle.check(ip, "c").unwrap_err().0, Limit::Ip);
    }

    #[test]
    fn idle_keys_are_forgotten_so_a_flood_of_new_keys_does_not_stay() {
        let throttle = LoginThrottle::new(rate("1000/second"));
        for i in 0..1000u16 {
            let ip = IpAddr::from([10, 1, (i >> 8) as u8, (i & 0xff) as u8]);
            assert!(throttle.check(Some(ip), &format!("user{i}")).is_ok());
        }
        assert_eq!(throttle.tracked_keys(), 2000);
        // One attempt at 1000/second is paid back after 1 ms.
        std::thread::sleep(Duration::from_millis(20));
        throttle.forget_idle();
        assert_eq!(throttle.tracked_keys(), 0);
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_budget() {
        let throttle = LoginThrottle::new(rate("2/hour"));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(throttle.check(Some(a), "x").is_ok());
        assert!(throttle.check(Some(b), "y").is_ok());
        assert_eq!(throttle.check(Some(a), "z").unwrap_err().0, Limit::Ip);
        assert!(throttle.check(Some(other), "w").is_ok());
    }
}
