//! Text cells of dataframe columns: numbers, strings, categorical labels, `NA` for missing.

use std::sync::Arc;

use crate::cache::Loan;
use crate::util::RetryOnce;

use super::format::text_lengths::each_num_len;
use super::format::text_values::{field_len, push_field, push_num};
use super::ViewResult;
use crate::model::{Arr, Column};
use crate::storage::{NumType, StorageError};

/// Renders the cells of one column, row by row.
pub struct ColumnCells {
    col: Column,
    /// Rendered category labels, computed once (categoricals only) and shared with every other
    /// column of the same categories (a subset's) while held.
    labels: RetryOnce<Arc<Labels>>,
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
                let labels = self.labels.get_or_try_init(|| Labels::of(codes, categories))?;
                for c in codes.read_i64(r0, r1)? {
                    cells.extend_from_slice(labels.cell(c, codes)?);
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
                let labels = self.labels.get_or_try_init(|| Labels::of(codes, categories))?;
                labels.measure(codes, &codes.read_flat(r0, r1)?)
            }
        }
    }
}

/// Most category labels a categorical column's cells are rendered from (they are held in
/// memory): a damaged length must not start a pass over 10^18 missing strings.
pub const MAX_CATEGORIES: u64 = 1 << 24;

/// How many of `categories` the `codes` can refer to: all of them, but no more than the codes'
/// type can count (an `int8` code reaches 127; anndata picks the smallest type that fits), and
/// never more than [`MAX_CATEGORIES`].
pub fn usable_categories(codes: &Arr, categories: &Column) -> ViewResult<u64> {
    let reach = match codes.num_type() {
        Some(NumType::I8) => 1 << 7,
        Some(NumType::U8) => 1 << 8,
        Some(NumType::I16) => 1 << 15,
        Some(NumType::U16) => 1 << 16,
        Some(NumType::I32) => 1 << 31,
        _ => u64::MAX,
    };
    let n = categories.len().min(reach);
    if n > MAX_CATEGORIES {
        let why = format!("{n} categories is more than a categorical column serves ({MAX_CATEGORIES})");
        return Err(StorageError::unsupported(categories.array().path(), why));
    }
    Ok(n)
}

/// The rendered labels of a categorical, one after another, and where each ends; their bytes
/// are lent from the cache's budget while held.
struct Labels {
    cells: Vec<u8>,
    ends: Vec<usize>,
    /// Each label's length (the size pass adds these up per code).
    lens: Vec<u32>,
    _loan: Loan,
}

impl Labels {
    /// The labels the `codes` can refer to, rendered — or the ones already held for the same
    /// categories (every subset of a store shares its columns' labels).
    fn of(codes: &Arr, categories: &Column) -> ViewResult<Arc<Labels>> {
        let n = usable_categories(codes, categories)?;
        let cats = categories.array();
        cats.cache().held.get_or_make(cats.held_key(n), || {
            let (mut cells, mut ends) = (Vec::new(), Vec::new());
            ColumnCells::new(categories.clone()).render_cells(0, n, &mut cells, &mut ends)?;
            let lens: Vec<u32> = split_cells(&cells, &ends).map(|c| c.len() as u32).collect();
            let bytes = cells.capacity() + ends.capacity() * 8 + lens.capacity() * 4;
            let _loan = cats.cache().lend(bytes as u64);
            Ok(Labels { cells, ends, lens, _loan })
        })
    }

    /// Bytes and number of the cells of `raw` (packed codes of `codes`' type), as
    /// [`Labels::cell`] would give them: one table lookup per code, no cell formed.
    fn measure(&self, codes: &Arr, raw: &[u8]) -> ViewResult<(u64, u64)> {
        let t = codes.num_type().filter(|t| t.is_integer() || *t == NumType::Bool);
        let t = t.ok_or_else(|| StorageError::corrupt(codes.path(), "expected an integer array"))?;
        let lens = &self.lens;
        // Sums the lengths of codes read as `$ty`; the first code past the labels stops it.
        macro_rules! sum {
            ($ty:ty) => {{
                let mut bytes = 0u64;
                for c in raw.chunks_exact(std::mem::size_of::<$ty>()) {
                    let c = <$ty>::from_le_bytes(c.try_into().unwrap_or_default());
                    #[allow(unused_comparisons)]
                    let len = if c < 0 {
                        2
                    } else {
                        match usize::try_from(c).ok().and_then(|i| lens.get(i)) {
                            Some(&len) => len,
                            None => return Err(self.bad_code(c as i128, codes)),
                        }
                    };
                    bytes += u64::from(len);
                }
                bytes
            }};
        }
        let bytes = match t {
            NumType::Bool | NumType::U8 => sum!(u8),
            NumType::I8 => sum!(i8),
            NumType::I16 => sum!(i16),
            NumType::U16 => sum!(u16),
            NumType::I32 => sum!(i32),
            NumType::U32 => sum!(u32),
            NumType::I64 => sum!(i64),
            NumType::U64 => sum!(u64),
            _ => return Err(StorageError::corrupt(codes.path(), "expected an integer array")),
        };
        Ok((bytes, (raw.len() / t.size()) as u64))
    }

    /// The error for a code past the labels.
    fn bad_code(&self, c: i128, codes: &Arr) -> StorageError {
        StorageError::corrupt(codes.path(), format!("code {c} but only {} categories", self.ends.len()))
    }

