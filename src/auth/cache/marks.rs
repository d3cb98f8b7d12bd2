//! The revocation marks: user id → the counter's value at that user's latest
//! revocation, each kept for a fixed life after that revocation.
//!
//! Every cache hit reads one mark, and marks change only when a revocation
//! commits, so reads take a shared lock on a plain map: a fraction of what a
//! second mini-moka lookup (with its read-side bookkeeping) cost each hit.
//!
//! Marks are forgotten by the writers: each revocation looks at a few of
//! the oldest users in line and forgets those whose latest mark has
//! outlived its life. A user is in line once, however often revoked, so
//! what is held grows with the users revoked, not with the revocations;
//! the marks a burst leaves behind are forgotten by the revocations after
//! it, a few at a time, and no revocation does more than a few steps of
//! this under the lock. A mark may be forgotten late, never early.

use std::collections::{HashMap, VecDeque};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How many users in line one revocation looks at. It adds at most one,
/// so once old marks are past their life the line shrinks by up to three
/// a revocation.
const FORGET_PER_RAISE: usize = 4;

pub struct RevocationMarks {
    life: Duration,
    inner: RwLock<Marks>,
}

struct Mark {
    value: u64,
    set_at: Instant,
}

#[derive(Default)]
struct Marks {
    by_user: HashMap<i64, Mark>,
    /// Each user of `by_user` once, with the time of a mark of theirs: when
    /// that time's life is over, the user's latest mark is forgotten if it
    /// is as old, else the user goes to the back of the line with it.
    line: VecDeque<(Instant, i64)>,
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
        marks.by_user.get(&user_id).map_or(0, |mark| mark.value)
    }

    /// Sets the user's mark to `value`, or keeps the one held if it is
    /// larger (two revocations of one user may race), and forgets a few
    /// marks whose life is over.
    pub fn raise(&self, user_id: i64, value: u64) {
        // The time is taken before the lock, so two racing writers may line
        // up out of time order: a mark is then forgotten late, not early.
        self.raise_at(user_id, value, Instant::now());
    }

    fn raise_at(&self, user_id: i64, value: u64, now: Instant) {
        let mut marks = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let marks = &mut *marks;
        for _ in 0..FORGET_PER_RAISE {
            let Some(&(set_at, user)) = marks.line.front() else {
                break;
            };
            if now.saturating_duration_since(set_at) < self.life {
                break;
            }
            marks.line.pop_front();
            let Some(latest) = marks.by_user.get(&user).map(|mark| mark.set_at) else {
                continue;
            };
            if now.saturating_duration_since(latest) >= self.life {
                marks.by_user.remove(&user);
            } else {
                marks.line.push_back((latest, user));
            }
        }
        match marks.by_user.get_mut(&user_id) {
            Some(held) if held.value >= value => {}
            Some(held) => *held = Mark { value, set_at: now },
            None => {
                marks.by_user.insert(user_id, Mark { value, set_at: now });
                marks.line.push_back((now, user_id));
            }
        }
    }

    #[cfg(test)]
    pub(super) fn life(&self) -> Duration {
        self.life
    }

    /// How many users hold a mark, and how many are in line.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let marks = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        (marks.by_user.len(), marks.line.len())
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
        assert_eq!(marks.held(), (1, 1));
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
        assert_eq!(marks.get(2), 6);
        assert_eq!(marks.held(), (1, 1));
    }

    #[test]
    fn a_user_revoked_over_and_over_is_held_once() {
        let marks = RevocationMarks::new(LIFE);
        let start = Instant::now();
        for second in 0..10_000 {
            marks.raise_at(1, second + 1, start + Duration::from_secs(second));
        }
        assert_eq!(marks.get(1), 10_000);
        assert_eq!(marks.held(), (1, 1));
    }

    #[test]
    fn users_past_their_life_are_forgotten_a_few_per_later_revocation() {
        let marks = RevocationMarks::new(LIFE);
        let start = Instant::now();
        for user in 0..1_000 {
            marks.raise_at(user, 1, start);
        }
        let later = start + LIFE;
        for step in 0..200 {
            marks.raise_at(1_000 + step, 2, later + Duration::from_millis(step as u64));
        }
        // Each of the 200 forgot FORGET_PER_RAISE old users and added one.
        let forgotten = 200 * FORGET_PER_RAISE;
        assert_eq!(
            marks.held(),
            (1_000 - forgotten + 200, 1_000 - forgotten + 200)
        );
        assert_eq!(
            (0..1_000).filter(|user| marks.get(*user) == 0).count(),
            forgotten
        );
        assert!((1_000..1_200).all(|user| marks.get(user) == 2));
    }

    #[test]
    fn a_mark_set_out_of_order_in_time_is_forgotten_late_not_early() {
        let marks = RevocationMarks::new(LIFE);
        let start = Instant::now();
        // Two writers took their times before the lock, and the later time
        // got the lock first.
        marks.raise_at(1, 2, start + Duration::from_secs(10));
        marks.raise_at(2, 1, start);
        marks.raise_at(3, 3, start + LIFE);
        assert_eq!(marks.get(1), 2, "within its life");
        assert_eq!(marks.get(2), 1, "behind a mark in its life: kept, late");
        marks.raise_at(4, 4, start + LIFE + Duration::from_secs(10));
        assert_eq!(marks.get(1), 0);
        assert_eq!(marks.get(2), 0);
        assert_eq!(marks.get(3), 3);
    }
}
