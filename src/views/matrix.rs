//! Dense rows of sparse matrices, for `dense.npy` (and the text views built on it).
//!
//! CSR rows are densified straight from the rows' `indptr` range. CSC matrices are densified in
//! bands of rows, each kept in the cache; a band costs about the entries it holds when the
//! columns' indices are sorted ([`csc`]), else one pass over the nonzeros.

mod csc;
mod scatter;

use std::sync::Arc;

use super::npy_file::{ArrayRows, CachedRows, RowBytes};
use super::ViewResult;
use crate::cache::{ChunkCache, Key};
use crate::model::{Matrix, Sparse, SparseFormat};
use crate::storage::{NumType, StorageError};
use scatter::{accumulate, add_slots};

/// The stored entries of a run of major-axis lines: `ptr` as read (entry positions, `p0` the
/// first), their minor indices and value bytes.
struct Lines {
    ptr: Vec<i64>,
    p0: u64,
    idx: Vec<i64>,
    data: Vec<u8>,
}

/// Target size of one densified CSC band.
const CSC_BAND_BYTES: u64 = 8 << 20;
/// CSC matrices with at most this many columns are densified per read, without bands.
const DIRECT_COLS: u64 = 8;
/// Nonzeros processed per step while scanning.
const SCAN_STEP: u64 = 1 << 20;

/// Dense rows of a CSR or CSC matrix.
pub struct SparseRows {
    m: Sparse,
    t: NumType,
    cache: Arc<ChunkCache>,
    id: u64,
    /// Target bytes of one CSC band.
    band_bytes: u64,
    /// CSC only: sortedness of the columns and the sequential-band cursor.
    csc: csc::CscState,
}

impl SparseRows {
    /// Dense rows of `m`, caching CSC bands in `cache`.
    pub fn new(m: Sparse, cache: Arc<ChunkCache>) -> Option<Self> {
        let t = m.data.num_type()?;
        Some(SparseRows { m, t, id: cache.ids.file(), cache, band_bytes: CSC_BAND_BYTES, csc: csc::CscState::default() })
    }

    fn corrupt(&self, why: String) -> StorageError {
        StorageError::corrupt(self.m.indptr.path().rsplit_once('/').map(|p| p.0).unwrap_or(""), why)
    }

    /// Maps a stored minor index to its column/row in the view, or `None` when filtered out.
    fn minor_pos(&self, map: Option<&[u8]>, i: i64, extent: u64) -> Result<Option<usize>, StorageError> {
        if i < 0 {
            return Err(self.corrupt(format!("negative index {i}")));
        }
        let i = i as u64;
        match self.m.minor_position(map, i, extent) {
            Ok(p) => Ok(p.map(|p| p as usize)),
            Err(i) => Err(self.corrupt(format!("index {i} out of range (extent {extent})"))),
        }
    }

    /// `indptr[a..=b]` relative to the windowed data, validated.
    fn pointers(&self, a: u64, b: u64) -> ViewResult<Vec<i64>> {
        let mut ptr = self.m.indptr.read_i64(a, b + 1)?;
        let n = self.m.indices.len() as i64;
        let mut prev = 0i64;
        for p in ptr.iter_mut() {
            *p -= self.m.indptr_base;
            if *p < prev || *p > n {
                return Err(self.corrupt(format!("indptr value {} is out of order or past the data", *p + self.m.indptr_base)));
            }
            prev = *p;
        }
        Ok(ptr)
    }

    /// The stored entries of major-axis lines `[a, b)` (in the view's coordinates).
    fn lines(&self, a: u64, b: u64) -> ViewResult<Lines> {
        let (data, indices) = (&self.m.data, &self.m.indices);
        let ptr = if data.index_loaded() && indices.index_loaded() {
            self.pointers(a, b)?
        } else {
            // First use: the three arrays' chunk indexes load at once (remotely, each takes
            // round trips), not one after the other.
            std::thread::scope(|s| {
                s.spawn(|| data.load_index());
                s.spawn(|| indices.load_index());
                self.pointers(a, b)
            })?
        };
        let (p0, p1) = (ptr[0] as u64, ptr[ptr.len() - 1] as u64);
        // The values are fetched while the indices are read (one round trip, not two, remotely).
        self.m.data.will_need_rows(p0, p1);
        let idx = self.m.indices.read_i64(p0, p1)?;
        let data = self.m.data.read_flat(p0, p1)?;
        Ok(Lines { ptr, p0, idx, data })
    }

