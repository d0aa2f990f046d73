//! Objects (or exact ranges of one) fetched in the background before they are read, each handed
//! to the one read that takes it: a remote Zarr store's chunks ahead of a sequential reader and
//! those a reader says it will need, a remote file's chunk-index nodes (every node of a B-tree
//! level at once, so that a tree costs a round trip per level). One queue per store or object.
//!
//! Bounded ([`Limits`]): GETs in flight, keys waiting, bytes fetched and not yet read (beyond,
//! the oldest are dropped). A key read is remembered, and not fetched ahead again when hinted
//! once more; a read that finds its key still queued fetches it itself, at once; a read that
//! finds it in flight waits for it and lets one more GET fly (the fetches are behind the
//! reader). A failed fetch is forgotten: its read fetches again and reports the error. No lock
//! is held across a request.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::FetchError;

/// How much one queue fetches ahead.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// GETs in flight at first.
    pub start: usize,
    /// GETs in flight at most (each read that waits for its key allows one more).
    pub max: usize,
    /// Keys waiting for a GET, at most (more are not fetched ahead).
    pub queued: usize,
    /// Bytes fetched and not yet read kept, at most.
    pub kept_bytes: u64,
}

/// A key's bytes, or `None` when the store has no such key.
pub type Fetched = Option<Vec<u8>>;

/// How a key is fetched (through a [`super::Fetcher`]: its retries, counters and disk cache).
pub type FetchFn<K> = Box<dyn Fn(&K) -> Result<Fetched, FetchError> + Send + Sync>;

/// How long a read waits for a fetch in flight of its key before fetching it itself.
const WAIT: Duration = Duration::from_secs(30);
/// Keys remembered as read, at most.
const READ_REMEMBERED: usize = 64;

struct State<K> {
    /// Keys waiting for a worker.
    queue: VecDeque<K>,
    /// Keys queued or being fetched.
    pending: HashMap<K, Arc<Condvar>>,
    /// Keys fetched and not yet read, oldest first, with their bytes kept.
    kept: VecDeque<(K, Fetched)>,
    kept_bytes: u64,
    /// Keys readers asked for last (read now, or being read): not fetched ahead again.
    read: VecDeque<K>,
}

/// Background fetches of whole keys of one store (or exact ranges of one object).
pub struct FetchAhead<K> {
    /// Names the store in log lines.
    name: String,
    fetch: FetchFn<K>,
    limits: Limits,
    state: Mutex<State<K>>,
    workers: AtomicUsize,
    /// GETs allowed in flight (from `limits.start` to `limits.max`).
    limit: AtomicUsize,
}

