//! Read-ahead for sequential readers: when a file is read sequentially, a background worker
//! reads the next window (doubling up to [`MAX_WINDOW`], reset on a seek) so its chunks are
//! decoded into the cache before the reader asks for them.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::views::FileContent;

const MIN_WINDOW: u64 = 1 << 20;
const MAX_WINDOW: u64 = 16 << 20;
const PIECE: usize = 1 << 20;

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

/// Tracks per-inode sequential streams and feeds a background worker.
pub struct Prefetcher {
    streams: DashMap<u64, Stream>,
    tx: Mutex<Option<SyncSender<Job>>>,
}

impl Prefetcher {
    /// Starts the worker thread.
    pub fn new() -> Self {
        let (tx, rx) = sync_channel::<Job>(4);
        let spawned = std::thread::Builder::new().name("annfs-prefetch".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                let mut off = job.offset;
                let end = job.offset + job.len;
                while off < end {
                    let len = PIECE.min((end - off) as usize);
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.file.read(off, len))) {
                        Ok(Ok(b)) if !b.is_empty() => off += b.len() as u64,
                        _ => break,
                    }
                }
            }
        });
        let tx = spawned.ok().map(|_| tx);
        Prefetcher { streams: DashMap::new(), tx: Mutex::new(tx) }
    }

    /// Records a read of `len` bytes at `offset` of inode `ino`, prefetching if sequential.
    pub fn observe(&self, ino: u64, file: &Arc<dyn FileContent>, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = offset + len;
        let mut s = self.streams.entry(ino).or_insert(Stream { next: u64::MAX, window: MIN_WINDOW, prefetched_to: 0 });
        if s.next != offset {
            // A seek (or the first read): restart small.
            s.window = MIN_WINDOW;
            s.prefetched_to = end;
            s.next = end;
            return;
        }
        s.next = end;
        let start = s.prefetched_to.max(end);
        let stop = end + s.window;
        if stop <= start + MIN_WINDOW / 2 {
            return;
        }
        let job = Job { file: file.clone(), offset: start, len: stop - start };
        if let Some(tx) = self.tx.lock().as_ref() {
            match tx.try_send(job) {
                Ok(()) => {
                    s.prefetched_to = stop;
                    s.window = (s.window * 2).min(MAX_WINDOW);
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}
