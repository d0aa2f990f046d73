//! `where/` directories: metadata subsets. `where/<COL>=<VALUE>/` is the whole tree for the
//! cells whose categorical or bool obs column COL equals VALUE (docs/TREE.md), built on lookup
//! from the row list of that value ([`AnnData::subset_list`]).
//!
//! Names: COL is the column's file-name stem (see [`encode`]) with `=` written `%3D`; VALUE is
//! the category label (numbers as `obs/<col>.txt` prints them), `True`/`False` for bools, `NA`
//! for missing values, with `%`, `/`, NUL and a leading `.` percent-encoded. Counting the values
//! of a column reads its codes once (remembered: one count per category); the row list of a
//! value is a [`Sel`] computed by one more pass over the codes when first needed and kept in the
//! shared cache (recomputed if evicted), so a subset holds no per-row memory of its own.

use std::fmt::Write;
use std::sync::Arc;

use super::column::usable_categories;
use super::format::text_values::push_num;
use super::names::{encode_uncut, fit, percent, MAX_STEM};
use super::tree::{self, TreeOptions};
use super::{DynDir, StaticFile, VTree};
use crate::cache::ChunkCache;
use crate::model::{AnnData, Column, Sel};
use crate::storage::{NumType, StorageError, StorageResult, StoreInfo};
use crate::util::RetryOnce;

/// Codes read per step while scanning a column.
const SCAN_BLOCK: u64 = 1 << 20;
/// The name of missing values.
const NA: &str = "NA";

/// A column values can be selected by: its name in `where/` and how its values are coded.
struct Selectable {
    /// `<COL>` as it appears in names.
    dir_name: String,
    col: Column,
    /// Value names by code (categories or False/True), computed on first use.
    labels: RetryOnce<Vec<String>>,
    /// Cells per code and missing cells, computed on first use.
    counts: RetryOnce<Counts>,
}

struct Counts {
    per_code: Vec<u64>,
    missing: u64,
}

/// The cells' codes of a selectable column: category codes, or 0/1 for bools (`None` = missing).
fn scan(col: &Column, mut f: impl FnMut(u64, Option<i64>)) -> StorageResult<()> {
    let (values, mask) = match col {
        Column::Categorical { codes, .. } => (codes, None),
        Column::Num(a) => (a, None),
        Column::Nullable { values, mask } => (values, Some(mask)),
        Column::Str(a) => return Err(StorageError::corrupt(a.path(), "a string column is not selectable")),
    };
    let n = values.len();
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + SCAN_BLOCK).min(n);
        let codes = values.read_i64(r0, r1)?;
        let masked = mask.map(|m| m.read_i64(r0, r1)).transpose()?;
        for (i, &c) in codes.iter().enumerate() {
            let missing = c < 0 || masked.as_ref().is_some_and(|m| m.get(i).copied().unwrap_or(0) != 0);
            f(r0 + i as u64, (!missing).then_some(c));
        }
        r0 = r1;
    }
    Ok(())
}

/// Longest `<COL>=<VALUE>` name (a path component holds 255 bytes).
const MAX_NAME: usize = 254;

/// The value part of a name: `%`, `/`, NUL and a leading `.` percent-encoded (empty stays empty),
/// cut to `max` bytes ([`fit`]).
fn encode_value(label: &str, max: usize) -> String {
    if label.is_empty() {
        String::new()
    } else {
        fit(percent(label), label, max)
    }
}

/// True for a bool array.
fn is_bool(a: &crate::model::Arr) -> bool {
    a.num_type() == Some(NumType::Bool)
}

impl Selectable {
    /// The column as a `where/` selector, if it is categorical or bool.
    fn new(name: &str, col: &Column) -> Option<Self> {
        let ok = match col {
            Column::Categorical { .. } => true,
            Column::Num(a) => is_bool(a),
            Column::Nullable { values, .. } => is_bool(values),
            Column::Str(_) => false,
        };
        ok.then(|| Selectable {
            dir_name: fit(encode_uncut(name).replace('=', "%3D"), name, MAX_STEM),
            col: col.clone(),
            labels: RetryOnce::new(),
            counts: RetryOnce::new(),
        })
    }

