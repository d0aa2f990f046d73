//! The shards of a sharded array: one `zarrs` shard-index cache per shard, the inner chunks'
//! codecs, and hints that send the byte ranges of inner chunks a reader will need ahead of it.
//!
//! One cache per shard: `zarrs` holds a cache's lock while it fetches a shard index, so with one
//! cache per array a slow fetch (a remote store) would stall every reader of the array; per
//! shard, only readers of that shard wait (for the index they need anyway).
//!
//! Hints: anndata (zarr-python) lays a shard's inner chunks out in Morton order, so the inner
//! chunks of one band of rows of a 2-D array are scattered over the shard, and neither the
//! kernel's read-ahead (local) nor a remote file's sequential read-ahead sees a stream. The
//! ranges of the inner chunks a read-ahead window needs are sent ahead instead, once the
//! shard's index is loaded (a hint never waits for an index), unless they lie one after
//! another in the shard (a 1-D array), where read-ahead already streams them.

use std::sync::Arc;

use dashmap::DashMap;
use zarrs::array::{ArrayBytes, ArrayShardedReadableExt, ArrayShardedReadableExtCache, CodecOptions};

use super::ahead::AheadTo;
use super::inner::{self, InnerCodecs};
use super::source::ZArray;
use crate::storage::ChunkGrid;

/// Byte ranges (offset, length) of inner chunks in one shard.
type Ranges = Vec<(u64, u64)>;

/// Shard indexes, inner codecs and hints of one sharded array.
pub(super) struct ShardIndexes {
    /// Shard shape in elements.
    pub(super) shard: Vec<u64>,
    /// Inner chunk shape in elements.
    pub(super) inner: Vec<u64>,
    per_shard: DashMap<Vec<u64>, Arc<ArrayShardedReadableExtCache>>,
    /// For reads that may span shards (strings).
    pub(super) whole: ArrayShardedReadableExtCache,
    /// The inner chunks' codecs, when they can be decoded without `zarrs`' partial decoder.
    codecs: Option<InnerCodecs>,
    /// Where inner chunks are sent ahead, and the array's key prefix (`obsm/X_pca/`).
    ahead: Option<(AheadTo, String)>,
}

impl ShardIndexes {
    /// The shards of `a`: shards of `shard` elements holding inner chunks of `inner`.
    pub(super) fn new(a: &ZArray, shard: Vec<u64>, inner: Vec<u64>, codecs: Option<InnerCodecs>) -> ShardIndexes {
        ShardIndexes { shard, inner, per_shard: DashMap::new(), whole: ArrayShardedReadableExtCache::new(a), codecs, ahead: None }
    }

    /// Sends inner chunks to `to` ahead of their reads (see [`ShardIndexes::will_need`]); `path`
    /// is the array's path in the store.
    pub(super) fn send_ahead(&mut self, to: AheadTo, path: &str) {
        self.ahead = Some((to, format!("{}/", path.trim_matches('/'))));
    }

    /// The coordinates of the shard holding inner chunk `coords`.
    fn shard_of(&self, coords: &[u64]) -> Vec<u64> {
        coords.iter().zip(&self.inner).zip(&self.shard).map(|((c, i), s)| c.saturating_mul(*i) / (*s).max(1)).collect()
    }

    /// The cache of the shard holding inner chunk `coords`.
    fn of(&self, a: &ZArray, coords: &[u64]) -> Arc<ArrayShardedReadableExtCache> {
        self.per_shard.entry(self.shard_of(coords)).or_insert_with(|| Arc::new(ArrayShardedReadableExtCache::new(a))).clone()
    }

    /// Inner chunk `coords` decoded: as a whole chunk when its codecs allow ([`InnerCodecs`]),
    /// else (and for an inner chunk never written) by `zarrs`' partial decoder.
    pub(super) fn decode(&self, a: &ZArray, coords: &[u64], opts: &CodecOptions) -> Result<ArrayBytes<'static>, String> {
        let cache = self.of(a, coords);
        if let Some(bytes) = self.codecs.as_ref().map(|c| c.decode(a, &cache, coords, opts)).transpose()?.flatten() {
            return Ok(bytes);
        }
        a.retrieve_subchunk_opt(&cache, coords, opts).map_err(|e| e.to_string())
    }

    /// Inner chunks `chunks` (linear indices in `grid`) will be read soon: the byte ranges of
    /// those whose shard index is loaded are sent ahead, shard by shard.
    pub(super) fn will_need(&self, a: &ZArray, grid: &ChunkGrid, chunks: &[u64]) {
        let Some((to, prefix)) = &self.ahead else { return };
        let mut by_shard: Vec<(Vec<u64>, Ranges)> = Vec::new();
        for &i in chunks.iter().filter(|&&i| i < grid.num_chunks()) {
            let coords = grid.coords(i);
            let shard = self.shard_of(&coords);
            let Some(cache) = self.per_shard.get(&shard).map(|c| c.clone()) else { continue };
            if cache.is_empty() {
                continue;
            }
            let Ok(Some(range)) = inner::byte_range(a, &cache, &coords) else { continue };
            match by_shard.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, ranges)) => ranges.push(range),
                None => by_shard.push((shard, vec![range])),
            }
        }
        for (shard, mut ranges) in by_shard {
            // Inner chunks that follow each other in the shard (a 1-D array's) are a stream the
            // shard file's own read-ahead serves: sending them too made a remote `csr/*.npy`
            // read twice as slow.
            ranges.sort_unstable();
            if ranges.windows(2).all(|w| w[0].0.checked_add(w[0].1) == Some(w[1].0)) {
                continue;
            }
            to.send_ranges(&format!("{prefix}{}", a.chunk_key(&shard).as_str()), &ranges);
        }
    }
}
