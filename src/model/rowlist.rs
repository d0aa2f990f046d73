//! Row-list subsets of an AnnData (`where/<col>=<value>/`): every obs-indexed element
//! restricted to a sorted list of obs rows, as `adata[mask]` in anndata (categories kept, as in
//! `rows/` views). Dense arrays and dataframe columns gather their rows; CSR matrices gather
//! their rows' entries (a new `indptr` from 0, `data`/`indices` gathered, stored dtypes); CSC
//! matrices and the column axis of `obsp` keep a minor-axis list; var, varm, varp and uns are
//! unchanged. Nothing is copied: gathered arrays read the parent's rows through the cache.

use std::sync::Arc;

use super::gather::{MemArray, Runs};
use super::{AnnData, Arr, Column, DataFrame, Element, Elements, Matrix, Raw, Sparse, SparseFormat};
use crate::storage::{StorageError, StorageResult};

/// Pointers read per step while gathering CSR rows.
const PTR_BLOCK: u64 = 1 << 16;

impl Column {
    /// The values at sorted rows `rows` (categories unchanged).
    pub fn gather(&self, rows: &[u64]) -> Column {
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
    pub fn gather(&self, rows: &[u64]) -> DataFrame {
        DataFrame {
            n_rows: rows.len() as u64,
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

    /// Major-axis lines at sorted positions `lines`: their entries gathered in order, a new
    /// `indptr` from 0 in the stored pointer type.
    fn gather_major(&self, lines: &[u64]) -> StorageResult<Sparse> {
        let t = self.indptr.num_type().ok_or_else(|| self.corrupt("indptr is not numeric".into()))?;
        let n_data = self.data.len().min(self.indices.len()) as i64;
        let mut ranges = Vec::with_capacity(lines.len());
        let mut ptr_out = Vec::with_capacity(lines.len() + 1);
        ptr_out.push(0i64);
        let mut total = 0i64;
        let mut i = 0;
        while i < lines.len() {
            let lo = lines[i];
            let j = i + lines[i..].partition_point(|&l| l < lo.saturating_add(PTR_BLOCK));
            let hi = lines[j - 1] + 1;
            let ptr = self.indptr.read_i64(lo, hi + 1)?;
            for &l in &lines[i..j] {
                let at = (l - lo) as usize;
                let (a, b) = (ptr[at] - self.indptr_base, ptr[at + 1] - self.indptr_base);
                if a < 0 || b < a || b > n_data {
                    return Err(self.corrupt(format!("indptr of line {l} ({a}..{b}) is out of order or past the data")));
                }
                ranges.push((a as u64, b as u64));
                total += b - a;
                ptr_out.push(total);
            }
            i = j;
        }
        let runs = Arc::new(Runs::from_ranges(ranges));
        let mut shape = self.shape;
        match self.format {
            SparseFormat::Csr => shape[0] = lines.len() as u64,
            SparseFormat::Csc => shape[1] = lines.len() as u64,
        }
        let indptr = Arr::derived(Arc::new(MemArray::ints(self.indptr.path(), t, &ptr_out)), self.indptr.cache());
        Ok(Sparse {
            format: self.format,
            shape,
            data: self.data.gather_runs(runs.clone()),
            indices: self.indices.gather_runs(runs),
            indptr,
            indptr_base: 0,
            minor: self.minor,
            minor_list: self.minor_list.clone(),
        })
    }

    /// Minor-axis positions `keep` (sorted, relative to the current view).
    fn gather_minor(&self, keep: &[u64]) -> Sparse {
        let stored: Vec<u64> = match (&self.minor_list, self.minor) {
            (Some(list), _) => keep.iter().filter_map(|&k| list.get(k as usize).copied()).collect(),
            (None, Some((m0, _))) => keep.iter().map(|&k| m0 + k).collect(),
            (None, None) => keep.to_vec(),
        };
        let mut shape = self.shape;
        match self.format {
            SparseFormat::Csr => shape[1] = stored.len() as u64,
            SparseFormat::Csc => shape[0] = stored.len() as u64,
        }
        Sparse { shape, minor: None, minor_list: Some(stored.into()), ..self.clone() }
    }
}

impl Matrix {
    /// The rows at sorted positions `rows`.
    pub fn gather_rows(&self, rows: &[u64]) -> StorageResult<Matrix> {
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
    fn gather_square(&self, rows: &[u64]) -> StorageResult<Matrix> {
        Ok(match self {
            Matrix::Dense(a) => Matrix::Dense(a.gather_2d(rows, rows)),
            Matrix::DenseCols { arr, c0, .. } => {
                let cols: Vec<u64> = rows.iter().map(|r| r + c0).collect();
                Matrix::Dense(arr.gather_2d(rows, &cols))
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
    fn gather(&self, rows: &[u64]) -> StorageResult<Element> {
        Ok(match self {
            Element::Frame(df) => Element::Frame(df.gather(rows)),
            Element::Matrix(m) => Element::Matrix(m.gather_rows(rows)?),
            Element::Array(a) => Element::Array(a.gather(rows)),
            other => other.clone(),
        })
    }
}

fn gather_all(els: &Elements, rows: &[u64]) -> StorageResult<Elements> {
    els.iter().map(|(k, e)| Ok((k.clone(), e.gather(rows)?))).collect()
}

impl AnnData {
    /// `adata[mask]` for the sorted obs rows `rows`: X, layers, obs, obsm and raw.X gathered;
    /// obsp on both axes; var, varm, varp and uns unchanged. `label` names the selection in
    /// the README (`where cell_type=B`).
    pub fn subset_list(&self, rows: &[u64], label: &str) -> StorageResult<AnnData> {
        let obsp = self
            .obsp
            .iter()
            .map(|(k, e)| {
                Ok((k.clone(), match e {
                    Element::Matrix(m) => Element::Matrix(m.gather_square(rows)?),
                    other => other.gather(rows)?,
                }))
            })
            .collect::<StorageResult<Elements>>()?;
        let raw = match &self.raw {
            Some(r) => Some(Raw {
                x: r.x.as_ref().map(|m| m.gather_rows(rows)).transpose()?,
                var: r.var.clone(),
                varm: r.varm.clone(),
            }),
            None => None,
        };
        Ok(AnnData {
            n_obs: rows.len() as u64,
            n_vars: self.n_vars,
            obs: self.obs.gather(rows),
            var: self.var.clone(),
            x: self.x.as_ref().map(|m| m.gather_rows(rows)).transpose()?,
            layers: gather_all(&self.layers, rows)?,
            obsm: gather_all(&self.obsm, rows)?,
            varm: self.varm.clone(),
            obsp,
            varp: self.varp.clone(),
            uns: self.uns.clone(),
            raw,
            problems: self.problems.clone(),
            layout: format!("{}, {label}", self.layout),
        })
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
            proptest::prop_assert_eq!(densify(&m.gather_rows(&pick).unwrap()), want);
            let sq = Matrix::Sparse(sparse(&dense, csc)).gather_square(&pick).unwrap();
            let want: Vec<Vec<f32>> =
                pick.iter().map(|&r| pick.iter().map(|&c| dense[r as usize][c as usize]).collect()).collect();
            proptest::prop_assert_eq!(densify(&sq), want.clone());
            // A window of a gathered matrix (rows/ inside where/).
            let g = Matrix::Sparse(sparse(&dense, csc)).gather_square(&pick).unwrap();
            let k = pick.len() as u64;
            let w = g.rows(k / 2, k).unwrap().cols(k / 2, k).unwrap();
            let want: Vec<Vec<f32>> = want[(k / 2) as usize..].iter().map(|r| r[(k / 2) as usize..].to_vec()).collect();
            proptest::prop_assert_eq!(densify(&w), want);
        }
    }

    #[test]
    fn csr_arrays_are_scipys_row_selection() {
        let dense = vec![vec![1.0, 0.0, 2.0], vec![0.0, 0.0, 0.0], vec![3.0, 4.0, 0.0], vec![0.0, 5.0, 6.0]];
        let Matrix::Sparse(g) = Matrix::Sparse(sparse(&dense, false)).gather_rows(&[0, 2, 3]).unwrap() else { panic!() };
        assert!(g.has_exact_arrays());
        assert_eq!(g.indptr.read_i64(0, 4).unwrap(), vec![0, 2, 4, 6]);
        assert_eq!(g.indices.read_i64(0, 6).unwrap(), vec![0, 2, 0, 1, 1, 2]);
        assert_eq!(g.indptr.num_type(), Some(NumType::I32));
    }
}
