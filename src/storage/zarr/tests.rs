//! Unit tests on the committed Zarr fixtures (`tests/fixtures/zarr/`, written by the real anndata).

use std::path::PathBuf;

use super::*;
use crate::storage::{DType, NumType};

fn fixture(name: &str) -> PathBuf {
    crate::storage::fixture("zarr").join(name)
}

fn array<'a>(store: &'a Store, path: &str) -> &'a Array {
    match store.root.get_path(path) {
        Some(Node::Array(a)) => a,
        _ => panic!("{path} is not an array"),
    }
}

#[test]
fn opens_every_variant_with_the_same_tree() {
    let names = |g: &Group| g.children.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let v2 = open_dir(&fixture("dense_f32.v2.zarr")).unwrap();
    for v in ["v3", "v3s"] {
        let s = open_dir(&fixture(&format!("dense_f32.{v}.zarr"))).unwrap();
        assert_eq!(names(&s.root), names(&v2.root), "{v}");
        assert_eq!(s.info.format, "zarr");
        let Some(Node::Group(obs)) = s.root.get("obs") else { panic!() };
        let Some(Node::Group(obs2)) = v2.root.get("obs") else { panic!() };
        assert_eq!(names(obs), names(obs2));
        assert_eq!(obs.attrs, obs2.attrs);
    }
}

#[test]
fn dense_chunks_match_across_variants() {
    let read_all = |s: &Store| {
        let a = array(s, "X");
        let m = a.meta();
        assert_eq!(m.dtype, DType::Num(NumType::F32));
        let mut out = Vec::new();
        for i in 0..m.grid.num_chunks() {
            out.push(a.source.read_chunk(i).unwrap());
        }
        (m.grid.clone(), out)
    };
    let (g2, c2) = read_all(&open_dir(&fixture("dense_f32.v2.zarr")).unwrap());
    let (g3, c3) = read_all(&open_dir(&fixture("dense_f32.v3.zarr")).unwrap());
    let (gs, cs) = read_all(&open_dir(&fixture("dense_f32.v3s.zarr")).unwrap());
    assert_eq!((g2.clone(), &c2), (g3, &c3));
    // Sharded: the inner chunk grid is presented, and is finer than the shards.
    assert!(gs.num_chunks() >= g2.num_chunks());
    let flat = |g: &crate::storage::ChunkGrid, chunks: &[Vec<u8>]| {
        let (rows, cols) = (g.shape[0] as usize, g.shape[1] as usize);
        let mut out = vec![0u8; rows * cols * 4];
        for (i, c) in chunks.iter().enumerate() {
            let co = g.coords(i as u64);
            let cs = g.clipped_shape(&co);
            for r in 0..cs[0] as usize {
                let row = co[0] as usize * g.chunk[0] as usize + r;
                let col = co[1] as usize * g.chunk[1] as usize;
                let n = cs[1] as usize * 4;
                out[(row * cols + col) * 4..(row * cols + col) * 4 + n].copy_from_slice(&c[r * n..(r + 1) * n]);
            }
        }
        out
    };
    assert_eq!(flat(&g2, &c2), flat(&gs, &cs));
}

#[test]
fn strings_scalars_and_null() {
    for v in ["v2", "v3", "v3s"] {
        let s = open_dir(&fixture(&format!("dense_f32.{v}.zarr"))).unwrap();
        let idx = array(&s, "obs/_index");
        assert_eq!(idx.meta().dtype, DType::Str);
        let all = idx.source.read_strings(0, idx.meta().len()).unwrap();
        assert_eq!(all.len() as u64, idx.meta().len());
        assert_eq!(idx.source.read_strings(3, 5).unwrap(), all[3..5].to_vec(), "{v}");
        let scalar = array(&s, "uns/str_scalar");
        assert!(scalar.meta().shape.is_empty());
        assert_eq!(scalar.source.read_strings(0, 1).unwrap().len(), 1);
        let null = array(&s, "uns/nothing");
        assert_eq!(null.attrs.get("encoding-type").and_then(|v| v.as_str()), Some("null"));
        let rec = array(&s, "uns/rec");
        assert!(matches!(rec.meta().dtype, DType::Compound { .. }), "{v}: {:?}", rec.meta().dtype);
        rec.source.read_chunk(0).unwrap();
    }
}

#[test]
fn old_string_types_and_unconsolidated_v2() {
    // `<U` scalar, `|S` 2-D array, no .zmetadata, `/` chunk separator.
    let s = open_dir(&fixture("uns_edge.v2nested.zarr")).unwrap();
    let u = array(&s, "uns/unicode");
    let want = array(&open_dir(&fixture("uns_edge.v2.zarr")).unwrap(), "uns/unicode").source.read_strings(0, 1).unwrap();
    assert_eq!(u.source.read_strings(0, 1).unwrap(), want);
    let b = array(&s, "uns/str_2d");
    let want = array(&open_dir(&fixture("uns_edge.v2.zarr")).unwrap(), "uns/str_2d").source.read_strings(0, 4).unwrap();
    assert_eq!(b.source.read_strings(0, 4).unwrap(), want);
    assert_eq!(b.source.read_strings(1, 3).unwrap(), want[1..3].to_vec());
}

