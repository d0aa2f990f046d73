//! One matrix's index: its state (idle, building, ready, failed), the background build, the
//! bounded wait of readers, and the transposed arrays the views read (an [`ArraySource`] per
//! section, whose chunks are the file's checksummed blocks, read with `pread` through the cache).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::build::{self, Progress};
use super::format::{IndexFile, Layout, Section, BLOCK};
use super::{IndexError, IndexService};
use crate::cache::ChunkCache;
use crate::model::{Arr, ArrIds, Sparse, SparseFormat};
use crate::storage::{ArrayMeta, ArraySource, ChunkGrid, DType, NumType, StorageError, StorageResult};

/// After a failed build, readers get the error for this long before a retry.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Working memory of a build when the budget has none to lend.
const MIN_BUILD_MEM: u64 = 4 << 20;

enum State {
    Idle,
    Building,
    Ready(Arc<IndexFile>),
    Failed { why: String, at: Instant },
}

/// The transposed index of one stored sparse matrix.
pub struct IndexHandle {
    service: Weak<IndexService>,
    stored: Sparse,
    layout: Layout,
    path: PathBuf,
    data_width: u64,
    transposed: Sparse,
    state: Mutex<State>,
    changed: Condvar,
    progress: Progress,
    built_bytes: AtomicU64,
}

/// A stable 64-bit FNV-1a hash (file names must not change between builds of annfs).
fn fnv(parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The index file's name for matrix `matrix` of the store at `location` (its identity's).
pub(super) fn file_name(location: &str, matrix: &str) -> String {
    let readable: String = matrix.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(64).collect();
    format!("{:016x}{readable}.idx", fnv(&[location, matrix]))
}

impl IndexHandle {
    /// The index of `stored` (a whole stored matrix) with `layout`, in `service`'s directory.
    pub(super) fn new(service: Arc<IndexService>, stored: Sparse, layout: Layout, ids: &ArrIds, cache: &Arc<ChunkCache>) -> Arc<Self> {
        let path = service.dir.join(file_name(&layout.store.location, &layout.matrix));
        let data_type = stored.data.num_type().unwrap_or(NumType::U8);
        let index_type = if layout.index_width() == 8 { NumType::I64 } else { NumType::I32 };
        Arc::new_cyclic(|me: &Weak<IndexHandle>| {
            let arr = |section: Section, len: u64, t: NumType| {
                let meta = ArrayMeta {
                    path: format!("{} (index {section:?})", layout.matrix),
                    dtype: DType::Num(t),
                    shape: vec![len],
                    null: false,
                    grid: ChunkGrid::new(vec![len], vec![(BLOCK / t.size() as u64).max(1)]),
                    storage_desc: "annfs transposed index".into(),
                };
                Arr::new(Arc::new(IndexSource { handle: me.clone(), section, meta }), cache, ids)
            };
            let transposed = Sparse {
                format: match stored.format {
                    SparseFormat::Csr => SparseFormat::Csc,
                    SparseFormat::Csc => SparseFormat::Csr,
                },
                shape: stored.shape,
                data: arr(Section::Data, layout.nnz, data_type),
                indices: arr(Section::Indices, layout.nnz, index_type),
                indptr: arr(Section::Indptr, layout.out_major() + 1, index_type),
                indptr_base: 0,
                minor: None,
                minor_list: None,
                // The build writes each new line's entries by increasing old line.
                sorted: true,
            };
            IndexHandle {
                service: Arc::downgrade(&service),
                data_width: data_type.size() as u64,
                stored,
                layout,
                path,
                transposed,
                state: Mutex::new(State::Idle),
                changed: Condvar::new(),
                progress: Progress::default(),
                built_bytes: AtomicU64::new(0),
            }
        })
    }

    /// The transposed matrix (CSC for a stored CSR, CSR for a stored CSC), read from the index.
    pub fn transposed(&self) -> &Sparse {
        &self.transposed
    }

    /// The store path of the matrix.
    pub fn matrix(&self) -> &str {
        &self.layout.matrix
    }

    /// The index file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Build progress.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Bytes written by the last build of this process (0 if none).
    pub fn built_bytes(&self) -> u64 {
        self.built_bytes.load(Ordering::Relaxed)
    }

    /// True once the index is ready to read.
    pub fn is_ready(&self) -> bool {
        matches!(*self.state.lock(), State::Ready(_))
    }

    /// True when a valid index file is already there (and remembers it).
    pub fn has_valid_file(&self) -> bool {
        let mut st = self.state.lock();
        match IndexFile::open(&self.path, &self.layout, self.data_width) {
            Ok(f) => {
                *st = State::Ready(Arc::new(f));
                true
            }
            Err(_) => false,
        }
    }

    /// The state for `.annfs/stats.json`.
    pub fn status(&self) -> serde_json::Value {
        let (state, error) = match &*self.state.lock() {
            State::Idle => ("not built", None),
            State::Building => ("building", None),
            State::Ready(_) => ("ready", None),
            State::Failed { why, .. } => ("failed", Some(why.clone())),
        };
        serde_json::json!({
            "state": state,
            "percent": self.progress.percent(),
            "file": self.path.display().to_string(),
            "error": error,
        })
    }

