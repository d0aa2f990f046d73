//! Tests of [`super`]: every fixture's chunk tables against the library's, damaged indexes,
//! round trips per B-tree level.

use super::*;
use crate::storage::hdf5::chunks;
use crate::storage::hdf5::ffi::Hid;
use crate::storage::hdf5::source::object_address;
use std::sync::Arc;

/// Every chunked dataset below `g`: (path, dataset).
fn chunked(g: &hdf5::Group, out: &mut Vec<(String, hdf5::Dataset)>) {
    for name in g.member_names().unwrap_or_default() {
        if let Ok(d) = g.dataset(&name) {
            if d.is_chunked() {
                out.push((d.name(), d));
            }
        } else if let Ok(sub) = g.group(&name) {
            chunked(&sub, out);
        }
    }
}

/// Dataset `d`'s chunk grid and the address of its object header.
fn grid_and_header(d: &hdf5::Dataset, name: &str) -> (ChunkGrid, u64) {
    let grid = ChunkGrid::new(d.shape().iter().map(|&n| n as u64).collect(), d.chunk().unwrap().iter().map(|&n| n as u64).collect());
    // SAFETY: the handle takes its own reference to the open dataset. Under the library lock:
    // the library is not thread-safe, and other tests call it at the same time.
    crate::storage::hdf5::ffi::locked(|| unsafe { hdf5_sys::h5i::H5Iinc_ref(d.id()) });
    (grid, object_address(&Hid::new(d.id(), name).unwrap()).expect("object header address"))
}

#[test]
fn tables_equal_the_library_s_on_every_fixture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.extend(std::fs::read_dir(dir.join("hdf5")).unwrap().filter_map(|e| e.ok().map(|e| e.path())));
    files.retain(|p| p.extension().is_some_and(|e| e == "h5ad" || e == "h5") && !p.ends_with("not_hdf5.h5ad"));
    let (mut direct, mut library) = (0, 0);
    let mut latest = Vec::new();
    for path in files {
        let Ok(file) = hdf5::File::open(&path) else { continue };
        let mut sets = Vec::new();
        chunked(&file, &mut sets);
        let os = std::fs::File::open(&path).unwrap();
        let len = os.metadata().unwrap().len();
        let data = DataFile::local(os, len);
        for (name, d) in sets {
            let (grid, header) = grid_and_header(&d, &name);
            let want = chunks::build(d.id(), &grid, &name).unwrap();
            let got = read(&data, Sizes { addr: 8, size: 8 }, header, &grid, &name);
            if path.ends_with("hdf5/latest.h5") {
                latest.push((name.clone(), got.is_some()));
            }
            match got {
                Some(got) => {
                    direct += 1;
                    assert_eq!(got.len(), want.len(), "{}: {name}", path.display());
                    for (i, loc) in &got {
                        assert_eq!(want.get(*i), Some(*loc), "{}: {name} chunk {i}", path.display());
                    }
                }
                None => library += 1,
            }
        }
    }
    assert!(direct >= 20, "version-1 B-tree indexes are read directly ({direct} read, {library} left to the library)");
    // latest.h5 (libver="latest") holds every version-4 index, and each is read directly:
    // single chunks, fixed arrays and one-dimensional extensible arrays (plain, filtered,
    // paged, with blocks and pages never written), a version-2 B-tree and an implicit index.
    latest.sort();
    let want: Vec<(String, bool)> = [
        ("/btree2", true), ("/ext_gzip", true), ("/ext_sparse", true), ("/extensible", true), ("/fixed_array", true), ("/fixed_paged", true),
        ("/fixed_paged_gzip", true), ("/fixed_plain", true), ("/implicit", true), ("/single", true),
        ("/single_plain", true),
    ].iter().map(|&(n, d)| (n.to_string(), d)).collect();
    assert_eq!(latest, want);
}

/// Damaged indexes are refused or read as some table, never a panic or a runaway read:
/// bytes of latest.h5's object headers and index structures (every kind of index) flipped,
/// zeroed or set to 0xff, one at a time, then every dataset's table read from the copy.
#[test]
fn damaged_indexes_never_panic() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5/latest.h5");
    let file = hdf5::File::open(&path).unwrap();
    let mut sets = Vec::new();
    chunked(&file, &mut sets);
    let sets: Vec<(String, u64, ChunkGrid)> = sets
        .into_iter()
        .map(|(name, d)| {
            let (grid, header) = grid_and_header(&d, &name);
            (name, header, grid)
        })
        .collect();
    let pristine = std::fs::read(&path).unwrap();
    // Damage lands in the first 256 bytes of an object header or index structure.
    let starts: Vec<usize> = pristine
        .windows(4)
        .enumerate()
        .filter(|(_, w)| [b"OHDR", b"FAHD", b"FADB", b"EAHD", b"EAIB", b"EASB", b"EADB", b"TREE", b"BTHD", b"BTIN", b"BTLF"].iter().any(|s| s == w))
        .map(|(i, _)| i)
        .collect();
    assert!(starts.len() > 20, "{} structures", starts.len());
    let dir = tempfile::tempdir().unwrap();
    let (mut state, mut refused) = (0x9e37_79b9_7f4a_7c15u64, 0);
    for round in 0..600 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bytes = pristine.clone();
        let at = (starts[(state % starts.len() as u64) as usize] + (state >> 40) as usize % 256).min(bytes.len() - 1);
        bytes[at] = match round % 3 {
            0 => bytes[at] ^ (1 << ((state >> 60) % 8)),
            1 => 0,
            _ => 0xff,
        };
        let damaged = dir.path().join("d.h5");
        std::fs::write(&damaged, &bytes).unwrap();
        let data = DataFile::local(std::fs::File::open(&damaged).unwrap(), bytes.len() as u64);
        for (name, header, grid) in &sets {
            match read(&data, Sizes { addr: 8, size: 8 }, *header, grid, name) {
                Some(t) => assert!(t.len() as u64 <= grid.num_chunks(), "{name}: more chunks than the grid"),
                None => refused += 1,
            }
        }
    }
    assert!(refused > 0, "some damage is refused");
}

