//! Inner chunks of a sharded array decoded as whole chunks are: their encoded bytes found through
//! the shard index and read in one range, then decoded by the sharding codec's inner codec chain.
//! `zarrs`' partial decoder (which serves any subset of a shard) copied each inner chunk three
//! more times on the way, into fresh memory: a profile of a sharded `X/csr/*.npy` read had a
//! fifth of the daemon's CPU in those copies and their page faults.

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;
use zarrs::array::codec::CodecChain;
use zarrs::array::{ArrayBytes, ArrayShardedExt, ArrayToBytesCodecTraits, ArrayShardedReadableExt, ArrayShardedReadableExtCache, CodecOptions};
use zarrs::metadata::v3::MetadataV3;
use zarrs::storage::byte_range::ByteRange;

use super::source::ZArray;

/// The codecs of a sharded array's inner chunks.
pub(super) struct InnerCodecs {
    chain: CodecChain,
    /// Inner chunk shape.
    shape: Vec<NonZeroU64>,
}

impl InnerCodecs {
    /// The inner codecs of `a`, a Zarr v3 array (metadata `doc`) whose only codec is
    /// `sharding_indexed`; `None` for anything else (read by `zarrs`' partial decoder).
    pub(super) fn of(a: &ZArray, doc: &Value) -> Option<InnerCodecs> {
        if !a.is_exclusively_sharded() || doc.pointer("/codecs/0/name")?.as_str()? != "sharding_indexed" {
            return None;
        }
        let codecs: Vec<MetadataV3> = serde_json::from_value(doc.pointer("/codecs/0/configuration/codecs")?.clone()).ok()?;
        let chain = CodecChain::from_metadata(&codecs).ok()?;
        let shape = a.subchunk_shape()?.to_vec();
        Some(InnerCodecs { chain, shape })
    }

    /// Inner chunk `coords` of `a` decoded; `Ok(None)` when its shard does not hold it (the
    /// fill value, left to `zarrs`) or its index entry does not add up (left to `zarrs`, which
    /// reports it).
    pub(super) fn decode(&self, a: &ZArray, cache: &ArrayShardedReadableExtCache, coords: &[u64], opts: &CodecOptions) -> Result<Option<ArrayBytes<'static>>, String> {
        if byte_range(a, cache, coords)?.is_none() {
            return Ok(None);
        }
        let Some(encoded) = a.retrieve_encoded_subchunk(cache, coords).map_err(|e| e.to_string())? else { return Ok(None) };
        self.chain
            .decode(Cow::Owned(encoded), &self.shape, a.data_type(), a.fill_value(), opts)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// The byte range (offset, length) of inner chunk `coords` in its shard (reading the shard's
/// index if `cache` does not hold it); `None` when it was never written — its index entry is the
/// "empty" marker (offset and size both `u64::MAX`) — or the entry does not add up. `zarrs` 0.23
/// turns that marker into a byte range by adding the two (an overflow: a panic with overflow
/// checks, else a range of 2^64 - 1 bytes to read), so it is recognised here, before any read.
pub(super) fn byte_range(a: &ZArray, cache: &ArrayShardedReadableExtCache, coords: &[u64]) -> Result<Option<(u64, u64)>, String> {
    let range = catch_unwind(AssertUnwindSafe(|| a.subchunk_byte_range(cache, coords)));
    match range {
        Ok(Ok(Some(ByteRange::FromStart(offset, Some(len))))) if offset != u64::MAX && offset.checked_add(len).is_some() => Ok(Some((offset, len))),
        Ok(Ok(_)) | Err(_) => Ok(None),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zarrs::array::Array;
    use zarrs::storage::ReadableStorageTraits;

    use super::*;
    use crate::storage::ChunkGrid;

    /// Every inner chunk of the sharded fixtures' arrays (whole shards, a shard cut by the array's
    /// end, inner chunks never written) decodes to what `zarrs`' partial decoder gives.
    #[test]
    fn inner_chunks_decode_as_zarrs_partial_decoder_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zarr");
        let opts = CodecOptions::default();
        let (mut decoded, mut absent) = (0, 0);
        for (store, path) in [("dense_f32.v3s.zarr", "X"), ("csr_gzip.v3s.zarr", "X/data"), ("csr_gzip.v3s.zarr", "X/indices")] {
            let fs: Arc<dyn ReadableStorageTraits> = Arc::new(zarrs::filesystem::FilesystemStore::new(root.join(store)).expect("store"));
            let a: ZArray = Array::open(fs, &format!("/{path}")).expect("array");
            let doc: Value = serde_json::from_slice(&std::fs::read(root.join(store).join(path).join("zarr.json")).expect("metadata")).expect("json");
            let codecs = InnerCodecs::of(&a, &doc).expect("an exclusively sharded array");
            let inner: Vec<u64> = codecs.shape.iter().map(|c| c.get()).collect();
            let grid = ChunkGrid::new(a.shape().to_vec(), inner);
            let cache = ArrayShardedReadableExtCache::new(&a);
            for i in 0..grid.num_chunks() {
                let coords = grid.coords(i);
                let want: ArrayBytes = a.retrieve_subchunk_opt(&cache, &coords, &opts).expect("zarrs decodes it");
                match codecs.decode(&a, &cache, &coords, &opts).expect("decodes") {
                    Some(got) => {
                        assert_eq!(got.into_fixed().expect("fixed"), want.into_fixed().expect("fixed"), "{store}/{path} {coords:?}");
                        decoded += 1;
                    }
                    None => absent += 1,
                }
            }
        }
        assert!(decoded > 0 && absent == 0, "{decoded} decoded, {absent} absent");
    }

    /// An inner chunk never written (all fill value) is absent, left to `zarrs`; the others of
    /// its shard decode.
    #[test]
    fn an_inner_chunk_never_written_is_left_to_zarrs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fs: Arc<dyn ReadableStorageTraits> = Arc::new(zarrs::filesystem::FilesystemStore::new(dir.path()).expect("store"));
        let w = Arc::new(zarrs::filesystem::FilesystemStore::new(dir.path()).expect("store"));
        let a = zarrs::array::ArrayBuilder::new(vec![20, 4], vec![20, 4], zarrs::array::data_type::float32(), 0.0f32)
            .subchunk_shape(vec![5, 4])
            .build(w, "/a")
            .expect("array");
        a.store_metadata().expect("metadata");
        // Rows 5..10 (inner chunk 1) all zero: not written.
        let values: Vec<f32> = (0..80).map(|i| if (20..40).contains(&i) { 0.0 } else { i as f32 }).collect();
        a.store_chunk(&[0, 0], values.as_slice()).expect("shard");
        let r: ZArray = Array::open(fs, "/a").expect("array");
        let doc: Value = serde_json::from_slice(&std::fs::read(dir.path().join("a/zarr.json")).expect("metadata")).expect("json");
        let codecs = InnerCodecs::of(&r, &doc).expect("an exclusively sharded array");
        let (cache, opts) = (ArrayShardedReadableExtCache::new(&r), CodecOptions::default());
        assert!(codecs.decode(&r, &cache, &[1, 0], &opts).expect("index read").is_none());
        let got = codecs.decode(&r, &cache, &[2, 0], &opts).expect("decodes").expect("written");
        let want: Vec<u8> = values[40..60].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(got.into_fixed().expect("fixed").to_vec(), want);
    }
}
