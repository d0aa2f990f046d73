//! [`ArraySource`] for one Zarr array, on `zarrs`. Chunks of sharded arrays are the *inner* chunks,
//! read alone (shard index + one range read), never whole shards.

use std::sync::Arc;

use serde_json::Value;
use zarrs::array::{
    Array, ArrayBytes, ArrayMetadata, ArrayMetadataV2, ArrayMetadataV3, ArrayShardedExt,
    ArrayShardedReadableExt, ArraySubset, CodecOptions,
};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{MaybeBytes, MaybeBytesIterator, ReadableStorageTraits, StorageError as ZStorageError, StoreKey};

use super::ahead::{AheadTo, ChunkAhead};
use super::inner::InnerCodecs;
use super::shards::ShardIndexes;
use super::strings::{StrChunk, StrMemo};
use super::dtype::{self, Kind};
use super::meta::Version;
use crate::storage::grid::clip_chunk;
use crate::storage::{ArrayMeta, ArraySource, ChunkGrid, StorageError, StorageResult};

/// Largest decoded chunk annfs accepts (guards absurd chunk shapes).
const MAX_CHUNK_BYTES: u64 = 1 << 32;

pub(super) type ZArray = Array<dyn ReadableStorageTraits>;

/// Reads one Zarr array.
pub struct ZarrSource {
    meta: ArrayMeta,
    kind: Kind,
    /// The array, or why `zarrs` cannot read it (reported on every read).
    array: Result<ZArray, String>,
    /// Shard-index caches for sharded arrays (present iff the grid is the inner-chunk grid).
    shards: Option<ShardIndexes>,
    opts: CodecOptions,
    /// Chunks sent ahead of their reads (unsharded arrays).
    ahead: Option<ChunkAhead>,
    /// The last variable-length string chunk decoded (1-D string arrays).
    strings: StrMemo,
}

fn u64s(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(Value::as_u64).collect()
}

