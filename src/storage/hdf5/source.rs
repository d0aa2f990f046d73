//! [`ArraySource`] for one HDF5 dataset. Numeric, compound and string data are read from the
//! file with positioned reads ([`super::file`]) and decoded without the library's global lock:
//! chunks by [`crate::storage::filters`], variable-length strings by [`super::gheap`]. Compact,
//! external and virtual layouts, and string fields of compound records, go through the library.

use std::sync::Arc;

use hdf5_sys::{h5d, h5o::H5O_token_t};

use super::dtype::{inspect, CField, TypeInfo};
use super::ffi::{locked, Hid};
use super::gheap::Sizes;
use super::handles::{object_token, Dataset};
use super::layout::{fill_value, storage_of, user_fill, Storage};
use super::library::{self, StrKind};
use super::vlen;
use super::FileCtx;
use crate::storage::filters::MAX_DECODED_BYTES;
use crate::storage::grid::clip_chunk;
use crate::storage::{ArrayMeta, ArraySource, DType, FieldType, FileSpan, StorageError, StorageResult};

/// Reads one HDF5 dataset.
pub struct H5Source {
    pub(super) meta: ArrayMeta,
    pub(super) ctx: Arc<FileCtx>,
    /// The dataset, reopened for the reads that go through the library ([`super::handles`]).
    dataset: Dataset,
    pub(super) info: TypeInfo,
    pub(super) storage: Storage,
    /// One stored element of fill value in file layout.
    pub(super) fill: Vec<u8>,
    /// For strings read from raw bytes: how the elements are stored (`None`: through the library).
    pub(super) strs: Option<vlen::Layout>,
    /// Chunks can be copied straight from the file ([`ArraySource::packed_in_place`]).
    pub(super) in_place: bool,
    /// File address of the dataset's object header (its chunk index is then read without the
    /// library: [`super::chunk_index`]).
    pub(super) header: Option<u64>,
    /// Records with variable-length string fields, as stored (`None`: through the library).
    records: Option<VlenRecords>,
    /// Why this dataset's data is not read (a grid of more chunks than annfs reads), if so.
    refused: Option<String>,
}

/// Where a compound's variable-length string fields sit in its stored records. The library
/// reports the records' in-memory layout (a string is a pointer there, 4 + address + 4 bytes
/// on disk, later fields shifted accordingly), so annfs derives the stored one and reads the
/// strings itself: a damaged length then fails the read instead of making the library allocate
/// and clear gigabytes before it notices.
struct VlenRecords {
    storage: Storage,
    /// Bytes of a stored record.
    record: usize,
    /// Stored offset of each variable-length string field.
    offsets: Vec<(String, usize)>,
    sizes: Sizes,
}

/// The stored layout of `info`'s records (a flat compound with variable-length strings) and
/// the dataset's storage read with it; `None` when it cannot be derived or checked.
fn vlen_records(dset: &Hid, dcpl: i64, shape: &[u64], info: &TypeInfo, sizes: Sizes, path: &str) -> Option<VlenRecords> {
    let TypeInfo::Compound { fields, file_size, .. } = info else { return None };
    let (stored, pointer) = (vlen::element_size(sizes), std::mem::size_of::<*const u8>());
    let mut by_offset: Vec<&CField> = fields.iter().collect();
    by_offset.sort_by_key(|f| f.file_offset);
    let (mut shift, mut offsets) = (0usize, Vec::new());
    for f in by_offset {
        if f.field.dtype == FieldType::VarStr {
            offsets.push((f.field.name.clone(), f.file_offset + shift));
            shift = (shift + stored).checked_sub(pointer)?;
        }
    }
    let record = file_size + shift;
    let (storage, _, _) = storage_of(dset, dcpl, shape, record, record, path).ok()?;
    let n: u64 = shape.iter().product();
    match &storage {
        // The allocated bytes must be exactly the records (else the layout is not this one).
        Storage::Contiguous { addr: Some(_) } => {
            // SAFETY: `dset` is an open dataset handle; the call only reads its layout, under
            // the library lock.
            let bytes = locked(|| unsafe { h5d::H5Dget_storage_size(dset.id()) });
            (bytes == n.checked_mul(record as u64)?).then_some(())?
        }
        Storage::Chunked { pipeline: Ok(_), .. } => {}
        _ => return None,
    }
    Some(VlenRecords { storage, record, offsets, sizes })
}