#[test]
fn not_a_store_and_zip() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_dir(dir.path()).err().unwrap();
    assert!(matches!(e, StorageError::NotAStore { .. }), "{e}");
    let zip = dir.path().join("a.zarr.zip");
    std::fs::write(&zip, b"PK").unwrap();
    let e = crate::storage::open(&zip.display().to_string()).err().unwrap();
    assert!(e.to_string().contains("not supported"), "{e}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), &p).unwrap();
        }
    }
}

#[test]
fn malformed_metadata_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.zarr");
    copy_dir(&fixture("dense_f32.v3.zarr"), &store);
    std::fs::write(store.join("zarr.json"), b"{ not json").unwrap();
    let e = open_dir(&store).err().unwrap().to_string();
    assert!(e.contains("zarr.json") && e.contains("malformed JSON"), "{e}");
}

#[test]
fn bad_chunks_fail_only_their_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.zarr");
    copy_dir(&fixture("dense_f32.v3s.zarr"), &store);
    // Truncate the first shard of X: its index (at the end) now points past the end.
    let shard = store.join("X/c/0/0");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    // An unsupported codec in one array.
    let meta = store.join("obs/int8/zarr.json");
    let doc = std::fs::read_to_string(&meta).unwrap().replace("\"zstd\"", "\"nosuchcodec\"");
    std::fs::write(&meta, doc).unwrap();
    // Remove consolidated metadata so the edited zarr.json is used.
    let root = store.join("zarr.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&root).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("consolidated_metadata");
    std::fs::write(&root, serde_json::to_vec(&v).unwrap()).unwrap();
    let s = open_dir(&store).unwrap();
    let x = array(&s, "X");
    assert!(x.source.read_chunk(0).is_err());
    let last = x.meta().grid.num_chunks() - 1;
    x.source.read_chunk(last).unwrap();
    let bad = array(&s, "obs/int8");
    let e = bad.source.read_chunk(0).unwrap_err().to_string();
    assert!(e.contains("/obs/int8"), "{e}");
}

/// A remote store's chunks read in order are fetched ahead in the background (each once), and
/// read the same as the local store's.
#[test]
fn remote_chunks_read_in_order_are_fetched_ahead() {
    use crate::storage::range::fake::FakeServer;
    for v in ["v2", "v3"] {
        let dir = fixture(&format!("dense_f32.{v}.zarr"));
        let server = FakeServer::new(std::time::Duration::from_millis(2));
        for entry in walk(&dir) {
            let key = entry.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
            server.put(&key, std::fs::read(&entry).unwrap(), "v");
        }
        let store = open_remote("fake://", Arc::new(server.fetcher()), false).unwrap();
        let local = open_dir(&dir).unwrap();
        let (a, want) = (array(&store, "X"), array(&local, "X"));
        let n = a.meta().grid.num_chunks();
        assert!(n >= 8, "{v}: {n} chunks");
        server.gets.lock().clear();
        for i in 0..n {
            assert_eq!(a.source.read_chunk(i).unwrap(), want.source.read_chunk(i).unwrap(), "{v} chunk {i}");
        }
        let gets = server.gets.lock();
        assert_eq!(gets.len() as u64, n, "{v}: each chunk fetched once: {gets:?}");
        let ahead = gets.iter().filter(|g| g.background).count() as u64;
        assert!(ahead >= n - 3, "{v}: {ahead} of {n} chunks fetched ahead");
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Without consolidated metadata the store directory is walked: a symlinked group or array is
/// listed (as zarr-python lists it), a symlink back to a group holding it is left out (a
/// cycle), and symlinks doubling a group per level are refused instead of walked for ever.
#[test]
fn walked_stores_follow_symlinks_but_not_cycles() {
    use std::os::unix::fs::symlink;
    for (name, meta) in [("uns_edge.v2.zarr", ".zmetadata"), ("uns_edge.v3.zarr", "")] {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.zarr");
        copy_dir(&fixture(name), &store);
        if meta.is_empty() {
            let root = store.join("zarr.json");
            let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&root).unwrap()).unwrap();
            doc.as_object_mut().unwrap().remove("consolidated_metadata");
            std::fs::write(&root, doc.to_string()).unwrap();
        } else {
            std::fs::remove_file(store.join(meta)).unwrap();
        }
        std::fs::rename(store.join("uns/cube"), dir.path().join("cube")).unwrap();
        symlink(dir.path().join("cube"), store.join("uns/cube")).unwrap();
        symlink("..", store.join("uns/loop")).unwrap();
        symlink("../uns", store.join("obsm/up")).unwrap();
        let s = open_dir(&store).unwrap();
        assert_eq!(array(&s, "uns/cube").meta().shape.len(), 3, "{name}");
        assert!(s.root.get_path("uns/loop").is_none(), "{name}: a cycle is left out");
        assert!(matches!(s.root.get_path("obsm/up/cube"), Some(Node::Array(_))), "{name}: not a cycle");
        if meta.is_empty() {
            continue; // the chain below walks the same way in both formats
        }
        let chain: Vec<PathBuf> = (0..17).map(|i| store.join(format!("uns/g{i}"))).collect();
        for (i, g) in chain.iter().enumerate() {
            std::fs::create_dir(g).unwrap();
            std::fs::write(g.join(".zgroup"), r#"{"zarr_format":2}"#).unwrap();
            if i > 0 {
                symlink(g, chain[i - 1].join("l")).unwrap();
                symlink(g, chain[i - 1].join("r")).unwrap();
            }
        }
        let e = open_dir(&store).err().expect("2^16 paths are refused").to_string();
        assert!(e.contains("groups and arrays"), "{name}: {e}");
    }
}
