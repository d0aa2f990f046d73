//! The AnnData model: a backend-independent, typed view of a store, as anndata reads it.
//!
//! [`build`] walks the storage tree once, dispatching on `encoding-type`/`encoding-version`
//! (and recognising the pre-0.7 legacy layout), and yields an [`AnnData`] whose leaves are
//! lazy [`Arr`] handles. An element that cannot be understood is recorded in
//! [`AnnData::problems`] and left out; only a broken `obs`/`var`/`X` fails the whole store.

pub mod array;
mod build;
pub mod gather;
mod dataframe;
mod error;
mod legacy;
mod rowlist;
mod spans;
mod subset;

pub use array::Arr;
pub use crate::cache::ArrIds;
pub use build::build;
pub use error::ModelError;
pub use gather::Sel;

use crate::storage::Field;

/// An AnnData object: `n_obs × n_vars` and its elements.
pub struct AnnData {
    /// Number of observations (cells).
    pub n_obs: u64,
    /// Number of variables (genes).
    pub n_vars: u64,
    /// Observation annotations.
    pub obs: DataFrame,
    /// Variable annotations.
    pub var: DataFrame,
    /// The main matrix, if present.
    pub x: Option<Matrix>,
    /// `layers/<name>` matrices.
    pub layers: Elements,
    /// `obsm/<key>`.
    pub obsm: Elements,
    /// `varm/<key>`.
    pub varm: Elements,
    /// `obsp/<key>`.
    pub obsp: Elements,
    /// `varp/<key>`.
    pub varp: Elements,
    /// `uns/<key>`.
    pub uns: Elements,
    /// `raw`, if present.
    pub raw: Option<Raw>,
    /// Elements that are not rendered, with the reason.
    pub problems: Vec<Problem>,
    /// Which layout the store uses (`anndata 0.8+`, `anndata 0.7`, `legacy (pre-0.7)`).
    pub layout: String,
}

/// `raw`: a frozen copy of X and var from before filtering.
pub struct Raw {
    /// raw.X.
    pub x: Option<Matrix>,
    /// raw.var.
    pub var: DataFrame,
    /// raw.varm.
    pub varm: Elements,
}

/// Named elements in store order.
pub type Elements = Vec<(String, Element)>;

/// Something the mount does not render, and why.
#[derive(Clone, Debug)]
pub struct Problem {
    /// Store path of the element.
    pub path: String,
    /// Why it is not rendered.
    pub reason: String,
}

/// An element of a mapping (`obsm`, `uns`, …).
#[derive(Clone)]
pub enum Element {
    /// A dataframe.
    Frame(DataFrame),
    /// A sparse matrix, or a dense 2-D array shown as a matrix directory.
    Matrix(Matrix),
    /// A dense numeric/bool array of any rank (0-d arrays are scalars).
    Array(Arr),
    /// A string array (0-d: a string scalar).
    Strings(Arr),
    /// A column-like array (categorical or nullable), rendered as text.
    Column(Column),
    /// A record array.
    Records(Records),
    /// A nested mapping.
    Dict(Elements),
}

/// A dataframe: an index and named columns, all of `n_rows`.
#[derive(Clone)]
pub struct DataFrame {
    /// Number of rows.
    pub n_rows: u64,
    /// The index name (None when anndata stored the default `_index`).
    pub index_name: Option<String>,
    /// The index values.
    pub index: Column,
    /// Columns in `column-order`.
    pub columns: Vec<(String, Column)>,
}

/// One dataframe column (or a 1-D array rendered like one).
#[derive(Clone)]
pub enum Column {
    /// Numeric or bool values.
    Num(Arr),
    /// Strings.
    Str(Arr),
    /// Categorical: codes into categories (-1 = missing).
    Categorical {
        /// Signed integer codes.
        codes: Arr,
        /// The category labels (strings or numbers).
        categories: Box<Column>,
        /// Whether the categories are ordered.
        ordered: bool,
    },
    /// Nullable integer, boolean or string: values plus a mask (true = missing).
    Nullable {
        /// The values (masked slots hold anything).
        values: Arr,
        /// Bool mask, true = missing.
        mask: Arr,
    },
}

impl Column {
    /// Number of values.
    pub fn len(&self) -> u64 {
        match self {
            Column::Num(a) | Column::Str(a) => a.rows(),
            Column::Categorical { codes, .. } => codes.rows(),
            Column::Nullable { values, .. } => values.rows(),
        }
    }

    /// True when the column has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The array holding one value per row (a categorical's codes, a nullable's values).
    pub fn array(&self) -> &Arr {
        match self {
            Column::Num(a) | Column::Str(a) => a,
            Column::Categorical { codes, .. } => codes,
            Column::Nullable { values, .. } => values,
        }
    }
}

