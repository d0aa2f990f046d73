//! The one byte-bounded cache of decoded chunks and rendered blocks, shared by every file of a
//! mount. Sharded (no global lock) and single-flight: concurrent misses on one key run the
//! loader once while the others wait for its result.

pub mod held;
pub mod ids;
pub mod recycle;
pub mod resident;
pub mod stats;

use std::sync::Arc;

use quick_cache::sync::{Cache, DefaultLifecycle, GuardResult};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

pub use ids::{ArrIds, KeyIds};
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

/// Shared bytes of a cache entry (a `Vec` behind an `Arc`: inserting a freshly decoded buffer
/// copies nothing).
pub type Bytes = Arc<Vec<u8>>;

/// A byte range of shared bytes (a part of a cached chunk a reply is sent from).
pub type Slice = (Bytes, std::ops::Range<usize>);

/// A cached value.
#[derive(Clone)]
pub enum Value {
    /// Raw bytes (decoded chunk or rendered text).
    Bytes(Bytes),
    /// Decoded strings and their total byte size.
    Strings(Arc<Vec<String>>, u64),
}

impl Value {
    fn weight(&self) -> u64 {
        // A small per-entry overhead so that many tiny entries are still bounded.
        64 + match self {
            Value::Bytes(b) => b.capacity() as u64,
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

/// Smallest share of the budget per cache shard.
pub const MIN_SHARD_BYTES: u64 = 32 << 20;

/// The part of a budget kept free of cached data for requests in flight: an eighth, between
/// 4 MiB and 64 MiB.
pub fn in_flight_reserve(budget: u64) -> u64 {
    (budget / 8).clamp(4 << 20, 64 << 20).min(budget / 2)
}

/// The shared chunk cache with its counters.
pub struct ChunkCache {
    inner: Cache<Key, Value, ByteWeighter, DefaultHashBuilder, DefaultLifecycle<Key, Value>>,
    budget: u64,
    capacity: u64,
    /// Bytes lent out of the budget to working buffers (see [`ChunkCache::lend`]).
    lent: std::sync::atomic::AtomicU64,
    /// Buffers of chunks dropped behind readers, for the next chunks (see [`recycle`]).
    recycle: recycle::Recycler,
    /// Live counters, shown in `.annfs/stats.json`.
    pub stats: Arc<Stats>,
    /// Ids of what is cached here (arrays, files, plans).
    pub ids: KeyIds,
    /// Values held outside the entries while used (a categorical's labels), shared by key.
    pub held: held::Held,
}

impl ChunkCache {
    /// A cache holding at most about `budget` bytes.
    ///
    /// The cache is split into shards (fewer locks contended), each holding an equal part of the
    /// budget; an entry heavier than its shard's part is never kept. Shards are therefore sized
    /// from the budget (at least [`MIN_SHARD_BYTES`] each, at most 16), not from the CPU count:
    /// on a 64-core node a CPU-count split of a 1 GiB budget would refuse every entry over ~4 MiB.
    ///
    /// The cache itself holds at most [`ChunkCache::capacity`] = the budget minus a reserve
    /// ([`in_flight_reserve`]) for what requests hold while they run (reply buffers, blocks
    /// being rendered), so that everything data-driven fits the one budget.
    pub fn new(budget: u64) -> Self {
        let capacity = budget.saturating_sub(in_flight_reserve(budget)).max(1);
        let est_items = (capacity / (256 * 1024)).clamp(16, 1 << 20) as usize;
        let shards = (capacity / MIN_SHARD_BYTES).clamp(1, 16) as usize;
        let built = OptionsBuilder::new()
            .estimated_items_capacity(est_items)
            .weight_capacity(capacity)
            .shards(shards)
            .build();
        let inner = match built {
            Ok(opts) => Cache::with_options(opts, ByteWeighter, DefaultHashBuilder::default(), DefaultLifecycle::default()),
            Err(_) => Cache::with_weighter(est_items, capacity, ByteWeighter),
        };
        ChunkCache { inner, budget, capacity, lent: Default::default(), recycle: recycle::Recycler::new((in_flight_reserve(budget) / 4) as usize), stats: Arc::new(Stats::default()), ids: KeyIds::default(), held: held::Held::default() }
    }

    /// Bytes the cache itself may hold (the budget minus the in-flight reserve).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Lends up to `bytes` of the budget to a working buffer outside the cache (an index
    /// build): the cache shrinks (evicting) until the returned loan is dropped, so the two
    /// together stay within one budget. At most three quarters of the capacity are lent at a
    /// time; the loan says how much was granted.
    pub fn lend(self: &Arc<Self>, bytes: u64) -> Loan {
        use std::sync::atomic::Ordering::SeqCst;
        let mut granted = 0;
        let _ = self.lent.fetch_update(SeqCst, SeqCst, |lent| {
            granted = bytes.min((self.capacity / 4 * 3).saturating_sub(lent));
            Some(lent + granted)
        });
        self.inner.set_capacity(self.capacity.saturating_sub(self.lent.load(SeqCst)).max(1));
        Loan { cache: self.clone(), bytes: granted }
    }

    /// Bytes of the budget lent out ([`ChunkCache::lend`]).
    pub fn lent(&self) -> u64 {
        self.lent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The configured budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// True when `key` is cached (no effect on its standing).
    pub fn contains(&self, key: Key) -> bool {
        self.inner.contains_key(&key)
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
                let v = self.load_counted(&key, load)?;
                let _ = g.insert(v.clone());
                Ok(v)
            }
            GuardResult::Timeout => {
                // No timeout was given, so this is not reached; load without caching.
                load()
            }
        }
    }

    /// Loads the bytes for `key` into the cache unless they are there or another thread is
    /// loading them (read-ahead: it moves on to the next chunk instead of waiting).
    pub fn warm<E>(&self, key: Key, load: impl FnOnce() -> Result<Vec<u8>, E>) -> Result<(), E> {
        match self.inner.get_value_or_guard(&key, Some(std::time::Duration::ZERO)) {
            GuardResult::Value(_) | GuardResult::Timeout => Ok(()),
            GuardResult::Guard(g) => {
                let _ = g.insert(self.load_counted(&key, || load().map(|b| Value::Bytes(Arc::new(b))))?);
                Ok(())
            }
        }
    }

    /// Runs `load` for a missing `key`, counting the miss and the load in the stats.
    fn load_counted<E>(&self, key: &Key, load: impl FnOnce() -> Result<Value, E>) -> Result<Value, E> {
        self.stats.miss();
        let start = std::time::Instant::now();
        let v = load()?;
        self.stats.loaded(key, v.weight(), start.elapsed());
        Ok(v)
    }

    /// Drops `key` from the cache, if held (drop-behind: a sequential reader has passed it). Its
    /// buffer goes to the recycler for the next chunks (see [`recycle`]) instead of back to the
    /// allocator, reused once no reply still holds it.
    pub fn drop_behind(&self, key: Key) {
        if let Some((_, value)) = self.inner.remove(&key) {
            self.stats.dropped_behind();
            if let Value::Bytes(b) = value {
                self.recycle.give(b);
            }
        }
    }

    /// A freshly decoded chunk, moved into the buffer of one dropped behind when one of its size
    /// is kept (see [`recycle`]).
    pub fn adopt(&self, fresh: Vec<u8>) -> Vec<u8> {
        match self.recycle.take(fresh.len()) {
            Some(mut buf) => {
                buf.extend_from_slice(&fresh);
                self.stats.recycled();
                buf
            }
            None => fresh,
        }
    }

    /// Bytes for `key`, loading them on a miss.
    pub fn bytes<E>(&self, key: Key, load: impl FnOnce() -> Result<Vec<u8>, E>) -> Result<Bytes, E> {
        match self.get_or_load(key, || load().map(|b| Value::Bytes(Arc::new(b))))? {
            Value::Bytes(b) => Ok(b),
            Value::Strings(..) => Ok(Arc::new(Vec::new())),
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
        c.inner.set_capacity(c.capacity.saturating_sub(lent).max(1));
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
    fn warm_loads_once_and_never_waits_for_another_loader() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let c = cache.clone();
        let reader = std::thread::spawn(move || {
            c.bytes::<()>(Key::Chunk(5, 0), || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(vec![1u8; 100])
            })
            .unwrap()
            .len()
        });
        started_rx.recv().unwrap();
        // Another thread holds the chunk's load: warm returns at once without loading.
        let loads = AtomicUsize::new(0);
        let count = || {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(vec![2u8; 100])
        };
        cache.warm(Key::Chunk(5, 0), count).unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 0);
        release_tx.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), 100);
        // Cached already: nothing loaded; missing: loaded once and then served from the cache.
        cache.warm(Key::Chunk(5, 0), count).unwrap();
        cache.warm(Key::Chunk(5, 1), count).unwrap();
        cache.warm(Key::Chunk(5, 1), count).unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.bytes::<()>(Key::Chunk(5, 1), || Ok(vec![])).unwrap()[0], 2);
    }

    #[test]
    fn big_entries_are_kept_and_the_reserve_is_left_free() {
        let cache = ChunkCache::new(256 << 20);
        assert_eq!(cache.capacity(), (256 << 20) - (32 << 20));
        let loads = AtomicUsize::new(0);
        for _ in 0..2 {
            cache
                .bytes::<()>(Key::Chunk(0, 0), || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok(vec![1u8; 20 << 20])
                })
                .unwrap();
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "a 20 MiB entry fits one shard and is kept");
        for i in 1..40 {
            cache.bytes::<()>(Key::Chunk(0, i), || Ok(vec![0u8; 8 << 20])).unwrap();
        }
        assert!(cache.weight() <= cache.capacity(), "weight {}", cache.weight());
    }

    #[test]
    fn loans_shrink_the_cache_until_dropped() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        for i in 0..16 {
            cache.bytes::<()>(Key::Chunk(3, i), || Ok(vec![0u8; 60 * 1024])).unwrap();
        }
        let loan = cache.lend(1 << 20);
        assert_eq!(loan.bytes(), cache.capacity() / 4 * 3, "at most three quarters of the capacity");
        assert!(cache.weight() <= cache.capacity() - loan.bytes(), "weight {}", cache.weight());
        assert_eq!(cache.lend(1).bytes(), 0, "nothing left to lend");
        drop(loan);
        for i in 0..16 {
            cache.bytes::<()>(Key::Chunk(4, i), || Ok(vec![0u8; 60 * 1024])).unwrap();
        }
        assert!(cache.weight() > cache.capacity() / 4, "capacity restored: {}", cache.weight());
    }

    #[test]
    fn errors_are_not_cached() {
        let cache = ChunkCache::new(1 << 20);
        assert!(cache.bytes(Key::Chunk(0, 0), || Err("boom")).is_err());
        assert_eq!(&*cache.bytes::<&str>(Key::Chunk(0, 0), || Ok(vec![1])).unwrap(), &[1]);
    }
}