    fn labels(&self) -> StorageResult<&Vec<String>> {
        self.labels.get_or_try_init(|| {
            let Column::Categorical { codes, categories, .. } = &self.col else {
                return Ok(vec!["False".to_string(), "True".to_string()]);
            };
            let n = usable_categories(codes, categories)?;
            let raw = match &**categories {
                Column::Str(a) => a.read_strings(0, n)?,
                Column::Num(a) => {
                    let t = a.num_type().ok_or_else(|| StorageError::corrupt(a.path(), "categories are not numeric"))?;
                    let bytes = a.read_flat(0, n)?;
                    let mut out = Vec::new();
                    for v in bytes.chunks_exact(t.size()) {
                        let mut s = Vec::new();
                        push_num(&mut s, t, v);
                        out.push(String::from_utf8_lossy(&s).into_owned());
                    }
                    out
                }
                other => return Err(StorageError::corrupt(other.array().path(), "categories are neither strings nor numbers")),
            };
            let max = MAX_NAME.saturating_sub(self.dir_name.len() + 1);
            Ok(raw.iter().map(|l| encode_value(l, max)).collect())
        })
    }

    /// True when missing values are addressable as `NA` (no category is spelled `NA`).
    fn na_addressable(&self) -> StorageResult<bool> {
        Ok(!self.labels()?.iter().any(|l| l == NA))
    }

    fn counts(&self) -> StorageResult<&Counts> {
        self.counts.get_or_try_init(|| {
            let n_codes = self.labels()?.len();
            let mut c = Counts { per_code: vec![0; n_codes], missing: 0 };
            let mut bad = None;
            scan(&self.col, |_, code| match code {
                Some(k) => match c.per_code.get_mut(k as usize) {
                    Some(x) => *x += 1,
                    None => bad = Some(k),
                },
                None => c.missing += 1,
            })?;
            if let Some(k) = bad {
                return Err(StorageError::corrupt(self.path(), format!("code {k} but only {n_codes} categories")));
            }
            Ok(c)
        })
    }

    fn path(&self) -> &str {
        match &self.col {
            Column::Categorical { codes: a, .. } | Column::Num(a) | Column::Str(a) | Column::Nullable { values: a, .. } => a.path(),
        }
    }

    /// `(value name, cells)` of every value with at least one cell.
    fn values(&self) -> StorageResult<Vec<(String, u64)>> {
        let (labels, counts) = (self.labels()?, self.counts()?);
        let mut out: Vec<(String, u64)> =
            labels.iter().zip(&counts.per_code).filter(|(_, &n)| n > 0).map(|(l, &n)| (l.clone(), n)).collect();
        if counts.missing > 0 && self.na_addressable()? {
            out.push((NA.to_string(), counts.missing));
        }
        Ok(out)
    }

    /// The code a value name selects (`None` inside = missing values), if it names a value,
    /// and its number of cells.
    fn code_of(&self, value: &str) -> StorageResult<Option<(Option<i64>, u64)>> {
        let counts = self.counts()?;
        Ok(self.code_named(value)?.map(|code| {
            let n = match code {
                Some(k) => counts.per_code.get(k as usize).copied().unwrap_or(0),
                None => counts.missing,
            };
            (code, n)
        }))
    }

    fn code_named(&self, value: &str) -> StorageResult<Option<Option<i64>>> {
        let labels = self.labels()?;
        if let Some(k) = labels.iter().position(|l| l == value) {
            return Ok(Some(Some(k as i64)));
        }
        Ok((value == NA && self.na_addressable()?).then_some(None))
    }
}

/// The sorted rows of `col` whose value is `code`.
fn rows_of(col: &Column, code: Option<i64>) -> StorageResult<Vec<u64>> {
    let mut rows = Vec::new();
    scan(col, |r, c| {
        if c == code {
            rows.push(r);
        }
    })?;
    Ok(rows)
}

/// `where/` of a tree: metadata subsets of `ad`.
pub struct WhereDir {
    ad: Arc<AnnData>,
    info: StoreInfo,
    cache: Arc<ChunkCache>,
    opts: TreeOptions,
    columns: Vec<Selectable>,
}

const WHERE_README: &str = "\
where/<COL>=<VALUE>/ is a lazy view of the cells whose categorical or bool obs column COL
equals VALUE, laid out like the mount's root: X/, layers/, obsm/, obs.tsv and obs/ with those
rows (in store order), obsp/ restricted on both axes, var/, varm/, varp/ and uns/ unchanged;
its own rows/START:END/ are rows of the subset, and its where/ narrows it further
(where/a=x/where/b=y/). COL is the column's file name (as in obs/) with `=` written %3D;
VALUE is the category label, True/False for bool columns, NA for missing values, with `%`,
`/`, NUL and a leading `.` percent-encoded. Values with no cells are not valid names.
";

