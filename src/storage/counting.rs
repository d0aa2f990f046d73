//! A counting [`ArraySource`] (test only), in the spirit of zarrs_storage's performance-metrics
//! adapter: it delegates every call to the array it wraps and records, per array path, which
//! chunks were decoded, which were read packed, how many strings were read and which hints
//! were given. [`count_store`] wraps every array of an opened [`Store`], so a test can build
//! the real model and view tree over it and check that nothing is loaded that is not read.
//!
//! The committed fixtures store each array in one chunk, which would make "only the chunks
//! that cover this row" say nothing; [`count_store`] can therefore present every 1-D numeric
//! array stored in one chunk as split into chunks of `split` elements (each split chunk is cut
//! from the inner chunk), so the model above sees — and must respect — a finer grid.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{ArrayMeta, ArraySource, ChunkGrid, DType, FileSpan, Group, Node, StorageResult, Store};

/// What was read of one array.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// `read_chunk` calls by chunk index.
    pub chunks: BTreeMap<u64, u64>,
    /// `read_packed_into` / `packed_span` calls by chunk index.
    pub packed: BTreeMap<u64, u64>,
    /// String elements read (`read_strings`, `each_string`, `read_field_strings`).
    pub strings: u64,
    /// Chunk indices hinted with `will_need`, and `load_index` calls.
    pub hints: u64,
}

impl Counts {
    /// True when no data of the array was read (hints do not count).
    pub(crate) fn nothing_read(&self) -> bool {
        self.chunks.is_empty() && self.packed.is_empty() && self.strings == 0
    }

    /// Chunk indices read, decoded or packed.
    pub(crate) fn chunks_read(&self) -> BTreeSet<u64> {
        self.chunks.keys().chain(self.packed.keys()).copied().collect()
    }
}

/// The counts of every wrapped array, by path.
#[derive(Default)]
pub(crate) struct Counters(Mutex<BTreeMap<String, Counts>>);

impl Counters {
    fn record(&self, path: &str, f: impl FnOnce(&mut Counts)) {
        f(self.0.lock().unwrap().entry(path.to_string()).or_default());
    }

    /// The counts of `path` (all zero when nothing was asked of it).
    pub(crate) fn of(&self, path: &str) -> Counts {
        self.0.lock().unwrap().get(path).cloned().unwrap_or_default()
    }

    /// Paths of arrays some data of which was read.
    pub(crate) fn read_paths(&self) -> BTreeSet<String> {
        self.0.lock().unwrap().iter().filter(|(_, c)| !c.nothing_read()).map(|(p, _)| p.clone()).collect()
    }

    /// Forgets every count.
    pub(crate) fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// An [`ArraySource`] that counts what is read of `inner`.
pub(crate) struct CountingSource {
    inner: Arc<dyn ArraySource>,
    counters: Arc<Counters>,
    /// The grid presented when `inner`'s one chunk is presented split, else `None`.
    meta: Option<ArrayMeta>,
}

impl CountingSource {
    /// Wraps `inner`; a 1-D numeric `inner` stored in one chunk of more than `split` elements
    /// is presented as chunks of `split` elements when `split` is given.
    pub(crate) fn new(inner: Arc<dyn ArraySource>, counters: Arc<Counters>, split: Option<u64>) -> Self {
        let m = inner.meta();
        let meta = match split {
            Some(k) if matches!(m.dtype, DType::Num(_)) && m.shape.len() == 1 && m.grid.num_chunks() == 1 && m.shape[0] > k => {
                Some(ArrayMeta { grid: ChunkGrid::new(m.shape.clone(), vec![k]), ..m.clone() })
            }
            _ => None,
        };
        CountingSource { inner, counters, meta }
    }