impl<K: Clone + Eq + Hash + Debug + Send + Sync + 'static> FetchAhead<K> {
    /// A queue fetching keys with `fetch`, within `limits`; `name` appears in its log lines.
    pub fn new(name: String, limits: Limits, fetch: FetchFn<K>) -> FetchAhead<K> {
        let state = State { queue: VecDeque::new(), pending: HashMap::new(), kept: VecDeque::new(), kept_bytes: 0, read: VecDeque::new() };
        let limit = AtomicUsize::new(limits.start.clamp(1, limits.max.max(1)));
        FetchAhead { name, fetch, limits, state: Mutex::new(state), workers: AtomicUsize::new(0), limit }
    }

    /// Starts fetching `keys` in the background (those not already kept, queued, in flight or
    /// just read), in the order given.
    pub fn prefetch(self: &Arc<Self>, keys: impl IntoIterator<Item = K>) {
        let mut queued = false;
        {
            let mut s = self.state.lock();
            for key in keys {
                if s.queue.len() >= self.limits.queued {
                    break;
                }
                if s.pending.contains_key(&key) || s.kept.iter().any(|(k, _)| *k == key) || s.read.contains(&key) {
                    continue;
                }
                s.pending.insert(key.clone(), Arc::new(Condvar::new()));
                s.queue.push_back(key);
                queued = true;
            }
        }
        if queued {
            self.spawn_workers();
        }
    }

    /// The bytes of `key` if it was fetched ahead (waiting for its fetch if in flight, fetching
    /// it now if still queued): `Some(None)` when the store has no such key, `None` when it was
    /// not fetched ahead (or its fetch failed).
    pub fn take(&self, key: &K) -> Option<Fetched> {
        let mut s = self.state.lock();
        // Another hint of this key (a read-ahead window drawn before the read) must not fetch
        // it again.
        if !s.read.contains(key) {
            if s.read.len() >= READ_REMEMBERED {
                s.read.pop_front();
            }
            s.read.push_back(key.clone());
        }
        if let Some(cv) = s.pending.get(key).cloned() {
            // The fetches are behind the reader: allow one more in flight.
            let max = self.limits.max;
            let _ = self.limit.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1));
            if let Some(i) = s.queue.iter().position(|k| k == key) {
                // Not started: the reader fetches it, now (the same request).
                s.queue.remove(i);
                s.pending.remove(key);
                drop(s);
                cv.notify_all();
                return self.fetch_logged(key);
            }
            let _ = cv.wait_while_for(&mut s, |s| s.pending.contains_key(key), WAIT);
        }
        let i = s.kept.iter().position(|(k, _)| k == key)?;
        let (_, fetched) = s.kept.remove(i)?;
        s.kept_bytes -= size(&fetched);
        Some(fetched)
    }

    /// `key` fetched now; `None` (logged) when that fails.
    fn fetch_logged(&self, key: &K) -> Option<Fetched> {
        match (self.fetch)(key) {
            Ok(f) => Some(f),
            Err(e) => {
                log::debug!("{}: fetch of {key:?}: {e}", self.name);
                None
            }
        }
    }

    /// Starts workers until as many run as are allowed, or one per queued key (each runs until
    /// the queue is empty). Workers are counted under the state's lock, where they also decide
    /// to stop: a key queued as the last worker stops still gets one.
    fn spawn_workers(self: &Arc<Self>) {
        loop {
            {
                let s = self.state.lock();
                let n = self.workers.load(Relaxed);
                if n >= self.limit.load(Relaxed) || n >= s.queue.len() {
                    return;
                }
                self.workers.store(n + 1, Relaxed);
            }
            let me = self.clone();
            if let Err(e) = std::thread::Builder::new().name("annfs-fetch".into()).spawn(move || me.work()) {
                // Keys left queued are fetched by their readers (`take` does).
                log::debug!("no background fetch thread: {e}");
                let _s = self.state.lock();
                self.workers.fetch_sub(1, Relaxed);
                return;
            }
        }
    }

    /// Fetches queued keys until none is left.
    fn work(&self) {
        loop {
            let key = {
                let mut s = self.state.lock();
                let Some(key) = s.queue.pop_front() else {
                    self.workers.fetch_sub(1, Relaxed);
                    return;
                };
                key
            };
            let got = (self.fetch)(&key);
            let mut s = self.state.lock();
            let Some(cv) = s.pending.remove(&key) else { continue };
            match got {
                Ok(bytes) => {
                    let n = size(&bytes);
                    while s.kept_bytes + n > self.limits.kept_bytes {
                        let Some((_, old)) = s.kept.pop_front() else { break };
                        s.kept_bytes -= size(&old);
                    }
                    if n <= self.limits.kept_bytes {
                        s.kept.push_back((key, bytes));
                        s.kept_bytes += n;
                    }
                }
                Err(e) => log::debug!("{}: background fetch of {key:?}: {e}", self.name),
            }
            drop(s);
            cv.notify_all();
        }
    }
}

fn size(f: &Fetched) -> u64 {
    f.as_ref().map_or(0, |b| b.len() as u64)
}

#[cfg(test)]
#[path = "ahead_tests.rs"]
mod tests;
