//! Zarr data types → [`DType`], and the metadata rewrites that let `zarrs` read types it does not
//! know itself: numpy fixed bytes (`|S{n}`, v3 `null_terminated_bytes`) and structured (record)
//! types are read as raw bits and decoded here.

use serde_json::{json, Value};

use crate::storage::{DType, Field, FieldType, NumType};

/// How an array's elements are stored and presented.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Fixed-size numbers or bools.
    Num(NumType),
    /// Variable-length strings (v2 `|O` + `vlen-utf8`/`vlen-bytes`, v3 `string`).
    VlenStr,
    /// numpy `<U{n}`: `n` UTF-32 code points, NUL padded.
    Utf32(usize),
    /// numpy `|S{n}`: `n` bytes, NUL padded (read as raw bits).
    FixedBytes(usize),
    /// Records (read as raw bits). `utf32` lists `(offset, code points)` of UTF-32 string fields,
    /// which are transcoded in place to NUL-padded UTF-8 (presented as [`FieldType::FixedStr`]).
    Compound {
        /// The fields as presented.
        fields: Vec<Field>,
        /// Bytes per record.
        size: usize,
        /// UTF-32 fields to transcode: (offset, code points).
        utf32: Vec<(usize, usize)>,
    },
    /// Something annfs does not read; the string says what.
    Unsupported(String),
}

impl Kind {
    /// The element type presented to the model.
    pub fn dtype(&self) -> DType {
        match self {
            Kind::Num(t) => DType::Num(*t),
            Kind::VlenStr | Kind::Utf32(_) | Kind::FixedBytes(_) => DType::Str,
            Kind::Compound { fields, size, .. } => DType::Compound { fields: fields.clone(), record_size: *size },
            Kind::Unsupported(s) => DType::Unsupported(s.clone()),
        }
    }

    /// Bytes per element in decoded chunks (0 for variable-length strings).
    pub fn elem_size(&self) -> usize {
        match self {
            Kind::Num(t) => t.size(),
            Kind::Utf32(n) => 4 * n,
            Kind::FixedBytes(n) => *n,
            Kind::Compound { size, .. } => *size,
            Kind::VlenStr | Kind::Unsupported(_) => 0,
        }
    }
}

/// A numpy type string (`<f4`, `|b1`, `>i8`, `<U12`, `|S3`…) split into byte order, kind and size.
fn parse_numpy(s: &str) -> Option<(char, char, usize)> {
    let mut chars = s.chars();
    let order = chars.next()?;
    if !matches!(order, '<' | '>' | '|' | '=') {
        return None;
    }
    let kind = chars.next()?;
    let rest: String = chars.collect();
    let size = if rest.is_empty() { 0 } else { rest.parse().ok()? };
    Some((order, kind, size))
}

fn num_from_numpy(kind: char, size: usize) -> Option<NumType> {
    Some(match (kind, size) {
        ('b', 1) => NumType::Bool,
        ('i', 1) => NumType::I8,
        ('i', 2) => NumType::I16,
        ('i', 4) => NumType::I32,
        ('i', 8) => NumType::I64,
        ('u', 1) => NumType::U8,
        ('u', 2) => NumType::U16,
        ('u', 4) => NumType::U32,
        ('u', 8) => NumType::U64,
        ('f', 2) => NumType::F16,
        ('f', 4) => NumType::F32,
        ('f', 8) => NumType::F64,
        ('c', 8) => NumType::C64,
        ('c', 16) => NumType::C128,
        _ => return None,
    })
}

fn num_from_v3(name: &str) -> Option<NumType> {
    Some(match name {
        "bool" => NumType::Bool,
        "int8" => NumType::I8,
        "int16" => NumType::I16,
        "int32" => NumType::I32,
        "int64" => NumType::I64,
        "uint8" => NumType::U8,
        "uint16" => NumType::U16,
        "uint32" => NumType::U32,
        "uint64" => NumType::U64,
        "float16" => NumType::F16,
        "float32" => NumType::F32,
        "float64" => NumType::F64,
        "complex64" => NumType::C64,
        "complex128" => NumType::C128,
        _ => return None,
    })
}