    /// Calls `f(major, minor, value bytes)` for every stored entry of major-axis lines `[a, b)`
    /// (in the view's coordinates), in storage order.
    pub fn for_each_entry(
        &self,
        a: u64,
        b: u64,
        minor_extent: u64,
        f: impl FnMut(u64, u64, &[u8]),
    ) -> ViewResult<()> {
        let lines = self.lines(a, b)?;
        self.each_of(&lines, a, minor_extent, f)
    }

    /// [`SparseRows::for_each_entry`] over entries already read (`lines`, starting at line `a`).
    fn each_of(&self, lines: &Lines, a: u64, minor_extent: u64, mut f: impl FnMut(u64, u64, &[u8])) -> ViewResult<()> {
        let w = self.t.size();
        let Lines { ptr, p0, idx, data } = lines;
        let map = self.m.minor_map()?;
        for line in 0..ptr.len() - 1 {
            let (s, e) = ((ptr[line] as u64 - p0) as usize, (ptr[line + 1] as u64 - p0) as usize);
            for k in s..e {
                if let Some(m) = self.minor_pos(map.as_ref().map(|b| b.as_slice()), idx[k], minor_extent)? {
                    f(a + line as u64, m as u64, &data[k * w..][..w]);
                }
            }
        }
        Ok(())
    }

    /// Densifies CSR rows `[r0, r1)` straight into `out` (appended).
    fn csr_rows_into(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        let cols = self.m.shape[1];
        let (t, w) = (self.t, self.t.size());
        let start = out.len();
        out.resize(start + ((r1 - r0) * cols) as usize * w, 0);
        let dst = &mut out[start..];
        let lines = self.lines(r0, r1)?;
        // All columns of the stored matrix, every index in range: each row's values are added
        // at their columns by a loop typed once per row.
        if self.m.minor.is_none() && self.m.minor_list.is_none() && lines.idx.iter().all(|&c| c >= 0 && (c as u64) < cols) {
            let (ptr, p0) = (&lines.ptr, lines.p0);
            for line in 0..ptr.len() - 1 {
                let (s, e) = ((ptr[line] as u64 - p0) as usize, (ptr[line + 1] as u64 - p0) as usize);
                let base = line * cols as usize;
                add_slots(t, dst, &lines.data[s * w..e * w], lines.idx[s..e].iter().map(|&c| base + c as usize));
            }
            return Ok(());
        }
        self.each_of(&lines, r0, cols, |r, c, v| {
            let at = (((r - r0) * cols + c) as usize) * w;
            accumulate(t, &mut dst[at..at + w], v);
        })
    }

    /// Decodes the chunks of `indptr`, `indices` and `data` that major lines `[a, b)` need.
    fn prefetch_lines(&self, a: u64, b: u64) -> ViewResult<()> {
        let ptr = self.pointers(a, b)?;
        let (p0, p1) = (ptr[0] as u64, ptr[ptr.len() - 1] as u64);
        self.m.indices.prefetch_rows(p0, p1)?;
        self.m.data.prefetch_rows(p0, p1)
    }

    fn csc_band(&self, band: u64, band_rows: u64) -> ViewResult<crate::cache::Bytes> {
        self.cache.bytes(Key::Rendered(self.id, band), || {
            let (rows, cols) = (self.m.shape[0], self.m.shape[1]);
            let (r0, r1) = (band * band_rows, ((band + 1) * band_rows).min(rows));
            let mut out = vec![0u8; ((r1 - r0) * cols) as usize * self.t.size()];
            let ptr = self.pointers(0, cols)?;
            if self.csc_sorted()? {
                self.csc_sorted_rows(r0, r1, &ptr, &mut out)?;
            } else {
                self.csc_scan_band(r0, r1, &ptr, &mut out)?;
            }
            Ok::<_, StorageError>(out)
        })
    }

    /// Densifies rows `[r0, r1)` of a CSC matrix by one pass over every stored value (any order).
    fn csc_scan_band(&self, r0: u64, r1: u64, ptr: &[i64], out: &mut [u8]) -> ViewResult<()> {
        let (rows, cols) = (self.m.shape[0], self.m.shape[1] as usize);
        let w = self.t.size();
        let nnz = ptr[cols] as u64;
        let map = self.m.minor_map()?;
        let mut col = 0usize;
        let mut s = ptr[0] as u64;
        while s < nnz {
            let e = (s + SCAN_STEP).min(nnz);
            let idx = self.m.indices.read_i64(s, e)?;
            let data = self.m.data.read_flat(s, e)?;
            for (k, &i) in idx.iter().enumerate() {
                let pos = (s + k as u64) as i64;
                while col < cols && ptr[col + 1] <= pos {
                    col += 1;
                }
                let Some(r) = self.minor_pos(map.as_ref().map(|b| b.as_slice()), i, rows)? else { continue };
                let r = r as u64;
                if r >= r0 && r < r1 && col < cols {
                    let at = (((r - r0) * cols as u64) as usize + col) * w;
                    accumulate(self.t, &mut out[at..at + w], &data[k * w..][..w]);
                }
            }
            s = e;
        }
        Ok(())
    }
}

