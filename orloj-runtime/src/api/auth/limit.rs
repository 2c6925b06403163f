//! Token-bucket rate limiters on the injected [`Clock`](orloj_core::Clock).
//!
//! A small bucket instead of `governor`: it runs on the API's injected clock (so tests with a
//! `ManualClock` are deterministic), needs no extra dependency, and keyed eviction is a few
//! lines.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// A sustained rate plus a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size (requests allowed at once).
    pub burst: u32,
}

impl RateLimit {
    /// Spec §6.4 auth endpoints: 10/min sustained, burst 20, per client IP.
    pub fn auth_default() -> Self {
        Self {
            per_second: 10.0 / 60.0,
            burst: 20,
        }
    }

    /// Spec §3.1 global limit: 500 req/s, burst 100, per server.
    pub fn global_default() -> Self {
        Self {
            per_second: 500.0,
            burst: 100,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: DateTime<Utc>,
}

impl Bucket {
    fn full(limit: RateLimit, now: DateTime<Utc>) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    fn take(&mut self, limit: RateLimit, now: DateTime<Utc>) -> bool {
        // Microseconds: requests closer together than a millisecond must still refill.
        let elapsed = (now - self.last)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .max(0) as f64
            / 1e6;
        self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One bucket for everything.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    bucket: Mutex<Option<Bucket>>,
}

impl Limiter {
    /// A limiter starting full.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            bucket: Mutex::new(None),
        }
    }

    /// Takes a token; false when the caller must be refused.
    pub fn check(&self, now: DateTime<Utc>) -> bool {
        let mut guard = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .get_or_insert_with(|| Bucket::full(self.limit, now))
            .take(self.limit, now)
    }
}

/// Idle keys are forgotten after this long (spec §6.4: 10 minutes).
const IDLE_SECS: i64 = 600;

/// One bucket per key (client IP).
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    limit: RateLimit,
    buckets: Mutex<Keyed<K>>,
}

#[derive(Debug)]
struct Keyed<K> {
    buckets: HashMap<K, Bucket>,
    last_sweep: Option<DateTime<Utc>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter with no keys yet.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(Keyed {
                buckets: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Takes a token from `key`'s bucket; false when the caller must be refused.
    pub fn check(&self, key: &K, now: DateTime<Utc>) -> bool {
        let mut guard = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Keyed {
            buckets,
            last_sweep,
        } = &mut *guard;
        if last_sweep.is_none_or(|t| (now - t).num_seconds() >= 60) {
            buckets.retain(|_, b| (now - b.last).num_seconds() < IDLE_SECS);
            *last_sweep = Some(now);
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(self.limit, now))
            .take(self.limit, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn burst_then_refill() {
        let t0 = Utc.timestamp_opt(1_000_000, 0).single().expect("time");
        let l = KeyedLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(l.check(&"a", t0));
        }
        assert!(!l.check(&"a", t0));
        assert!(l.check(&"b", t0), "keys are independent");
        assert!(l.check(&"a", t0 + chrono::Duration::seconds(1)));
        assert!(!l.check(&"a", t0 + chrono::Duration::seconds(1)));
        let g = Limiter::new(RateLimit {
            per_second: 1.0,
            burst: 1,
        });
        assert!(g.check(t0));
        assert!(!g.check(t0));
    }

    #[test]
    fn requests_closer_than_a_millisecond_still_refill() {
        let t0 = Utc.timestamp_opt(1_000_000, 0).single().expect("time");
        let g = Limiter::new(RateLimit {
            per_second: 1000.0,
            burst: 1,
        });
        // 2,000 requests 0.5 ms apart at a 1,000/s limit: about half pass.
        let passed = (0..2000)
            .filter(|i| g.check(t0 + chrono::Duration::microseconds(500 * i)))
            .count();
        assert!((990..=1010).contains(&passed), "{passed}");
    }
}