    fn path(&self) -> &str {
        &self.inner.meta().path
    }
}

impl ArraySource for CountingSource {
    fn meta(&self) -> &ArrayMeta {
        self.meta.as_ref().unwrap_or_else(|| self.inner.meta())
    }

    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        self.counters.record(self.path(), |c| *c.chunks.entry(index).or_default() += 1);
        let Some(meta) = &self.meta else { return self.inner.read_chunk(index) };
        if index >= meta.grid.num_chunks() {
            return Err(super::StorageError::corrupt(&meta.path, format!("chunk {index} out of range")));
        }
        let (elem, k, n) = (meta.dtype_size() as u64, meta.grid.chunk[0], meta.shape[0]);
        let whole = self.inner.read_chunk(0)?;
        let (a, b) = (index * k, ((index + 1) * k).min(n));
        Ok(whole[(a * elem) as usize..(b * elem) as usize].to_vec())
    }

    fn index_loaded(&self) -> bool {
        self.inner.index_loaded()
    }

    fn load_index(&self) {
        self.counters.record(self.path(), |c| c.hints += 1);
        self.inner.load_index()
    }

    fn will_need(&self, chunks: &[u64]) {
        self.counters.record(self.path(), |c| c.hints += chunks.len() as u64);
        if self.meta.is_none() {
            self.inner.will_need(chunks)
        }
    }

    fn packed_in_place(&self) -> bool {
        self.meta.is_none() && self.inner.packed_in_place()
    }

    fn read_packed_into(&self, index: u64, from: u64, dst: &mut [u8]) -> StorageResult<bool> {
        self.counters.record(self.path(), |c| *c.packed.entry(index).or_default() += 1);
        if self.meta.is_some() {
            return Ok(false);
        }
        self.inner.read_packed_into(index, from, dst)
    }

    fn packed_span(&self, index: u64, from: u64, len: u64) -> StorageResult<Option<FileSpan>> {
        self.counters.record(self.path(), |c| *c.packed.entry(index).or_default() += 1);
        if self.meta.is_some() {
            return Ok(None);
        }
        self.inner.packed_span(index, from, len)
    }

    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>> {
        self.counters.record(self.path(), |c| c.strings += end.saturating_sub(start));
        self.inner.read_strings(start, end)
    }

    fn each_string(&self, start: u64, end: u64, f: &mut dyn FnMut(&str)) -> StorageResult<()> {
        self.counters.record(self.path(), |c| c.strings += end.saturating_sub(start));
        self.inner.each_string(start, end, f)
    }

    fn read_field_strings(&self, field: &str, start: u64, end: u64) -> StorageResult<Vec<String>> {
        self.counters.record(self.path(), |c| c.strings += end.saturating_sub(start));
        self.inner.read_field_strings(field, start, end)
    }
}

