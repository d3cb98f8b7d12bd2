//! The shared throttle store: the per-IP and per-username login limits and
//! the backoff of unknown usernames, kept in the database every instance
//! already shares (SQLite for one instance, PostgreSQL for many), so that N
//! instances enforce one budget and a restart forgets nothing.
//!
//! Each bucket is one row of `login_throttle`, keyed by HMAC-SHA256 of the
//! bucket (`ip` and the client's network, or `username` and the canonical
//! name) under a key drawn once per deployment and stored in
//! `throttle_keys`: the table never holds an IP or a typed name. The limits
//! are GCRA, as in memory (`N/minute` allows a burst of N, then one more
//! every minute/N), one upsert per attempt for both buckets at once; the
//! same username row carries the backoff of a name that is no account, so
//! that the backoff of real and unknown names costs the same round trips
//! and lives as long. Rows whose budget is full again and whose failures
//! are forgotten are swept (see `sweeper`).
//!
//! Times are the instance's clock, in microseconds since the Unix epoch:
//! instances are assumed to agree on the time (NTP) to well within one
//! rate period; a skew of d lets an instance ahead admit about d/period
//! attempts early, never more.
//!
//! The in-memory limiter (`throttle`) stays in front: it can only refuse an
//! attempt before it reaches this store, never admit one the store refuses.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rand::Rng as _;
use sea_orm::{ConnectionTrait as _, DatabaseConnection, DbErr, Statement, Value};
use sha2::Sha256;

use super::throttle::{self, Limit};
use super::AuthService;
use crate::config::LoginRate;
use crate::error::AuthError;

/// Compare-and-set rounds before an attempt under heavy contention gives up.
const RESERVE_ATTEMPTS: usize = 5;
/// Rows deleted per sweep statement.
const SWEEP_BATCH: u64 = 500;

/// Counts one attempt against both buckets, in one statement. A bucket
/// admits while its theoretical arrival time is at most `$2` (now plus the
/// burst slack, and for reset mails [`RESET_CLOCK_SLACK_US`]) and then
/// moves it one interval on; a refused attempt changes
/// nothing but `admitted`. Every `SET` expression reads the row as it was.
const ADMIT: &str = "INSERT INTO login_throttle (key, tat, admitted, failures, last_failure) \
VALUES {rows} \
ON CONFLICT (key) DO UPDATE SET \
admitted = login_throttle.tat <= $2, \
tat = CASE \
WHEN login_throttle.tat > $2 THEN login_throttle.tat \
WHEN login_throttle.tat > $3 THEN login_throttle.tat + $4 \
ELSE $1 END \
RETURNING key, tat, admitted, failures, last_failure";

/// Counts one failed (dummy) password check of an unknown username,
/// starting again at 1 when the previous failure is forgotten.
const RECORD_FAILURE: &str =
    "INSERT INTO login_throttle (key, tat, admitted, failures, last_failure) \
VALUES ($1, 0, TRUE, 1, $2) \
ON CONFLICT (key) DO UPDATE SET \
failures = CASE WHEN login_throttle.last_failure <= $3 THEN 1 \
ELSE login_throttle.failures + 1 END, \
last_failure = $2";

/// Once in backoff, counts the attempt before its password check, on the
/// condition that no other attempt counted since the count was read.
const RESERVE: &str = "UPDATE login_throttle SET failures = $1, last_failure = $2 \
WHERE key = $3 AND failures = $4";

const READ_FAILURES: &str = "SELECT failures, last_failure FROM login_throttle WHERE key = $1";

/// A row that remembers nothing any more: its budget is full again and its
/// failures are forgotten. The outer condition is checked again on the row
/// as it is at deletion, so an attempt counted meanwhile is kept.
const SWEEP: &str = "DELETE FROM login_throttle WHERE key IN (\
SELECT key FROM login_throttle WHERE tat <= $1 \
AND (last_failure IS NULL OR last_failure <= $2) LIMIT $3) \
AND tat <= $1 AND (last_failure IS NULL OR last_failure <= $2)";