impl SparseRows {
    /// True for a CSC matrix of a few columns with sorted indices (gene columns): its rows are
    /// rendered straight from each column's entries.
    fn few_sorted_columns(&self) -> ViewResult<bool> {
        Ok(self.m.shape[1] <= DIRECT_COLS && self.csc_sorted()?)
    }
}

impl RowBytes for SparseRows {
    fn n_rows(&self) -> u64 {
        self.m.shape[0]
    }

    fn row_bytes(&self) -> u64 {
        self.m.shape[1] * self.t.size() as u64
    }

    fn read_rows_into(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        match self.m.format {
            SparseFormat::Csr if r0 < r1 => self.csr_rows_into(r0, r1, out),
            SparseFormat::Csr => Ok(()),
            // A few sorted columns: straight into the caller's (reused) buffer.
            SparseFormat::Csc if self.few_sorted_columns()? => {
                let ptr = self.pointers(0, self.m.shape[1])?;
                let start = out.len();
                out.resize(start + ((r1 - r0) * self.row_bytes()) as usize, 0);
                self.csc_sorted_rows(r0, r1, &ptr, &mut out[start..])
            }
            SparseFormat::Csc => {
                out.extend_from_slice(&self.read_rows(r0, r1)?);
                Ok(())
            }
        }
    }

    fn prefetch_rows(&self, r0: u64, r1: u64) -> ViewResult<()> {
        match self.m.format {
            SparseFormat::Csr if r0 < r1 => self.prefetch_lines(r0, r1),
            SparseFormat::Csr => Ok(()),
            SparseFormat::Csc if !self.reads_ahead() => Ok(()),
            SparseFormat::Csc => self.read_rows(r0, r1).map(drop),
        }
    }

    fn reads_ahead(&self) -> bool {
        // A few sorted columns (gene columns) are read per request, each costing about the
        // entries it covers: rendering them ahead would only do the same work twice.
        !(self.m.format == SparseFormat::Csc && self.few_sorted_columns().unwrap_or(false))
    }

    fn drop_behind_rows(&self, r0: u64, r1: u64) {
        // The entries of a CSR band of rows are one run of `indices` and `data`: the chunks of
        // those runs (and of `indptr`) that end among the rows passed are dropped. A failed
        // pointer read drops nothing.
        if self.m.format != SparseFormat::Csr || r0 >= r1 {
            return;
        }
        if let Ok(ptr) = self.pointers(r0, r1) {
            let (p0, p1) = (ptr[0] as u64, ptr[ptr.len() - 1] as u64);
            self.m.indices.drop_behind(p0, p1);
            self.m.data.drop_behind(p0, p1);
            self.m.indptr.drop_behind(r0, r1);
        }
    }

    fn read_rows(&self, r0: u64, r1: u64) -> ViewResult<Vec<u8>> {
        if r0 >= r1 || self.row_bytes() == 0 {
            return Ok(Vec::new());
        }
        match self.m.format {
            SparseFormat::Csr => {
                let mut out = Vec::new();
                self.csr_rows_into(r0, r1, &mut out)?;
                Ok(out)
            }
            // A few sorted columns (gene columns): rows straight from each column's run.
            SparseFormat::Csc if self.m.shape[1] <= DIRECT_COLS && self.csc_sorted()? => {
                let ptr = self.pointers(0, self.m.shape[1])?;
                let mut out = vec![0u8; ((r1 - r0) * self.row_bytes()) as usize];
                self.csc_sorted_rows(r0, r1, &ptr, &mut out)?;
                Ok(out)
            }
            SparseFormat::Csc => {
                let rb = self.row_bytes();
                let band_rows = (self.band_bytes / rb).max(1);
                let mut out = Vec::with_capacity(((r1 - r0) * rb) as usize);
                for band in r0 / band_rows..=(r1 - 1) / band_rows {
                    let bytes = self.csc_band(band, band_rows)?;
                    let b0 = band * band_rows;
                    let (s, e) = (r0.max(b0) - b0, r1.min(b0 + band_rows) - b0);
                    out.extend_from_slice(super::slice(&bytes, s * rb, ((e - s) * rb) as usize));
                }
                Ok(out)
            }
        }
    }
}

