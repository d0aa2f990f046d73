//! `rows/` directories: row slices of a matrix (`X/rows/100:200.npy`) and row-subset views of
//! the whole AnnData (`rows/100:200/`). Names resolve on lookup; nothing is built until then.

use std::sync::Arc;

use super::matrix::dense_rows;
use super::mtx::{header as mtx_header, MtxBody};
use super::npy_file::{NpyFile, RowBytes};
use super::text_file::{Header, NumRowsText, TextFile};
use super::readme::{readme_listing, readme_lookup};
use super::tree::{self, TreeOptions};
use super::{DynDir, VTree};
use crate::cache::ChunkCache;
use crate::model::{AnnData, Matrix};
use crate::storage::StoreInfo;

/// Aim for `ls rows/` blocks of about this much dense output.
const LIST_BLOCK_BYTES: u64 = 32 << 20;

/// Parses one Python-style integer bound in canonical form (`0`, `12`, `-3`; not `+5`, `007`,
/// `-0`, ` 1`).
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && !(s.starts_with('-') && digits == "0");
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

fn resolve(v: i64, n: u64) -> Option<u64> {
    let v = if v < 0 { v.checked_add(n as i64)? } else { v };
    (v >= 0).then_some(v as u64)
}

/// Resolves a slice name `START:END` (either end may be omitted, negatives count from the end)
/// against `n` rows; `None` unless `0 <= START < END <= n`.
pub fn parse_slice(name: &str, n: u64) -> Option<(u64, u64)> {
    let (a, b) = name.split_once(':')?;
    if b.contains(':') {
        return None;
    }
    let start = if a.is_empty() { 0 } else { resolve(parse_int(a)?, n)? };
    let end = if b.is_empty() { n } else { resolve(parse_int(b)?, n)? };
    (start < end && end <= n).then_some((start, end))
}

/// Resolves a single row `I` (negative counts from the end); `None` unless `0 <= I < n`.
pub fn parse_index(name: &str, n: u64) -> Option<u64> {
    resolve(parse_int(name)?, n).filter(|&i| i < n)
}

/// `rows/` of a matrix directory.
pub struct MatrixRows {
    m: Matrix,
    cache: Arc<ChunkCache>,
    opts: TreeOptions,
}

impl MatrixRows {
    /// Row slices of `m`; `opts.prefix` is the matrix directory's virtual path.
    pub fn new(m: Matrix, cache: Arc<ChunkCache>, opts: TreeOptions) -> Self {
        MatrixRows { m, cache, opts }
    }

    fn block_rows(&self) -> u64 {
        let (_, cols) = self.m.shape();
        let elem = self.m.num_type().map(|t| t.size()).unwrap_or(1) as u64;
        let mut k = (LIST_BLOCK_BYTES / (cols * elem).max(1)).max(1);
        if let Matrix::Dense(a) = &self.m {
            let chunk = a.meta().grid.chunk.first().copied().unwrap_or(1).max(1);
            k = (k / chunk).max(1) * chunk;
        }
        k
    }

    fn npy(&self, m: &Matrix, shape: &[u64]) -> Option<VTree> {
        let rows = dense_rows(m, &self.cache, 1 << 20)?;
        Some(VTree::single(Arc::new(NpyFile::new(m.num_type()?, shape, rows))))
    }

    fn tsv(&self, m: &Matrix, key: String) -> Option<VTree> {
        let rows: Arc<dyn RowBytes> = dense_rows(m, &self.cache, 1 << 20)?;
        let body = NumRowsText { rows, t: m.num_type()? };
        let f = TextFile::new(Vec::new(), Arc::new(body), self.cache.clone()).remembered(self.opts.sidecar.clone(), key);
        Some(VTree::single(Arc::new(f)))
    }
}

/// A MatrixMarket file of `m` (`transpose`: vars as rows, for 10x).
pub fn mtx_file(m: &Matrix, cache: &Arc<ChunkCache>, transpose: bool, opts: &TreeOptions, key: String) -> Option<TextFile> {
    let body = MtxBody::new(m, cache, transpose)?;
    let (t, (r, c)) = (body.num_type(), body.printed_shape());
    let header = Header::FromLines(Box::new(move |nnz| mtx_header(t, r, c, nnz)));
    Some(TextFile::with_header(header, Arc::new(body), cache.clone()).remembered(opts.sidecar.clone(), key))
}

