//! The version-2 B-tree chunk index HDF5 writes for a chunked dataset resizable in more than one
//! dimension in a file made with `libver="latest"` (HDF5 file format specification, "Version 2
//! B-tree Header", "Internal Node", "Leaf Node", record types 10 and 11): a header (`BTHD`)
//! names the root; internal nodes (`BTIN`) and leaves (`BTLF`) all hold chunk records — a
//! chunk's address, for filtered chunks its stored size and filter mask, and its scaled offset
//! (chunk coordinate) per dimension. An internal node's child pointers carry their record
//! counts in fields as wide as the tree's geometry makes them, computed here as the library
//! does (`H5B2__hdr_init`). Read level by level, each level's nodes fetched at once, every
//! count checked against the node size, the grid and the header's total.

use std::collections::{HashMap, HashSet};

use super::btree::undefined_addr;
use super::chunk_index::{le, Reader};
use super::chunks::ChunkLoc;
use crate::storage::ChunkGrid;

/// Record types: chunks of a dataset without filters, and with.
const PLAIN_CHUNKS: u8 = 10;
const FILTERED_CHUNKS: u8 = 11;
/// Signature, version and type before a node's records; the checksum after them.
const PREFIX: usize = 6;
const CHECKSUM: usize = 4;
/// Largest node read (HDF5 writes 2,048 bytes for chunk indexes).
const MAX_NODE: u64 = 1 << 20;
/// Deepest tree accepted (a tree of chunk records this deep would hold more chunks than a
/// grid can have).
const MAX_DEPTH: usize = 16;

/// Bytes the library uses to store a count of at most `n` (`H5VM_limit_enc_size`).
fn enc_size(n: u64) -> usize {
    (n.checked_ilog2().unwrap_or(0) / 8 + 1) as usize
}

/// Where the fields of a node at each depth are, from the header's node and record sizes.
struct Geometry {
    node: usize,
    addr: usize,
    /// Bytes of a child pointer's record count (the same at every depth).
    count: usize,
    /// Bytes of a child pointer's total-records field, per depth of the child (0 for leaves).
    total: Vec<usize>,
}

impl Geometry {
    fn new(node: usize, record: usize, addr: usize, depth: usize) -> Option<Geometry> {
        let leaf_max = node.checked_sub(PREFIX + CHECKSUM)? / record;
        if leaf_max == 0 {
            return None;
        }
        let count = enc_size(leaf_max as u64);
        let (mut total, mut cum) = (vec![0usize], leaf_max as u64);
        for d in 1..=depth {
            let pointer = addr + count + if d > 1 { total[d - 1] } else { 0 };
            let max = node.checked_sub(PREFIX + CHECKSUM + pointer)? / (record + pointer);
            cum = (max as u64 + 1).checked_mul(cum)?.checked_add(max as u64)?;
            total.push(enc_size(cum));
        }
        Some(Geometry { node, addr, count, total })
    }

    /// Bytes of one child pointer in a node at `depth` (≥ 1).
    fn pointer(&self, depth: usize) -> usize {
        self.addr + self.count + if depth > 1 { self.total[depth - 1] } else { 0 }
    }
}

