//! Whole keys of a remote Zarr store (chunks) fetched in the background before they are read:
//! the chunks after a sequential reader's, and those a reader says it will need (a CSR row's
//! values while its indices are read). Without it, a remote array is read one chunk per round
//! trip per read-ahead worker.
//!
//! Bounded: at most [`PARALLEL`] GETs in flight per store, [`QUEUED`] keys waiting, and
//! [`KEPT_BYTES`] of fetched keys kept until read (beyond, the oldest are dropped). A key is
//! handed to the one read that takes it; a failed fetch is forgotten (the read fetches it
//! again and reports the error). Nothing here holds a lock across a request.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::storage::range::{Fetcher, Span};

/// GETs in flight per store at first: on a fast network two keep a reader fed, and more only
/// compete with it for the CPU (on loopback, 8 made a v3 `X/csr/*.npy` read 15% slower).
const START_PARALLEL: usize = 2;
/// GETs in flight per store, at most: each time a read finds its key still queued or in
/// flight, one more is allowed (at 20 ms per request, 8 read a v3 `X/csr/*.npy` in 0.29 s,
/// 4 in 0.37 s, 2 in 0.63 s; without fetching ahead, 0.76 s).
const PARALLEL: usize = 8;
/// Keys waiting to be fetched, at most (more are not fetched ahead).
const QUEUED: usize = 64;
/// Bytes of fetched keys kept until read, at most.
const KEPT_BYTES: u64 = 8 << 20;
/// How long a read waits for a fetch in flight of its key before fetching it itself.
const WAIT: Duration = Duration::from_secs(30);

/// A key fetched ahead: its bytes, or `None` when the store has no such key.
type Fetched = Option<Vec<u8>>;

#[derive(Default)]
struct State {
    /// Keys waiting for a worker.
    queue: VecDeque<String>,
    /// Keys queued or being fetched.
    pending: HashMap<String, Arc<Condvar>>,
    /// Keys fetched and not yet read, oldest first, with their bytes kept.
    kept: VecDeque<(String, Fetched)>,
    kept_bytes: u64,
    /// Keys readers asked for last (read now, or being read): not fetched ahead again.
    read: VecDeque<String>,
}

/// Keys remembered as read, at most.
const READ_REMEMBERED: usize = 64;

/// Background fetches of whole keys of one remote store.
pub(super) struct KeyAhead {
    fetcher: Arc<Fetcher>,
    state: Mutex<State>,
    workers: AtomicUsize,
    /// GETs allowed in flight (from [`START_PARALLEL`] to [`PARALLEL`]).
    limit: AtomicUsize,
}

impl KeyAhead {
    /// Fetches keys through `fetcher` (its retries, counters and disk cache).
    pub(super) fn new(fetcher: Arc<Fetcher>) -> KeyAhead {
        KeyAhead { fetcher, state: Mutex::default(), workers: AtomicUsize::new(0), limit: AtomicUsize::new(START_PARALLEL) }
    }

