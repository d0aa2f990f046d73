//! Reads through the HDF5 library (the only module that reads data with it): hyperslab
//! selections, variable-length and fixed-length strings (datasets, attributes and compound
//! fields). These take the library lock.

use std::ffi::{c_char, c_void};

use hdf5_sys::h5s::{self, H5S_seloper_t};
use hdf5_sys::h5t::{self, H5T_cset_t, H5T_str_t};

use super::ffi::{check, cstr, locked, Hid};
use crate::storage::{StorageError, StorageResult};

/// A region of a dataset: `start`/`count` per dimension (both empty for a scalar).
pub struct Region<'a> {
    /// First element per dimension.
    pub start: &'a [u64],
    /// Elements per dimension.
    pub count: &'a [u64],
}

impl Region<'_> {
    /// Number of elements in the region (checked).
    pub fn elements(&self) -> Option<u64> {
        self.count.iter().try_fold(1u64, |a, c| a.checked_mul(*c))
    }
}

/// Reads `region` of dataset `dset` as `memtype` into `buf` (which must hold
/// `region.elements() * H5Tget_size(memtype)` bytes). Caller holds the lock.
unsafe fn read_region_locked(
    dset: i64,
    memtype: i64,
    region: &Region,
    buf: *mut c_void,
    path: &str,
) -> StorageResult<()> {
    let fspace = Hid::new(hdf5_sys::h5d::H5Dget_space(dset), path)?;
    // The caller's buffer holds `region.elements()` elements of `memtype`: a region of the wrong
    // rank (or the whole of a non-scalar dataset) would make the library write past it.
    let rank = h5s::H5Sget_simple_extent_ndims(fspace.id());
    if region.start.is_empty() {
        if rank != 0 {
            return Err(StorageError::corrupt(path, format!("whole read of a rank-{rank} dataset")));
        }
        let st = hdf5_sys::h5d::H5Dread(dset, memtype, h5s::H5S_ALL, h5s::H5S_ALL, 0, buf);
        return check(i64::from(st), path).map(|_| ());
    }
    if rank < 0 || rank as usize != region.start.len() || region.count.len() != region.start.len() {
        return Err(StorageError::corrupt(path, format!("a {}-d selection of a rank-{rank} dataset", region.start.len())));
    }
    let st = h5s::H5Sselect_hyperslab(
        fspace.id(),
        H5S_seloper_t::H5S_SELECT_SET,
        region.start.as_ptr(),
        std::ptr::null(),
        region.count.as_ptr(),
        std::ptr::null(),
    );
    check(i64::from(st), path)?;
    let n = region
        .elements()
        .ok_or_else(|| StorageError::corrupt(path, "selection too large"))?;
    let mspace = Hid::new(h5s::H5Screate_simple(1, &n, std::ptr::null()), path)?;
    let st = hdf5_sys::h5d::H5Dread(dset, memtype, mspace.id(), fspace.id(), 0, buf);
    check(i64::from(st), path).map(|_| ())
}

/// Reads `region` as raw bytes of `memtype` (`elem` bytes each).
pub fn read_bytes(
    dset: i64,
    memtype: i64,
    elem: usize,
    region: &Region,
    path: &str,
) -> StorageResult<Vec<u8>> {
    let n = region.elements().and_then(|n| usize::try_from(n).ok());
    let bytes = n
        .and_then(|n| n.checked_mul(elem))
        .filter(|b| *b as u64 <= super::file::MAX_READ_BYTES)
        .ok_or_else(|| StorageError::corrupt(path, "region too large to read at once"))?;
    let mut buf = vec![0u8; bytes];
    if bytes == 0 {
        return Ok(buf);
    }
    // SAFETY: H5Tget_size only reads the type; under the library lock.
    let size = locked(|| unsafe { h5t::H5Tget_size(memtype) });
    if size != elem {
        return Err(StorageError::corrupt(path, format!("element of {size} bytes read as {elem}")));
    }
    // SAFETY: `buf` holds `region.elements() * elem` bytes, `elem` being the size of `memtype`
    // (checked above); read_region_locked checks the region's rank against `dset`'s; `locked`
    // holds the library lock.
    locked(|| unsafe { read_region_locked(dset, memtype, region, buf.as_mut_ptr().cast(), path) })?;
    Ok(buf)
}

/// How a string type is stored.
#[derive(Clone, Copy, Debug)]
pub struct StrKind {
    /// Variable-length (global heap).
    pub vlen: bool,
    /// Fixed length in bytes.
    pub size: usize,
    /// Padding of fixed strings.
    pub pad: H5T_str_t,
    /// Character set.
    pub cset: H5T_cset_t,
}

