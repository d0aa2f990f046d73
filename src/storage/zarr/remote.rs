//! A read-only `zarrs` store over any remote location of the byte-range layer (HTTP(S), S3,
//! GCS, Azure):
//! whole-key GETs and range GETs (shard indexes, inner chunks) through one
//! [`Fetcher`](crate::storage::range::Fetcher) — retries, the validated disk cache, counters.
//!
//! A missing key (404) reads as absent (a missing chunk is the fill value); other failures are
//! errors, which the views turn into `EIO` for the read that needed them. Metadata keys are never
//! served from the disk cache.

use std::sync::Arc;

use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{Bytes, MaybeBytes, MaybeBytesIterator, ReadableStorageTraits, StorageError as ZStorageError, StoreKey};

use crate::storage::range::{FetchError, Fetcher, Span};

/// A Zarr store under a remote prefix.
pub struct RemoteStore {
    fetcher: Arc<Fetcher>,
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
        RemoteStore { fetcher }
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

impl ReadableStorageTraits for RemoteStore {
    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, ZStorageError> {
        Ok(self.fetch(key.as_str(), None).map_err(zerr)?.map(Bytes::from))
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, ZStorageError> {
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
