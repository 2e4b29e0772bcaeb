//! The clock and the salt source of the issuer: the system clock and a
//! per-thread pool of OS randomness, or fixed values for reproducible tokens.

use std::fmt;
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

/// The current time, in unix seconds.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, truncated to `u32` like the token format.
    fn now(&self) -> u32;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The format's issue_ts is a u32 (good until 2106); truncate as the
        // official builders do.
        secs as u32
    }
}

/// A clock that can also wait: the schedule of `WatchToken` streams waits
/// on it, so tests can move time by hand ([`ManualClock`]) instead of
/// sleeping.
pub trait Timer: Clock {
    /// Completes once [`Clock::now`] is at least `at` (unix seconds).
    fn wait_until(&self, at: u32) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl Timer for SystemClock {
    fn wait_until(&self, at: u32) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let wait = std::time::Duration::from_secs(u64::from(at)).saturating_sub(now);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]): for tests
/// of schedules that span minutes or hours.
#[derive(Debug)]
pub struct ManualClock {
    now: tokio::sync::watch::Sender<u32>,
}

impl ManualClock {
    /// A clock at `now` (unix seconds).
    pub fn new(now: u32) -> Self {
        Self {
            now: tokio::sync::watch::Sender::new(now),
        }
    }

    /// Moves the clock `secs` forward, waking what waits until then.
    pub fn advance(&self, secs: u32) {
        self.now.send_modify(|n| *n = n.saturating_add(secs));
    }

    /// Sets the clock to `at` (never backwards).
    pub fn set(&self, at: u32) {
        self.now.send_modify(|n| *n = (*n).max(at));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u32 {
        *self.now.borrow()
    }
}

impl Timer for ManualClock {
    fn wait_until(&self, at: u32) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`: `wait_for` ends only when
            // the time has come.
            let _ = rx.wait_for(|n| *n >= at).await;
        })
    }
}

/// A shared [`Timer`] as the issuer's [`Clock`].
#[derive(Debug, Clone)]
pub struct SharedClock(pub std::sync::Arc<dyn Timer>);

impl Clock for SharedClock {
    fn now(&self) -> u32 {
        self.0.now()
    }
}

/// A source of salts.
pub trait SaltSource: Send + Sync + fmt::Debug {
    /// A salt for one token.
    fn salt(&self) -> u32;
}

/// Salts from the operating system's CSPRNG, uniform in 1..=99_999_999
/// (the python3 / Node.js range).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomSalt;

/// Largest salt [`RandomSalt`] returns.
pub const MAX_SALT: u32 = 99_999_999;

/// Random bytes from the OS, fetched [`SALT_POOL`] bytes at a time per
/// thread: one `getrandom` system call per 64 salts instead of one each.
/// Bytes are used once and never leave the thread that fetched them.
const SALT_POOL: usize = 256;

struct SaltPool {
    bytes: [u8; SALT_POOL],
    next: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<SaltPool> = const {
        std::cell::RefCell::new(SaltPool { bytes: [0; SALT_POOL], next: SALT_POOL })
    };
}

/// Four fresh random bytes, or `None` when the OS CSPRNG fails.
fn random_u32() -> Option<u32> {
    let take = |p: &mut SaltPool| -> Option<u32> {
        if p.next + 4 > SALT_POOL {
            getrandom::fill(&mut p.bytes).ok()?;
            p.next = 0;
        }
        let b = &p.bytes[p.next..p.next + 4];
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        p.next += 4;
        Some(v)
    };
    let direct = || {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).ok().map(|()| u32::from_le_bytes(b))
    };
    POOL.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut p) => take(&mut p),
        // Not re-entered in practice; a fresh draw is as good.
        Err(_) => direct(),
    })
    // The thread is being torn down and its pool is gone.
    .unwrap_or_else(|_| direct())
}

impl SaltSource for RandomSalt {
    fn salt(&self) -> u32 {
        // Rejection sampling over the largest multiple of MAX_SALT below 2^32
        // keeps the distribution uniform.
        const ZONE: u32 = u32::MAX - (u32::MAX % MAX_SALT);
        loop {
            let Some(v) = random_u32() else {
                // The OS CSPRNG failing is not recoverable in a useful way;
                // fall back to the next best unpredictable value rather than
                // panicking: the salt is not a secret, only a nonce.
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(1);
                return nanos % MAX_SALT + 1;
            };
            if v < ZONE {
                return v % MAX_SALT + 1;
            }
        }
    }
}

/// A fixed value, as clock or salt (for `--issue-ts`, `--salt` and tests).
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub u32);

impl Clock for Fixed {
    fn now(&self) -> u32 {
        self.0
    }
}

impl SaltSource for Fixed {
    fn salt(&self) -> u32 {
        self.0
    }
}

/// Year, month, day of the proleptic Gregorian calendar for a day count
/// since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_salts_are_in_range_and_vary_across_pool_refills() {
        // Several pool refills (64 salts per refill).
        let salts: Vec<u32> = (0..1000).map(|_| RandomSalt.salt()).collect();
        assert!(salts.iter().all(|s| (1..=MAX_SALT).contains(s)));
        let distinct: std::collections::HashSet<_> = salts.iter().collect();
        // 1000 draws from 10^8 values: a repeat is ~0.5% likely; many are a bug.
        assert!(distinct.len() >= 995, "{} distinct", distinct.len());
        // Another thread has its own pool, so it does not replay these.
        let other = std::thread::spawn(|| (0..64).map(|_| RandomSalt.salt()).collect::<Vec<_>>())
            .join()
            .unwrap();
        assert_ne!(other, salts[..64]);
    }
}
