//! Gathered arrays: the first-axis rows of an array at a sorted list of positions (a `where/`
//! selection, the data of the gathered rows of a CSR matrix), presented as an array of its own.
//!
//! A [`GatheredSource`] is an [`ArraySource`] whose chunks are assembled on demand from the
//! parent array's rows (read through the shared cache), so a selection costs the rows it holds,
//! never a copy of the whole array. [`MemArray`] holds small computed arrays (the `indptr` of a
//! gathered CSR matrix).

use std::sync::Arc;

use super::Arr;
use crate::storage::{ArrayMeta, ArraySource, ChunkGrid, DType, NumType, StorageError, StorageResult};

/// Target size of one chunk of a gathered or in-memory array.
const CHUNK_BYTES: u64 = 1 << 20;

/// Nominal bytes per string element, for sizing the (unused) chunk grid of string arrays.
const STRING_NOMINAL_BYTES: usize = 64;

/// Sorted, distinct row positions of a selection.
pub type RowList = Arc<[u64]>;

/// A gather plan: output positions `[out[k], out[k+1])` come from source positions starting at
/// `src[k]` (runs of consecutive positions merged).
#[derive(Debug, Default)]
pub struct Runs {
    src: Vec<u64>,
    out: Vec<u64>,
}

impl Runs {
    /// The runs of sorted positions `rows` (consecutive positions merge into one run).
    pub fn from_rows(rows: &[u64]) -> Runs {
        Runs::from_ranges(rows.iter().map(|&r| (r, r + 1)))
    }

    /// The concatenation of source ranges `[start, end)` in order (empty ranges skipped,
    /// adjacent ones merged).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Runs {
        let (mut src, mut out) = (Vec::new(), vec![0u64]);
        let mut total = 0u64;
        for (a, b) in ranges {
            if b <= a {
                continue;
            }
            // The last run ends at source position src + (total - its output start).
            let merge = match (src.last(), out.len().checked_sub(2).and_then(|i| out.get(i))) {
                (Some(&s), Some(&o)) => s + (total - o) == a,
                _ => false,
            };
            total += b - a;
            if merge {
                if let Some(end) = out.last_mut() {
                    *end = total;
                }
            } else {
                src.push(a);
                out.push(total);
            }
        }
        Runs { src, out }
    }

    /// Number of output positions.
    pub fn len(&self) -> u64 {
        self.out.last().copied().unwrap_or(0)
    }

    /// True when nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The one source range when the plan is a single run.
    pub fn single(&self) -> Option<(u64, u64)> {
        (self.src.len() == 1).then(|| (self.src[0], self.src[0] + self.len()))
    }

    /// Calls `f(start, end)` for the source ranges behind output positions `[a, b)`, in order.
    pub fn for_each(&self, a: u64, b: u64, mut f: impl FnMut(u64, u64) -> StorageResult<()>) -> StorageResult<()> {
        let b = b.min(self.len());
        if a >= b {
            return Ok(());
        }
        // The run holding output position a: the last k with out[k] <= a.
        let mut k = self.out.partition_point(|&o| o <= a).saturating_sub(1);
        let mut pos = a;
        while pos < b && k < self.src.len() {
            let (o0, o1) = (self.out[k], self.out[k + 1]);
            let end = b.min(o1);
            if end > pos {
                f(self.src[k] + (pos - o0), self.src[k] + (end - o0))?;
                pos = end;
            }
            k += 1;
        }
        Ok(())
    }
}

/// The rows of `parent` picked by a [`Runs`] plan (and, for 2-D arrays, optionally only the
/// columns in `cols`), as an array of its own.
pub struct GatheredSource {
    parent: Arr,
    runs: Arc<Runs>,
    cols: Option<RowList>,
    meta: ArrayMeta,
}

