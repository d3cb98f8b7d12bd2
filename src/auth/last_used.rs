//! `Session.lastUsedAt`, written off the request path: a request only notes
//! its session in memory (at most once per `last-used-interval` per
//! session), and a background task writes the notes in one transaction
//! every second.
//!
//! A cache hit must not wait on a lock shared by every request, so the
//! cached principal carries its session's last use as an atomic
//! ([`LastUse`]): between two notes a request only reads it, and the one
//! request that finds a note due claims it with a compare-and-swap before
//! taking the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, Condition, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _,
    TransactionTrait as _,
};

use crate::db::entities::auth_token;

/// How often the notes are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long a note is remembered after it was made (or the interval, when
/// shorter). By then it is written, and a principal loaded from the
/// database carries it; remembering it only covers a read that began
/// before the write. A read slower than that notes its session once more,
/// which writes a use that happened. Remembering it for the whole interval
/// would hold a note for every session used in the last minute: 2 MiB for
/// 100,000 of them.
const REMEMBERED_FOR: Duration = Duration::from_secs(3);

pub struct LastUsed {
    interval: chrono::Duration,
    /// Sessions used since the last write, with when (microseconds since
    /// the epoch, the precision stored: 16 bytes a note, where a
    /// `DateTime` made it 24).
    pending: Mutex<HashMap<i64, i64>>,
    /// When this instance last noted each session, likewise, for
    /// [`REMEMBERED_FOR`] (and while the note waits to be written).
    noted: Mutex<HashMap<i64, i64>>,
}

/// A session's last use as this instance knows it: the database's value
/// when the principal was loaded, moved forward each time this instance
/// notes a use. Milliseconds since the epoch.
#[derive(Debug)]
pub struct LastUse(AtomicI64);

