//! Row subsets of an AnnData (`rows/START:END/`): every obs-indexed element restricted to
//! obs rows `[r0, r1)`, as `adata[r0:r1]` in anndata. Windows share the parent's arrays and
//! cached chunks; nothing is copied.

use super::{AnnData, Column, DataFrame, Element, Elements, Matrix, Raw, Sparse, SparseFormat};
use crate::storage::StorageResult;

impl Column {
    /// Rows `[r0, r1)` (categories are unchanged).
    pub fn window(&self, r0: u64, r1: u64) -> Column {
        match self {
            Column::Num(a) => Column::Num(a.window(r0, r1)),
            Column::Str(a) => Column::Str(a.window(r0, r1)),
            Column::Categorical { codes, categories, ordered } => {
                Column::Categorical { codes: codes.window(r0, r1), categories: categories.clone(), ordered: *ordered }
            }
            Column::Nullable { values, mask } => Column::Nullable { values: values.window(r0, r1), mask: mask.window(r0, r1) },
        }
    }
}

impl DataFrame {
    /// Rows `[r0, r1)`.
    pub fn window(&self, r0: u64, r1: u64) -> DataFrame {
        DataFrame {
            n_rows: r1 - r0,
            index_name: self.index_name.clone(),
            index: self.index.window(r0, r1),
            columns: self.columns.iter().map(|(k, c)| (k.clone(), c.window(r0, r1))).collect(),
        }
    }
}

impl Sparse {
    /// Entries `[a, b)` of the major axis.
    fn major_window(&self, a: u64, b: u64) -> StorageResult<Sparse> {
        let ptr = self.indptr.read_i64(a, b + 1)?;
        let (first, last) = (ptr[0] - self.indptr_base, ptr[ptr.len() - 1] - self.indptr_base);
        let (p0, p1) = (first.max(0) as u64, last.max(first).max(0) as u64);
        let mut shape = self.shape;
        match self.format {
            SparseFormat::Csr => shape[0] = b - a,
            SparseFormat::Csc => shape[1] = b - a,
        }
        Ok(Sparse {
            format: self.format,
            shape,
            data: self.data.window(p0, p1),
            indices: self.indices.window(p0, p1),
            indptr: self.indptr.window(a, b + 1),
            indptr_base: self.indptr_base + first,
            minor: self.minor,
            minor_list: self.minor_list.clone(),
            sorted: self.sorted,
        })
    }

    /// Entries `[a, b)` of the minor axis (relative to the current window).
    fn minor_window(&self, a: u64, b: u64) -> Sparse {
        let (m0, _) = self.minor.unwrap_or((0, 0));
        let mut shape = self.shape;
        match self.format {
            SparseFormat::Csr => shape[1] = b - a,
            SparseFormat::Csc => shape[0] = b - a,
        }
        if let Some(list) = &self.minor_list {
            return Sparse { minor_list: Some(list.slice(a, b)), shape, ..self.clone() };
        }
        Sparse { minor: Some((m0 + a, m0 + b)), shape, ..self.clone() }
    }
}

impl Matrix {
    /// Rows `[r0, r1)`.
    pub fn rows(&self, r0: u64, r1: u64) -> StorageResult<Matrix> {
        Ok(match self {
            Matrix::Dense(a) => Matrix::Dense(a.window(r0, r1)),
            Matrix::DenseCols { arr, c0, c1 } => Matrix::DenseCols { arr: arr.window(r0, r1), c0: *c0, c1: *c1 },
            Matrix::Sparse(s) => Matrix::Sparse(match s.format {
                SparseFormat::Csr => s.major_window(r0, r1)?,
                SparseFormat::Csc => s.minor_window(r0, r1),
            }),
        })
    }

    /// Columns `[c0, c1)`.
    pub fn cols(&self, c0: u64, c1: u64) -> StorageResult<Matrix> {
        Ok(match self {
            Matrix::Dense(a) => Matrix::DenseCols { arr: a.clone(), c0, c1 },
            Matrix::DenseCols { arr, c0: o, .. } => Matrix::DenseCols { arr: arr.clone(), c0: o + c0, c1: o + c1 },
            Matrix::Sparse(s) => Matrix::Sparse(match s.format {
                SparseFormat::Csr => s.minor_window(c0, c1),
                SparseFormat::Csc => s.major_window(c0, c1)?,
            }),
        })
    }
}

