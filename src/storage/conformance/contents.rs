//! [`Contents`]: an array's contents in the form every backend's answers are compared in, read
//! from any [`ArraySource`]; and comparisons of chunks and elements with it.

use crate::storage::grid::ChunkGrid;
use crate::storage::{ArraySource, DType, FieldType, NumType, StorageError, StorageResult};

/// An array's contents in a form every backend can be compared in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Contents {
    /// Numbers (or bools) of one type, packed little-endian in C order.
    Num(NumType, Vec<u8>),
    /// Strings in C order.
    Str(Vec<String>),
    /// Records: each field's values over all records, fields in the type's order (numbers
    /// `count` per record as `Num`; fixed- or variable-length strings as `Str`).
    Records(Vec<(String, Contents)>),
    /// An HDF5 null dataspace: no elements.
    Null,
}

/// Reads all of `src` into [`Contents`] (chunks reassembled, strings and string fields read).
pub(crate) fn read_contents(src: &dyn ArraySource) -> StorageResult<Contents> {
    let m = src.meta();
    if m.null {
        return Ok(Contents::Null);
    }
    let n = m.len();
    Ok(match &m.dtype {
        DType::Str => Contents::Str(src.read_strings(0, n)?),
        DType::Num(t) => Contents::Num(*t, reassemble(src)?),
        DType::Compound { fields, record_size } => {
            let raw = reassemble(src)?;
            let records = || raw.chunks_exact((*record_size).max(1));
            let mut out = Vec::new();
            for f in fields {
                let values = match f.dtype {
                    FieldType::Num(t, count) => {
                        let w = t.size() * count;
                        Contents::Num(t, records().flat_map(|r| r[f.offset..f.offset + w].to_vec()).collect())
                    }
                    FieldType::FixedStr(len) => Contents::Str(records().map(|r| fixed_str(&r[f.offset..f.offset + len])).collect()),
                    FieldType::VarStr => Contents::Str(src.read_field_strings(&f.name, 0, n)?),
                };
                out.push((f.name.clone(), values));
            }
            Contents::Records(out)
        }
        DType::Unsupported(why) => return Err(StorageError::unsupported(&m.path, why.clone())),
    })
}

/// Where `a` and `b` first differ (`None` when equal), for messages short enough to read.
pub(crate) fn first_difference(a: &Contents, b: &Contents) -> Option<String> {
    match (a, b) {
        (Contents::Num(t, x), Contents::Num(u, y)) => {
            let at = x.iter().zip(y).position(|(p, q)| p != q);
            match (t == u, x.len() == y.len(), at) {
                (false, ..) => Some(format!("type {t:?} vs {u:?}")),
                (_, false, _) => Some(format!("{} vs {} bytes", x.len(), y.len())),
                (_, _, Some(i)) => Some(format!("element {} differs ({t:?})", i / t.size())),
                _ => None,
            }
        }
        (Contents::Str(x), Contents::Str(y)) => match x.iter().zip(y).position(|(p, q)| p != q) {
            Some(i) => Some(format!("string {i}: {:?} vs {:?}", x[i], y[i])),
            None if x.len() != y.len() => Some(format!("{} vs {} strings", x.len(), y.len())),
            None => None,
        },
        (Contents::Records(x), Contents::Records(y)) => {
            if x.iter().map(|f| &f.0).ne(y.iter().map(|f| &f.0)) {
                return Some(format!("fields {:?} vs {:?}", x.iter().map(|f| &f.0).collect::<Vec<_>>(), y.iter().map(|f| &f.0).collect::<Vec<_>>()));
            }
            x.iter().zip(y).find_map(|((name, p), (_, q))| first_difference(p, q).map(|d| format!("field {name}: {d}")))
        }
        (Contents::Null, Contents::Null) => None,
        _ => Some(format!("{} vs {}", kind(a), kind(b))),
    }
}

pub(super) fn kind(c: &Contents) -> &'static str {
    match c {
        Contents::Num(..) => "numbers",
        Contents::Str(_) => "strings",
        Contents::Records(_) => "records",
        Contents::Null => "null",
    }
}

/// A fixed-length string field: up to its first NUL, invalid UTF-8 replaced.
fn fixed_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Flat (C-order) indices of the elements of chunk `index`, in the order the chunk holds them.
pub(super) fn chunk_elements(grid: &ChunkGrid, index: u64) -> Vec<u64> {
    let coords = grid.coords(index);
    let clipped = grid.clipped_shape(&coords);
    let n: u64 = clipped.iter().product();
    let mut local = vec![0u64; clipped.len()];
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push((0..clipped.len()).fold(0, |acc, d| acc * grid.shape[d] + coords[d] * grid.chunk[d] + local[d]));
        for d in (0..clipped.len()).rev() {
            local[d] += 1;
            if local[d] < clipped[d] {
                break;
            }
            local[d] = 0;
        }
    }
    out
}

/// The whole array in C order from its chunks (fixed-size elements).
fn reassemble(src: &dyn ArraySource) -> StorageResult<Vec<u8>> {
    let m = src.meta();
    let elem = m.dtype_size();
    let mut out = vec![0u8; m.len() as usize * elem];
    for i in 0..m.grid.num_chunks() {
        let data = src.read_chunk(i)?;
        let at = chunk_elements(&m.grid, i);
        if data.len() != at.len() * elem {
            return Err(StorageError::corrupt(&m.path, format!("chunk {i}: {} bytes for {} elements", data.len(), at.len())));
        }
        for (k, flat) in at.into_iter().enumerate() {
            out[flat as usize * elem..][..elem].copy_from_slice(&data[k * elem..][..elem]);
        }
    }
    Ok(out)
}

/// How element `flat` of `want` differs from `got`, one element packed as `dtype` lays it out
/// (`None`: equal). Variable-length string fields are compared by `read_field_strings`.
pub(super) fn element_difference(dtype: &DType, got: &[u8], want: &Contents, flat: u64) -> Option<String> {
    let flat = flat as usize;
    match (dtype, want) {
        (DType::Num(t), Contents::Num(_, bytes)) => {
            let w = &bytes[flat * t.size()..][..t.size()];
            (got != w).then(|| format!("element {flat}: {got:?}, expected {w:?}"))
        }
        (DType::Compound { fields, .. }, Contents::Records(want)) => fields.iter().find_map(|f| {
            let values = &want.iter().find(|(name, _)| *name == f.name)?.1;
            match (f.dtype.clone(), values) {
                (FieldType::Num(t, count), Contents::Num(_, bytes)) => {
                    let w = t.size() * count;
                    let (g, e) = (&got[f.offset..][..w], &bytes[flat * w..][..w]);
                    (g != e).then(|| format!("record {flat} field {}: {g:?}, expected {e:?}", f.name))
                }
                (FieldType::FixedStr(len), Contents::Str(v)) => {
                    let g = fixed_str(&got[f.offset..][..len]);
                    (g != v[flat]).then(|| format!("record {flat} field {}: {g:?}, expected {:?}", f.name, v[flat]))
                }
                (FieldType::VarStr, Contents::Str(_)) => None,
                (ft, _) => Some(format!("field {}: {ft:?} against {}", f.name, kind(values))),
            }
        }),
        _ => Some(format!("{dtype:?} against {}", kind(want))),
    }
}
