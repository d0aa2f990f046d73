//! Dense row bands of a CSC matrix that cost about the entries in the band.
//!
//! Once per matrix, one pass checks that every column's row indices are non-decreasing (and
//! validates them). If so, a band of rows `[r0, r1)` is, in each column, one contiguous run of
//! stored entries: its start is found by binary search in the column's index range (or taken
//! from the cursor left by the previous read when rows are read in order), and its end by
//! reading forward in growing windows. Columns with unsorted indices fall back to the scan of
//! every stored value in [`SparseRows::csc_scan_band`]. Entries are added in storage order, so
//! duplicates sum exactly as the scan (and scipy) sums them.

use parking_lot::Mutex;

use super::{add_slots, SparseRows, SCAN_STEP};
use crate::storage::StorageError;
use crate::views::ViewResult;

/// Per-matrix state of CSC densification.
#[derive(Default)]
pub(super) struct CscState {
    /// Whether every column's indices are sorted (`None` until checked).
    sorted: Mutex<Option<bool>>,
    /// Where each column's entries of the next band start.
    cursor: Mutex<Option<Cursor>>,
}

/// Per-column start positions of the rows from `row` on.
struct Cursor {
    row: u64,
    pos: Vec<u64>,
}

/// Entries read first when looking for the end of a column's run in a band.
const MIN_WINDOW: u64 = 16;

impl SparseRows {
    /// True when every column's stored row indices are non-decreasing: known for a transposed
    /// index ([`crate::model::Sparse::sorted`]), else checked once (one pass over the indices,
    /// which also validates every index as the scan would) and remembered.
    /// A view that keeps a list of rows (a `where/` subset) is treated as unsorted: the
    /// binary searches below work on stored row ranges, the scan maps every row through the list.
    pub(super) fn csc_sorted(&self) -> ViewResult<bool> {
        if self.m.minor_list.is_some() {
            return Ok(false);
        }
        if self.m.sorted {
            return Ok(true);
        }
        let mut known = self.csc.sorted.lock();
        if let Some(s) = *known {
            return Ok(s);
        }
        let (rows, cols) = (self.m.shape[0], self.m.shape[1] as usize);
        let ptr = self.pointers(0, cols as u64)?;
        let nnz = ptr[cols] as u64;
        let (mut sorted, mut col, mut prev) = (true, 0usize, i64::MIN);
        let mut s = ptr[0] as u64;
        while s < nnz {
            let e = (s + SCAN_STEP).min(nnz);
            let idx = self.m.indices.read_i64(s, e)?;
            for (k, &i) in idx.iter().enumerate() {
                let pos = (s + k as u64) as i64;
                while col < cols && ptr[col + 1] <= pos {
                    col += 1;
                    prev = i64::MIN;
                }
                self.minor_pos(None, i, rows)?;
                sorted &= i >= prev;
                prev = i;
            }
            s = e;
        }
        *known = Some(sorted);
        Ok(sorted)
    }

    /// Densifies rows `[r0, r1)` of a CSC matrix whose columns are sorted.
    pub(super) fn csc_sorted_rows(&self, r0: u64, r1: u64, ptr: &[i64], out: &mut [u8]) -> ViewResult<()> {
        let (rows, cols) = (self.m.shape[0], self.m.shape[1] as usize);
        let m0 = self.m.minor.map(|m| m.0).unwrap_or(0) as i64;
        let (lo_row, hi_row) = (r0 as i64 + m0, r1 as i64 + m0);
        let cursor = self.csc.cursor.lock().take().filter(|c| c.row == r0 && c.pos.len() == cols);
        let mut next = Vec::with_capacity(cols);
        for c in 0..cols {
            let (start, end) = (ptr[c] as u64, ptr[c + 1] as u64);
            let lo = match &cursor {
                Some(cur) => cur.pos[c].clamp(start, end),
                None => self.lower_bound(start, end, lo_row)?,
            };
            // Expected entries of this band: the column's remaining entries spread over the
            // remaining rows.
            let est = (end - lo).saturating_mul(r1 - r0) / (rows - r0).max(1);
            let (idx, hi) = self.read_below(lo, end, hi_row, est)?;
            let data = self.m.data.read_flat(lo, hi)?;
            // Sorted (checked, or known from how the arrays were written): within the band.
            if let Some(i) = idx.iter().find(|&&i| i < lo_row || i >= hi_row) {
                return Err(StorageError::corrupt(self.m.indices.path(), format!("row index {i} out of order in column {c}")));
            }
            add_slots(self.t, out, &data, idx.iter().map(|&i| (i - lo_row) as usize * cols + c));
            next.push(hi);
        }
        *self.csc.cursor.lock() = Some(Cursor { row: r1, pos: next });
        Ok(())
    }

    /// The first position in `[start, end)` whose (sorted) index is `>= target`.
    fn lower_bound(&self, mut start: u64, mut end: u64, target: i64) -> ViewResult<u64> {
        while start < end {
            let mid = start + (end - start) / 2;
            let v = self.m.indices.read_i64(mid, mid + 1)?;
            if v.first().is_some_and(|&v| v < target) {
                start = mid + 1;
            } else {
                end = mid;
            }
        }
        Ok(start)
    }

