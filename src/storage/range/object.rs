//! One remote object (an `.h5ad` file) as a [`RangeRead`]: reads of at least a block go out as
//! one range GET of exactly those bytes; smaller reads (HDF5 metadata, heap collections, small
//! chunks) are served from aligned blocks kept in a small bounded cache, so that opening a file
//! takes a handful of round trips. [`RangeRead::will_need`] (read-ahead, the values of rows whose
//! indices are being read) fetches blocks in the background, a few GETs of up to 4 MiB at a time,
//! and a later read of them — small or large — is served from the blocks. A sequential reader
//! of small pieces, or a run of hints each starting where the last ended (the mount's
//! read-ahead walking a file), is read ahead by runs of blocks: one run, and one more each time
//! the reader catches up with a run still in flight, up to four. Every GET is pinned to the
//! version seen at open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use quick_cache::sync::Cache;

use super::ahead::{FetchAhead, Limits};
use super::client::{ObjectMeta, Span};
use super::fetcher::Fetcher;
use super::RangeRead;

/// Size of a cached block.
pub const BLOCK: u64 = 512 << 10;
/// Bytes of blocks kept in memory per object (plus up to 8 MiB of prefetched index nodes and
/// the blocks of fetches in flight: a remote file holds at most ~46 MiB outside the chunk cache).
/// Room for two runs (the one read and the one read ahead) of each of a few arrays read at once
/// (a CSR matrix's values, indices and pointers): with 16 MiB, runs read ahead were evicted
/// before they were reached and fetched again.
pub const BLOCK_CACHE_BYTES: u64 = 32 << 20;
/// Background block fetches in flight per object, at most.
const MAX_BACKGROUND: usize = 4;
/// Blocks fetched by one background GET, at most (4 MiB).
const MAX_RUN: u64 = 8;
/// Exact-range prefetches (index nodes): up to 32 GETs in flight per object (the trees of a
/// CSR matrix's three arrays are walked at once: with 16, 400 MiB of `X/dense.npy` over S3 at
/// 20 ms per request took 0.30–0.32 s instead of 0.25–0.27 s), a B-tree level of up to 4,096
/// nodes queued, 8 MiB kept until read.
const EXACT_LIMITS: Limits = Limits { start: 32, max: 32, queued: 4096, kept_bytes: 8 << 20 };
/// Longest exact range prefetched (an index node is a few KiB).
const EXACT_MAX: u64 = 256 << 10;
/// How long a reader waits for a background fetch of its block before fetching it itself.
const WAIT_BACKGROUND: Duration = Duration::from_secs(30);

/// Block fetches in flight in this process, over every object (background ones from when they
/// are started).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts a block fetch in [`IN_FLIGHT`] while it lives.
struct Fetching;

impl Fetching {
    fn start() -> Fetching {
        IN_FLIGHT.fetch_add(1, Relaxed);
        Fetching
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Relaxed);
    }
}

