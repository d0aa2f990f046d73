//! Raw (file-layout) bytes of one HDF5 dataset: whole chunks through the filter pipeline,
//! ranges of contiguous data, flat element ranges of string datasets, all read with positioned
//! reads sized from checked metadata ([`super::file::DataFile`]).

use std::collections::HashMap;

use super::chunk_index;
use super::chunks::{self, ChunkTable};
use super::dtype::raw_mem_type;
use super::file::MAX_READ_BYTES;
use super::layout::Storage;
use super::source::H5Source;
use super::library::{self, Region};
use super::vlen;
use crate::storage::filters::{Pipeline, MAX_DECODED_BYTES};
use crate::storage::{FileSpan, StorageError, StorageResult};
use crate::util::RetryOnce;

impl H5Source {
    /// The chunk table, listed on first use (a failure is not kept: the next read retries):
    /// read from the file without the library when its index is a version-1 B-tree
    /// ([`chunk_index`]), so that no lock is held while a remote file's index is fetched; else
    /// by the library.
    pub(super) fn table<'a>(&self, cell: &'a RetryOnce<ChunkTable>) -> StorageResult<&'a ChunkTable> {
        cell.get_or_try_init(|| {
            if let (Some(header), Some(sizes)) = (self.header, self.ctx.sizes) {
                let _gate = self.enter()?;
                if let Some(t) = chunk_index::read(&self.ctx.data, sizes, header, &self.meta.grid, &self.meta.path) {
                    log::debug!("{}: chunk table with {} chunks (read directly)", self.meta.path, t.len());
                    return Ok(ChunkTable::from_map(t));
                }
            }
            chunks::build(self.dset()?.id(), &self.meta.grid, &self.meta.path).map_err(|e| StorageError::Hdf5 {
                path: self.meta.path.clone(),
                reason: e.to_string(),
            })
        })
    }

    /// Asks the kernel to start reading the stored bytes of chunks `chunks` (read-ahead): their
    /// byte ranges, merged where adjacent, get `POSIX_FADV_WILLNEED`.
    pub(super) fn advise_chunks(&self, chunks: &[u64]) {
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(chunks.len());
        match &self.storage {
            Storage::Chunked { table, .. } => {
                let Ok(t) = self.table(table) else { return };
                ranges.extend(chunks.iter().filter_map(|&i| t.get(i)).map(|l| (l.addr, l.size)));
            }
            Storage::Contiguous { addr: Some(addr) } => {
                let grid = &self.meta.grid;
                let elem = self.info.file_size() as u64;
                for &i in chunks {
                    let coords = grid.coords(i);
                    let n: u64 = grid.clipped_shape(&coords).iter().product();
                    if let Some(off) = self.contiguous_offset(&coords) {
                        ranges.push((addr.saturating_add(off), n.saturating_mul(elem)));
                    }
                }
            }
            _ => return,
        }
        ranges.sort_unstable();
        let mut merged: Option<(u64, u64)> = None;
        for (a, l) in ranges {
            merged = match merged {
                Some((ma, ml)) if a <= ma + ml => Some((ma, (a + l).max(ma + ml) - ma)),
                Some(m) => {
                    self.ctx.data.advise(m.0, m.1);
                    Some((a, l))
                }
                None => Some((a, l)),
            };
        }
        if let Some(m) = merged {
            self.ctx.data.advise(m.0, m.1);
        }
    }

    /// A full chunk of `elem`-byte elements of a chunked dataset, in file layout. An unfiltered
    /// chunk is read with one positioned read straight into the returned buffer.
    pub(super) fn chunked_full(
        &self,
        pipeline: &Result<Pipeline, String>,
        cell: &RetryOnce<ChunkTable>,
        index: u64,
        elem: usize,
    ) -> StorageResult<Vec<u8>> {
        let pipeline = pipeline
            .as_ref()
            .map_err(|e| StorageError::unsupported(&self.meta.path, e.clone()))?;
        let expected = self.chunk_bytes(elem)?;
        let Some(loc) = self.table(cell)?.get(index) else {
            return Ok(self.filled(expected / elem.max(1)));
        };
        let what = format!("chunk {index}");
        let stored = self.ctx.data.read(loc.addr, loc.size, &self.meta.path, &what)?;
        pipeline
            .decode(stored, loc.mask, expected)
            .map_err(|e| self.corrupt(format!("chunk {index} at {}: {e}", loc.addr)))
    }

    /// [`ArraySource::read_packed_into`](crate::storage::ArraySource::read_packed_into) for a
    /// source whose chunks are stored packed (`in_place`): one positioned read into `dst`.
    pub(super) fn packed_into(&self, index: u64, from: u64, dst: &mut [u8]) -> StorageResult<bool> {
        let Some(start) = self.packed_start(index, from, dst.len() as u64)? else { return Ok(false) };
        self.ctx.data.read_into(start, dst, &self.meta.path, "chunk")?;
        Ok(true)
    }

    /// [`ArraySource::packed_span`](crate::storage::ArraySource::packed_span) for a source whose
    /// chunks are stored packed (`in_place`).
    pub(super) fn packed_span_of(&self, index: u64, from: u64, len: u64) -> StorageResult<Option<FileSpan>> {
        let Some(start) = self.packed_start(index, from, len)? else { return Ok(None) };
        self.ctx.data.span(start, len, &self.ctx.gate, &self.meta.path, "chunk")
    }

    /// File address of bytes `[from, from + len)` of chunk `index` as stored packed; `None` when
    /// the chunk is not stored, not stored packed, or the range leaves it.
    fn packed_start(&self, index: u64, from: u64, len: u64) -> StorageResult<Option<u64>> {
        let grid = &self.meta.grid;
        if index >= grid.num_chunks() {
            return Ok(None);
        }
        let coords = grid.coords(index);
        let elem = self.info.file_size() as u64;
        let clipped = grid.clipped_shape(&coords).iter().try_fold(elem, |a, d| a.checked_mul(*d));
        let end = from.checked_add(len);
        if !matches!((clipped, end), (Some(c), Some(e)) if e <= c) {
            return Ok(None);
        }
        Ok(match &self.storage {
            Storage::Chunked { table, .. } => {
                let Some(loc) = self.table(table)?.get(index) else { return Ok(None) };
                if loc.size != self.chunk_bytes(elem as usize)? as u64 {
                    return Ok(None);
                }
                loc.addr.checked_add(from)
            }
            Storage::Contiguous { addr: Some(addr) } => {
                self.contiguous_offset(&coords).and_then(|o| o.checked_add(*addr)).and_then(|a| a.checked_add(from))
            }
            _ => None,
        })
    }

    /// `len` bytes of contiguous data starting `offset` bytes into the block at `addr` (fill
    /// values when the block was never allocated).
    fn contiguous_bytes(&self, addr: Option<u64>, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        let Some(addr) = addr else {
            let n = len / self.fill.len().max(1) as u64;
            if len > MAX_READ_BYTES {
                return Err(self.corrupt(format!("{len} bytes of fill value is too much to read")));
            }
            return Ok(self.filled(n as usize));
        };
        let Some(start) = addr.checked_add(offset) else {
            return Err(self.corrupt("contiguous data offset overflows"));
        };
        self.ctx.data.read(start, len, &self.meta.path, "contiguous data")
    }

    /// Byte offset of chunk `coords` of a contiguous dataset (whole trailing dimensions) from
    /// the start of its data, `None` on overflow.
    fn contiguous_offset(&self, coords: &[u64]) -> Option<u64> {
        let grid = &self.meta.grid;
        let first = coords.first().map_or(0, |c| c * grid.chunk[0]);
        let row: u64 = grid.shape.iter().skip(1).product();
        first.checked_mul(row)?.checked_mul(self.info.file_size() as u64)
    }

    /// The clipped chunk `coords` of a contiguous dataset, in file layout.
    pub(super) fn contiguous_clipped(&self, addr: Option<u64>, coords: &[u64]) -> StorageResult<Vec<u8>> {
        let elem = self.info.file_size() as u64;
        let n: u64 = self.meta.grid.clipped_shape(coords).iter().product();
        match (self.contiguous_offset(coords), n.checked_mul(elem)) {
            (Some(o), Some(l)) => self.contiguous_bytes(addr, o, l),
            _ => Err(self.corrupt("contiguous data offset overflows")),
        }
    }

    /// The clipped chunk `coords` read through the library, in file layout.
    pub(super) fn library_clipped(&self, coords: &[u64]) -> StorageResult<Vec<u8>> {
        let grid = &self.meta.grid;
        let start: Vec<u64> = coords.iter().zip(&grid.chunk).map(|(c, k)| c * k).collect();
        let count = grid.clipped_shape(coords);
        let dset = self.dset()?;
        let mt = raw_mem_type(self.file_type(&dset)?.id(), &self.info, &self.meta.path)?;
        let region = Region {
            start: &start,
            count: &count,
        };
        library::read_bytes(
            dset.id(),
            mt.id(),
            self.info.file_size(),
            &region,
            &self.meta.path,
        )
    }

    /// Flat string elements `[start, end)` decoded from the dataset's raw bytes, each passed
    /// to `f` in order.
    pub(super) fn raw_strings(
        &self,
        layout: vlen::Layout,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(&str),
    ) -> StorageResult<()> {
        let total: u64 = self.meta.shape.iter().product();
        if start > end || end > total {
            return Err(self.corrupt(format!("string range {start}..{end} outside 0..{total}")));
        }
        if start == end {
            return Ok(());
        }
        let raw = self.raw_elements(start, end, layout.element_size())?;
        vlen::decode_each(&raw, layout, &self.ctx.data, &self.meta.path, start, f)
    }

    /// Stored bytes of flat elements `[start, end)` (in range, non-empty) of `elem` bytes each.
    fn raw_elements(&self, start: u64, end: u64, elem: usize) -> StorageResult<Vec<u8>> {
        self.raw_elements_of(&self.storage, start, end, elem)
    }

    /// [`H5Source::raw_elements`] of the dataset stored as `storage`.
    pub(super) fn raw_elements_of(&self, storage: &Storage, start: u64, end: u64, elem: usize) -> StorageResult<Vec<u8>> {
        let elem64 = elem as u64;
        let len = (end - start)
            .checked_mul(elem64)
            .filter(|l| *l <= MAX_READ_BYTES)
            .ok_or_else(|| self.corrupt(format!("{} strings are too many to read at once", end - start)))?;
        match storage {
            Storage::Contiguous { addr } => self.contiguous_bytes(*addr, start * elem64, len),
            Storage::Chunked { pipeline, table } => {
                let mut out = Vec::with_capacity(len as usize);
                let mut held = ChunkHold::default();
                let grid = &self.meta.grid;
                let mut idx = unravel(start, &grid.shape);
                let mut coords = vec![0u64; idx.len()];
                for _ in start..end {
                    let mut local = 0u64;
                    for (d, (i, k)) in idx.iter().zip(&grid.chunk).enumerate() {
                        coords[d] = i / k;
                        local = local * k + i % k;
                    }
                    let ci = grid.index(&coords);
                    let chunk = held.get(ci, || self.chunked_full(pipeline, table, ci, elem))?;
                    let at = (local * elem64) as usize;
                    let Some(bytes) = chunk.get(at..at + elem) else {
                        return Err(self.corrupt(format!("chunk {ci} is shorter than its shape")));
                    };
                    out.extend_from_slice(bytes);
                    crate::util::advance_c_order(&mut idx, &grid.shape);
                }
                Ok(out)
            }
            Storage::Library => Err(self.corrupt("no raw bytes for this layout")),
        }
    }
}

