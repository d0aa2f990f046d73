//! `cols/` of a matrix directory whose columns are vars: one column (`cols/J.npy`, `cols/J.txt`)
//! or a column slice (`cols/S:E.npy`, `cols/S:E.mtx`), resolved on lookup with the slice rules
//! of `rows/`.
//!
//! Dense and CSC matrices are read as stored. A CSR matrix is read from its transposed index
//! ([`crate::index`]) restricted to the view's rows; without a usable index its columns are
//! scanned out of every row (correct, slow).

use std::sync::Arc;

use super::matrix::{dense_rows, narrow_rows};
use super::npy_file::NpyFile;
use super::rows::{mtx_file, parse_index, parse_slice};
use super::text_file::{NumRowsText, TextFile};
use super::readme::{readme_listing, readme_lookup};
use super::tree::TreeOptions;
use super::format::npy_header::header;
use super::{DynDir, FileContent, VTree, ViewResult};
use crate::cache::ChunkCache;
use crate::index::{IndexHandle, IndexService};
use crate::model::{Matrix, SparseFormat};
use crate::storage::{NumType, StorageError};
use parking_lot::Mutex;

/// Dense output per cached block of a rendered column file.
const BLOCK_BYTES: u64 = 1 << 20;

/// Where a matrix directory's columns come from.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per matrix directory, cloned rarely
pub enum ColSource {
    /// The matrix itself: dense or CSC (cheap columns), or CSR without an index (scanned).
    Direct(Matrix),
    /// The transposed index of a stored CSR matrix, restricted to rows `[a, b)` of it.
    Indexed {
        /// The index.
        handle: Arc<IndexHandle>,
        /// The view's rows of the stored matrix (`None`: all).
        rows: Option<(u64, u64)>,
    },
}

/// A matrix directory's columns before they are read: resolved to a [`ColSource`] on each
/// use, so that the transposed index of a CSR matrix is looked up (which reads its `indptr`
/// ends) when a column is first asked for, not while the tree is built at mount.
#[derive(Clone)]
pub struct Columns {
    m: Matrix,
    index: Option<Arc<IndexService>>,
}

impl Columns {
    /// The columns of `m` (a matrix directory's matrix, possibly a row window), indexed by
    /// `index` where it can.
    pub fn new(m: &Matrix, index: Option<&Arc<IndexService>>) -> Self {
        Columns { m: m.clone(), index: index.cloned() }
    }

    /// Where the columns come from now.
    pub fn source(&self) -> ColSource {
        ColSource::of(&self.m, self.index.as_ref())
    }

    /// `(rows, columns)` of the matrix.
    pub fn shape(&self) -> (u64, u64) {
        self.m.shape()
    }
}

impl ColSource {
    /// The column source of `m` (a matrix directory's matrix, possibly a row window).
    pub fn of(m: &Matrix, index: Option<&Arc<IndexService>>) -> ColSource {
        let Matrix::Sparse(s) = m else { return ColSource::Direct(m.clone()) };
        // CSC columns are cheap; a gathered selection (where/) is not a window of the stored
        // matrix the index transposes: both read their columns directly.
        if s.format != SparseFormat::Csr || s.indptr.is_derived() {
            return ColSource::Direct(m.clone());
        }
        match index.and_then(|i| i.handle(s)) {
            Some(handle) => {
                let a = s.indptr.offset();
                let all = a == 0 && s.shape[0] == handle.transposed().shape[0];
                ColSource::Indexed { handle, rows: (!all).then_some((a, a + s.shape[0])) }
            }
            None => ColSource::Direct(m.clone()),
        }
    }

    /// `(rows, columns)` of the view.
    pub fn shape(&self) -> (u64, u64) {
        match self {
            ColSource::Direct(m) => m.shape(),
            ColSource::Indexed { handle, rows } => {
                let (r, c) = (handle.transposed().shape[0], handle.transposed().shape[1]);
                (rows.map(|(a, b)| b - a).unwrap_or(r), c)
            }
        }
    }

    /// Columns `[c0, c1)` of the view, as a matrix whose columns are cheap to read (reads
    /// the index's pointers).
    pub fn cols(&self, c0: u64, c1: u64) -> ViewResult<Matrix> {
        let m = match self {
            ColSource::Direct(m) => m.clone(),
            ColSource::Indexed { handle, rows } => {
                let t = Matrix::Sparse(handle.transposed().clone());
                match rows {
                    Some((a, b)) => t.rows(*a, *b)?,
                    None => t,
                }
            }
        };
        m.cols(c0, c1)
    }

