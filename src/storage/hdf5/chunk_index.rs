//! The chunk table of a chunked dataset read from the file itself, without the HDF5 library —
//! so without its global lock, which must not be held across the network reads of a remote
//! file. The dataset's object header (version 1 or 2, with continuation blocks) holds the data
//! layout message; a version-3 chunked layout names the root of a version-1 B-tree whose leaves
//! list every allocated chunk: stored size, filter mask, offset and address (HDF5 file format
//! specification, "Data Layout Message" and "Version 1 B-trees"). A version-4 layout (files
//! written with `libver="latest"`; version 5, from HDF5 2.0, alike) names a single chunk, a
//! fixed array of chunk addresses ([`super::fixed_array`]), for a dataset resizable in one
//! dimension an extensible array ([`super::extensible_array`]), for one resizable in more a
//! version-2 B-tree ([`super::btree2`]), or, for one allocated whole at creation, an implicit
//! index (chunks one after another). Anything else — an unexpected byte, a count that does not
//! add up — answers `None`, and the caller asks the library, as before. Every read is bounded
//! by the file's size and by counts checked against the grid.

use std::collections::{HashMap, HashSet};

use super::chunks::ChunkLoc;
use super::file::DataFile;
use super::btree::undefined_addr;
use super::{btree2, extensible_array, fixed_array};
use super::gheap::{le_uint, Sizes};
use crate::storage::ChunkGrid;

/// Header blocks followed at most (the first plus continuations).
const MAX_BLOCKS: usize = 64;
/// Largest header block read.
const MAX_BLOCK_BYTES: u64 = 1 << 20;
/// Message types of the dataspace, of the data layout and of a header continuation.
const DATASPACE: u16 = 0x0001;
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
    #[cfg(test)]
    fn layout_message(&self, header: u64) -> Option<Vec<u8>> {
        let [layout] = self.messages(header, [LAYOUT])?;
        layout
    }

    /// The data of the first message of each type in `want` in the object header at `header`,
    /// in one scan of the header (it stops once all are found); `None` when the header cannot
    /// be read or does not add up.
    pub(super) fn messages<const N: usize>(&self, header: u64, want: [u16; N]) -> Option<[Option<Vec<u8>>; N]> {
        let mut found: [Option<Vec<u8>>; N] = std::array::from_fn(|_| None);
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
                if kind == CONTINUATION {
                    blocks.push((le(body, 0, a)?, le(body, a, s)?));
                } else if let Some(k) = want.iter().position(|&w| w == kind) {
                    if found[k].is_none() {
                        found[k] = Some(body.to_vec());
                        if found.iter().all(Option::is_some) {
                            return Some(found);
                        }
                    }
                }
                pos = data_at + size;
                if !v2 {
                    pos = pos.next_multiple_of(8);
                }
            }
        }
        Some(found)
    }
}