impl GatheredSource {
    /// Rows `runs` of `parent`; with `cols`, only those columns of a 2-D parent.
    pub fn new(parent: Arr, runs: Arc<Runs>, cols: Option<RowList>) -> Self {
        let mut shape = parent.shape().to_vec();
        if let Some(first) = shape.first_mut() {
            *first = runs.len();
        }
        if let (Some(c), Some(second)) = (&cols, shape.get_mut(1)) {
            *second = c.len() as u64;
        }
        let elem = match parent.meta().dtype {
            DType::Str => STRING_NOMINAL_BYTES,
            _ => parent.elem_size(),
        };
        let grid = ChunkGrid::contiguous(shape.clone(), elem, CHUNK_BYTES);
        let pm = parent.meta();
        let meta = ArrayMeta {
            path: pm.path.clone(),
            dtype: pm.dtype.clone(),
            shape,
            null: pm.null,
            grid,
            storage_desc: format!("{} rows gathered from {}", runs.len(), pm.storage_desc),
        };
        GatheredSource { parent, runs, cols, meta }
    }

    /// Output rows `[r0, r1)` as packed bytes.
    fn rows(&self, r0: u64, r1: u64) -> StorageResult<Vec<u8>> {
        let mut out = Vec::new();
        self.runs.for_each(r0, r1, |s, e| self.parent.read_rows_into(s, e, &mut out))?;
        let Some(cols) = &self.cols else { return Ok(out) };
        let elem = self.parent.elem_size();
        let width = self.parent.row_elems() as usize * elem;
        let mut picked = Vec::with_capacity((r1 - r0) as usize * cols.len() * elem);
        for row in out.chunks_exact(width.max(1)) {
            for &c in cols.iter() {
                let at = c as usize * elem;
                let v = row.get(at..at + elem).ok_or_else(|| {
                    StorageError::corrupt(&self.meta.path, format!("column {c} out of range"))
                })?;
                picked.extend_from_slice(v);
            }
        }
        Ok(picked)
    }
}

impl ArraySource for GatheredSource {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let grid = &self.meta.grid;
        let coords = grid.coords(index);
        let (Some(&c0), Some(&k)) = (coords.first(), grid.chunk.first()) else {
            return self.parent.read_rows(0, 1);
        };
        let n = self.runs.len();
        let r0 = c0.saturating_mul(k).min(n);
        self.rows(r0, r0.saturating_add(k).min(n))
    }

    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>> {
        let per = self.parent.row_elems().max(1);
        if start >= end {
            return Ok(Vec::new());
        }
        let (r0, r1) = (start / per, end.div_ceil(per));
        let mut all = Vec::new();
        self.runs.for_each(r0, r1, |s, e| {
            all.extend(self.parent.read_strings(s * per, e * per)?);
            Ok(())
        })?;
        let skip = (start - r0 * per) as usize;
        Ok(all.into_iter().skip(skip).take((end - start) as usize).collect())
    }
}

/// A small numeric array held in memory (computed pointers).
pub struct MemArray {
    meta: ArrayMeta,
    bytes: Vec<u8>,
}

impl MemArray {
    /// A 1-D array of `values` stored as type `t` (integer types; values are known to fit).
    pub fn ints(path: &str, t: NumType, values: &[i64]) -> Self {
        let w = t.size();
        let mut bytes = Vec::with_capacity(values.len() * w);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes()[..w.min(8)]);
        }
        let shape = vec![values.len() as u64];
        let meta = ArrayMeta {
            path: path.to_string(),
            dtype: DType::Num(t),
            grid: ChunkGrid::contiguous(shape.clone(), w, CHUNK_BYTES),
            shape,
            null: false,
            storage_desc: "computed in memory".into(),
        };
        MemArray { meta, bytes }
    }
}

impl ArraySource for MemArray {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let w = self.meta.dtype_size() as u64;
        let k = self.meta.grid.chunk.first().copied().unwrap_or(1);
        let n = self.meta.shape.first().copied().unwrap_or(0);
        let (r0, r1) = ((index * k).min(n), ((index + 1) * k).min(n));
        Ok(self.bytes[(r0 * w) as usize..(r1 * w) as usize].to_vec())
    }

    fn read_strings(&self, _start: u64, _end: u64) -> StorageResult<Vec<String>> {
        Err(StorageError::corrupt(&self.meta.path, "not a string array"))
    }
}

impl Arr {
    /// First-axis rows at sorted positions `rows` (relative to this window), as an array of
    /// its own; a contiguous selection stays a plain window. Scalars are unchanged.
    pub fn gather(&self, rows: &[u64]) -> Arr {
        if self.shape().is_empty() {
            return self.clone();
        }
        self.gather_runs(Arc::new(Runs::from_rows(rows)))
    }