/// Inspects a v2 `.zarray` document and rewrites it where `zarrs` needs help.
pub fn v2_kind(meta: &mut Value) -> Kind {
    let dtype = meta.get("dtype").cloned().unwrap_or(Value::Null);
    match &dtype {
        Value::String(s) => {
            let Some((order, kind, size)) = parse_numpy(s) else {
                return Kind::Unsupported(format!("data type {s}"));
            };
            if let Some(t) = num_from_numpy(kind, size) {
                return Kind::Num(t);
            }
            match kind {
                'O' => {
                    let ids: Vec<&str> = meta
                        .get("filters")
                        .and_then(Value::as_array)
                        .map(|f| f.iter().filter_map(|x| x.get("id").and_then(Value::as_str)).collect())
                        .unwrap_or_default();
                    if ids.iter().any(|i| matches!(*i, "vlen-utf8" | "vlen-bytes")) {
                        Kind::VlenStr
                    } else {
                        Kind::Unsupported(format!("object array with filters {ids:?} (only vlen-utf8 strings are read)"))
                    }
                }
                'U' if size > 0 && order != '>' => Kind::Utf32(size),
                'S' if size > 0 => {
                    meta["dtype"] = json!(format!("|V{size}"));
                    meta["fill_value"] = json!(vec![0u8; size]);
                    Kind::FixedBytes(size)
                }
                _ => Kind::Unsupported(format!("data type {s}")),
            }
        }
        Value::Array(fields) => match structured(fields, v2_field) {
            Ok(kind) => {
                meta["dtype"] = json!(format!("|V{}", kind.elem_size()));
                meta["fill_value"] = json!(vec![0u8; kind.elem_size()]);
                kind
            }
            Err(e) => Kind::Unsupported(e),
        },
        other => Kind::Unsupported(format!("data type {other}")),
    }
}

/// A v2 structured field type: a numpy string.
fn v2_field(t: &Value) -> Result<(FieldType, Option<usize>), String> {
    let s = t.as_str().ok_or_else(|| format!("nested record field type {t}"))?;
    let (order, kind, size) = parse_numpy(s).ok_or_else(|| format!("field type {s}"))?;
    if order == '>' && size > 1 {
        return Err(format!("big-endian field type {s}"));
    }
    if let Some(n) = num_from_numpy(kind, size) {
        return Ok((FieldType::Num(n, 1), None));
    }
    match kind {
        'S' if size > 0 => Ok((FieldType::FixedStr(size), None)),
        'U' if size > 0 => Ok((FieldType::FixedStr(4 * size), Some(size))),
        _ => Err(format!("field type {s}")),
    }
}

/// A v3 structured field type: a data type name or `{name, configuration}`.
fn v3_field(t: &Value) -> Result<(FieldType, Option<usize>), String> {
    let (name, conf) = v3_name(t);
    if let Some(n) = num_from_v3(&name) {
        return Ok((FieldType::Num(n, 1), None));
    }
    let len = conf.get("length_bytes").and_then(Value::as_u64).unwrap_or(0) as usize;
    match name.as_str() {
        "fixed_length_utf32" if len >= 4 => Ok((FieldType::FixedStr(len), Some(len / 4))),
        "null_terminated_bytes" | "fixed_length_bytes" if len > 0 => Ok((FieldType::FixedStr(len), None)),
        _ => Err(format!("field type {t}")),
    }
}

/// Builds a record kind from `[[name, type], [name, type, shape]…]`.
fn structured(
    fields: &[Value],
    field_type: impl Fn(&Value) -> Result<(FieldType, Option<usize>), String>,
) -> Result<Kind, String> {
    let mut out = Vec::new();
    let mut utf32 = Vec::new();
    let mut offset = 0usize;
    for f in fields {
        let parts = f.as_array().ok_or_else(|| format!("record field {f}"))?;
        let name = parts.first().and_then(Value::as_str).ok_or_else(|| format!("record field {f}"))?;
        let ty = parts.get(1).ok_or_else(|| format!("record field {f}"))?;
        let (mut dtype, u32len) = field_type(ty)?;
        let count: usize = match parts.get(2) {
            None => 1,
            Some(Value::Array(dims)) => dims.iter().map(|d| d.as_u64().unwrap_or(0) as usize).product(),
            Some(other) => return Err(format!("record field shape {other}")),
        };
        let bytes = match &mut dtype {
            FieldType::Num(t, c) => {
                *c = count;
                t.size() * count
            }
            FieldType::FixedStr(len) if count == 1 => *len,
            _ => return Err(format!("sub-array string field {name}")),
        };
        if let Some(n) = u32len {
            utf32.push((offset, n));
        }
        out.push(Field { name: name.to_string(), offset, dtype });
        offset += bytes;
    }
    if out.is_empty() || offset == 0 {
        return Err("empty record type".into());
    }
    Ok(Kind::Compound { fields: out, size: offset, utf32 })
}

/// A v3 data type's name and configuration.
fn v3_name(dt: &Value) -> (String, serde_json::Map<String, Value>) {
    match dt {
        Value::String(s) => (s.clone(), Default::default()),
        Value::Object(o) => (
            o.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            o.get("configuration").and_then(Value::as_object).cloned().unwrap_or_default(),
        ),
        _ => (String::new(), Default::default()),
    }
}

