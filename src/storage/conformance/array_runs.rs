//! The array suite's runs: h5ad fixtures through the HDF5 backend and their Zarr twins through
//! the Zarr backend, locally and remotely, all against what the HDF5 backend reads from the
//! local file; `MemSource`; and sources that each break one promise.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::{check_array_source, fails, first_difference, labelled, read_contents, Contents};
use crate::model::array::tests::MemSource;
use crate::storage::range::fake::FakeServer;
use crate::storage::range::RangeRead;
use crate::storage::{fixture, hdf5, zarr, ArrayMeta, ArraySource, DType, Group, Node, NumType, StorageError, StorageResult, Store, StoreInfo};

/// Every array of `g` and below, by path.
fn arrays(g: &Group, out: &mut BTreeMap<String, Arc<dyn ArraySource>>) {
    for (_, node) in &g.children {
        match node {
            Node::Group(c) => arrays(c, out),
            Node::Array(a) => {
                out.insert(a.meta().path.clone(), a.source.clone());
            }
        }
    }
}

/// The h5ad at `path` opened as a remote object served from memory.
fn hdf5_remote(path: &Path) -> StorageResult<Store> {
    let server = FakeServer::object(std::fs::read(path).expect("fixture"), Duration::ZERO);
    let file: Arc<dyn RangeRead> = Arc::new(server.remote_file());
    let info = StoreInfo {
        format: "hdf5",
        location: "fake://store.h5ad".into(),
        size: file.len(),
        mtime: None,
        inode: None,
        version: file.version().map(str::to_string),
    };
    hdf5::open_remote(file, info)
}

/// The Zarr directory `dir` opened as a remote prefix served from memory (every file a key).
fn zarr_remote(dir: &Path) -> StorageResult<Store> {
    fn put(server: &FakeServer, dir: &Path, prefix: &str) {
        for e in std::fs::read_dir(dir).expect("fixture dir").map(|e| e.expect("dir entry")) {
            let key = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().expect("file type").is_dir() {
                put(server, &e.path(), &format!("{key}/"));
            } else {
                server.put(&key, std::fs::read(e.path()).expect("fixture file"), "v");
            }
        }
    }
    let server = FakeServer::new(Duration::ZERO);
    put(&server, dir, "");
    zarr::open_remote("fake://store.zarr", Arc::new(server.fetcher()), false)
}

/// Runs the suite on every array of fixture `stem` through every backend (the h5ad local and
/// remote, each Zarr twin local and remote), each read against what the HDF5 backend reads
/// from the local file. `differ` lists arrays whose Zarr twins are absent or hold something
/// else (anndata writes them so), with why; they are checked against their own contents.
/// Returns the number of (backend, array) pairs checked, and of arrays the local HDF5 file has
/// packed in place (their packed reads and spans checked too).
fn run_fixture(stem: &str, differ: &[(&str, &str)]) -> (usize, usize) {
    let local = hdf5::open(&fixture(&format!("{stem}.h5ad"))).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let mut oracle = BTreeMap::new();
    arrays(&local.root, &mut oracle);
    let want: BTreeMap<String, Contents> = oracle
        .iter()
        .map(|(path, src)| (path.clone(), read_contents(&**src).unwrap_or_else(|e| panic!("{stem}: {path}: {e}"))))
        .collect();
    let mut stores = vec![("hdf5".to_string(), Ok(local)), ("hdf5 remote".to_string(), hdf5_remote(&fixture(&format!("{stem}.h5ad"))))];
    for v in ["v2", "v3", "v3s"] {
        let dir = fixture(&format!("zarr/{stem}.{v}.zarr"));
        stores.push((format!("zarr {v}"), zarr::open_dir(&dir)));
        stores.push((format!("zarr {v} remote"), zarr_remote(&dir)));
    }
    let (mut problems, mut checked, mut differing) = (Vec::new(), 0, BTreeMap::<String, usize>::new());
    for (name, store) in &stores {
        let store = store.as_ref().unwrap_or_else(|e| panic!("{stem}: {name}: {e}"));
        let mut found = BTreeMap::new();
        arrays(&store.root, &mut found);
        let may_differ = |path: &str| name.starts_with("zarr") && differ.iter().any(|(p, _)| *p == path);
        for (path, src) in found.iter().filter(|(p, _)| !want.contains_key(*p)) {
            if !may_differ(path) {
                problems.push(format!("{name}: {path} is not in the h5ad"));
                continue;
            }
            *differing.entry(path.clone()).or_default() += 1;
            match read_contents(&**src) {
                Ok(own) => labelled(&format!("{stem}: {name}"), || check_array_source(src, &own)),
                Err(e) => problems.push(format!("{name}: {path}: {e}")),
            }
            checked += 1;
        }
        for (path, want) in &want {
            let Some(src) = found.get(path) else {
                match may_differ(path) {
                    true => *differing.entry(path.clone()).or_default() += 1,
                    false => problems.push(format!("{name}: {path} is missing")),
                }
                continue;
            };
            let got = match read_contents(&**src) {
                Ok(got) => got,
                Err(e) => {
                    problems.push(format!("{name}: {path}: {e}"));
                    continue;
                }
            };
            match first_difference(&got, want) {
                None => labelled(&format!("{stem}: {name}"), || check_array_source(src, want)),
                Some(d) if !may_differ(path) => problems.push(format!("{name}: {path}: {d}")),
                Some(_) => {
                    *differing.entry(path.clone()).or_default() += 1;
                    labelled(&format!("{stem}: {name}"), || check_array_source(src, &got));
                }
            }
            checked += 1;
        }
    }
    assert!(problems.is_empty(), "{stem}: backends disagree:\n{}", problems.join("\n"));
    for (path, why) in differ {
        assert!(differing.contains_key(*path), "{stem}: {path} was listed as differing ({why}) but reads alike everywhere");
    }
    let packed = oracle.values().filter(|src| src.packed_in_place()).count();
    eprintln!("{stem}: {} arrays ({packed} packed in place), {checked} (backend, array) pairs checked on {} backends", want.len(), stores.len());
    (checked, packed)
}