/// Wraps every array of `store` in a [`CountingSource`] (split as [`CountingSource::new`]
/// says) and returns their shared counters.
pub(crate) fn count_store(store: &mut Store, split: Option<u64>) -> Arc<Counters> {
    fn wrap(g: &mut Group, counters: &Arc<Counters>, split: Option<u64>) {
        for (_, node) in &mut g.children {
            match node {
                Node::Group(sub) => wrap(sub, counters, split),
                Node::Array(a) => a.source = Arc::new(CountingSource::new(a.source.clone(), counters.clone(), split)),
            }
        }
    }
    let counters = Arc::new(Counters::default());
    wrap(&mut store.root, &counters, split);
    counters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ChunkCache;
    use crate::views::tree::{build, TreeOptions};
    use crate::views::{VNode, VTree};

    /// Elements per chunk the fixtures' one-chunk 1-D arrays are presented in.
    const SPLIT: u64 = 8;

    fn fixture(rel: &str) -> String {
        crate::storage::fixture(rel).to_string_lossy().into_owned()
    }

    /// The view tree of fixture `rel` over counted arrays (1-D ones split in chunks of
    /// `split` elements).
    fn counted_tree(rel: &str, split: Option<u64>) -> (Arc<VTree>, Arc<Counters>) {
        let mut store = crate::storage::open(&fixture(rel)).unwrap();
        let counters = count_store(&mut store, split);
        let cache = Arc::new(ChunkCache::new(64 << 20));
        let ad = crate::model::build(&store, &cache).unwrap();
        let opts = TreeOptions { with_rows: true, list_where: true, ..Default::default() };
        (Arc::new(build(&Arc::new(ad), &store.info, cache, &opts)), counters)
    }

    fn file_of(tree: &Arc<VTree>, path: &str) -> Arc<dyn crate::views::FileContent> {
        let (t, id) = tree.resolve_any(path).unwrap_or_else(|| panic!("{path}: not in the tree"));
        match &t.nodes[id] {
            VNode::File(f) => f.clone(),
            _ => panic!("{path}: not a file"),
        }
    }

    /// Reads the whole of `path`.
    fn read_all(tree: &Arc<VTree>, path: &str) -> Vec<u8> {
        let f = file_of(tree, path);
        let size = f.size().unwrap();
        let bytes = f.read(0, size as usize).unwrap();
        assert_eq!(bytes.len() as u64, size, "{path}");
        bytes
    }

    /// The values of an integer array, read from the fixture without counting.
    fn ints(rel: &str, path: &str) -> Vec<i64> {
        let store = crate::storage::open(&fixture(rel)).unwrap();
        let Some(Node::Array(a)) = store.root.get_path(path) else { panic!("{path}: no array") };
        let DType::Num(t) = a.meta().dtype else { panic!("{path}: not numeric") };
        let mut bytes = Vec::new();
        for i in 0..a.meta().grid.num_chunks() {
            bytes.extend(a.source.read_chunk(i).unwrap());
        }
        bytes
            .chunks(t.size())
            .map(|b| match t.size() {
                4 => i64::from(i32::from_le_bytes(b.try_into().unwrap())),
                8 => i64::from_le_bytes(b.try_into().unwrap()),
                n => panic!("{path}: {n}-byte integers"),
            })
            .collect()
    }

    /// A subset tree serves the store's files that no row selection changes (`var.tsv`,
    /// `var/`, `uns/`, categories listings) as the root tree's own: read once, they read nothing
    /// more in `rows/S:E/` or `where/C=V/`; files of the rows (`obs.tsv`) are the subset's.
    #[test]
    fn subsets_share_the_files_rows_do_not_change() {
        let (tree, counters) = counted_tree("dense_f32.h5ad", Some(SPLIT));
        let shared = ["var.tsv", "var/index.txt", "obs/cat_str.categories.txt"];
        let want: Vec<Vec<u8>> = shared.iter().map(|p| read_all(&tree, p)).collect();
        let after_root = [counters.of("/var/gene_symbol"), counters.of("/obs/cat_str/categories")];
        assert!(after_root[0].strings > 0, "{:?}", after_root[0]);
        for sub in ["rows/1:4", "where/cat_str=T cell", "rows/0:5/where/cat_int=10"] {
            for (p, want) in shared.iter().zip(&want) {
                let path = format!("{sub}/{p}");
                assert!(Arc::ptr_eq(&file_of(&tree, &path), &file_of(&tree, p)), "{path}");
                assert_eq!(&read_all(&tree, &path), want, "{path}");
            }
            let obs = format!("{sub}/obs.tsv");
            assert!(!Arc::ptr_eq(&file_of(&tree, &obs), &file_of(&tree, "obs.tsv")), "{obs}");
        }
        assert_eq!([counters.of("/var/gene_symbol"), counters.of("/obs/cat_str/categories")], after_root);
    }

    /// Chunks of `SPLIT` elements that elements `[a, b)` lie in.
    fn covering(a: u64, b: u64) -> BTreeSet<u64> {
        if a == b {
            return BTreeSet::new();
        }
        (a / SPLIT..=(b - 1) / SPLIT).collect()
    }

    /// Building the tree, listing every directory (dynamic ones too) and sizing every `.npy`
    /// file reads nothing of `X`'s stored values and column indices.
    fn listing_reads_no_matrix_data(rel: &str) {
        let (tree, counters) = counted_tree(rel, Some(SPLIT));
        let mut paths = Vec::new();
        tree.walk_paths(VTree::ROOT, "", &mut paths);
        assert!(paths.iter().any(|p| p.starts_with("X/")), "{rel}: {paths:?}");
        for p in paths.iter().filter(|p| p.ends_with(".npy")) {
            file_of(&tree, p).size().unwrap();
        }
        for a in ["/X/data", "/X/indices", "/layers/counts/data", "/layers/counts/indices", "/obsm/X_pca"] {
            assert_eq!(counters.of(a), Counts::default(), "{rel}: listing touched {a}");
        }
    }

    #[test]
    fn listing_and_npy_sizes_read_no_matrix_data() {
        listing_reads_no_matrix_data("csr_gzip.h5ad");
        listing_reads_no_matrix_data("zarr/csr_gzip.v3.zarr");
    }

    /// Reading `X/rows/<row>.npy` reads of `X/indptr` the chunks that hold entries `row` and
    /// `row + 1`, of `X/indices` and `X/data` the chunks that hold the row's stored values,
    /// and nothing of any other array.
    fn row_reads_only_its_chunks(rel: &str, row: u64) {
        let indptr = ints(rel, "X/indptr");
        let (a, b) = (indptr[row as usize] as u64, indptr[row as usize + 1] as u64);
        assert!(b > a && covering(a, b) != BTreeSet::from([0]), "{rel}: row {row} should start past chunk 0");
        let (tree, counters) = counted_tree(rel, Some(SPLIT));
        counters.reset();
        let file = file_of(&tree, &format!("X/rows/{row}.npy"));
        let size = file.size().unwrap();
        assert_eq!(file.read(0, size as usize).unwrap().len() as u64, size);

        let indptr_chunks: BTreeSet<u64> = [row / SPLIT, (row + 1) / SPLIT].into();
        assert_eq!(counters.of("/X/indptr").chunks_read(), indptr_chunks, "{rel}: X/indptr");
        assert_eq!(counters.of("/X/indices").chunks_read(), covering(a, b), "{rel}: X/indices");
        assert_eq!(counters.of("/X/data").chunks_read(), covering(a, b), "{rel}: X/data");
        let read = counters.read_paths();
        let expected: BTreeSet<String> = ["/X/indptr", "/X/indices", "/X/data"].map(String::from).into();
        assert_eq!(read, expected, "{rel}: arrays read for one row");
    }

    #[test]
    fn one_row_reads_only_the_chunks_covering_it() {
        // Row 30 of csr_gzip holds stored values well past the first split chunk.
        row_reads_only_its_chunks("csr_gzip.h5ad", 30);
        row_reads_only_its_chunks("zarr/csr_gzip.v3.zarr", 30);
    }

    /// Reading a numeric obs column's `.npy` reads that column's array and no other.
    fn column_reads_only_itself(rel: &str, split: Option<u64>, file: &str, array: &str) -> Counts {
        let (tree, counters) = counted_tree(rel, split);
        counters.reset();
        read_all(&tree, file);
        assert_eq!(counters.read_paths(), BTreeSet::from([array.to_string()]), "{rel}: {file}");
        counters.of(array)
    }

    #[test]
    fn one_obs_column_reads_only_its_array() {
        let all: BTreeSet<u64> = (0..50u64.div_ceil(SPLIT)).collect();
        for rel in ["csr_gzip.h5ad", "zarr/csr_gzip.v3.zarr"] {
            let c = column_reads_only_itself(rel, Some(SPLIT), "obs/n_counts.npy", "/obs/n_counts");
            assert_eq!(c.chunks_read(), all, "{rel}");
        }
        // Uncompressed contiguous storage (not split): the column is read packed, in place.
        let c = column_reads_only_itself("dense_f32.h5ad", None, "obs/float32.npy", "/obs/float32");
        assert!(c.chunks.is_empty() && !c.packed.is_empty(), "{c:?}");
    }
}
