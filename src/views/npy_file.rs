//! `.npy` files over any row-addressable byte source: the header, then rows in C order.

use std::sync::Arc;

use super::format::npy_header::header;
use super::{read_header_body_into, slice, FileContent, Sliced, Spliced, ViewResult};
use crate::storage::FileSpan;
use crate::model::Arr;
use crate::storage::NumType;

/// Fixed-width rows of bytes (rows of a matrix, elements of a 1-D array).
///
/// To add a row source, implement [`RowBytes::read_rows`]; override
/// [`RowBytes::read_rows_into`] when the rows can be written straight into the caller's buffer
/// (the reply buffer of a read: no intermediate copy) and [`RowBytes::prefetch_rows`] when
/// read-ahead can load what the rows need without rendering them.
pub trait RowBytes: Send + Sync {
    /// Number of rows.
    fn n_rows(&self) -> u64;
    /// Bytes per row.
    fn row_bytes(&self) -> u64;
    /// Packed bytes of rows `[r0, r1)`.
    fn read_rows(&self, r0: u64, r1: u64) -> ViewResult<Vec<u8>>;

    /// Appends the packed bytes of rows `[r0, r1)` to `out`.
    fn read_rows_into(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        out.extend_from_slice(&self.read_rows(r0, r1)?);
        Ok(())
    }

    /// Loads what rows `[r0, r1)` need into the cache (read-ahead), without keeping the rows.
    fn prefetch_rows(&self, r0: u64, r1: u64) -> ViewResult<()> {
        let mut scratch = Vec::new();
        self.read_rows_into(r0, r1, &mut scratch)
    }

    /// False when [`RowBytes::prefetch_rows`] loads nothing (see [`FileContent::reads_ahead`]).
    /// Default: true.
    fn reads_ahead(&self) -> bool {
        true
    }

    /// Rows `[r0, r1)` were just read by a sequential reader moving on past `r1`: what only
    /// they needed may leave the cache (see [`FileContent::drop_behind`]). Default: nothing.
    fn drop_behind_rows(&self, _r0: u64, _r1: u64) {}

    /// Bytes `[b0, b1)` of the concatenated rows as spans of the store file, when they are stored
    /// as served (see [`FileContent::read_spans`]); at most `max` spans. Default: `None`.
    fn packed_spans(&self, _b0: u64, _b1: u64, _max: usize) -> ViewResult<Option<Vec<FileSpan>>> {
        Ok(None)
    }

    /// Bytes `[b0, b1)` of the concatenated rows as slices of cached chunks (see
    /// [`FileContent::read_slices`]); at most `max` slices. Default: `None`.
    fn cached_slices(&self, _b0: u64, _b1: u64, _max: usize) -> ViewResult<Option<Vec<crate::cache::Slice>>> {
        Ok(None)
    }
}

/// Appends bytes `[b0, b1)` of the concatenated rows of `rows` to `out`: whole rows straight
/// into `out`, the partial rows at either end through a one-row scratch buffer.
pub fn read_row_range_into(rows: &dyn RowBytes, b0: u64, b1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
    let rb = rows.row_bytes();
    if b0 >= b1 || rb == 0 {
        return Ok(());
    }
    let (mut r, last) = (b0 / rb, (b1 - 1) / rb);
    let partial = |r: u64, s: u64, e: u64, out: &mut Vec<u8>| -> ViewResult<()> {
        let mut row = Vec::with_capacity(rb as usize);
        rows.read_rows_into(r, r + 1, &mut row)?;
        out.extend_from_slice(slice(&row, s, (e - s) as usize));
        Ok(())
    };
    if b0 % rb != 0 || (r == last && b1 % rb != 0) {
        // The first row is cut (at its start, or at its end when it is also the last row).
        let end = if r == last { b1 - r * rb } else { rb };
        partial(r, b0 - r * rb, end, out)?;
        r += 1;
    }
    if r > last {
        return Ok(());
    }
    let full_end = if b1 % rb == 0 { last + 1 } else { last };
    if r < full_end {
        rows.read_rows_into(r, full_end, out)?;
    }
    if full_end == last && b1 % rb != 0 {
        partial(last, 0, b1 - last * rb, out)?;
    }
    Ok(())
}

/// A `.npy` file: `numpy.save` header, then the rows.
pub struct NpyFile {
    header: Vec<u8>,
    rows: Arc<dyn RowBytes>,
    io_size: Option<u32>,
}

impl NpyFile {
    /// A `.npy` of `shape` and element type `t` whose data comes from `rows`.
    pub fn new(t: NumType, shape: &[u64], rows: Arc<dyn RowBytes>) -> Self {
        NpyFile { header: header(t.npy_descr(), shape), rows, io_size: None }
    }

