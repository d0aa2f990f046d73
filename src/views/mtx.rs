//! MatrixMarket coordinate text (`matrix.mtx`, `rows/S:E.mtx`, `10x/matrix.mtx`).
//!
//! One body line per entry, `row col value` (1-based), in storage order: row by row for CSR and
//! dense matrices, column by column for CSC. Sparse matrices list exactly the stored entries
//! (explicit zeros too); dense ones their nonzero values. The size line needs the entry count,
//! which the text index learns on its one pass over the body.

use std::sync::Arc;

use super::format::text_values::push_num;
use super::matrix::{dense_rows, SparseRows};
use super::npy_file::RowBytes;
use super::text_file::RowText;
use super::ViewResult;
use crate::cache::ChunkCache;
use crate::model::{Matrix, SparseFormat};
use crate::storage::NumType;

/// The MatrixMarket `field` for values of type `t`.
pub fn field(t: NumType) -> &'static str {
    match t {
        NumType::F16 | NumType::F32 | NumType::F64 => "real",
        NumType::C64 | NumType::C128 => "complex",
        _ => "integer",
    }
}

/// The header: banner line and size line.
pub fn header(t: NumType, rows: u64, cols: u64, nnz: u64) -> Vec<u8> {
    format!("%%MatrixMarket matrix coordinate {} general\n{rows} {cols} {nnz}\n", field(t)).into_bytes()
}

enum Source {
    Sparse(Box<SparseRows>),
    Dense(Arc<dyn RowBytes>),
}

/// The entry lines of a matrix, one [`RowText`] row per major-axis line.
pub struct MtxBody {
    src: Source,
    t: NumType,
    shape: (u64, u64),
    csc: bool,
    /// Print `col row` instead of `row col` (10x layout: vars as rows).
    transpose: bool,
    avg_entries: u64,
}

impl MtxBody {
    /// Entries of `m`; `transpose` prints vars as rows (10x).
    pub fn new(m: &Matrix, cache: &Arc<ChunkCache>, transpose: bool) -> Option<Self> {
        let t = m.num_type()?;
        let shape = m.shape();
        let (src, csc, avg) = match m {
            Matrix::Sparse(s) => {
                let major = if s.format == SparseFormat::Csr { shape.0 } else { shape.1 };
                let avg = s.data.len() / major.max(1);
                (Source::Sparse(Box::new(SparseRows::new(s.clone(), cache.clone())?)), s.format == SparseFormat::Csc, avg)
            }
            _ => (Source::Dense(dense_rows(m, cache, 1 << 20)?), false, shape.1 / 2),
        };
        Some(MtxBody { src, t, shape, csc, transpose, avg_entries: avg.max(1) })
    }

    /// Shape as printed in the size line.
    pub fn printed_shape(&self) -> (u64, u64) {
        if self.transpose {
            (self.shape.1, self.shape.0)
        } else {
            self.shape
        }
    }

    /// Element type.
    pub fn num_type(&self) -> NumType {
        self.t
    }

    fn entry(&self, out: &mut Vec<u8>, r: u64, c: u64, v: &[u8]) {
        let (a, b) = if self.transpose { (c, r) } else { (r, c) };
        let mut ib = itoa::Buffer::new();
        out.extend_from_slice(ib.format(a + 1).as_bytes());
        out.push(b' ');
        out.extend_from_slice(ib.format(b + 1).as_bytes());
        out.push(b' ');
        self.value(out, v);
        out.push(b'\n');
    }

    /// Appends the value field of an entry.
    fn value(&self, out: &mut Vec<u8>, v: &[u8]) {
        match self.t {
            NumType::Bool => out.push(if v[0] != 0 { b'1' } else { b'0' }),
            NumType::C64 | NumType::C128 => {
                let h = v.len() / 2;
                let part = if self.t == NumType::C64 { NumType::F32 } else { NumType::F64 };
                push_num(out, part, &v[..h]);
                out.push(b' ');
                push_num(out, part, &v[h..]);
            }
            t => push_num(out, t, v),
        }
    }

    /// Calls `f(row, col, value)` for every entry of lines `[a, b)`, in body order.
    fn for_each(&self, a: u64, b: u64, mut f: impl FnMut(u64, u64, &[u8])) -> ViewResult<()> {
        let w = self.t.size();
        match &self.src {
            Source::Dense(rows) => {
                let bytes = rows.read_rows(a, b)?;
                let rb = rows.row_bytes() as usize;
                for (i, row) in bytes.chunks_exact(rb.max(1)).enumerate() {
                    for (c, v) in row.chunks_exact(w).enumerate() {
                        if !is_zero(v, self.t) {
                            f(a + i as u64, c as u64, v);
                        }
                    }
                }
                Ok(())
            }
            Source::Sparse(s) => {
                let minor_extent = if self.csc { self.shape.0 } else { self.shape.1 };
                s.for_each_entry(a, b, minor_extent, |major, minor, v| {
                    let (r, c) = if self.csc { (minor, major) } else { (major, minor) };
                    f(r, c, v)
                })
            }
        }
    }
}

/// Decimal digits of `x`.
fn digits(x: u64) -> u64 {
    x.checked_ilog10().map_or(1, |d| d as u64 + 1)
}

fn is_zero(v: &[u8], t: NumType) -> bool {
    match t {
        NumType::F16 => half::f16::from_le_bytes([v[0], v[1]]) == half::f16::ZERO,
        NumType::F32 => f32::from_le_bytes([v[0], v[1], v[2], v[3]]) == 0.0,
        NumType::F64 => f64::from_le_bytes(v.try_into().unwrap_or_default()) == 0.0,
        NumType::C64 => is_zero(&v[..4], NumType::F32) && is_zero(&v[4..], NumType::F32),
        NumType::C128 => is_zero(&v[..8], NumType::F64) && is_zero(&v[8..], NumType::F64),
        _ => v.iter().all(|&b| b == 0),
    }
}

impl RowText for MtxBody {
    fn n_rows(&self) -> u64 {
        if self.csc {
            self.shape.1
        } else {
            self.shape.0
        }
    }

    fn row_cost(&self) -> u64 {
        self.avg_entries * 16
    }

    fn render(&self, a: u64, b: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        self.for_each(a, b, |r, c, v| self.entry(out, r, c, v))
    }

    /// Line lengths from digit counts and each value's text, without writing the lines.
    fn measure(&self, a: u64, b: u64, scratch: &mut Vec<u8>) -> ViewResult<(u64, u64)> {
        let (mut bytes, mut lines) = (0u64, 0u64);
        self.for_each(a, b, |r, c, v| {
            scratch.clear();
            self.value(scratch, v);
            bytes += digits(r + 1) + digits(c + 1) + 3 + scratch.len() as u64;
            lines += 1;
        })?;
        Ok((bytes, lines))
    }
}

#[cfg(test)]
mod tests {
    use super::digits;

    #[test]
    fn digit_counts() {
        for (x, d) in [(0, 1), (1, 1), (9, 1), (10, 2), (99, 2), (100, 3), (u64::MAX, 20)] {
            assert_eq!(digits(x), d, "{x}");
        }
    }
}
