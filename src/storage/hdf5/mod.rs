//! HDF5 backend: opens a file read-only with the HDF5 library (metadata, strings) and maps it
//! into memory (numeric chunk data, decoded without the library's global lock).
//!
//! Modules: [`tree`] walks groups, [`attrs`] turns attributes into JSON, [`dtype`] maps
//! datatypes, [`chunks`] lists chunk addresses, [`source`] implements
//! [`ArraySource`](crate::storage::ArraySource), [`strings`] reads through the library, and
//! [`ffi`] wraps the C API.

pub mod attrs;
pub mod chunks;
pub mod dtype;
pub mod ffi;
pub mod source;
pub mod strings;
pub mod tree;

#[cfg(test)]
mod tests;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use ffi::{locked, Hid};

use super::{StorageError, StorageResult, Store, StoreInfo};

/// The HDF5 format signature.
const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// An open file shared by all array readers: the library handle and a read-only mapping.
pub struct FileCtx {
    /// The whole file, mapped read-only (the store is treated as immutable).
    pub mmap: memmap2::Mmap,
    /// The library's file handle (keeps the file open while readers exist).
    pub file: Hid,
}

/// Opens an HDF5 file read-only and builds its whole metadata tree.
pub fn open(path: &Path) -> StorageResult<Store> {
    let location = path.display().to_string();
    let io = |e: std::io::Error| StorageError::Io {
        path: location.clone(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let file = std::fs::File::open(path).map_err(io)?;
    if !has_signature(&file, meta.len()).map_err(io)? {
        return Err(StorageError::NotAStore {
            path: location,
            reason: "no HDF5 signature".into(),
        });
    }
    // SAFETY: the store is opened read-only and treated as immutable while mounted.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let fid = open_lib(path, &location)?;
    let root = locked(|| {
        Hid::new(
            unsafe { hdf5_sys::h5g::H5Gopen2(fid.id(), c"/".as_ptr(), 0) },
            &location,
        )
    })
    .map_err(|e| StorageError::corrupt(&location, e.to_string()))?;
    let ctx = Arc::new(FileCtx { mmap, file: fid });
    let root = tree::walk(&ctx, &root, "/", 0)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    Ok(Store {
        root,
        info: StoreInfo {
            format: "hdf5",
            location,
            size: meta.len(),
            mtime,
            inode: Some(std::os::unix::fs::MetadataExt::ino(&meta)),
        },
    })
}

/// Opens the file with the library; a failure after a valid signature means a damaged file.
fn open_lib(path: &Path, location: &str) -> StorageResult<Hid> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        StorageError::NotAStore {
            path: location.into(),
            reason: "path contains NUL".into(),
        }
    })?;
    locked(|| {
        let id =
            unsafe { hdf5_sys::h5f::H5Fopen(cpath.as_ptr(), hdf5_sys::h5f::H5F_ACC_RDONLY, 0) };
        Hid::new(id, location)
    })
    .map_err(|e| match e {
        StorageError::Hdf5 { path, reason } => StorageError::Corrupt { path, reason },
        other => other,
    })
}

/// Looks for the signature at offsets 0, 512, 1024, 2048, … (user blocks).
fn has_signature(file: &std::fs::File, len: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut off = 0u64;
    let mut buf = [0u8; 8];
    while off + 8 <= len {
        file.read_exact_at(&mut buf, off)?;
        if &buf == SIGNATURE {
            return Ok(true);
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    Ok(false)
}