    /// The same file, telling readers to read `n` bytes at a time (see [`FileContent::io_size`]).
    pub fn with_io_size(self, n: u32) -> Self {
        NpyFile { io_size: Some(n), ..self }
    }

    /// The body bytes (after the header) that a read of `len` bytes at `offset` covers, if any.
    fn body_range(&self, offset: u64, len: usize) -> Option<(u64, u64)> {
        let hlen = self.header.len() as u64;
        let end = offset.saturating_add(len as u64).min(hlen + self.rows.n_rows() * self.rows.row_bytes());
        let (d0, d1) = (offset.saturating_sub(hlen), end.saturating_sub(hlen));
        (d1 > d0).then_some((d0, d1))
    }

    /// The header's bytes from `offset` on (none past it).
    fn head_from(&self, offset: u64) -> Vec<u8> {
        slice(&self.header, offset, (self.header.len() as u64).saturating_sub(offset) as usize).to_vec()
    }

    /// A `.npy` holding an array exactly as stored (any rank).
    pub fn of_array(arr: &Arr) -> Option<Self> {
        let t = arr.num_type()?;
        Some(Self::new(t, arr.shape(), Arc::new(ArrayRows(arr.clone()))))
    }
}

impl FileContent for NpyFile {
    fn size(&self) -> ViewResult<u64> {
        Ok(self.header.len() as u64 + self.rows.n_rows() * self.rows.row_bytes())
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(offset, len, &mut out)?;
        Ok(out)
    }

    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> ViewResult<()> {
        let body = self.rows.n_rows() * self.rows.row_bytes();
        read_header_body_into(&self.header, body, offset, len, out, |d0, d1, out| {
            read_row_range_into(&*self.rows, d0, d1, out)
        })
    }

    fn read_spans(&self, offset: u64, len: usize, max_spans: usize) -> ViewResult<Option<Spliced>> {
        let Some((d0, d1)) = self.body_range(offset, len) else { return Ok(None) };
        let Some(spans) = self.rows.packed_spans(d0, d1, max_spans)? else { return Ok(None) };
        Ok(Some(Spliced { head: self.head_from(offset), spans }))
    }

    fn read_slices(&self, offset: u64, len: usize, max_parts: usize) -> ViewResult<Option<Sliced>> {
        let Some((d0, d1)) = self.body_range(offset, len) else { return Ok(None) };
        let Some(parts) = self.rows.cached_slices(d0, d1, max_parts)? else { return Ok(None) };
        Ok(Some(Sliced { head: self.head_from(offset), parts }))
    }

    fn reads_ahead(&self) -> bool {
        self.rows.reads_ahead()
    }

    fn io_size(&self) -> Option<u32> {
        self.io_size
    }

    fn drop_behind(&self, offset: u64, len: usize) {
        let (rb, hlen) = (self.rows.row_bytes().max(1), self.header.len() as u64);
        let end = offset.saturating_add(len as u64).saturating_sub(hlen);
        // Only rows read to their end are passed.
        self.rows.drop_behind_rows(offset.saturating_sub(hlen) / rb, end / rb);
    }

    fn prefetch(&self, offset: u64, len: usize) -> ViewResult<usize> {
        let rb = self.rows.row_bytes().max(1);
        let hlen = self.header.len() as u64;
        let size = hlen + self.rows.n_rows() * rb;
        let end = offset.saturating_add(len as u64).min(size);
        if offset >= end {
            return Ok(0);
        }
        let (d0, d1) = (offset.saturating_sub(hlen), end.saturating_sub(hlen));
        if d1 > d0 {
            self.rows.prefetch_rows(d0 / rb, d1.div_ceil(rb))?;
        }
        Ok((end - offset) as usize)
    }
}

/// Rows of a stored array (first axis; a scalar is one row).
pub struct ArrayRows(pub Arr);

impl RowBytes for ArrayRows {
    fn n_rows(&self) -> u64 {
        if self.0.shape().is_empty() {
            1
        } else {
            self.0.rows()
        }
    }

    fn row_bytes(&self) -> u64 {
        self.0.row_elems() * self.0.elem_size() as u64
    }

    fn read_rows(&self, r0: u64, r1: u64) -> ViewResult<Vec<u8>> {
        self.0.read_rows(r0, r1)
    }

    fn read_rows_into(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        self.0.read_rows_into(r0, r1, out)
    }

