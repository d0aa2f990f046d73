//! HDF5 datatypes → annfs element types, plus how to turn file-layout bytes into the packed
//! little-endian layout [`ArraySource::read_chunk`](crate::storage::ArraySource) returns.

use hdf5_sys::h5t::{self, H5T_class_t, H5T_cset_t, H5T_order_t, H5T_sign_t, H5T_str_t};

use super::ffi::{locked, take_lib_string, Hid};
use crate::storage::{DType, Field, FieldType, NumType, StorageError};

/// What a file datatype is, as far as annfs cares.
#[derive(Clone, Debug)]
pub enum TypeInfo {
    /// Fixed-size numbers; `swap` is the byte-swap unit for big-endian data (0 = none).
    Num {
        /// The element type.
        nt: NumType,
        /// Byte-swap unit (0 = little-endian already).
        swap: usize,
    },
    /// Strings; `vlen` for variable-length, else `size` bytes padded per `pad`.
    Str {
        /// Variable-length (global heap) strings.
        vlen: bool,
        /// Bytes per fixed-length string.
        size: usize,
        /// Padding of fixed-length strings.
        pad: H5T_str_t,
        /// Character set (ASCII or UTF-8).
        cset: H5T_cset_t,
    },
    /// Records of `file_size` bytes in the file.
    Compound {
        /// The fields, in order.
        fields: Vec<CField>,
        /// Bytes of one packed (decoded) record.
        record_size: usize,
        /// Bytes of one record in the file.
        file_size: usize,
    },
    /// An object reference (attributes only).
    ObjRef,
    /// Anything else, described.
    Other(String),
}

/// One compound field: where it sits in the file record and in annfs' packed record.
#[derive(Clone, Debug)]
pub struct CField {
    /// The public description (packed offset and type).
    pub field: Field,
    /// Byte offset in the file record.
    pub file_offset: usize,
    /// Bytes the field occupies in the packed record (0 for variable-length strings).
    pub packed_size: usize,
    /// Byte-swap unit for big-endian numbers (0 = none).
    pub swap: usize,
}

impl TypeInfo {
    /// The public element type.
    pub fn dtype(&self) -> DType {
        match self {
            TypeInfo::Num { nt, .. } => DType::Num(*nt),
            TypeInfo::Str { .. } => DType::Str,
            TypeInfo::Compound {
                fields,
                record_size,
                ..
            } => DType::Compound {
                fields: fields.iter().map(|f| f.field.clone()).collect(),
                record_size: *record_size,
            },
            TypeInfo::ObjRef => DType::Unsupported("object reference".into()),
            TypeInfo::Other(d) => DType::Unsupported(d.clone()),
        }
    }

    /// Bytes per element in annfs' packed layout (0 for strings and unsupported types).
    pub fn packed_size(&self) -> usize {
        match self {
            TypeInfo::Num { nt, .. } => nt.size(),
            TypeInfo::Compound { record_size, .. } => *record_size,
            _ => 0,
        }
    }

    /// Bytes per element in the file layout (0 when not read from raw bytes).
    pub fn file_size(&self) -> usize {
        match self {
            TypeInfo::Num { nt, .. } => nt.size(),
            TypeInfo::Compound { file_size, .. } => *file_size,
            _ => 0,
        }
    }

    /// Converts `n` elements of file-layout bytes into the packed little-endian layout.
    /// `raw.len()` must be `n * file_size()`.
    pub fn to_packed(&self, raw: Vec<u8>) -> Vec<u8> {
        match self {
            TypeInfo::Num { swap, .. } => {
                let mut raw = raw;
                swap_bytes(&mut raw, *swap);
                raw
            }
            TypeInfo::Compound {
                fields,
                record_size,
                file_size,
            } => repack(&raw, fields, *record_size, *file_size),
            _ => raw,
        }
    }
}

/// Reverses every `unit`-byte group in place (no-op for unit <= 1).
pub fn swap_bytes(buf: &mut [u8], unit: usize) {
    if unit > 1 {
        for c in buf.chunks_exact_mut(unit) {
            c.reverse();
        }
    }
}

