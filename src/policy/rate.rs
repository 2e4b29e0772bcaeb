//! Rate limiting: a token bucket per caller and per anonymous client.

use super::*;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug)]
pub struct TokenBucket {
    pub(super) rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(0.0),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another thread panicked mid-update of
        // two plain numbers; the values are still usable.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else if self.rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.rate))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 + now.saturating_duration_since(s.1).as_secs_f64() * self.rate >= self.burst
    }
}

/// Per-IP buckets of the anonymous policy, bounded in number.
#[derive(Debug)]
pub(crate) struct Anonymous {
    pub(super) policy: Policy,
    pub(super) rate: f64,
    pub(super) burst: u32,
    pub(super) trusted_proxies: Vec<Cidr>,
    pub(super) buckets: Mutex<HashMap<IpAddr, Arc<TokenBucket>>>,
}

/// Most client IPs the anonymous rate limiter tracks at once.
const MAX_TRACKED_IPS: usize = 100_000;

impl Anonymous {
    pub(super) fn bucket(&self, ip: IpAddr) -> Arc<TokenBucket> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_IPS && !map.contains_key(&ip) {
            // Forget clients whose buckets have refilled: they are back to
            // the initial state anyway.
            let now = Instant::now();
            map.retain(|_, b| !b.is_full(now));
            if map.len() >= MAX_TRACKED_IPS {
                map.clear();
            }
        }
        Arc::clone(
            map.entry(ip)
                .or_insert_with(|| Arc::new(TokenBucket::new(self.rate, self.burst))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills() {
        let b = TokenBucket::new(10.0, 2);
        let t0 = Instant::now();
        assert!(b.try_acquire_at(t0).is_ok());
        assert!(b.try_acquire_at(t0).is_ok());
        let wait = b.try_acquire_at(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(b.try_acquire_at(t0 + Duration::from_millis(100)).is_ok());
    }
}