impl Element {
    /// The element restricted to first-axis rows `[r0, r1)` (for obs-indexed mappings).
    fn rows(&self, r0: u64, r1: u64) -> StorageResult<Element> {
        Ok(match self {
            Element::Frame(df) => Element::Frame(df.window(r0, r1)),
            Element::Matrix(m) => Element::Matrix(m.rows(r0, r1)?),
            Element::Array(a) => Element::Array(a.window(r0, r1)),
            other => other.clone(),
        })
    }
}
/// How a subset picks its obs rows out of each obs-indexed element (a window `[r0, r1)`, or
/// a row list, see `rowlist.rs`).
pub(super) trait ObsPick {
    /// How many rows are picked.
    fn n_picked(&self) -> u64;
    /// The picked rows of the obs dataframe.
    fn frame(&self, df: &DataFrame) -> DataFrame;
    /// The picked rows of a matrix (X, raw.X).
    fn matrix(&self, m: &Matrix) -> StorageResult<Matrix>;
    /// The picked rows and columns of an obs × obs matrix (obsp).
    fn square(&self, m: &Matrix) -> StorageResult<Matrix>;
    /// The picked rows of any obs-indexed element.
    fn element(&self, e: &Element) -> StorageResult<Element>;
}

/// Obs rows `[r0, r1)`.
struct Window(u64, u64);

impl ObsPick for Window {
    fn n_picked(&self) -> u64 {
        self.1 - self.0
    }

    fn frame(&self, df: &DataFrame) -> DataFrame {
        df.window(self.0, self.1)
    }

    fn matrix(&self, m: &Matrix) -> StorageResult<Matrix> {
        m.rows(self.0, self.1)
    }

    fn square(&self, m: &Matrix) -> StorageResult<Matrix> {
        m.rows(self.0, self.1)?.cols(self.0, self.1)
    }

    fn element(&self, e: &Element) -> StorageResult<Element> {
        e.rows(self.0, self.1)
    }
}

impl AnnData {
    /// `adata[r0:r1]`: obs rows `[r0, r1)` of X, layers, obs, obsm, raw.X; obsp on both axes;
    /// var, varm, varp and uns unchanged.
    pub fn subset_rows(&self, r0: u64, r1: u64) -> StorageResult<AnnData> {
        self.pick_obs(&Window(r0, r1), &format!("rows {r0}:{r1}"))
    }

    /// The AnnData of the obs rows `pick` picks: X, layers, obs, obsm and raw.X restricted to
    /// them, obsp on both axes; var, varm, varp and uns unchanged. `label` names the subset
    /// in the README's layout line.
    pub(super) fn pick_obs(&self, pick: &impl ObsPick, label: &str) -> StorageResult<AnnData> {
        let each = |els: &Elements| -> StorageResult<Elements> {
            els.iter().map(|(k, e)| Ok((k.clone(), pick.element(e)?))).collect()
        };
        let obsp = self
            .obsp
            .iter()
            .map(|(k, e)| {
                Ok((k.clone(), match e {
                    Element::Matrix(m) => Element::Matrix(pick.square(m)?),
                    other => pick.element(other)?,
                }))
            })
            .collect::<StorageResult<Elements>>()?;
        let raw = match &self.raw {
            Some(r) => Some(Raw { x: r.x.as_ref().map(|m| pick.matrix(m)).transpose()?, var: r.var.clone(), varm: r.varm.clone() }),
            None => None,
        };
        Ok(AnnData {
            n_obs: pick.n_picked(),
            n_vars: self.n_vars,
            obs: pick.frame(&self.obs),
            var: self.var.clone(),
            x: self.x.as_ref().map(|m| pick.matrix(m)).transpose()?,
            layers: each(&self.layers)?,
            obsm: each(&self.obsm)?,
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