/// Inspects a v3 array `zarr.json` document and rewrites it where `zarrs` needs help.
pub fn v3_kind(meta: &mut Value) -> Kind {
    let dt = meta.get("data_type").cloned().unwrap_or(Value::Null);
    let (name, conf) = v3_name(&dt);
    if let Some(t) = num_from_v3(&name) {
        return Kind::Num(t);
    }
    let len = conf.get("length_bytes").and_then(Value::as_u64).unwrap_or(0) as usize;
    let raw = |meta: &mut Value, size: usize| {
        meta["data_type"] = json!(format!("r{}", size * 8));
        meta["fill_value"] = json!(vec![0u8; size]);
    };
    match name.as_str() {
        "string" | "variable_length_utf8" => Kind::VlenStr,
        "fixed_length_utf32" if len >= 4 && len % 4 == 0 => Kind::Utf32(len / 4),
        "null_terminated_bytes" | "fixed_length_bytes" if len > 0 => {
            raw(meta, len);
            Kind::FixedBytes(len)
        }
        "structured" => {
            let fields = conf.get("fields").and_then(Value::as_array).cloned().unwrap_or_default();
            match structured(&fields, v3_field) {
                Ok(kind) => {
                    raw(meta, kind.elem_size());
                    kind
                }
                Err(e) => Kind::Unsupported(e),
            }
        }
        _ => Kind::Unsupported(format!("data type {dt}")),
    }
}

/// Decodes `n` NUL-padded UTF-32LE code points.
pub fn utf32_to_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() / 4);
    for c in b.chunks_exact(4) {
        let u = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        s.push(char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    let end = s.trim_end_matches('\0').len();
    s.truncate(end);
    s
}

/// Decodes NUL-padded bytes (numpy `S`: trailing NULs stripped) as UTF-8 (invalid → U+FFFD).
pub fn bytes_to_string(b: &[u8]) -> String {
    let end = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Rewrites the UTF-32 fields of packed records in place as NUL-padded UTF-8 (which always fits:
/// at most 4 bytes per code point).
pub fn transcode_utf32_fields(records: &mut [u8], size: usize, utf32: &[(usize, usize)]) {
    if size == 0 {
        return;
    }
    for rec in records.chunks_exact_mut(size) {
        for &(off, n) in utf32 {
            let Some(field) = rec.get_mut(off..off + 4 * n) else { continue };
            let s = utf32_to_string(field);
            field.fill(0);
            let b = s.as_bytes();
            field[..b.len().min(4 * n)].copy_from_slice(&b[..b.len().min(4 * n)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_types() {
        let mut m = json!({"dtype": "<f4"});
        assert_eq!(v2_kind(&mut m), Kind::Num(NumType::F32));
        let mut m = json!({"dtype": "|b1"});
        assert_eq!(v2_kind(&mut m), Kind::Num(NumType::Bool));
        let mut m = json!({"dtype": "|O", "filters": [{"id": "vlen-utf8"}]});
        assert_eq!(v2_kind(&mut m), Kind::VlenStr);
        let mut m = json!({"dtype": "|O", "filters": [{"id": "pickle"}]});
        assert!(matches!(v2_kind(&mut m), Kind::Unsupported(_)));
        let mut m = json!({"dtype": "<U7"});
        assert_eq!(v2_kind(&mut m), Kind::Utf32(7));
        let mut m = json!({"dtype": "|S3", "fill_value": ""});
        assert_eq!(v2_kind(&mut m), Kind::FixedBytes(3));
        assert_eq!(m["dtype"], "|V3");
        let mut m = json!({"dtype": "<M8[ns]"});
        assert!(matches!(v2_kind(&mut m), Kind::Unsupported(_)));
    }

    #[test]
    fn v2_records() {
        let mut m = json!({"dtype": [["id", "<i4"], ["v", "<f8"], ["name", "<U3"], ["xy", "<f4", [2]]]});
        let Kind::Compound { fields, size, utf32 } = v2_kind(&mut m) else { panic!() };
        assert_eq!(size, 4 + 8 + 12 + 8);
        assert_eq!(fields[2].dtype, FieldType::FixedStr(12));
        assert_eq!(fields[3].dtype, FieldType::Num(NumType::F32, 2));
        assert_eq!(utf32, vec![(12, 3)]);
        assert_eq!(m["dtype"], "|V32");
    }

    #[test]
    fn v3_types() {
        let mut m = json!({"data_type": "string"});
        assert_eq!(v3_kind(&mut m), Kind::VlenStr);
        let mut m = json!({"data_type": {"name": "fixed_length_utf32", "configuration": {"length_bytes": 12}}});
        assert_eq!(v3_kind(&mut m), Kind::Utf32(3));
        let mut m = json!({"data_type": {"name": "structured", "configuration": {"fields": [["a", "int32"], ["n", {"name": "fixed_length_utf32", "configuration": {"length_bytes": 8}}]]}}});
        let Kind::Compound { size, .. } = v3_kind(&mut m) else { panic!() };
        assert_eq!(size, 12);
        assert_eq!(m["data_type"], "r96");
    }

    #[test]
    fn strings() {
        let mut b: Vec<u8> = "hé".chars().flat_map(|c| (c as u32).to_le_bytes()).collect();
        b.extend([0u8; 4]);
        assert_eq!(utf32_to_string(&b), "hé");
        assert_eq!(bytes_to_string(b"ab\0\0"), "ab");
        let mut rec = b.clone();
        transcode_utf32_fields(&mut rec, 12, &[(0, 3)]);
        assert_eq!(&rec[..4], "hé\0".as_bytes());
    }
}
