//! The chunk table of a chunked dataset read from the file itself, without the HDF5 library —
//! so without its global lock, which must not be held across the network reads of a remote
//! file. The dataset's object header (version 1 or 2, with continuation blocks) holds the data
//! layout message; a version-3 chunked layout names the root of a version-1 B-tree whose leaves
//! list every allocated chunk: stored size, filter mask, offset and address (HDF5 file format
//! specification, "Data Layout Message" and "Version 1 B-trees"). A version-4 layout (files
//! written with `libver="latest"`; version 5, from HDF5 2.0, alike) names a single chunk, a
//! fixed array of chunk addresses ([`super::fixed_array`]) or, for a one-dimensional dataset
//! created resizable, an extensible array ([`super::extensible_array`]). Anything else —
//! version-2 B-trees, implicit indexes, an unexpected byte — answers `None`, and the caller
//! asks the library, as before. Every read is bounded by the file's size and by counts checked
//! against the grid.

use std::collections::{HashMap, HashSet};

use super::chunks::ChunkLoc;
use super::file::DataFile;
use super::btree::undefined_addr;
use super::{extensible_array, fixed_array};
use super::gheap::{le_uint, Sizes};
use crate::storage::ChunkGrid;

/// Header blocks followed at most (the first plus continuations).
const MAX_BLOCKS: usize = 64;
/// Largest header block read.
const MAX_BLOCK_BYTES: u64 = 1 << 20;
/// Message type of the data layout message and of a header continuation.
const LAYOUT: u16 = 0x0008;
const CONTINUATION: u16 = 0x0010;

/// Little-endian unsigned integer of `n` (≤ 8) bytes at `at`, if `b` holds them.
pub(super) fn le(b: &[u8], at: usize, n: usize) -> Option<u64> {
    (n <= 8).then(|| b.get(at..at.checked_add(n)?).map(le_uint))?
}

/// Bounded reads of one dataset's metadata.
pub(super) struct Reader<'a> {
    pub(super) data: &'a DataFile,
    pub(super) sizes: Sizes,
    path: &'a str,
}

impl Reader<'_> {
    /// `len` bytes at `addr`, or `None` when they cannot be read.
    pub(super) fn read(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        self.data.read(addr, len, self.path, "chunk index").ok()
    }

    /// The data of the first layout message in the object header at `header`.
    fn layout_message(&self, header: u64) -> Option<Vec<u8>> {
        let (a, s) = (self.sizes.addr, self.sizes.size);
        let first = self.read(header, 16.min(self.data.len().saturating_sub(header)))?;
        // Blocks of messages to scan: (address, length, version 2 or not).
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        let v2 = first.starts_with(b"OHDR");
        let mut v2_creation_order = false;
        if v2 {
            let flags = *first.get(5)?;
            if first.get(4) != Some(&2) {
                return None;
            }
            v2_creation_order = flags & 0x04 != 0;
            let mut pos = 6usize;
            if flags & 0x20 != 0 {
                pos += 16;
            }
            if flags & 0x10 != 0 {
                pos += 4;
            }
            let width = 1usize << (flags & 3);
            let head = self.read(header, (pos + width) as u64)?;
            let size = le(&head, pos, width)?;
            blocks.push((header + (pos + width) as u64, size));
        } else {
            if first.first() != Some(&1) {
                return None;
            }
            let size = le(&first, 8, 4)?;
            blocks.push((header + 16, size));
        }
        let mut i = 0;
        while i < blocks.len() && i < MAX_BLOCKS {
            let (addr, len) = blocks[i];
            i += 1;
            if len > MAX_BLOCK_BYTES {
                return None;
            }
            let b = self.read(addr, len)?;
            let (mut pos, end) = if v2 && i > 1 {
                // A continuation block: "OCHK", messages, checksum.
                if !b.starts_with(b"OCHK") {
                    return None;
                }
                (4usize, b.len().checked_sub(4)?)
            } else {
                (0usize, b.len())
            };
            loop {
                let (kind, size, data_at) = if v2 {
                    if pos + 4 > end {
                        break;
                    }
                    let kind = u16::from(b[pos]);
                    let size = le(&b, pos + 1, 2)? as usize;
                    (kind, size, pos + 4 + if v2_creation_order { 2 } else { 0 })
                } else {
                    if pos + 8 > end {
                        break;
                    }
                    (le(&b, pos, 2)? as u16, le(&b, pos + 2, 2)? as usize, pos + 8)
                };
                let body = b.get(data_at..data_at.checked_add(size)?)?;
                if data_at + size > end {
                    return None;
                }
                match kind {
                    LAYOUT => return Some(body.to_vec()),
                    CONTINUATION => blocks.push((le(body, 0, a)?, le(body, a, s)?)),
                    _ => {}
                }
                pos = data_at + size;
                if !v2 {
                    pos = pos.next_multiple_of(8);
                }
            }
        }
        None
    }
}

