//! `README.txt` and `.annfs/info.json`: what the mount shows and how to read it.

use std::fmt::Write;

use crate::model::{AnnData, Element, Elements, Matrix};
use crate::storage::StoreInfo;

/// The name of a directory's README.
const README: &str = "README.txt";

/// The listing of a dynamic directory whose other entries are opened by name only (`rows/`,
/// `cols/`): just its README.
pub fn readme_listing() -> Vec<String> {
    vec![README.to_string()]
}

/// The README holding `text`, when `name` names it (a lookup in such a directory).
pub fn readme_lookup(name: &str, text: &str) -> Option<super::VTree> {
    (name == README).then(|| super::VTree::single(std::sync::Arc::new(super::StaticFile(text.as_bytes().to_vec()))))
}

fn matrix_desc(m: &Matrix) -> String {
    match m {
        Matrix::Dense(a) => format!("dense {:?} {}", a.num_type().map(|t| t.npy_descr()).unwrap_or("?"), a.meta().storage_desc),
        Matrix::DenseCols { arr, c0, c1 } => format!("dense columns {c0}..{c1} of {}", arr.path()),
        Matrix::Sparse(s) => format!(
            "{} {}x{}, {} stored values, data {}",
            s.format.name(),
            s.shape[0],
            s.shape[1],
            s.data.len(),
            s.data.num_type().map(|t| t.npy_descr()).unwrap_or("?")
        ),
    }
}

fn element_desc(e: &Element) -> String {
    match e {
        Element::Frame(df) => format!("dataframe, {} rows, {} columns", df.n_rows, df.columns.len()),
        Element::Matrix(m) => matrix_desc(m),
        Element::Array(a) => format!("array {:?} {}", a.shape(), a.num_type().map(|t| t.npy_descr()).unwrap_or("?")),
        Element::Strings(a) => format!("strings {:?}", a.shape()),
        Element::Column(_) => "categorical/nullable values".into(),
        Element::Records(r) => format!("record array, {} records", r.array.rows()),
        Element::Dict(d) => format!("dict of {} entries", d.len()),
    }
}

fn list(out: &mut String, name: &str, els: &Elements) {
    if els.is_empty() {
        return;
    }
    let _ = writeln!(out, "{name}/");
    for (k, e) in els {
        let _ = writeln!(out, "  {k}: {}", element_desc(e));
    }
}

/// The text of `README.txt`.
pub fn readme(ad: &AnnData, info: &StoreInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "annfs: a read-only view of an AnnData store");
    let _ = writeln!(s);
    let _ = writeln!(s, "source:  {} ({}, {})", info.location, info.format, ad.layout);
    let _ = writeln!(s, "shape:   {} obs x {} vars  (n_obs x n_vars = {} x {})", ad.n_obs, ad.n_vars, ad.n_obs, ad.n_vars);
    let _ = writeln!(s, "obs:     {} columns; var: {} columns", ad.obs.columns.len(), ad.var.columns.len());
    if let Some(x) = &ad.x {
        let _ = writeln!(s, "X:       {}", matrix_desc(x));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Elements:");
    for (name, els) in [("layers", &ad.layers), ("obsm", &ad.obsm), ("varm", &ad.varm), ("obsp", &ad.obsp), ("varp", &ad.varp), ("uns", &ad.uns)] {
        list(&mut s, name, els);
    }
    if let Some(raw) = &ad.raw {
        let _ = writeln!(s, "raw/: {} vars{}", raw.var.n_rows, raw.x.as_ref().map(|x| format!(", X {}", matrix_desc(x))).unwrap_or_default());
    }
    if !ad.problems.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Not rendered (element: reason):");
        for p in &ad.problems {
            let _ = writeln!(s, "  {}: {}", p.path, p.reason);
        }
    }
    s.push_str(
        r#"
How to read the files:
  obs.tsv, var.tsv       whole dataframes as TSV (header row; index in column 1).
                         pandas.read_csv(p, sep="\t", index_col=0); R: read.delim(p, row.names=1)
  obs/, var/             one file per column: <col>.txt (one value per line), <col>.npy (numbers),
                         <col>.codes.npy + <col>.categories.txt (categoricals), <col>.mask.npy
                         (nullable: true = missing); index.txt holds the index.
  X/, layers/<name>/     dense.npy (numpy.load(p, mmap_mode="r")), csr/ or csc/ with the stored
                         data.npy, indices.npy, indptr.npy.
  obsm/, varm/           <key>.npy and <key>.tsv for dense arrays; directories for sparse
                         matrices and dataframes.
  obsp/, varp/           one matrix directory per key.
  uns/                   dicts are directories; scalars and strings are .txt; numeric arrays are
                         .npy plus .txt.
  raw/                   raw.X and raw.var, laid out as above.
  rows/START:END/        the whole tree for obs rows START..END-1 (opened by name).
  where/<COL>=<VALUE>/   the whole tree for the cells whose categorical or bool obs column COL
                         equals VALUE; ls where/ lists the names, where/README.txt the counts.
  .annfs/info.json       machine-readable description; .annfs/stats.json live counters.
Text: UTF-8, one record per line; missing values are NA; fields with tabs, quotes or
newlines are double-quoted. Floats print in their shortest exact form for the stored dtype.
The mount is read-only; every read decodes only the chunks it needs.
"#,
    );
    s
}

/// README.txt as served: the text built at mount, plus the files whose reads failed so far.
pub fn with_failures(text: &str, failures: &[(String, String)]) -> Vec<u8> {
    let mut out = text.to_string();
    if !failures.is_empty() {
        out.push_str("\nFiles failing with EIO (file: reason; see the log):\n");
        for (path, err) in failures {
            let _ = writeln!(out, "  {path}: {err}");
        }
    }
    out.into_bytes()
}

fn elements_json(els: &Elements) -> serde_json::Value {
    serde_json::Value::Object(els.iter().map(|(k, e)| (k.clone(), element_desc(e).into())).collect())
}

/// The bytes of `.annfs/info.json`.
pub fn info_json(ad: &AnnData, info: &StoreInfo, cache_budget: u64) -> Vec<u8> {
    let v = serde_json::json!({
        "annfs_version": env!("CARGO_PKG_VERSION"),
        "store": info,
        "layout": ad.layout,
        "n_obs": ad.n_obs,
        "n_vars": ad.n_vars,
        "obs_columns": ad.obs.columns.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "var_columns": ad.var.columns.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "X": ad.x.as_ref().map(matrix_desc),
        "layers": elements_json(&ad.layers),
        "obsm": elements_json(&ad.obsm),
        "varm": elements_json(&ad.varm),
        "obsp": elements_json(&ad.obsp),
        "varp": elements_json(&ad.varp),
        "uns": elements_json(&ad.uns),
        "raw": ad.raw.as_ref().map(|r| serde_json::json!({"n_vars": r.var.n_rows, "X": r.x.as_ref().map(matrix_desc)})),
        "not_rendered": ad.problems.iter().map(|p| serde_json::json!({"element": p.path, "reason": p.reason})).collect::<Vec<_>>(),
        "cache_budget": cache_budget,
    });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    out
}
