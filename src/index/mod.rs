//! Transposed (column-major) indexes of sparse matrices, for gene columns (`cols/`, `genes/`)
//! and the transposed `csc/` (of a CSR matrix) or `csr/` (of a CSC matrix).
//!
//! An index is built once per (store, matrix) by a streaming pass within the memory budget
//! ([`build`]), written atomically into the index directory ([`format`]), keyed by the store's
//! identity and validated on every open and every block read. Inside a mount the first access
//! starts the build on a background thread and waits a bounded time ([`IndexHandle`]); index
//! blocks are read with `pread` through the mount's one chunk cache.

/// Calls `recv.method::<IW, DW>(args…)` with the index and value byte widths `widths` as const
/// generics for the common pairs (the scatter's inner loop then copies fixed-size entries), and
/// `::<0, 0>` (widths read at run time) for any other pair.
macro_rules! with_widths {
    ($widths:expr, $recv:ident . $method:ident ( $($arg:expr),* $(,)? )) => {
        match $widths {
            (4, 4) => $recv.$method::<4, 4>($($arg),*),
            (4, 8) => $recv.$method::<4, 8>($($arg),*),
            (8, 4) => $recv.$method::<8, 4>($($arg),*),
            (8, 8) => $recv.$method::<8, 8>($($arg),*),
            (4, 2) => $recv.$method::<4, 2>($($arg),*),
            (4, 1) => $recv.$method::<4, 1>($($arg),*),
            _ => $recv.$method::<0, 0>($($arg),*),
        }
    };
}

mod buffered;
pub mod build;
pub mod format;
mod input;
mod windowed;
mod handle;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use handle::IndexHandle;

use crate::cache::ChunkCache;
use crate::model::Sparse;
use crate::storage::{StorageError, StoreInfo};
use format::Identity;

/// How long a read waits for an index build inside a mount, by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// A failure to build, open or read an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An index file is damaged, partial or stale.
    #[error("{path}: invalid index: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the stored matrix failed.
    #[error(transparent)]
    Store(#[from] StorageError),
    /// The index is being built and was not ready in time.
    #[error("{matrix}: index being built ({percent}% done), try again shortly")]
    Building {
        /// The matrix.
        matrix: String,
        /// Progress.
        percent: u64,
    },
    /// No index can be used.
    #[error("{matrix}: no index: {reason}")]
    Unavailable {
        /// The matrix.
        matrix: String,
        /// Why.
        reason: String,
    },
}

impl IndexError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        IndexError::Io { path: path.display().to_string(), source }
    }

    /// A damaged or mismatched index.
    pub fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        IndexError::Invalid { path: path.into(), reason: reason.into() }
    }

    /// As a storage error (the views' error type; `EIO` at the FUSE boundary).
    pub fn into_storage(self) -> StorageError {
        match self {
            IndexError::Store(e) => e,
            IndexError::Io { path, source } => StorageError::Io { path, source },
            IndexError::Invalid { path, reason } => StorageError::corrupt(path, reason),
            e @ IndexError::Building { .. } => {
                let msg = e.to_string();
                let IndexError::Building { matrix, .. } = e else { unreachable!() };
                StorageError::Io { path: matrix, source: std::io::Error::new(std::io::ErrorKind::TimedOut, msg) }
            }
            IndexError::Unavailable { matrix, reason } => StorageError::unsupported(matrix, reason),
        }
    }
}

/// Where indexes live and how long readers wait for one.
#[derive(Clone, Debug, Default)]
pub struct IndexConfig {
    /// The index directory (`None`: `index/` under the cache directory).
    pub dir: Option<PathBuf>,
    /// How long a read waits for a build (`None`: until it is done, as `annfs cat` does).
    pub wait: Option<Duration>,
}

/// Why a matrix has no usable index, and whether that lasts as long as the mount.
struct Unusable {
    why: String,
    lasting: bool,
}

/// The indexes of one opened store.
pub struct IndexService {
    dir: PathBuf,
    /// `Err(why)` when the directory cannot be written.
    writable: Result<(), String>,
    /// `Err(why)` when the store has no stable identity (no index can be keyed).
    identity: Result<Identity, String>,
    wait: Option<Duration>,
    cache: Arc<ChunkCache>,
    handles: Mutex<HashMap<String, Option<Arc<IndexHandle>>>>,
    /// One build at a time (each borrows up to three quarters of the budget).
    build_lock: Mutex<()>,
}