/// The backoff of a username as an unknown name, as the store holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameBackoff {
    pub failures: i32,
    pub last_failure: Option<DateTime<Utc>>,
}

pub struct ThrottleStore {
    db: DatabaseConnection,
    /// HMAC-SHA256 keyed and ready; each key works on a copy.
    mac: Hmac<Sha256>,
    /// GCRA's emission interval: the rate's period over its count.
    interval_us: i64,
    /// How far ahead of now the arrival time may be and still admit: the
    /// burst less one interval.
    slack_us: i64,
}

impl ThrottleStore {
    /// Reads the deployment's key, drawing and storing it first when this is
    /// the first instance on the database (concurrent first starts agree:
    /// the first insert wins and everyone reads it back).
    ///
    /// # Errors
    /// A database error, or a stored key of the wrong shape.
    pub async fn open(db: DatabaseConnection, rate: LoginRate) -> anyhow::Result<Self> {
        let backend = db.get_database_backend();
        let mut fresh = [0u8; 32];
        UnwrapErr(SysRng).fill_bytes(&mut fresh);
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO throttle_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            [Value::from(fresh.to_vec())],
        ))
        .await
        .context("cannot store the throttle key")?;
        let key: Vec<u8> = db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT key FROM throttle_keys WHERE id = 1",
            ))
            .await
            .context("cannot read the throttle key")?
            .context("the throttle key is missing")?
            .try_get("", "key")
            .context("cannot read the throttle key")?;
        anyhow::ensure!(key.len() >= 32, "the stored throttle key is too short");
        let mac = Hmac::new_from_slice(&key).context("throttle key")?;
        let interval = (rate.per / rate.count.get()).max(Duration::from_micros(1));
        let interval_us = micros(interval);
        let slack_us = interval_us.saturating_mul(i64::from(rate.count.get()) - 1);
        Ok(Self {
            db,
            mac,
            interval_us,
            slack_us,
        })
    }

    /// The row key of a client's network (IPv6 by /64, as in memory).
    pub fn ip_key(&self, ip: IpAddr) -> Vec<u8> {
        self.key_of("ip", &throttle::network_of(ip).to_string())
    }

    /// The row key of a (canonical) username.
    pub fn username_key(&self, name: &str) -> Vec<u8> {
        self.key_of("username", name)
    }

    fn key_of(&self, kind: &str, bucket: &str) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(bucket.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Counts one attempt against the IP and the username, in one statement;
    /// returns the username's backoff as an unknown name when admitted.
    /// Both buckets are charged when both admit; when one refuses, the other
    /// may still be charged (it can only refuse earlier, never later).
    ///
    /// # Errors
    /// `Ok(Err(..))`: the limit hit and the time until the next attempt is
    /// allowed; `Err(..)`: a database error.
    pub async fn admit(
        &self,
        ip: Option<IpAddr>,
        username: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<NameBackoff, (Limit, AuthError)>, AuthError> {
        let now_us = now.timestamp_micros();
        let ip_key = ip.map(|ip| self.ip_key(ip));
        let name_key = self.username_key(username);
        let mut values = vec![
            Value::from(now_us.saturating_add(self.interval_us)),
            Value::from(now_us.saturating_add(self.slack_us)),
            Value::from(now_us),
            Value::from(self.interval_us),
            Value::from(name_key.clone()),
        ];
        let mut rows = "($5, $1, TRUE, 0, NULL)".to_owned();
        if let Some(ip_key) = &ip_key {
            values.push(Value::from(ip_key.clone()));
            rows.push_str(", ($6, $1, TRUE, 0, NULL)");
        }
        let sql = ADMIT.replace("{rows}", &rows);
        let answers = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                sql,
                values,
            ))
            .await?;
        let latest_us = now_us.saturating_add(self.slack_us);
        let mut backoff = NameBackoff::default();
        let (mut ip_wait, mut name_wait) = (None, None);
        for row in answers {
            let key: Vec<u8> = row.try_get("", "key")?;
            let tat: i64 = row.try_get("", "tat")?;
            let admitted: bool = row.try_get("", "admitted")?;
            let wait = (!admitted).then(|| from_micros(tat.saturating_sub(latest_us)));
            if key == name_key {
                name_wait = wait;
                backoff = NameBackoff {
                    failures: row.try_get("", "failures")?,
                    last_failure: row
                        .try_get::<Option<i64>>("", "last_failure")?
                        .and_then(DateTime::from_timestamp_micros),
                };
            } else {
                ip_wait = wait;
            }
        }
        if let Some(wait) = ip_wait {
            return Ok(Err((Limit::Ip, throttle::rate_limited(wait))));
        }
        if let Some(wait) = name_wait {
            return Ok(Err((Limit::Username, throttle::rate_limited(wait))));
        }
        Ok(Ok(backoff))
    }

    /// Starts a password check on a username that is no account, as
    /// `AuthService::begin_attempt` does for accounts: refused while the
    /// backoff runs; once in backoff, counted as a failure before the check
    /// with a compare-and-set, so concurrent attempts on any number of
    /// instances cannot all pass one check. Returns whether it was counted.
    ///
    /// # Errors
    /// `RateLimited` while the backoff runs, or a database error.
    pub async fn begin_unknown(
        &self,
        username: &str,
        seen: NameBackoff,
        now: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        let key = self.username_key(username);
        let backend = self.db.get_database_backend();
        let NameBackoff {
            mut failures,
            last_failure: mut last,
        } = seen;
        for _ in 0..RESERVE_ATTEMPTS {
            throttle::check_backoff(failures, last, now)?;
            let effective = throttle::effective_failures(failures, last, now);
            if effective < throttle::FREE_FAILURES {
                return Ok(false);
            }
            let reserved = self
                .db
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    RESERVE,
                    [
                        Value::from(effective.saturating_add(1)),
                        Value::from(now.timestamp_micros()),
                        Value::from(key.clone()),
                        Value::from(failures),
                    ],
                ))
                .await?
                .rows_affected()
                == 1;
            if reserved {
                return Ok(true);
            }
            // Another attempt counted first: look again.
            let fresh = self
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    READ_FAILURES,
                    [Value::from(key.clone())],
                ))
                .await?;
            (failures, last) = match fresh {
                Some(row) => (
                    row.try_get("", "failures")?,
                    row.try_get::<Option<i64>>("", "last_failure")?
                        .and_then(DateTime::from_timestamp_micros),
                ),
                None => (0, None),
            };
        }
        Err(AuthError::RateLimited { retry_after: 1 })
    }

    /// Counts one failed (dummy) password check of an unknown username,
    /// atomically, so concurrent failures on several instances all count.
    ///
    /// # Errors
    /// A database error.
    pub async fn record_unknown_failure(
        &self,
        username: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let now_us = now.timestamp_micros();
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                RECORD_FAILURE,
                [
                    Value::from(self.username_key(username)),
                    Value::from(now_us),
                    Value::from(now_us.saturating_sub(micros(throttle::FAILURE_MEMORY))),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Deletes the rows that remember nothing at `now`, a batch at a time;
    /// returns how many.
    ///
    /// # Errors
    /// A database error; the batches already deleted stay deleted.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, DbErr> {
        let now_us = now.timestamp_micros();
        let forgotten_us = now_us.saturating_sub(micros(throttle::FAILURE_MEMORY));
        let mut total = 0;
        loop {
            let deleted = self
                .db
                .execute_raw(Statement::from_sql_and_values(
                    self.db.get_database_backend(),
                    SWEEP,
                    [
                        Value::from(now_us),
                        Value::from(forgotten_us),
                        Value::from(SWEEP_BATCH as i64),
                    ],
                ))
                .await?
                .rows_affected();
            total += deleted;
            if deleted < SWEEP_BATCH {
                return Ok(total);
            }
            // Let other writers in between batches.
            tokio::task::yield_now().await;
        }
    }
}

