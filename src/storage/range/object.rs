//! One remote object (an `.h5ad` file) as a [`RangeRead`]: reads of at least a block go out as
//! one range GET of exactly those bytes; smaller reads (HDF5 metadata, heap collections, small
//! chunks) are served from aligned blocks kept in a small bounded cache, so that opening a file
//! takes a handful of round trips. [`RangeRead::will_need`] fetches such blocks in the
//! background (a few at a time), so that a reader's next small read finds them. Every GET is
//! pinned to the version seen at open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use quick_cache::sync::Cache;

use super::client::{ObjectMeta, Span};
use super::fetcher::Fetcher;
use super::RangeRead;

/// Size of a cached block.
pub const BLOCK: u64 = 512 << 10;
/// Bytes of blocks kept in memory per object.
pub const BLOCK_CACHE_BYTES: u64 = 16 << 20;
/// Background block fetches in flight per object, at most.
const MAX_BACKGROUND: usize = 4;
/// How long a reader waits for a background fetch of its block before fetching it itself.
const WAIT_BACKGROUND: Duration = Duration::from_secs(30);

/// A fetch in flight: `true` once done.
type Pending = Arc<(Mutex<bool>, Condvar)>;

/// What background fetches share with the file.
struct Shared {
    fetcher: Arc<Fetcher>,
    len: u64,
    version: Option<String>,
    blocks: Cache<u64, Arc<Vec<u8>>>,
    pending: Mutex<HashMap<u64, Pending>>,
    background: AtomicUsize,
}

/// A remote object read by ranges.
pub struct RemoteFile {
    shared: Arc<Shared>,
    id: u64,
}

impl Shared {
    fn url(&self) -> String {
        self.fetcher.url("")
    }

    fn fetch(&self, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        match self.fetcher.get("", Span::At { start, len }, self.version.as_deref(), true) {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: HTTP 404", self.url()))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Fetches blocks `[b, end)` in one GET into the block cache; returns block `b`.
    fn fetch_blocks(&self, b: u64, end: u64) -> std::io::Result<Arc<Vec<u8>>> {
        let start = b * BLOCK;
        let stop = (end * BLOCK).min(self.len);
        let data = self.fetch(start, stop.saturating_sub(start))?;
        let mut first = None;
        for (i, piece) in data.chunks(BLOCK as usize).enumerate() {
            let piece = Arc::new(piece.to_vec());
            if i == 0 {
                first = Some(piece.clone());
            }
            self.blocks.insert(b + i as u64, piece);
        }
        first.ok_or_else(|| std::io::Error::other(format!("{}: empty answer for block {b}", self.url())))
    }

    /// Block `b`, fetched (with the missing blocks after it up to `last`) when not cached; a
    /// background fetch of it in flight is waited for.
    fn block(&self, b: u64, last: u64) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(hit) = self.blocks.get(&b) {
            return Ok(hit);
        }
        let waiting = self.pending.lock().get(&b).cloned();
        if let Some(p) = waiting {
            let (done, cv) = &*p;
            let mut d = done.lock();
            if !*d {
                cv.wait_for(&mut d, WAIT_BACKGROUND);
            }
            drop(d);
            if let Some(hit) = self.blocks.get(&b) {
                return Ok(hit);
            }
        }
        let mut end = b + 1;
        while end <= last && self.blocks.get(&end).is_none() {
            end += 1;
        }
        self.fetch_blocks(b, end)
    }

    /// Starts a background fetch of blocks `[first, last]` that are neither cached nor being
    /// fetched (at most [`MAX_BACKGROUND`] at a time; otherwise nothing is done).
    fn prefetch(self: &Arc<Self>, first: u64, last: u64) {
        let missing: Vec<u64> = (first..=last).filter(|b| self.blocks.get(b).is_none()).collect();
        let (Some(&b), Some(&e)) = (missing.first(), missing.last()) else { return };
        if self.background.fetch_add(1, Relaxed) >= MAX_BACKGROUND {
            self.background.fetch_sub(1, Relaxed);
            return;
        }
        let p: Pending = Arc::default();
        {
            let mut pending = self.pending.lock();
            if (b..=e).any(|k| pending.contains_key(&k)) {
                self.background.fetch_sub(1, Relaxed);
                return;
            }
            for k in b..=e {
                pending.insert(k, p.clone());
            }
        }
        let me = self.clone();
        let run = move || {
            if let Err(e) = me.fetch_blocks(b, e + 1) {
                log::debug!("{}: background fetch of blocks {b}..={e}: {e}", me.url());
            }
            let mut pending = me.pending.lock();
            for k in b..=e {
                pending.remove(&k);
            }
            drop(pending);
            *p.0.lock() = true;
            p.1.notify_all();
            me.background.fetch_sub(1, Relaxed);
        };
        if let Err(e) = std::thread::Builder::new().name("annfs-fetch".into()).spawn(run) {
            log::debug!("no background fetch thread: {e}");
        }
    }
}

impl RemoteFile {
    /// The object `fetcher` reads (key `""`), of the length and version a HEAD found.
    pub fn new(fetcher: Arc<Fetcher>, meta: ObjectMeta) -> RemoteFile {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = (BLOCK_CACHE_BYTES / BLOCK) as usize;
        // One shard and an even hot/cold split: with the defaults (a shard per few CPUs, 97% hot)
        // a cache of 32 blocks admits almost nothing new, and a block fetched with its neighbour
        // would be evicted by it.
        let opts = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(n)
            .weight_capacity(n as u64)
            .shards(1)
            .hot_allocation(0.5)
            .build();
        let blocks = match opts {
            Ok(o) => Cache::with_options(o, Default::default(), Default::default(), Default::default()),
            Err(_) => Cache::new(n),
        };
        let shared = Shared {
            fetcher,
            len: meta.size,
            version: meta.version,
            blocks,
            pending: Mutex::new(HashMap::new()),
            background: AtomicUsize::new(0),
        };
        RemoteFile { shared: Arc::new(shared), id: NEXT.fetch_add(1, Relaxed) }
    }

    /// The URL.
    pub fn url(&self) -> String {
        self.shared.url()
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
        if n >= BLOCK {
            let data = self.shared.fetch(offset, n)?;
            buf.copy_from_slice(&data);
            return Ok(());
        }
        let (first, last) = (offset / BLOCK, (offset + n - 1) / BLOCK);
        let mut done = 0usize;
        for b in first..=last {
            let block = self.shared.block(b, last)?;
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
        // Reads of a block or more are fetched exactly when asked; smaller ones from blocks.
        if len == 0 || len >= BLOCK || offset >= self.shared.len {
            return;
        }
        let end = offset.saturating_add(len).min(self.shared.len);
        self.shared.prefetch(offset / BLOCK, (end - 1) / BLOCK);
    }

    fn identity(&self) -> (u64, u64) {
        (u64::MAX, self.id)
    }

    fn version(&self) -> Option<&str> {
        self.shared.version.as_deref()
    }
}