    /// Starts fetching `keys` in the background (those not already kept, queued or in flight).
    pub(super) fn prefetch(self: &Arc<Self>, keys: impl IntoIterator<Item = String>) {
        let mut queued = false;
        {
            let mut s = self.state.lock();
            for key in keys {
                if s.queue.len() >= QUEUED {
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

    /// The bytes of `key` if it was fetched ahead (waiting for its fetch if in flight):
    /// `Some(None)` when the store has no such key, `None` when it was not fetched ahead.
    pub(super) fn take(&self, key: &str) -> Option<Fetched> {
        let mut s = self.state.lock();
        // Another hint of this key (a read-ahead window drawn before the read) must not fetch
        // it again.
        if !s.read.iter().any(|k| k == key) {
            if s.read.len() >= READ_REMEMBERED {
                s.read.pop_front();
            }
            s.read.push_back(key.to_string());
        }
        if let Some(cv) = s.pending.get(key).cloned() {
            // The fetches are behind the reader: allow one more in flight.
            let _ = self.limit.fetch_update(Relaxed, Relaxed, |n| (n < PARALLEL).then_some(n + 1));
            // A queued key not yet started is fetched by the reader itself, now.
            if let Some(i) = s.queue.iter().position(|k| k == key) {
                s.queue.remove(i);
                s.pending.remove(key);
                cv.notify_all();
                return None;
            }
            let _ = cv.wait_while_for(&mut s, |s| s.pending.contains_key(key), WAIT);
        }
        let i = s.kept.iter().position(|(k, _)| k == key)?;
        let (_, fetched) = s.kept.remove(i)?;
        s.kept_bytes -= fetched.as_ref().map_or(0, |b| b.len() as u64);
        Some(fetched)
    }

    /// Starts workers until [`PARALLEL`] run or there is one per queued key (each runs until
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
                // Keys left queued are fetched by their readers (`take` hands them back).
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
            let got = self.fetcher.get(&key, Span::All, None, true);
            let mut s = self.state.lock();
            let Some(cv) = s.pending.remove(&key) else { continue };
            match got {
                Ok(bytes) => {
                    let n = bytes.as_ref().map_or(0, |b| b.len() as u64);
                    while s.kept_bytes + n > KEPT_BYTES {
                        let Some((_, old)) = s.kept.pop_front() else { break };
                        s.kept_bytes -= old.as_ref().map_or(0, |b| b.len() as u64);
                    }
                    if n <= KEPT_BYTES {
                        s.kept.push_back((key, bytes));
                        s.kept_bytes += n;
                    }
                }
                Err(e) => log::debug!("{}: background fetch: {e}", self.fetcher.url(&key)),
            }
            drop(s);
            cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::range::fake::FakeServer;

    fn ahead(server: &Arc<FakeServer>) -> Arc<KeyAhead> {
        Arc::new(KeyAhead::new(Arc::new(server.fetcher())))
    }

    /// Waits until nothing is queued or in flight.
    fn idle(ka: &KeyAhead) {
        let t = std::time::Instant::now();
        while !ka.state.lock().pending.is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10), "fetches never finished");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Keys fetched ahead are handed out once, absent keys as absent; a key never asked for
    /// ahead is not there, and a key read is not fetched ahead again.
    #[test]
    fn keys_fetched_ahead_are_taken_once() {
        let server = FakeServer::new(Duration::from_millis(5));
        server.put("a/c/0", vec![1; 100], "v");
        server.put("a/c/1", vec![2; 100], "v");
        let ka = ahead(&server);
        ka.prefetch(["a/c/0".to_string(), "a/c/1".to_string(), "a/c/9".to_string()]);
        idle(&ka);
        assert_eq!(ka.take("a/c/1"), Some(Some(vec![2; 100])));
        assert_eq!(ka.take("a/c/0"), Some(Some(vec![1; 100])));
        assert_eq!(ka.take("a/c/9"), Some(None));
        assert_eq!(ka.take("a/c/1"), None, "taken once");
        assert_eq!(ka.take("a/c/2"), None);
        ka.prefetch(["a/c/0".to_string()]);
        idle(&ka);
        assert_eq!(server.gets.lock().len(), 3, "a key just read is not fetched ahead again");
    }

    /// A read that finds its key in flight waits for it (one GET in all), and one more fetch
    /// is then allowed in flight; a key still queued is handed back to its reader at once.
    #[test]
    fn a_read_waits_for_its_fetch_and_widens_the_window() {
        let server = FakeServer::new(Duration::from_millis(100));
        let keys: Vec<String> = (0..4).map(|i| format!("c/{i}")).collect();
        for k in &keys {
            server.put(k, vec![7; 10], "v");
        }
        let ka = ahead(&server);
        ka.prefetch(keys.clone());
        let t = std::time::Instant::now();
        while server.asked.load(Relaxed) < START_PARALLEL as u64 {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::yield_now();
        }
        let first = ka.state.lock().queue.iter().any(|k| k == "c/0");
        assert!(!first, "the first key is in flight");
        assert_eq!(ka.take("c/0"), Some(Some(vec![7; 10])));
        assert_eq!(ka.limit.load(Relaxed), START_PARALLEL + 1);
        idle(&ka);
        assert_eq!(server.gets.lock().iter().filter(|g| g.span == Span::All).count(), 4);
    }

    /// What is kept is bounded: the oldest keys are dropped, and read again by their readers.
    #[test]
    fn kept_bytes_are_bounded() {
        let server = FakeServer::new(Duration::ZERO);
        let big = (KEPT_BYTES / 3) as usize;
        for i in 0..5 {
            server.put(&format!("c/{i}"), vec![i as u8; big], "v");
        }
        let ka = ahead(&server);
        ka.prefetch((0..5).map(|i| format!("c/{i}")));
        idle(&ka);
        let s = ka.state.lock();
        assert!(s.kept_bytes <= KEPT_BYTES, "{}", s.kept_bytes);
        assert!(s.kept.iter().all(|(k, _)| k != "c/0") && s.kept.iter().any(|(k, _)| k == "c/4"));
    }
}
