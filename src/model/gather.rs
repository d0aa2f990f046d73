//! Gathered arrays: the first-axis rows of an array at a list of positions (a `where/`
//! selection, the entries of the selected rows of a CSR matrix), presented as an array of its
//! own.
//!
//! A selection's lists are [`Plan`]s: bytes computed on demand and kept in the shared chunk
//! cache, so they count against the memory budget, can be evicted, and are recomputed (from
//! the codes of the selecting column) when needed again. A subset view therefore holds O(1)
//! memory of its own, however many rows it selects and however many subsets a walk of the
//! mount visits. A [`GatheredSource`] is an [`ArraySource`] whose chunks are assembled from
//! the parent array's rows (read through the cache): a selection costs the rows it holds.

use std::sync::Arc;

use super::Arr;
use crate::cache::{Bytes, ChunkCache, Key};
use crate::storage::{ArrayMeta, ArraySource, ChunkGrid, DType, NumType, StorageError, StorageResult};

/// Target size of one chunk of a gathered array.
const CHUNK_BYTES: u64 = 1 << 20;

/// Nominal bytes per string element, for sizing the (unused) chunk grid of string arrays.
const STRING_NOMINAL_BYTES: usize = 64;

/// How a plan's bytes are computed.
type Compute = Box<dyn Fn() -> StorageResult<Vec<u8>> + Send + Sync>;

/// Bytes computed on demand and kept in the shared cache (evictable, recomputed when needed).
#[derive(Clone)]
pub struct Plan(Arc<PlanInner>);

struct PlanInner {
    id: u64,
    cache: Arc<ChunkCache>,
    compute: Compute,
}

impl Plan {
    /// A plan computed by `compute`, cached in `cache`.
    pub fn new(cache: &Arc<ChunkCache>, compute: impl Fn() -> StorageResult<Vec<u8>> + Send + Sync + 'static) -> Self {
        Plan(Arc::new(PlanInner { id: cache.ids.plan(), cache: cache.clone(), compute: Box::new(compute) }))
    }

    /// The bytes, from the cache or computed.
    pub fn get(&self) -> StorageResult<Bytes> {
        self.0.cache.bytes(Key::Rendered(self.0.id, 0), || (self.0.compute)())
    }

    /// The cache the plan lives in.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.0.cache
    }
}