/// Decoded chunks kept during one string read, at most [`MAX_DECODED_BYTES`] at a time.
#[derive(Default)]
struct ChunkHold {
    chunks: HashMap<u64, Vec<u8>>,
    bytes: usize,
}

impl ChunkHold {
    /// Chunk `index`, decoded by `load` unless held.
    fn get(
        &mut self,
        index: u64,
        load: impl FnOnce() -> StorageResult<Vec<u8>>,
    ) -> StorageResult<&[u8]> {
        if !self.chunks.contains_key(&index) {
            let c = load()?;
            if self.bytes + c.len() > MAX_DECODED_BYTES {
                self.chunks.clear();
                self.bytes = 0;
            }
            self.bytes += c.len();
            self.chunks.insert(index, c);
        }
        Ok(self.chunks.get(&index).map_or(&[][..], Vec::as_slice))
    }
}

/// The multi-index (C order) of flat element `flat` of an array of `shape`.
fn unravel(flat: u64, shape: &[u64]) -> Vec<u64> {
    let mut idx = vec![0u64; shape.len()];
    let mut rem = flat;
    for d in (0..shape.len()).rev() {
        let s = shape[d].max(1);
        idx[d] = rem % s;
        rem /= s;
    }
    idx
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unravel_and_advance_walk_c_order() {
        let shape = [2u64, 3, 2];
        let mut idx = unravel(0, &shape);
        for flat in 0..12 {
            assert_eq!(idx, unravel(flat, &shape), "{flat}");
            crate::util::advance_c_order(&mut idx, &shape);
        }
        assert_eq!(unravel(7, &shape), vec![1, 0, 1]);
        assert_eq!(unravel(0, &[]), Vec::<u64>::new());
    }
}