/// Columns `[c0, c1)` of dense rows.
pub struct ColsRows {
    /// The full rows.
    pub inner: Arc<dyn RowBytes>,
    /// Element size in bytes.
    pub elem: usize,
    /// First column kept.
    pub c0: u64,
    /// One past the last column kept.
    pub c1: u64,
}

impl RowBytes for ColsRows {
    fn n_rows(&self) -> u64 {
        self.inner.n_rows()
    }

    fn drop_behind_rows(&self, r0: u64, r1: u64) {
        self.inner.drop_behind_rows(r0, r1)
    }

    fn row_bytes(&self) -> u64 {
        (self.c1 - self.c0) * self.elem as u64
    }

    fn read_rows(&self, r0: u64, r1: u64) -> ViewResult<Vec<u8>> {
        let full = self.inner.read_rows(r0, r1)?;
        let rb = self.inner.row_bytes() as usize;
        let (a, b) = (self.c0 as usize * self.elem, self.c1 as usize * self.elem);
        let mut out = Vec::with_capacity((r1 - r0) as usize * (b - a));
        for row in full.chunks_exact(rb.max(1)) {
            out.extend_from_slice(&row[a..b]);
        }
        Ok(out)
    }
}

/// Dense rows of any matrix: stored rows for dense arrays, densified for sparse ones. CSR rows
/// are densified on every read straight into the reply (a scatter of the row's entries over
/// zeros costs less than keeping mostly-zero blocks in the cache; read-ahead decodes the
/// stored chunks instead); CSC rows are cached in blocks of about `block_bytes`.
pub fn dense_rows(m: &Matrix, cache: &Arc<ChunkCache>, block_bytes: u64) -> Option<Arc<dyn RowBytes>> {
    Some(match m {
        Matrix::Dense(a) => Arc::new(ArrayRows(a.clone())),
        Matrix::DenseCols { arr, c0, c1 } => {
            Arc::new(ColsRows { inner: Arc::new(ArrayRows(arr.clone())), elem: arr.elem_size(), c0: *c0, c1: *c1 })
        }
        Matrix::Sparse(s) => {
            let rows = SparseRows::new(s.clone(), cache.clone())?;
            if s.format == SparseFormat::Csr {
                Arc::new(rows)
            } else {
                Arc::new(CachedRows::new(Arc::new(rows), cache.clone(), block_bytes))
            }
        }
    })
}

/// Dense rows of a matrix of a few columns (gene columns): sparse ones are rendered per read
/// (each read costs about the entries it covers) rather than through cached blocks.
pub fn narrow_rows(m: &Matrix, cache: &Arc<ChunkCache>) -> Option<Arc<dyn RowBytes>> {
    match m {
        Matrix::Sparse(s) => Some(Arc::new(SparseRows::new(s.clone(), cache.clone())?)),
        _ => dense_rows(m, cache, 1 << 20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::array::tests::mem_sparse;

    #[test]
    fn csr_rows_drop_behind_the_chunks_their_entries_ended_in() {
        // 6 rows x 4 columns, two entries per row; every array in chunks of 4 elements:
        // indices and data [0,4) [4,8) [8,12), indptr (7 values) [0,4) [4,7).
        let indptr: Vec<i64> = (0..7).map(|r| 2 * r).collect();
        let idx: Vec<i32> = (0..12).map(|k| k % 4).collect();
        let data: Vec<u8> = (0..12u8).flat_map(|v| [v + 1, 0]).collect();
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let m = mem_sparse(SparseFormat::Csr, [6, 4], (&indptr, &idx), (NumType::U16, data), 4, &cache);
        let rows = SparseRows::new(m, cache.clone()).expect("numeric");
        let whole = rows.read_rows(0, 6).unwrap();
        let dropped = || cache.stats.snapshot()["dropped_behind"].as_u64().unwrap();
        // Rows [0, 3) hold entries [0, 6): the first chunk of indices and of data ended there;
        // indptr's first band [0, 4) did not.
        rows.drop_behind_rows(0, 3);
        assert_eq!(dropped(), 2);
        // Rows [3, 6) hold entries [6, 12): two chunks each, and indptr's band [0, 4).
        rows.drop_behind_rows(3, 6);
        assert_eq!(dropped(), 7);
        assert_eq!(rows.read_rows(0, 6).unwrap(), whole);
    }
}
