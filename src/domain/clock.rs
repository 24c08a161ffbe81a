//! [`Clock`]: the time every expiry is compared with (grants, connection
//! keys, key overlaps), in memory and in SQL alike, so that a decision from
//! the cache and one from Postgres agree at the same instant.
//!
//! The system clock by default. Tests use a manual one: the system time
//! plus an offset they advance, shared by the server and the test, and
//! monotone since the system time is.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};

use super::decision::Micros;

/// The current time as the server sees it. Cheap to clone; clones share
/// the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: microseconds added to it.
    offset: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads the system time until [`Clock::advance`] moves
    /// it ahead.
    pub fn manual() -> Self {
        Self {
            offset: Some(Arc::default()),
        }
    }

    /// Now, in microseconds since the Unix epoch (the hot path's unit).
    #[inline]
    pub fn now_micros(&self) -> Micros {
        let system = Utc::now().timestamp_micros();
        match &self.offset {
            None => system,
            Some(offset) => system + offset.load(Ordering::Relaxed),
        }
    }

    /// Now, as a timestamp (for SQL parameters).
    pub fn now(&self) -> DateTime<Utc> {
        match &self.offset {
            None => Utc::now(),
            Some(_) => DateTime::from_timestamp_micros(self.now_micros())
                .expect("the clock stays within chrono's range"),
        }
    }

    /// Moves a manual clock ahead by `by`, for every holder of a clone.
    ///
    /// # Panics
    ///
    /// On the system clock, which cannot be moved.
    pub fn advance(&self, by: Duration) {
        let offset = self
            .offset
            .as_ref()
            .expect("only a manual clock can be advanced");
        let micros = i64::try_from(by.as_micros()).expect("an advance within i64 microseconds");
        offset.fetch_add(micros, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_ahead_for_every_clone_and_never_back() {
        let clock = Clock::manual();
        let shared = clock.clone();
        let before = shared.now_micros();
        clock.advance(Duration::from_secs(90));
        let after = shared.now_micros();
        assert!(after >= before + 90_000_000, "{before} -> {after}");
        assert!(
            after < Clock::system().now_micros() + 91_000_000,
            "the offset is added once"
        );
        assert!(shared.now_micros() >= after, "monotone");
        let ts = shared.now();
        assert!(ts.timestamp_micros() >= after);
        assert!(ts > Utc::now() + chrono::Duration::seconds(89));
    }

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let clock = Clock::system();
        let before = Utc::now().timestamp_micros();
        let now = clock.now_micros();
        assert!(now >= before && now < before + 5_000_000);
        assert!(clock.now() >= DateTime::from_timestamp_micros(now).unwrap());
    }

    #[test]
    #[should_panic(expected = "only a manual clock")]
    fn the_system_clock_cannot_be_advanced() {
        Clock::system().advance(Duration::from_secs(1));
    }
}
