//! Where an array's bytes lie — in the store file ([`Arr::packed_spans`]) or in decoded chunks
//! of the cache ([`Arr::cached_slices`]) — for readers that send them from there instead of
//! copying them into a reply first.

use crate::cache::Slice;
use crate::storage::{FileSpan, StorageResult};

use super::Arr;

impl Arr {
    /// Where bytes `[b0, b1)` of this array's packed C-order data lie in the store file, as
    /// spans in order (neighbours merged) — when every chunk they touch is stored packed in a
    /// local file ([`crate::storage::ArraySource::packed_span`]) and they take at most `max`
    /// spans. `None` otherwise: the caller reads the bytes.
    pub fn packed_spans(&self, b0: u64, b1: u64, max: usize) -> StorageResult<Option<Vec<FileSpan>>> {
        let src = self.source();
        let grid = &self.meta().grid;
        if !src.packed_in_place() || grid.shape.is_empty() || b0 >= b1 {
            return Ok(None);
        }
        // Chunks spanning every dimension but the first: chunk k holds rows [k*c, (k+1)*c).
        if grid.chunks_per_dim().iter().skip(1).any(|&n| n != 1) {
            return Ok(None);
        }
        let Some(Band { chunk_bytes, s0, s1, .. }) = self.band(b0, b1) else { return Ok(None) };
        let mut coords = vec![0u64; grid.shape.len()];
        let mut out: Vec<FileSpan> = Vec::new();
        let mut at = s0;
        while at < s1 {
            coords[0] = at / chunk_bytes;
            let from = at % chunk_bytes;
            let len = (s1 - at).min(chunk_bytes - from);
            let Some(span) = src.packed_span(grid.index(&coords), from, len)? else { return Ok(None) };
            let n = out.len();
            match out.last_mut() {
                Some(last) if last.offset.checked_add(last.len) == Some(span.offset) => last.len += len,
                _ if n == max => return Ok(None),
                _ => out.push(span),
            }
            at += len;
        }
        Ok(Some(out))
    }

    /// Bytes `[b0, b1)` of this array's packed C-order data as slices of its decoded chunks, in
    /// order (loading them into the cache as a read does), when each chunk holds whole rows
    /// and the bytes touch at most `max` chunks. `None` otherwise, and for arrays whose chunks
    /// are read in place from the file (their bytes are spliced or copied from there).
    pub fn cached_slices(&self, b0: u64, b1: u64, max: usize) -> StorageResult<Option<Vec<Slice>>> {
        let grid = &self.meta().grid;
        if self.source().packed_in_place() || grid.shape.is_empty() || b0 >= b1 {
            return Ok(None);
        }
        if grid.chunks_per_dim().iter().skip(1).any(|&n| n != 1) {
            return Ok(None);
        }
        let Some(Band { row, chunk_bytes, s0, s1 }) = self.band(b0, b1) else { return Ok(None) };
        if (s1 - 1) / chunk_bytes - s0 / chunk_bytes >= max as u64 {
            return Ok(None);
        }
        self.advise_missing(s0 / row, s1.div_ceil(row))?;
        let mut coords = vec![0u64; grid.shape.len()];
        let mut out = Vec::new();
        let mut at = s0;
        while at < s1 {
            coords[0] = at / chunk_bytes;
            let from = at % chunk_bytes;
            let len = (s1 - at).min(chunk_bytes - from);
            let chunk = self.checked_chunk(&coords, grid.index(&coords))?;
            let (a, b) = (from as usize, (from + len) as usize);
            if b > chunk.len() {
                return Ok(None);
            }
            out.push((chunk, a..b));
            at += len;
        }
        Ok(Some(out))
    }

    /// Where bytes `[b0, b1)` of this array (a window: of its rows) lie in the stored array's
    /// packed bytes, with its row and chunk-band sizes; `None` on overflow or past the end.
    fn band(&self, b0: u64, b1: u64) -> Option<Band> {
        let row = self.row_elems().checked_mul(self.elem_size() as u64).filter(|&r| r > 0)?;
        let chunk_bytes = self.meta().grid.chunk.first()?.checked_mul(row).filter(|&c| c > 0)?;
        let base = self.offset().checked_mul(row)?;
        let (s0, s1) = (base.checked_add(b0)?, base.checked_add(b1)?);
        (b1 <= self.rows().saturating_mul(row)).then_some(Band { row, chunk_bytes, s0, s1 })
    }
}

/// A byte range of an array's packed data, as [`Arr::band`] finds it.
struct Band {
    /// Bytes per row.
    row: u64,
    /// Bytes per chunk of rows.
    chunk_bytes: u64,
    /// The range in the stored array's packed bytes.
    s0: u64,
    s1: u64,
}
