//! [`Arr`]: a store array read through the shared chunk cache, with typed helpers.

use std::sync::Arc;

use crate::cache::{ArrIds, ChunkCache, Key};
use crate::storage::{ArrayMeta, ArraySource, DType, NumType, StorageError, StorageResult};

/// How many strings one cached string block holds.
const STRING_BLOCK: u64 = 4096;

/// A handle to one array (or to a window of its first-axis rows): its source plus the mount's
/// cache. Cheap to clone; windows share the parent's cached chunks.
#[derive(Clone)]
pub struct Arr {
    id: u32,
    src: Arc<dyn ArraySource>,
    cache: Arc<ChunkCache>,
    /// First row of the window in the stored array (0 for the whole array).
    offset: u64,
    /// The shape seen through the window.
    shape: Arc<[u64]>,
}

impl Arr {
    /// Wraps `src`, giving it a fresh cache id.
    pub fn new(src: Arc<dyn ArraySource>, cache: &Arc<ChunkCache>, ids: &ArrIds) -> Self {
        let shape = src.meta().shape.clone().into();
        Arr { id: ids.next(), src, cache: cache.clone(), offset: 0, shape }
    }

    /// Wraps a source computed from other arrays (a gathered row selection, an in-memory
    /// pointer array), sharing `cache` under an id of its own.
    pub fn derived(src: Arc<dyn ArraySource>, cache: &Arc<ChunkCache>) -> Self {
        let shape = src.meta().shape.clone().into();
        Arr { id: cache.ids.derived_array(), src, cache: cache.clone(), offset: 0, shape }
    }

    /// True for an array made by [`Arr::derived`] (a gathered selection, a computed pointer
    /// array): it is not a window of a stored array, whatever path it reports.
    pub fn is_derived(&self) -> bool {
        // Derived ids count down from u32::MAX; the gene-column index's count up from
        // 0xC000_0000 and store arrays from 0: the top eighth is the derived range.
        self.id >= 0xE000_0000
    }

    /// The cache this array reads through.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    /// What this array's content is known by in the cache's held values: (its cache id, its
    /// window's first row).
    pub fn held_key(&self, count: u64) -> crate::cache::held::HeldKey {
        (self.id, self.offset, count)
    }

    /// The rows `[r0, r1)` of this array's first axis, as an array of its own.
    /// Scalars and out-of-range windows are clamped.
    pub fn window(&self, r0: u64, r1: u64) -> Arr {
        if self.shape.is_empty() {
            return self.clone();
        }
        let r1 = r1.min(self.rows());
        let r0 = r0.min(r1);
        let mut shape = self.shape.to_vec();
        shape[0] = r1 - r0;
        Arr { offset: self.offset + r0, shape: shape.into(), ..self.clone() }
    }

    /// The whole stored array this is a window of (same cache id).
    pub fn whole(&self) -> Arr {
        Arr { offset: 0, shape: self.src.meta().shape.clone().into(), ..self.clone() }
    }

    /// First row of this window in the stored array.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The underlying store array.
    pub fn source(&self) -> Arc<dyn ArraySource> {
        self.src.clone()
    }

    /// Static facts about the array.
    pub fn meta(&self) -> &ArrayMeta {
        self.src.meta()
    }

    /// Store path of the array.
    pub fn path(&self) -> &str {
        &self.meta().path
    }

    /// Shape (of the window).
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        if self.meta().null {
            0
        } else {
            self.shape.iter().product()
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length along the first axis (1 for a scalar).
    pub fn rows(&self) -> u64 {
        self.shape().first().copied().unwrap_or(1)
    }

    /// The numeric type, if the array is numeric.
    pub fn num_type(&self) -> Option<NumType> {
        match self.meta().dtype {
            DType::Num(t) => Some(t),
            _ => None,
        }
    }

    /// True for string arrays.
    pub fn is_str(&self) -> bool {
        matches!(self.meta().dtype, DType::Str)
    }

    /// Bytes per element for numeric and compound arrays.
    pub fn elem_size(&self) -> usize {
        self.meta().dtype_size()
    }

    /// Elements per first-axis row.
    pub fn row_elems(&self) -> u64 {
        self.shape().iter().skip(1).product()
    }

    fn chunk(&self, index: u64) -> StorageResult<crate::cache::Bytes> {
        self.cache.bytes(Key::Chunk(self.id, index), || self.src.read_chunk(index).map(|v| self.cache.adopt(v)))
    }

    fn corrupt(&self, reason: impl Into<String>) -> StorageError {
        StorageError::corrupt(self.path(), reason)
    }

    /// Reads first-axis rows `[r0, r1)` (all trailing dimensions) as packed C-order bytes.
    /// A scalar has one row.
    pub fn read_rows(&self, r0: u64, r1: u64) -> StorageResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_rows_into(r0, r1, &mut out)?;
        Ok(out)
    }