/// Copies each fixed-size field of each file record into its packed slot, swapping big-endian
/// numbers.
fn repack(raw: &[u8], fields: &[CField], record_size: usize, file_size: usize) -> Vec<u8> {
    if file_size == 0 {
        return Vec::new();
    }
    let n = raw.len() / file_size;
    let mut out = vec![0u8; n * record_size];
    for (rec, dst) in raw
        .chunks_exact(file_size)
        .zip(out.chunks_exact_mut(record_size.max(1)))
    {
        for f in fields.iter().filter(|f| f.packed_size > 0) {
            let (src_end, dst_end) = (
                f.file_offset + f.packed_size,
                f.field.offset + f.packed_size,
            );
            if src_end <= rec.len() && dst_end <= dst.len() {
                let d = &mut dst[f.field.offset..dst_end];
                d.copy_from_slice(&rec[f.file_offset..src_end]);
                swap_bytes(d, f.swap);
            }
        }
    }
    out
}

/// Inspects a datatype. Never fails: what cannot be described becomes [`TypeInfo::Other`].
pub fn inspect(tid: i64) -> TypeInfo {
    // SAFETY: inspect_locked and its helpers need the library lock, which `locked` holds; they only
    // query `tid` (the library rejects invalid ids) and own every id they open through `Hid`.
    locked(|| unsafe { inspect_locked(tid) })
}

unsafe fn inspect_locked(tid: i64) -> TypeInfo {
    let class = h5t::H5Tget_class(tid);
    let size = h5t::H5Tget_size(tid);
    match class {
        H5T_class_t::H5T_INTEGER => int_type(tid, size),
        H5T_class_t::H5T_FLOAT => float_type(tid, size),
        H5T_class_t::H5T_ENUM => enum_type(tid, size),
        H5T_class_t::H5T_STRING => string_type(tid, size),
        H5T_class_t::H5T_COMPOUND => compound_type(tid, size),
        H5T_class_t::H5T_COMPLEX => complex_of(tid, size),
        H5T_class_t::H5T_REFERENCE if size == 8 => ObjRefCheck::check(tid),
        other => TypeInfo::Other(format!("{other:?} of {size} bytes")),
    }
}

/// Distinguishes old-style object references (H5T_STD_REF_OBJ) from region references.
struct ObjRefCheck;

impl ObjRefCheck {
    unsafe fn check(tid: i64) -> TypeInfo {
        if h5t::H5Tequal(tid, *h5t::H5T_STD_REF_OBJ) > 0 {
            TypeInfo::ObjRef
        } else {
            TypeInfo::Other("region reference".into())
        }
    }
}

/// The byte-swap unit of type `tid` of `size` bytes: `size` when big-endian, else 0.
///
/// # Safety
/// The caller holds the library lock (int_type, float_type and complex_of, all reached from
/// inspect_locked).
unsafe fn swap_unit(tid: i64, size: usize) -> usize {
    // SAFETY: under the caller's library lock; H5Tget_order only reads `tid`.
    let order = unsafe { h5t::H5Tget_order(tid) };
    if order == H5T_order_t::H5T_ORDER_BE {
        size
    } else {
        0
    }
}

unsafe fn int_type(tid: i64, size: usize) -> TypeInfo {
    let signed = h5t::H5Tget_sign(tid) == H5T_sign_t::H5T_SGN_2;
    let nt = match (signed, size) {
        (true, 1) => NumType::I8,
        (true, 2) => NumType::I16,
        (true, 4) => NumType::I32,
        (true, 8) => NumType::I64,
        (false, 1) => NumType::U8,
        (false, 2) => NumType::U16,
        (false, 4) => NumType::U32,
        (false, 8) => NumType::U64,
        _ => return TypeInfo::Other(format!("{size}-byte integer")),
    };
    TypeInfo::Num {
        nt,
        swap: swap_unit(tid, size),
    }
}

