//! How an HDF5 dataset is laid out in the file: chunked (with its filter pipeline and chunk
//! table), contiguous, or something only the library reads; plus the fill value.


use hdf5_sys::h5d::{self, H5D_fill_value_t, H5D_layout_t};
use hdf5_sys::{h5p, h5t};

use super::chunks::ChunkTable;
use super::dtype::{raw_mem_type, TypeInfo};
use super::ffi::{locked, Hid};
use crate::util::RetryOnce;
use crate::storage::filters::{Filter, Pipeline};
use crate::storage::{ChunkGrid, StorageError, StorageResult};

/// Target bytes per presented chunk of contiguous datasets.
const CONTIGUOUS_CHUNK_BYTES: u64 = 1 << 20;

/// How the dataset's bytes are stored.
pub enum Storage {
    /// Chunked: filters (or why they cannot be decoded) and a lazily built chunk table.
    Chunked {
        /// The filters, or why they cannot be decoded.
        pipeline: Result<Pipeline, String>,
        /// Chunk addresses, listed on first use.
        table: RetryOnce<ChunkTable>,
    },
    /// One contiguous block at `addr` (`None`: never allocated).
    Contiguous {
        /// File address of the first byte.
        addr: Option<u64>,
    },
    /// Compact, external or virtual: read through the library.
    Library,
}

/// Layout, presented chunk grid and one-line description. `grid_elem` sizes the presented
/// chunks of contiguous data; `raw_elem` is the stored element size (the shuffle filter's unit).
pub fn storage_of(
    dset: &Hid,
    dcpl: i64,
    shape: &[u64],
    grid_elem: usize,
    raw_elem: usize,
    path: &str,
) -> StorageResult<(Storage, ChunkGrid, String)> {
    // SAFETY: H5Pget_layout only reads the creation property list (the library rejects an invalid
    // id); `locked` holds the library lock.
    let layout = locked(|| unsafe { h5p::H5Pget_layout(dcpl) });
    // SAFETY: H5Pget_external_count only reads `dcpl`, under the library lock.
    let external = locked(|| unsafe { h5p::H5Pget_external_count(dcpl) }) > 0;
    let contiguous_grid = || ChunkGrid::contiguous(shape.to_vec(), grid_elem, CONTIGUOUS_CHUNK_BYTES);
    match layout {
        H5D_layout_t::H5D_CHUNKED => {
            let chunk = chunk_dims(dcpl, shape.len(), path)?;
            let dims = chunk
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("x");
            let pipeline = pipeline(dcpl, raw_elem, path);
            let desc = match &pipeline {
                Ok(p) if p.is_empty() => format!("chunked {dims}"),
                Ok(p) => format!("chunked {dims}, filters {}", describe_decoding(p)),
                Err(e) => format!("chunked {dims}, {e}"),
            };
            let grid = ChunkGrid::new(shape.to_vec(), chunk);
            Ok((
                Storage::Chunked {
                    pipeline,
                    table: RetryOnce::new(),
                },
                grid,
                desc,
            ))
        }
        H5D_layout_t::H5D_CONTIGUOUS if !external => {
            // SAFETY: `dset` is an open dataset handle borrowed for the call, which only reads its
            // layout; under the library lock.
            let addr = locked(|| unsafe { h5d::H5Dget_offset(dset.id()) });
            let addr = (addr != hdf5_sys::h5::HADDR_UNDEF).then_some(addr);
            let desc = if addr.is_some() {
                "contiguous"
            } else {
                "contiguous (unallocated)"
            };
            Ok((
                Storage::Contiguous { addr },
                contiguous_grid(),
                desc.to_string(),
            ))
        }
        H5D_layout_t::H5D_CONTIGUOUS => Ok((
            Storage::Library,
            contiguous_grid(),
            "contiguous, external files".into(),
        )),
        H5D_layout_t::H5D_COMPACT => Ok((Storage::Library, contiguous_grid(), "compact".into())),
        other => Ok((
            Storage::Library,
            contiguous_grid(),
            format!("{other:?}").to_lowercase(),
        )),
    }
}