impl LastUse {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(AtomicI64::new(at.timestamp_millis()))
    }

    pub fn get(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::Relaxed)).unwrap_or_default()
    }

    /// True for exactly one caller once `interval` has passed since the
    /// last use known here, which then moves to `now`.
    fn claim(&self, now: DateTime<Utc>, interval: chrono::Duration) -> bool {
        let seen = self.0.load(Ordering::Relaxed);
        let now = now.timestamp_millis();
        if now.saturating_sub(seen) < interval.num_milliseconds() {
            return false;
        }
        self.0
            .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Clone for LastUse {
    fn clone(&self) -> Self {
        Self(AtomicI64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl LastUsed {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX),
            pending: Mutex::default(),
            noted: Mutex::default(),
        }
    }

    /// A request used `session`, whose last use this principal knows as
    /// `last`: note it unless that was less than `last-used-interval` ago.
    pub fn used(&self, session: i64, last: &LastUse, now: DateTime<Utc>) {
        if !last.claim(now, self.interval) {
            return;
        }
        // Another principal of the same session (the cache off, or the
        // entry reloaded) may have noted it within the interval.
        let Ok(mut noted) = self.noted.lock() else {
            return;
        };
        let now = now.timestamp_micros();
        if noted
            .get(&session)
            .is_some_and(|&at| now.saturating_sub(at) < self.interval_micros())
        {
            return;
        }
        noted.insert(session, now);
        // Under the same lock: see `take_pending`. (A slow request's note
        // is old when made, and must not be forgotten before it is taken.)
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(session, now);
        }
    }

    fn interval_micros(&self) -> i64 {
        self.interval.num_microseconds().unwrap_or(i64::MAX)
    }

    /// The latest use this instance knows of beyond `known`.
    /// A note already written is in the database, which the caller's
    /// `known` may predate: see [`LastUsed::flush`].
    pub fn latest(&self, session: i64, known: DateTime<Utc>) -> DateTime<Utc> {
        // Pending first: a note whose write failed stays there, and may be
        // older than the noted ones remembered.
        [&self.pending, &self.noted]
            .into_iter()
            .filter_map(|notes| notes.lock().ok()?.get(&session).copied())
            .filter_map(DateTime::from_timestamp_micros)
            .fold(known, std::cmp::max)
    }

    /// How far behind the database may be on a session another instance
    /// is using: a use is written only once per interval, and a second or
    /// so after it (while the database refuses writes, the notes wait, and
    /// the lag grows by as long).
    pub fn lag(&self) -> chrono::Duration {
        self.interval + chrono::Duration::from_std(FLUSH_EVERY * 2).unwrap_or_default()
    }

    /// Writes the pending notes in one transaction (a row only moves
    /// forward); forgets the notes older than [`REMEMBERED_FOR`] or the
    /// interval, except those about to be written. A note forgotten was
    /// written, or waits in the pending notes again: a caller that finds no
    /// note here and must not trust an older database read (the idle
    /// timeout) checks the row again as it acts.
    ///
    /// A batch not written, because the write failed or the flush was
    /// cancelled (at shutdown), goes back to the pending notes for the next
    /// flush: a session's use is noted only once per interval, so a note
    /// dropped would not come again for that long.
    ///
    /// # Errors
    /// A database error.
    pub async fn flush(&self, db: &DatabaseConnection, now: DateTime<Utc>) -> Result<usize, DbErr> {
        let notes = self.take_pending(now);
        if notes.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch {
            notes,
            owner: self,
            written: false,
        };
        write(db, &batch.notes).await?;
        batch.written = true;
        Ok(batch.notes.len())
    }

    /// Takes the pending notes to write, and forgets the notes older than
    /// [`REMEMBERED_FOR`] or the interval, except those taken. Both under
    /// the notes' lock, which [`used`](Self::used) holds while it notes in
    /// both maps: every pending note is also remembered, until it is taken,
    /// and while it is written.
    fn take_pending(&self, now: DateTime<Utc>) -> HashMap<i64, i64> {
        let Ok(mut noted) = self.noted.lock() else {
            return HashMap::new();
        };
        let writing = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return HashMap::new(),
        };
        let now = now.timestamp_micros();
        let kept_for = self.interval_micros().min(micros(REMEMBERED_FOR));
        noted.retain(|session, &mut at| {
            now.saturating_sub(at) < kept_for || writing.contains_key(session)
        });
        // After a burst, give the table back too.
        if noted.capacity() > 4 * noted.len().max(256) {
            let keep = 2 * noted.len();
            noted.shrink_to(keep);
        }
        writing
    }

    /// Puts `notes` back among the pending ones; a use noted since keeps
    /// its later time.
    fn put_back(&self, notes: HashMap<i64, i64>) {
        if let Ok(mut pending) = self.pending.lock() {
            for (session, at) in notes {
                let kept = pending.entry(session).or_insert(at);
                *kept = (*kept).max(at);
            }
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The notes one flush is writing: put back when dropped unwritten.
struct Batch<'a> {
    notes: HashMap<i64, i64>,
    owner: &'a LastUsed,
    written: bool,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.written {
            self.owner.put_back(std::mem::take(&mut self.notes));
        }
    }
}

/// Moves each noted session's `lastUsedAt` forward to its note, in one
/// transaction.
async fn write(db: &DatabaseConnection, notes: &HashMap<i64, i64>) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    for (&session, &at) in notes {
        let at = DateTime::from_timestamp_micros(at).unwrap_or_default();
        auth_token::Entity::update_many()
            .col_expr(auth_token::Column::LastUsedAt, Expr::value(at))
            .filter(auth_token::Column::Id.eq(session))
            .filter(
                Condition::any()
                    .add(auth_token::Column::LastUsedAt.is_null())
                    .add(auth_token::Column::LastUsedAt.lt(at)),
            )
            .exec(&txn)
            .await?;
    }
    txn.commit().await
}