/// Waits, at most `limit`, until no block fetch is in flight (read-ahead's, or one a reader that
/// has gone started), so that what they fetch reaches the disk cache before the process exits
/// (a later mount then finds it there). False if some were still running.
pub fn wait_background(limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while IN_FLIGHT.load(Relaxed) > 0 {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A fetch in flight: `true` once done.
type Pending = Arc<(Mutex<bool>, Condvar)>;

/// Marks the fetch `p` done and wakes its waiters.
fn finish(p: &Pending) {
    *p.0.lock() = true;
    p.1.notify_all();
}

/// Waits (at most [`WAIT_BACKGROUND`]) until the fetch `p` is done.
fn wait(p: &Pending) {
    let (done, cv) = &**p;
    let mut d = done.lock();
    if !*d {
        cv.wait_for(&mut d, WAIT_BACKGROUND);
    }
}

/// What background fetches share with the file.
struct Shared {
    fetcher: Arc<Fetcher>,
    /// The object's key under the fetcher's location (`""`: the location is the object).
    key: String,
    /// Bytes of blocks kept in memory ([`BLOCK_CACHE_BYTES`] unless made smaller).
    cache_bytes: u64,
    len: u64,
    version: Option<String>,
    blocks: Cache<u64, Arc<Vec<u8>>>,
    pending: Mutex<HashMap<u64, Pending>>,
    background: AtomicUsize,
    /// Exact ranges (offset, length) fetched ahead of their reads.
    exact: Arc<FetchAhead<(u64, u64)>>,
    /// First block of each run read ahead for a sequential reader: the run's last block,
    /// [`Shared::consumed`] when the run was started, and how much more readers must have read
    /// by the time they reach it for the runs after it to be started.
    triggers: Mutex<HashMap<u64, (u64, u64, u64)>>,
    /// Entries in `triggers` (read without the lock on every block hit).
    armed: AtomicUsize,
    /// Runs read ahead of a sequential reader (1 to 4: see [`stream`]).
    depth: AtomicU64,
    /// The blocks readers read last.
    reads: Recent,
    /// Bytes readers have read from the object.
    consumed: AtomicU64,
    /// Where the last hints ([`RangeRead::will_need`]) ended (byte offsets).
    hints: Recent,
}

/// A remote object read by ranges.
pub struct RemoteFile {
    shared: Arc<Shared>,
    id: u64,
}

impl Shared {
    fn url(&self) -> String {
        self.fetcher.url(&self.key)
    }

    /// `len` bytes at `start`, through the disk cache (ranges the file's layout fixes: chunks,
    /// index nodes).
    fn fetch(&self, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        self.get(start, len, true)
    }

    /// `len` bytes at `start` in blocks, as they arrived (no copy), not through the disk cache
    /// (runs of blocks, cached per block).
    fn fetch_blocks_of(&self, start: u64, len: u64) -> std::io::Result<Vec<Vec<u8>>> {
        let got = self.fetcher.get_pieces(&self.key, Span::At { start, len }, self.version.as_deref(), BLOCK as usize);
        self.answer(got)
    }

    fn get(&self, start: u64, len: u64, cache: bool) -> std::io::Result<Vec<u8>> {
        self.answer(self.fetcher.get(&self.key, Span::At { start, len }, self.version.as_deref(), cache))
    }

    /// A fetch's result as an I/O result (a missing object is `NotFound`).
    fn answer<T>(&self, got: Result<Option<T>, super::FetchError>) -> std::io::Result<T> {
        match got {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: HTTP 404", self.url()))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Fetches blocks `[b, end)` into the block cache — from the disk cache when it has them
    /// (entries per block, so that later mounts find them whatever runs they read), the rest
    /// in one GET; returns block `b`.
    fn fetch_blocks(&self, b: u64, end: u64) -> std::io::Result<Arc<Vec<u8>>> {
        let mut first = None;
        let mut from = b;
        if let Some(v) = self.version.as_deref() {
            while from < end {
                let Some(data) = self.fetcher.disk_get(&self.key, &format!("block{from}"), v) else { break };
                let piece = Arc::new(data);
                if from == b {
                    first = Some(piece.clone());
                }
                self.blocks.insert(from, piece);
                from += 1;
            }
        }
        if from < end {
            let start = from * BLOCK;
            let stop = (end * BLOCK).min(self.len);
            let pieces = self.fetch_blocks_of(start, stop.saturating_sub(start))?;
            for (i, piece) in pieces.into_iter().enumerate() {
                let k = from + i as u64;
                if let Some(v) = self.version.as_deref() {
                    self.fetcher.disk_put(&self.key, &format!("block{k}"), v, &piece);
                }
                let piece = Arc::new(piece);
                if k == b {
                    first = Some(piece.clone());
                }
                self.blocks.insert(k, piece);
            }
        }
        first.ok_or_else(|| std::io::Error::other(format!("{}: empty answer for block {b}", self.url())))
    }

    /// Block `b`: cached, or fetched by someone else right now (waited for), or fetched here
    /// with the free blocks after it up to `last` — and, when a reader just read the block
    /// before `b` (a sequential reader), the run after them in the background.
    fn block(self: &Arc<Self>, b: u64, last: u64) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(hit) = self.blocks.get(&b) {
            self.on_trigger(b, false);
            return Ok(hit);
        }
        let waiting = self.pending.lock().get(&b).cloned();
        if let Some(p) = waiting {
            self.on_trigger(b, true);
            wait(&p);
            if let Some(hit) = self.blocks.get(&b) {
                return Ok(hit);
            }
        }
        let end = self.last_block();
        // A sequential reader (someone just read the block before): the run after what it reads
        // comes in the background, while it gets just its own blocks (with the whole run first,
        // a reader waited for 4 MiB before it could use the first block: 10% slower on loopback,
        // a second round trip at 20 ms). Asking for the two blocks before made sequential
        // readers wait a round trip more per array (`dense.npy` at 20 ms: 0.27 -> 0.32 s).
        let sequential = b > 0 && self.reads.any_in(b - 1, b - 1);
        let (b, e, p) = self.claim(b, last.min(end));
        if sequential {
            self.read_ahead(e + 1, 1, e);
        }
        let fetching = Fetching::start();
        let got = self.fetch_blocks(b, e + 1);
        self.release(b, e, &p);
        drop(fetching);
        got
    }

    /// The object's last block.
    fn last_block(&self) -> u64 {
        self.len.saturating_sub(1) / BLOCK
    }

    /// Registers blocks `[b, ..=want]` as being fetched, up to the first that is cached or
    /// already being fetched (always at least `b`); returns the run and its waiters' handle.
    fn claim(&self, b: u64, want: u64) -> (u64, u64, Pending) {
        let p: Pending = Arc::default();
        let mut pending = self.pending.lock();
        let mut e = b;
        pending.insert(b, p.clone());
        while e < want && !pending.contains_key(&(e + 1)) && self.blocks.peek(&(e + 1)).is_none() {
            e += 1;
            pending.insert(e, p.clone());
        }
        (b, e, p)
    }

    /// Ends the fetch of `[b, e]` registered by [`Shared::claim`] and wakes its waiters.
    fn release(&self, b: u64, e: u64, p: &Pending) {
        let mut pending = self.pending.lock();
        for k in b..=e {
            if pending.get(&k).is_some_and(|q| Arc::ptr_eq(q, p)) {
                pending.remove(&k);
            }
        }
        drop(pending);
        finish(p);
    }

    /// Fetches the exact ranges `ranges` in the background (those within the object and at most
    /// [`EXACT_MAX`] long).
    fn prefetch_exact(&self, ranges: &[(u64, u64)]) {
        let fits = |&(o, l): &(u64, u64)| l > 0 && l <= EXACT_MAX && o.checked_add(l).is_some_and(|e| e <= self.len);
        self.exact.prefetch(ranges.iter().copied().filter(fits));
    }

    /// Whether every block of `[first, last]` is cached or being fetched.
    fn covered(&self, first: u64, last: u64) -> bool {
        let pending = self.pending.lock();
        (first..=last).all(|b| pending.contains_key(&b) || self.blocks.get(&b).is_some())
    }

    /// Starts background fetches of the blocks of `[first, last]` that are neither cached nor
    /// being fetched, in runs of up to [`MAX_RUN`] blocks, at most [`MAX_BACKGROUND`] at a time
    /// (the rest is left to the reader).
    fn prefetch(self: &Arc<Self>, first: u64, last: u64) {
        let mut b = first;
        while b <= last {
            let free = self.blocks.peek(&b).is_none() && !self.pending.lock().contains_key(&b);
            if !free {
                b += 1;
                continue;
            }
            if self.background.fetch_add(1, Relaxed) >= MAX_BACKGROUND {
                self.background.fetch_sub(1, Relaxed);
                return;
            }
            let (b0, e, p) = self.claim(b, last.min(b + MAX_RUN - 1));
            let undo = p.clone();
            let me = self.clone();
            let fetching = Fetching::start();
            let run = move || {
                if let Err(err) = me.fetch_blocks(b0, e + 1) {
                    log::debug!("{}: background fetch of blocks {b0}..={e}: {err}", me.url());
                }
                me.release(b0, e, &p);
                me.background.fetch_sub(1, Relaxed);
                drop(fetching);
            };
            if let Err(err) = std::thread::Builder::new().name("annfs-fetch".into()).spawn(run) {
                // The closure (and its count in IN_FLIGHT) is dropped with the error.
                log::debug!("no background fetch thread: {err}");
                self.release(b0, e, &undo);
                self.background.fetch_sub(1, Relaxed);
                return;
            }
            b = e + 1;
        }
    }
}

impl RemoteFile {
    /// The object `fetcher` reads (key `""`), of the length and version a HEAD found.
    pub fn new(fetcher: Arc<Fetcher>, meta: ObjectMeta) -> RemoteFile {
        RemoteFile::keyed(fetcher, String::new(), meta, BLOCK_CACHE_BYTES)
    }

    /// Object `key` under `fetcher`'s location (a Zarr shard), of the length and version a HEAD
    /// found, keeping at most `cache_bytes` (at least two runs' worth) of blocks in memory.
    pub fn keyed(fetcher: Arc<Fetcher>, key: String, meta: ObjectMeta, cache_bytes: u64) -> RemoteFile {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let cache_bytes = cache_bytes.max(2 * MAX_RUN * BLOCK);
        let n = (cache_bytes / BLOCK) as usize;
        // One shard and a small hot part: with the defaults (a shard per few CPUs, 97% hot) a
        // small cache admits almost nothing new, and a block fetched with its neighbour would be
        // evicted by it; blocks fetched ahead wait in the cold part until they are read (with
        // half of it hot, sequential reads over HTTP fetched 45-51 instead of 36-40 MiB for 16 MiB
        // of stored data and ran at 602-650 instead of 720-888 MB/s).
        let opts = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(n)
            .weight_capacity(n as u64)
            .shards(1)
            .hot_allocation(0.1)
            .build();
        let blocks = match opts {
            Ok(o) => Cache::with_options(o, Default::default(), Default::default(), Default::default()),
            Err(_) => Cache::new(n),
        };
        let exact = {
            let (f, k, v) = (fetcher.clone(), key.clone(), meta.version.clone());
            let fetch = move |&(start, len): &(u64, u64)| f.get(&k, Span::At { start, len }, v.as_deref(), true);
            Arc::new(FetchAhead::new(fetcher.url(&key), EXACT_LIMITS, Box::new(fetch)))
        };
        let shared = Shared {
            fetcher,
            key,
            cache_bytes,
            len: meta.size,
            version: meta.version,
            blocks,
            pending: Mutex::new(HashMap::new()),
            background: AtomicUsize::new(0),
            exact,
            triggers: Mutex::new(HashMap::new()),
            armed: AtomicUsize::new(0),
            depth: AtomicU64::new(1),
            reads: Recent::default(),
            consumed: AtomicU64::new(0),
            hints: Recent::default(),
        };
        RemoteFile { shared: Arc::new(shared), id: NEXT.fetch_add(1, Relaxed) }
    }

}

impl RangeRead for RemoteFile {
    fn len(&self) -> u64 {
        self.shared.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let n = buf.len() as u64;
        if offset.checked_add(n).is_none_or(|e| e > self.shared.len) {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the object"));
        }
        if n == 0 {
            return Ok(());
        }
        self.shared.consumed.fetch_add(n, Relaxed);
        if let Some(Some(data)) = self.shared.exact.take(&(offset, n)) {
            if data.len() == buf.len() {
                buf.copy_from_slice(&data);
                return Ok(());
            }
        }
        let (first, last) = (offset / BLOCK, (offset + n - 1) / BLOCK);
        // A large read goes out as one GET of exactly its bytes, unless read-ahead has it — or
        // the disk cache is on: it keeps whole blocks, so that any later read finds them.
        if n >= BLOCK && !self.shared.fetcher.has_disk_cache() && !self.shared.covered(first, last) {
            let data = self.shared.fetch(offset, n)?;
            buf.copy_from_slice(&data);
            return Ok(());
        }
        let mut done = 0usize;
        for b in first..=last {
            let block = self.shared.block(b, last.min(b + MAX_RUN - 1))?;
            if !self.shared.reads.any_in(b, b) {
                self.shared.reads.record(b);
            }
            let from = if b == first { (offset - b * BLOCK) as usize } else { 0 };
            let take = (block.len().saturating_sub(from)).min(buf.len() - done);
            let src = block.get(from..from + take).ok_or_else(|| std::io::Error::other("short block"))?;
            buf[done..done + take].copy_from_slice(src);
            done += take;
        }
        if done == buf.len() {
            Ok(())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short remote read"))
        }
    }

    fn will_need(&self, offset: u64, len: u64) {
        // Read-ahead is bounded by the block cache: what does not fit would be evicted unread.
        if len == 0 || len > self.shared.cache_bytes / 2 || offset >= self.shared.len {
            return;
        }
        let end = offset.saturating_add(len).min(self.shared.len);
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        let sh = &self.shared;
        // A hint of a block or more that starts where another ended is the mount's read-ahead
        // walking a file (a row's values are less than a block; sorted random rows leave gaps):
        // the runs after it are read ahead as for a sequential reader. Without, hints of a
        // piece at a time kept two pieces in flight (400 MiB of `csr/data.npy` at 20 ms per
        // request: 2.0 s, now 0.6 s).
        let sequential = len >= BLOCK && sh.hints.any_in(offset.saturating_sub(64 << 10), offset);
        sh.hints.record(end);
        sh.prefetch(first, last);
        if sequential {
            sh.read_ahead(last + 1, sh.depth.load(Relaxed), last);
        }
    }

    fn prefetch_exact(&self, ranges: &[(u64, u64)]) {
        self.shared.prefetch_exact(ranges);
    }

    fn identity(&self) -> (u64, u64) {
        (u64::MAX, self.id)
    }

    fn version(&self) -> Option<&str> {
        self.shared.version.as_deref()
    }
}

#[path = "object_stream.rs"]
mod stream;
use stream::Recent;

#[cfg(test)]
#[path = "object_tests.rs"]
mod tests;
