//! annfs: AnnData stores as a lazily-read file tree.
pub mod storage;