/// Reset mails per address: a burst of this many, then one per period.
const RESET_MAILS: i64 = 3;
const RESET_PERIOD_US: i64 = 3_600_000_000;
/// How far out of order the clock readings of one address's requests may
/// reach the store and all still count within the burst. Each mail is
/// decided in a task of its own that reads the clock and then waits for a
/// connection (up to 5 s) and, on SQLite, for the write lock (up to 5 s),
/// so the readings can be written in another order than they were taken.
/// The first one written sets the base of the arrival time; without
/// slack, a later-written request whose reading is earlier than that base
/// was refused, and a quick burst got two mails instead of three. A
/// minute covers both waits with room for scheduling and for clocks of
/// instances a little apart; against an hour's period it lets a fourth
/// mail out at most this much early, never a fourth at once.
const RESET_CLOCK_SLACK_US: i64 = 60_000_000;

impl ThrottleStore {
    /// Counts one reset mail to an address (lower-cased) against its limit
    /// of 3 an hour, in the same table and with the same statement as the
    /// login limits (GCRA: 3 at once, then one more an hour, with
    /// [`RESET_CLOCK_SLACK_US`] for readings that arrive out of order);
    /// returns whether it may be sent.
    ///
    /// # Errors
    /// A database error.
    pub async fn admit_address(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        let now_us = now.timestamp_micros();
        let values = vec![
            Value::from(now_us.saturating_add(RESET_PERIOD_US)),
            Value::from(
                now_us.saturating_add(RESET_PERIOD_US * (RESET_MAILS - 1) + RESET_CLOCK_SLACK_US),
            ),
            Value::from(now_us),
            Value::from(RESET_PERIOD_US),
            Value::from(self.key_of("reset_address", address)),
        ];
        let sql = ADMIT.replace("{rows}", "($5, $1, TRUE, 0, NULL)");
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                sql,
                values,
            ))
            .await?
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("no throttle row returned")))?;
        Ok(row.try_get("", "admitted")?)
    }
}