/// A sparse or dense matrix (or a window of one, in a `rows/` subset view).
#[derive(Clone)]
pub enum Matrix {
    /// A dense 2-D array.
    Dense(Arr),
    /// Columns `[c0, c1)` of a dense 2-D array.
    DenseCols {
        /// The rows (possibly windowed).
        arr: Arr,
        /// First column kept.
        c0: u64,
        /// One past the last column kept.
        c1: u64,
    },
    /// A compressed sparse matrix.
    Sparse(Sparse),
}

impl Matrix {
    /// `(rows, columns)`.
    pub fn shape(&self) -> (u64, u64) {
        match self {
            Matrix::Dense(a) => {
                let s = a.shape();
                (s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(1))
            }
            Matrix::DenseCols { arr, c0, c1 } => (arr.rows(), c1 - c0),
            Matrix::Sparse(s) => (s.shape[0], s.shape[1]),
        }
    }

    /// The element type of the values.
    pub fn num_type(&self) -> Option<crate::storage::NumType> {
        match self {
            Matrix::Dense(a) | Matrix::DenseCols { arr: a, .. } => a.num_type(),
            Matrix::Sparse(s) => s.data.num_type(),
        }
    }
}

/// Which axis a sparse matrix compresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseFormat {
    /// Compressed rows.
    Csr,
    /// Compressed columns.
    Csc,
}

impl SparseFormat {
    /// `csr` or `csc`.
    pub fn name(self) -> &'static str {
        match self {
            SparseFormat::Csr => "csr",
            SparseFormat::Csc => "csc",
        }
    }
}

/// A CSR or CSC matrix as stored, or a window of one.
#[derive(Clone)]
pub struct Sparse {
    /// Compressed axis.
    pub format: SparseFormat,
    /// `(rows, columns)` (of the window).
    pub shape: [u64; 2],
    /// Stored values (the window's range of them).
    pub data: Arr,
    /// Minor-axis indices (the window's range of them).
    pub indices: Arr,
    /// Major-axis pointers (length = major + 1).
    pub indptr: Arr,
    /// Subtracted from every `indptr` value: the first pointer of a major-axis window.
    pub indptr_base: i64,
    /// Minor-axis window `[m0, m1)` in stored coordinates: entries outside are left out and
    /// indices shift by `-m0`. `None` keeps every entry.
    pub minor: Option<(u64, u64)>,
    /// Minor-axis positions kept, in stored coordinates, sorted (a `where/` selection on the
    /// minor axis): the entry at stored minor index `list[k]` is shown at position `k`, other
    /// entries are left out. When set, it replaces `minor`.
    pub minor_list: Option<gather::Sel>,
    /// Minor indices are known to be non-decreasing within every major line (a transposed
    /// index, which is written so), so views need not scan them to find out. Views still
    /// check each index they use against the range they asked for.
    pub sorted: bool,
}

impl Sparse {
    /// True when `data`, `indices` and `indptr - indptr_base` are exactly a scipy slice's
    /// arrays (no minor-axis filtering), so `csr/`/`csc/` can show them.
    pub fn has_exact_arrays(&self) -> bool {
        self.minor.is_none() && self.minor_list.is_none()
    }

    /// The minor-axis list's bytes (see [`gather::u64_at`]) when there is one: fetch once per
    /// pass over the entries, then ask [`Sparse::minor_position`].
    pub fn minor_map(&self) -> crate::storage::StorageResult<Option<crate::cache::Bytes>> {
        self.minor_list.as_ref().map(gather::Sel::bytes).transpose()
    }

    /// Maps a stored minor index to its position in the view, or `None` when the view leaves
    /// it out; `Err(i)` when a whole-axis view meets an index past `extent` (corrupt data).
    /// `map` is [`Sparse::minor_map`]'s answer.
    pub fn minor_position(&self, map: Option<&[u8]>, i: u64, extent: u64) -> Result<Option<u64>, u64> {
        if let Some(list) = map.filter(|_| self.minor_list.is_some()) {
            let (mut lo, mut hi) = (0usize, list.len() / 8);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match gather::u64_at(list, mid).cmp(&i) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return Ok(Some(mid as u64)),
                }
            }
            return Ok(None);
        }
        match self.minor {
            Some((m0, m1)) => Ok((i >= m0 && i < m1).then(|| i - m0)),
            None if i < extent => Ok(Some(i)),
            None => Err(i),
        }
    }
}

/// A 1-D record array.
#[derive(Clone)]
pub struct Records {
    /// The compound array.
    pub array: Arr,
    /// The fields, as columns (sub-array fields are 2-D arrays).
    pub fields: Vec<(Field, Arr)>,
}
