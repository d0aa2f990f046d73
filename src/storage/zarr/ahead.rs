//! Chunks of one unsharded Zarr array sent ahead of their reads: the chunks after a sequential
//! reader's, and the chunks readers say they will need (a CSR row's values while its indices
//! are read). A remote store fetches them in the background (its
//! [`KeyAhead`](super::remote::KeyAhead)); a local store asks the kernel to read their files
//! ahead (`POSIX_FADV_WILLNEED`), so that a cold disk serves many chunk files at once instead
//! of one per read-ahead worker. The inner chunks of a sharded array go the same ways as byte
//! ranges of their shard ([`super::shards`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::remote::RemoteStore;
use crate::storage::range::{LocalFile, RangeRead};

/// Decoded bytes a sequential reader's chunks are sent ahead by (in chunks: 2 to 16).
const AHEAD_BYTES: u64 = 8 << 20;
/// Chunks of more decoded bytes are not sent ahead: with at most 8 GETs in flight and 8 MiB of
/// fetched chunks kept per store, a remote store's fetches ahead stay within 24 MiB.
const AHEAD_MAX_CHUNK: u64 = 2 << 20;

/// Where chunks are sent ahead.
#[derive(Clone)]
pub(super) enum AheadTo {
    /// A remote store: fetched in the background and kept until read.
    Remote(Arc<RemoteStore>),
    /// A local store's directory: the kernel reads the chunk files ahead.
    Local(Arc<Path>),
}

impl AheadTo {
    /// Sends `keys` (store keys of chunks) ahead.
    fn send(&self, keys: Vec<String>) {
        match self {
            AheadTo::Remote(store) => store.prefetch_keys(keys),
            AheadTo::Local(root) => {
                for key in keys {
                    // A chunk never written has no file: nothing to read.
                    if let Ok(f) = LocalFile::open(&root.join(&key)) {
                        f.will_need(0, f.len());
                    }
                }
            }
        }
    }

    /// Sends byte ranges (offset, length) of the object at `key` (a shard) ahead.
    pub(super) fn send_ranges(&self, key: &str, ranges: &[(u64, u64)]) {
        match self {
            AheadTo::Remote(store) => store.prefetch_ranges(key, ranges),
            AheadTo::Local(root) => {
                if let Ok(f) = LocalFile::open(&root.join(key)) {
                    for &(offset, len) in ranges {
                        f.will_need(offset, len);
                    }
                }
            }
        }
    }
}

/// One array's chunks sent ahead.
pub(super) struct ChunkAhead {
    to: AheadTo,
    /// The array's key prefix (`obs/n_genes/`).
    pub(super) prefix: String,
    /// Chunks sent ahead for a sequential reader per step.
    depth: u64,
    /// The chunk read last, plus one (0: none yet).
    last: AtomicU64,
    /// One past the last chunk sent ahead for a sequential reader.
    ahead_to: AtomicU64,
}

impl ChunkAhead {
    /// Chunks of `chunk_bytes` decoded bytes of the array at `path` sent to `to`; `None` when
    /// its chunks are too large to fetch ahead.
    pub(super) fn new(to: AheadTo, path: &str, chunk_bytes: u64) -> Option<ChunkAhead> {
        if chunk_bytes > AHEAD_MAX_CHUNK {
            return None;
        }
        let depth = (AHEAD_BYTES / chunk_bytes.max(1)).clamp(2, 16);
        let prefix = format!("{}/", path.trim_matches('/'));
        Some(ChunkAhead { to, prefix, depth, last: AtomicU64::new(0), ahead_to: AtomicU64::new(0) })
    }

    /// Chunk `index` is about to be read: when it follows the last one read (give or take the
    /// read-ahead workers' order), the chunks to send ahead now (not sent before).
    pub(super) fn after_read(&self, index: u64) -> Option<std::ops::Range<u64>> {
        let last = self.last.swap(index + 1, Relaxed);
        if last == 0 || index + 1 < last.saturating_sub(2) || index + 1 > last + 2 {
            return None;
        }
        let to = index + 1 + self.depth;
        let from = self.ahead_to.load(Relaxed).clamp(index + 1, to);
        if from >= to {
            return None;
        }
        self.ahead_to.store(to, Relaxed);
        Some(from..to)
    }

    /// Sends the chunks with store keys `keys` ahead.
    pub(super) fn send(&self, keys: Vec<String>) {
        if !keys.is_empty() {
            self.to.send(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequential reader's next chunks are sent once each, a step of `depth` at a time; a
    /// jump sends nothing until reads follow each other again.
    #[test]
    fn sequential_reads_send_the_next_chunks_once() {
        let dir = std::env::temp_dir();
        let ah = ChunkAhead::new(AheadTo::Local(dir.into()), "/X/data", 1 << 20).expect("small chunks");
        assert_eq!(ah.after_read(0), None, "the first read says nothing yet");
        assert_eq!(ah.after_read(1), Some(2..10));
        assert_eq!(ah.after_read(2), Some(10..11));
        assert_eq!(ah.after_read(50), None, "a jump");
        assert_eq!(ah.after_read(51), Some(52..60));
        assert!(ChunkAhead::new(AheadTo::Local(std::env::temp_dir().into()), "/a", 4 << 20).is_none());
    }

}
