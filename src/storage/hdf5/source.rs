//! [`ArraySource`] for one HDF5 dataset. Numeric and compound chunks are read straight from an
//! mmap of the file and decoded by [`crate::storage::filters`] (no library lock); strings,
//! compact and external layouts go through the library.

use std::sync::{Arc, OnceLock};

use hdf5_sys::h5d::{self, H5D_fill_value_t, H5D_layout_t};
use hdf5_sys::h5p;

use super::chunks::{self, ChunkTable};
use super::dtype::{inspect, raw_mem_type, TypeInfo};
use super::ffi::{locked, Hid};
use super::strings::{self, Region, StrKind};
use super::FileCtx;
use crate::storage::filters::{Filter, Pipeline};
use crate::storage::grid::clip_chunk;
use crate::storage::{
    ArrayMeta, ArraySource, ChunkGrid, DType, FieldType, StorageError, StorageResult,
};

/// Target bytes per presented chunk of contiguous datasets.
const CONTIGUOUS_CHUNK_BYTES: u64 = 1 << 20;
/// Largest decoded chunk annfs accepts (guards absurd chunk shapes).
const MAX_CHUNK_BYTES: u64 = 1 << 32;

/// How the dataset's bytes are stored.
enum Storage {
    /// Chunked: filters (or why they cannot be decoded) and a lazily built chunk table.
    Chunked {
        pipeline: Result<Pipeline, String>,
        table: OnceLock<Result<ChunkTable, String>>,
    },
    /// One contiguous block at `addr` (`None`: never allocated).
    Contiguous { addr: Option<u64> },
    /// Compact, external or virtual: read through the library.
    Library,
}

/// Reads one HDF5 dataset.
pub struct H5Source {
    meta: ArrayMeta,
    ctx: Arc<FileCtx>,
    dset: Hid,
    ftype: Hid,
    info: TypeInfo,
    storage: Storage,
    /// One element of fill value in file layout.
    fill: Vec<u8>,
}

/// Opens the reader for dataset `dset` at `path`.
pub fn open(ctx: Arc<FileCtx>, dset: Hid, path: &str) -> StorageResult<H5Source> {
    let ftype = locked(|| Hid::new(unsafe { h5d::H5Dget_type(dset.id()) }, path))?;
    let space = locked(|| Hid::new(unsafe { h5d::H5Dget_space(dset.id()) }, path))?;
    let shape = super::attrs::space_shape(space.id(), path)?;
    let null = shape.is_none();
    let shape = shape.unwrap_or_default();
    if shape
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d))
        .is_none()
    {
        return Err(StorageError::corrupt(
            path,
            format!("shape {shape:?} overflows"),
        ));
    }
    let info = inspect(ftype.id());
    let dcpl = locked(|| Hid::new(unsafe { h5d::H5Dget_create_plist(dset.id()) }, path))?;
    let elem = info.file_size().max(1);
    let (mut storage, grid, desc) = storage_of(&dset, dcpl.id(), &shape, elem, path)?;
    if has_vlen_fields(&info) {
        // The library reports in-memory offsets for such records, not the on-disk layout:
        // let it convert, keeping the dataset's chunk grid.
        storage = Storage::Library;
    }
    let fill = fill_value(ftype.id(), dcpl.id(), &info, path);
    let desc = if null {
        "null dataspace".to_string()
    } else {
        desc
    };
    let meta = ArrayMeta {
        path: path.to_string(),
        dtype: info.dtype(),
        shape,
        null,
        grid,
        storage_desc: desc,
    };
    Ok(H5Source {
        meta,
        ctx,
        dset,
        ftype,
        info,
        storage,
        fill,
    })
}

/// True for records with variable-length members, whose on-disk layout differs from the
/// offsets the library reports.
fn has_vlen_fields(info: &TypeInfo) -> bool {
    matches!(info, TypeInfo::Compound { fields, .. } if fields.iter().any(|f| f.field.dtype == FieldType::VarStr))
}

