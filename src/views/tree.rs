//! Lays an [`AnnData`] out as the virtual tree of docs/TREE.md.

use std::sync::Arc;

use super::column::ColumnCells;
use super::matrix::dense_rows;
use super::names::{encode, encode_key};
use super::npy_file::{ArrayRows, CachedRows, MaskedRows, NpyFile, RowBytes, ShiftedRows};
use super::gzip::StoredGzip;
use super::readme;
use super::rows::{mtx_file, MatrixRows, RootRows};
use super::sidecar::Sidecar;
use super::where_dir::WhereDir;
use super::text_file::{header_line, ColumnText, NumRowsText, RecordsText, TableText, TextFile};
use super::{FileContent, LiveFile, NodeId, StaticFile, VNode, VTree};
use super::cols::{Columns, MatrixCols};
use super::transposed::TransposedDir;
use super::genes::MatrixGenes;
use crate::cache::ChunkCache;
use crate::index::IndexService;
use crate::model::{AnnData, Arr, Column, DataFrame, Element, Elements, Matrix, Records};
use crate::storage::StoreInfo;

/// Size of one cached block of densified sparse rows.
const DENSE_BLOCK_BYTES: u64 = 1 << 20;

/// An array stored in more than [`MANY_TINY_CHUNKS`] chunks of under [`TINY_CHUNK_BYTES`] is
/// served through cached blocks of [`TINY_CHUNKS_BLOCK_BYTES`]: every chunk read costs a lookup
/// and a cache entry of its own, so such an array (a million one-element chunks: valid, if
/// odd) took 0.7 s per read of its 4 MB `.npy`, every time, in every `where/` selection that
/// shows it; its blocks are read once. (h5py and zarr never choose chunks this small.)
const TINY_CHUNK_BYTES: u64 = 1024;
/// See [`TINY_CHUNK_BYTES`].
const MANY_TINY_CHUNKS: u64 = 4096;
/// See [`TINY_CHUNK_BYTES`].
const TINY_CHUNKS_BLOCK_BYTES: u64 = 1 << 20;

/// How a tree is built.
#[derive(Clone, Default)]
pub struct TreeOptions {
    /// Where big text views remember their index (sizes) across mounts.
    pub sidecar: Option<Arc<Sidecar>>,
    /// Virtual path of this tree's root (`""`, or `rows/0:10` for a subset view).
    pub prefix: String,
    /// Whether the root has `rows/` (`rows/S:E/` subset views do not).
    pub with_rows: bool,
    /// Transposed indexes for gene columns (`None`: sparse CSR columns are scanned).
    pub index: Option<Arc<IndexService>>,
    /// Whether `where/` lists its names (at a store's root and in `rows/S:E/`; a `where/`
    /// inside a metadata subset lists only README.txt, so a recursive walk stays finite).
    pub list_where: bool,
    /// The store's files that no row selection changes, shared by its root tree and every
    /// subset tree (`None`: the tree being built is a store's root and starts them).
    pub shared: Option<Arc<SharedFiles>>,
}

/// Files whose bytes do not depend on which obs rows a tree holds — `var.tsv`, `var/`,
/// `varm/`, `varp/`, `uns/`, `raw/var*` and every `*.categories.txt` — by their path below the
/// tree's root. The first tree of a store to build one (its root tree) keeps it here; the
/// `rows/S:E/` and `where/C=V/` subset trees then serve the same file, so its size pass, its
/// rendered blocks and its remembered layout are shared instead of made again per subset.
#[derive(Default)]
pub struct SharedFiles(parking_lot::Mutex<std::collections::HashMap<String, Arc<dyn FileContent>>>);

impl SharedFiles {
    /// The file kept under `rel`, or `make`'s, kept from now on.
    fn get_or_keep(&self, rel: &str, make: Arc<dyn FileContent>) -> Arc<dyn FileContent> {
        self.0.lock().entry(rel.to_string()).or_insert(make).clone()
    }
}