    /// The element type of the values.
    pub fn num_type(&self) -> Option<NumType> {
        match self {
            ColSource::Direct(m) => m.num_type(),
            ColSource::Indexed { handle, .. } => handle.transposed().data.num_type(),
        }
    }

    /// The index reads wait for, if any.
    pub fn handle(&self) -> Option<&Arc<IndexHandle>> {
        match self {
            ColSource::Indexed { handle, .. } => Some(handle),
            ColSource::Direct(_) => None,
        }
    }
}

/// What a column file shows.
#[derive(Clone, Copy)]
enum Kind {
    /// One column as a 1-D `.npy`.
    Npy1(u64),
    /// One column, one value per line.
    Txt(u64),
    /// Columns `[a, b)` as a 2-D `.npy`.
    Npy2(u64, u64),
    /// Columns `[a, b)` as MatrixMarket.
    Mtx(u64, u64),
}

/// `st_blksize` of a one-column `.npy`. `numpy.load` opens a file with a buffer of
/// `st_blksize` and keeps only the header of its first read, then reads the header and the body
/// again: with the mount's 1 MiB, a 4 MB column cost 5 MB of reads. Measured on fresh mounts of
/// the 1M-cell store (4 mounts x 150 columns, interleaved): `numpy.load` of a column 1.94 ->
/// 1.54 ms median, `cat` of one 2.47 -> 3.13 ms (it reads 256 KiB at a time instead of 1 MiB);
/// these files are numpy's (`cols/<J>.txt` is the shell's).
pub const COLUMN_IO_SIZE: u32 = 128 << 10;

/// Renders a column file of `src`.
fn make(src: &ColSource, kind: Kind, cache: &Arc<ChunkCache>, opts: &TreeOptions, key: &str) -> ViewResult<Arc<dyn FileContent>> {
    let (a, b) = match kind {
        Kind::Npy1(j) | Kind::Txt(j) => (j, j + 1),
        Kind::Npy2(a, b) | Kind::Mtx(a, b) => (a, b),
    };
    let m = src.cols(a, b)?;
    let unsupported = || StorageError::unsupported(key, "no numeric values");
    let t = m.num_type().ok_or_else(unsupported)?;
    let n = m.shape().0;
    let rows = || dense_rows(&m, cache, BLOCK_BYTES).ok_or_else(unsupported);
    let column = || narrow_rows(&m, cache).ok_or_else(unsupported);
    Ok(match kind {
        Kind::Npy1(_) => Arc::new(NpyFile::new(t, &[n], column()?).with_io_size(COLUMN_IO_SIZE)),
        Kind::Npy2(a, b) => Arc::new(NpyFile::new(t, &[n, b - a], rows()?)),
        Kind::Txt(_) => {
            let body = NumRowsText { rows: column()?, t };
            Arc::new(TextFile::new(Vec::new(), Arc::new(body), cache.clone()).remembered(opts.sidecar.clone(), key.to_string()))
        }
        Kind::Mtx(..) => Arc::new(mtx_file(&m, cache, false, opts, key.to_string()).ok_or_else(unsupported)?),
    })
}

/// A column file of an indexed matrix: made on first use, because making it reads the index
/// (which may still be being built). `.npy` sizes are known up front; reads tell the FUSE layer
/// they may wait, so they are answered off its request threads until the index is ready.
struct IndexedFile {
    src: ColSource,
    kind: Kind,
    cache: Arc<ChunkCache>,
    opts: TreeOptions,
    key: String,
    size: Option<u64>,
    made: Mutex<Option<Arc<dyn FileContent>>>,
}

impl IndexedFile {
    fn inner(&self) -> ViewResult<Arc<dyn FileContent>> {
        if let Some(f) = &*self.made.lock() {
            return Ok(f.clone());
        }
        let f = make(&self.src, self.kind, &self.cache, &self.opts, &self.key)?;
        *self.made.lock() = Some(f.clone());
        Ok(f)
    }
}

impl FileContent for IndexedFile {
    fn size(&self) -> ViewResult<u64> {
        match self.size {
            Some(s) => Ok(s),
            None => self.inner()?.size(),
        }
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        self.inner()?.read(offset, len)
    }

    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> ViewResult<()> {
        self.inner()?.read_into(offset, len, out)
    }