impl MatrixRows {
    /// Rows `[a, b)` of the matrix; a failure to read what the window needs (the `indptr`
    /// entries of a CSR matrix) is logged, and the name then does not resolve.
    fn window(&self, a: u64, b: u64, key: &str) -> Option<Matrix> {
        self.m.rows(a, b).map_err(|e| log::warn!("{key}: {e}")).ok()
    }
}

impl DynDir for MatrixRows {
    fn list(&self) -> Vec<String> {
        let n = self.m.shape().0;
        let k = self.block_rows();
        (0..n.div_ceil(k)).map(|b| format!("{}:{}.npy", b * k, ((b + 1) * k).min(n))).collect()
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        let (n, cols) = self.m.shape();
        let (stem, ext) = name.rsplit_once('.')?;
        let key = format!("{}/rows/{name}", self.opts.prefix);
        if let Some((a, b)) = parse_slice(stem, n) {
            let m = self.window(a, b, &key)?;
            return match ext {
                "npy" => self.npy(&m, &[b - a, cols]),
                "tsv" => self.tsv(&m, key),
                "mtx" => Some(VTree::single(Arc::new(mtx_file(&m, &self.cache, false, &self.opts, key)?))),
                _ => None,
            };
        }
        let i = parse_index(stem, n)?;
        let m = self.window(i, i + 1, &key)?;
        match ext {
            "npy" => self.npy(&m, &[cols]),
            "tsv" => self.tsv(&m, key),
            _ => None,
        }
    }
}

/// `rows/` at the root: `rows/START:END/` is the whole tree restricted to those obs rows.
pub struct RootRows {
    ad: Arc<AnnData>,
    info: StoreInfo,
    cache: Arc<ChunkCache>,
    opts: TreeOptions,
}

impl RootRows {
    /// Row-subset views of `ad`.
    pub fn new(ad: Arc<AnnData>, info: StoreInfo, cache: Arc<ChunkCache>, opts: TreeOptions) -> Self {
        RootRows { ad, info, cache, opts }
    }
}

const ROWS_README: &str = "\
rows/START:END/ is a lazy view of obs rows START..END-1 (Python slice rules: 0-based, END
exclusive, either end may be omitted, negative numbers count from the end), laid out like the
mount's root: X/, layers/, obsm/, obs.tsv and obs/ restricted to those rows, obsp/ restricted on
both axes, var/, varm/, varp/ and uns/ unchanged. It is not listed here; open it by name,
e.g. `ls rows/0:1000/` or `head rows/-10:/obs.tsv`.
";

impl DynDir for RootRows {
    fn list(&self) -> Vec<String> {
        readme_listing()
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        if let Some(readme) = readme_lookup(name, ROWS_README) {
            return Some(readme);
        }
        let (a, b) = parse_slice(name, self.ad.n_obs)?;
        let sub = match self.ad.subset_rows(a, b) {
            Ok(sub) => sub,
            Err(e) => {
                log::error!("rows/{name}: {e}");
                return None;
            }
        };
        let opts = TreeOptions { prefix: format!("rows/{name}"), with_rows: false, ..self.opts.clone() };
        Some(tree::build(&Arc::new(sub), &self.info, self.cache.clone(), &opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_follow_python_and_the_contract() {
        assert_eq!(parse_slice("0:10", 100), Some((0, 10)));
        assert_eq!(parse_slice(":100", 100), Some((0, 100)));
        assert_eq!(parse_slice("500:", 1000), Some((500, 1000)));
        assert_eq!(parse_slice("-10:", 100), Some((90, 100)));
        assert_eq!(parse_slice(":-1", 100), Some((0, 99)));
        assert_eq!(parse_slice(":", 5), Some((0, 5)));
        for bad in ["5:2", "3:3", "0:101", "1:9:2", "+5:6", "007:9", " 1:2", "1: 2", "a:b", "-0:3", "-101:", "", "12"] {
            assert_eq!(parse_slice(bad, 100), None, "{bad:?}");
        }
        assert_eq!(parse_index("0", 3), Some(0));
        assert_eq!(parse_index("-1", 3), Some(2));
        assert_eq!(parse_index("3", 3), None);
        assert_eq!(parse_index("-4", 3), None);
        assert_eq!(parse_index("01", 3), None);
    }
}