unsafe fn float_type(tid: i64, size: usize) -> TypeInfo {
    let nt = match size {
        2 => NumType::F16,
        4 => NumType::F32,
        8 => NumType::F64,
        _ => return TypeInfo::Other(format!("{size}-byte float")),
    };
    TypeInfo::Num {
        nt,
        swap: swap_unit(tid, size),
    }
}

/// Enums: FALSE=0/TRUE=1 over a 1-byte base is a bool; any other enum reads as its base integer.
unsafe fn enum_type(tid: i64, size: usize) -> TypeInfo {
    let base = match Hid::new(h5t::H5Tget_super(tid), "enum") {
        Ok(b) => b,
        Err(_) => return TypeInfo::Other("enum without base type".into()),
    };
    if size == 1 && is_bool_enum(tid) {
        return TypeInfo::Num {
            nt: NumType::Bool,
            swap: 0,
        };
    }
    int_type(base.id(), size)
}

unsafe fn is_bool_enum(tid: i64) -> bool {
    if h5t::H5Tget_nmembers(tid) != 2 {
        return false;
    }
    let mut names = Vec::new();
    for i in 0..2u32 {
        let mut v = 0u8;
        if h5t::H5Tget_member_value(tid, i, (&mut v as *mut u8).cast()) < 0 {
            return false;
        }
        let name = take_lib_string(h5t::H5Tget_member_name(tid, i)).unwrap_or_default();
        names.push((name, v));
    }
    names.sort_by_key(|(_, v)| *v);
    names[0] == ("FALSE".to_string(), 0) && names[1] == ("TRUE".to_string(), 1)
}

unsafe fn string_type(tid: i64, size: usize) -> TypeInfo {
    let vlen = h5t::H5Tis_variable_str(tid) > 0;
    TypeInfo::Str {
        vlen,
        size,
        pad: h5t::H5Tget_strpad(tid),
        cset: h5t::H5Tget_cset(tid),
    }
}

/// HDF5 2.x native complex class.
unsafe fn complex_of(tid: i64, size: usize) -> TypeInfo {
    let base = match Hid::new(h5t::H5Tget_super(tid), "complex") {
        Ok(b) => b,
        Err(_) => return TypeInfo::Other("complex without base type".into()),
    };
    let half = size / 2;
    match size {
        8 => TypeInfo::Num {
            nt: NumType::C64,
            swap: swap_unit(base.id(), half),
        },
        16 => TypeInfo::Num {
            nt: NumType::C128,
            swap: swap_unit(base.id(), half),
        },
        _ => TypeInfo::Other(format!("{size}-byte complex")),
    }
}

/// A compound member as read from the type.
struct Member {
    name: String,
    offset: usize,
    info: MemberType,
}

enum MemberType {
    Num(NumType, usize, usize),
    FixedStr(usize),
    VarStr,
    Other(String),
}

unsafe fn compound_type(tid: i64, size: usize) -> TypeInfo {
    let n = h5t::H5Tget_nmembers(tid);
    if n <= 0 {
        return TypeInfo::Other("empty compound".into());
    }
    let members: Vec<Member> = (0..n as u32).map(|i| member(tid, i)).collect();
    if let Some(c) = complex_pair(&members, size) {
        return c;
    }
    let mut fields = Vec::new();
    let mut offset = 0usize;
    for m in members {
        let (dtype, packed, swap) = match m.info {
            MemberType::Num(nt, count, swap) => {
                (FieldType::Num(nt, count), nt.size() * count, swap)
            }
            MemberType::FixedStr(len) => (FieldType::FixedStr(len), len, 0),
            MemberType::VarStr => (FieldType::VarStr, 0, 0),
            MemberType::Other(d) => {
                return TypeInfo::Other(format!("compound field {}: {d}", m.name))
            }
        };
        if m.offset.checked_add(packed).is_none_or(|end| end > size) {
            return TypeInfo::Other(format!("compound field {} outside its record", m.name));
        }
        fields.push(CField {
            field: Field {
                name: m.name,
                offset,
                dtype,
            },
            file_offset: m.offset,
            packed_size: packed,
            swap,
        });
        offset += packed;
    }
    TypeInfo::Compound {
        fields,
        record_size: offset,
        file_size: size,
    }
}