/// The chunk table of the dataset whose object header is at `header`, read without the library;
/// `None` when its layout is neither a version-3 chunked layout with a version-1 B-tree nor a
/// version-4 one with a single chunk, a fixed array or a one-dimensional extensible array, or
/// when anything read does not add up (the library then reads it, as before).
pub fn read(data: &DataFile, sizes: Sizes, header: u64, grid: &ChunkGrid, path: &str) -> Option<HashMap<u64, ChunkLoc>> {
    let r = Reader { data, sizes, path };
    let layout = r.layout_message(header)?;
    match layout.first() {
        Some(3) => version3(&r, &layout, grid),
        // Version 5 (HDF5 2.0) has version 4's layout; only its filtered chunks' sizes are
        // always 8 bytes wide, which the fixed array's entry size tells.
        Some(4 | 5) => version4(&r, &layout, grid),
        _ => None,
    }
}

/// A version-3 layout: class 2 (chunked), dimensionality (rank + 1), B-tree address, chunk dims.
fn version3(r: &Reader, layout: &[u8], grid: &ChunkGrid) -> Option<HashMap<u64, ChunkLoc>> {
    let a = r.sizes.addr;
    if layout.get(1) != Some(&2) {
        return None;
    }
    let dims = usize::from(*layout.get(2)?);
    let rank = grid.shape.len();
    if dims != rank + 1 {
        return None;
    }
    for (d, c) in grid.chunk.iter().enumerate() {
        if le(layout, 3 + a + 4 * d, 4)? != *c {
            return None;
        }
    }
    let root = le(layout, 3, a)?;
    let mut table = HashMap::new();
    if root == undefined_addr(a) {
        return Some(table);
    }
    walk(r, root, dims, grid, &mut table)?;
    Some(table)
}

/// Chunk indexing types of a version-4 layout read here.
const SINGLE_CHUNK: u8 = 1;
const FIXED_ARRAY: u8 = 3;
const EXTENSIBLE_ARRAY: u8 = 4;
/// Version-4 layout flags: edge chunks stored unfiltered; a filtered single chunk.
const DONT_FILTER_PARTIAL_BOUND_CHUNKS: u8 = 0x01;
const SINGLE_INDEX_WITH_FILTER: u8 = 0x02;

/// A version-4 (or 5) layout: class 2 (chunked), flags, dimensionality (rank + 1), the byte
/// width of the dimension sizes, the chunk dims and element size, the indexing type, its
/// parameters and the index's address.
fn version4(r: &Reader, layout: &[u8], grid: &ChunkGrid) -> Option<HashMap<u64, ChunkLoc>> {
    let (a, s) = (r.sizes.addr, r.sizes.size);
    if layout.get(1) != Some(&2) {
        return None;
    }
    let flags = *layout.get(2)?;
    let dims = usize::from(*layout.get(3)?);
    let width = usize::from(*layout.get(4)?);
    // Edge chunks stored unfiltered carry no per-chunk mask saying so: left to the library.
    if dims != grid.shape.len() + 1 || !(1..=8).contains(&width) || flags & DONT_FILTER_PARTIAL_BOUND_CHUNKS != 0 {
        return None;
    }
    for (d, c) in grid.chunk.iter().enumerate() {
        if le(layout, 5 + width * d, width)? != *c {
            return None;
        }
    }
    let element = le(layout, 5 + width * (dims - 1), width)?;
    let chunk_bytes = grid.chunk.iter().try_fold(element, |n, &c| n.checked_mul(c))?;
    let at = 5 + width * dims;
    match *layout.get(at)? {
        SINGLE_CHUNK => {
            // One chunk covering the whole dataset.
            if grid.num_chunks() != 1 {
                return None;
            }
            let filtered = flags & SINGLE_INDEX_WITH_FILTER != 0;
            let (size, mask, at) = if filtered {
                (le(layout, at + 1, s)?, le(layout, at + 1 + s, 4)? as u32, at + 1 + s + 4)
            } else {
                (chunk_bytes, 0, at + 1)
            };
            let addr = le(layout, at, a)?;
            let mut table = HashMap::new();
            if addr != undefined_addr(a) {
                table.insert(0, ChunkLoc { addr, size, mask });
            }
            Some(table)
        }
        // Page bits, then the array's address.
        FIXED_ARRAY => fixed_array::read(r, le(layout, at + 2, a)?, grid, chunk_bytes),
        // Five parameters (repeated in the array's header), then its address.
        EXTENSIBLE_ARRAY => extensible_array::read(r, le(layout, at + 6, a)?, grid, chunk_bytes),
        _ => None,
    }
}

