//! The failed-authentication throttle: after [`MAX_FAILURES`] failed
//! authentications within [`WINDOW`] from one client (an IPv4 address, an
//! IPv6 /64), its requests to the token routes get RESOURCE_EXHAUSTED / 429
//! until the window is over, before their credentials are even checked.
//!
//! It bounds the log and audit volume and the work a key-guessing client
//! can cause; the keys themselves (256 bits) are not guessable. Memory is
//! bounded: at most [`MAX_TRACKED`] clients are tracked; when the table is
//! full, the least recently failing clients are forgotten first
//! ([`super::bounded::BoundedMap`], shared with the anonymous rate limit).

use super::bounded::BoundedMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications a client may have within [`WINDOW`].
pub const MAX_FAILURES: u32 = 20;
/// The throttle's window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most clients tracked at once.
pub const MAX_TRACKED: usize = 65_536;

/// The client key of an address: IPv4 (or IPv4-mapped IPv6) as is, IPv6
/// by its /64 (one subscriber's allocation).
pub fn client_key(ip: IpAddr) -> u128 {
    super::networks::client_key(ip, 64)
}

/// Failed authentications per client.
#[derive(Debug)]
pub struct AuthThrottle {
    clients: Mutex<BoundedMap<u128, (u32, Instant)>>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthThrottle {
    /// An empty throttle.
    pub fn new() -> Self {
        Self {
            clients: Mutex::new(BoundedMap::new(MAX_TRACKED)),
        }
    }

    /// `Err(wait)` when `ip` is throttled now.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// Records a failed authentication of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_at(ip, Instant::now());
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means a panic mid-update of plain numbers.
        let map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&client_key(ip)) {
            Some(&(n, start)) if n >= MAX_FAILURES => {
                let elapsed = now.saturating_duration_since(start);
                if elapsed < WINDOW {
                    Err(WINDOW - elapsed)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        let key = client_key(ip);
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.get_or_insert_with(key, || (0, now));
        if now.saturating_duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_the_limit_within_the_window() {
        let t = AuthThrottle::new();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed_at(ip, t0);
        }
        assert!(t.check_at(ip, t0).is_ok());
        t.failed_at(ip, t0);
        let wait = t.check_at(ip, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Another client is not affected; the window ends.
        assert!(t.check_at("192.0.2.8".parse().unwrap(), t0).is_ok());
        assert!(t.check_at(ip, t0 + WINDOW).is_ok());
        // A new failure after the window starts a new count.
        t.failed_at(ip, t0 + WINDOW);
        assert!(t.check_at(ip, t0 + WINDOW).is_ok());
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_by_the_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), client_key(mapped));
        // No IPv6 /64 collides with an IPv4 address.
        assert_ne!(client_key("::c000:207".parse().unwrap()), client_key(v4));
    }

    #[test]
    fn memory_stays_bounded() {
        let t = AuthThrottle::new();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            t.failed_at(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_nanos(u64::from(i)),
            );
        }
        let n = t.clients.lock().unwrap().len();
        assert!(n <= MAX_TRACKED, "{n}");
    }
}