/// The `k`-th little-endian `u64` of `b` (0 past the end).
pub fn u64_at(b: &[u8], k: usize) -> u64 {
    b.get(k * 8..k * 8 + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

/// Little-endian bytes of `values`.
pub fn u64_bytes(values: impl IntoIterator<Item = u64>) -> Vec<u8> {
    values.into_iter().flat_map(u64::to_le_bytes).collect()
}

/// A selection of `len` sorted, distinct positions, as a [`Plan`] of little-endian `u64`s.
#[derive(Clone)]
pub struct Sel {
    plan: Plan,
    len: u64,
}

impl Sel {
    /// `len` positions computed by `rows` (sorted, distinct; checked when computed).
    pub fn new(cache: &Arc<ChunkCache>, len: u64, rows: impl Fn() -> StorageResult<Vec<u64>> + Send + Sync + 'static) -> Self {
        let plan = Plan::new(cache, move || {
            let r = rows()?;
            if r.len() as u64 != len || r.windows(2).any(|w| w[0] >= w[1]) {
                return Err(StorageError::corrupt("", format!("a selection changed: {} rows, expected {len} sorted rows", r.len())));
            }
            Ok(u64_bytes(r))
        });
        Sel { plan, len }
    }

    /// A selection of fixed positions (tests, small lists).
    pub fn fixed(cache: &Arc<ChunkCache>, rows: Vec<u64>) -> Self {
        let n = rows.len() as u64;
        Sel::new(cache, n, move || Ok(rows.clone()))
    }

    /// Number of positions.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The positions as little-endian `u64` bytes (see [`u64_at`]).
    pub fn bytes(&self) -> StorageResult<Bytes> {
        self.plan.get()
    }

    /// The positions as a vector.
    pub fn rows(&self) -> StorageResult<Vec<u64>> {
        let b = self.bytes()?;
        Ok((0..self.len as usize).map(|k| u64_at(&b, k)).collect())
    }

    /// Each position mapped by `f` (monotonic), as a new selection.
    pub fn map(&self, f: impl Fn(u64) -> u64 + Send + Sync + 'static) -> Sel {
        let me = self.clone();
        Sel::new(self.plan.cache(), self.len, move || Ok(me.rows()?.into_iter().map(&f).collect()))
    }

    /// Positions `[a, b)` of this selection.
    pub fn slice(&self, a: u64, b: u64) -> Sel {
        let (a, b) = (a.min(self.len), b.min(self.len).max(a.min(self.len)));
        let me = self.clone();
        Sel::new(self.plan.cache(), b - a, move || Ok(me.rows()?.get(a as usize..b as usize).unwrap_or_default().to_vec()))
    }

    /// The cache the selection lives in.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        self.plan.cache()
    }
}

/// How output positions map to the parent's first axis.
#[derive(Clone)]
pub enum Gather {
    /// Output position `k` is parent row `sel[k]`.
    Rows(Sel),
    /// The entries of selected CSR rows: a plan of `(parent start, output end)` pairs, one per
    /// selected row (output start = the previous pair's end).
    Entries(Plan),
}

impl Gather {
    /// Calls `f(start, end)` for the parent ranges behind output positions `[a, b)`, in order
    /// (consecutive ranges merged).
    fn for_each(&self, a: u64, b: u64, mut f: impl FnMut(u64, u64) -> StorageResult<()>) -> StorageResult<()> {
        let mut run: Option<(u64, u64)> = None;
        let mut push = |s: u64, e: u64, f: &mut dyn FnMut(u64, u64) -> StorageResult<()>| -> StorageResult<()> {
            match run {
                Some((rs, re)) if re == s => run = Some((rs, e)),
                Some((rs, re)) => {
                    f(rs, re)?;
                    run = Some((s, e));
                }
                None => run = Some((s, e)),
            }
            Ok(())
        };
        match self {
            Gather::Rows(sel) => {
                let rows = sel.bytes()?;
                for k in a..b.min(sel.len()) {
                    let r = u64_at(&rows, k as usize);
                    push(r, r + 1, &mut f)?;
                }
            }
            Gather::Entries(plan) => {
                let pairs = plan.get()?;
                let n = pairs.len() / 16;
                let end = |k: usize| u64_at(&pairs, 2 * k + 1);
                // First selected row whose entries end after a.
                let (mut lo, mut hi) = (0usize, n);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if end(mid) <= a {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                let mut k = lo;
                while k < n {
                    let start = if k == 0 { 0 } else { end(k - 1) };
                    if start >= b {
                        break;
                    }
                    let (s, e) = (a.max(start), b.min(end(k)));
                    let old = u64_at(&pairs, 2 * k);
                    if e > s {
                        push(old + (s - start), old + (e - start), &mut f)?;
                    }
                    k += 1;
                }
            }
        }
        match run {
            Some((s, e)) => f(s, e),
            None => Ok(()),
        }
    }
}

/// The rows of `parent` picked by a [`Gather`] (and, for 2-D arrays, optionally only the
/// columns in `cols`), as an array of its own.
pub struct GatheredSource {
    parent: Arr,
    map: Gather,
    cols: Option<Sel>,
    meta: ArrayMeta,
}

impl GatheredSource {
    /// `n` positions of `parent` picked by `map`; with `cols`, only those columns of a 2-D parent.
    pub fn new(parent: Arr, map: Gather, n: u64, cols: Option<Sel>) -> Self {
        let mut shape = parent.shape().to_vec();
        if let Some(first) = shape.first_mut() {
            *first = n;
        }
        if let (Some(c), Some(second)) = (&cols, shape.get_mut(1)) {
            *second = c.len();
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
            storage_desc: format!("{n} rows gathered from {}", pm.storage_desc),
        };
        GatheredSource { parent, map, cols, meta }
    }

    /// Output rows `[r0, r1)` as packed bytes.
    fn rows(&self, r0: u64, r1: u64) -> StorageResult<Vec<u8>> {
        let mut out = Vec::new();
        self.map.for_each(r0, r1, |s, e| self.parent.read_rows_into(s, e, &mut out))?;
        let Some(cols) = &self.cols else { return Ok(out) };
        let cols = cols.rows()?;
        let elem = self.parent.elem_size();
        let width = self.parent.row_elems() as usize * elem;
        let mut picked = Vec::with_capacity((r1 - r0) as usize * cols.len() * elem);
        for row in out.chunks_exact(width.max(1)) {
            for &c in &cols {
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
        let n = self.meta.shape.first().copied().unwrap_or(0);
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
        self.map.for_each(r0, r1, |s, e| {
            all.extend(self.parent.read_strings(s * per, e * per)?);
            Ok(())
        })?;
        let skip = (start - r0 * per) as usize;
        Ok(all.into_iter().skip(skip).take((end - start) as usize).collect())
    }
}

/// The `indptr` of gathered CSR rows (`0`, then each pair's output end), in the stored type.
pub struct PtrSource {
    plan: Plan,
    t: NumType,
    meta: ArrayMeta,
}

impl PtrSource {
    /// `n + 1` pointers of `n` selected rows from an entries plan, stored as type `t`.
    pub fn new(path: &str, plan: Plan, n: u64, t: NumType) -> Self {
        let shape = vec![n + 1];
        let meta = ArrayMeta {
            path: path.to_string(),
            dtype: DType::Num(t),
            grid: ChunkGrid::contiguous(shape.clone(), t.size(), CHUNK_BYTES),
            shape,
            null: false,
            storage_desc: "computed from the selected rows".into(),
        };
        PtrSource { plan, t, meta }
    }
}

impl ArraySource for PtrSource {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let k = self.meta.grid.chunk.first().copied().unwrap_or(1);
        let n = self.meta.shape.first().copied().unwrap_or(0);
        let (i0, i1) = ((index * k).min(n), ((index + 1) * k).min(n));
        let pairs = self.plan.get()?;
        let w = self.t.size().min(8);
        let mut out = Vec::with_capacity((i1 - i0) as usize * w);
        for i in i0..i1 {
            let v = if i == 0 { 0 } else { u64_at(&pairs, 2 * (i as usize - 1) + 1) };
            out.extend_from_slice(&v.to_le_bytes()[..w]);
        }
        Ok(out)
    }

    fn read_strings(&self, _start: u64, _end: u64) -> StorageResult<Vec<String>> {
        Err(StorageError::corrupt(&self.meta.path, "not a string array"))
    }
}

impl Arr {
    /// First-axis rows at the positions of `sel` (relative to this window), as an array of its
    /// own. Scalars are unchanged.
    pub fn gather(&self, sel: &Sel) -> Arr {
        if self.shape().is_empty() {
            return self.clone();
        }
        if sel.is_empty() {
            return self.window(0, 0);
        }
        Arr::derived(Arc::new(GatheredSource::new(self.clone(), Gather::Rows(sel.clone()), sel.len(), None)), self.cache())
    }

    /// First-axis positions by a gather map producing `n` positions.
    pub fn gather_map(&self, map: Gather, n: u64) -> Arr {
        Arr::derived(Arc::new(GatheredSource::new(self.clone(), map, n, None)), self.cache())
    }

    /// Rows `rows` and columns `cols` of a 2-D array (an obsp matrix restricted on both axes).
    pub fn gather_2d(&self, rows: &Sel, cols: &Sel) -> Arr {
        let src = GatheredSource::new(self.clone(), Gather::Rows(rows.clone()), rows.len(), Some(cols.clone()));
        Arr::derived(Arc::new(src), self.cache())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ChunkCache;
    use crate::model::array::tests::MemSource;
    use crate::model::ArrIds;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn u16_arr(shape: Vec<u64>, chunk: Vec<u64>) -> Arr {
        let n: u64 = shape.iter().product();
        let data = (0..n as u16).flat_map(|v| v.to_le_bytes()).collect();
        let src = MemSource::num(shape, chunk, NumType::U16, data);
        Arr::new(Arc::new(src), &Arc::new(ChunkCache::new(1 << 20)), &ArrIds::default())
    }

    fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    }

    fn ranges(g: &Gather, a: u64, b: u64) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        g.for_each(a, b, |s, e| {
            got.push((s, e));
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn gather_maps_merge_runs() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let rows = Gather::Rows(Sel::fixed(&cache, vec![1, 2, 3, 7, 9, 10]));
        assert_eq!(ranges(&rows, 2, 5), vec![(3, 4), (7, 8), (9, 10)]);
        assert_eq!(ranges(&rows, 0, 6), vec![(1, 4), (7, 8), (9, 11)]);
        // Rows with entries [10, 13), [13, 15), none, [40, 41): pairs (start, output end).
        let pairs = u64_bytes([10, 3, 13, 5, 20, 5, 40, 6]);
        let entries = Gather::Entries(Plan::new(&cache, move || Ok(pairs.clone())));
        assert_eq!(ranges(&entries, 0, 6), vec![(10, 15), (40, 41)]);
        assert_eq!(ranges(&entries, 4, 6), vec![(14, 15), (40, 41)]);
        assert_eq!(ranges(&entries, 5, 6), vec![(40, 41)]);
        assert!(ranges(&entries, 6, 9).is_empty());
    }

    #[test]
    fn evicted_plans_are_recomputed() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let sel = Sel::new(&cache, 3, move || {
            c.fetch_add(1, Ordering::Relaxed);
            Ok(vec![1, 5, 9])
        });
        assert_eq!(sel.rows().unwrap(), vec![1, 5, 9]);
        assert_eq!(sel.rows().unwrap(), vec![1, 5, 9]);
        assert_eq!(calls.load(Ordering::Relaxed), 1, "kept in the cache");
        assert_eq!(sel.slice(1, 3).rows().unwrap(), vec![5, 9]);
        assert_eq!(sel.map(|r| r + 100).rows().unwrap(), vec![101, 105, 109]);
        let bad = Sel::new(&cache, 2, || Ok(vec![3, 1]));
        assert!(bad.rows().is_err(), "an unsorted selection is an error, not a panic");
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
            let sel = Sel::fixed(arr.cache(), picked.clone());
            let g = win.gather(&sel);
            proptest::prop_assert_eq!(g.shape(), &[picked.len() as u64, cols][..]);
            let got = u16s(&g.read_rows(0, g.rows()).unwrap());
            let want: Vec<u16> = picked
                .iter()
                .flat_map(|&r| (0..cols).map(move |c| ((r + w0.min(rows)) * cols + c) as u16))
                .collect();
            proptest::prop_assert_eq!(got, want);
            if !picked.is_empty() {
                let cs: Vec<u64> = (0..cols).rev().step_by(2).collect::<Vec<_>>().into_iter().rev().collect();
                let g2 = win.gather_2d(&sel, &Sel::fixed(arr.cache(), cs.clone()));
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
        let g = arr.window(5, 50).gather(&Sel::fixed(arr.cache(), vec![0, 1, 9, 30, 31, 44]));
        assert_eq!(g.read_strings(0, 6).unwrap(), ["s5", "s6", "s14", "s35", "s36", "s49"]);
        assert_eq!(g.read_strings(2, 4).unwrap(), ["s14", "s35"]);
    }

    #[test]
    fn pointers_of_gathered_rows() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let pairs = u64_bytes([10, 3, 13, 5, 20, 5, 40, 70006]);
        let src = PtrSource::new("/p", Plan::new(&cache, move || Ok(pairs.clone())), 4, NumType::I32);
        let a = Arr::derived(Arc::new(src), &cache);
        assert_eq!(a.read_i64(0, 5).unwrap(), vec![0, 3, 5, 5, 70006]);
        assert_eq!(a.read_i64(2, 4).unwrap(), vec![5, 5]);
    }
}
