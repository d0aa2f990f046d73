//! One remote object (an `.h5ad` file) as a [`RangeRead`]: reads of at least a block go out as
//! one range GET of exactly those bytes; smaller reads (HDF5 metadata, heap collections, small
//! chunks) are served from aligned blocks kept in a small bounded cache, so that opening a file
//! takes a handful of round trips. Every GET is pinned to the version seen at open.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::client::{ObjectMeta, Span};
use super::fetcher::Fetcher;
use super::RangeRead;

/// Size of a cached block.
pub const BLOCK: u64 = 512 << 10;
/// Bytes of blocks kept in memory per object.
pub const BLOCK_CACHE_BYTES: u64 = 16 << 20;

/// A remote object read by ranges.
pub struct RemoteFile {
    fetcher: Arc<Fetcher>,
    len: u64,
    version: Option<String>,
    blocks: Cache<u64, Arc<Vec<u8>>>,
    id: u64,
}

impl RemoteFile {
    /// The object `fetcher` reads (key `""`), of the length and version a HEAD found.
    pub fn new(fetcher: Arc<Fetcher>, meta: ObjectMeta) -> RemoteFile {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        RemoteFile {
            fetcher,
            len: meta.size,
            version: meta.version,
            blocks: Cache::new((BLOCK_CACHE_BYTES / BLOCK) as usize),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The URL.
    pub fn url(&self) -> String {
        self.fetcher.url("")
    }

    /// The fetcher (counters).
    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    fn fetch(&self, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        match self.fetcher.get("", Span::At { start, len }, self.version.as_deref(), true) {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: HTTP 404", self.url()))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Block `b`, fetched (with the missing blocks after it up to `last`) when not cached.
    fn block(&self, b: u64, last: u64) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(hit) = self.blocks.get(&b) {
            return Ok(hit);
        }
        let mut end = b + 1;
        while end <= last && self.blocks.get(&end).is_none() {
            end += 1;
        }
        let start = b * BLOCK;
        let stop = (end * BLOCK).min(self.len);
        let data = self.fetch(start, stop - start)?;
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
}

impl RangeRead for RemoteFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let n = buf.len() as u64;
        if offset.checked_add(n).is_none_or(|e| e > self.len) {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the object"));
        }
        if n == 0 {
            return Ok(());
        }
        if n >= BLOCK {
            let data = self.fetch(offset, n)?;
            buf.copy_from_slice(&data);
            return Ok(());
        }
        let (first, last) = (offset / BLOCK, (offset + n - 1) / BLOCK);
        let mut done = 0usize;
        for b in first..=last {
            let block = self.block(b, last)?;
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

    fn identity(&self) -> (u64, u64) {
        (u64::MAX, self.id)
    }

    fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}