/// Opens the reader for dataset `dset` at `path`.
pub fn open(ctx: Arc<FileCtx>, dset: Hid, path: &str) -> StorageResult<H5Source> {
    // SAFETY: `dset` is an open dataset handle; the type id goes to the `Hid`; under the lock.
    let ftype = locked(|| Hid::new(unsafe { h5d::H5Dget_type(dset.id()) }, path))?;
    // SAFETY: `dset` is an open dataset handle; the dataspace id goes to the `Hid`; under the lock.
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
    // SAFETY: `dset` is an open dataset handle; the plist goes to the `Hid`; under the lock.
    let dcpl = locked(|| Hid::new(unsafe { h5d::H5Dget_create_plist(dset.id()) }, path))?;
    let mut strs = string_layout(&info, ctx.sizes);
    let raw_elem = strs
        .map_or(info.file_size(), |l| l.element_size())
        .max(1);
    let (mut storage, grid, desc) =
        storage_of(&dset, dcpl.id(), &shape, info.file_size().max(1), raw_elem, path)?;
    // Refused for its reads, not for the store: its files fail, the rest of the store reads.
    let refused = grid.check_count(raw_elem as u64).err();
    let mut records = None;
    if has_vlen_fields(&info) {
        // The library reports in-memory offsets for such records, not the on-disk layout:
        // numbers are read through it, keeping the dataset's chunk grid; strings from the
        // stored records where their layout can be derived.
        storage = Storage::Library;
        records = ctx.sizes.and_then(|s| vlen_records(&dset, dcpl.id(), &shape, &info, s, path));
        if records.is_none() {
            log::debug!("{path}: stored record layout not derived; its strings are read through the library");
        }
    }
    if matches!(strs, Some(vlen::Layout::Vlen(_))) && user_fill(dcpl.id()) {
        // A user-defined variable-length fill value lives in the heap too: the library converts it.
        strs = None;
    }
    let fill = match strs {
        Some(vlen::Layout::Vlen(_)) => vec![0; raw_elem],
        Some(fixed) => fill_value(ftype.id(), dcpl.id(), &info, fixed.element_size(), path),
        None => fill_value(ftype.id(), dcpl.id(), &info, info.file_size(), path),
    };
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
    let in_place = !null && ctx.data.rereads_are_cheap() && stored_packed(&info, &storage, &meta.grid);
    let dataset = Dataset::keep(dset);
    let header = match storage {
        Storage::Chunked { .. } => dataset.token().and_then(|t| token_address(&ctx.file, t)),
        _ => None,
    };
    Ok(H5Source {
        meta,
        ctx,
        dataset,
        info,
        storage,
        fill,
        strs,
        in_place,
        header,
        records,
        refused,
    })
}

extern "C" {
    /// The file address a native-format object token stands for (HDF5 ≥ 1.12).
    fn H5VLnative_token_to_addr(loc: hdf5_sys::h5i::hid_t, token: hdf5_sys::h5o::H5O_token_t, addr: *mut u64) -> hdf5_sys::h5::herr_t;
}

/// The file address of an object's header (a dataset's, a group's), asked of the library (it
/// holds the header): the object's identity in the file.
pub(super) fn object_address(obj: &Hid) -> Option<u64> {
    token_address(obj, object_token(obj)?)
}

/// The file address `token` (an object's, in the file `loc` is in) stands for.
fn token_address(loc: &Hid, token: H5O_token_t) -> Option<u64> {
    let mut addr = 0u64;
    // SAFETY: `addr` is a valid out-pointer; `loc` is open and the token came from the library
    // for an object of its file; under the library lock.
    locked(|| unsafe { H5VLnative_token_to_addr(loc.id(), token, &mut addr) } >= 0).then_some(addr)
}

