//! Errors that make a store unusable as an AnnData.

use crate::storage::StorageError;
use crate::util::clip;

/// Why a store cannot be presented as an AnnData.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An element is missing or malformed; names the element.
    #[error("{}: {}", clip(path), clip(reason))]
    Invalid {
        /// Store path of the element.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ModelError {
    /// The reason alone, without the element path (for lists that already name the element).
    pub fn reason(&self) -> String {
        match self {
            ModelError::Invalid { reason, .. } => clip(reason).into_owned(),
            ModelError::Storage(e) => e.to_string(),
        }
    }

    /// Builds an [`ModelError::Invalid`].
    pub fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Invalid { path: path.into(), reason: reason.into() }
    }
}