/// numpy/h5py complex numbers: a compound `{r, i}` of two equal floats.
fn complex_pair(members: &[Member], size: usize) -> Option<TypeInfo> {
    if members.len() != 2 || members[0].name != "r" || members[1].name != "i" {
        return None;
    }
    match (&members[0].info, &members[1].info) {
        (MemberType::Num(a, 1, sa), MemberType::Num(b, 1, _))
            if a == b
                && members[0].offset == 0
                && members[1].offset == a.size()
                && size == 2 * a.size() =>
        {
            let nt = match a {
                NumType::F32 => NumType::C64,
                NumType::F64 => NumType::C128,
                _ => return None,
            };
            Some(TypeInfo::Num { nt, swap: *sa })
        }
        _ => None,
    }
}

unsafe fn member(tid: i64, i: u32) -> Member {
    let name = take_lib_string(h5t::H5Tget_member_name(tid, i)).unwrap_or_default();
    let offset = h5t::H5Tget_member_offset(tid, i);
    let info = match Hid::new(h5t::H5Tget_member_type(tid, i), &name) {
        Ok(mt) => member_type(mt.id()),
        Err(_) => MemberType::Other("unreadable member type".into()),
    };
    Member { name, offset, info }
}

unsafe fn member_type(mt: i64) -> MemberType {
    if h5t::H5Tget_class(mt) == H5T_class_t::H5T_ARRAY {
        return array_member(mt);
    }
    match inspect_locked(mt) {
        TypeInfo::Num { nt, swap } => MemberType::Num(nt, 1, swap),
        TypeInfo::Str { vlen: true, .. } => MemberType::VarStr,
        TypeInfo::Str {
            vlen: false, size, ..
        } => MemberType::FixedStr(size),
        other => MemberType::Other(format!("{:?}", other.dtype())),
    }
}

/// Sub-array members (`X_pca <f4 x 50`): numbers only.
unsafe fn array_member(mt: i64) -> MemberType {
    let nd = h5t::H5Tget_array_ndims(mt);
    if !(0..=32).contains(&nd) {
        return MemberType::Other("array member with bad rank".into());
    }
    let mut dims = vec![0u64; nd as usize];
    if h5t::H5Tget_array_dims2(mt, dims.as_mut_ptr()) < 0 {
        return MemberType::Other("array member without dims".into());
    }
    let count = dims
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(usize::try_from(*d).ok()?));
    let base = match Hid::new(h5t::H5Tget_super(mt), "array") {
        Ok(b) => b,
        Err(_) => return MemberType::Other("array member without base".into()),
    };
    match (inspect_locked(base.id()), count) {
        (TypeInfo::Num { nt, swap }, Some(c)) => MemberType::Num(nt, c, swap),
        (other, _) => MemberType::Other(format!("array of {:?}", other.dtype())),
    }
}

/// A memory type for reading a dataset's file-layout bytes through the library without
/// conversion (compound: only the fixed-size fields, at their file offsets).
pub fn raw_mem_type(tid: i64, info: &TypeInfo, path: &str) -> Result<Hid, StorageError> {
    // SAFETY: under the library lock: `tid` is checked by the library, `name` outlives H5Tinsert,
    // and every id created here is owned by a `Hid`.
    locked(|| unsafe {
        match info {
            TypeInfo::Compound {
                fields, file_size, ..
            } => {
                let t = Hid::new(h5t::H5Tcreate(H5T_class_t::H5T_COMPOUND, *file_size), path)?;
                for (i, f) in fields.iter().enumerate() {
                    if f.packed_size == 0 {
                        continue;
                    }
                    let mt = Hid::new(h5t::H5Tget_member_type(tid, i as u32), path)?;
                    let name = super::ffi::cstr(&f.field.name, path)?;
                    let st = h5t::H5Tinsert(t.id(), name.as_ptr(), f.file_offset, mt.id());
                    super::ffi::check(st as i64, path)?;
                }
                Ok(t)
            }
            _ => Hid::new(h5t::H5Tcopy(tid), path),
        }
    })
}