/// True when the stored bytes of every chunk are its packed elements: unfiltered (or
/// contiguous) little-endian numbers, chunks spanning all dimensions but the first (so a
/// chunk clipped at the array's end is a prefix of the stored chunk).
fn stored_packed(info: &TypeInfo, storage: &Storage, grid: &crate::storage::grid::ChunkGrid) -> bool {
    let TypeInfo::Num { nt, swap } = info else { return false };
    let layout = match storage {
        Storage::Chunked { pipeline: Ok(p), .. } => p.is_empty(),
        Storage::Contiguous { addr: Some(_) } => true,
        _ => false,
    };
    layout && *swap <= 1 && nt.size() == info.file_size() && !grid.shape.is_empty() && grid.shape[1..] == grid.chunk[1..]
}

/// True for records with variable-length members, whose on-disk layout differs from the
/// offsets the library reports.
fn has_vlen_fields(info: &TypeInfo) -> bool {
    matches!(info, TypeInfo::Compound { fields, .. } if fields.iter().any(|f| f.field.dtype == FieldType::VarStr))
}

/// How string elements are stored, when annfs decodes them itself: fixed-length always,
/// variable-length when the file's address and length widths are known (`sizes`).
fn string_layout(info: &TypeInfo, sizes: Option<Sizes>) -> Option<vlen::Layout> {
    match *info {
        TypeInfo::Str { vlen: true, .. } => sizes.map(vlen::Layout::Vlen),
        TypeInfo::Str { vlen: false, size, pad, .. } if size > 0 => {
            Some(vlen::Layout::Fixed { size, pad })
        }
        _ => None,
    }
}

impl H5Source {
    /// An open handle to the dataset, for a read through the library.
    pub(super) fn dset(&self) -> StorageResult<Arc<Hid>> {
        self.ctx.handles.open(&self.ctx.file, &self.dataset, &self.meta.path)
    }

    /// The dataset's stored datatype, for a read through the library.
    pub(super) fn file_type(&self, dset: &Hid) -> StorageResult<Hid> {
        // SAFETY: `dset` is an open dataset handle; the type id goes to the `Hid`; under the lock.
        locked(|| Hid::new(unsafe { h5d::H5Dget_type(dset.id()) }, &self.meta.path))
    }