    /// The cell of category code `c`: its label, `NA` for a negative code.
    fn cell(&self, c: i64, codes: &Arr) -> ViewResult<&[u8]> {
        if c < 0 {
            return Ok(b"NA");
        }
        let label = usize::try_from(c).ok().and_then(|i| {
            let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
            self.cells.get(start..*self.ends.get(i)?)
        });
        label.ok_or_else(|| self.bad_code(c.into(), codes))
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::ChunkCache;
    use crate::model::array::tests::MemSource;
    use crate::model::ArrIds;

    fn arr(len: u64, t: NumType) -> Arr {
        let (cache, ids) = (Arc::new(ChunkCache::new(1 << 16)), ArrIds::default());
        Arr::new(Arc::new(MemSource::num(vec![len], vec![len.clamp(1, 1 << 10)], t, Vec::new())), &cache, &ids)
    }

    /// A damaged categories length is cut to what the codes' type can reach, and refused past
    /// [`MAX_CATEGORIES`] (a pass over 10^18 missing strings hung a reader).
    #[test]
    fn usable_categories_are_bounded() {
        let huge = Column::Str(arr(8_196_812_976_469_628_410, NumType::U8));
        assert_eq!(usable_categories(&arr(20, NumType::I8), &huge).unwrap(), 128);
        assert_eq!(usable_categories(&arr(20, NumType::I16), &huge).unwrap(), 1 << 15);
        let err = usable_categories(&arr(20, NumType::I64), &huge).unwrap_err().to_string();
        assert!(err.contains("categories is more than a categorical column serves"), "{err}");
        assert!(usable_categories(&arr(20, NumType::I32), &huge).is_err(), "2^31 labels are too many to hold");
        assert_eq!(usable_categories(&arr(20, NumType::I32), &Column::Num(arr(5, NumType::F32))).unwrap(), 5);
    }

    /// Columns of the same categories (a store's and its subsets') share one rendering of the
    /// labels while any holds it, its bytes lent from the cache's budget.
    #[test]
    fn labels_are_shared_and_lent_from_the_budget() {
        let (cache, ids) = (Arc::new(ChunkCache::new(64 << 20)), ArrIds::default());
        let names: Vec<String> = (0..1000).map(|i| format!("label number {i}")).collect();
        let categories = Column::Str(Arr::new(Arc::new(MemSource::strings(names, 64)), &cache, &ids));
        let col = |codes: &[u8]| {
            let src = MemSource::num(vec![codes.len() as u64], vec![4], NumType::I16, codes.iter().flat_map(|&c| [c, 0]).collect());
            ColumnCells::new(Column::Categorical { codes: Arr::new(Arc::new(src), &cache, &ids), categories: Box::new(categories.clone()), ordered: false })
        };
        let free = || cache.lend(u64::MAX).bytes();
        let before = free();
        let (a, b) = (col(&[1, 2, 3]), col(&[7, 7]));
        let (mut cells, mut ends) = (Vec::new(), Vec::new());
        a.render_cells(0, 3, &mut cells, &mut ends).unwrap();
        b.render_cells(0, 2, &mut cells, &mut ends).unwrap();
        assert_eq!(&cells[..], b"label number 1label number 2label number 3label number 7label number 7");
        assert!(Arc::ptr_eq(a.labels.get().unwrap(), b.labels.get().unwrap()));
        assert_eq!(cache.held.len(), 1);
        assert!(free() + 15_000 < before, "the labels' bytes are lent from the budget");
        drop((a, b));
        assert!(cache.held.is_empty());
        assert_eq!(free(), before);
    }

    /// The size pass's sum of label lengths equals the rendered cells, for every code type; a
    /// code past the labels fails both.
    #[test]
    fn categorical_measure_is_rendered_length() {
        let (cache, ids) = (Arc::new(ChunkCache::new(1 << 16)), ArrIds::default());
        let labels = vec!["a".to_string(), "bb\t".to_string(), String::new(), "d\"q".to_string()];
        let categories = Column::Str(Arr::new(Arc::new(MemSource::strings(labels, 3)), &cache, &ids));
        let codes = [0i64, 3, -1, 1, 2, 2, -1, 0];
        for t in [NumType::I8, NumType::I16, NumType::I32, NumType::I64, NumType::U8, NumType::U16, NumType::U64] {
            let to_raw = |codes: &[i64]| -> Vec<u8> {
                codes.iter().flat_map(|&c| c.to_le_bytes()[..t.size()].to_vec()).collect()
            };
            let signed = !matches!(t, NumType::U8 | NumType::U16 | NumType::U64);
            let codes: Vec<i64> = codes.iter().map(|&c| if signed { c } else { c.max(0) }).collect();
            let col = |codes: &[i64]| {
                let n = codes.len() as u64;
                let src = MemSource::num(vec![n], vec![3], t, to_raw(codes));
                ColumnCells::new(Column::Categorical {
                    codes: Arr::new(Arc::new(src), &cache, &ids),
                    categories: Box::new(categories.clone()),
                    ordered: false,
                })
            };
            let cells = col(&codes);
            let (mut rendered, mut ends) = (Vec::new(), Vec::new());
            cells.render_cells(1, 8, &mut rendered, &mut ends).unwrap();
            assert_eq!(cells.measure_cells(1, 8).unwrap(), (rendered.len() as u64, 7), "{t:?}");
            let bad = col(&[1, 4]);
            let err = bad.measure_cells(0, 2).unwrap_err().to_string();
            assert!(err.contains("code 4 but only 4 categories"), "{t:?}: {err}");
            assert!(bad.render_cells(0, 2, &mut rendered, &mut ends).is_err());
        }
    }
}
