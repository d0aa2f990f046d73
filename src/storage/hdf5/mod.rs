//! HDF5 backend: opens a file read-only with the HDF5 library (metadata, attributes) and reads
//! dataset bytes itself with positioned reads (numeric chunks, contiguous blocks, strings and
//! their global heap), decoded without the library's global lock.
//!
//! Modules: [`tree`] walks groups, [`attrs`] turns attributes into JSON, [`dtype`] maps
//! datatypes, [`chunks`] lists chunk addresses, [`layout`] describes storage, [`source`]
//! implements [`ArraySource`](crate::storage::ArraySource) with [`raw`] byte reads over
//! [`file`] (datasets reopened on use by [`handles`]), [`vlen`] and [`gheap`] decode strings, [`library`] reads through the library
//! (attributes, compact/external layouts, string fields of records), [`vfd`] is the driver the
//! library reads the file through (it checks heap collections first, and has the child nodes of
//! chunk-index nodes, parsed by [`btree`], fetched together from remote files), and [`ffi`]
//! wraps the C API.

pub mod attrs;
pub mod btree;
mod btree2;
pub mod chunk_index;
pub mod chunks;
pub mod dtype;
pub mod ffi;
pub mod file;
mod extensible_array;
mod fixed_array;
pub mod gheap;
pub mod handles;
pub mod layout;
mod raw;
pub mod source;
pub mod library;
pub mod tree;
pub mod vfd;
pub mod vlen;

#[cfg(test)]
mod library_tests;
#[cfg(test)]
mod tests;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use ffi::{locked, Hid};

use super::range::{LocalFile, RangeRead};
use super::{StorageError, StorageResult, Store, StoreInfo};

/// The HDF5 format signature.
const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// An open file shared by all array readers: the library handle and the file for data reads.
pub struct FileCtx {
    /// The file for positioned data reads (the store is treated as immutable).
    pub data: file::DataFile,
    /// Widths of addresses and lengths in the file (`None`: outside what annfs decodes, so
    /// variable-length strings go through the library).
    pub sizes: Option<gheap::Sizes>,
    /// The library's file handle (keeps the file open while readers exist).
    pub file: Hid,
    /// Dataset handles opened on use and the few kept open.
    pub handles: handles::Handles,
    /// The store's gate, entered around every read of the file.
    pub gate: Arc<super::gate::Gate>,
}

/// Opens an HDF5 file read-only and builds its whole metadata tree.
pub fn open(path: &Path) -> StorageResult<Store> {
    let location = path.display().to_string();
    let io = |e: std::io::Error| StorageError::Io {
        path: location.clone(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let src = LocalFile::open(path).map_err(io)?;
    let info = StoreInfo {
        format: "hdf5",
        location: location.clone(),
        size: meta.len(),
        mtime: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64),
        inode: Some(std::os::unix::fs::MetadataExt::ino(&meta)),
        version: None,
    };
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| StorageError::NotAStore {
        path: location.clone(),
        reason: "path contains NUL".into(),
    })?;
    open_source(Arc::new(src), &cpath, info)
}

/// Opens the HDF5 file behind a remote byte source (its length and version already known).
pub fn open_remote(src: Arc<dyn RangeRead>, info: StoreInfo) -> StorageResult<Store> {
    let handoff = vfd::Handoff::new(src.clone());
    let name = std::ffi::CString::new(handoff.name()).map_err(|_| StorageError::NotAStore {
        path: info.location.clone(),
        reason: "bad name".into(),
    })?;
    let store = open_source(src, &name, info)?;
    load_matrix_indexes(&store);
    Ok(store)
}

/// Starts loading the chunk indexes of the main matrix (`X`, or its `data`, `indices` and
/// `indptr`) on background threads. Every read of X needs them, and remotely each costs round
/// trips (a B-tree level per round trip, up to 32 nodes at a time): loaded after the open, the
/// first read of X finds them (or waits for the load under way: it is single-flight) instead of
/// starting them. A read of `X/dense.npy` over S3 with 20 ms per request waited ~90 ms for them.
fn load_matrix_indexes(store: &Store) {
    for path in ["X", "X/data", "X/indices", "X/indptr"] {
        if let Some(crate::storage::Node::Array(a)) = store.root.get_path(path) {
            let src = a.source.clone();
            if !src.index_loaded() {
                let _ = std::thread::Builder::new().name("annfs-index".into()).spawn(move || src.load_index());
            }
        }
    }
}

