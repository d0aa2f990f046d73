//! The chunk table of a chunked dataset: linear chunk index → file address, stored size and
//! filter mask. Built once with `H5Dchunk_iter` in O(chunks).

use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};

use hdf5_sys::h5::{haddr_t, hsize_t};

use super::ffi::{check, locked};
use crate::storage::{ChunkGrid, StorageError, StorageResult};

/// Where one stored chunk lives in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    /// Absolute file address.
    pub addr: u64,
    /// Stored (filtered) size in bytes.
    pub size: u64,
    /// Bit `i` set: filter `i` was skipped for this chunk.
    pub mask: u32,
}

/// All allocated chunks of a dataset; chunks absent from the table read as the fill value.
#[derive(Debug, Default)]
pub struct ChunkTable {
    chunks: HashMap<u64, ChunkLoc>,
}

impl ChunkTable {
    /// A table of the chunks in `chunks` (linear index → location).
    pub fn from_map(chunks: HashMap<u64, ChunkLoc>) -> Self {
        ChunkTable { chunks }
    }

    /// The stored chunk at linear index `index`, if it was ever written.
    pub fn get(&self, index: u64) -> Option<ChunkLoc> {
        self.chunks.get(&index).copied()
    }

    /// Number of allocated chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when no chunk is allocated.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// State threaded through the C callback.
struct Visit<'a> {
    grid: &'a ChunkGrid,
    per_dim: Vec<u64>,
    table: HashMap<u64, ChunkLoc>,
    bad: Option<String>,
}

impl Visit<'_> {
    /// Maps a chunk's element offset to its linear grid index, rejecting offsets off the grid.
    fn index_of(&self, offset: &[u64]) -> Option<u64> {
        let mut idx = 0u64;
        for ((o, c), p) in offset.iter().zip(&self.grid.chunk).zip(&self.per_dim) {
            if o % c != 0 || o / c >= *p {
                return None;
            }
            idx = idx.checked_mul(*p)?.checked_add(o / c)?;
        }
        Some(idx)
    }
}

unsafe extern "C" fn visit_cb(
    offset: *const hsize_t,
    mask: c_uint,
    addr: haddr_t,
    size: hsize_t,
    op_data: *mut c_void,
) -> c_int {
    let v = &mut *op_data.cast::<Visit>();
    let rank = v.grid.shape.len();
    let off = if rank == 0 || offset.is_null() {
        &[][..]
    } else {
        std::slice::from_raw_parts(offset, rank)
    };
    match v.index_of(off) {
        Some(i) => {
            v.table.insert(i, ChunkLoc { addr, size, mask });
            0
        }
        None => {
            v.bad = Some(format!("chunk at offset {off:?} lies off the chunk grid"));
            -1
        }
    }
}

/// Lists every allocated chunk of dataset `dset` (whose grid is `grid`).
pub fn build(dset: i64, grid: &ChunkGrid, path: &str) -> StorageResult<ChunkTable> {
    let mut v = Visit {
        grid,
        per_dim: grid.chunks_per_dim(),
        table: HashMap::new(),
        bad: None,
    };
    let status = locked(|| {
        // The callback reads `grid.shape.len()` offsets per chunk: that must be the rank.
        // SAFETY: under the library lock; H5Dget_space/H5Sget_simple_extent_ndims only read.
        let rank = unsafe {
            let space = super::ffi::Hid::new(hdf5_sys::h5d::H5Dget_space(dset), path)?;
            hdf5_sys::h5s::H5Sget_simple_extent_ndims(space.id())
        };
        if rank < 0 || rank as usize != grid.shape.len() {
            return Err(StorageError::corrupt(path, format!("a {}-d chunk grid for a rank-{rank} dataset", grid.shape.len())));
        }
        // SAFETY: under the library lock; `v` outlives the call and `visit_cb` casts `op_data`
        // back to it, reading `grid.shape.len()` offsets: the dataset's rank (checked above).
        let st = unsafe {
            hdf5_sys::h5d::H5Dchunk_iter(
                dset,
                hdf5_sys::h5p::H5P_DEFAULT,
                Some(visit_cb),
                (&mut v as *mut Visit).cast(),
            )
        };
        check(i64::from(st), path)
    });
    if let Some(reason) = v.bad {
        return Err(StorageError::corrupt(path, reason));
    }
    status?;
    log::debug!("{path}: chunk table with {} chunks", v.table.len());
    Ok(ChunkTable { chunks: v.table })
}
