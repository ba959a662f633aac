//! Repeated client errors logged once per interval: while a broker is down librdkafka reports
//! the same error on every poll (tens a second), and a log line each would bury everything else.

use std::time::{Duration, Instant};

/// How often the same error is logged again.
const EVERY: Duration = Duration::from_secs(10);

/// Remembers the last error logged and how many like it were held back since.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<(String, Instant)>,
    held: u64,
}

impl Throttle {
    /// Whether to log an error of kind `key` now; `Some(n)` with the number held back since the
    /// last line of that kind.
    pub(crate) fn admit(&mut self, key: &str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&mut self, key: &str, now: Instant) -> Option<u64> {
        match &self.last {
            Some((k, at)) if k == key && now.duration_since(*at) < EVERY => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some((key.to_string(), now));
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_error_is_logged_once_per_interval_with_the_count_held_back() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.admit_at("down", t0), Some(0));
        for i in 1..=20 {
            assert_eq!(t.admit_at("down", t0 + Duration::from_millis(50 * i)), None);
        }
        // Another error is logged at once, with what was held back of the first.
        assert_eq!(t.admit_at("refused", t0 + Duration::from_secs(2)), Some(20));
        assert_eq!(t.admit_at("refused", t0 + Duration::from_secs(3)), None);
        assert_eq!(t.admit_at("refused", t0 + Duration::from_secs(13)), Some(1));
    }
}