/// Writes the notes every [`FLUSH_EVERY`] until the task is aborted.
pub async fn run(auth: std::sync::Arc<super::AuthService>) {
    let mut ticks = tokio::time::interval(FLUSH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = auth.last_used().flush(auth.db(), auth.clock().now()).await {
            tracing::warn!(error = %err, "writing lastUsedAt failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_note_is_claimed_by_exactly_one_of_many_requests() {
        let interval = chrono::Duration::seconds(60);
        let loaded = Utc::now() - chrono::Duration::hours(1);
        let last = std::sync::Arc::new(LastUse::new(loaded));
        let now = Utc::now();
        let claims: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let last = std::sync::Arc::clone(&last);
                    scope.spawn(move || (0..1000).filter(|_| last.claim(now, interval)).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(claims, 1);
        assert_eq!(last.get().timestamp_millis(), now.timestamp_millis());
        // Due again only once the interval has passed since that note.
        assert!(!last.claim(now + chrono::Duration::seconds(59), interval));
        assert!(last.claim(now + chrono::Duration::seconds(60), interval));
    }

    #[test]
    fn a_use_is_noted_once_per_interval_even_across_reloaded_principals() {
        let noter = LastUsed::new(Duration::from_secs(60));
        let loaded = Utc::now() - chrono::Duration::hours(1);
        // To the microsecond, as the server's clock gives it.
        let now = crate::clock::Clock::default().now();
        noter.used(1, &LastUse::new(loaded), now);
        // The cache off: every request loads a principal of its own.
        noter.used(1, &LastUse::new(loaded), now + chrono::Duration::seconds(1));
        let pending = noter.pending.lock().unwrap().clone();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[&1], now.timestamp_micros());
        assert_eq!(noter.latest(1, loaded), now);
    }

    fn seconds(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    /// Notes 10,000 sessions at `now`, last used an hour before.
    fn noter_with_notes(now: DateTime<Utc>) -> LastUsed {
        let noter = LastUsed::new(Duration::from_secs(60));
        for session in 0..10_000 {
            noter.used(session, &LastUse::new(now - seconds(3600)), now);
        }
        noter
    }

    #[test]
    fn a_written_note_is_forgotten_after_a_few_seconds_and_its_room_freed() {
        let now = crate::clock::Clock::default().now();
        let noter = noter_with_notes(now);
        let written = noter.take_pending(now);
        assert_eq!(written.len(), 10_000);
        let loaded = now - seconds(3600);
        assert!(noter.take_pending(now + seconds(2)).is_empty());
        assert_eq!(noter.latest(7, loaded), now);
        // A principal loaded from a read older than the write is not
        // noted again meanwhile.
        noter.used(7, &LastUse::new(loaded), now + seconds(2));
        assert!(noter.pending.lock().unwrap().is_empty());

        assert!(noter.take_pending(now + seconds(3)).is_empty());
        assert_eq!(noter.latest(7, loaded), loaded);
        let noted = noter.noted.lock().unwrap();
        assert!(noted.is_empty());
        assert!(noted.capacity() < 1024, "{} kept", noted.capacity());
    }

    #[test]
    fn a_note_whose_write_failed_is_remembered_while_it_waits_and_is_written_again() {
        let now = crate::clock::Clock::default().now();
        let noter = noter_with_notes(now);
        let loaded = now - seconds(3600);
        let mut written = noter.take_pending(now);
        // Session 7's write failed: it waits again; the rest were written.
        let failed = written.remove(&7).unwrap();
        noter.put_back(HashMap::from([(7, failed)]));
        assert_eq!(noter.latest(7, loaded), now);
        // Half a minute later it is taken again, and remembered while it is
        // being written; the notes written long ago are forgotten.
        let writing = noter.take_pending(now + seconds(30));
        assert_eq!(writing.len(), 1);
        assert_eq!(noter.latest(7, loaded), now);
        assert_eq!(noter.latest(8, loaded), loaded);
        assert_eq!(noter.noted.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_slow_requests_old_note_is_remembered_until_it_is_written() {
        let now = crate::clock::Clock::default().now();
        let noter = LastUsed::new(Duration::from_secs(60));
        let loaded = now - seconds(3600);
        assert!(noter.take_pending(now).is_empty());
        // Noted just after that flush, with the time the request began,
        // 5 s before: older than the notes are remembered for.
        noter.used(7, &LastUse::new(loaded), now - seconds(5));
        assert_eq!(noter.latest(7, loaded), now - seconds(5));
        let writing = noter.take_pending(now + seconds(1));
        assert_eq!(writing.len(), 1);
        assert_eq!(noter.latest(7, loaded), now - seconds(5));
    }
}