/// A file that counts round trips: each `prefetch_exact` batch is one (its ranges are
/// fetched in parallel), and so is each read of a range no batch fetched.
struct Rounds {
    bytes: Vec<u8>,
    fetched: parking_lot::Mutex<HashSet<(u64, u64)>>,
    rounds: std::sync::atomic::AtomicUsize,
}

impl crate::storage::range::RangeRead for Rounds {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if !self.fetched.lock().contains(&(offset, buf.len() as u64)) {
            self.rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        buf.copy_from_slice(&self.bytes[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn prefetch_exact(&self, ranges: &[(u64, u64)]) {
        if !ranges.is_empty() {
            self.fetched.lock().extend(ranges.iter().copied());
            self.rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn identity(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// A version-1 B-tree of three levels (40,000 chunks: a root, tens of internal nodes,
/// hundreds of leaves) is read in one round trip per level, plus the object header's:
/// each level is fetched at once, not each internal node's children in turn.
#[test]
fn a_tree_costs_one_round_trip_per_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.h5");
    let n = 40_000usize;
    crate::storage::hdf5::tests::write_one_byte_chunks(&path, n);
    let file = hdf5::File::open(&path).unwrap();
    let d = file.dataset("x").unwrap();
    let (grid, header) = grid_and_header(&d, "/x");
    let src = Arc::new(Rounds { bytes: std::fs::read(&path).unwrap(), fetched: Default::default(), rounds: Default::default() });
    let data = DataFile::new(src.clone());
    let r = Reader { data: &data, sizes: Sizes { addr: 8, size: 8 }, path: "/x" };
    let layout = r.layout_message(header).unwrap();
    let header_rounds = src.rounds.swap(0, std::sync::atomic::Ordering::Relaxed);
    let root = le(&layout, 3, 8).unwrap();
    let levels = usize::from(r.read(root, 8).unwrap()[5]) + 1;
    src.rounds.store(0, std::sync::atomic::Ordering::Relaxed);
    let table = read(&data, Sizes { addr: 8, size: 8 }, header, &grid, "/x").unwrap();
    assert_eq!(table.len(), n);
    assert_eq!(levels, 3, "the fixture's tree has three levels");
    let rounds = src.rounds.load(std::sync::atomic::Ordering::Relaxed) - header_rounds;
    assert_eq!(rounds, levels, "{rounds} round trips for a tree of {levels} levels");
}

/// Version-2 B-trees of three and four levels (datasets resizable in both dimensions, 20,000 and
/// 320,000 chunks, plain and gzip-filtered, some chunks never written) read equal to the
/// library's tables, one round trip per level.
#[test]
fn version_2_b_trees_of_several_levels_equal_the_library_s() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bt2.h5");
    {
        // No file locks: a test running beside this one may fork a process that would inherit
        // the descriptor, and its lock with it.
        let f = hdf5::File::with_options().with_fapl(|p| p.libver_latest().file_locking(false)).create(&path).unwrap();
        for (name, n, gzip) in [("plain", 100usize, false), ("gzip", 100, true), ("deep", 400, false)] {
            let b = f.new_dataset::<u8>().shape([hdf5::Extent::resizable(n - 1), hdf5::Extent::resizable(2 * n)]).chunk([1, 1]);
            let b = if gzip { b.deflate(1) } else { b };
            let d = b.create(name).unwrap();
            let data: Vec<u8> = (0..(n - 1) * 2 * n).map(|i| (i % 251) as u8 + 1).collect();
            d.write_raw(&data).unwrap();
            // Then one more row, whose chunks are never written.
            d.resize([n, 2 * n]).unwrap();
        }
    }
    let file = hdf5::File::with_options().with_fapl(|p| p.file_locking(false)).open(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for (name, depth) in [("plain", 2), ("gzip", 2), ("deep", 3)] {
        let d = file.dataset(name).unwrap();
        let (grid, header) = grid_and_header(&d, name);
        let want = chunks::build(d.id(), &grid, name).unwrap();
        let src = Arc::new(Rounds { bytes: bytes.clone(), fetched: Default::default(), rounds: Default::default() });
        let data = DataFile::new(src.clone());
        let r = Reader { data: &data, sizes: Sizes { addr: 8, size: 8 }, path: name };
        let layout = r.layout_message(header).unwrap();
        let header_rounds = src.rounds.swap(0, std::sync::atomic::Ordering::Relaxed);
        // Depth: two bytes at 12 of the tree's header, whose address ends the layout.
        let tree = le(&layout, layout.len() - 8, 8).unwrap();
        let levels = r.read(tree, 14).map(|h| le(&h, 12, 2).unwrap() as usize + 1).unwrap();
        assert_eq!(levels, depth + 1, "{name}: the tree's depth");
        src.rounds.store(0, std::sync::atomic::Ordering::Relaxed);
        let got = read(&data, Sizes { addr: 8, size: 8 }, header, &grid, name).expect("read directly");
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(want.len() as u64 > grid.num_chunks() / 2 && (want.len() as u64) < grid.num_chunks(), "{name}: some chunks unwritten");
        for (i, loc) in &got {
            assert_eq!(want.get(*i), Some(*loc), "{name}: chunk {i}");
        }
        // The object header, the tree's header, then one round trip per level.
        let rounds = src.rounds.load(std::sync::atomic::Ordering::Relaxed) - header_rounds;
        assert_eq!(rounds, 1 + levels, "{name}: {rounds} round trips for a tree of {levels} levels");
    }
}

/// Extensible arrays of datasets of rank 2 and 3 (one dimension unlimited: the first, a later
/// one, one whose other dimension may grow too; plain and gzip-filtered; some chunks never
/// written): every element read through annfs equal to the library's reading of the dataset,
/// and the tables equal to the library's where it lists them right. (With a later dimension
/// unlimited, HDF5 2.0's chunk iteration reports entry order as chunk offsets — h5py's
/// `get_chunk_info` says the same: offsets past the extent —, so a table built from it is
/// refused and such a dataset could not be read before annfs read the array itself.)
#[test]
fn extensible_arrays_of_higher_rank_equal_the_library_s() {
    use hdf5::Extent;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ea.h5");
    // Name, extents as created, chunk shape, shape after growing, gzip.
    type Case = (&'static str, Vec<Extent>, Vec<usize>, Vec<usize>, bool);
    let cases: Vec<Case> = vec![
        ("first", vec![Extent::resizable(30), Extent::fixed(20)], vec![3, 4], vec![40, 20], false),
        ("later", vec![Extent::fixed(20), Extent::resizable(30)], vec![4, 3], vec![20, 41], true),
        ("growable", vec![Extent::resizable(30), Extent::new(18, Some(40))], vec![3, 4], vec![35, 18], false),
        ("cube", vec![Extent::fixed(6), Extent::resizable(5), Extent::fixed(7)], vec![2, 2, 3], vec![6, 9, 7], true),
    ];
    {
        // No file locks (see the version-2 B-tree test).
        let f = hdf5::File::with_options().with_fapl(|p| p.libver_latest().file_locking(false)).create(&path).unwrap();
        for (name, shape, chunk, grown, gzip) in &cases {
            let b = f.new_dataset::<u16>().shape(shape.clone()).chunk(chunk.clone());
            let b = if *gzip { b.deflate(1) } else { b };
            let d = b.create(*name).unwrap();
            let n: usize = shape.iter().map(|e| e.dim).product();
            d.write_raw(&(0..n).map(|i| i as u16 + 1).collect::<Vec<_>>()).unwrap();
            d.resize(grown.clone()).unwrap();
        }
    }
    let file = hdf5::File::with_options().with_fapl(|p| p.file_locking(false)).open(&path).unwrap();
    let os = std::fs::File::open(&path).unwrap();
    let len = os.metadata().unwrap().len();
    let data = DataFile::local(os, len);
    for (name, ..) in &cases {
        let d = file.dataset(name).unwrap();
        let (grid, header) = grid_and_header(&d, name);
        let r = Reader { data: &data, sizes: Sizes { addr: 8, size: 8 }, path: name };
        let layout = r.layout_message(header).unwrap();
        let width = usize::from(layout[4]);
        assert!(matches!(layout[0], 4 | 5) && layout[5 + width * (grid.shape.len() + 1)] == EXTENSIBLE_ARRAY, "{name}: an extensible array");
        let got = read(&data, Sizes { addr: 8, size: 8 }, header, &grid, name).expect("read directly");
        assert!(!got.is_empty() && (got.len() as u64) < grid.num_chunks(), "{name}: some chunks unwritten");
        if ["first", "growable"].contains(name) {
            let want = chunks::build(d.id(), &grid, name).unwrap();
            assert_eq!(got.len(), want.len(), "{name}");
            for (i, loc) in &got {
                assert_eq!(want.get(*i), Some(*loc), "{name}: chunk {i}");
            }
        }
        let store = crate::storage::hdf5::open(&path).unwrap();
        let ours = crate::storage::hdf5::tests::read_all(crate::storage::hdf5::tests::array(&store, &format!("/{name}")));
        let theirs: Vec<u8> = d.read_raw::<u16>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(ours, theirs, "{name}: elements");
    }
}
