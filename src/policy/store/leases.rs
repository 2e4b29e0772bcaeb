//! Fleet-wide caps on open watches (`max_watches_per_caller`): one sorted
//! set of leases per caller in the store, each lease refreshed by the
//! replica that holds its watch and removed when the watch ends, so a
//! killed replica's watches stop counting when their leases expire.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{CONNECT_TIMEOUT, LEASES_PER_CALL, RateStore, WATCH_LEASE, WATCH_LEASE_REFRESH};

/// The watch-lease script. KEYS[1]: the lease set of one caller (a sorted
/// set: member = watch id, score = lease expiry in ms of Redis's `TIME`).
/// ARGV: [1] the cap, [2] the lease (ms), [3] 1 = open one watch (ARGV[4]
/// its id) if fewer than the cap are open, 0 = refresh the leases
/// ARGV[4..] (added again if they expired). Expired leases are dropped
/// first; the set expires with its last lease. Returns 1, or 0 when the
/// cap is reached.
pub const LEASE_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == '1' then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
  redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
else
  for i = 4, #ARGV do redis.call('ZADD', KEYS[1], now + lease, ARGV[i]) end
end
redis.call('PEXPIRE', KEYS[1], lease)
return 1
";

/// Whose watches a lease set counts.
#[derive(Debug, Clone, Copy)]
pub enum WatchOwner<'a> {
    /// A configured caller (its name).
    Caller(&'a str),
    /// A client address (anonymous, JWT or open mode; see
    /// [`crate::policy::client_key`]).
    Client(u128),
}

/// An open watch's lease in the store: refreshed by the replica while it
/// lives, removed when it is dropped (the stream ended).
pub struct WatchLease {
    store: Arc<RateStore>,
    key: Arc<str>,
    id: Arc<str>,
}

impl fmt::Debug for WatchLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchLease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for WatchLease {
    fn drop(&mut self) {
        self.store.release(&self.key, &self.id);
    }
}

impl RateStore {
    /// Opens a watch under the fleet-wide cap `cap` of `owner`: its lease,
    /// `Some(Ok(_))`; `Some(Err(()))` when `cap` watches of `owner` are
    /// open across the fleet; `None` when the store cannot say now (then
    /// `rate_limit_store_failure` applies: with `local`, open it with
    /// [`Self::unconfirmed_lease`]).
    pub async fn lease_watch(
        self: &Arc<Self>,
        owner: WatchOwner<'_>,
        cap: usize,
    ) -> Option<Result<WatchLease, ()>> {
        if !self.is_up() {
            return None;
        }
        let conn = self.conn()?;
        let lease = self.new_lease(owner);
        let mut inv = self.lease_script.prepare_invoke();
        inv.key(&*lease.key)
            .arg(cap)
            .arg(WATCH_LEASE.as_millis() as u64)
            .arg(1)
            .arg(&*lease.id);
        let mut conn = conn;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer =
            tokio::time::timeout(self.config.timeout, inv.invoke_async::<i64>(&mut conn)).await;
        match answer {
            Ok(Ok(1)) => {
                self.register(&lease);
                Some(Ok(lease))
            }
            Ok(Ok(_)) => {
                // Not registered: its drop removes nothing that exists.
                Some(Err(()))
            }
            Ok(Err(e)) => {
                self.failed(if e.is_timeout() { "timeout" } else { "error" });
                None
            }
            Err(_) => {
                self.failed("timeout");
                None
            }
        }
    }

    /// A lease for a watch opened while the store is down (`local`): not
    /// counted yet; the next refresh after the store is back counts it.
    pub fn unconfirmed_lease(self: &Arc<Self>, owner: WatchOwner<'_>) -> WatchLease {
        let lease = self.new_lease(owner);
        self.register(&lease);
        lease
    }

    fn new_lease(self: &Arc<Self>, owner: WatchOwner<'_>) -> WatchLease {
        let key = match owner {
            WatchOwner::Caller(name) => self.key_of("w:c", name),
            WatchOwner::Client(c) => self.client_key_string("w:a", c),
        };
        let mut id = [0u8; 16];
        // Without the OS's randomness: a counter-free fallback that is still
        // unique within this process (the address of a fresh allocation
        // would not be); the time in ns.
        if getrandom::fill(&mut id).is_err() {
            let ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            id = ns.to_le_bytes();
        }
        WatchLease {
            store: Arc::clone(self),
            key: key.into(),
            id: format!("{:032x}", u128::from_le_bytes(id)).into(),
        }
    }

    fn register(&self, lease: &WatchLease) {
        let mut map = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(Arc::clone(&lease.key))
            .or_default()
            .insert(Arc::clone(&lease.id));
    }

    /// A watch ended: its lease is forgotten here and removed from the
    /// store (in the background; if that fails, it expires).
    fn release(self: &Arc<Self>, key: &Arc<str>, id: &Arc<str>) {
        {
            let mut map = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let Some(ids) = map.get_mut(key) else { return };
            if !ids.remove(id) {
                return;
            }
            if ids.is_empty() {
                map.remove(key);
            }
        }
        let (Ok(rt), true, Some(mut conn)) = (
            tokio::runtime::Handle::try_current(),
            self.is_up(),
            self.conn(),
        ) else {
            return;
        };
        let (key, id, timeout) = (Arc::clone(key), Arc::clone(id), self.config.timeout);
        rt.spawn(async move {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&*key).arg(&*id);
            let zrem = cmd.query_async::<i64>(&mut conn);
            let _ = tokio::time::timeout(timeout.max(Duration::from_secs(1)), zrem).await;
        });
    }

    /// The open watches' leases in the store, as far as this replica
    /// knows (for tests and metrics): lease sets, watches.
    pub fn leases_held(&self) -> (usize, usize) {
        let map = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        (map.len(), map.values().map(HashSet::len).sum())
    }

    /// Every [`WATCH_LEASE_REFRESH`]: refreshes the leases of this
    /// replica's open watches (one script run per lease set and 512
    /// watches). Ends when the store is dropped.
    pub(super) async fn lease_refresher(weak: Weak<Self>) {
        let mut tick = tokio::time::interval(WATCH_LEASE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            if !store.is_up() {
                continue;
            }
            let Some(conn) = store.conn() else { continue };
            let batches: Vec<(Arc<str>, Vec<Arc<str>>)> = {
                let map = store.leases.lock().unwrap_or_else(|e| e.into_inner());
                map.iter()
                    .flat_map(|(k, ids)| {
                        let ids: Vec<Arc<str>> = ids.iter().cloned().collect();
                        ids.chunks(LEASES_PER_CALL)
                            .map(|c| (Arc::clone(k), c.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            for (key, ids) in batches {
                let mut inv = store.lease_script.prepare_invoke();
                inv.key(&*key)
                    .arg(0)
                    .arg(WATCH_LEASE.as_millis() as u64)
                    .arg(0);
                for id in &ids {
                    inv.arg(&**id);
                }
                let mut conn = conn.clone();
                let run = inv.invoke_async::<i64>(&mut conn);
                match tokio::time::timeout(CONNECT_TIMEOUT, run).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        store.failed(if e.is_timeout() { "timeout" } else { "error" });
                        break;
                    }
                    Err(_) => {
                        store.failed("timeout");
                        break;
                    }
                }
            }
        }
    }
}
