//! The transposed copy of a stored sparse matrix — `csc/` of a CSR matrix, `csr/` of a CSC one —
//! read from its index ([`crate::index`]). The directory is resolved on use: making the index
//! handle reads the matrix's `indptr` ends, which the mount must not wait for (a slow or
//! failing remote store would hold up the mount, and a transient failure would stick).

use std::sync::Arc;

use super::npy_file::NpyFile;
use super::{DynDir, FileContent, VTree, ViewResult};
use crate::index::{IndexHandle, IndexService};
use crate::model::{Sparse, SparseFormat};

/// The arrays of the transposed matrix, as scipy names them.
const FILES: [&str; 3] = ["data.npy", "indices.npy", "indptr.npy"];

/// `csc/` (or `csr/`) of a whole stored sparse matrix that may be indexed.
pub struct TransposedDir {
    index: Arc<IndexService>,
    stored: Sparse,
}

impl TransposedDir {
    /// The transposed arrays of `stored`, from `index`.
    pub fn new(index: Arc<IndexService>, stored: Sparse) -> Self {
        TransposedDir { index, stored }
    }

    /// The directory's name: the transposed format's.
    pub fn name(&self) -> &'static str {
        match self.stored.format {
            SparseFormat::Csr => SparseFormat::Csc.name(),
            SparseFormat::Csc => SparseFormat::Csr.name(),
        }
    }
}

impl DynDir for TransposedDir {
    /// The three arrays, or nothing when the index cannot be used (the log says why).
    fn list(&self) -> Vec<String> {
        match self.index.handle(&self.stored) {
            Some(_) => FILES.iter().map(|f| f.to_string()).collect(),
            None => Vec::new(),
        }
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        let at = FILES.iter().position(|f| *f == name)?;
        let handle = self.index.handle(&self.stored)?;
        let t = handle.transposed();
        let arr = [&t.data, &t.indices, &t.indptr][at];
        let inner = Arc::new(NpyFile::of_array(arr)?);
        Some(VTree::single(Arc::new(WaitsForIndex { inner, handle })))
    }
}

/// A file reading an index: its reads tell the FUSE layer they may wait, while the index is not
/// ready, so they are answered off its request threads.
struct WaitsForIndex {
    inner: Arc<dyn FileContent>,
    handle: Arc<IndexHandle>,
}

impl FileContent for WaitsForIndex {
    fn size(&self) -> ViewResult<u64> {
        self.inner.size()
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        self.inner.read(offset, len)
    }

    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> ViewResult<()> {
        self.inner.read_into(offset, len, out)
    }

    fn prefetch(&self, offset: u64, len: usize) -> ViewResult<usize> {
        self.inner.prefetch(offset, len)
    }

    fn read_may_block(&self) -> bool {
        !self.handle.is_ready()
    }
}
