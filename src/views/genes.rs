//! `genes/` of a matrix directory whose columns are vars: `genes/NAME.npy` and `genes/NAME.txt`
//! are the column of the var named NAME (the var index; in `raw/X/` the raw var index), with
//! names mapped to file names like dataframe columns. Names that occur more than once are not
//! resolvable; `genes/README.txt` lists them with their indices. The name table is read on the
//! first lookup.

use std::collections::HashMap;
use std::sync::Arc;

use super::cols::{column_file, Columns};
use super::column::{split_cells, ColumnCells};
use super::names::encode;
use super::tree::TreeOptions;
use super::{DynDir, StaticFile, VTree, ViewResult};
use crate::cache::ChunkCache;
use crate::model::Column;
use crate::util::RetryOnce;

/// Names read per step while building the table.
const NAME_STEP: u64 = 1 << 16;

/// File stems of var names and where they are.
struct Names {
    /// Encoded stem → every column index with that name.
    by_stem: HashMap<String, Vec<u64>>,
    /// Names occurring more than once, with their indices, in first-occurrence order.
    duplicates: Vec<(String, Vec<u64>)>,
}

/// `genes/` of a matrix directory.
pub struct MatrixGenes {
    cols: Columns,
    names: Column,
    cache: Arc<ChunkCache>,
    opts: TreeOptions,
    table: RetryOnce<Names>,
}

impl MatrixGenes {
    /// The columns `cols` by the names in `names` (one per column).
    pub fn new(cols: Columns, names: Column, cache: Arc<ChunkCache>, opts: TreeOptions) -> Self {
        MatrixGenes { cols, names, cache, opts, table: RetryOnce::new() }
    }

    /// The name table; a failure to read the names is logged and tried again next time.
    fn table(&self) -> Option<&Names> {
        match self.table.get_or_try_init(|| read_names(&self.names)) {
            Ok(t) => Some(t),
            Err(e) => {
                log::error!("{}/genes: cannot read the var names: {e}", self.opts.prefix);
                None
            }
        }
    }

    fn readme(&self) -> Option<Vec<u8>> {
        let t = self.table()?;
        let mut s = String::from(
            "genes/NAME.npy and genes/NAME.txt hold the column of the var named NAME (the var index),\n\
             the same files as cols/J.npy and cols/J.txt. Names map to file names as dataframe columns do\n\
             (`%` -> %25, `/` -> %2F, NUL -> %00, a leading `.` -> %2E; `index` and names ending in\n\
             .codes, .mask or .categories get their last character percent-encoded). `ls genes/` lists\n\
             only this file.\n",
        );
        if t.duplicates.is_empty() {
            s.push_str("\nEvery var name is unique.\n");
        } else {
            s.push_str("\nNames occurring more than once are not resolvable here; use cols/J with one of their indices:\n");
            for (name, idx) in &t.duplicates {
                let list: Vec<String> = idx.iter().map(u64::to_string).collect();
                s.push_str(&format!("{name}\t{}\n", list.join(",")));
            }
        }
        Some(s.into_bytes())
    }
}

/// Reads every name of `col` (raw strings; other kinds as their text cells).
fn read_names(col: &Column) -> ViewResult<Names> {
    let n = col.len();
    let mut by_stem: HashMap<String, Vec<u64>> = HashMap::new();
    let mut order = Vec::new();
    let cells = ColumnCells::new(col.clone());
    let mut at = 0;
    while at < n {
        let e = (at + NAME_STEP).min(n);
        let names: Vec<String> = match col {
            Column::Str(a) => a.read_strings(at, e)?,
            _ => {
                let (mut buf, mut ends) = (Vec::new(), Vec::new());
                cells.render_cells(at, e, &mut buf, &mut ends)?;
                split_cells(&buf, &ends).map(|c| String::from_utf8_lossy(c).into_owned()).collect()
            }
        };
        for (i, name) in names.into_iter().enumerate() {
            let slot = by_stem.entry(encode(&name)).or_default();
            if slot.is_empty() {
                order.push(name);
            }
            slot.push(at + i as u64);
        }
        at = e;
    }
    let duplicates = order
        .into_iter()
        .filter_map(|name| {
            let idx = by_stem.get(&encode(&name))?;
            (idx.len() > 1).then(|| (name, idx.clone()))
        })
        .collect();
    Ok(Names { by_stem, duplicates })
}

impl DynDir for MatrixGenes {
    fn list(&self) -> Vec<String> {
        vec!["README.txt".to_string()]
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        if name == "README.txt" {
            return Some(VTree::single(Arc::new(StaticFile(self.readme()?))));
        }
        let (stem, ext) = name.rsplit_once('.')?;
        if ext != "npy" && ext != "txt" {
            return None;
        }
        let j = match self.table()?.by_stem.get(stem)?.as_slice() {
            [j] => *j,
            _ => return None,
        };
        let key = format!("{}/genes/{name}", self.opts.prefix);
        column_file(&self.cols.source(), j, ext, &self.cache, &self.opts, key)
    }
}