impl IndexService {
    /// The index service of the store `info`, with indexes in `dir`.
    pub fn new(dir: PathBuf, wait: Option<Duration>, info: &StoreInfo, cache: Arc<ChunkCache>) -> Arc<Self> {
        let writable = format::probe_writable(&dir).map_err(|e| format!("{} is not writable: {e}", dir.display()));
        let identity = identity(info);
        Arc::new(IndexService {
            dir,
            writable,
            identity,
            wait,
            cache,
            handles: Mutex::new(HashMap::new()),
            build_lock: Mutex::new(()),
        })
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `Err(why)` when indexes cannot be written here.
    pub fn writable(&self) -> Result<(), &str> {
        self.writable.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// True when the stored sparse matrix that `m` is (a row window of) may have an index here:
    /// the store has an identity, and the directory can be written or already holds a file for
    /// the matrix. No store I/O: the tree asks this while it is built (at mount), and
    /// [`IndexService::handle`] (which reads the matrix's `indptr` ends) runs on first use.
    pub fn may_index(&self, m: &Sparse) -> bool {
        let Ok(store) = &self.identity else { return false };
        m.has_exact_arrays() && (self.writable.is_ok() || self.dir.join(handle::file_name(&store.location, &matrix_key(m))).exists())
    }

    /// The index of the stored sparse matrix that `m` is (a row window of), or `None` (logged)
    /// when none can be used: no store identity, or no valid index and a directory that cannot
    /// be written (remembered for the matrix), or the matrix's `indptr` ends could not be read
    /// (asked again next time: the failure may be transient). `m` must not be filtered on its
    /// minor axis.
    pub fn handle(self: &Arc<Self>, m: &Sparse) -> Option<Arc<IndexHandle>> {
        if !m.has_exact_arrays() {
            return None;
        }
        let key = matrix_key(m);
        if let Some(h) = self.handles.lock().get(&key) {
            return h.clone();
        }
        // Made outside the lock: making reads the store, which may be slow (a remote store).
        let made = self.make_handle(m, &key);
        let mut handles = self.handles.lock();
        if let Some(h) = handles.get(&key) {
            return h.clone();
        }
        match made {
            Ok(h) => {
                handles.insert(key, Some(h.clone()));
                Some(h)
            }
            Err(Unusable { why, lasting }) => {
                log::warn!("{key}: no transposed index ({why}); columns of a CSR matrix are served by scanning it (slow)");
                if lasting {
                    handles.insert(key, None);
                }
                None
            }
        }
    }

    fn make_handle(self: &Arc<Self>, m: &Sparse, key: &str) -> Result<Arc<IndexHandle>, Unusable> {
        let store = self.identity.clone().map_err(|why| Unusable { why, lasting: true })?;
        let whole = whole(m);
        let layout = build::layout(&whole, store, key.to_string()).map_err(|e| Unusable { why: e.to_string(), lasting: false })?;
        let h = IndexHandle::new(self.clone(), whole, layout, &self.cache.ids.index_arrays, &self.cache);
        if let Err(why) = &self.writable {
            if !h.has_valid_file() {
                return Err(Unusable { why: format!("no valid index in {} and {why}", self.dir.display()), lasting: true });
            }
        }
        Ok(h)
    }

    /// Build state of every index touched so far, for `.annfs/stats.json`.
    pub fn status(&self) -> serde_json::Value {
        let handles = self.handles.lock();
        let matrices: serde_json::Map<String, serde_json::Value> = handles
            .iter()
            .map(|(k, h)| (k.clone(), h.as_ref().map(|h| h.status()).unwrap_or_else(|| "scan (no index)".into())))
            .collect();
        serde_json::json!({
            "dir": self.dir.display().to_string(),
            "writable": self.writable.is_ok(),
            "matrices": matrices,
        })
    }
}

/// The store path of a sparse matrix: its `indptr`'s parent group.
fn matrix_key(m: &Sparse) -> String {
    let p = m.indptr.path();
    p.strip_suffix("/indptr").filter(|s| !s.is_empty()).unwrap_or(p).to_string()
}

/// The whole stored matrix that `m` is a major-axis window of.
fn whole(m: &Sparse) -> Sparse {
    let indptr = m.indptr.whole();
    let major = indptr.len().saturating_sub(1);
    let mut shape = m.shape;
    match m.format {
        crate::model::SparseFormat::Csr => shape[0] = major,
        crate::model::SparseFormat::Csc => shape[1] = major,
    }
    Sparse { format: m.format, shape, data: m.data.whole(), indices: m.indices.whole(), indptr, indptr_base: 0, minor: None, minor_list: None, sorted: false }
}

/// The identity an index is keyed by: canonical path, size, mtime, inode; for a remote store
/// its URL, size and version (ETag or Last-Modified).
fn identity(info: &StoreInfo) -> Result<Identity, String> {
    if crate::storage::range::Remote::parse(&info.location).is_some() {
        let etag = info.version.clone().ok_or("the server gives no ETag or Last-Modified for the store")?;
        return Ok(Identity { location: info.location.clone(), size: info.size, mtime: 0, inode: None, etag: Some(etag) });
    }
    let mtime = info.mtime.ok_or("the store has no modification time (remote stores are not indexed)")?;
    let location = info.canonical_location().map_err(|e| format!("cannot resolve {}: {e}", info.location))?;
    Ok(Identity { location, size: info.size, mtime, inode: info.inode, etag: None })
}

/// The default index directory: `index/` under the cache directory.
pub fn default_dir(cache_dir: Option<&Path>) -> Option<PathBuf> {
    cache_dir.map(Path::to_path_buf).or_else(crate::views::sidecar::default_dir).map(|d| d.join("index"))
}