    /// Reads the (sorted) indices from `lo` on while they are `< stop`, in windows that start
    /// at about `est` entries and double; returns them and the position one past the last.
    fn read_below(&self, lo: u64, end: u64, stop: i64, est: u64) -> ViewResult<(Vec<i64>, u64)> {
        let mut out = Vec::new();
        let (mut at, mut window) = (lo, est + MIN_WINDOW);
        while at < end {
            let e = end.min(at.saturating_add(window));
            let idx = self.m.indices.read_i64(at, e)?;
            let k = idx.partition_point(|&i| i < stop);
            out.extend_from_slice(&idx[..k]);
            at += k as u64;
            if k < idx.len() {
                break;
            }
            window = window.saturating_mul(2);
        }
        Ok((out, at))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::SparseRows;
    use crate::cache::ChunkCache;
    use crate::model::array::tests::mem_sparse;
    use crate::model::SparseFormat;
    use crate::storage::NumType;
    use crate::views::npy_file::RowBytes;

    /// A random CSC matrix: per column, entries in random row order (or sorted), with
    /// duplicates, explicit zeros and empty columns.
    fn csc(rows: u64, cols: u64, seed: u64, sorted: bool) -> (Vec<i64>, Vec<i32>, Vec<f32>) {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut indptr, mut idx, mut data) = (vec![0i64], Vec::new(), Vec::new());
        for _ in 0..cols {
            let n = if next() % 4 == 0 { 0 } else { next() % (rows + 3) };
            let mut col: Vec<i32> = (0..n).map(|_| (next() % rows) as i32).collect();
            if sorted {
                col.sort_unstable();
            }
            for r in col {
                idx.push(r);
                data.push(if next() % 5 == 0 { 0.0 } else { (next() % 2000) as f32 * 0.37 - 300.0 });
            }
            indptr.push(idx.len() as i64);
        }
        (indptr, idx, data)
    }

    fn bytes<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Densified rows (every band, sequential and random, in a row window too) equal a
        /// reference that adds every stored entry in storage order.
        #[test]
        fn csc_bands_equal_reference(rows in 1u64..70, cols in 0u64..25, seed in any::<u64>(), sorted in any::<bool>(), known in any::<bool>(),
                                     chunk in 1u64..40, band_bytes in 1u64..400, win in any::<(u64, u64)>(),
                                     reads in prop::collection::vec(any::<(u64, u64)>(), 6)) {
            let (indptr, idx, data) = csc(rows, cols, seed, sorted);
            let cache = Arc::new(ChunkCache::new(1 << 14));
            let mut m = mem_sparse(SparseFormat::Csc, [rows, cols], (&indptr, &idx), (NumType::F32, bytes(&data, |v| v.to_le_bytes().to_vec())), chunk, &cache);
            // Sorted columns, known to be (as a transposed index's are) or found by the scan.
            m.sorted = sorted && known;
            // A row window [w0, w1), as a rows/S:E/ subset view makes.
            let (w0, w1) = { let a = win.0 % rows; (a, a + 1 + win.1 % (rows - a)) };
            let windowed = crate::model::Matrix::Sparse(m.clone()).rows(w0, w1).unwrap();
            let crate::model::Matrix::Sparse(windowed) = windowed else { unreachable!() };
            for (m, r0, r1) in [(m, 0, rows), (windowed, w0, w1)] {
                let n = r1 - r0;
                let mut want = vec![0f32; (n * cols) as usize];
                for c in 0..cols as usize {
                    for k in indptr[c] as usize..indptr[c + 1] as usize {
                        let r = idx[k] as u64;
                        if r >= r0 && r < r1 {
                            want[(r - r0) as usize * cols as usize + c] += data[k];
                        }
                    }
                }
                let want = bytes(&want, |v| v.to_le_bytes().to_vec());
                let mut sr = SparseRows::new(m, cache.clone()).unwrap();
                sr.band_bytes = band_bytes;
                let rb = (cols * 4) as usize;
                // Sequential reads in small steps (the cursor path), then random ranges.
                let step = 1 + (seed % 7);
                let mut got = Vec::new();
                let mut a = 0;
                while a < n {
                    got.extend(sr.read_rows(a, (a + step).min(n)).unwrap());
                    a += step;
                }
                prop_assert_eq!(&got, &want);
                for &(a, b) in &reads {
                    let (a, b) = (a % n, b % (n + 1));
                    let (a, b) = (a.min(b), a.max(b));
                    prop_assert_eq!(sr.read_rows(a, b).unwrap(), want[a as usize * rb..b as usize * rb].to_vec());
                }
                if sorted && !known && cols > 0 {
                    prop_assert_eq!(*sr.csc.sorted.lock(), Some(true));
                }
            }
        }

        /// Columns claimed sorted that are not (a crafted index file with valid checksums):
        /// reads give values or an error, never a panic or bytes past the band.
        #[test]
        fn unsorted_columns_claimed_sorted_never_panic(rows in 1u64..70, cols in 1u64..8, seed in any::<u64>(), chunk in 1u64..40,
                                                        reads in prop::collection::vec(any::<(u64, u64)>(), 6)) {
            let (indptr, idx, data) = csc(rows, cols, seed, false);
            let cache = Arc::new(ChunkCache::new(1 << 14));
            let mut m = mem_sparse(SparseFormat::Csc, [rows, cols], (&indptr, &idx), (NumType::F32, bytes(&data, |v| v.to_le_bytes().to_vec())), chunk, &cache);
            m.sorted = true;
            let sr = SparseRows::new(m, cache.clone()).unwrap();
            for &(a, b) in &reads {
                let (a, b) = (a % rows, b % (rows + 1));
                let (a, b) = (a.min(b), a.max(b));
                if let Ok(got) = sr.read_rows(a, b) {
                    prop_assert_eq!(got.len() as u64, (b - a) * cols * 4);
                }
            }
        }
    }
}