/// Why a `None` in `uns` differs: anndata writes it as a null dataspace in HDF5, as a 0-d bool
/// array (encoding-type `null`) in Zarr.
const NONE: &str = "None: a null dataspace in HDF5, a 0-d bool array in Zarr";
/// Why `/raw` differs: anndata writes no `raw` as nothing in HDF5, as a `null` 0-d bool array
/// in Zarr.
const NO_RAW: &str = "no raw: absent in HDF5, a null 0-d bool array in Zarr";

#[test]
fn csr_gzip_reads_alike_on_every_backend() {
    assert!(run_fixture("csr_gzip", &[("/uns/log1p/base", NONE)]).0 >= 8 * 28);
}

#[test]
fn dense_f32_reads_alike_on_every_backend() {
    let (checked, packed) = run_fixture("dense_f32", &[("/uns/nothing", NONE), ("/raw", NO_RAW)]);
    assert!(checked >= 8 * 97 && packed > 0, "{checked} checked, {packed} packed in place");
}

#[test]
fn uns_edge_reads_alike_on_every_backend() {
    assert!(run_fixture("uns_edge", &[("/raw", NO_RAW)]).0 >= 8 * 18);
}

fn le<T: Copy, const N: usize>(values: impl IntoIterator<Item = T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.into_iter().flat_map(f).collect()
}

/// In-memory sources of every shape the grid has corners for: 1-D, 2-D and 3-D with edge
/// chunks, a scalar, empty arrays, strings (empty ones and non-ASCII included).
fn mem_sources() -> Vec<(Arc<dyn ArraySource>, Contents)> {
    let num = |shape: Vec<u64>, chunk: Vec<u64>, t: NumType, data: Vec<u8>| -> (Arc<dyn ArraySource>, Contents) {
        (Arc::new(MemSource::num(shape, chunk, t, data.clone())), Contents::Num(t, data))
    };
    let strings: Vec<String> = (0..23).map(|i| if i % 5 == 0 { String::new() } else { format!("s{i}-é{}", "x".repeat(i)) }).collect();
    vec![
        num(vec![50], vec![7], NumType::U16, le(0..50u16, u16::to_le_bytes)),
        num(vec![7, 5], vec![3, 2], NumType::F32, le((0..35).map(|i| i as f32 * 0.5 - 3.0), f32::to_le_bytes)),
        num(vec![3, 4, 5], vec![2, 3, 2], NumType::I64, le((0..60).map(|i| i * 1_000_000_007 - 9), i64::to_le_bytes)),
        num(vec![9], vec![4], NumType::Bool, (0..9).map(|i| (i % 3 == 0) as u8).collect()),
        num(vec![], vec![], NumType::F64, 2.5f64.to_le_bytes().to_vec()),
        num(vec![0], vec![4], NumType::U8, vec![]),
        num(vec![3, 0], vec![2, 1], NumType::I32, vec![]),
        (Arc::new(MemSource::strings(strings.clone(), 5)), Contents::Str(strings)),
        (Arc::new(MemSource::strings(vec![], 5)), Contents::Str(vec![])),
    ]
}