/// Opens the file the driver finds under `name`, reading data through `src`.
fn open_source(src: Arc<dyn RangeRead>, name: &std::ffi::CStr, info: StoreInfo) -> StorageResult<Store> {
    let location = info.location.clone();
    let found = find_superblock(&*src).map_err(|e| StorageError::Io { path: location.clone(), source: e })?;
    if found.is_none() {
        return Err(StorageError::NotAStore {
            path: location,
            reason: "no HDF5 signature".into(),
        });
    }
    let fid = open_lib(name, &location)?;
    let sizes = offset_sizes(&fid, &location);
    let root = locked(|| {
        Hid::new(
            // SAFETY: `fid` is the open file and `c"/"` a static C string; under the library lock,
            // and the group id is owned by the `Hid`.
            unsafe { hdf5_sys::h5g::H5Gopen2(fid.id(), c"/".as_ptr(), 0) },
            &location,
        )
    })
    .map_err(|e| StorageError::corrupt(&location, e.to_string()))?;
    let gate = Arc::new(super::gate::Gate::default());
    let ctx = Arc::new(FileCtx {
        data: file::DataFile::new(src),
        sizes,
        file: fid,
        handles: handles::Handles::default(),
        gate: gate.clone(),
    });
    let root = tree::walk(&ctx, &root, "/")?;
    Ok(Store { root, info, gate })
}

/// Opens the file with the library; a failure after a valid signature means a damaged file.
fn open_lib(name: &std::ffi::CStr, location: &str) -> StorageResult<Hid> {
    // Through the guarding driver: the library's reads of global heap collections are checked.
    let fapl = vfd::fapl(location)?;
    locked(|| {
        // SAFETY: `name` is a NUL-terminated string alive for the call and `fapl` an open access
        // list; the driver's callbacks run inside H5Fopen, under the library lock `locked` holds.
        let id = unsafe {
            hdf5_sys::h5f::H5Fopen(name.as_ptr(), hdf5_sys::h5f::H5F_ACC_RDONLY, fapl.id())
        };
        Hid::new(id, location)
    })
    .map_err(|e| match e {
        StorageError::Hdf5 { path, reason } => StorageError::Corrupt { path, reason },
        other => other,
    })
}

/// The file's address and length widths (superblock), from its creation property list.
fn offset_sizes(fid: &Hid, location: &str) -> Option<gheap::Sizes> {
    use hdf5_sys::{h5f, h5p};
    let (mut addr, mut size) = (0usize, 0usize);
    let ok = locked(|| {
        // SAFETY: `fid` is an open file id; the property list is owned by `fcpl`; under the
        // library lock.
        let Ok(fcpl) = Hid::new(unsafe { h5f::H5Fget_create_plist(fid.id()) }, location) else {
            return false;
        };
        // SAFETY: `addr` and `size` are live `usize` (size_t) out-pointers and `fcpl` is open;
        // under the library lock.
        unsafe { h5p::H5Pget_sizes(fcpl.id(), &mut addr, &mut size) >= 0 }
    });
    let sizes = ok.then(|| gheap::Sizes::new(addr, size)).flatten();
    if sizes.is_none() {
        log::info!("{location}: address/length widths {addr}/{size}: strings read through the library");
    }
    sizes
}

/// The offset of the HDF5 signature (superblock), looked for at 0, 512, 1024, 2048, … (after a
/// user block); `None` when absent.
pub fn find_superblock(src: &dyn RangeRead) -> std::io::Result<Option<u64>> {
    let len = src.len();
    let mut off = 0u64;
    let mut buf = [0u8; 8];
    while off + 8 <= len {
        src.read_exact_at(&mut buf, off)?;
        if &buf == SIGNATURE {
            return Ok(Some(off));
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    Ok(None)
}