/// Codec names in encoding order, e.g. `sharding_indexed(bytes+zstd)` or `vlen-utf8+blosc`.
fn describe_codecs(doc: &Value, version: Version) -> String {
    fn names(codecs: &[Value]) -> String {
        codecs
            .iter()
            .map(|c| {
                let name = c.get("name").and_then(Value::as_str).or_else(|| c.as_str()).unwrap_or("?");
                match c.get("configuration").and_then(|x| x.get("codecs")).and_then(Value::as_array) {
                    Some(inner) => format!("{name}({})", names(inner)),
                    None => name.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("+")
    }
    match version {
        Version::V3 => names(doc.get("codecs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])),
        Version::V2 => {
            let mut parts: Vec<String> = doc
                .get("filters")
                .and_then(Value::as_array)
                .map(|f| f.iter().filter_map(|x| x.get("id").and_then(Value::as_str).map(String::from)).collect())
                .unwrap_or_default();
            if let Some(c) = doc.get("compressor").filter(|c| !c.is_null()) {
                let id = c.get("id").and_then(Value::as_str).unwrap_or("?");
                match c.get("cname").and_then(Value::as_str) {
                    Some(cname) => parts.push(format!("{id}({cname})")),
                    None => parts.push(id.to_string()),
                }
            }
            if parts.is_empty() {
                "uncompressed".into()
            } else {
                parts.join("+")
            }
        }
    }
}

fn dims(v: &[u64]) -> String {
    if v.is_empty() {
        return "scalar".into();
    }
    v.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
}

impl ZarrSource {
    /// Opens the array at `path` (absolute, e.g. `/obs/n_genes`) from its metadata document.
    /// Only malformed shapes fail here; anything `zarrs` cannot read fails the array's reads.
    pub fn open(
        storage: Arc<dyn ReadableStorageTraits>,
        path: &str,
        doc: &Value,
        version: Version,
        opts: CodecOptions,
    ) -> StorageResult<ZarrSource> {
        let mut doc = doc.clone();
        let kind = match version {
            Version::V2 => dtype::v2_kind(&mut doc),
            Version::V3 => dtype::v3_kind(&mut doc),
        };
        let shape = u64s(doc.get("shape")).ok_or_else(|| StorageError::corrupt(path, "missing or malformed `shape`"))?;
        if shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d)).is_none() {
            return Err(StorageError::corrupt(path, format!("shape {shape:?} overflows")));
        }
        let declared_chunk = match version {
            Version::V2 => u64s(doc.get("chunks")),
            Version::V3 => u64s(doc.pointer("/chunk_grid/configuration/chunk_shape")),
        }
        .filter(|c| c.len() == shape.len())
        .unwrap_or_else(|| shape.clone());
        let array = create(storage, path, doc.clone(), version);
        if let (Err(e), false) = (&array, matches!(kind, Kind::Unsupported(_))) {
            log::warn!("{path}: cannot be read: {e}");
        }
        let mut chunk = declared_chunk.clone();
        let mut shards = None;
        if let Ok(a) = &array {
            if a.is_sharded() {
                if let Some(inner) = a.effective_subchunk_shape() {
                    chunk = inner.iter().map(|c| c.get()).collect();
                    shards = Some(ShardIndexes::new(a, declared_chunk.clone(), chunk.clone(), InnerCodecs::of(a, &doc)));
                }
            }
        }
        let elem = kind.elem_size().max(1) as u64;
        let chunk_bytes = chunk.iter().try_fold(elem, |a, d| a.checked_mul((*d).max(1)));
        let grid = ChunkGrid::new(shape.clone(), chunk.clone());
        let array = match chunk_bytes.filter(|&b| b <= MAX_CHUNK_BYTES) {
            None => Err(format!("chunk shape {chunk:?} is too large")),
            Some(_) => grid.check_count(elem).and(array),
        };
        let desc = match &shards {
            Some(_) => format!(
                "zarr {}, chunks {} in shards {}, {}",
                if version == Version::V2 { "v2" } else { "v3" },
                dims(&chunk),
                dims(&declared_chunk),
                describe_codecs(&doc, version)
            ),
            None => format!(
                "zarr {}, chunks {}, {}",
                if version == Version::V2 { "v2" } else { "v3" },
                dims(&chunk),
                describe_codecs(&doc, version)
            ),
        };
        let meta = ArrayMeta {
            path: path.to_string(),
            dtype: kind.dtype(),
            grid,
            shape,
            null: false,
            storage_desc: desc,
        };
        Ok(ZarrSource { meta, kind, array, shards, opts, ahead: None, strings: StrMemo::default() })
    }

    /// Sends chunks to `to` ahead of their reads: whole chunks of an unsharded array, byte
    /// ranges of inner chunks of a sharded one.
    pub(super) fn send_ahead(&mut self, to: AheadTo) {
        let chunk_bytes = self.meta.grid.chunk.iter().product::<u64>().saturating_mul(self.kind.elem_size().max(1) as u64);
        if let Some(s) = &mut self.shards {
            s.send_ahead(to, &self.meta.path);
            return;
        }
        if !matches!(&self.array, Ok(a) if !a.is_sharded()) {
            return;
        }
        self.ahead = ChunkAhead::new(to, &self.meta.path, chunk_bytes);
    }

    /// The store keys of `chunks` (linear indices).
    fn chunk_keys(&self, a: &ZArray, prefix: &str, chunks: impl Iterator<Item = u64>) -> Vec<String> {
        let grid = &self.meta.grid;
        chunks.filter(|&i| i < grid.num_chunks()).map(|i| format!("{prefix}{}", a.chunk_key(&grid.coords(i)).as_str())).collect()
    }

    /// Chunk `index` is about to be read: when it follows the last one read, the chunks after
    /// it are sent ahead.
    fn read_ahead(&self, a: &ZArray, index: u64) {
        let Some(ah) = &self.ahead else { return };
        if let Some(next) = ah.after_read(index) {
            ah.send(self.chunk_keys(a, &ah.prefix, next));
        }
    }

    fn array(&self) -> StorageResult<&ZArray> {
        self.array.as_ref().map_err(|e| StorageError::unsupported(&self.meta.path, e.clone()))
    }

    fn read_err(&self, e: impl std::fmt::Display) -> StorageError {
        let err = StorageError::corrupt(&self.meta.path, e.to_string());
        log::warn!("{err}");
        err
    }

    /// Strings `[start, end)` of a 1-D variable-length string array, from its decoded chunks
    /// (each decoded once however many blocks of it are read: see [`super::strings`]).
    fn vlen_strings(&self, a: &ZArray, start: u64, end: u64) -> StorageResult<Vec<String>> {
        let chunk_len = self.meta.grid.chunk.first().copied().unwrap_or(1).max(1);
        let mut out = Vec::with_capacity((end - start) as usize);
        for c in start / chunk_len..=(end - 1) / chunk_len {
            let chunk = self.strings.chunk(c, || self.decode_vlen_chunk(a, c))?;
            let c0 = c * chunk_len;
            for i in start.max(c0)..end.min(c0 + chunk_len) {
                let s = chunk.get((i - c0) as usize).ok_or_else(|| self.read_err(format_args!("chunk {c} holds {} strings, not {}", chunk.len(), i - c0 + 1)))?;
                out.push(String::from_utf8_lossy(s).into_owned());
            }
        }
        Ok(out)
    }

    /// Decodes chunk `c` of a 1-D variable-length string array.
    fn decode_vlen_chunk(&self, a: &ZArray, c: u64) -> StorageResult<StrChunk> {
        let bytes = self.decode_chunk(a, &[c])?;
        let ArrayBytes::Variable(v) = bytes else { return Err(self.read_err(format_args!("chunk [{c}]: not variable-length strings"))) };
        let (data, offsets) = v.into_parts();
        StrChunk::new(data.into_owned(), &offsets).ok_or_else(|| self.read_err(format_args!("chunk [{c}]: string offsets out of range")))
    }

    /// Chunk `coords` decoded (an inner chunk of a sharded array); a panic inside `zarrs`'
    /// decoders is an error, as any failure, logged and naming the chunk.
    fn decode_chunk(&self, a: &ZArray, coords: &[u64]) -> StorageResult<ArrayBytes<'static>> {
        super::contain::decode(|| match &self.shards {
            Some(s) => s.decode(a, coords, &self.opts),
            None => a.retrieve_chunk_opt(coords, &self.opts).map_err(|e| e.to_string()),
        })
        .and_then(|r| r)
        .map_err(|e| self.read_err(format_args!("chunk {coords:?}: {e}")))
    }

    /// Decodes elements of `subset` (all of them, C order) to strings.
    fn strings_of(&self, bytes: ArrayBytes<'static>) -> StorageResult<Vec<String>> {
        match (&self.kind, bytes) {
            (Kind::VlenStr, ArrayBytes::Variable(v)) => {
                let (data, offsets) = v.into_parts();
                let offs: &[usize] = &offsets;
                let mut out = Vec::with_capacity(offs.len().saturating_sub(1));
                for w in offs.windows(2) {
                    let s = data.get(w[0]..w[1]).ok_or_else(|| self.read_err("string offsets out of range"))?;
                    out.push(String::from_utf8_lossy(s).into_owned());
                }
                Ok(out)
            }
            (Kind::Utf32(n), ArrayBytes::Fixed(raw)) => Ok(raw.chunks_exact(4 * n).map(dtype::utf32_to_string).collect()),
            (Kind::FixedBytes(n), ArrayBytes::Fixed(raw)) => Ok(raw.chunks_exact(*n).map(dtype::bytes_to_string).collect()),
            _ => Err(StorageError::corrupt(&self.meta.path, "not a string array")),
        }
    }
}

/// The store seen from inside one array: keys are prefixed with the array's path. Arrays are opened
/// at the root of such a view, so `zarrs` never validates the node path — anndata 0.7 stores arrays
/// under `__categories/`, a name prefix Zarr v3 reserves and `zarrs` rejects.
struct Prefixed {
    inner: Arc<dyn ReadableStorageTraits>,
    prefix: String,
}

impl Prefixed {
    fn key(&self, key: &StoreKey) -> Result<StoreKey, ZStorageError> {
        Ok(StoreKey::new(format!("{}{}", self.prefix, key.as_str()))?)
    }
}

impl ReadableStorageTraits for Prefixed {
    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, ZStorageError> {
        self.inner.get(&self.key(key)?)
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, ZStorageError> {
        // Ranges come from shard indexes in the store: zarrs' filesystem store allocates a
        // range's length before reading it, so a damaged index claiming a terabyte would abort.
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        if let Some(r) = ranges.iter().find(|r| range_len(r).is_some_and(|n| n > MAX_RANGE_BYTES)) {
            return Err(ZStorageError::Other(format!("{}{key}: byte range {r} is larger than {MAX_RANGE_BYTES} bytes", self.prefix)));
        }
        self.inner.get_partial_many(&self.key(key)?, Box::new(ranges.into_iter()))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, ZStorageError> {
        self.inner.size_key(&self.key(key)?)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

/// The longest byte range of a store key annfs asks for (one shard's inner chunk).
pub(super) const MAX_RANGE_BYTES: u64 = 256 << 20;

/// The length of a byte range, when it states one.
fn range_len(r: &ByteRange) -> Option<u64> {
    match r {
        ByteRange::FromStart(_, len) => *len,
        ByteRange::Suffix(len) => Some(*len),
    }
}

/// Builds the `zarrs` array from (possibly rewritten) metadata.
fn create(storage: Arc<dyn ReadableStorageTraits>, path: &str, doc: Value, version: Version) -> Result<ZArray, String> {
    let prefix = format!("{}/", path.trim_matches('/'));
    let storage: Arc<dyn ReadableStorageTraits> = Arc::new(Prefixed { inner: storage, prefix });
    let metadata = match version {
        Version::V2 => {
            let mut doc = doc;
            if doc.get("zarr_format").is_none() {
                doc["zarr_format"] = 2.into();
            }
            serde_json::from_value::<ArrayMetadataV2>(doc).map(ArrayMetadata::V2)
        }
        Version::V3 => serde_json::from_value::<ArrayMetadataV3>(doc).map(ArrayMetadata::V3),
    }
    .map_err(|e| format!("invalid array metadata: {e}"))?;
    Array::new_with_metadata(storage, "/", metadata).map_err(|e| e.to_string())
}

impl ArraySource for ZarrSource {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    fn will_need(&self, chunks: &[u64]) {
        if let (Some(s), Ok(a)) = (&self.shards, &self.array) {
            s.will_need(a, &self.meta.grid, chunks);
        }
        if let (Some(ah), Ok(a)) = (&self.ahead, &self.array) {
            ah.send(self.chunk_keys(a, &ah.prefix, chunks.iter().copied()));
        }
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let a = self.array()?;
        let elem = self.kind.elem_size();
        if elem == 0 {
            return Err(StorageError::corrupt(&self.meta.path, "not a fixed-size type"));
        }
        let grid = &self.meta.grid;
        if index >= grid.num_chunks() {
            return Err(StorageError::corrupt(&self.meta.path, format!("chunk {index} out of range")));
        }
        let coords = grid.coords(index);
        self.read_ahead(a, index);
        let bytes = self.decode_chunk(a, &coords)?;
        let raw = bytes.into_fixed().map_err(|e| self.read_err(e))?;
        let full = grid.chunk.iter().product::<u64>() as usize * elem;
        let clipped = grid.clipped_shape(&coords).iter().product::<u64>() as usize * elem;
        // An interior chunk (or one `zarrs` already clipped) is taken as decoded, without a copy: the
        // copy into a fresh allocation was a sixth of a sequential read's time (page faults).
        let mut out = if raw.len() == clipped {
            raw.into_owned()
        } else if raw.len() == full {
            clip_chunk(grid, &coords, &raw, elem)
        } else {
            return Err(self.read_err(format_args!("chunk {coords:?} decoded to {} bytes, expected {full}", raw.len())));
        };
        if let Kind::Compound { size, utf32, .. } = &self.kind {
            if !utf32.is_empty() {
                dtype::transcode_utf32_fields(&mut out, *size, utf32);
            }
        }
        Ok(out)
    }

    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>> {
        if !matches!(self.kind, Kind::VlenStr | Kind::Utf32(_) | Kind::FixedBytes(_)) {
            return Err(StorageError::corrupt(&self.meta.path, "not a string array"));
        }
        let len = self.meta.len();
        if start > end || end > len {
            return Err(StorageError::corrupt(&self.meta.path, format!("string range {start}..{end} outside 0..{len}")));
        }
        if start == end {
            return Ok(Vec::new());
        }
        let a = self.array()?;
        if matches!(self.kind, Kind::VlenStr) && self.meta.shape.len() == 1 {
            return self.vlen_strings(a, start, end);
        }
        let shape = &self.meta.shape;
        let (subset, skip) = if shape.is_empty() {
            (ArraySubset::new_with_ranges(&[]), 0)
        } else {
            let row: u64 = shape[1..].iter().product::<u64>().max(1);
            let (r0, r1) = (start / row, end.div_ceil(row));
            let ranges: Vec<std::ops::Range<u64>> =
                std::iter::once(r0..r1).chain(shape[1..].iter().map(|&s| 0..s)).collect();
            (ArraySubset::new_with_ranges(&ranges), (start - r0 * row) as usize)
        };
        let bytes: ArrayBytes<'static> = super::contain::decode(|| match &self.shards {
            Some(s) => a.retrieve_array_subset_sharded_opt(&s.whole, &subset, &self.opts).map_err(|e| e.to_string()),
            None => a.retrieve_array_subset_opt(&subset, &self.opts).map_err(|e| e.to_string()),
        })
        .and_then(|r| r)
        .map_err(|e| self.read_err(format_args!("strings {start}..{end}: {e}")))?;
        let all = self.strings_of(bytes)?;
        let n = (end - start) as usize;
        if all.len() < skip + n {
            return Err(self.read_err(format_args!("read {} strings, expected {}", all.len(), skip + n)));
        }
        Ok(all.into_iter().skip(skip).take(n).collect())
    }
}
