//! Text cells of dataframe columns: numbers, strings, categorical labels, `NA` for missing.

use crate::util::RetryOnce;

use super::format::text_values::{each_num_len, field_len, push_field, push_num};
use super::ViewResult;
use crate::model::{Arr, Column};
use crate::storage::StorageError;

/// Renders the cells of one column, row by row.
pub struct ColumnCells {
    col: Column,
    /// Rendered category labels, computed once (categoricals only).
    labels: RetryOnce<Vec<Vec<u8>>>,
}

impl ColumnCells {
    /// Cells of `col`.
    pub fn new(col: Column) -> Self {
        ColumnCells { col, labels: RetryOnce::new() }
    }

    /// Number of cells.
    pub fn len(&self) -> u64 {
        self.col.len()
    }

    /// True when there are no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the cells of rows `[r0, r1)` to `cells` (one after another) and each cell's end
    /// offset in `cells` to `ends`.
    pub fn render_cells(&self, r0: u64, r1: u64, cells: &mut Vec<u8>, ends: &mut Vec<usize>) -> ViewResult<()> {
        match &self.col {
            Column::Num(a) | Column::Str(a) => plain(a, r0, r1, cells, ends, None),
            Column::Nullable { values, mask } => {
                let m = mask.read_flat(r0, r1)?;
                plain(values, r0, r1, cells, ends, Some(&m))
            }
            Column::Categorical { codes, categories, .. } => {
                let labels = self.labels.get_or_try_init(|| render_all(categories))?;
                for c in codes.read_i64(r0, r1)? {
                    cells.extend_from_slice(label(labels, c, codes)?);
                    ends.push(cells.len());
                }
                Ok(())
            }
        }
    }
}

impl ColumnCells {
    /// Bytes and number of the cells of rows `[r0, r1)` as [`ColumnCells::render_cells`] would
    /// write them, counted without writing them (the size pass of text views).
    pub fn measure_cells(&self, r0: u64, r1: u64) -> ViewResult<(u64, u64)> {
        match &self.col {
            Column::Num(a) | Column::Str(a) => plain_len(a, r0, r1, None),
            Column::Nullable { values, mask } => {
                let m = mask.read_flat(r0, r1)?;
                plain_len(values, r0, r1, Some(&m))
            }
            Column::Categorical { codes, categories, .. } => {
                let labels = self.labels.get_or_try_init(|| render_all(categories))?;
                let (mut bytes, mut n) = (0u64, 0u64);
                for c in codes.read_i64(r0, r1)? {
                    bytes += label(labels, c, codes)?.len() as u64;
                    n += 1;
                }
                Ok((bytes, n))
            }
        }
    }
}

/// The cell of category code `c`: its label, `NA` for a negative code.
fn label<'a>(labels: &'a [Vec<u8>], c: i64, codes: &Arr) -> ViewResult<&'a [u8]> {
    if c < 0 {
        return Ok(b"NA");
    }
    labels.get(c as usize).map(Vec::as_slice).ok_or_else(|| {
        StorageError::corrupt(codes.path(), format!("code {c} but only {} categories", labels.len()))
    })
}

/// [`plain`] measured: bytes and number of cells.
fn plain_len(a: &Arr, r0: u64, r1: u64, mask: Option<&[u8]>) -> ViewResult<(u64, u64)> {
    let missing = |i: usize| mask.is_some_and(|m| m.get(i).copied().unwrap_or(0) != 0);
    let (mut bytes, mut n) = (0u64, 0usize);
    if a.is_str() {
        a.each_str_uncached(r0, r1, |s| {
            bytes += if missing(n) { 2 } else { field_len(s) as u64 };
            n += 1;
        })?;
        return Ok((bytes, n as u64));
    }
    let t = a.num_type().ok_or_else(|| StorageError::corrupt(a.path(), "not a numeric or string array"))?;
    let raw = a.read_flat(r0, r1)?;
    each_num_len(t, &raw, |len| {
        bytes += if missing(n) { 2 } else { len as u64 };
        n += 1;
    });
    Ok((bytes, n as u64))
}

/// The cells of a [`ColumnCells::render_cells`] result, one slice each.
pub fn split_cells<'a>(cells: &'a [u8], ends: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    ends.iter().scan(0, move |start, &e| {
        let cell = cells.get(*start..e).unwrap_or_default();
        *start = e;
        Some(cell)
    })
}

/// Every cell of a (small) column, e.g. the categories of a categorical.
fn render_all(col: &Column) -> ViewResult<Vec<Vec<u8>>> {
    let (mut cells, mut ends) = (Vec::new(), Vec::new());
    ColumnCells::new(col.clone()).render_cells(0, col.len(), &mut cells, &mut ends)?;
    Ok(split_cells(&cells, &ends).map(<[u8]>::to_vec).collect())
}

/// Numbers or strings of `a` (flat elements `[r0, r1)`), `NA` where `mask` is set.
fn plain(a: &Arr, r0: u64, r1: u64, cells: &mut Vec<u8>, ends: &mut Vec<usize>, mask: Option<&[u8]>) -> ViewResult<()> {
    let missing = |i: usize| mask.is_some_and(|m| m.get(i).copied().unwrap_or(0) != 0);
    if a.is_str() {
        let mut i = 0;
        return a.for_each_str(r0, r1, |s| {
            if missing(i) {
                cells.extend_from_slice(b"NA");
            } else {
                push_field(cells, s);
            }
            ends.push(cells.len());
            i += 1;
        });
    }
    let t = a.num_type().ok_or_else(|| StorageError::corrupt(a.path(), "not a numeric or string array"))?;
    let bytes = a.read_flat(r0, r1)?;
    for (i, v) in bytes.chunks_exact(t.size()).enumerate() {
        if missing(i) {
            cells.extend_from_slice(b"NA");
        } else {
            push_num(cells, t, v);
        }
        ends.push(cells.len());
    }
    Ok(())
}