/// Builds the virtual tree of `ad`.
pub fn build(ad: &Arc<AnnData>, info: &StoreInfo, cache: Arc<ChunkCache>, opts: &TreeOptions) -> VTree {
    let opts = &TreeOptions { shared: Some(opts.shared.clone().unwrap_or_default()), ..opts.clone() };
    let mut b = Builder { nodes: vec![VNode::Dir(Vec::new())], paths: vec![opts.prefix.clone()], cache, opts: opts.clone(), rows_free: false };
    let root = VTree::ROOT;
    let text = readme::readme(ad, info);
    let stats_cache = b.cache.clone();
    b.file(root, "README.txt", LiveFile::new(Box::new(move || readme::with_failures(&text, &stats_cache.stats.failures()))));
    b.table(root, "obs.tsv", &ad.obs);
    let d = b.dir(root, "obs");
    b.frame(d, &ad.obs);
    b.rows_free(|b| {
        b.table(root, "var.tsv", &ad.var);
        let d = b.dir(root, "var");
        b.frame(d, &ad.var);
    });
    let axes = Axes { obs: &ad.obs, var: &ad.var };
    if let Some(x) = &ad.x {
        let d = b.dir(root, "X");
        b.matrix(d, x, Some(&axes));
    }
    let d = b.dir(root, "layers");
    for (name, el) in &ad.layers {
        if let Element::Matrix(m) = el {
            let ld = b.dir(d, &encode_key(name));
            b.matrix(ld, m, Some(&axes));
        }
    }
    for (name, map, ext) in [
        ("obsm", &ad.obsm, "tsv"),
        ("varm", &ad.varm, "tsv"),
        ("obsp", &ad.obsp, "tsv"),
        ("varp", &ad.varp, "tsv"),
        ("uns", &ad.uns, "txt"),
    ] {
        let d = b.dir(root, name);
        if matches!(name, "varm" | "varp" | "uns") {
            b.rows_free(|b| b.elements(d, map, ext));
        } else {
            b.elements(d, map, ext);
        }
    }
    if let Some(raw) = &ad.raw {
        let d = b.dir(root, "raw");
        if let Some(x) = &raw.x {
            let xd = b.dir(d, "X");
            b.matrix(xd, x, Some(&Axes { obs: &ad.obs, var: &raw.var }));
        }
        b.rows_free(|b| {
            b.table(d, "var.tsv", &raw.var);
            let vd = b.dir(d, "var");
            b.frame(vd, &raw.var);
            let md = b.dir(d, "varm");
            b.elements(md, &raw.varm, "tsv");
        });
    }
    if opts.with_rows {
        let rows = RootRows::new(ad.clone(), info.clone(), b.cache.clone(), TreeOptions { with_rows: false, ..opts.clone() });
        b.add(root, "rows", VNode::Dyn(Arc::new(rows)));
    }
    let where_dir = WhereDir::new(ad.clone(), info.clone(), b.cache.clone(), opts.clone());
    b.add(root, "where", VNode::Dyn(Arc::new(where_dir)));
    let meta = b.dir(root, ".annfs");
    b.file(meta, "info.json", StaticFile(readme::info_json(ad, info, b.cache.budget())));
    let cache = b.cache.clone();
    let index = opts.index.clone();
    b.file(
        meta,
        "stats.json",
        LiveFile::new(Box::new(move || {
            let mut v = stats_json(&cache);
            if let Some(index) = &index {
                v["index"] = index.status();
            }
            json_bytes(&v)
        })),
    );
    VTree { nodes: b.nodes }
}

/// The live counters of `.annfs/stats.json`.
pub fn stats_json(cache: &ChunkCache) -> serde_json::Value {
    let mut v = cache.stats.snapshot();
    v["cache_bytes"] = cache.weight().into();
    v["cache_budget"] = cache.budget().into();
    v["cache_lent"] = cache.lent().into();
    v
}

/// Pretty JSON with a final newline.
pub fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap_or_default();
    s.push(b'\n');
    s
}

/// The obs and var of an obs × var matrix (for `10x/`).
struct Axes<'a> {
    obs: &'a DataFrame,
    var: &'a DataFrame,
}

