//! HDF5 backend (being written).
use super::{StorageError, StorageResult, Store};
use std::path::Path;

/// Opens an HDF5 file read-only.
pub fn open(path: &Path) -> StorageResult<Store> {
    Err(StorageError::unsupported(path.display().to_string(), "HDF5 backend not built yet"))
}
