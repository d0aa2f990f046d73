//! Where an array's bytes lie in the store file, for readers that move them with `splice`
//! instead of copying them ([`Arr::packed_spans`]).

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
        let row = self.row_elems().checked_mul(self.elem_size() as u64).filter(|&r| r > 0);
        let Some(row) = row else { return Ok(None) };
        let Some(chunk_bytes) = grid.chunk[0].checked_mul(row).filter(|&c| c > 0) else { return Ok(None) };
        let base = self.offset().checked_mul(row);
        let bounds = base.and_then(|base| Some((base.checked_add(b0)?, base.checked_add(b1)?)));
        let Some((s0, s1)) = bounds.filter(|_| b1 <= self.rows().saturating_mul(row)) else { return Ok(None) };
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
}
