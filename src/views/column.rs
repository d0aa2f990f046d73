//! Text cells of dataframe columns: numbers, strings, categorical labels, `NA` for missing.

use std::sync::OnceLock;

use super::format::text::{push_field, push_num};
use super::ViewResult;
use crate::model::{Arr, Column};
use crate::storage::StorageError;

/// Renders the cells of one column, row by row.
pub struct ColumnCells {
    col: Column,
    /// Rendered category labels, computed once (categoricals only).
    labels: OnceLock<Result<Vec<Vec<u8>>, String>>,
}

impl ColumnCells {
    /// Cells of `col`.
    pub fn new(col: Column) -> Self {
        ColumnCells { col, labels: OnceLock::new() }
    }

    /// Number of cells.
    pub fn len(&self) -> u64 {
        self.col.len()
    }

    /// True when there are no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the cell of row `r0 + i` to `rows[i]`, for every row in `[r0, r0 + rows.len())`.
    pub fn render(&self, r0: u64, rows: &mut [Vec<u8>]) -> ViewResult<()> {
        let r1 = r0 + rows.len() as u64;
        match &self.col {
            Column::Num(a) | Column::Str(a) => plain(a, r0, r1, rows, None),
            Column::Nullable { values, mask } => {
                let m = mask.read_flat(r0, r1)?;
                plain(values, r0, r1, rows, Some(&m))
            }
            Column::Categorical { codes, categories, .. } => {
                let labels = self
                    .labels
                    .get_or_init(|| render_all(categories).map_err(|e| e.to_string()))
                    .as_ref()
                    .map_err(|e| StorageError::corrupt(codes.path(), e.clone()))?;
                let codes_v = codes.read_i64(r0, r1)?;
                for (row, c) in rows.iter_mut().zip(codes_v) {
                    if c < 0 {
                        row.extend_from_slice(b"NA");
                    } else {
                        let l = labels.get(c as usize).ok_or_else(|| {
                            StorageError::corrupt(codes.path(), format!("code {c} but only {} categories", labels.len()))
                        })?;
                        row.extend_from_slice(l);
                    }
                }
                Ok(())
            }
        }
    }
}

/// Every cell of a (small) column, e.g. the categories of a categorical.
fn render_all(col: &Column) -> ViewResult<Vec<Vec<u8>>> {
    let mut rows = vec![Vec::new(); col.len() as usize];
    ColumnCells::new(col.clone()).render(0, &mut rows)?;
    Ok(rows)
}

/// Numbers or strings of `a` (flat elements `[r0, r1)`), `NA` where `mask` is set.
fn plain(a: &Arr, r0: u64, r1: u64, rows: &mut [Vec<u8>], mask: Option<&[u8]>) -> ViewResult<()> {
    let missing = |i: usize| mask.is_some_and(|m| m.get(i).copied().unwrap_or(0) != 0);
    if a.is_str() {
        for (i, (row, s)) in rows.iter_mut().zip(a.read_strings(r0, r1)?).enumerate() {
            if missing(i) {
                row.extend_from_slice(b"NA");
            } else {
                push_field(row, &s);
            }
        }
        return Ok(());
    }
    let t = a.num_type().ok_or_else(|| StorageError::corrupt(a.path(), "not a numeric or string array"))?;
    let bytes = a.read_flat(r0, r1)?;
    for (i, (row, v)) in rows.iter_mut().zip(bytes.chunks_exact(t.size())).enumerate() {
        if missing(i) {
            row.extend_from_slice(b"NA");
        } else {
            push_num(row, t, v);
        }
    }
    Ok(())
}