/// The chunk table of the version-2 B-tree whose header is at `header`, for chunks of
/// `chunk_bytes` bytes before filtering. `None` when anything does not add up.
pub(super) fn read(r: &Reader, header: u64, grid: &ChunkGrid, chunk_bytes: u64) -> Option<HashMap<u64, ChunkLoc>> {
    let (a, s) = (r.sizes.addr, r.sizes.size);
    if header == undefined_addr(a) {
        return Some(HashMap::new());
    }
    // Signature, version, type, node size, record size, depth, split and merge percents, root
    // address, records in the root, records in the tree, checksum.
    let h = r.read(header, (16 + a + 2 + s + CHECKSUM) as u64)?;
    if !h.starts_with(b"BTHD") || h.get(4) != Some(&0) {
        return None;
    }
    let kind = *h.get(5)?;
    let (node, record, depth) = (le(&h, 6, 4)?, le(&h, 10, 2)? as usize, le(&h, 12, 2)? as usize);
    let (root, root_records, total) = (le(&h, 16, a)?, le(&h, 16 + a, 2)?, le(&h, 18 + a, s)?);
    let rank = grid.shape.len();
    let size_width = match kind {
        PLAIN_CHUNKS if record == a + 8 * rank => 0,
        FILTERED_CHUNKS => record.checked_sub(a + 4 + 8 * rank).filter(|w| (1..=8).contains(w))?,
        _ => return None,
    };
    if node > MAX_NODE || depth > MAX_DEPTH || total > grid.num_chunks() {
        return None;
    }
    let geo = Geometry::new(node as usize, record, a, depth)?;
    let mut table = HashMap::new();
    if root == undefined_addr(a) {
        return (total == 0).then_some(table);
    }
    let per_dim = grid.chunks_per_dim();
    let max_nodes = grid.num_chunks().saturating_mul(2).saturating_add(2);
    let mut seen = HashSet::new();
    // (address, records, depth) of every node of a level; the next level's from their pointers.
    let mut level = vec![(root, root_records as usize, depth)];
    while !level.is_empty() {
        let ranges: Vec<(u64, u64)> = level.iter().map(|&(at, ..)| (at, node.min(r.data.len().saturating_sub(at)))).collect();
        if ranges.len() > 1 {
            r.data.prefetch_exact(&ranges);
        }
        let mut next = Vec::new();
        for (at, records, d) in level {
            if !seen.insert(at) || seen.len() as u64 > max_nodes {
                return None;
            }
            let n = r.read(at, node.min(r.data.len().saturating_sub(at)))?;
            let sig: &[u8] = if d > 0 { b"BTIN" } else { b"BTLF" };
            let pointers = if d > 0 { (records + 1).checked_mul(geo.pointer(d))? } else { 0 };
            let end = PREFIX + records.checked_mul(record)?;
            if !n.starts_with(sig) || n.get(4) != Some(&0) || n.get(5) != Some(&kind) || end + pointers + CHECKSUM > geo.node.min(n.len()) {
                return None;
            }
            for rec in n.get(PREFIX..end)?.chunks_exact(record) {
                let addr = le(rec, 0, a)?;
                let (size, mask, coords) = match size_width {
                    0 => (chunk_bytes, 0, a),
                    w => (le(rec, a, w)?, le(rec, a + w, 4)? as u32, a + w + 4),
                };
                let mut index = 0u64;
                for (k, &per) in per_dim.iter().enumerate() {
                    let c = le(rec, coords + 8 * k, 8)?;
                    if c >= per {
                        return None;
                    }
                    index = index.checked_mul(per)?.checked_add(c)?;
                }
                if addr == undefined_addr(a) || table.insert(index, ChunkLoc { addr, size, mask }).is_some() {
                    return None;
                }
            }
            let mut p = end;
            for _ in 0..if d > 0 { records + 1 } else { 0 } {
                let child = le(&n, p, a)?;
                let count = le(&n, p + a, geo.count)? as usize;
                next.push((child, count, d - 1));
                p += geo.pointer(d);
            }
            if next.len() as u64 > max_nodes {
                return None;
            }
        }
        level = next;
    }
    (table.len() as u64 == total).then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_widths_follow_the_library() {
        // 2,048-byte nodes of 24-byte records (plain chunks of a 2-D dataset): 84 records per
        // leaf, one byte for a child's count; a depth-2 tree's children of depth 1 count up
        // to 84 * (max + 1) + max records, which takes two bytes.
        let g = Geometry::new(2048, 24, 8, 2).unwrap();
        assert_eq!((g.count, g.total[0]), (1, 0));
        assert_eq!(g.pointer(1), 9);
        let max1 = (2048 - 10 - 9) / (24 + 9);
        let cum1 = (max1 as u64 + 1) * 84 + max1 as u64;
        assert_eq!(g.total[1], enc_size(cum1));
        assert_eq!(g.total[1], 2);
        assert_eq!(g.pointer(2), 8 + 1 + 2);
        assert_eq!(enc_size(255), 1);
        assert_eq!(enc_size(256), 2);
        assert!(Geometry::new(9, 24, 8, 0).is_none(), "a node too small for a record");
    }
}
