//! Tests against fixtures written by h5py (`scripts/make_hdf5_fixtures.py`); the sidecar JSON
//! files hold what h5py decodes, an independent oracle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::open;
use crate::storage::{Array, DType, FieldType, Node, NumType, StorageError, Store};

fn fixture(name: &str) -> PathBuf {
    crate::storage::fixture("hdf5").join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{name}.json"))).expect("sidecar json");
    serde_json::from_str(&text).expect("valid json")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The array at `path` of `store`.
pub(super) fn array<'a>(store: &'a Store, path: &str) -> &'a Array {
    match store.root.get_path(path) {
        Some(Node::Array(a)) => a,
        _ => panic!("{path} is not an array"),
    }
}

fn elem_size(a: &Array) -> usize {
    match &a.meta().dtype {
        DType::Num(nt) => nt.size(),
        DType::Compound { record_size, .. } => *record_size,
        other => panic!("{}: no element size for {other:?}", a.meta().path),
    }
}

/// Reassembles the whole array in C order from its (clipped) chunks.
/// Every element of `a`, assembled chunk by chunk through its source.
pub(super) fn read_all(a: &Array) -> Vec<u8> {
    let m = a.meta();
    let elem = elem_size(a);
    let g = &m.grid;
    let mut out = vec![0u8; m.len() as usize * elem];
    if m.null {
        assert!(a.source.read_chunk(0).unwrap().is_empty());
        return out;
    }
    for i in 0..g.num_chunks() {
        let c = g.coords(i);
        let cs = g.clipped_shape(&c);
        let data = a
            .source
            .read_chunk(i)
            .unwrap_or_else(|e| panic!("{}: chunk {i}: {e}", m.path));
        let n: u64 = cs.iter().product();
        assert_eq!(
            data.len() as u64,
            n * elem as u64,
            "{}: chunk {i} size",
            m.path
        );
        for k in 0..n {
            let (mut rem, mut flat) = (k, 0u64);
            let mut local = vec![0u64; cs.len()];
            for d in (0..cs.len()).rev() {
                local[d] = rem % cs[d];
                rem /= cs[d];
            }
            for d in 0..cs.len() {
                flat = flat * m.shape[d] + c[d] * g.chunk[d] + local[d];
            }
            let (src, dst) = (k as usize * elem, flat as usize * elem);
            out[dst..dst + elem].copy_from_slice(&data[src..src + elem]);
        }
    }
    out
}

fn check_arrays(file: &str) -> Store {
    let store = open(&fixture(&format!("{file}.h5"))).expect("open");
    let exp = expected(file);
    let arrays = exp["arrays"].as_object().unwrap();
    assert!(!arrays.is_empty());
    for (path, e) in arrays {
        let a = array(&store, path);
        let m = a.meta();
        let shape: Vec<u64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(m.shape, shape, "{path}: shape");
        match (&m.dtype, e["dtype"].as_str().unwrap()) {
            (DType::Num(nt), d) => assert_eq!(nt.npy_descr(), d, "{path}: dtype"),
            (DType::Compound { record_size, .. }, "compound") => {
                assert_eq!(
                    *record_size as u64,
                    e["record_size"].as_u64().unwrap(),
                    "{path}: record size"
                )
            }
            (other, d) => panic!("{path}: got {other:?}, h5py says {d}"),
        }
        assert_eq!(
            read_all(a),
            unhex(e["hex"].as_str().unwrap()),
            "{path}: values differ from h5py"
        );
    }
    store
}

fn check_strings(store: &Store, exp: &Value) {
    for (path, e) in exp["strings"].as_object().unwrap() {
        let a = array(store, path);
        assert_eq!(a.meta().dtype, DType::Str, "{path}");
        let want: Vec<String> = e
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let got = a
            .source
            .read_strings(0, want.len() as u64)
            .unwrap_or_else(|err| panic!("{path}: {err}"));
        assert_eq!(got, want, "{path}");
    }
}