    /// First-axis positions by a gather plan.
    pub fn gather_runs(&self, runs: Arc<Runs>) -> Arr {
        if runs.is_empty() {
            return self.window(0, 0);
        }
        if let Some((a, b)) = runs.single() {
            return self.window(a, b);
        }
        Arr::derived(Arc::new(GatheredSource::new(self.clone(), runs, None)), self.cache())
    }

    /// Rows `rows` and columns `cols` of a 2-D array (an obsp matrix restricted on both axes).
    pub fn gather_2d(&self, rows: &[u64], cols: &[u64]) -> Arr {
        let runs = Arc::new(Runs::from_rows(rows));
        Arr::derived(Arc::new(GatheredSource::new(self.clone(), runs, Some(cols.into()))), self.cache())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ChunkCache;
    use crate::model::array::tests::MemSource;
    use crate::model::ArrIds;

    fn u16_arr(shape: Vec<u64>, chunk: Vec<u64>) -> Arr {
        let n: u64 = shape.iter().product();
        let data = (0..n as u16).flat_map(|v| v.to_le_bytes()).collect();
        let src = MemSource::num(shape, chunk, NumType::U16, data);
        Arr::new(Arc::new(src), &Arc::new(ChunkCache::new(1 << 20)), &ArrIds::default())
    }

    fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn runs_merge_and_map() {
        let r = Runs::from_rows(&[1, 2, 3, 7, 9, 10]);
        assert_eq!(r.len(), 6);
        let mut got = Vec::new();
        r.for_each(2, 5, |a, b| {
            got.push((a, b));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![(3, 4), (7, 8), (9, 10)]);
        assert_eq!(Runs::from_ranges([(0, 3), (3, 5), (5, 5), (8, 9)]).src, vec![0, 8]);
        assert_eq!(Runs::from_ranges([(0, 3), (3, 5)]).single(), Some((0, 5)));
    }

    proptest::proptest! {
        #[test]
        fn gathered_rows_equal_picked_rows(
            rows in 1u64..40, cols in 1u64..5, ch in 1u64..7,
            pick in proptest::collection::btree_set(0u64..40, 0..20),
            w0 in 0u64..5,
        ) {
            let arr = u16_arr(vec![rows, cols], vec![ch, cols.min(2)]);
            let win = arr.window(w0.min(rows), rows);
            let picked: Vec<u64> = pick.into_iter().filter(|&r| r < win.rows()).collect();
            let g = win.gather(&picked);
            proptest::prop_assert_eq!(g.shape(), &[picked.len() as u64, cols][..]);
            let got = u16s(&g.read_rows(0, g.rows()).unwrap());
            let want: Vec<u16> = picked
                .iter()
                .flat_map(|&r| (0..cols).map(move |c| ((r + w0.min(rows)) * cols + c) as u16))
                .collect();
            proptest::prop_assert_eq!(got, want);
            if !picked.is_empty() {
                let cs: Vec<u64> = (0..cols).rev().step_by(2).collect::<Vec<_>>().into_iter().rev().collect();
                let g2 = win.gather_2d(&picked, &cs);
                let got = u16s(&g2.read_rows(0, g2.rows()).unwrap());
                let want: Vec<u16> = picked
                    .iter()
                    .flat_map(|&r| cs.iter().map(move |&c| ((r + w0.min(rows)) * cols + c) as u16))
                    .collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn strings_are_gathered() {
        let values: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
        let src = MemSource::strings(values, 7);
        let arr = Arr::new(Arc::new(src), &Arc::new(ChunkCache::new(1 << 20)), &ArrIds::default());
        let g = arr.window(5, 50).gather(&[0, 1, 9, 30, 31, 44]);
        assert_eq!(g.read_strings(0, 6).unwrap(), ["s5", "s6", "s14", "s35", "s36", "s49"]);
        assert_eq!(g.read_strings(2, 4).unwrap(), ["s14", "s35"]);
    }

    #[test]
    fn mem_array_round_trips() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let a = Arr::derived(Arc::new(MemArray::ints("/p", NumType::I32, &[0, 5, 9, 70000])), &cache);
        assert_eq!(a.read_i64(0, 4).unwrap(), vec![0, 5, 9, 70000]);
        assert_eq!(a.read_i64(1, 3).unwrap(), vec![5, 9]);
    }
}