    fn prefetch_rows(&self, r0: u64, r1: u64) -> ViewResult<()> {
        self.0.prefetch_rows(r0, r1)
    }

    fn drop_behind_rows(&self, r0: u64, r1: u64) {
        if !self.0.shape().is_empty() {
            self.0.drop_behind(r0, r1);
        }
    }

    fn packed_spans(&self, b0: u64, b1: u64, max: usize) -> ViewResult<Option<Vec<FileSpan>>> {
        self.0.packed_spans(b0, b1, max)
    }

    fn cached_slices(&self, b0: u64, b1: u64, max: usize) -> ViewResult<Option<Vec<crate::cache::Slice>>> {
        self.0.cached_slices(b0, b1, max)
    }
}

/// Values of a nullable array with masked slots zeroed.
pub struct MaskedRows {
    /// The values.
    pub values: Arr,
    /// Bool mask, true = missing.
    pub mask: Arr,
}

impl RowBytes for MaskedRows {
    fn n_rows(&self) -> u64 {
        self.values.rows()
    }

    fn row_bytes(&self) -> u64 {
        self.values.elem_size() as u64
    }

    fn read_rows(&self, r0: u64, r1: u64) -> ViewResult<Vec<u8>> {
        let mut v = self.values.read_rows(r0, r1)?;
        let m = self.mask.read_rows(r0, r1)?;
        let w = self.values.elem_size();
        for (i, &masked) in m.iter().enumerate() {
            if masked != 0 {
                v[i * w..(i + 1) * w].fill(0);
            }
        }
        Ok(v)
    }
}

/// Keeps rendered row blocks of an expensive [`RowBytes`] (densified sparse rows) in the cache,
/// so read-ahead work is reused by the reader instead of being redone.
pub struct CachedRows {
    inner: Arc<dyn RowBytes>,
    cache: Arc<crate::cache::ChunkCache>,
    id: u64,
    block_rows: u64,
}

impl CachedRows {
    /// Blocks of about `block_bytes` of `inner`'s output, cached in `cache`.
    pub fn new(inner: Arc<dyn RowBytes>, cache: Arc<crate::cache::ChunkCache>, block_bytes: u64) -> Self {
        let block_rows = (block_bytes / inner.row_bytes().max(1)).max(1);
        CachedRows { inner, id: cache.ids.file(), cache, block_rows }
    }
}

impl RowBytes for CachedRows {
    fn n_rows(&self) -> u64 {
        self.inner.n_rows()
    }

    fn row_bytes(&self) -> u64 {
        self.inner.row_bytes()
    }

    fn read_rows(&self, r0: u64, r1: u64) -> ViewResult<Vec<u8>> {
        let mut out = Vec::with_capacity(((r1.saturating_sub(r0)) * self.row_bytes()) as usize);
        self.read_rows_into(r0, r1, &mut out)?;
        Ok(out)
    }

    fn read_rows_into(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        let rb = self.row_bytes();
        if r0 >= r1 {
            return Ok(());
        }
        let n = self.n_rows();
        for b in r0 / self.block_rows..=(r1 - 1) / self.block_rows {
            let (b0, b1) = (b * self.block_rows, ((b + 1) * self.block_rows).min(n));
            let block = self
                .cache
                .bytes(crate::cache::Key::Rendered(self.id, b), || self.inner.read_rows(b0, b1))?;
            let (s, e) = (r0.max(b0) - b0, r1.min(b1) - b0);
            out.extend_from_slice(slice(&block, s * rb, ((e - s) * rb) as usize));
        }
        Ok(())
    }
}

/// Integer values minus `shift` (the `indptr` of a row window starts at 0, as scipy's does).
pub struct ShiftedRows {
    /// The stored integers.
    pub arr: Arr,
    /// Subtracted from every value.
    pub shift: i64,
}

impl RowBytes for ShiftedRows {
    fn n_rows(&self) -> u64 {
        self.arr.rows()
    }

    fn row_bytes(&self) -> u64 {
        self.arr.elem_size() as u64
    }

    fn read_rows(&self, r0: u64, r1: u64) -> ViewResult<Vec<u8>> {
        let mut bytes = self.arr.read_rows(r0, r1)?;
        if self.shift == 0 {
            return Ok(bytes);
        }
        let t = self.arr.num_type().unwrap_or(NumType::I64);
        let vals = self.arr.read_i64(r0, r1)?;
        let w = t.size();
        for (dst, v) in bytes.chunks_exact_mut(w).zip(vals) {
            let x = (v - self.shift).to_le_bytes();
            dst.copy_from_slice(&x[..w]);
        }
        Ok(bytes)
    }
}
