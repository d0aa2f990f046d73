//! Errors raised while opening or reading a store. Every variant names the element.

use crate::util::clip;

/// Result alias for storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// What went wrong in a backend, always with the store path or element path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation on the store.
    #[error("{}: {source}", clip(path))]
    Io {
        /// File or element path.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store is not in a format annfs can open (e.g. not HDF5).
    #[error("{}: not a readable store: {}", clip(path), clip(reason))]
    NotAStore {
        /// File path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Metadata or data is malformed (truncated file, bad chunk, bad attribute).
    #[error("{}: corrupt data: {}", clip(path), clip(reason))]
    Corrupt {
        /// Element path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A valid feature annfs does not read (a filter, a type, a layout).
    #[error("{}: unsupported: {}", clip(path), clip(reason))]
    Unsupported {
        /// Element path.
        path: String,
        /// What is unsupported.
        reason: String,
    },
    /// An error reported by the HDF5 library.
    #[error("{}: HDF5 error: {}", clip(path), clip(reason))]
    Hdf5 {
        /// Element path.
        path: String,
        /// The library's message.
        reason: String,
    },
}

impl StorageError {
    /// Builds a [`StorageError::Corrupt`].
    pub fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Self {
        StorageError::Corrupt { path: path.into(), reason: reason.into() }
    }

    /// Builds a [`StorageError::Unsupported`].
    pub fn unsupported(path: impl Into<String>, reason: impl Into<String>) -> Self {
        StorageError::Unsupported { path: path.into(), reason: reason.into() }
    }
}
