//! The server's notion of "now". Production reads the system clock; tests
//! move it forward to expire tokens without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound as _, Utc};

#[derive(Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time; zero outside tests.
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Now, to the microsecond: what PostgreSQL stores, so a time returned
    /// at once and the same time read back later are equal.
    pub fn now(&self) -> DateTime<Utc> {
        let now =
            Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        now.trunc_subsecs(6)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}
