//! Attributes → JSON values. Unknown or unreadable attribute types are skipped (logged),
//! never fatal.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use hdf5_sys::h5a;
use hdf5_sys::h5s::{self, H5S_class_t};
use serde_json::Value;

use super::dtype::{inspect, TypeInfo};
use super::ffi::{check, locked, read_name, Hid};
use super::library::{attr_strings, StrKind};
use crate::storage::{AttrValue, Attrs, NumType, StorageError, StorageResult};

/// Attributes with more elements than this are skipped (annfs renders attributes inline).
const MAX_ATTR_ELEMS: u64 = 1 << 24;

/// Reads all attributes of object `obj` (at `path`).
pub fn read_all(obj: i64, path: &str) -> Attrs {
    let mut out = Attrs::new();
    for raw in names(obj, path) {
        let name = raw.to_string_lossy().into_owned();
        match read_one(obj, &raw, &name, path) {
            Ok(Some(v)) => {
                out.insert(name, v);
            }
            Ok(None) => {}
            Err(e) => log::debug!("{path}: skipping attribute {name:?}: {e}"),
        }
    }
    out
}

unsafe extern "C" fn name_cb(
    _loc: i64,
    name: *const c_char,
    _info: *const h5a::H5A_info_t,
    data: *mut c_void,
) -> c_int {
    let names = &mut *data.cast::<Vec<CString>>();
    if !name.is_null() {
        names.push(CStr::from_ptr(name).to_owned());
    }
    0
}

/// Attribute names as raw bytes (the library needs them back unchanged).
fn names(obj: i64, path: &str) -> Vec<CString> {
    let mut names: Vec<CString> = Vec::new();
    // SAFETY: `idx` and `names` outlive the call; `name_cb` casts `data` back to this
    // `Vec<CString>` and runs only inside H5Aiterate2, under the library lock `locked` holds.
    let st = locked(|| unsafe {
        let mut idx = 0u64;
        h5a::H5Aiterate2(
            obj,
            hdf5_sys::h5::H5_index_t::H5_INDEX_NAME,
            hdf5_sys::h5::H5_iter_order_t::H5_ITER_INC,
            &mut idx,
            Some(name_cb),
            (&mut names as *mut Vec<CString>).cast(),
        )
    });
    if st < 0 {
        log::debug!("{path}: cannot list attributes");
    }
    names
}

/// Reads one attribute; `Ok(None)` for types annfs does not render.
fn read_one(obj: i64, cname: &CStr, name: &str, path: &str) -> StorageResult<Option<AttrValue>> {
    let apath = format!("{path}@{name}");
    // SAFETY: `cname` is a NUL-terminated name alive for the call (0: default access list); under
    // the library lock, and the new id is owned by the `Hid`.
    let attr = locked(|| Hid::new(unsafe { h5a::H5Aopen(obj, cname.as_ptr(), 0) }, &apath))?;
    // SAFETY: `attr` is an open attribute owned by this frame; the type id goes to the `Hid`.
    let ty = locked(|| Hid::new(unsafe { h5a::H5Aget_type(attr.id()) }, &apath))?;
    // SAFETY: `attr` is an open attribute owned by this frame; the dataspace id goes to the `Hid`.
    let space = locked(|| Hid::new(unsafe { h5a::H5Aget_space(attr.id()) }, &apath))?;
    let shape = match space_shape(space.id(), &apath)? {
        None => return Ok(Some(Value::Null)),
        Some(s) => s,
    };
    let n = shape
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d))
        .filter(|n| *n <= MAX_ATTR_ELEMS);
    let n = n.ok_or_else(|| StorageError::unsupported(&apath, "attribute too large"))? as usize;
    let flat = match inspect(ty.id()) {
        TypeInfo::Num { nt, swap } => read_numbers(attr.id(), ty.id(), nt, swap, n, &apath)?,
        TypeInfo::Str {
            vlen,
            size,
            pad,
            cset,
        } => {
            let kind = StrKind {
                vlen,
                size,
                pad,
                cset,
            };
            attr_strings(attr.id(), ty.id(), &kind, n, &apath)?
                .into_iter()
                .map(Value::String)
                .collect()
        }
        TypeInfo::ObjRef => read_refs(attr.id(), n, &apath)?,
        other => {
            log::debug!("{apath}: attribute type {:?} not rendered", other.dtype());
            return Ok(None);
        }
    };
    Ok(Some(nest(flat, &shape)))
}