/// Collects the leaves of the version-1 B-tree at `root` into `table`.
fn walk(r: &Reader, root: u64, dims: usize, grid: &ChunkGrid, table: &mut HashMap<u64, ChunkLoc>) -> Option<()> {
    let a = r.sizes.addr;
    let key = 8 + 8 * dims;
    let head = 8 + 2 * a;
    let per_dim = grid.chunks_per_dim();
    let max_chunks = grid.num_chunks();
    // Bytes of a node with the default capacity (K = 32: 64 entries).
    let node = (head + 64 * (key + a) + key) as u64;
    let mut seen = HashSet::new();
    // Level by level: every node of a level is fetched at once (a remote file: in parallel),
    // so a tree costs one round trip per level, not one per internal node.
    let mut level: Vec<(u64, Option<u8>)> = vec![(root, None)];
    while !level.is_empty() {
        let ranges: Vec<(u64, u64)> = level.iter().map(|&(c, _)| (c, node.min(r.data.len().saturating_sub(c)))).collect();
        if ranges.len() > 1 {
            r.data.prefetch_exact(&ranges);
        }
        let mut next = Vec::new();
        for (addr, want_level) in level {
            // Every node holds at least one entry: a tree has fewer nodes than twice its chunks.
            if !seen.insert(addr) || seen.len() as u64 > max_chunks.saturating_mul(2).saturating_add(2) {
                return None;
            }
            // One read of a whole node of the default capacity (a bigger node, of a file
            // written with a larger K, is read again in full).
            let mut n = r.read(addr, node.min(r.data.len().saturating_sub(addr)))?;
            if n.len() < head || !n.starts_with(b"TREE") || n[4] != 1 {
                return None;
            }
            let depth = n[5];
            if want_level.is_some_and(|l| l != depth) {
                return None;
            }
            let used = le(&n, 6, 2)? as usize;
            let need = used.checked_mul(key + a)?.checked_add(key + head)?;
            if need > n.len() {
                n = r.read(addr, need as u64)?;
            }
            let body = n.get(head..need)?;
            for i in 0..used {
                let k = i * (key + a);
                let child = le(body, k + key, a)?;
                if depth > 0 {
                    if next.len() as u64 > max_chunks.saturating_mul(2) {
                        return None;
                    }
                    next.push((child, Some(depth - 1)));
                    continue;
                }
                let size = le(body, k, 4)?;
                let mask = le(body, k + 4, 4)? as u32;
                // Offsets of the chunk in elements, one per dimension, then 0 for the element size.
                if le(body, k + 8 + 8 * (dims - 1), 8)? != 0 {
                    return None;
                }
                let mut index = 0u64;
                for (d, (&c, &per)) in grid.chunk.iter().zip(&per_dim).enumerate() {
                    let off = le(body, k + 8 + 8 * d, 8)?;
                    if c == 0 || off % c != 0 || off / c >= per {
                        return None;
                    }
                    index = index.checked_mul(per)?.checked_add(off / c)?;
                }
                if table.insert(index, ChunkLoc { addr: child, size, mask }).is_some() || table.len() as u64 > max_chunks {
                    return None;
                }
            }
        }
        level = next;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::hdf5::chunks;
    use crate::storage::hdf5::ffi::Hid;
    use crate::storage::hdf5::source::header_address;
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
                let grid = ChunkGrid::new(d.shape().iter().map(|&n| n as u64).collect(), d.chunk().unwrap().iter().map(|&n| n as u64).collect());
                let id = d.id();
                // SAFETY: the handle takes its own reference to the open dataset.
                unsafe { hdf5_sys::h5i::H5Iinc_ref(id) };
                let hid = Hid::new(id, &name).unwrap();
                let header = header_address(&hid).expect("object header address");
                let want = chunks::build(id, &grid, &name).unwrap();
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
        // latest.h5 (libver="latest") holds every version-4 index: single chunks, fixed arrays
        // and one-dimensional extensible arrays (plain, filtered, paged, with blocks and pages
        // never written) are read directly; version-2 B-trees and implicit indexes by the
        // library.
        latest.sort();
        let want: Vec<(String, bool)> = [
            ("/btree2", false), ("/ext_gzip", true), ("/ext_sparse", true), ("/extensible", true), ("/fixed_array", true), ("/fixed_paged", true),
            ("/fixed_paged_gzip", true), ("/fixed_plain", true), ("/implicit", false), ("/single", true),
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
                let grid = ChunkGrid::new(d.shape().iter().map(|&n| n as u64).collect(), d.chunk().unwrap().iter().map(|&n| n as u64).collect());
                // SAFETY: the handle takes its own reference to the open dataset.
                unsafe { hdf5_sys::h5i::H5Iinc_ref(d.id()) };
                let header = header_address(&Hid::new(d.id(), &name).unwrap()).unwrap();
                (name, header, grid)
            })
            .collect();
        let pristine = std::fs::read(&path).unwrap();
        // Damage lands in the first 256 bytes of an object header or index structure.
        let starts: Vec<usize> = pristine
            .windows(4)
            .enumerate()
            .filter(|(_, w)| [b"OHDR", b"FAHD", b"FADB", b"EAHD", b"EAIB", b"EASB", b"EADB", b"TREE"].iter().any(|s| s == w))
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
        {
            let f = hdf5::File::create(&path).unwrap();
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            f.new_dataset::<u8>().shape(n).chunk(1).create("x").unwrap().write_raw(&data).unwrap();
        }
        let file = hdf5::File::open(&path).unwrap();
        let d = file.dataset("x").unwrap();
        // SAFETY: the handle takes its own reference to the open dataset.
        unsafe { hdf5_sys::h5i::H5Iinc_ref(d.id()) };
        let header = header_address(&Hid::new(d.id(), "/x").unwrap()).unwrap();
        let grid = ChunkGrid::new(vec![n as u64], vec![1]);
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
}
