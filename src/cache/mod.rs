//! The one byte-bounded cache of decoded chunks and rendered blocks, shared by every file of a
//! mount. Sharded (no global lock) and single-flight: concurrent misses on one key run the
//! loader once while the others wait for its result.

pub mod stats;

use std::sync::Arc;

use quick_cache::sync::{Cache, GuardResult};
use quick_cache::Weighter;

pub use stats::Stats;

/// What a cache entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A decoded storage chunk: (array id, chunk index).
    Chunk(u32, u64),
    /// A block of strings of a string array: (array id, block index).
    Strings(u32, u64),
    /// A rendered block of a virtual file: (file id, block index).
    Rendered(u64, u64),
}

/// A cached value.
#[derive(Clone)]
pub enum Value {
    /// Raw bytes (decoded chunk or rendered text).
    Bytes(Arc<[u8]>),
    /// Decoded strings and their total byte size.
    Strings(Arc<Vec<String>>, u64),
}

impl Value {
    fn weight(&self) -> u64 {
        // A small per-entry overhead so that many tiny entries are still bounded.
        64 + match self {
            Value::Bytes(b) => b.len() as u64,
            Value::Strings(v, bytes) => bytes + 24 * v.len() as u64,
        }
    }
}

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<Key, Value> for ByteWeighter {
    fn weight(&self, _key: &Key, val: &Value) -> u64 {
        val.weight()
    }
}

/// The shared chunk cache with its counters.
pub struct ChunkCache {
    inner: Cache<Key, Value, ByteWeighter>,
    budget: u64,
    /// Bytes lent out of the budget to working buffers (see [`ChunkCache::lend`]).
    lent: std::sync::atomic::AtomicU64,
    /// Live counters, shown in `.annfs/stats.json`.
    pub stats: Stats,
}

impl ChunkCache {
    /// A cache holding at most about `budget` bytes.
    pub fn new(budget: u64) -> Self {
        let est_items = (budget / (256 * 1024)).clamp(16, 1 << 20) as usize;
        ChunkCache {
            inner: Cache::with_weighter(est_items, budget.max(1), ByteWeighter),
            budget,
            lent: Default::default(),
            stats: Stats::default(),
        }
    }

    /// Lends up to `bytes` of the budget to a working buffer outside the cache (an index
    /// build): the cache shrinks (evicting) until the returned loan is dropped, so the two
    /// together stay within one budget. At most three quarters of the budget are lent at a
    /// time; the loan says how much was granted.
    pub fn lend(self: &Arc<Self>, bytes: u64) -> Loan {
        use std::sync::atomic::Ordering::SeqCst;
        let mut granted = 0;
        let _ = self.lent.fetch_update(SeqCst, SeqCst, |lent| {
            granted = bytes.min((self.budget / 4 * 3).saturating_sub(lent));
            Some(lent + granted)
        });
        self.inner.set_capacity(self.budget.saturating_sub(self.lent.load(SeqCst)).max(1));
        Loan { cache: self.clone(), bytes: granted }
    }

    /// The configured budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes currently held.
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }

    /// Returns the value for `key`, running `load` on a miss. Concurrent callers missing on the
    /// same key wait for the first caller's result instead of loading it again; an error is not
    /// cached (the next caller retries).
    pub fn get_or_load<E>(&self, key: Key, load: impl FnOnce() -> Result<Value, E>) -> Result<Value, E> {
        match self.inner.get_value_or_guard(&key, None) {
            GuardResult::Value(v) => {
                self.stats.hit();
                Ok(v)
            }
            GuardResult::Guard(g) => {
                self.stats.miss();
                let start = std::time::Instant::now();
                let v = load()?;
                self.stats.loaded(&key, v.weight(), start.elapsed());
                let _ = g.insert(v.clone());
                Ok(v)
            }
            GuardResult::Timeout => {
                // No timeout was given, so this is not reached; load without caching.
                load()
            }
        }
    }

    /// Bytes for `key`, loading them on a miss.
    pub fn bytes<E>(&self, key: Key, load: impl FnOnce() -> Result<Vec<u8>, E>) -> Result<Arc<[u8]>, E> {
        match self.get_or_load(key, || load().map(|b| Value::Bytes(b.into())))? {
            Value::Bytes(b) => Ok(b),
            Value::Strings(..) => Ok(Arc::from(Vec::new())),
        }
    }

    /// Strings for `key`, loading them on a miss.
    pub fn strings<E>(
        &self,
        key: Key,
        load: impl FnOnce() -> Result<Vec<String>, E>,
    ) -> Result<Arc<Vec<String>>, E> {
        let v = self.get_or_load(key, || {
            load().map(|v| {
                let bytes = v.iter().map(|s| s.len() as u64).sum();
                Value::Strings(Arc::new(v), bytes)
            })
        })?;
        match v {
            Value::Strings(s, _) => Ok(s),
            Value::Bytes(_) => Ok(Arc::new(Vec::new())),
        }
    }
}

/// Budget lent by [`ChunkCache::lend`]; given back on drop.
pub struct Loan {
    cache: Arc<ChunkCache>,
    bytes: u64,
}

impl Loan {
    /// Bytes granted.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        let c = &self.cache;
        let lent = c.lent.fetch_sub(self.bytes, SeqCst) - self.bytes;
        c.inner.set_capacity(c.budget.saturating_sub(lent).max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn single_flight_and_budget() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let loads = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                std::thread::spawn(move || {
                    cache
                        .bytes::<()>(Key::Chunk(1, 7), || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(vec![7u8; 1000])
                        })
                        .unwrap()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().len(), 1000);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // Fill far past the budget: the weight stays bounded.
        for i in 0..100 {
            cache.bytes::<()>(Key::Chunk(2, i), || Ok(vec![0u8; 64 * 1024])).unwrap();
        }
        assert!(cache.weight() <= 1 << 20, "weight {}", cache.weight());
    }

    #[test]
    fn loans_shrink_the_cache_until_dropped() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        for i in 0..16 {
            cache.bytes::<()>(Key::Chunk(3, i), || Ok(vec![0u8; 60 * 1024])).unwrap();
        }
        let loan = cache.lend(1 << 20);
        assert_eq!(loan.bytes(), 3 << 18, "at most three quarters of the budget");
        assert!(cache.weight() <= 1 << 18, "weight {}", cache.weight());
        assert_eq!(cache.lend(1).bytes(), 0, "nothing left to lend");
        drop(loan);
        for i in 0..16 {
            cache.bytes::<()>(Key::Chunk(4, i), || Ok(vec![0u8; 60 * 1024])).unwrap();
        }
        assert!(cache.weight() > 1 << 18, "capacity restored: {}", cache.weight());
    }

    #[test]
    fn errors_are_not_cached() {
        let cache = ChunkCache::new(1 << 20);
        assert!(cache.bytes(Key::Chunk(0, 0), || Err("boom")).is_err());
        assert_eq!(&*cache.bytes::<&str>(Key::Chunk(0, 0), || Ok(vec![1])).unwrap(), &[1]);
    }
}
