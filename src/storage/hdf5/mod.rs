//! HDF5 backend: opens a file read-only with the HDF5 library (metadata, attributes) and reads
//! dataset bytes itself with positioned reads (numeric chunks, contiguous blocks, strings and
//! their global heap), decoded without the library's global lock.
//!
//! Modules: [`tree`] walks groups, [`attrs`] turns attributes into JSON, [`dtype`] maps
//! datatypes, [`chunks`] lists chunk addresses, [`layout`] describes storage, [`source`]
//! implements [`ArraySource`](crate::storage::ArraySource) with [`raw`] byte reads over
//! [`file`], [`vlen`] and [`gheap`] decode strings, [`strings`] reads through the library
//! (attributes, compact/external layouts, string fields of records), [`vfd`] is the driver the
//! library reads the file through (it checks heap collections first), and [`ffi`] wraps the C API.

pub mod attrs;
pub mod chunks;
pub mod dtype;
pub mod ffi;
pub mod file;
pub mod gheap;
pub mod layout;
mod raw;
pub mod source;
pub mod strings;
pub mod tree;
pub mod vfd;
pub mod vlen;

#[cfg(test)]
mod strings_tests;
#[cfg(test)]
mod tests;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use ffi::{locked, Hid};

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
    if find_superblock(&file, meta.len()).map_err(io)?.is_none() {
        return Err(StorageError::NotAStore {
            path: location,
            reason: "no HDF5 signature".into(),
        });
    }
    let fid = open_lib(path, &location)?;
    let sizes = offset_sizes(&fid, &location);
    let root = locked(|| {
        Hid::new(
            unsafe { hdf5_sys::h5g::H5Gopen2(fid.id(), c"/".as_ptr(), 0) },
            &location,
        )
    })
    .map_err(|e| StorageError::corrupt(&location, e.to_string()))?;
    let ctx = Arc::new(FileCtx {
        data: file::DataFile::new(file, meta.len()),
        sizes,
        file: fid,
    });
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
    // Through the guarding driver: the library's reads of global heap collections are checked.
    let fapl = vfd::fapl(location)?;
    locked(|| {
        let id = unsafe {
            hdf5_sys::h5f::H5Fopen(cpath.as_ptr(), hdf5_sys::h5f::H5F_ACC_RDONLY, fapl.id())
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
        let Ok(fcpl) = Hid::new(unsafe { h5f::H5Fget_create_plist(fid.id()) }, location) else {
            return false;
        };
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
pub fn find_superblock(file: &std::fs::File, len: u64) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut off = 0u64;
    let mut buf = [0u8; 8];
    while off + 8 <= len {
        file.read_exact_at(&mut buf, off)?;
        if &buf == SIGNATURE {
            return Ok(Some(off));
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    Ok(None)
}