/// The dataspace's shape: `None` for a NULL dataspace, `[]` for a scalar.
pub fn space_shape(space: i64, path: &str) -> StorageResult<Option<Vec<u64>>> {
    // SAFETY: `dims` has `rank` entries, exactly what H5Sget_simple_extent_dims writes for this
    // dataspace (a null `maxdims` is allowed); under the library lock.
    locked(|| unsafe {
        match h5s::H5Sget_simple_extent_type(space) {
            H5S_class_t::H5S_NULL => Ok(None),
            H5S_class_t::H5S_SCALAR => Ok(Some(Vec::new())),
            H5S_class_t::H5S_SIMPLE => {
                let rank = check(i64::from(h5s::H5Sget_simple_extent_ndims(space)), path)?;
                if rank > 32 {
                    return Err(StorageError::corrupt(path, format!("rank {rank}")));
                }
                let mut dims = vec![0u64; rank as usize];
                check(
                    i64::from(h5s::H5Sget_simple_extent_dims(
                        space,
                        dims.as_mut_ptr(),
                        std::ptr::null_mut(),
                    )),
                    path,
                )?;
                Ok(Some(dims))
            }
            _ => Err(StorageError::corrupt(path, "invalid dataspace")),
        }
    })
}

/// Groups a flat C-order list into nested arrays of `shape` (a scalar stays bare).
fn nest(flat: Vec<Value>, shape: &[u64]) -> Value {
    match shape {
        [] => flat.into_iter().next().unwrap_or(Value::Null),
        [_] => Value::Array(flat),
        [_, rest @ ..] => {
            let inner: u64 = rest.iter().product();
            if inner == 0 {
                return Value::Array(Vec::new());
            }
            let mut it = flat.into_iter();
            let mut rows = Vec::new();
            loop {
                let row: Vec<Value> = it.by_ref().take(inner as usize).collect();
                if row.is_empty() {
                    break;
                }
                rows.push(nest(row, rest));
            }
            Value::Array(rows)
        }
    }
}

fn read_numbers(
    attr: i64,
    ty: i64,
    nt: NumType,
    swap: usize,
    n: usize,
    path: &str,
) -> StorageResult<Vec<Value>> {
    let size = nt.size();
    let mut buf = vec![0u8; n * size];
    // SAFETY: under the library lock; `buf` holds `n * nt.size()` bytes: `n` is the attribute's
    // element count, and the memory type copies its file type, whose size `inspect` matched.
    locked(|| unsafe {
        let mt = Hid::new(hdf5_sys::h5t::H5Tcopy(ty), path)?;
        check(
            i64::from(h5a::H5Aread(attr, mt.id(), buf.as_mut_ptr().cast())),
            path,
        )
    })?;
    super::dtype::swap_bytes(&mut buf, swap);
    Ok(buf.chunks_exact(size).map(|b| number(nt, b)).collect())
}

/// One little-endian number as JSON (non-finite floats become `null`).
pub fn number(nt: NumType, b: &[u8]) -> Value {
    let f = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    let arr = |b: &[u8], n: usize| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(&b[..n]);
        a
    };
    match nt {
        NumType::Bool => Value::Bool(b[0] != 0),
        NumType::I8 => (b[0] as i8).into(),
        NumType::I16 => i16::from_le_bytes([b[0], b[1]]).into(),
        NumType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
        NumType::I64 => i64::from_le_bytes(arr(b, 8)).into(),
        NumType::U8 => b[0].into(),
        NumType::U16 => u16::from_le_bytes([b[0], b[1]]).into(),
        NumType::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
        NumType::U64 => u64::from_le_bytes(arr(b, 8)).into(),
        NumType::F16 => f(f16_to_f64(u16::from_le_bytes([b[0], b[1]]))),
        NumType::F32 => f(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        NumType::F64 => f(f64::from_le_bytes(arr(b, 8))),
        NumType::C64 => Value::Array(vec![
            number(NumType::F32, &b[..4]),
            number(NumType::F32, &b[4..8]),
        ]),
        NumType::C128 => Value::Array(vec![
            number(NumType::F64, &b[..8]),
            number(NumType::F64, &b[8..16]),
        ]),
    }
}

/// IEEE half → f64.
pub fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(i32::from(e) - 15),
    }
}

/// Object references → absolute paths of the referenced objects.
fn read_refs(attr: i64, n: usize, path: &str) -> StorageResult<Vec<Value>> {
    use hdf5_sys::h5r::{H5R_ref_t, H5Rdestroy, H5Rget_obj_name};
    // SAFETY: `refs` holds `n` (the attribute's element count) `H5R_ref_t`s, the element of the
    // H5T_STD_REF memory type; each is destroyed once, after H5Aread filled it. Under the lock.
    locked(|| unsafe {
        let mut refs: Vec<H5R_ref_t> = vec![H5R_ref_t::default(); n];
        check(
            i64::from(h5a::H5Aread(
                attr,
                *hdf5_sys::h5t::H5T_STD_REF,
                refs.as_mut_ptr().cast(),
            )),
            path,
        )?;
        let names: Vec<StorageResult<String>> = refs
            .iter()
            .map(|r| read_name(path, |buf, len| H5Rget_obj_name(r, 0, buf, len) as isize))
            .collect();
        for r in refs.iter_mut() {
            H5Rdestroy(r);
        }
        names.into_iter().map(|r| r.map(Value::String)).collect()
    })
}
