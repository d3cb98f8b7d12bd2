//! The revocation marks: user id → the counter's value at that user's latest
//! revocation, each kept for a fixed life.
//!
//! Every cache hit reads one mark, and marks change only when a revocation
//! commits, so reads take a shared lock on a plain map: a fraction of what a
//! second mini-moka lookup (with its read-side bookkeeping) cost each hit.
//! Marks are forgotten in the order they were set, once their life is over,
//! by the writer that sets the next one. What is held is a mark per user and
//! an item per revocation within the last `life` (ten minutes at the
//! default `cache-ttl`); every revocation follows a login, a signed-in
//! request or another instance's notice, so neither grows faster than
//! those.

use std::collections::{HashMap, VecDeque};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

pub struct RevocationMarks {
    life: Duration,
    inner: RwLock<Marks>,
}

#[derive(Default)]
struct Marks {
    by_user: HashMap<i64, u64>,
    /// Every mark set and not yet forgotten, oldest first: when it was set,
    /// for whom, and its value (a later mark of the same user replaces the
    /// map's value, so an old one is forgotten only if it is still there).
    set_order: VecDeque<(Instant, i64, u64)>,
}

impl RevocationMarks {
    /// Marks kept for `life` after they are set.
    pub fn new(life: Duration) -> Self {
        Self {
            life,
            inner: RwLock::new(Marks::default()),
        }
    }

    /// The user's latest mark, or 0 when none is kept.
    pub fn get(&self, user_id: i64) -> u64 {
        let marks = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        marks.by_user.get(&user_id).copied().unwrap_or(0)
    }

    /// Sets the user's mark to `mark`, or keeps the one held if it is
    /// larger (two revocations of one user may race), and forgets the marks
    /// whose life is over.
    pub fn raise(&self, user_id: i64, mark: u64) {
        self.raise_at(user_id, mark, Instant::now());
    }

    fn raise_at(&self, user_id: i64, mark: u64, now: Instant) {
        let mut marks = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let marks = &mut *marks;
        while let Some(&(set_at, user, value)) = marks.set_order.front() {
            if now.saturating_duration_since(set_at) < self.life {
                break;
            }
            marks.set_order.pop_front();
            if marks.by_user.get(&user) == Some(&value) {
                marks.by_user.remove(&user);
            }
        }
        if mark > marks.by_user.get(&user_id).copied().unwrap_or(0) {
            marks.by_user.insert(user_id, mark);
            marks.set_order.push_back((now, user_id, mark));
        }
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let marks = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        (marks.by_user.len(), marks.set_order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: Duration = Duration::from_secs(600);

    #[test]
    fn a_mark_is_read_back_and_other_users_have_none() {
        let marks = RevocationMarks::new(LIFE);
        marks.raise(1, 5);
        assert_eq!(marks.get(1), 5);
        assert_eq!(marks.get(2), 0);
    }

    #[test]
    fn a_smaller_mark_does_not_lower_a_larger_one() {
        let marks = RevocationMarks::new(LIFE);
        marks.raise(1, 7);
        marks.raise(1, 3);
        assert_eq!(marks.get(1), 7);
        marks.raise(1, 9);
        assert_eq!(marks.get(1), 9);
    }

    #[test]
    fn a_mark_is_kept_for_its_life_and_then_forgotten() {
        let marks = RevocationMarks::new(LIFE);
        let start = Instant::now();
        marks.raise_at(1, 1, start);
        marks.raise_at(2, 2, start + LIFE - Duration::from_secs(1));
        assert_eq!(marks.get(1), 1, "within its life");
        marks.raise_at(3, 3, start + LIFE);
        assert_eq!(marks.get(1), 0, "past its life");
        assert_eq!(marks.get(2), 2, "the later mark is still within its life");
        assert_eq!(marks.held(), (2, 2));
    }

    #[test]
    fn a_mark_raised_again_lives_from_its_latest_raise() {
        let marks = RevocationMarks::new(LIFE);
        let start = Instant::now();
        marks.raise_at(1, 1, start);
        marks.raise_at(1, 4, start + Duration::from_secs(300));
        // The first raise's life is over; the second one's is not.
        marks.raise_at(2, 5, start + LIFE);
        assert_eq!(marks.get(1), 4);
        marks.raise_at(2, 6, start + LIFE + Duration::from_secs(300));
        assert_eq!(marks.get(1), 0);
        // User 2's first raise waits in line until its life is over.
        assert_eq!(marks.held(), (1, 2), "only user 2's mark is held");
    }
}