/// Filters in decoding order, e.g. `deflate(4)+shuffle`.
fn describe_decoding(p: &Pipeline) -> String {
    p.filters
        .iter()
        .rev()
        .map(Filter::describe)
        .collect::<Vec<_>>()
        .join("+")
}

/// The chunk dimensions of a chunked dataset of rank `rank`.
fn chunk_dims(dcpl: i64, rank: usize, path: &str) -> StorageResult<Vec<u64>> {
    let mut dims = vec![0u64; rank.max(1)];
    // SAFETY: `dims` has `rank.max(1)` elements and the library writes at most `rank` (max_ndims)
    // of them; under the library lock.
    let n = locked(|| unsafe { h5p::H5Pget_chunk(dcpl, rank as i32, dims.as_mut_ptr()) });
    if n < 0 || n as usize != rank {
        return Err(StorageError::corrupt(
            path,
            "chunk dimensions do not match the rank",
        ));
    }
    dims.truncate(rank);
    Ok(dims)
}

/// The dataset's filter pipeline; `Err` names the first filter annfs cannot decode.
fn pipeline(dcpl: i64, elem: usize, path: &str) -> Result<Pipeline, String> {
    // SAFETY: H5Pget_nfilters only reads `dcpl`, under the library lock.
    let n = locked(|| unsafe { h5p::H5Pget_nfilters(dcpl) });
    let mut filters = Vec::new();
    for i in 0..n.max(0) as u32 {
        let mut flags = 0u32;
        let mut cd = [0u32; 16];
        let mut ncd: usize = cd.len();
        let mut name = [0u8; 64];
        let mut config = 0u32;
        // SAFETY: under the library lock; the out-pointers are live locals, and the library
        // writes at most `ncd` (= `cd.len()`) values into `cd` and `name.len()` bytes into `name`.
        let id = locked(|| unsafe {
            h5p::H5Pget_filter2(
                dcpl,
                i,
                &mut flags,
                &mut ncd,
                cd.as_mut_ptr(),
                name.len(),
                name.as_mut_ptr().cast(),
                &mut config,
            )
        });
        let cd = &cd[..ncd.min(cd.len())];
        match Filter::from_hdf5(id, cd, elem) {
            Some(f) => filters.push(f),
            None => {
                let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                let name = String::from_utf8_lossy(&name[..end]).into_owned();
                log::debug!("{path}: filter {id} ({name}) cannot be decoded");
                return Err(format!("unsupported filter {id} ({name})"));
            }
        }
    }
    Ok(Pipeline { filters })
}

/// One element of the fill value in file layout, `size` bytes (zeros when undefined or
/// unreadable). Not for variable-length strings (see [`user_fill`]).
pub fn fill_value(ftype: i64, dcpl: i64, info: &TypeInfo, size: usize, path: &str) -> Vec<u8> {
    let mut buf = vec![0u8; size];
    if size == 0 || fill_status(dcpl) == H5D_fill_value_t::H5D_FILL_VALUE_UNDEFINED {
        return buf;
    }
    // SAFETY: under the library lock; `buf` holds `size` bytes (0 returned above), checked to be
    // one element of `mt`.
    let ok = locked(|| unsafe {
        match raw_mem_type(ftype, info, path) {
            Ok(mt) if h5t::H5Tget_size(mt.id()) == size => h5p::H5Pget_fill_value(dcpl, mt.id(), buf.as_mut_ptr().cast()) >= 0,
            _ => false,
        }
    });
    if !ok {
        buf.fill(0);
    }
    buf
}

/// The fill value's status.
fn fill_status(dcpl: i64) -> H5D_fill_value_t {
    // SAFETY: `status` is a live out-pointer and H5Pfill_value_defined only reads `dcpl`; under the
    // library lock.
    locked(|| unsafe {
        let mut status = H5D_fill_value_t::H5D_FILL_VALUE_UNDEFINED;
        if h5p::H5Pfill_value_defined(dcpl, &mut status) < 0 {
            return H5D_fill_value_t::H5D_FILL_VALUE_UNDEFINED;
        }
        status
    })
}

/// True when the dataset was created with its own fill value.
pub fn user_fill(dcpl: i64) -> bool {
    fill_status(dcpl) == H5D_fill_value_t::H5D_FILL_VALUE_USER_DEFINED
}
