//! Read-ahead for sequential readers.
//!
//! Each open file handle is a stream. When a handle reads from the start of the file or near
//! where its last read ended, background workers load the next window of the file, piece by
//! piece in parallel (decoding its chunks and rendering its blocks into the shared cache),
//! while the reader consumes the current one. The window starts at
//! [`PrefetchConfig::min_window`] and doubles on every sequential read up to
//! [`PrefetchConfig::max_window`]; a seek resets it. What read-ahead loads lives in the one
//! cache, so it counts against the memory budget like everything else; the job queue is
//! bounded, and a window that finds the queue full is skipped (and counted), never blocking the
//! reader. State is dropped when the handle is released.

use std::sync::Arc;

use crossbeam_channel::{bounded, Sender, TrySendError};
use dashmap::DashMap;

use crate::cache::Stats;
use crate::views::FileContent;

/// Read-ahead tuning.
#[derive(Clone, Debug)]
pub struct PrefetchConfig {
    /// First window after a seek, in bytes.
    pub min_window: u64,
    /// Largest window, in bytes. Keep it well under the cache budget.
    pub max_window: u64,
    /// Bytes loaded per step of a job (one cache-sized piece at a time).
    pub piece: usize,
    /// Jobs that may wait in the queue.
    pub queue: usize,
    /// Background workers (decoding runs in parallel with the reader on another core).
    pub workers: usize,
}

impl PrefetchConfig {
    /// Defaults for a cache of `budget` bytes: windows of 1 MiB doubling to 16 MiB (or an
    /// eighth of the budget, if smaller), loaded in 1 MiB pieces by one worker per CPU (at most
    /// 4), so that decoding a compressed window uses every core; room for four windows' pieces.
    pub fn for_budget(budget: u64) -> Self {
        let max_window = (16u64 << 20).min(budget / 8).max(1 << 20);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let piece = 1 << 20;
        PrefetchConfig { min_window: 1 << 20, max_window, piece, queue: 4 * (max_window / piece as u64) as usize, workers }
    }
}

struct Stream {
    next: u64,
    window: u64,
    prefetched_to: u64,
}

struct Job {
    file: Arc<dyn FileContent>,
    offset: u64,
    len: u64,
}

/// Per-handle sequential streams feeding background read-ahead workers.
pub struct Prefetcher {
    cfg: PrefetchConfig,
    streams: DashMap<u64, Stream>,
    tx: Option<Sender<Job>>,
    stats: Arc<Stats>,
}

impl Prefetcher {
    /// Starts the workers; loaded bytes are counted in `stats`.
    pub fn new(cfg: PrefetchConfig, stats: Arc<Stats>) -> Self {
        // A multi-consumer queue: idle workers wait on it without a lock around `recv` (a
        // mutex-guarded receiver made every hand-off spin and yield on the lock).
        let (tx, rx) = bounded::<Job>(cfg.queue);
        let mut started = 0;
        for i in 0..cfg.workers.max(1) {
            let (rx, stats, piece) = (rx.clone(), stats.clone(), cfg.piece.max(1));
            let spawned = std::thread::Builder::new().name(format!("annfs-prefetch-{i}")).spawn(move || {
                while let Ok(job) = rx.recv() {
                    stats.prefetched(load(&job, piece));
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => log::warn!("cannot start a read-ahead worker: {e}"),
            }
        }
        let tx = (started > 0).then_some(tx);
        Prefetcher { cfg, streams: DashMap::new(), tx, stats }
    }

    /// Records that handle `fh` of `file` is reading `len` bytes at `offset` (called before the
    /// read is served), and starts read-ahead of what follows if the handle reads sequentially.
    ///
    /// Returns true when the read continues a sequential stream in order — the stream's first
    /// read from the start of the file, or one at most a quarter of the largest window behind
    /// (the kernel splits a large direct read into requests served in parallel, which arrive
    /// slightly out of order) or a window ahead of where the stream has got to: the reader
    /// moves on past these bytes, so the caller may drop behind them
    /// ([`FileContent::drop_behind`]) once they are served.
    pub fn observe(&self, fh: u64, file: &Arc<dyn FileContent>, offset: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let end = offset.saturating_add(len);
        let min = self.cfg.min_window;
        let mut s = self.streams.entry(fh).or_insert(Stream { next: u64::MAX, window: min, prefetched_to: 0 });
        // Large direct reads arrive as several requests served in parallel, so their ends are
        // seen slightly out of order: a read near the stream's end (within the largest window)
        // continues it; anything else is a seek.
        let reach = self.cfg.max_window;
        let near = s.next != u64::MAX && offset <= s.next.saturating_add(reach) && offset.saturating_add(reach) >= s.next;
        let passed = if near { offset.saturating_add(reach / 4) >= s.next } else { offset == 0 };
        if !near {
            // A seek (or the first read): restart small. A read from the start of the file is
            // how sequential readers begin (`numpy.load`, `cp`, `dd`): its read-ahead starts at
            // once, as the kernel's does for a buffered file, instead of at the second read.
            *s = Stream { next: end, window: min, prefetched_to: end };
            if offset != 0 {
                return false;
            }
        }
        s.next = s.next.max(end);
        let start = s.prefetched_to.max(end);
        let stop = end.saturating_add(s.window);
        if stop <= start.saturating_add(min / 2) {
            return passed;
        }
        // One job per piece: idle workers load the pieces of a window in parallel.
        let Some(tx) = &self.tx else { return passed };
        let piece = self.cfg.piece.max(1) as u64;
        let mut at = start;
        while at < stop {
            let len = piece.min(stop - at);
            match tx.try_send(Job { file: file.clone(), offset: at, len }) {
                Ok(()) => at += len,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.stats.prefetch_skipped();
                    break;
                }
            }
        }
        if at > start {
            s.prefetched_to = at;
            s.window = (s.window * 2).min(self.cfg.max_window);
        }
        passed
    }

    /// Drops the state of handle `fh` (on release).
    pub fn forget(&self, fh: u64) {
        self.streams.remove(&fh);
    }

    /// Handles with read-ahead state.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

/// Loads `job` piece by piece into the cache (the bytes are dropped: the cache keeps the
/// decoded chunks and rendered blocks). Returns the bytes loaded.
fn load(job: &Job, piece: usize) -> u64 {
    let (mut off, end) = (job.offset, job.offset.saturating_add(job.len));
    while off < end {
        let len = (piece as u64).min(end - off) as usize;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.file.prefetch(off, len))) {
            Ok(Ok(n)) if n > 0 => off += n as u64,
            _ => break,
        }
    }
    off - job.offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::ViewResult;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// A file of `size` bytes that counts the bytes read from it and records the ranges.
    struct Counting {
        size: u64,
        read: AtomicU64,
        ranges: Mutex<Vec<(u64, usize)>>,
    }