/// A memory type for reading strings of `kind`.
unsafe fn string_mem_type(file_type: i64, kind: &StrKind, path: &str) -> StorageResult<Hid> {
    if kind.vlen {
        let t = Hid::new(h5t::H5Tcopy(*h5t::H5T_C_S1), path)?;
        check(i64::from(h5t::H5Tset_size(t.id(), h5t::H5T_VARIABLE)), path)?;
        check(i64::from(h5t::H5Tset_cset(t.id(), kind.cset)), path)?;
        Ok(t)
    } else {
        Hid::new(h5t::H5Tcopy(file_type), path)
    }
}

/// Decodes a fixed-length string: cut at the first NUL (or strip trailing spaces for
/// space-padded strings); invalid UTF-8 becomes U+FFFD.
pub fn fixed_to_string(bytes: &[u8], pad: H5T_str_t) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let mut s = &bytes[..end];
    if pad == H5T_str_t::H5T_STR_SPACEPAD {
        while let [rest @ .., b' '] = s {
            s = rest;
        }
    }
    String::from_utf8_lossy(s).into_owned()
}

/// Turns library-allocated `char*`s into strings (null → empty).
unsafe fn from_ptrs(ptrs: &[*mut c_char]) -> Vec<String> {
    ptrs.iter()
        .map(|p| {
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(*p).to_string_lossy().into_owned()
            }
        })
        .collect()
}

/// Reads `n` strings with `read(memtype, buf)` (a dataset or attribute read of `n` elements).
/// `space` describes the memory buffer for reclaiming vlen memory. Caller holds the lock.
unsafe fn read_with(
    file_type: i64,
    kind: &StrKind,
    n: usize,
    path: &str,
    read: impl FnOnce(i64, *mut c_void) -> StorageResult<()>,
) -> StorageResult<Vec<String>> {
    let mt = string_mem_type(file_type, kind, path)?;
    if kind.vlen {
        let mut ptrs: Vec<*mut c_char> = vec![std::ptr::null_mut(); n];
        read(mt.id(), ptrs.as_mut_ptr().cast())?;
        let out = from_ptrs(&ptrs);
        for p in ptrs.into_iter().filter(|p| !p.is_null()) {
            hdf5_sys::h5::H5free_memory(p.cast());
        }
        Ok(out)
    } else {
        let size = kind.size.max(1);
        if h5t::H5Tget_size(mt.id()) != size {
            return Err(StorageError::corrupt(path, format!("strings of {} bytes read as {size}", h5t::H5Tget_size(mt.id()))));
        }
        let total = n
            .checked_mul(size)
            .ok_or_else(|| StorageError::corrupt(path, "string array too large"))?;
        let mut buf = vec![0u8; total];
        read(mt.id(), buf.as_mut_ptr().cast())?;
        Ok(buf
            .chunks_exact(size)
            .map(|c| fixed_to_string(c, kind.pad))
            .collect())
    }
}

/// Reads flat elements `[start, end)` of a string dataset of `shape` (empty for a scalar).
pub fn dataset_strings(
    dset: i64,
    file_type: i64,
    kind: &StrKind,
    shape: &[u64],
    start: u64,
    end: u64,
    path: &str,
) -> StorageResult<Vec<String>> {
    let total: u64 = shape.iter().product();
    if start > end || end > total {
        return Err(StorageError::corrupt(
            path,
            format!("string range {start}..{end} outside 0..{total}"),
        ));
    }
    if start == end {
        return Ok(Vec::new());
    }
    // Whole rows along the first dimension cover the flat range; slice afterwards.
    let row: u64 = shape.iter().skip(1).product();
    let (r0, r1) = if shape.is_empty() {
        (0, 1)
    } else {
        (start / row, end.div_ceil(row))
    };
    let mut rstart = vec![0u64; shape.len()];
    let mut count = shape.to_vec();
    if !shape.is_empty() {
        rstart[0] = r0;
        count[0] = r1 - r0;
    }
    let region = Region {
        start: &rstart,
        count: &count,
    };
    let n = region
        .elements()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| StorageError::corrupt(path, "too many strings"))?;
    // SAFETY: read_with sizes its buffer for `n`, the region's element count, of `kind`'s memory
    // type (`kind` describes `file_type`); `rstart`/`count` have one entry per dimension of
    // `shape`, the dataset's shape. Under the library lock.
    let all = locked(|| unsafe {
        read_with(file_type, kind, n, path, |mt, buf| {
            read_region_locked(dset, mt, &region, buf, path)
        })
    })?;
    let skip = (start - r0 * row) as usize;
    Ok(all
        .into_iter()
        .skip(skip)
        .take((end - start) as usize)
        .collect())
}