    fn prefetch(&self, offset: u64, len: usize) -> ViewResult<usize> {
        self.inner()?.prefetch(offset, len)
    }

    fn size_is_cheap(&self) -> bool {
        self.size.is_some() || self.made.lock().as_ref().is_some_and(|f| f.size_is_cheap())
    }

    fn read_may_block(&self) -> bool {
        self.src.handle().is_some_and(|h| !h.is_ready())
    }

    fn io_size(&self) -> Option<u32> {
        matches!(self.kind, Kind::Npy1(_)).then_some(COLUMN_IO_SIZE)
    }

    fn reads_ahead(&self) -> bool {
        // Made at the latest by the read asking (which makes it anyway, right after).
        self.inner().map_or(true, |f| f.reads_ahead())
    }
}

/// The file `kind` of `src`, as a one-file tree (`None`: not a numeric matrix).
fn column_tree(src: &ColSource, kind: Kind, cache: &Arc<ChunkCache>, opts: &TreeOptions, key: String) -> Option<VTree> {
    if src.handle().is_none() {
        return Some(VTree::single(make(src, kind, cache, opts, &key).ok()?));
    }
    let t = src.num_type()?;
    let n = src.shape().0;
    let npy = |shape: &[u64]| header(t.npy_descr(), shape).len() as u64 + shape.iter().product::<u64>() * t.size() as u64;
    let size = match kind {
        Kind::Npy1(_) => Some(npy(&[n])),
        Kind::Npy2(a, b) => Some(npy(&[n, b - a])),
        Kind::Txt(_) | Kind::Mtx(..) => None,
    };
    let f = IndexedFile { src: src.clone(), kind, cache: cache.clone(), opts: opts.clone(), key, size, made: Mutex::new(None) };
    Some(VTree::single(Arc::new(f)))
}

/// The files of one column `j` (`.npy` or `.txt`), shared by `cols/` and `genes/`.
pub fn column_file(src: &ColSource, j: u64, ext: &str, cache: &Arc<ChunkCache>, opts: &TreeOptions, key: String) -> Option<VTree> {
    let kind = match ext {
        "npy" => Kind::Npy1(j),
        "txt" => Kind::Txt(j),
        _ => return None,
    };
    column_tree(src, kind, cache, opts, key)
}

/// `cols/` of a matrix directory.
pub struct MatrixCols {
    cols: Columns,
    cache: Arc<ChunkCache>,
    opts: TreeOptions,
}

impl MatrixCols {
    /// The columns `cols`; `opts.prefix` is the matrix directory's virtual path.
    pub fn new(cols: Columns, cache: Arc<ChunkCache>, opts: TreeOptions) -> Self {
        MatrixCols { cols, cache, opts }
    }
}

const COLS_README: &str = "\
cols/ holds the matrix's columns (vars), resolved by name and not listed:
  cols/J.npy      column J as a 1-D array of n_rows values (stored dtype); cols/J.txt one value per line
  cols/S:E.npy    columns S..E-1 as a 2-D array, n_rows x (E-S), C order
  cols/S:E.mtx    the same columns as MatrixMarket (column numbers relative to S, 1-based)
J, S and E follow Python slice rules (0-based, E exclusive, either end may be omitted, negative
numbers count from the end). genes/NAME.npy is the same column addressed by var name.
Sparse CSR columns are read from a transposed index built once per store and matrix
(`annfs index STORE` builds it ahead of time).
";

impl DynDir for MatrixCols {
    fn list(&self) -> Vec<String> {
        readme_listing()
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        if let Some(readme) = readme_lookup(name, COLS_README) {
            return Some(readme);
        }
        let cols = self.cols.shape().1;
        let (stem, ext) = name.rsplit_once('.')?;
        let key = format!("{}/cols/{name}", self.opts.prefix);
        if let Some((a, b)) = parse_slice(stem, cols) {
            let kind = match ext {
                "npy" => Kind::Npy2(a, b),
                "mtx" => Kind::Mtx(a, b),
                _ => return None,
            };
            return column_tree(&self.cols.source(), kind, &self.cache, &self.opts, key);
        }
        column_file(&self.cols.source(), parse_index(stem, cols)?, ext, &self.cache, &self.opts, key)
    }
}
