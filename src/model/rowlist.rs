//! Row-list subsets of an AnnData (`where/<col>=<value>/`): every obs-indexed element
//! restricted to a selection of obs rows ([`Sel`]), as `adata[mask]` in anndata (categories
//! kept, as in `rows/` views). Dense arrays and dataframe columns gather their rows; CSR
//! matrices gather their rows' entries (a new `indptr` from 0, `data`/`indices` gathered, stored
//! dtypes); CSC matrices and the column axis of `obsp` keep a minor-axis selection; var, varm,
//! varp and uns are unchanged. Nothing is copied: gathered arrays read the parent's rows
//! through the cache, and the selection's lists live in the cache too.

use std::sync::Arc;

use super::gather::{u64_at, u64_bytes, Gather, Plan, PtrSource, Sel};
use super::subset::ObsPick;
use super::{AnnData, Arr, Column, DataFrame, Element, Matrix, Sparse, SparseFormat};
use crate::storage::{StorageError, StorageResult};

/// Pointers read per step while gathering CSR rows.
const PTR_BLOCK: u64 = 1 << 16;

impl Column {
    /// The values at sorted rows `rows` (categories unchanged).
    pub fn gather(&self, rows: &Sel) -> Column {
        match self {
            Column::Num(a) => Column::Num(a.gather(rows)),
            Column::Str(a) => Column::Str(a.gather(rows)),
            Column::Categorical { codes, categories, ordered } => {
                Column::Categorical { codes: codes.gather(rows), categories: categories.clone(), ordered: *ordered }
            }
            Column::Nullable { values, mask } => Column::Nullable { values: values.gather(rows), mask: mask.gather(rows) },
        }
    }
}

impl DataFrame {
    /// The rows at sorted positions `rows`.
    pub fn gather(&self, rows: &Sel) -> DataFrame {
        DataFrame {
            n_rows: rows.len(),
            index_name: self.index_name.clone(),
            index: self.index.gather(rows),
            columns: self.columns.iter().map(|(k, c)| (k.clone(), c.gather(rows))).collect(),
        }
    }
}

impl Sparse {
    fn corrupt(&self, why: String) -> StorageError {
        StorageError::corrupt(self.indptr.path().rsplit_once('/').map(|p| p.0).unwrap_or(""), why)
    }

    /// Major-axis lines `lines`: their entries gathered in order, a new `indptr` from 0 in the
    /// stored pointer type (one plan of `(start, output end)` pairs, kept in the cache).
    fn gather_major(&self, lines: &Sel) -> StorageResult<Sparse> {
        let t = self.indptr.num_type().ok_or_else(|| self.corrupt("indptr is not numeric".into()))?;
        let (sel, indptr, base) = (lines.clone(), self.indptr.clone(), self.indptr_base);
        let n_data = self.data.len().min(self.indices.len()) as i64;
        let plan = Plan::new(lines.cache(), move || entry_pairs(&sel, &indptr, base, n_data));
        let n = lines.len();
        let nnz = if n == 0 { 0 } else { u64_at(&plan.get()?, 2 * (n as usize - 1) + 1) };
        let mut shape = self.shape;
        match self.format {
            SparseFormat::Csr => shape[0] = n,
            SparseFormat::Csc => shape[1] = n,
        }
        let ptr = PtrSource::new(self.indptr.path(), plan.clone(), n, t);
        Ok(Sparse {
            format: self.format,
            shape,
            data: self.data.gather_map(Gather::Entries(plan.clone()), nnz),
            indices: self.indices.gather_map(Gather::Entries(plan), nnz),
            indptr: Arr::derived(Arc::new(ptr), self.indptr.cache()),
            indptr_base: 0,
            minor: self.minor,
            minor_list: self.minor_list.clone(),
            sorted: self.sorted,
        })
    }

    /// Minor-axis positions `keep` (relative to the current view).
    fn gather_minor(&self, keep: &Sel) -> Sparse {
        let stored = match (&self.minor_list, self.minor) {
            (Some(list), _) => {
                let (list, keep2) = (list.clone(), keep.clone());
                Sel::new(keep.cache(), keep.len(), move || {
                    let l = list.rows()?;
                    Ok(keep2.rows()?.into_iter().filter_map(|k| l.get(k as usize).copied()).collect())
                })
            }
            (None, Some((m0, _))) => keep.map(move |k| m0 + k),
            (None, None) => keep.clone(),
        };
        let mut shape = self.shape;
        match self.format {
            SparseFormat::Csr => shape[1] = keep.len(),
            SparseFormat::Csc => shape[0] = keep.len(),
        }
        Sparse { shape, minor: None, minor_list: Some(stored), ..self.clone() }
    }
}

