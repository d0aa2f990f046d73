//! annfs: AnnData stores (`.h5ad`, `.zarr`) as a read-only tree of plain, lazily-read files.
//!
//! Data flows one way: [`storage`] backends read chunks → [`model`] types them as AnnData
//! elements → [`views`] render elements as file bytes through the shared [`cache`] → [`fs`]
//! serves them over FUSE; [`cli`] wires it together. [`index`] holds the transposed indexes
//! that gene-column views read (built from the model's arrays, read through the cache).

#![warn(missing_docs)]

pub mod cache;
pub mod cli;
pub mod collection;
pub mod fs;
pub mod index;
pub mod model;
pub mod overlay;
pub mod prefetch;
pub mod storage;
pub mod util;
pub mod views;