/// The chunk table of the dataset whose object header is at `header`, read without the library;
/// `None` when its layout is neither a version-3 chunked layout with a version-1 B-tree nor a
/// version-4 one with a single chunk, an implicit index, a fixed array, an extensible array or
/// a version-2 B-tree, or when anything read does not add up (the library
/// then reads it, as before).
pub fn read(data: &DataFile, sizes: Sizes, header: u64, grid: &ChunkGrid, path: &str) -> Option<HashMap<u64, ChunkLoc>> {
    let r = Reader { data, sizes, path };
    let [layout, space] = r.messages(header, [LAYOUT, DATASPACE])?;
    let layout = layout?;
    match layout.first() {
        Some(3) => version3(&r, &layout, grid),
        // Version 5 (HDF5 2.0) has version 4's layout; only its filtered chunks' sizes are
        // always 8 bytes wide, which the fixed array's entry size tells.
        Some(4 | 5) => version4(&r, &layout, space.as_deref(), grid),
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
const IMPLICIT: u8 = 2;
const FIXED_ARRAY: u8 = 3;
const EXTENSIBLE_ARRAY: u8 = 4;
const BTREE2: u8 = 5;
/// Version-4 layout flags: edge chunks stored unfiltered; a filtered single chunk.
const DONT_FILTER_PARTIAL_BOUND_CHUNKS: u8 = 0x01;
const SINGLE_INDEX_WITH_FILTER: u8 = 0x02;

/// A version-4 (or 5) layout: class 2 (chunked), flags, dimensionality (rank + 1), the byte
/// width of the dimension sizes, the chunk dims and element size, the indexing type, its
/// parameters and the index's address; `space` is the dataset's dataspace message.
fn version4(r: &Reader, layout: &[u8], space: Option<&[u8]>, grid: &ChunkGrid) -> Option<HashMap<u64, ChunkLoc>> {
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
        EXTENSIBLE_ARRAY => extensible_array::read(r, le(layout, at + 6, a)?, space, grid, chunk_bytes),
        // Node size, split and merge percents (repeated in the tree's header), then its address.
        BTREE2 => btree2::read(r, le(layout, at + 7, a)?, grid, chunk_bytes),
        IMPLICIT => implicit(r, le(layout, at + 1, a)?, grid, chunk_bytes),
        _ => None,
    }
}

/// An implicit index (a dataset of fixed size whose chunks were all allocated when it was
/// created, unfiltered): chunk `i`, in row-major chunk order, is the `chunk_bytes` bytes at
/// `base + i * chunk_bytes`.
fn implicit(r: &Reader, base: u64, grid: &ChunkGrid, chunk_bytes: u64) -> Option<HashMap<u64, ChunkLoc>> {
    if base == undefined_addr(r.sizes.addr) {
        return Some(HashMap::new());
    }
    let n = grid.num_chunks();
    if base.checked_add(n.checked_mul(chunk_bytes)?)? > r.data.len() {
        return None;
    }
    Some((0..n).map(|i| (i, ChunkLoc { addr: base + i * chunk_bytes, size: chunk_bytes, mask: 0 })).collect())
}

/// The entries of a fixed or extensible array of chunk addresses (their client id says which
/// kind): a chunk's address, and for filtered chunks its stored size (1 to 8 bytes wide: its
/// width is what the entry size leaves) and filter mask.
pub(super) struct Entries {
    addr: usize,
    /// Bytes per entry.
    pub(super) size: usize,
    /// Bytes of a filtered entry's stored size (0: plain chunks).
    size_width: usize,
    /// Stored size of a plain chunk.
    chunk_bytes: u64,
}

impl Entries {
    /// The format of client id `client` (0: plain chunks, 1: filtered) with entries of `size`
    /// bytes; `None` when they do not fit together.
    pub(super) fn new(client: u8, size: usize, addr: usize, chunk_bytes: u64) -> Option<Entries> {
        let size_width = match client {
            0 if size == addr => 0,
            1 => size.checked_sub(addr + 4).filter(|w| (1..=8).contains(w))?,
            _ => return None,
        };
        Some(Entries { addr, size, size_width, chunk_bytes })
    }

    /// Adds the entries in `bytes` (entry `first` onwards) to `table`; undefined addresses are
    /// chunks never written.
    pub(super) fn add(&self, first: u64, bytes: &[u8], table: &mut HashMap<u64, ChunkLoc>) -> Option<()> {
        let a = self.addr;
        for (i, e) in bytes.chunks_exact(self.size).enumerate() {
            let addr = le(e, 0, a)?;
            if addr == undefined_addr(a) {
                continue;
            }
            let (size, mask) = match self.size_width {
                0 => (self.chunk_bytes, 0),
                w => (le(e, a, w)?, le(e, a + w, 4)? as u32),
            };
            table.insert(first + i as u64, ChunkLoc { addr, size, mask });
        }
        Some(())
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
#[path = "chunk_index_tests.rs"]
mod tests;