/// The `(start in data, output end)` pair of every selected major line, as little-endian `u64`s.
fn entry_pairs(sel: &Sel, indptr: &Arr, base: i64, n_data: i64) -> StorageResult<Vec<u8>> {
    let lines = sel.rows()?;
    let corrupt = |why: String| StorageError::corrupt(indptr.path(), why);
    let mut out = Vec::with_capacity(lines.len() * 2);
    let mut total = 0u64;
    let mut i = 0;
    while i < lines.len() {
        let lo = lines[i];
        let j = i + lines[i..].partition_point(|&l| l < lo.saturating_add(PTR_BLOCK));
        let hi = lines[j - 1] + 1;
        let ptr = indptr.read_i64(lo, hi + 1)?;
        for &l in &lines[i..j] {
            let at = (l - lo) as usize;
            let (a, b) = (ptr[at] - base, ptr[at + 1] - base);
            if a < 0 || b < a || b > n_data {
                return Err(corrupt(format!("pointers of line {l} ({a}..{b}) are out of order or past the data")));
            }
            total += (b - a) as u64;
            out.extend([a as u64, total]);
        }
        i = j;
    }
    Ok(u64_bytes(out))
}

impl Matrix {
    /// The rows at sorted positions `rows`.
    pub fn gather_rows(&self, rows: &Sel) -> StorageResult<Matrix> {
        Ok(match self {
            Matrix::Dense(a) => Matrix::Dense(a.gather(rows)),
            Matrix::DenseCols { arr, c0, c1 } => Matrix::DenseCols { arr: arr.gather(rows), c0: *c0, c1: *c1 },
            Matrix::Sparse(s) => Matrix::Sparse(match s.format {
                SparseFormat::Csr => s.gather_major(rows)?,
                SparseFormat::Csc => s.gather_minor(rows),
            }),
        })
    }

    /// Rows and columns at sorted positions `rows` (a square obs × obs matrix).
    fn gather_square(&self, rows: &Sel) -> StorageResult<Matrix> {
        Ok(match self {
            Matrix::Dense(a) => Matrix::Dense(a.gather_2d(rows, rows)),
            Matrix::DenseCols { arr, c0, .. } => {
                let c0 = *c0;
                Matrix::Dense(arr.gather_2d(rows, &rows.map(move |r| r + c0)))
            }
            Matrix::Sparse(s) => Matrix::Sparse(match s.format {
                SparseFormat::Csr => s.gather_major(rows)?.gather_minor(rows),
                SparseFormat::Csc => s.gather_minor(rows).gather_major(rows)?,
            }),
        })
    }
}

impl Element {
    /// The element restricted to first-axis rows `rows` (for obs-indexed mappings), as a
    /// `rows/` window restricts them.
    fn gather(&self, rows: &Sel) -> StorageResult<Element> {
        Ok(match self {
            Element::Frame(df) => Element::Frame(df.gather(rows)),
            Element::Matrix(m) => Element::Matrix(m.gather_rows(rows)?),
            Element::Array(a) => Element::Array(a.gather(rows)),
            other => other.clone(),
        })
    }
}
impl ObsPick for Sel {
    fn n_picked(&self) -> u64 {
        self.len()
    }

    fn frame(&self, df: &DataFrame) -> DataFrame {
        df.gather(self)
    }

    fn matrix(&self, m: &Matrix) -> StorageResult<Matrix> {
        m.gather_rows(self)
    }

    fn square(&self, m: &Matrix) -> StorageResult<Matrix> {
        m.gather_square(self)
    }

    fn element(&self, e: &Element) -> StorageResult<Element> {
        e.gather(self)
    }
}