struct Builder {
    nodes: Vec<VNode>,
    /// Virtual path of every node (sidecar keys).
    paths: Vec<String>,
    cache: Arc<ChunkCache>,
    opts: TreeOptions,
    /// True while building files no row selection changes (see [`SharedFiles`]).
    rows_free: bool,
}

impl Builder {
    /// Runs `build` with its files marked as independent of the tree's rows.
    fn rows_free(&mut self, build: impl FnOnce(&mut Self)) {
        let was = std::mem::replace(&mut self.rows_free, true);
        build(self);
        self.rows_free = was;
    }

    fn add(&mut self, parent: NodeId, name: &str, node: VNode) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(node);
        let p = &self.paths[parent];
        self.paths.push(if p.is_empty() { name.to_string() } else { format!("{p}/{name}") });
        if let VNode::Dir(entries) = &mut self.nodes[parent] {
            entries.push((name.to_string(), id));
        }
        id
    }

    fn dir(&mut self, parent: NodeId, name: &str) -> NodeId {
        self.add(parent, name, VNode::Dir(Vec::new()))
    }

    fn file(&mut self, parent: NodeId, name: &str, f: impl FileContent + 'static) {
        let f: Arc<dyn FileContent> = Arc::new(f);
        let f = match (&self.opts.shared, self.rows_free) {
            (Some(shared), true) => {
                let path = self.key(parent, name);
                let rel = match self.opts.prefix.as_str() {
                    "" => path.as_str(),
                    prefix => path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')).unwrap_or(&path),
                };
                shared.get_or_keep(rel, f)
            }
            _ => f,
        };
        self.add(parent, name, VNode::File(f));
    }

    fn key(&self, parent: NodeId, name: &str) -> String {
        let p = &self.paths[parent];
        if p.is_empty() {
            name.to_string()
        } else {
            format!("{p}/{name}")
        }
    }

    fn text(&mut self, parent: NodeId, name: &str, header: Vec<u8>, body: impl super::text_file::RowText + 'static) {
        let key = self.key(parent, name);
        let f = TextFile::new(header, Arc::new(body), self.cache.clone()).remembered(self.opts.sidecar.clone(), key);
        self.file(parent, name, f);
    }

    fn npy(&mut self, parent: NodeId, name: &str, arr: &Arr) {
        let Some(t) = arr.num_type() else { return };
        let grid = &arr.meta().grid;
        let mut rows: Arc<dyn RowBytes> = Arc::new(ArrayRows(arr.clone()));
        if grid.chunk_bytes(arr.elem_size() as u64) < TINY_CHUNK_BYTES && grid.num_chunks() > MANY_TINY_CHUNKS {
            rows = Arc::new(CachedRows::new(rows, self.cache.clone(), TINY_CHUNKS_BLOCK_BYTES));
        }
        self.file(parent, name, NpyFile::new(t, arr.shape(), rows));
    }

    /// One value per line.
    fn lines(&mut self, parent: NodeId, name: &str, col: Column, n: u64) {
        self.text(parent, name, Vec::new(), ColumnText::new(ColumnCells::new(col), n));
    }

    /// `obs.tsv`-style table.
    fn table(&mut self, parent: NodeId, name: &str, df: &DataFrame) {
        let mut head: Vec<&str> = vec![df.index_name.as_deref().unwrap_or("")];
        head.extend(df.columns.iter().map(|(n, _)| n.as_str()));
        let mut columns = vec![ColumnCells::new(df.index.clone())];
        columns.extend(df.columns.iter().map(|(_, c)| ColumnCells::new(c.clone())));
        self.text(parent, name, header_line(&head), TableText { columns, n: df.n_rows, trailer: "" });
    }

    /// A dataframe directory.
    fn frame(&mut self, d: NodeId, df: &DataFrame) {
        self.lines(d, "index.txt", df.index.clone(), df.n_rows);
        for (name, col) in &df.columns {
            let stem = encode(name);
            self.lines(d, &format!("{stem}.txt"), col.clone(), df.n_rows);
            match col {
                Column::Num(a) => self.npy(d, &format!("{stem}.npy"), a),
                Column::Str(_) => {}
                Column::Categorical { codes, categories, .. } => {
                    self.npy(d, &format!("{stem}.codes.npy"), codes);
                    let n = categories.len();
                    self.rows_free(|b| b.lines(d, &format!("{stem}.categories.txt"), (**categories).clone(), n));
                }
                Column::Nullable { values, mask } => {
                    if let Some(t) = values.num_type() {
                        let rows = MaskedRows { values: values.clone(), mask: mask.clone() };
                        self.file(d, &format!("{stem}.npy"), NpyFile::new(t, values.shape(), Arc::new(rows)));
                        self.npy(d, &format!("{stem}.mask.npy"), mask);
                    }
                }
            }
        }
    }

    /// A matrix directory: `dense.npy`, `matrix.mtx`, `rows/`, the stored arrays of a sparse
    /// matrix, and `10x/` for obs × var matrices.
    fn matrix(&mut self, d: NodeId, m: &Matrix, axes: Option<&Axes>) {
        if let (Some(rows), Some(t)) = (dense_rows(m, &self.cache, DENSE_BLOCK_BYTES), m.num_type()) {
            let (r, c) = m.shape();
            self.file(d, "dense.npy", NpyFile::new(t, &[r, c], rows));
        }
        let key = self.key(d, "matrix.mtx");
        if let Some(f) = mtx_file(m, &self.cache, false, &self.opts, key) {
            self.file(d, "matrix.mtx", f);
        }
        if let Matrix::Sparse(s) = m {
            if s.has_exact_arrays() {
                let sd = self.dir(d, s.format.name());
                self.npy(sd, "data.npy", &s.data);
                self.npy(sd, "indices.npy", &s.indices);
                if s.indptr_base == 0 {
                    // The stored array as it is: read in place (spliced, read ahead) as data and
                    // indices are, not rendered block by block.
                    self.npy(sd, "indptr.npy", &s.indptr);
                } else if let Some(t) = s.indptr.num_type() {
                    let rows = ShiftedRows { arr: s.indptr.clone(), shift: s.indptr_base };
                    self.file(sd, "indptr.npy", NpyFile::new(t, s.indptr.shape(), Arc::new(rows)));
                }
            }
        }
        let opts = TreeOptions { prefix: self.paths[d].clone(), ..self.opts.clone() };
        self.add(d, "rows", VNode::Dyn(Arc::new(MatrixRows::new(m.clone(), self.cache.clone(), opts))));
        if let Some(axes) = axes {
            self.tenx(d, m, axes);
            self.columns(d, m, axes.var);
        }
    }

    /// `cols/`, `genes/` and the transposed arrays (`csc/` of a CSR matrix, `csr/` of a CSC
    /// matrix) of a matrix whose columns are the vars of `var`.
    fn columns(&mut self, d: NodeId, m: &Matrix, var: &DataFrame) {
        let cols = Columns::new(m, self.opts.index.as_ref());
        let opts = TreeOptions { prefix: self.paths[d].clone(), ..self.opts.clone() };
        self.add(d, "cols", VNode::Dyn(Arc::new(MatrixCols::new(cols.clone(), self.cache.clone(), opts.clone()))));
        let genes = MatrixGenes::new(cols, var.index.clone(), self.cache.clone(), opts);
        self.add(d, "genes", VNode::Dyn(Arc::new(genes)));
        let Matrix::Sparse(s) = m else { return };
        // Only for a whole stored matrix: not a row window, not a gathered selection (where/).
        let whole = s.indptr.offset() == 0 && s.indptr.len() == s.indptr.meta().len() && !s.indptr.is_derived();
        let Some(index) = self.opts.index.as_ref().filter(|i| whole && i.may_index(s)) else { return };
        let dir = TransposedDir::new(index.clone(), s.clone());
        self.add(d, dir.name(), VNode::Dyn(Arc::new(dir)));
    }

    /// `10x/`: Cell Ranger 2 layout (vars as rows in `matrix.mtx`, `genes.tsv`, `barcodes.tsv`).
    fn tenx(&mut self, d: NodeId, m: &Matrix, axes: &Axes) {
        let td = self.dir(d, "10x");
        let key = self.key(td, "matrix.mtx");
        if let Some(f) = mtx_file(m, &self.cache, true, &self.opts, key) {
            self.file(td, "matrix.mtx", f);
        }
        let var = axes.var;
        let ids = var.columns.iter().find(|(n, _)| n == "gene_ids").map(|(_, c)| c.clone()).unwrap_or_else(|| var.index.clone());
        let genes = TableText { columns: vec![ColumnCells::new(ids.clone()), ColumnCells::new(var.index.clone())], n: var.n_rows, trailer: "" };
        self.text(td, "genes.tsv", Vec::new(), genes);
        self.lines(td, "barcodes.tsv", axes.obs.index.clone(), axes.obs.n_rows);

        // Cell Ranger 3 layout: the same, gzip-compressed (stored blocks, exact sizes).
        let vd = self.dir(d, "10x_v3");
        let key = self.key(vd, "matrix.mtx");
        if let Some(f) = mtx_file(m, &self.cache, true, &self.opts, key) {
            self.file(vd, "matrix.mtx.gz", StoredGzip::new(Arc::new(f)));
        }
        let features = TableText {
            columns: vec![ColumnCells::new(ids), ColumnCells::new(var.index.clone())],
            n: var.n_rows,
            trailer: "\tGene Expression",
        };
        let key = self.key(vd, "features.tsv");
        let f = TextFile::new(Vec::new(), Arc::new(features), self.cache.clone()).remembered(self.opts.sidecar.clone(), key);
        self.file(vd, "features.tsv.gz", StoredGzip::new(Arc::new(f)));
        let barcodes = ColumnText::new(ColumnCells::new(axes.obs.index.clone()), axes.obs.n_rows);
        let f = TextFile::new(Vec::new(), Arc::new(barcodes), self.cache.clone());
        self.file(vd, "barcodes.tsv.gz", StoredGzip::new(Arc::new(f)));
    }

    /// Numeric array as `.npy` plus a text rendering (`ext` = `tsv` or `txt`).
    fn array_files(&mut self, d: NodeId, stem: &str, a: &Arr, ext: &str) {
        let Some(t) = a.num_type() else { return };
        if !a.shape().is_empty() {
            self.npy(d, &format!("{stem}.npy"), a);
        }
        let rows: Arc<dyn RowBytes> = Arc::new(ArrayRows(a.clone()));
        self.text(d, &format!("{stem}.{ext}"), Vec::new(), NumRowsText { rows, t });
    }

    fn records(&mut self, d: NodeId, name: &str, r: &Records) {
        let mut head = Vec::new();
        for (f, _) in &r.fields {
            match f.dtype {
                crate::storage::FieldType::Num(_, k) if k > 1 => {
                    head.extend((0..k).map(|i| format!("{}[{i}]", f.name)));
                }
                _ => head.push(f.name.clone()),
            }
        }
        let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
        let fields = r.fields.iter().map(|(f, a)| (f.dtype.clone(), a.clone())).collect();
        self.text(d, name, header_line(&head_refs), RecordsText { fields, n: r.array.rows() });
    }

    /// Entries of a mapping (`obsm`, `uns`, …); dense arrays get `.npy` and `.<ext>` text.
    fn elements(&mut self, d: NodeId, map: &Elements, ext: &str) {
        for (key, el) in map {
            let stem = encode_key(key);
            match el {
                Element::Dict(children) => {
                    let sd = self.dir(d, &stem);
                    self.elements(sd, children, ext);
                }
                Element::Frame(df) => {
                    let sd = self.dir(d, &stem);
                    self.frame(sd, df);
                }
                Element::Matrix(m) => {
                    let sd = self.dir(d, &stem);
                    self.matrix(sd, m, None);
                }
                Element::Array(a) => self.array_files(d, &stem, a, ext),
                Element::Strings(a) => {
                    let n = a.len();
                    self.lines(d, &format!("{stem}.txt"), Column::Str(a.clone()), n);
                }
                Element::Column(c) => {
                    let n = c.len();
                    self.lines(d, &format!("{stem}.txt"), c.clone(), n);
                }
                Element::Records(r) => self.records(d, &format!("{stem}.tsv"), r),
            }
        }
    }
}
