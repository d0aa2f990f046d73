//! A read-only `zarrs` store over any remote location of the byte-range layer (HTTP(S), S3,
//! GCS, Azure):
//! whole-key GETs and range GETs (shard indexes, inner chunks) through one
//! [`Fetcher`](crate::storage::range::Fetcher) — retries, the validated disk cache, counters.
//!
//! A missing key (404) reads as absent (a missing chunk is the fill value); other failures are
//! errors, which the views turn into `EIO` for the read that needed them. Metadata keys are never
//! served from the disk cache.
//!
//! Keys read by ranges (shards: their index and inner chunks) are read through a
//! [`RemoteFile`] each — aligned blocks, fetched once, a sequential reader's next run of blocks
//! fetched in one GET ahead of it — so that neighbouring inner chunks cost one request between
//! them instead of one each; every GET of a shard is pinned to the version its first HEAD found.
//!
//! Whole keys (the chunks of unsharded arrays) and inner chunks of shards (byte ranges) may have
//! been fetched ahead of their read by [`KeyAhead`]: a read takes them from there, or waits for
//! their fetch in flight.

use std::sync::Arc;

use parking_lot::Mutex;
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{Bytes, MaybeBytes, MaybeBytesIterator, ReadableStorageTraits, StorageError as ZStorageError, StoreKey};

use crate::storage::range::ahead::{FetchAhead, Limits};
use crate::storage::range::object::RemoteFile;
use crate::storage::range::{FetchError, Fetcher, RangeRead, Span};

/// Shards kept open for range reads, at most (a CSR matrix's values, indices and pointers).
const OPEN_SHARDS: usize = 3;
/// Bytes of blocks each open shard keeps in memory (two runs read ahead).
const SHARD_CACHE_BYTES: u64 = 8 << 20;

/// Keys of the store fetched ahead of their reads: chunks of unsharded arrays, and inner chunks
/// of shards (byte ranges).
pub(super) type KeyAhead = FetchAhead<AheadKey>;

/// What is fetched ahead: a whole key (a chunk), or a byte range (offset, length) of one (a
/// shard's inner chunk), pinned to the version the shard was opened at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct AheadKey {
    key: String,
    range: Option<(u64, u64)>,
    version: Option<String>,
}

impl AheadKey {
    fn whole(key: &str) -> AheadKey {
        AheadKey { key: key.to_string(), range: None, version: None }
    }

    /// Bytes `range` of shard `key`, as of its `version`.
    fn range(key: &str, range: (u64, u64), version: Option<&str>) -> AheadKey {
        AheadKey { key: key.to_string(), range: Some(range), version: version.map(str::to_string) }
    }
}

/// Longest inner chunk fetched ahead (its stored bytes), as for whole chunks.
const AHEAD_MAX_RANGE: u64 = 2 << 20;

/// How far chunks are fetched ahead: two GETs in flight at first (on a fast network two keep a
/// reader fed, and more only compete with it for the CPU: on loopback, 8 made a v3
/// `X/csr/*.npy` read 15% slower), one more each time a read finds its chunk still queued or in
/// flight, up to 8 (at 20 ms per request, 8 read a v3 `X/csr/*.npy` in 0.29 s, 4 in 0.37 s, 2
/// in 0.63 s; without fetching ahead, 0.76 s); 64 chunks queued and 8 MiB kept, at most.
const KEY_LIMITS: Limits = Limits { start: 2, max: 8, queued: 64, kept_bytes: 8 << 20 };

/// A Zarr store under a remote prefix.
pub struct RemoteStore {
    fetcher: Arc<Fetcher>,
    /// Chunks fetched ahead of their reads.
    ahead: Arc<KeyAhead>,
    /// Shards open for range reads, the most recently used last.
    shards: Mutex<Vec<(String, Arc<RemoteFile>)>>,
}

/// Metadata keys are never served from the disk cache (they are small and may change).
fn is_metadata(key: &str) -> bool {
    let leaf = key.rsplit('/').next().unwrap_or(key);
    matches!(leaf, "zarr.json" | ".zarray" | ".zgroup" | ".zattrs" | ".zmetadata")
}

