//! Rate limiting: a token bucket per caller and per anonymous client.

use super::bounded::BoundedMap;
use super::*;
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

    /// The burst (most tokens stored).
    pub fn burst(&self) -> u32 {
        // At most u32::MAX (it came from a u32).
        self.burst as u32
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
}

/// Per-client buckets of the anonymous policy, bounded in number: a client
/// is an IPv4 address (IPv4-mapped IPv6 included) or an IPv6 prefix
/// (`[limits] client_ipv6_prefix`, default /64); when [`MAX_TRACKED_IPS`]
/// clients are tracked, the least recently seen are forgotten first.
#[derive(Debug)]
pub(crate) struct Anonymous {
    pub(super) policy: Policy,
    pub(super) rate: f64,
    pub(super) burst: u32,
    pub(super) trusted_proxies: Vec<Cidr>,
    pub(super) ipv6_prefix: u8,
    pub(super) buckets: Mutex<BoundedMap<u128, Arc<TokenBucket>>>,
}

/// Most clients the anonymous rate limiter tracks at once.
pub(crate) const MAX_TRACKED_IPS: usize = 100_000;

impl Anonymous {
    pub(super) fn bucket(&self, ip: IpAddr) -> Arc<TokenBucket> {
        let key = super::networks::client_key(ip, self.ipv6_prefix);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            map.get_or_insert_with(key, || Arc::new(TokenBucket::new(self.rate, self.burst))),
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

    fn anonymous(prefix: u8, capacity: usize) -> Anonymous {
        Anonymous {
            policy: Policy::unrestricted(),
            rate: 1.0,
            burst: 1,
            trusted_proxies: Vec::new(),
            ipv6_prefix: prefix,
            buckets: Mutex::new(BoundedMap::new(capacity)),
        }
    }

    #[test]
    fn anonymous_clients_are_keyed_by_ipv4_or_ipv6_prefix() {
        let a = anonymous(64, 1000);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // One bucket (burst 1) per client: the second request of a client is limited.
        assert!(a.bucket(ip("2001:db8:1:2::1")).try_acquire().is_ok());
        assert!(a.bucket(ip("2001:db8:1:2:ffff::9")).try_acquire().is_err());
        assert!(a.bucket(ip("2001:db8:1:3::1")).try_acquire().is_ok());
        assert!(a.bucket(ip("192.0.2.7")).try_acquire().is_ok());
        assert!(a.bucket(ip("::ffff:192.0.2.7")).try_acquire().is_err());
        assert!(a.bucket(ip("192.0.2.8")).try_acquire().is_ok());
        // A /48 groups more.
        let a = anonymous(48, 1000);
        assert!(a.bucket(ip("2001:db8:1:2::1")).try_acquire().is_ok());
        assert!(a.bucket(ip("2001:db8:1:3::1")).try_acquire().is_err());
    }

    #[test]
    fn a_flood_of_new_clients_does_not_reset_active_ones() {
        let a = anonymous(64, 64);
        let active: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(a.bucket(active).try_acquire().is_ok());
        for i in 0..10_000u32 {
            let _ = a.bucket(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            if i % 16 == 0 {
                // The active client keeps being limited (its bucket is kept).
                assert!(a.bucket(active).try_acquire().is_err(), "{i}");
            }
        }
        assert!(a.buckets.lock().unwrap().len() <= 64);
    }
}