    /// Enters the store's gate for a read of this dataset's data, unless the dataset is refused.
    pub(super) fn enter(&self) -> StorageResult<crate::storage::gate::Guard<'_>> {
        if let Some(why) = &self.refused {
            return Err(StorageError::unsupported(&self.meta.path, why.clone()));
        }
        self.ctx.gate.enter(&self.meta.path)
    }

    /// A [`StorageError::Corrupt`] about this dataset.
    pub(super) fn corrupt(&self, reason: impl Into<String>) -> StorageError {
        StorageError::corrupt(&self.meta.path, reason)
    }

    /// Bytes of one full (unclipped) chunk of `elem`-byte elements, checked against
    /// [`MAX_DECODED_BYTES`].
    pub(super) fn chunk_bytes(&self, elem: usize) -> StorageResult<usize> {
        let elems = self
            .meta
            .grid
            .chunk
            .iter()
            .try_fold(1u64, |a, c| a.checked_mul(*c));
        let bytes = elems.and_then(|e| e.checked_mul(elem as u64));
        match bytes {
            Some(b) if b <= MAX_DECODED_BYTES as u64 => Ok(b as usize),
            _ => Err(self.corrupt(format!(
                "chunk shape {:?} of {elem}-byte elements exceeds the {} MiB limit per decoded chunk",
                self.meta.grid.chunk,
                MAX_DECODED_BYTES >> 20
            ))),
        }
    }

    /// `n` copies of the fill value.
    pub(super) fn filled(&self, n: usize) -> Vec<u8> {
        if self.fill.iter().all(|b| *b == 0) {
            return vec![0; n * self.fill.len()];
        }
        self.fill.repeat(n)
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
        let _gate = self.enter()?;
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
                let full = self.chunked_full(pipeline, table, index, elem)?;
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

    fn will_need(&self, chunks: &[u64]) {
        self.advise_chunks(chunks);
    }

    fn index_loaded(&self) -> bool {
        match &self.storage {
            Storage::Chunked { table, .. } => table.get().is_some(),
            _ => true,
        }
    }

    fn load_index(&self) {
        if let Storage::Chunked { table, .. } = &self.storage {
            if let Err(e) = self.table(table) {
                log::debug!("{}: chunk index: {e}", self.meta.path);
            }
        }
    }

    fn packed_in_place(&self) -> bool {
        self.in_place
    }

    fn read_packed_into(&self, index: u64, from: u64, dst: &mut [u8]) -> StorageResult<bool> {
        if !self.in_place {
            return Ok(false);
        }
        let _gate = self.enter()?;
        self.packed_into(index, from, dst)
    }

    fn packed_span(&self, index: u64, from: u64, len: u64) -> StorageResult<Option<FileSpan>> {
        if !self.in_place {
            return Ok(None);
        }
        let _gate = self.enter()?;
        self.packed_span_of(index, from, len)
    }

    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>> {
        let mut out = Vec::with_capacity(end.saturating_sub(start).min(1 << 20) as usize);
        self.each_string(start, end, &mut |s| out.push(s.to_owned()))?;
        Ok(out)
    }

    fn each_string(&self, start: u64, end: u64, f: &mut dyn FnMut(&str)) -> StorageResult<()> {
        let _gate = self.enter()?;
        let kind = self.str_kind().ok_or_else(|| {
            StorageError::unsupported(
                &self.meta.path,
                format!("strings from {:?} data", self.meta.dtype),
            )
        })?;
        if self.meta.null {
            return if start == end {
                Ok(())
            } else {
                Err(self.corrupt("null dataspace has no strings"))
            };
        }
        if let (Some(layout), Storage::Chunked { .. } | Storage::Contiguous { .. }) =
            (self.strs, &self.storage)
        {
            return self.raw_strings(layout, start, end, f);
        }
        // Compact, external and virtual layouts (no raw bytes to reach), unusual address widths
        // and user-defined variable-length fill values: through the library.
        let dset = self.dset()?;
        library::dataset_strings(
            dset.id(),
            self.file_type(&dset)?.id(),
            &kind,
            &self.meta.shape,
            start,
            end,
            &self.meta.path,
        )?
        .iter()
        .for_each(|s| f(s));
        Ok(())
    }

    fn read_field_strings(&self, field: &str, start: u64, end: u64) -> StorageResult<Vec<String>> {
        let _gate = self.enter()?;
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
        if let Some(rec) = &self.records {
            if let Some(&(_, at)) = rec.offsets.iter().find(|(name, _)| name == field) {
                if start == end {
                    return Ok(Vec::new());
                }
                let raw = self.raw_elements_of(&rec.storage, start, end, rec.record)?;
                let width = vlen::element_size(rec.sizes);
                let mut stored = Vec::with_capacity(raw.len() / rec.record.max(1) * width);
                for r in raw.chunks_exact(rec.record) {
                    stored.extend_from_slice(r.get(at..at + width).ok_or_else(|| self.corrupt("record shorter than its fields"))?);
                }
                return vlen::decode(&stored, vlen::Layout::Vlen(rec.sizes), &self.ctx.data, &self.meta.path, start);
            }
        }
        // Records whose stored layout could not be derived: the library converts them, taking
        // its lock.
        let cset = self.member_cset(field);
        library::field_strings(self.dset()?.id(), field, cset, start, end, &self.meta.path)
    }
}

impl H5Source {
    /// Character set of a compound string member (UTF-8 if unknown).
    fn member_cset(&self, field: &str) -> hdf5_sys::h5t::H5T_cset_t {
        use hdf5_sys::h5t;
        let Ok(name) = std::ffi::CString::new(field) else {
            return h5t::H5T_cset_t::H5T_CSET_UTF8;
        };
        let Ok(ftype) = self.dset().and_then(|d| self.file_type(&d)) else {
            return h5t::H5T_cset_t::H5T_CSET_UTF8;
        };
        // SAFETY: `name` is a NUL-terminated string alive for the call and `ftype` an open
        // type; the member type id is owned (and released) by `mt`. Under the library lock.
        locked(|| unsafe {
            let idx = h5t::H5Tget_member_index(ftype.id(), name.as_ptr());
            if idx < 0 {
                return h5t::H5T_cset_t::H5T_CSET_UTF8;
            }
            match Hid::new(h5t::H5Tget_member_type(ftype.id(), idx as u32), "") {
                Ok(mt) => h5t::H5Tget_cset(mt.id()),
                Err(_) => h5t::H5T_cset_t::H5T_CSET_UTF8,
            }
        })
    }
}