impl AuthService {
    /// Counts one attempt against the IP and the username: first in memory
    /// (cheap, and refusing a flood without touching the database), then in
    /// the shared store (one statement). Returns the username's backoff as
    /// an unknown name.
    ///
    /// # Errors
    /// `Ok(Err(..))` with the limit hit, or a database error.
    pub(super) async fn count_attempt(
        &self,
        ip: Option<IpAddr>,
        username: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<NameBackoff, (Limit, AuthError)>, AuthError> {
        if let Err(refused) = self.throttle.check(ip, username) {
            return Ok(Err(refused));
        }
        self.throttle_store.admit(ip, username, now).await
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a fresh, migrated SQLite file.
    async fn store() -> (ThrottleStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = crate::db::connect(&url, 2).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let store = ThrottleStore::open(db, "10/minute".parse().unwrap())
            .await
            .unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn a_burst_of_reset_mails_whose_clock_readings_arrive_out_of_order_still_gets_three() {
        let (store, _dir) = store().await;
        let t0 = Utc::now();
        let ms = chrono::Duration::milliseconds;
        // The request that read the clock last is written first; those
        // that read it earlier waited, as a task held up by SQLite's write
        // lock does.
        let mut admitted = Vec::new();
        for now in [t0 + ms(30), t0, t0 + ms(10), t0 + ms(40), t0 + ms(50)] {
            admitted.push(store.admit_address("a@example.com", now).await.unwrap());
        }
        assert_eq!(admitted, [true, true, true, false, false]);

        // The fourth comes an hour after the base (the first reading
        // written) less the slack, and not a microsecond before.
        let fourth = t0 + ms(30) + chrono::Duration::hours(1)
            - chrono::Duration::microseconds(RESET_CLOCK_SLACK_US);
        let just_before = fourth - chrono::Duration::microseconds(1);
        assert!(!store
            .admit_address("a@example.com", just_before)
            .await
            .unwrap());
        assert!(store.admit_address("a@example.com", fourth).await.unwrap());
        assert!(!store.admit_address("a@example.com", fourth).await.unwrap());
        // Another address has its own three.
        assert!(store.admit_address("b@example.com", t0).await.unwrap());
    }
}