    /// The ready index file: opened if valid, else built (in the background, once), waiting at
    /// most the service's wait time.
    pub fn ready(self: &Arc<Self>) -> Result<Arc<IndexFile>, IndexError> {
        let service = self.service.upgrade().ok_or_else(|| self.unavailable("the mount is shutting down".into()))?;
        let deadline = service.wait.map(|w| Instant::now() + w);
        let mut st = self.state.lock();
        loop {
            match &*st {
                State::Ready(f) => return Ok(f.clone()),
                State::Idle => match IndexFile::open(&self.path, &self.layout, self.data_width) {
                    Ok(f) => *st = State::Ready(Arc::new(f)),
                    Err(e) => {
                        if let Err(why) = &service.writable {
                            *st = State::Failed { why: format!("no valid index ({e}) and {why}"), at: Instant::now() };
                            continue;
                        }
                        log::info!("{}: building the transposed index ({e})", self.layout.matrix);
                        *st = State::Building;
                        self.start_build();
                    }
                },
                State::Building => match deadline {
                    None => self.changed.wait(&mut st),
                    Some(d) => {
                        if self.changed.wait_until(&mut st, d).timed_out() && matches!(*st, State::Building) {
                            let percent = self.progress.percent();
                            log::warn!("{}: index being built ({percent}% done); this read fails with EIO", self.layout.matrix);
                            return Err(IndexError::Building { matrix: self.layout.matrix.clone(), percent });
                        }
                    }
                },
                State::Failed { why, at } => {
                    if at.elapsed() < RETRY_AFTER {
                        return Err(self.unavailable(why.clone()));
                    }
                    *st = State::Idle;
                }
            }
        }
    }

    fn unavailable(&self, reason: String) -> IndexError {
        IndexError::Unavailable { matrix: self.layout.matrix.clone(), reason }
    }

    fn start_build(self: &Arc<Self>) {
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("annfs-index".into()).spawn(move || {
            let result = me.run_build();
            let mut st = me.state.lock();
            *st = match result {
                Ok(f) => State::Ready(f),
                Err(e) => {
                    log::error!("{}: building the index failed: {e}", me.layout.matrix);
                    State::Failed { why: e.to_string(), at: Instant::now() }
                }
            };
            me.changed.notify_all();
        });
        if let Err(e) = spawned {
            *self.state.lock() = State::Failed { why: format!("cannot start a build thread: {e}"), at: Instant::now() };
        }
    }

    fn run_build(&self) -> Result<Arc<IndexFile>, IndexError> {
        let service = self.service.upgrade().ok_or_else(|| self.unavailable("the mount is shutting down".into()))?;
        let _one_at_a_time = service.build_lock.lock();
        // Another build (this process or another) may have written it meanwhile.
        if let Ok(f) = IndexFile::open(&self.path, &self.layout, self.data_width) {
            return Ok(Arc::new(f));
        }
        let l = &self.layout;
        let want = l.nnz.saturating_mul(2 * (l.index_width() + self.data_width)).saturating_add(l.out_major() * 16 + (8 << 20));
        let loan = service.cache.lend(want);
        let start = Instant::now();
        let bytes = build::build(&self.stored, l, &self.path, loan.bytes().max(MIN_BUILD_MEM), &self.progress)?;
        drop(loan);
        self.built_bytes.store(bytes, Ordering::Relaxed);
        log::info!("{}: index built in {:.2} s ({bytes} bytes) at {}", l.matrix, start.elapsed().as_secs_f64(), self.path.display());
        Ok(Arc::new(IndexFile::open(&self.path, l, self.data_width)?))
    }

    /// Forgets a damaged file (removing it, if it is still the one on disk) so that the next
    /// read rebuilds it.
    fn discard(&self, f: &Arc<IndexFile>) {
        let mut st = self.state.lock();
        if !matches!(&*st, State::Ready(g) if Arc::ptr_eq(g, f)) {
            return;
        }
        let writable = self.service.upgrade().is_some_and(|s| s.writable.is_ok());
        if writable {
            let _ = std::fs::remove_file(&self.path);
            *st = State::Idle;
        } else {
            *st = State::Failed { why: format!("{} is damaged and cannot be rebuilt here", self.path.display()), at: Instant::now() };
        }
    }

    /// Block `b` of `section`; a damaged block makes the index be rebuilt (once) and read again.
    fn read_block(self: &Arc<Self>, section: Section, b: u64) -> Result<Vec<u8>, IndexError> {
        let mut last = None;
        for _ in 0..2 {
            let f = self.ready()?;
            match f.read_block(section, b) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    log::error!("{}: {e}; rebuilding the index", self.layout.matrix);
                    self.discard(&f);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.unavailable("unreadable".into())))
    }
}

/// One section of an index as a store array (chunks = checksummed blocks).
struct IndexSource {
    handle: Weak<IndexHandle>,
    section: Section,
    meta: ArrayMeta,
}

impl ArraySource for IndexSource {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let h = self.handle.upgrade().ok_or_else(|| StorageError::corrupt(&self.meta.path, "index closed"))?;
        h.read_block(self.section, index).map_err(IndexError::into_storage)
    }

    fn read_strings(&self, _start: u64, _end: u64) -> StorageResult<Vec<String>> {
        Err(StorageError::unsupported(&self.meta.path, "not a string array"))
    }
}