/// Layout, presented chunk grid and one-line description.
fn storage_of(
    dset: &Hid,
    dcpl: i64,
    shape: &[u64],
    elem: usize,
    path: &str,
) -> StorageResult<(Storage, ChunkGrid, String)> {
    let layout = locked(|| unsafe { h5p::H5Pget_layout(dcpl) });
    let external = locked(|| unsafe { h5p::H5Pget_external_count(dcpl) }) > 0;
    let contiguous_grid = || ChunkGrid::contiguous(shape.to_vec(), elem, CONTIGUOUS_CHUNK_BYTES);
    match layout {
        H5D_layout_t::H5D_CHUNKED => {
            let chunk = chunk_dims(dcpl, shape.len(), path)?;
            let dims = chunk
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("x");
            let pipeline = pipeline(dcpl, elem, path);
            let desc = match &pipeline {
                Ok(p) if p.is_empty() => format!("chunked {dims}"),
                Ok(p) => format!("chunked {dims}, filters {}", describe_decoding(p)),
                Err(e) => format!("chunked {dims}, {e}"),
            };
            let grid = ChunkGrid::new(shape.to_vec(), chunk);
            Ok((
                Storage::Chunked {
                    pipeline,
                    table: OnceLock::new(),
                },
                grid,
                desc,
            ))
        }
        H5D_layout_t::H5D_CONTIGUOUS if !external => {
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

fn chunk_dims(dcpl: i64, rank: usize, path: &str) -> StorageResult<Vec<u64>> {
    let mut dims = vec![0u64; rank.max(1)];
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
    let n = locked(|| unsafe { h5p::H5Pget_nfilters(dcpl) });
    let mut filters = Vec::new();
    for i in 0..n.max(0) as u32 {
        let mut flags = 0u32;
        let mut cd = [0u32; 16];
        let mut ncd: usize = cd.len();
        let mut name = [0u8; 64];
        let mut config = 0u32;
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

/// One element of the fill value in file layout (zeros when undefined or unreadable).
fn fill_value(ftype: i64, dcpl: i64, info: &TypeInfo, path: &str) -> Vec<u8> {
    let size = info.file_size();
    let mut buf = vec![0u8; size];
    if size == 0 {
        return buf;
    }
    let ok = locked(|| unsafe {
        let mut status = H5D_fill_value_t::H5D_FILL_VALUE_UNDEFINED;
        if h5p::H5Pfill_value_defined(dcpl, &mut status) < 0
            || status == H5D_fill_value_t::H5D_FILL_VALUE_UNDEFINED
        {
            return false;
        }
        match raw_mem_type(ftype, info, path) {
            Ok(mt) => h5p::H5Pget_fill_value(dcpl, mt.id(), buf.as_mut_ptr().cast()) >= 0,
            Err(_) => false,
        }
    });
    if !ok {
        buf.fill(0);
    }
    buf
}

impl H5Source {
    fn corrupt(&self, reason: impl Into<String>) -> StorageError {
        StorageError::corrupt(&self.meta.path, reason)
    }

    /// Bytes of one full (unclipped) chunk in file layout, checked.
    fn chunk_bytes(&self) -> StorageResult<usize> {
        let elems = self
            .meta
            .grid
            .chunk
            .iter()
            .try_fold(1u64, |a, c| a.checked_mul(*c));
        let bytes = elems.and_then(|e| e.checked_mul(self.info.file_size() as u64));
        match bytes {
            Some(b) if b <= MAX_CHUNK_BYTES => Ok(b as usize),
            _ => Err(self.corrupt(format!(
                "chunk shape {:?} is too large",
                self.meta.grid.chunk
            ))),
        }
    }

    /// `n` copies of the fill value.
    fn filled(&self, n: usize) -> Vec<u8> {
        if self.fill.iter().all(|b| *b == 0) {
            return vec![0; n * self.fill.len()];
        }
        self.fill.repeat(n)
    }

    /// `len` bytes of the file at `addr`, bounds-checked against the mapping.
    fn file_bytes(&self, addr: u64, len: u64) -> StorageResult<&[u8]> {
        let map = &self.ctx.mmap[..];
        let end = addr.checked_add(len).filter(|e| *e <= map.len() as u64);
        match end {
            Some(end) => Ok(&map[addr as usize..end as usize]),
            None => Err(self.corrupt(format!(
                "data at {addr}+{len} lies beyond the end of the file ({} bytes)",
                map.len()
            ))),
        }
    }

    fn table<'a>(
        &self,
        cell: &'a OnceLock<Result<ChunkTable, String>>,
    ) -> StorageResult<&'a ChunkTable> {
        let t = cell.get_or_init(|| {
            chunks::build(self.dset.id(), &self.meta.grid, &self.meta.path)
                .map_err(|e| e.to_string())
        });
        t.as_ref().map_err(|e| StorageError::Hdf5 {
            path: self.meta.path.clone(),
            reason: e.clone(),
        })
    }

    /// A full chunk of a chunked dataset, in file layout.
    fn chunked_full(
        &self,
        pipeline: &Result<Pipeline, String>,
        cell: &OnceLock<Result<ChunkTable, String>>,
        index: u64,
    ) -> StorageResult<Vec<u8>> {
        let pipeline = pipeline
            .as_ref()
            .map_err(|e| StorageError::unsupported(&self.meta.path, e.clone()))?;
        let expected = self.chunk_bytes()?;
        let Some(loc) = self.table(cell)?.get(index) else {
            return Ok(self.filled(expected / self.info.file_size().max(1)));
        };
        let stored = self.file_bytes(loc.addr, loc.size)?;
        pipeline
            .decode(stored, loc.mask, expected)
            .map_err(|e| self.corrupt(format!("chunk {index} at {}: {e}", loc.addr)))
    }

    /// The clipped chunk `coords` of a contiguous dataset, in file layout.
    fn contiguous_clipped(&self, addr: Option<u64>, coords: &[u64]) -> StorageResult<Vec<u8>> {
        let grid = &self.meta.grid;
        let elem = self.info.file_size() as u64;
        let n: u64 = grid.clipped_shape(coords).iter().product();
        let first = coords.first().map_or(0, |c| c * grid.chunk[0]);
        let row: u64 = grid.shape.iter().skip(1).product();
        let Some(addr) = addr else {
            return Ok(self.filled(n as usize));
        };
        let start = first
            .checked_mul(row)
            .and_then(|e| e.checked_mul(elem))
            .and_then(|o| o.checked_add(addr));
        let len = n.checked_mul(elem);
        match (start, len) {
            (Some(s), Some(l)) => Ok(self.file_bytes(s, l)?.to_vec()),
            _ => Err(self.corrupt("contiguous data offset overflows")),
        }
    }

    /// The clipped chunk `coords` read through the library, in file layout.
    fn library_clipped(&self, coords: &[u64]) -> StorageResult<Vec<u8>> {
        let grid = &self.meta.grid;
        let start: Vec<u64> = coords.iter().zip(&grid.chunk).map(|(c, k)| c * k).collect();
        let count = grid.clipped_shape(coords);
        let mt = raw_mem_type(self.ftype.id(), &self.info, &self.meta.path)?;
        let region = Region {
            start: &start,
            count: &count,
        };
        strings::read_bytes(
            self.dset.id(),
            mt.id(),
            self.info.file_size(),
            &region,
            &self.meta.path,
        )
    }

    fn str_kind(&self) -> Option<StrKind> {
        match self.info {
            TypeInfo::Str {
                vlen,
                size,
                pad,
                cset,
            } => Some(StrKind {
                vlen,
                size,
                pad,
                cset,
            }),
            _ => None,
        }
    }
}

impl ArraySource for H5Source {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let _gate = crate::storage::gate::enter(&self.meta.path)?;
        if self.meta.null {
            return Ok(Vec::new());
        }
        if !matches!(self.meta.dtype, DType::Num(_) | DType::Compound { .. }) {
            return Err(StorageError::unsupported(
                &self.meta.path,
                format!("chunks of {:?} data", self.meta.dtype),
            ));
        }
        let grid = &self.meta.grid;
        let total = grid.num_chunks();
        if index >= total {
            return Err(self.corrupt(format!("chunk index {index} out of range ({total} chunks)")));
        }
        let coords = grid.coords(index);
        let elem = self.info.file_size();
        let clipped = match &self.storage {
            Storage::Chunked { pipeline, table } => {
                let full = self.chunked_full(pipeline, table, index)?;
                if grid.clipped_shape(&coords) == grid.chunk {
                    full
                } else {
                    clip_chunk(grid, &coords, &full, elem)
                }
            }
            Storage::Contiguous { addr } => self.contiguous_clipped(*addr, &coords)?,
            Storage::Library => self.library_clipped(&coords)?,
        };
        let n: u64 = grid.clipped_shape(&coords).iter().product();
        if clipped.len() as u64 != n * elem as u64 {
            return Err(self.corrupt(format!(
                "chunk {index} has {} bytes, expected {}",
                clipped.len(),
                n * elem as u64
            )));
        }
        Ok(self.info.to_packed(clipped))
    }

    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>> {
        let _gate = crate::storage::gate::enter(&self.meta.path)?;
        let kind = self.str_kind().ok_or_else(|| {
            StorageError::unsupported(
                &self.meta.path,
                format!("strings from {:?} data", self.meta.dtype),
            )
        })?;
        if self.meta.null {
            return if start == end {
                Ok(Vec::new())
            } else {
                Err(self.corrupt("null dataspace has no strings"))
            };
        }
        strings::dataset_strings(
            self.dset.id(),
            self.ftype.id(),
            &kind,
            &self.meta.shape,
            start,
            end,
            &self.meta.path,
        )
    }

    fn read_field_strings(&self, field: &str, start: u64, end: u64) -> StorageResult<Vec<String>> {
        let _gate = crate::storage::gate::enter(&self.meta.path)?;
        let TypeInfo::Compound { fields, .. } = &self.info else {
            return Err(StorageError::unsupported(
                &self.meta.path,
                "field strings of a non-compound array",
            ));
        };
        let f = fields
            .iter()
            .find(|f| f.field.name == field && f.field.dtype == FieldType::VarStr);
        if f.is_none() {
            return Err(StorageError::unsupported(
                &self.meta.path,
                format!("no variable-length string field {field:?}"),
            ));
        }
        let len = self.meta.shape.first().copied().unwrap_or(0);
        if self.meta.shape.len() != 1 || start > end || end > len {
            return Err(self.corrupt(format!(
                "records {start}..{end} outside a 1-D compound of {len}"
            )));
        }
        let cset = self.member_cset(field);
        strings::field_strings(self.dset.id(), field, cset, start, end, &self.meta.path)
    }
}

impl H5Source {
    /// Character set of a compound string member (UTF-8 if unknown).
    fn member_cset(&self, field: &str) -> hdf5_sys::h5t::H5T_cset_t {
        use hdf5_sys::h5t;
        let Ok(name) = std::ffi::CString::new(field) else {
            return h5t::H5T_cset_t::H5T_CSET_UTF8;
        };
        locked(|| unsafe {
            let idx = h5t::H5Tget_member_index(self.ftype.id(), name.as_ptr());
            if idx < 0 {
                return h5t::H5T_cset_t::H5T_CSET_UTF8;
            }
            match Hid::new(h5t::H5Tget_member_type(self.ftype.id(), idx as u32), "") {
                Ok(mt) => h5t::H5Tget_cset(mt.id()),
                Err(_) => h5t::H5T_cset_t::H5T_CSET_UTF8,
            }
        })
    }
}