impl WhereDir {
    /// Metadata subsets of `ad`; `opts.prefix` is the virtual path of the tree holding `where/`.
    pub fn new(ad: Arc<AnnData>, info: StoreInfo, cache: Arc<ChunkCache>, opts: TreeOptions) -> Self {
        let columns = ad.obs.columns.iter().filter_map(|(name, col)| Selectable::new(name, col)).collect();
        WhereDir { ad, info, cache, opts, columns }
    }

    /// Every valid name with its cell count, column by column (columns that cannot be read are
    /// logged and left out).
    fn names(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for s in &self.columns {
            match s.values() {
                Ok(vals) => out.extend(vals.into_iter().map(|(v, n)| (format!("{}={v}", s.dir_name), n))),
                Err(e) => log::error!("{}where/: {e}", self.prefix_slash()),
            }
        }
        out
    }

    fn prefix_slash(&self) -> String {
        if self.opts.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.opts.prefix)
        }
    }

    fn readme(&self) -> Vec<u8> {
        let mut s = WHERE_README.to_string();
        let names = self.names();
        let _ = writeln!(s);
        if names.is_empty() {
            let _ = writeln!(s, "This store has no categorical or bool obs column with cells: where/ is empty.");
        } else {
            let _ = writeln!(s, "cells\tname");
            for (name, n) in &names {
                let _ = writeln!(s, "{n}\t{name}");
            }
        }
        s.into_bytes()
    }

    /// The selection `name` stands for (`Ok(None)`: not a valid name, or no cells).
    fn selection(&self, name: &str) -> StorageResult<Option<Sel>> {
        let Some((col, value)) = name.split_once('=') else { return Ok(None) };
        let Some(sel) = self.columns.iter().find(|s| s.dir_name == col) else { return Ok(None) };
        let Some((code, n)) = sel.code_of(value)? else { return Ok(None) };
        if n == 0 {
            return Ok(None);
        }
        let column = sel.col.clone();
        Ok(Some(Sel::new(&self.cache, n, move || rows_of(&column, code))))
    }
}

impl DynDir for WhereDir {
    fn list(&self) -> Vec<String> {
        let mut out = vec!["README.txt".to_string()];
        if self.opts.list_where {
            out.extend(self.names().into_iter().map(|(n, _)| n));
        }
        out
    }

    fn is_dir(&self, name: &str) -> bool {
        name != "README.txt"
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        if name == "README.txt" {
            return Some(VTree::single(Arc::new(StaticFile(self.readme()))));
        }
        let rows = match self.selection(name) {
            Ok(r) => r?,
            Err(e) => {
                log::error!("{}where/{name}: {e}", self.prefix_slash());
                return None;
            }
        };
        let sub = match self.ad.subset_list(&rows, &format!("where {name}")) {
            Ok(sub) => sub,
            Err(e) => {
                log::error!("{}where/{name}: {e}", self.prefix_slash());
                return None;
            }
        };
        let prefix = format!("{}where/{name}", self.prefix_slash());
        // Sizes of a subset's text views are not remembered across mounts: a walk of the mount
        // visits every subset, and the sidecar would keep (and store) an index for each.
        let opts = TreeOptions { sidecar: None, prefix, with_rows: true, list_where: false, index: None, shared: self.opts.shared.clone() };
        Some(tree::build(&Arc::new(sub), &self.info, self.cache.clone(), &opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_names_follow_the_contract() {
        assert_eq!(encode_value("T cell", MAX_NAME), "T cell");
        assert_eq!(encode_value("a/b", MAX_NAME), "a%2Fb");
        assert_eq!(encode_value("100%", MAX_NAME), "100%25");
        assert_eq!(encode_value(".x", MAX_NAME), "%2Ex");
        assert_eq!(encode_value("x=y", MAX_NAME), "x=y");
        assert_eq!(encode_value("", MAX_NAME), "");
        assert_eq!(encode_uncut("a=b").replace('=', "%3D"), "a%3Db");
        // A long label is cut to what its column's name leaves of a path component.
        let v = encode_value(&"v".repeat(1000), MAX_NAME - 201);
        assert!(v.len() <= MAX_NAME - 201 && v.contains("%~"), "{v}");
    }
}