/// Reads all `n` strings of an attribute.
pub fn attr_strings(
    attr: i64,
    file_type: i64,
    kind: &StrKind,
    n: usize,
    path: &str,
) -> StorageResult<Vec<String>> {
    // SAFETY: H5Aread fills all elements of the attribute, checked to be `n`, into read_with's
    // buffer of `n` elements of `kind`'s memory type; under the library lock.
    locked(|| unsafe {
        let space = Hid::new(hdf5_sys::h5a::H5Aget_space(attr), path)?;
        let points = h5s::H5Sget_simple_extent_npoints(space.id());
        if points < 0 || points as u64 != n as u64 {
            return Err(StorageError::corrupt(path, format!("attribute of {points} strings read as {n}")));
        }
        read_with(file_type, kind, n, path, |mt, buf| {
            check(i64::from(hdf5_sys::h5a::H5Aread(attr, mt, buf)), path).map(|_| ())
        })
    })
}

/// Reads the variable-length string field `field` of records `[start, end)` of a 1-D compound
/// dataset, through a memory compound type holding only that field.
pub fn field_strings(
    dset: i64,
    field: &str,
    cset: H5T_cset_t,
    start: u64,
    end: u64,
    path: &str,
) -> StorageResult<Vec<String>> {
    if start >= end {
        return Ok(Vec::new());
    }
    let n = usize::try_from(end - start)
        .map_err(|_| StorageError::corrupt(path, "too many records"))?;
    // SAFETY: `ptrs` holds `n` = `end - start` pointers, one pointer-sized `ct` record each;
    // read_region_locked refuses a dataset that is not 1-D; each string is freed once. Under the
    // library lock.
    locked(|| unsafe {
        let ptr_size = std::mem::size_of::<*mut c_char>();
        let ct = Hid::new(
            h5t::H5Tcreate(h5t::H5T_class_t::H5T_COMPOUND, ptr_size),
            path,
        )?;
        let kind = StrKind {
            vlen: true,
            size: 0,
            pad: H5T_str_t::H5T_STR_NULLTERM,
            cset,
        };
        let st = string_mem_type(-1, &kind, path)?;
        let name = cstr(field, path)?;
        check(
            i64::from(h5t::H5Tinsert(ct.id(), name.as_ptr(), 0, st.id())),
            path,
        )?;
        let mut ptrs: Vec<*mut c_char> = vec![std::ptr::null_mut(); n];
        let region = Region {
            start: &[start],
            count: &[end - start],
        };
        read_region_locked(dset, ct.id(), &region, ptrs.as_mut_ptr().cast(), path)?;
        let out = from_ptrs(&ptrs);
        for p in ptrs.into_iter().filter(|p| !p.is_null()) {
            hdf5_sys::h5::H5free_memory(p.cast());
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::{read_bytes, Region};

    fn numeric() -> hdf5::File {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5/numeric.h5");
        hdf5::File::open(path).expect("fixture")
    }

    /// A region or element size that does not fit the dataset is an error, never a read past
    /// the buffer; the right ones read the values.
    #[test]
    fn reads_check_their_arguments_against_the_dataset() {
        let f = numeric();
        let ds = f.dataset("contiguous_f64").expect("dataset"); // 20 x 7 float64
        let t = ds.dtype().expect("type");
        let ok = read_bytes(ds.id(), t.id(), 8, &Region { start: &[1, 2], count: &[3, 4] }, "contiguous_f64").expect("read");
        let all = ds.read_raw::<f64>().expect("values");
        let want: Vec<u8> = (1..4).flat_map(|r| all[r * 7 + 2..r * 7 + 6].to_vec()).flat_map(f64::to_le_bytes).collect();
        assert_eq!(ok, want);
        let wrong_elem = read_bytes(ds.id(), t.id(), 4, &Region { start: &[0, 0], count: &[20, 7] }, "contiguous_f64");
        assert!(wrong_elem.is_err(), "an 8-byte type read as 4-byte elements");
        let wrong_rank = read_bytes(ds.id(), t.id(), 8, &Region { start: &[0], count: &[20] }, "contiguous_f64");
        assert!(wrong_rank.is_err(), "a 1-d selection of a 2-d dataset");
        let whole = read_bytes(ds.id(), t.id(), 8, &Region { start: &[], count: &[] }, "contiguous_f64");
        assert!(whole.is_err(), "a whole read of a 2-d dataset into one element");
        let scalar = f.dataset("scalar_f64").expect("dataset");
        let st = scalar.dtype().expect("type");
        let one = read_bytes(scalar.id(), st.id(), 8, &Region { start: &[], count: &[] }, "scalar_f64").expect("scalar");
        assert_eq!(one, scalar.read_scalar::<f64>().expect("value").to_le_bytes());
    }
}