    /// [`Arr::read_rows`] appending to `out`.
    pub fn read_rows_into(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> StorageResult<()> {
        self.check_rows(r0, r1)?;
        self.read_stored_rows(r0 + self.offset, r1 + self.offset, out)
    }

    /// Decodes the chunks rows `[r0, r1)` depend on into the cache (read-ahead).
    pub fn prefetch_rows(&self, r0: u64, r1: u64) -> StorageResult<()> {
        self.check_rows(r0, r1)?;
        if self.meta().grid.shape.is_empty() {
            return self.chunk(0).map(drop);
        }
        if self.src.packed_in_place() {
            // Read straight from the file when wanted: ask the kernel to read the window's
            // bytes ahead (measured on a cold file: without it, a whole-file numpy.load of
            // obsm/X_pca.npy took twice as long).
            let chunks = self.missing_chunks(r0 + self.offset, r1 + self.offset)?;
            self.src.will_need(&chunks);
            return Ok(());
        }
        let chunks = self.advise_missing(r0 + self.offset, r1 + self.offset)?;
        chunks.into_iter().try_for_each(|index| self.cache.warm(Key::Chunk(self.id, index), || self.src.read_chunk(index).map(|v| self.cache.adopt(v))))
    }

    /// True when the stored array's chunk index is loaded (see
    /// [`ArraySource::index_loaded`]).
    pub fn index_loaded(&self) -> bool {
        self.src.index_loaded()
    }

    /// Loads the stored array's chunk index now (see [`ArraySource::load_index`]).
    pub fn load_index(&self) {
        self.src.load_index()
    }

    /// Tells the store that rows `[r0, r1)` will be read soon, so that their stored bytes are
    /// fetched in the background (a remote store) or read ahead by the kernel (a local file)
    /// while the caller reads something else — another array of the same rows.
    pub fn will_need_rows(&self, r0: u64, r1: u64) {
        if r0 >= r1 || self.check_rows(r0, r1).is_err() || self.meta().grid.shape.is_empty() {
            return;
        }
        if let Ok(chunks) = self.missing_chunks(r0 + self.offset, r1 + self.offset) {
            if !chunks.is_empty() {
                self.src.will_need(&chunks);
            }
        }
    }

    /// The chunks stored rows `[r0, r1)` need that are not cached; when there are several, the
    /// store is told they will be read ([`ArraySource::will_need`]), so their bytes are fetched
    /// together (a cold disk serves them in parallel instead of one small read at a time).
    pub(super) fn advise_missing(&self, r0: u64, r1: u64) -> StorageResult<Vec<u64>> {
        let chunks = self.missing_chunks(r0, r1)?;
        if chunks.len() > 1 {
            self.src.will_need(&chunks);
        }
        Ok(chunks)
    }

    /// Drop-behind: rows `[r0, r1)` have just been read by a sequential reader, which moves on
    /// past row `r1`; the chunks whose row bands end among those rows are dropped from the cache
    /// (their memory is reused for the chunks ahead instead of fresh pages). Only what is cached
    /// changes: a later read of those rows decodes them again.
    pub fn drop_behind(&self, r0: u64, r1: u64) {
        if r0 >= r1 || r1 > self.rows() {
            return;
        }
        let (s0, s1) = (r0 + self.offset, r1 + self.offset);
        let grid = &self.meta().grid;
        let (Some(&ch0), Some(&n)) = (grid.chunk.first(), grid.shape.first()) else { return };
        let _ = self.for_each_chunk(s0, s1, |coords, index| {
            if coords[0].saturating_add(1).saturating_mul(ch0.max(1)).min(n) <= s1 {
                self.cache.drop_behind(Key::Chunk(self.id, index));
            }
            Ok(())
        });
    }

    /// The chunks stored rows `[r0, r1)` need that are not in the cache.
    fn missing_chunks(&self, r0: u64, r1: u64) -> StorageResult<Vec<u64>> {
        let mut chunks = Vec::new();
        self.for_each_chunk(r0, r1, |_, index| {
            if !self.cache.contains(Key::Chunk(self.id, index)) {
                chunks.push(index);
            }
            Ok(())
        })?;
        Ok(chunks)
    }

    fn check_rows(&self, r0: u64, r1: u64) -> StorageResult<()> {
        if r1 > self.rows() || r0 > r1 {
            return Err(self.corrupt(format!("rows {r0}..{r1} out of range")));
        }
        Ok(())
    }

    /// Calls `f(coords, index)` for every chunk holding stored rows `[r0, r1)` (rank >= 1).
    fn for_each_chunk(
        &self,
        r0: u64,
        r1: u64,
        mut f: impl FnMut(&[u64], u64) -> StorageResult<()>,
    ) -> StorageResult<()> {
        let grid = &self.meta().grid;
        let rank = grid.shape.len();
        if r0 >= r1 || rank == 0 {
            return Ok(());
        }
        let per = grid.chunks_per_dim();
        let ch0 = grid.chunk[0].max(1);
        let trailing: u64 = per[1..].iter().product();
        let mut coords = vec![0u64; rank];
        for cr in r0 / ch0..=(r1 - 1) / ch0 {
            for t in 0..trailing {
                // Grid coordinates of this chunk: cr, then t decomposed over trailing dims.
                coords[0] = cr;
                let mut rem = t;
                for d in (1..rank).rev() {
                    coords[d] = rem % per[d];
                    rem /= per[d];
                }
                f(&coords, grid.index(&coords))?;
            }
        }
        Ok(())
    }

    /// Appends rows `[r0, r1)` of the stored (unwindowed) array to `out`.
    fn read_stored_rows(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> StorageResult<()> {
        let elem = self.elem_size();
        let grid = &self.meta().grid;
        let rank = grid.shape.len();
        if rank == 0 {
            let c = self.chunk(0)?;
            if r0 == 0 && r1 == 1 && c.len() >= elem {
                out.extend_from_slice(&c[..elem]);
                return Ok(());
            }
            return Err(self.corrupt("bad scalar read"));
        }
        if r1 > grid.shape[0] || r0 > r1 {
            return Err(self.corrupt(format!("rows {r0}..{r1} out of range")));
        }
        let row_bytes = self.row_elems() as usize * elem;
        let start = out.len();
        let n = ((r1 - r0) as usize)
            .checked_mul(row_bytes)
            .ok_or_else(|| self.corrupt(format!("rows {r0}..{r1} too large")))?;
        if n == 0 {
            return Ok(());
        }
        self.advise_missing(r0, r1)?;
        let in_place = self.src.packed_in_place();
        // A chunk not cached whose stored bytes are its rows is read straight from the file
        // into place (no decoded copy, nothing cached): `part` is its rows from `a` (the chunk
        // starts at row `c0`); false when the chunk is not stored that way.
        let wants_packed = |index: u64| in_place && !self.cache.contains(Key::Chunk(self.id, index));
        let packed = |index: u64, a: u64, c0: u64, part: &mut [u8]| self.src.read_packed_into(index, (a - c0) * row_bytes as u64, part);
        let rows_of = |coords: &[u64]| {
            let c0 = coords[0] * grid.chunk[0];
            (c0, r0.max(c0), r1.min(c0.saturating_add(grid.chunk[0])))
        };
        if grid.chunks_per_dim()[1..].iter().all(|&p| p == 1) {
            // Each chunk holds whole rows (a 1-D array, or chunks spanning every column): its
            // wanted rows are one run, appended in order without zero-filling `out` first.
            out.reserve(n);
            return self.for_each_chunk(r0, r1, |coords, index| {
                let (c0, a, b) = rows_of(coords);
                if wants_packed(index) {
                    let at = out.len();
                    out.resize(at + (b - a) as usize * row_bytes, 0);
                    if packed(index, a, c0, &mut out[at..])? {
                        return Ok(());
                    }
                    out.truncate(at);
                }
                let data = self.checked_chunk(coords, index)?;
                out.extend_from_slice(&data[(a - c0) as usize * row_bytes..(b - c0) as usize * row_bytes]);
                Ok(())
            });
        }
        out.resize(start + n, 0);
        let dst = &mut out[start..];
        self.for_each_chunk(r0, r1, |coords, index| {
            let (c0, a, b) = rows_of(coords);
            if wants_packed(index) && packed(index, a, c0, &mut dst[(a - r0) as usize * row_bytes..(b - r0) as usize * row_bytes])? {
                return Ok(());
            }
            let data = self.checked_chunk(coords, index)?;
            copy_chunk_rows(dst, r0, r1, &grid.shape, &grid.chunk, coords, &grid.clipped_shape(coords), &data, elem);
            Ok(())
        })
    }

    /// Chunk `index` (at grid `coords`), checked to hold exactly its clipped shape's bytes.
    pub(super) fn checked_chunk(&self, coords: &[u64], index: u64) -> StorageResult<crate::cache::Bytes> {
        let data = self.chunk(index)?;
        let want: u64 = self.meta().grid.clipped_shape(coords).iter().product::<u64>() * self.elem_size() as u64;
        if data.len() as u64 != want {
            return Err(self.corrupt(format!("chunk {coords:?} has {} bytes, expected {want}", data.len())));
        }
        Ok(data)
    }

    /// Reads flat (C-order) elements `[e0, e1)` as packed bytes.
    pub fn read_flat(&self, e0: u64, e1: u64) -> StorageResult<Vec<u8>> {
        let elem = self.elem_size();
        let row = self.row_elems().max(1);
        if self.shape().is_empty() {
            let all = self.read_rows(0, 1)?;
            return Ok(all[(e0 as usize * elem).min(all.len())..(e1 as usize * elem).min(all.len())].to_vec());
        }
        if e0 >= e1 {
            return Ok(Vec::new());
        }
        if row == 1 {
            return self.read_rows(e0, e1);
        }
        let (r0, r1) = (e0 / row, e1.div_ceil(row));
        let rows = self.read_rows(r0, r1)?;
        let skip = ((e0 - r0 * row) as usize) * elem;
        let take = ((e1 - e0) as usize) * elem;
        Ok(rows[skip..skip + take].to_vec())
    }

    /// Reads flat elements `[e0, e1)` of an integer array as `i64`.
    pub fn read_i64(&self, e0: u64, e1: u64) -> StorageResult<Vec<i64>> {
        let bytes = self.read_flat(e0, e1)?;
        let mut out = Vec::new();
        self.decode_i64(&bytes, &mut out)?;
        Ok(out)
    }

    /// Decodes packed elements of this (integer or bool) array into `out` (cleared first).
    pub fn decode_i64(&self, bytes: &[u8], out: &mut Vec<i64>) -> StorageResult<()> {
        let t = self.num_type().filter(|t| t.is_integer() || *t == NumType::Bool);
        let t = t.ok_or_else(|| self.corrupt("expected an integer array"))?;
        out.clear();
        out.reserve(bytes.len() / t.size());
        macro_rules! ints {
            ($ty:ty) => {
                out.extend(
                    bytes.chunks_exact(std::mem::size_of::<$ty>()).map(|c| <$ty>::from_le_bytes(c.try_into().unwrap_or_default()) as i64),
                )
            };
        }
        match t {
            NumType::Bool | NumType::U8 => out.extend(bytes.iter().map(|&b| b as i64)),
            NumType::I8 => out.extend(bytes.iter().map(|&b| b as i8 as i64)),
            NumType::I16 => ints!(i16),
            NumType::U16 => ints!(u16),
            NumType::I32 => ints!(i32),
            NumType::U32 => ints!(u32),
            NumType::I64 => ints!(i64),
            NumType::U64 => {
                for c in bytes.chunks_exact(8) {
                    let v = u64::from_le_bytes(c.try_into().unwrap_or_default());
                    out.push(i64::try_from(v).map_err(|_| self.corrupt(format!("index {v} too large")))?);
                }
            }
            _ => return Err(self.corrupt("expected an integer array")),
        }
        Ok(())
    }

    /// Reads flat elements `[e0, e1)` of a string array, through cached blocks.
    pub fn read_strings(&self, e0: u64, e1: u64) -> StorageResult<Vec<String>> {
        let mut out = Vec::with_capacity(e1.saturating_sub(e0) as usize);
        self.for_each_str(e0, e1, |s| out.push(s.to_string()))?;
        Ok(out)
    }

    /// Calls `f` on flat elements `[e0, e1)` of a string array in order, straight from the store
    /// and caching nothing (the size pass of text views visits each string once).
    pub fn each_str_uncached(&self, e0: u64, e1: u64, mut f: impl FnMut(&str)) -> StorageResult<()> {
        let shift = self.offset * self.row_elems().max(1);
        let (e0, e1) = (e0 + shift, e1.min(self.len()) + shift);
        let n = self.meta().len();
        let mut b0 = e0;
        while b0 < e1 {
            let b1 = (b0 / STRING_BLOCK + 1).saturating_mul(STRING_BLOCK).min(e1).min(n);
            if b1 <= b0 {
                break;
            }
            let mut count = 0u64;
            self.src.each_string(b0, b1, &mut |s| {
                count += 1;
                f(s)
            })?;
            if count != b1 - b0 {
                return Err(self.corrupt(format!("read {count} strings, expected {}", b1 - b0)));
            }
            b0 = b1;
        }
        Ok(())
    }

    /// Calls `f` on flat elements `[e0, e1)` of a string array in order, borrowing them from
    /// the cached blocks (no copy per string).
    pub fn for_each_str(&self, e0: u64, e1: u64, mut f: impl FnMut(&str)) -> StorageResult<()> {
        let shift = self.offset * self.row_elems().max(1);
        let (e0, e1) = (e0 + shift, e1.min(self.len()) + shift);
        let n = self.meta().len();
        if e0 >= e1 {
            return Ok(());
        }
        for b in e0 / STRING_BLOCK..=(e1 - 1) / STRING_BLOCK {
            let (b0, b1) = (b * STRING_BLOCK, ((b + 1) * STRING_BLOCK).min(n));
            let block = self.cache.strings(Key::Strings(self.id, b), || {
                let v = self.src.read_strings(b0, b1)?;
                if v.len() as u64 != b1 - b0 {
                    return Err(self.corrupt(format!("read {} strings, expected {}", v.len(), b1 - b0)));
                }
                Ok(v)
            })?;
            let (s, e) = (e0.max(b0) - b0, e1.min(b1) - b0);
            block.get(s as usize..e as usize).unwrap_or_default().iter().for_each(|x| f(x));
        }
        Ok(())
    }
}

/// Copies the rows of one (clipped) chunk that fall in `[r0, r1)` into `out`, which holds rows
/// `[r0, r1)` of an array of `shape` in C order.
#[allow(clippy::too_many_arguments)]
fn copy_chunk_rows(
    out: &mut [u8],
    r0: u64,
    r1: u64,
    shape: &[u64],
    chunk: &[u64],
    coords: &[u64],
    cs: &[u64],
    data: &[u8],
    elem: usize,
) {
    let rank = shape.len();
    let origin: Vec<u64> = coords.iter().zip(chunk).map(|(c, k)| c * k).collect();
    let lo = r0.max(origin[0]);
    let hi = r1.min(origin[0] + cs[0]);
    if rank == 1 {
        let (s, e) = ((lo - origin[0]) as usize * elem, (hi - origin[0]) as usize * elem);
        let o = (lo - r0) as usize * elem;
        out[o..o + (e - s)].copy_from_slice(&data[s..e]);
        return;
    }
    // Strides (in elements) of the output block and of the clipped chunk.
    let mut out_stride = vec![1u64; rank];
    let mut src_stride = vec![1u64; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        out_stride[d] = out_stride[d + 1] * shape[d + 1];
        src_stride[d] = src_stride[d + 1] * cs[d + 1];
    }
    let run = cs[rank - 1] as usize * elem;
    // Iterate over every index of the chunk's dims 1..rank-1 (the last dim is one run).
    let mid: Vec<u64> = cs[1..rank - 1].to_vec();
    let mid_count: u64 = mid.iter().product();
    for r in lo..hi {
        let mut idx = vec![0u64; mid.len()];
        for _ in 0..mid_count.max(1) {
            let mut o = (r - r0) * out_stride[0];
            let mut s = (r - origin[0]) * src_stride[0];
            for (k, i) in idx.iter().enumerate() {
                let d = k + 1;
                o += (origin[d] + i) * out_stride[d];
                s += i * src_stride[d];
            }
            o += origin[rank - 1];
            let (o, s) = (o as usize * elem, s as usize * elem);
            out[o..o + run].copy_from_slice(&data[s..s + run]);
            crate::util::advance_c_order(&mut idx, &mid);
        }
    }
}

#[cfg(test)]
#[path = "array_tests.rs"]
pub(crate) mod tests;