fn span(r: ByteRange) -> Span {
    match r {
        ByteRange::FromStart(o, None) => Span::From(o),
        ByteRange::FromStart(start, Some(len)) => Span::At { start, len },
        ByteRange::Suffix(n) => Span::Last(n),
    }
}

impl RemoteStore {
    /// A store reading keys through `fetcher`.
    pub fn new(fetcher: Arc<Fetcher>) -> RemoteStore {
        let f = fetcher.clone();
        let fetch = move |k: &AheadKey| {
            let span = k.range.map_or(Span::All, |(start, len)| Span::At { start, len });
            f.get(&k.key, span, k.version.as_deref(), true)
        };
        let ahead = Arc::new(KeyAhead::new(fetcher.url(""), KEY_LIMITS, Box::new(fetch)));
        RemoteStore { ahead, fetcher, shards: Mutex::new(Vec::new()) }
    }

    /// Fetches `keys` (chunks) in the background.
    pub(super) fn prefetch_keys(&self, keys: Vec<String>) {
        self.ahead.prefetch(keys.iter().map(|k| AheadKey::whole(k)));
    }

    /// Fetches byte ranges of `key` (a shard's inner chunks, each at most 2 MiB) in the
    /// background, if the shard is open for range reads (a hint never waits for its HEAD).
    pub(super) fn prefetch_ranges(&self, key: &str, ranges: &[(u64, u64)]) {
        let open = self.shards.lock().iter().find(|(k, _)| k == key).map(|(_, f)| f.clone());
        let Some(file) = open else { return };
        let len = file.len();
        let fits = |&&(o, n): &&(u64, u64)| n > 0 && n <= AHEAD_MAX_RANGE && o.checked_add(n).is_some_and(|e| e <= len);
        let keys = ranges.iter().filter(fits).map(|&r| AheadKey::range(key, r, file.version()));
        self.ahead.prefetch(keys);
    }

    /// `key` opened for range reads (a HEAD on first use, no lock held across it); `Ok(None)`
    /// when there is no such object.
    fn shard(&self, key: &str) -> Result<Option<Arc<RemoteFile>>, FetchError> {
        let recent = |open: &mut Vec<(String, Arc<RemoteFile>)>| {
            let i = open.iter().position(|(k, _)| k == key)?;
            let entry = open.remove(i);
            let file = entry.1.clone();
            open.push(entry);
            Some(file)
        };
        if let Some(file) = recent(&mut self.shards.lock()) {
            return Ok(Some(file));
        }
        let Some(meta) = self.fetcher.head(key)? else { return Ok(None) };
        let file = Arc::new(RemoteFile::keyed(self.fetcher.clone(), key.to_string(), meta, SHARD_CACHE_BYTES));
        let mut open = self.shards.lock();
        if let Some(theirs) = recent(&mut open) {
            return Ok(Some(theirs));
        }
        if open.len() >= OPEN_SHARDS {
            open.remove(0);
        }
        open.push((key.to_string(), file.clone()));
        Ok(Some(file))
    }

    /// The version (ETag or Last-Modified) of `key` by a HEAD; `None` when the server gives
    /// none or the HEAD fails.
    pub fn version(&self, key: &str) -> Option<String> {
        match self.fetcher.head(key) {
            Ok(meta) => meta.and_then(|m| m.version),
            Err(e) => {
                log::debug!("no version for {}: {e}", self.fetcher.url(key));
                None
            }
        }
    }

    /// GETs `key` (all of it, or `range`); `Ok(None)` when absent.
    pub fn fetch(&self, key: &str, range: Option<ByteRange>) -> Result<Option<Vec<u8>>, FetchError> {
        self.fetcher.get(key, range.map_or(Span::All, span), None, !is_metadata(key))
    }
}

fn zerr(e: FetchError) -> ZStorageError {
    ZStorageError::Other(e.to_string())
}