#[test]
fn numeric_arrays_match_h5py() {
    let store = check_arrays("numeric");
    // Unknown filters: described at open, Unsupported at read time.
    for path in expected("numeric")["unsupported"].as_array().unwrap() {
        let a = array(&store, path.as_str().unwrap());
        assert!(
            a.meta().storage_desc.contains("unsupported filter 6"),
            "{}",
            a.meta().storage_desc
        );
        match a.source.read_chunk(0) {
            Err(StorageError::Unsupported { path, reason }) => {
                assert_eq!(path, "/scaleoffset");
                assert!(reason.contains('6'), "{reason}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn storage_descriptions_and_special_shapes() {
    let store = open(&fixture("numeric.h5")).unwrap();
    let desc = |p: &str| array(&store, p).meta().storage_desc.clone();
    assert_eq!(
        desc("/gzip_shuffle"),
        "chunked 16x10, filters deflate(4)+shuffle"
    );
    assert_eq!(
        desc("/fletcher_gzip_i16"),
        "chunked 100, filters fletcher32+deflate(4)"
    );
    assert_eq!(desc("/lzf_f32"), "chunked 16x16, filters lzf");
    assert_eq!(desc("/contiguous_f64"), "contiguous");
    assert_eq!(desc("/unallocated_contig"), "contiguous (unallocated)");
    assert_eq!(desc("/compact_be_i32"), "compact");
    let null = array(&store, "/null").meta();
    assert!(null.null && null.shape.is_empty() && null.is_empty());
    assert_eq!(
        array(&store, "/null").source.read_chunk(0).unwrap(),
        Vec::<u8>::new()
    );
    let s = array(&store, "/scalar_f64");
    assert!(s.meta().shape.is_empty() && !s.meta().null);
    assert_eq!(s.meta().grid.num_chunks(), 1);
    assert_eq!(s.source.read_chunk(0).unwrap(), 3.5f64.to_le_bytes());
    assert!(matches!(
        s.source.read_chunk(1),
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(
        array(&store, "/bool").meta().dtype,
        DType::Num(NumType::Bool)
    );
    assert_eq!(
        array(&store, "/be_i32").meta().dtype,
        DType::Num(NumType::I32)
    );
    assert_eq!(array(&store, "/c64").meta().dtype, DType::Num(NumType::C64));
    assert_eq!(
        array(&store, "/empty_2d_chunked").meta().grid.num_chunks(),
        0
    );
    assert_eq!(store.info.format, "hdf5");
    assert!(store.info.size > 0 && store.info.mtime.is_some());
}

#[test]
fn strings_match_h5py() {
    let store = open(&fixture("strings.h5")).unwrap();
    let exp = expected("strings");
    check_strings(&store, &exp);
    let v = array(&store, "/vlen_utf8");
    assert_eq!(
        v.source.read_strings(2, 4).unwrap(),
        vec!["héllo", "日本語"]
    );
    assert!(v.source.read_strings(3, 9).is_err());
    // A flat range across rows of a 2-D array.
    let m = array(&store, "/vlen_2d");
    assert_eq!(m.source.read_strings(2, 5).unwrap(), vec!["c", "d", "e"]);
    let f = array(&store, "/fixed_S");
    assert_eq!(f.source.read_strings(1, 2).unwrap(), vec!["c2"]);
    assert!(matches!(
        f.source.read_chunk(0),
        Err(StorageError::Unsupported { .. })
    ));
    assert!(array(&store, "/scalar_vlen").meta().shape.is_empty());
}

#[test]
fn attributes_match_h5py() {
    let store = open(&fixture("attrs.h5")).unwrap();
    let exp = expected("attrs");
    for (path, want) in exp["attrs"].as_object().unwrap() {
        let attrs = if path == "/" {
            &store.root.attrs
        } else {
            store
                .root
                .get_path(path)
                .unwrap_or_else(|| panic!("{path}"))
                .attrs()
        };
        let got = serde_json::to_value(attrs).unwrap();
        assert_eq!(&got, want, "{path}: attributes");
    }
    let exp_arrays = exp["arrays"].as_object().unwrap();
    let codes = array(&store, "/obs/cell_type");
    assert_eq!(
        read_all(codes),
        unhex(exp_arrays["/obs/cell_type"]["hex"].as_str().unwrap())
    );
    check_strings(&store, &exp);
}

#[test]
fn compound_matches_h5py() {
    let store = check_arrays("compound");
    let obs = array(&store, "/obs");
    let DType::Compound {
        fields,
        record_size,
    } = &obs.meta().dtype
    else {
        panic!("not compound")
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["index", "n_genes", "frac", "X_pca", "flag", "code"]);
    assert_eq!(fields[0].dtype, FieldType::FixedStr(8));
    assert_eq!(fields[2].dtype, FieldType::Num(NumType::F64, 1));
    assert_eq!(fields[3].dtype, FieldType::Num(NumType::F32, 5));
    assert_eq!(fields[4].dtype, FieldType::Num(NumType::Bool, 1));
    assert_eq!((fields[3].offset, *record_size), (20, 42));
    let v = array(&store, "/vlen_field");
    let exp = expected("compound");
    let want = &exp["arrays"]["/vlen_field"]["vlen_fields"]["index"];
    let got = v.source.read_field_strings("index", 0, 3).unwrap();
    assert_eq!(serde_json::to_value(&got).unwrap(), *want);
    assert_eq!(
        v.source.read_field_strings("index", 1, 2).unwrap(),
        vec!["bé"]
    );
    assert!(v.source.read_field_strings("value", 0, 1).is_err());
}

#[test]
fn latest_format_and_creation_order() {
    let store = check_arrays("latest");
    let exp = expected("latest");
    check_strings(&store, &exp);
    let names = |g: &crate::storage::Group| {
        g.children
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    let want = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&store.root), want(&exp["order"]["/"]));
    let Some(Node::Group(z)) = store.root.get("zeta") else {
        panic!("zeta")
    };
    assert_eq!(names(z), want(&exp["order"]["/zeta"]));
    let by_name = open(&fixture("name_order.h5")).unwrap();
    assert_eq!(
        names(&by_name.root),
        want(&expected("name_order")["order"]["/"])
    );
    assert_eq!(
        *store.root.attrs,
        serde_json::from_value::<crate::storage::Attrs>(exp["attrs"]["/"].clone()).unwrap()
    );
}

#[test]
fn bad_files_give_clean_errors() {
    assert!(matches!(
        open(&fixture("does_not_exist.h5")),
        Err(StorageError::Io { .. })
    ));
    assert!(matches!(
        open(&fixture("not_hdf5.h5ad")),
        Err(StorageError::NotAStore { .. })
    ));
    match open(&fixture("truncated.h5")) {
        Err(StorageError::Corrupt { path, .. }) => assert!(path.ends_with("truncated.h5")),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("truncated file opened"),
    }
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.h5");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(open(&empty), Err(StorageError::NotAStore { .. })));
    check_arrays("userblock");
}

/// Flips a byte inside the first stored chunk of `dataset` in a copy of numeric.h5.
fn corrupt_copy(dataset: &str, at: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.h5");
    std::fs::copy(fixture("numeric.h5"), &path).unwrap();
    let addr = {
        let f = hdf5::File::open(&path).unwrap();
        f.dataset(dataset).unwrap().chunk_info(0).unwrap().addr
    };
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(addr + at) as usize] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn corrupt_chunks_are_errors_not_panics() {
    let (_d, path) = corrupt_copy("fletcher_u8_odd", 5);
    let store = open(&path).unwrap();
    let a = array(&store, "/fletcher_u8_odd");
    match a.source.read_chunk(0) {
        Err(StorageError::Corrupt { reason, .. }) => {
            assert!(reason.contains("fletcher32"), "{reason}")
        }
        other => panic!("expected checksum error, got {other:?}"),
    }
    assert!(a.source.read_chunk(1).is_ok());
    let (_d, path) = corrupt_copy("gzip_f64", 2);
    let store = open(&path).unwrap();
    assert!(matches!(
        array(&store, "/gzip_f64").source.read_chunk(0),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn concurrent_reads_are_identical() {
    let store = Arc::new(open(&fixture("numeric.h5")).unwrap());
    let paths = [
        "/gzip_shuffle",
        "/lzf_f32",
        "/fletcher_gzip_i16",
        "/contiguous_f64",
        "/fill_chunked",
        "/compact_be_i32",
    ];
    let reference: Vec<Vec<u8>> = paths.iter().map(|p| read_all(array(&store, p))).collect();
    let reference = Arc::new(reference);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (store, reference) = (store.clone(), reference.clone());
            std::thread::spawn(move || {
                for round in 0..20 {
                    let i = (t + round) % paths.len();
                    assert_eq!(
                        read_all(array(&store, paths[i])),
                        reference[i],
                        "{}",
                        paths[i]
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Writes dataset `/x` of `n` one-byte chunks (`i % 251`) to a new file at `path`: a chunk
/// index as big as a tiny file can hold.
pub(super) fn write_one_byte_chunks(path: &Path, n: usize) {
    let f = hdf5::File::create(path).unwrap();
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    f.new_dataset::<u8>().shape(n).chunk(1).create("x").unwrap().write_raw(&data).unwrap();
}

#[test]
fn chunk_table_of_100k_chunks_builds_fast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.h5");
    let n = 100_000usize;
    write_one_byte_chunks(&path, n);
    let store = open(&path).unwrap();
    let a = array(&store, "/x");
    assert_eq!(a.meta().grid.num_chunks(), n as u64);
    let t = std::time::Instant::now();
    assert_eq!(
        a.source.read_chunk(n as u64 - 1).unwrap(),
        vec![((n - 1) % 251) as u8]
    );
    let elapsed = t.elapsed();
    eprintln!("chunk table of {n} chunks + first read: {elapsed:?}");
    assert!(elapsed.as_secs_f64() < 1.0, "chunk table took {elapsed:?}");
    assert_eq!(a.source.read_chunk(777).unwrap(), vec![(777 % 251) as u8]);
}

/// The venv python (`<repo>/.venv`, or `ANNFS_PYTHON`), if present.
fn python() -> Option<PathBuf> {
    let p = std::env::var_os("ANNFS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    p.exists().then_some(p)
}

/// Reads every array of a group tree completely; returns how many arrays were read.
fn read_everything(g: &crate::storage::Group) -> usize {
    let mut n = 0;
    for (_, node) in &g.children {
        match node {
            Node::Group(g) => n += read_everything(g),
            Node::Array(a) => {
                let m = a.meta();
                match &m.dtype {
                    DType::Num(_) | DType::Compound { .. } => {
                        read_all(a);
                    }
                    DType::Str => {
                        a.source
                            .read_strings(0, m.len())
                            .unwrap_or_else(|e| panic!("{}: {e}", m.path));
                    }
                    DType::Unsupported(d) => panic!("{}: unsupported {d}", m.path),
                }
                n += 1;
            }
        }
    }
    n
}

#[test]
fn opens_files_written_by_anndata() {
    let Some(py) = python() else {
        eprintln!("note: no .venv python (set ANNFS_PYTHON); skipping the anndata round trip");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, numpy as np, pandas as pd, anndata as ad, scipy.sparse as sp
out = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.normal(size=(30, 12)).astype(np.float32)
obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(["B", "T", "NK"], 30)),
                    "n_genes": rng.integers(0, 100, 30), "ok": rng.integers(0, 2, 30).astype(bool),
                    "name": [f"n{i}" for i in range(30)]}, index=[f"cell{i}" for i in range(30)])
a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(12)]))
a.layers["counts"] = sp.random(30, 12, density=0.2, format="csr", dtype=np.float64, random_state=1)
a.obsm["X_pca"] = rng.normal(size=(30, 5))
a.uns["params"] = {"n": 3, "s": "x", "f": 0.5, "arr": np.arange(3), "none": None}
a.write_h5ad(out + "/plain.h5ad")
a.write_h5ad(out + "/gzip.h5ad", compression="gzip")
X.astype("<f4").tofile(out + "/X.bin")
"#;
    let st = std::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "python failed");
    let x = std::fs::read(dir.path().join("X.bin")).unwrap();
    for name in ["plain.h5ad", "gzip.h5ad"] {
        let store = open(&dir.path().join(name)).unwrap();
        assert_eq!(store.root.attrs["encoding-type"], "anndata");
        assert!(read_everything(&store.root) > 10);
        assert_eq!(read_all(array(&store, "/X")), x, "{name}: X");
        let cats = array(&store, "/obs/cell_type/categories");
        assert_eq!(
            cats.source
                .read_strings(0, cats.meta().len())
                .unwrap()
                .len(),
            3
        );
        let none = array(&store, "/uns/params/none");
        assert!(none.meta().null, "{name}: None is a null dataspace");
        assert_eq!(
            store.root.get_path("obs").unwrap().attrs()["_index"],
            "_index"
        );
    }
}

#[test]
fn in_place_reads_equal_decoded_chunks() {
    let store = open(&fixture("numeric.h5")).expect("open");
    let arrays = expected("numeric")["arrays"].as_object().unwrap().clone();
    let mut in_place = 0;
    for path in arrays.keys() {
        let a = array(&store, path);
        let m = a.meta();
        let packed = a.source.packed_in_place();
        let mut dst = vec![0u8; 3];
        if !packed {
            assert!(!a.source.read_packed_into(0, 0, &mut dst).unwrap(), "{path}: not in place, nothing read");
            continue;
        }
        assert!(m.grid.shape[1..] == m.grid.chunk[1..], "{path}: chunks span the trailing dimensions");
        in_place += 1;
        for i in 0..m.grid.num_chunks() {
            let want = a.source.read_chunk(i).unwrap();
            // The whole chunk, then a piece from its middle.
            let mut all = vec![0u8; want.len()];
            assert!(a.source.read_packed_into(i, 0, &mut all).unwrap(), "{path}: chunk {i}");
            assert_eq!(all, want, "{path}: chunk {i}");
            if want.len() > 2 {
                let mut mid = vec![0u8; want.len() - 2];
                assert!(a.source.read_packed_into(i, 1, &mut mid).unwrap());
                assert_eq!(mid, want[1..want.len() - 1], "{path}: chunk {i} at 1");
            }
            // Past the chunk's end: declined, not read.
            let mut over = vec![0u8; want.len() + 1];
            assert!(!a.source.read_packed_into(i, 0, &mut over).unwrap(), "{path}: chunk {i} overrun");
            // The same bytes named as a span of the file (what a spliced reply moves).
            let span = a.source.packed_span(i, 1, want.len().saturating_sub(1) as u64).unwrap().expect("a local span");
            let mut at = vec![0u8; span.len as usize];
            span.file.read_exact_at(&mut at, span.offset).unwrap();
            assert_eq!(at, want[1.min(want.len())..], "{path}: span of chunk {i}");
            assert!(a.source.packed_span(i, 0, want.len() as u64 + 1).unwrap().is_none(), "{path}: span overrun");
        }
        // Spans of the whole array through the model: in order, together the packed bytes.
        let cache = Arc::new(crate::cache::ChunkCache::new(1 << 20));
        let arr = crate::model::Arr::new(a.source.clone(), &cache, &crate::model::ArrIds::default());
        let whole = arr.read_rows(0, arr.rows()).unwrap();
        if whole.len() > 3 {
            let spans = arr.packed_spans(1, whole.len() as u64 - 1, 64).unwrap().expect("spans");
            let mut got = Vec::new();
            for s in &spans {
                let mut b = vec![0u8; s.len as usize];
                s.file.read_exact_at(&mut b, s.offset).unwrap();
                got.extend_from_slice(&b);
            }
            assert_eq!(got, whole[1..whole.len() - 1], "{path}: spans of the array");
            let window = arr.window(1, arr.rows());
            let row = whole.len() / arr.rows() as usize;
            let spans = window.packed_spans(0, (whole.len() - row) as u64, 64).unwrap().expect("spans of a window");
            assert_eq!(spans[0].len + spans.iter().skip(1).map(|s| s.len).sum::<u64>(), (whole.len() - row) as u64);
            let mut first = vec![0u8; spans[0].len.min(row as u64) as usize];
            spans[0].file.read_exact_at(&mut first, spans[0].offset).unwrap();
            assert_eq!(first, whole[row..row + first.len()], "{path}: a window starts at its first row");
        }
    }
    assert!(in_place > 0, "the fixture has unfiltered little-endian arrays");
}