#[test]
fn mem_source_keeps_the_contract() {
    for (src, want) in mem_sources() {
        assert_eq!(read_contents(&*src).unwrap(), want, "{}", src.meta().path);
        check_array_source(&src, &want);
    }
    // A type annfs does not read: every read fails, naming the array.
    let mut odd = MemSource::num(vec![4], vec![2], NumType::U8, vec![1, 2, 3, 4]);
    odd.meta.dtype = DType::Unsupported("a type annfs does not read".into());
    check_array_source(&(Arc::new(odd) as Arc<dyn ArraySource>), &Contents::Null);
}

/// A source breaking one promise of the in-memory source it wraps.
struct Faulty {
    inner: Arc<dyn ArraySource>,
    fault: Fault,
    hinted: AtomicBool,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// None: the wrapper alone keeps every promise.
    Nothing,
    /// Chunk 1 comes back with a byte flipped.
    FlippedByte,
    /// A chunk past the end reads as empty instead of failing.
    ChunkPastEnd,
    /// Errors do not name the array.
    AnonymousErrors,
    /// After a `will_need` hint, chunks read as zeros.
    HintChangesReads,
    /// Packed in place, but packed reads give zeros.
    LyingPackedReads,
    /// A range of strings past the end is clamped instead of failing.
    ClampedStrings,
    /// `each_string` skips the first string.
    EachStringSkips,
}

impl ArraySource for Faulty {
    fn meta(&self) -> &ArrayMeta {
        self.inner.meta()
    }
    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        match self.fault {
            Fault::ChunkPastEnd if index >= self.meta().grid.num_chunks() => Ok(Vec::new()),
            Fault::AnonymousErrors => self.inner.read_chunk(index).map_err(|_| StorageError::corrupt("somewhere", "bad chunk")),
            Fault::HintChangesReads if self.hinted.load(Relaxed) => self.inner.read_chunk(index).map(|c| vec![0; c.len()]),
            Fault::FlippedByte if index == 1 => self.inner.read_chunk(index).map(|mut c| {
                c[0] ^= 0x10;
                c
            }),
            _ => self.inner.read_chunk(index),
        }
    }
    fn will_need(&self, _chunks: &[u64]) {
        self.hinted.store(true, Relaxed);
    }
    fn packed_in_place(&self) -> bool {
        matches!(self.fault, Fault::LyingPackedReads)
    }
    fn read_packed_into(&self, _index: u64, _from: u64, dst: &mut [u8]) -> StorageResult<bool> {
        if self.packed_in_place() {
            dst.fill(0);
        }
        Ok(self.packed_in_place())
    }
    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>> {
        match self.fault {
            Fault::ClampedStrings => {
                let end = end.min(self.meta().len());
                self.inner.read_strings(start.min(end), end)
            }
            _ => self.inner.read_strings(start, end),
        }
    }
    fn each_string(&self, start: u64, end: u64, f: &mut dyn FnMut(&str)) -> StorageResult<()> {
        let skip = matches!(self.fault, Fault::EachStringSkips) as usize;
        self.read_strings(start, end)?.iter().skip(skip).for_each(|s| f(s));
        Ok(())
    }
}

/// Each broken promise makes the suite fail, on the source that can show it (numbers chunked
/// along one axis, or strings); the sources unbroken pass.
#[test]
fn broken_array_sources_fail_the_suite() {
    let sources = mem_sources();
    let (numbers, strings) = (&sources[0], &sources[7]);
    let faults = [
        (Fault::FlippedByte, numbers),
        (Fault::ChunkPastEnd, numbers),
        (Fault::AnonymousErrors, numbers),
        (Fault::HintChangesReads, numbers),
        (Fault::LyingPackedReads, numbers),
        (Fault::ClampedStrings, strings),
        (Fault::EachStringSkips, strings),
    ];
    for (fault, (inner, want)) in faults {
        let src: Arc<dyn ArraySource> = Arc::new(Faulty { inner: inner.clone(), fault, hinted: AtomicBool::new(false) });
        assert!(fails(|| check_array_source(&src, want)), "{fault:?} passed the suite");
    }
    for (inner, want) in [numbers, strings] {
        let src: Arc<dyn ArraySource> = Arc::new(Faulty { inner: inner.clone(), fault: Fault::Nothing, hinted: AtomicBool::new(false) });
        labelled("unbroken", || check_array_source(&src, want));
    }
}