impl AnnData {
    /// `adata[mask]` for the sorted obs rows `rows`: X, layers, obs, obsm and raw.X gathered;
    /// obsp on both axes; var, varm, varp and uns unchanged. `label` names the selection in
    /// the README (`where cell_type=B`).
    pub fn subset_list(&self, rows: &Sel, label: &str) -> StorageResult<AnnData> {
        self.pick_obs(rows, label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ChunkCache;
    use crate::model::array::tests::MemSource;
    use crate::model::ArrIds;
    use crate::storage::NumType;

    /// A CSR (or CSC) matrix of `dense` (row-major, f32), arrays chunked by 3.
    fn sparse(dense: &[Vec<f32>], csc: bool) -> Sparse {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let ids = ArrIds::default();
        let (rows, cols) = (dense.len(), dense[0].len());
        let (major, minor) = if csc { (cols, rows) } else { (rows, cols) };
        let (mut data, mut idx, mut ptr) = (Vec::new(), Vec::new(), vec![0i32]);
        let at = |r: usize, c: usize| dense[r][c];
        for m in 0..major {
            for n in 0..minor {
                let v = if csc { at(n, m) } else { at(m, n) };
                if v != 0.0 {
                    data.extend_from_slice(&v.to_le_bytes());
                    idx.extend_from_slice(&(n as i32).to_le_bytes());
                }
            }
            ptr.push((data.len() / 4) as i32);
        }
        let nnz = (data.len() / 4) as u64;
        let arr = |t, n: u64, bytes: Vec<u8>| Arr::new(Arc::new(MemSource::num(vec![n], vec![3], t, bytes)), &cache, &ids);
        let ptr_bytes = ptr.iter().flat_map(|p| p.to_le_bytes()).collect();
        Sparse {
            format: if csc { SparseFormat::Csc } else { SparseFormat::Csr },
            shape: [rows as u64, cols as u64],
            data: arr(NumType::F32, nnz, data),
            indices: arr(NumType::I32, nnz, idx),
            indptr: arr(NumType::I32, major as u64 + 1, ptr_bytes),
            indptr_base: 0,
            minor: None,
            minor_list: None,
            sorted: false,
        }
    }

    fn densify(m: &Matrix) -> Vec<Vec<f32>> {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let rows = crate::views::matrix::dense_rows(m, &cache, 64).unwrap();
        let (r, c) = m.shape();
        let bytes = rows.read_rows(0, r).unwrap();
        let vals: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        vals.chunks(c.max(1) as usize).map(<[f32]>::to_vec).collect()
    }

    proptest::proptest! {
        #[test]
        fn gathered_matrices_equal_picked_dense(
            seed in proptest::collection::vec(0u8..4, 36),
            pick in proptest::collection::btree_set(0u64..6, 1..6),
            csc in proptest::bool::ANY, w0 in 0u64..3,
        ) {
            let dense: Vec<Vec<f32>> = seed.chunks(6).map(|r| r.iter().map(|&v| v as f32).collect()).collect();
            let m = Matrix::Sparse(sparse(&dense, csc));
            // Within a rows window [w0, 6), as rows/S:E/where/… does.
            let m = m.rows(w0, 6).unwrap();
            let pick: Vec<u64> = pick.into_iter().filter(|&r| r < 6 - w0).collect();
            proptest::prop_assume!(!pick.is_empty());
            let want: Vec<Vec<f32>> = pick.iter().map(|&r| dense[(r + w0) as usize].clone()).collect();
            let cache = Arc::new(ChunkCache::new(1 << 20));
            let sel = Sel::fixed(&cache, pick.clone());
            proptest::prop_assert_eq!(densify(&m.gather_rows(&sel).unwrap()), want);
            let sq = Matrix::Sparse(sparse(&dense, csc)).gather_square(&sel).unwrap();
            let want: Vec<Vec<f32>> =
                pick.iter().map(|&r| pick.iter().map(|&c| dense[r as usize][c as usize]).collect()).collect();
            proptest::prop_assert_eq!(densify(&sq), want.clone());
            // A window of a gathered matrix (rows/ inside where/).
            let g = Matrix::Sparse(sparse(&dense, csc)).gather_square(&sel).unwrap();
            let k = pick.len() as u64;
            let w = g.rows(k / 2, k).unwrap().cols(k / 2, k).unwrap();
            let want: Vec<Vec<f32>> = want[(k / 2) as usize..].iter().map(|r| r[(k / 2) as usize..].to_vec()).collect();
            proptest::prop_assert_eq!(densify(&w), want);
        }
    }

    #[test]
    fn csr_arrays_are_scipys_row_selection() {
        let dense = vec![vec![1.0, 0.0, 2.0], vec![0.0, 0.0, 0.0], vec![3.0, 4.0, 0.0], vec![0.0, 5.0, 6.0]];
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let sel = Sel::fixed(&cache, vec![0, 2, 3]);
        let Matrix::Sparse(g) = Matrix::Sparse(sparse(&dense, false)).gather_rows(&sel).unwrap() else { panic!() };
        assert!(g.has_exact_arrays());
        assert_eq!(g.indptr.read_i64(0, 4).unwrap(), vec![0, 2, 4, 6]);
        assert_eq!(g.indices.read_i64(0, 6).unwrap(), vec![0, 2, 0, 1, 1, 2]);
        assert_eq!(g.indptr.num_type(), Some(NumType::I32));
    }
}
