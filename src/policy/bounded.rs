//! A bounded map for per-client state (the anonymous rate limit, the
//! failed-authentication throttle): at most `capacity` entries; when it is
//! full, the least recently used eighth is evicted at once (amortised
//! O(1) per insert), never the whole map, so a flood of new clients cannot
//! reset the state of the clients that are active.

use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `capacity` entries with least-recently-used eviction.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    map: HashMap<K, (V, u64)>,
    capacity: usize,
    tick: u64,
}

impl<K: Hash + Eq + Copy, V> BoundedMap<K, V> {
    /// An empty map holding at most `capacity` (at least 1) entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    /// The entry of `key` (marked as just used), inserted with `make` when
    /// absent; a full map first evicts its least recently used entries.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        let tick = self.tick;
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.evict();
        }
        let e = self.map.entry(key).or_insert_with(|| (make(), tick));
        e.1 = tick;
        &mut e.0
    }

    /// The entry of `key`, if present (not marked as used).
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|e| &e.0)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Evicts the least recently used eighth (at least one entry).
    fn evict(&mut self) {
        let mut ticks: Vec<u64> = self.map.values().map(|e| e.1).collect();
        let n = (ticks.len() / 8).max(1).min(ticks.len());
        if n == 0 {
            return;
        }
        let (_, cut, _) = ticks.select_nth_unstable(n - 1);
        let cut = *cut;
        self.map.retain(|_, e| e.1 > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_never_everything() {
        let mut m = BoundedMap::new(16);
        for i in 0..16u32 {
            *m.get_or_insert_with(i, || 0) += 1;
        }
        // 0 is used again: it is now the most recent.
        *m.get_or_insert_with(0, || 0) += 1;
        *m.get_or_insert_with(100, || 0) += 1;
        assert!(m.len() <= 16 && m.len() >= 14, "{}", m.len());
        assert_eq!(m.get(&0), Some(&2), "a recently used entry survives");
        assert_eq!(m.get(&1), None, "the least recently used is evicted");
        assert_eq!(m.get(&100), Some(&1));
        // A flood of new keys keeps the bound and the recent ones.
        for i in 1000..1100u32 {
            m.get_or_insert_with(i, || 0);
            m.get_or_insert_with(0, || 0);
            assert!(m.len() <= 16);
        }
        assert!(m.get(&0).is_some());
        assert!(m.get(&1099).is_some());
    }
}