    impl FileContent for Counting {
        fn size(&self) -> ViewResult<u64> {
            Ok(self.size)
        }
        fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
            let n = self.size.saturating_sub(offset).min(len as u64) as usize;
            self.read.fetch_add(n as u64, Ordering::SeqCst);
            self.ranges.lock().push((offset, n));
            Ok(vec![0; n])
        }
    }

    fn wait_for(f: impl Fn() -> bool) -> bool {
        let t = Instant::now();
        while !f() {
            if t.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    fn setup() -> (Prefetcher, Arc<Counting>, Arc<dyn FileContent>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let cfg = PrefetchConfig { min_window: 1000, max_window: 4000, piece: 500, queue: 8, workers: 1 };
        let p = Prefetcher::new(cfg, stats.clone());
        let c = Arc::new(Counting { size: 1 << 20, read: AtomicU64::new(0), ranges: Mutex::new(vec![]) });
        let f: Arc<dyn FileContent> = c.clone();
        (p, c, f, stats)
    }

    #[test]
    fn sequential_reads_load_ahead_in_growing_windows() {
        let (p, c, f, stats) = setup();
        p.observe(1, &f, 5000, 100);
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.ranges.lock().is_empty(), "a first read inside the file only starts a stream");
        p.observe(1, &f, 5100, 100);
        assert!(wait_for(|| c.read.load(Ordering::SeqCst) >= 1000));
        assert_eq!(c.ranges.lock()[0], (5200, 500), "read-ahead starts where the reader is");
        p.observe(1, &f, 5200, 100);
        // Second window: from where the first ended (6200) to 5300 + 2000.
        assert!(wait_for(|| c.read.load(Ordering::SeqCst) >= 1000 + 1100));
        // One job per piece of 500 bytes: 2 for the first window, 3 for the second.
        assert!(wait_for(|| stats.snapshot()["prefetch_jobs"] == 5));
        assert_eq!(stats.snapshot()["prefetched_bytes"], 2100);
    }

    #[test]
    fn a_read_from_the_start_reads_ahead_at_once() {
        let (p, c, f, stats) = setup();
        p.observe(1, &f, 0, 100);
        assert!(wait_for(|| c.read.load(Ordering::SeqCst) >= 1000));
        assert_eq!(c.ranges.lock()[..2], [(100, 500), (600, 500)], "the first window follows the read");
        assert!(wait_for(|| stats.snapshot()["prefetch_jobs"] == 2));
    }

    #[test]
    fn reads_in_order_are_passed_for_drop_behind() {
        let (p, _, f, _) = setup();
        assert!(p.observe(1, &f, 0, 100), "a stream's first read from the start");
        assert!(p.observe(1, &f, 100, 100));
        assert!(p.observe(1, &f, 1200, 100), "a little ahead (another request of a large read)");
        assert!(p.observe(1, &f, 300, 100), "a little behind (an earlier request arriving late)");
        assert!(!p.observe(1, &f, 0, 100), "too far behind the stream");
        assert!(!p.observe(2, &f, 5000, 100), "a first read inside the file");
        assert!(p.observe(2, &f, 5100, 100), "then the stream it started");
        assert!(!p.observe(2, &f, 50_000, 100), "a seek");
        assert!(!p.observe(2, &f, 50_100, 0), "an empty read");
    }

    #[test]
    fn a_seek_resets_and_release_forgets() {
        let (p, c, f, _) = setup();
        p.observe(7, &f, 10_000, 100);
        p.observe(7, &f, 50_000, 100);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.read.load(Ordering::SeqCst), 0, "a seek loads nothing");
        // Two handles on one file are two streams: interleaving them is not a seek.
        p.observe(8, &f, 20_000, 100);
        p.observe(7, &f, 50_100, 100);
        p.observe(8, &f, 20_100, 100);
        assert!(wait_for(|| c.read.load(Ordering::SeqCst) >= 2000));
        assert_eq!(p.streams(), 2);
        p.forget(7);
        p.forget(8);
        assert_eq!(p.streams(), 0);
    }
}