/// Range `r` of `file`: a range past its end, or longer than any inner chunk annfs reads, is an
/// error (checked before anything is allocated: the range may come from a damaged shard index);
/// a suffix longer than the object is all of it, as HTTP serves it.
fn read_range(file: &dyn RangeRead, r: ByteRange) -> Result<Vec<u8>, ZStorageError> {
    let len = file.len();
    let (start, n) = match r {
        ByteRange::FromStart(o, None) => (o, len.saturating_sub(o)),
        ByteRange::FromStart(o, Some(n)) => (o, n),
        ByteRange::Suffix(n) => (len.saturating_sub(n), n.min(len)),
    };
    if start.checked_add(n).is_none_or(|e| e > len) || n > super::source::MAX_RANGE_BYTES {
        return Err(ZStorageError::Other(format!("bytes {start}+{n} past the end of a {len}-byte object")));
    }
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, start).map_err(|e| ZStorageError::Other(e.to_string()))?;
    Ok(buf)
}

impl ReadableStorageTraits for RemoteStore {
    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, ZStorageError> {
        if let Some(fetched) = self.ahead.take(&AheadKey::whole(key.as_str())) {
            return Ok(fetched.map(Bytes::from));
        }
        Ok(self.fetch(key.as_str(), None).map_err(zerr)?.map(Bytes::from))
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, ZStorageError> {
        if !is_metadata(key.as_str()) {
            let Some(file) = self.shard(key.as_str()).map_err(zerr)? else { return Ok(None) };
            let read = |r: ByteRange| {
                // An inner chunk fetched ahead (only what a GET of its range returned is kept).
                if let ByteRange::FromStart(o, Some(n)) = r {
                    if let Some(Some(bytes)) = self.ahead.take(&AheadKey::range(key.as_str(), (o, n), file.version())) {
                        if bytes.len() as u64 == n {
                            return Ok(Bytes::from(bytes));
                        }
                    }
                }
                read_range(&*file, r).map(Bytes::from)
            };
            let out = byte_ranges.map(read).collect::<Vec<_>>();
            return Ok(Some(Box::new(out.into_iter())));
        }
        let mut out = Vec::new();
        for r in byte_ranges {
            match self.fetch(key.as_str(), Some(r)).map_err(zerr)? {
                Some(b) => out.push(Ok(Bytes::from(b))),
                None => return Ok(None),
            }
        }
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, ZStorageError> {
        Ok(self.fetcher.head(key.as_str()).map_err(zerr)?.map(|m| m.size))
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::range::{location, Remote};
    use std::time::{Duration, Instant};

    #[test]
    fn ranges_are_cut_as_http_serves_them_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        std::fs::write(&path, b"0123456789").unwrap();
        let f = crate::storage::range::LocalFile::open(&path).unwrap();
        assert_eq!(read_range(&f, ByteRange::FromStart(2, Some(3))).unwrap(), b"234");
        assert_eq!(read_range(&f, ByteRange::FromStart(7, None)).unwrap(), b"789");
        assert_eq!(read_range(&f, ByteRange::Suffix(4)).unwrap(), b"6789");
        assert_eq!(read_range(&f, ByteRange::Suffix(40)).unwrap(), b"0123456789", "a long suffix is the whole object");
        assert!(read_range(&f, ByteRange::FromStart(8, Some(3))).is_err(), "past the end");
        assert!(read_range(&f, ByteRange::FromStart(u64::MAX, Some(2))).is_err(), "overflowing");
        assert!(read_range(&f, ByteRange::FromStart(0, Some(1 << 40))).is_err(), "a terabyte is refused before allocating");
    }

    #[test]
    fn metadata_keys_are_recognised() {
        assert!(is_metadata("obs/zarr.json") && is_metadata(".zmetadata") && !is_metadata("X/c/0/0"));
    }

    #[test]
    fn unreachable_server_fails_fast() {
        // Port 9 (discard) on loopback is closed here: connection refused, retried, then an error.
        let mut opts = location::RemoteOptions::default();
        opts.config.backoff = Duration::from_millis(10);
        let f = location::fetcher(&Remote::Http("http://127.0.0.1:9/store.zarr".into()), &opts).unwrap();
        let s = RemoteStore::new(Arc::new(f));
        let t = Instant::now();
        let e = s.fetch("zarr.json", None).unwrap_err();
        assert!(matches!(e, FetchError::Transport { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
