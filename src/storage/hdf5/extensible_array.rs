//! The extensible-array chunk index HDF5 writes for a chunked dataset with one unlimited
//! dimension in a file made with `libver="latest"` — anndata's sparse `data` and `indices`,
//! created resizable (HDF5 file format specification, "Extensible Array Header" and the index,
//! super and data blocks it names).
//!
//! Entry `i` (one per chunk) lives in the index block for the first few; beyond them, entries
//! are grouped into super blocks `u = 0, 1, …` of `2^(u/2)` data blocks of `2^((u+1)/2) · min`
//! entries each. The index block lists the data blocks of the first super blocks and the
//! addresses of the others; a super block lists its data blocks, and, when they are larger than
//! a page, a bitmap of the pages ever written. Each level is fetched at once (a remote file: in
//! parallel). In a dataset of higher rank, entries follow the chunks in row-major order with the
//! unlimited dimension moved first and the others counted to their maximum sizes (the
//! library's "swizzled" order, `H5D__earray_idx_init`): [`Order`] maps them back to the grid.

use std::collections::HashMap;

use super::btree::undefined_addr;
use super::chunk_index::{le, Entries, Reader};
use super::chunks::ChunkLoc;
use crate::storage::ChunkGrid;

/// Signature, version, client id and checksum of every block.
const PREFIX: u64 = 10;
/// Checksum bytes.
const CHECKSUM: u64 = 4;

/// What the header fixes for the whole array.
struct Params {
    /// The entries' format (and size).
    format: Entries,
    /// Bytes of a block's offset field.
    offset_width: u64,
    /// Entries in the index block.
    index_entries: u64,
    /// Entries per data block page.
    page_entries: u64,
}

/// One data block to read: its address and the entry index of its first entry, its entry
/// count, and, for a paged block, which pages were written.
struct DataBlock {
    addr: u64,
    first: u64,
    entries: u64,
    pages: Option<Vec<bool>>,
}

/// The chunk table of the extensible array whose header is at `header`, for a dataset with
/// dataspace message `space` (needed for rank ≥ 2: its maximum dims give the entry order) and
/// chunks of `chunk_bytes` bytes before filtering. `None` when anything does not add up.
pub(super) fn read(r: &Reader, header: u64, space: Option<&[u8]>, grid: &ChunkGrid, chunk_bytes: u64) -> Option<HashMap<u64, ChunkLoc>> {
    if grid.shape.len() == 1 {
        return entries(r, header, grid.num_chunks(), chunk_bytes);
    }
    let order = Order::new(&max_dims(space?, r.sizes.size, grid.shape.len())?, grid, r.sizes.size)?;
    order.to_grid(entries(r, header, order.entries, chunk_bytes)?)
}

/// The maximum dims in a dataspace message of rank `rank` (version 1 or 2), if it has them.
fn max_dims(msg: &[u8], s: usize, rank: usize) -> Option<Vec<u64>> {
    let (dims, flags) = (usize::from(*msg.get(1)?), *msg.get(2)?);
    let at = match msg.first()? {
        1 => 8,
        2 => 4,
        _ => return None,
    };
    if dims != rank || flags & 1 == 0 {
        return None;
    }
    (0..rank).map(|d| le(msg, at + (rank + d) * s, s)).collect()
}

/// Where the entries of an extensible array of rank ≥ 2 lie in the chunk grid.
struct Order {
    /// Dimensions in entry order: the unlimited one, then the others in order.
    dims: Vec<usize>,
    /// Entries per step of each of `dims` (the product of the later ones' maximum chunk counts).
    down: Vec<u64>,
    /// Entries that cover the grid.
    entries: u64,
    /// Chunks of the grid along each dimension.
    per_dim: Vec<u64>,
}

impl Order {
    /// The order for a dataset with maximum dims `max` (one unlimited: all ones) and chunk grid
    /// `grid`, sizes `s` bytes wide.
    fn new(max: &[u64], grid: &ChunkGrid, s: usize) -> Option<Order> {
        let unlimited = if s >= 8 { u64::MAX } else { (1u64 << (8 * s)) - 1 };
        let mut open = (0..max.len()).filter(|&d| max[d] == unlimited);
        let (u, None) = (open.next()?, open.next()) else { return None };
        let per_dim = grid.chunks_per_dim();
        let dims: Vec<usize> = std::iter::once(u).chain((0..max.len()).filter(|&d| d != u)).collect();
        let mut down = vec![1u64; dims.len()];
        for k in (0..dims.len() - 1).rev() {
            let d = dims[k + 1];
            let most = max[d].div_ceil(*grid.chunk.get(d).filter(|&&c| c > 0)?);
            if most < per_dim[d] {
                return None;
            }
            down[k] = down[k + 1].checked_mul(most)?;
        }
        let entries = per_dim[u].checked_mul(down[0])?;
        // Entries for chunks far outside the grid (other dims that may grow a lot) are left to
        // the library rather than walked.
        if entries > grid.num_chunks().saturating_mul(16).max(1 << 12) {
            return None;
        }
        Some(Order { dims, down, entries, per_dim })
    }

    /// `table` (by entry) keyed by chunk index; `None` when an entry lies outside the grid.
    fn to_grid(&self, table: HashMap<u64, ChunkLoc>) -> Option<HashMap<u64, ChunkLoc>> {
        let mut coords = vec![0u64; self.dims.len()];
        let mut out = HashMap::with_capacity(table.len());
        for (e, loc) in table {
            let mut rest = e;
            for (k, &d) in self.dims.iter().enumerate() {
                coords[d] = rest / self.down[k];
                rest %= self.down[k];
                if coords[d] >= self.per_dim[d] {
                    return None;
                }
            }
            let index = coords.iter().zip(&self.per_dim).fold(0u64, |i, (&c, &n)| i * n + c);
            out.insert(index, loc);
        }
        Some(out)
    }
}

/// The first `n` entries of the extensible array whose header is at `header`, by entry index.
fn entries(r: &Reader, header: u64, n: u64, chunk_bytes: u64) -> Option<HashMap<u64, ChunkLoc>> {
    let (a, s) = (r.sizes.addr, r.sizes.size);
    if header == undefined_addr(a) {
        return Some(HashMap::new());
    }
    let h = r.read(header, 12 + 6 * s as u64 + a as u64 + CHECKSUM)?;
    if !h.starts_with(b"EAHD") || h.get(4) != Some(&0) {
        return None;
    }
    let client = *h.get(5)?;
    let [entry, max_bits, index_entries, min_entries, min_pointers, page_bits] = *h.get(6..12)? else { return None };
    let entry = usize::from(entry);
    let format = Entries::new(client, entry, a, chunk_bytes)?;
    let (min_entries, min_pointers) = (u64::from(min_entries), u64::from(min_pointers));
    if !min_entries.is_power_of_two() || !min_pointers.is_power_of_two() || min_pointers < 2 || max_bits > 64
        || page_bits >= 64 || u32::from(max_bits) < min_entries.ilog2()
    {
        return None;
    }
    let index_block = le(&h, 12 + 6 * s, a)?;
    let p = Params {
        format,
        offset_width: u64::from(max_bits).div_ceil(8),
        index_entries: u64::from(index_entries),
        page_entries: 1 << page_bits,
    };
    let mut table = HashMap::new();
    if index_block == undefined_addr(a) || n == 0 {
        return Some(table);
    }
    // Super blocks: those whose data blocks the index block lists, and all of them.
    let super_blocks = 1 + u64::from(max_bits) - min_entries.ilog2() as u64;
    let in_index = (2 * min_pointers.ilog2() as u64).min(super_blocks);
    let index_dblocks = 2 * (min_pointers - 1);
    let index_sblocks = super_blocks - in_index;
    let ib_len = PREFIX + a as u64 + p.index_entries * entry as u64 + (index_dblocks + index_sblocks) * a as u64;
    if ib_len > r.data.len() {
        return None;
    }
    let ib = r.read(index_block, ib_len)?;
    if !ib.starts_with(b"EAIB") || ib.get(4) != Some(&0) || ib.get(5) != Some(&client) || le(&ib, 6, a)? != header {
        return None;
    }
    let mut at = 6 + a;
    let direct = (p.index_entries.min(n) as usize).checked_mul(entry)?;
    p.format.add(0, ib.get(at..at + direct)?, &mut table)?;
    at += p.index_entries as usize * entry;
    let addrs = |from: usize, count: u64| -> Option<Vec<u64>> { (0..count as usize).map(|i| le(&ib, from + i * a, a)).collect() };
    let dblock_addrs = addrs(at, index_dblocks)?;
    let sblock_addrs = addrs(at + index_dblocks as usize * a, index_sblocks)?;

    // Walk the super blocks in order, collecting the data blocks to read.
    let (mut start, mut dblock) = (p.index_entries, 0u64);
    let mut blocks = Vec::new();
    let mut supers = Vec::new();
    for u in 0..super_blocks {
        if start >= n {
            break;
        }
        let count = 1u64 << (u / 2);
        let entries = (1u64 << u.div_ceil(2).min(63)).checked_mul(min_entries)?;
        if u < in_index {
            for j in 0..count {
                let addr = *dblock_addrs.get((dblock + j) as usize)?;
                let first = start.checked_add(j.checked_mul(entries)?)?;
                if addr != undefined_addr(a) && first < n {
                    blocks.push(DataBlock { addr, first, entries, pages: None });
                }
            }
        } else {
            let addr = *sblock_addrs.get((u - in_index) as usize)?;
            if addr != undefined_addr(a) {
                supers.push((addr, start, count, entries));
            }
        }
        start = start.checked_add(count.checked_mul(entries)?)?;
        dblock += count;
    }
    // Every super block at once, then every data block at once.
    r.data.prefetch_exact(&supers.iter().filter_map(|&(addr, _, c, e)| Some((addr, super_len(&p, a, c, e)?))).collect::<Vec<_>>());
    for (addr, first, count, entries) in supers {
        blocks.extend(super_block(r, &p, header, client, addr, first, count, entries, n)?);
    }
    let ranges: Vec<(u64, u64)> = blocks.iter().map(|b| Some((b.addr, data_len(&p, a, b, n)?))).collect::<Option<_>>()?;
    r.data.prefetch_exact(&ranges);
    for (b, &(_, len)) in blocks.iter().zip(&ranges) {
        data_block(r, &p, header, client, b, len, n, &mut table)?;
    }
    Some(table)
}

/// The data blocks of the super block at `addr`, whose first entry is entry `first`.
#[allow(clippy::too_many_arguments)]
fn super_block(r: &Reader, p: &Params, header: u64, client: u8, addr: u64, first: u64, count: u64, entries: u64, n: u64) -> Option<Vec<DataBlock>> {
    let a = r.sizes.addr;
    let pages = if entries > p.page_entries { entries / p.page_entries } else { 0 };
    let bitmap = pages.div_ceil(8);
    let len = super_len(p, a, count, entries)?;
    if len > r.data.len() {
        return None;
    }
    let b = r.read(addr, len)?;
    if !b.starts_with(b"EASB") || b.get(4) != Some(&0) || b.get(5) != Some(&client) || le(&b, 6, a)? != header {
        return None;
    }
    let at = 6 + a + p.offset_width as usize;
    let written = b.get(at..at + (count * bitmap) as usize)?;
    let addrs = at + (count * bitmap) as usize;
    let mut out = Vec::new();
    for j in 0..count {
        let dblock = le(&b, addrs + j as usize * a, a)?;
        let start = first.checked_add(j.checked_mul(entries)?)?;
        if dblock == undefined_addr(a) || start >= n {
            continue;
        }
        // The library numbers page bits across the super block's data blocks, most
        // significant bit first.
        let paged = (pages > 0).then(|| {
            (0..pages).map(|k| {
                let bit = j * pages + k;
                written.get((bit / 8) as usize).is_some_and(|byte| byte & (0x80 >> (bit % 8)) != 0)
            }).collect()
        });
        out.push(DataBlock { addr: dblock, first: start, entries, pages: paged });
    }
    Some(out)
}

/// Bytes of a super block of `count` data blocks of `entries` entries each: prefix, page
/// bitmaps (when its data blocks are paged), data block addresses, checksum.
fn super_len(p: &Params, a: usize, count: u64, entries: u64) -> Option<u64> {
    let pages = if entries > p.page_entries { entries / p.page_entries } else { 0 };
    let per_block = pages.div_ceil(8).checked_add(a as u64)?;
    (PREFIX + a as u64 + p.offset_width).checked_add(count.checked_mul(per_block)?)
}

/// Bytes of data block `b` worth reading: its prefix and the entries below `n` (with the
/// checksums of the pages holding them).
fn data_len(p: &Params, a: usize, b: &DataBlock, n: u64) -> Option<u64> {
    let used = b.entries.min(n - b.first);
    let prefix = PREFIX - CHECKSUM + a as u64 + p.offset_width;
    match b.pages {
        None => prefix.checked_add(used.checked_mul(p.format.size as u64)?),
        Some(_) => {
            let page = p.page_entries.checked_mul(p.format.size as u64)?.checked_add(CHECKSUM)?;
            (prefix + CHECKSUM).checked_add(used.div_ceil(p.page_entries).checked_mul(page)?)
        }
    }
}

/// Adds the entries of data block `b` (`len` bytes read from its start) below `n` to `table`.
#[allow(clippy::too_many_arguments)]
fn data_block(r: &Reader, p: &Params, header: u64, client: u8, b: &DataBlock, len: u64, n: u64, table: &mut HashMap<u64, ChunkLoc>) -> Option<()> {
    let a = r.sizes.addr;
    if len > r.data.len() {
        return None;
    }
    let bytes = r.read(b.addr, len)?;
    if !bytes.starts_with(b"EADB") || bytes.get(4) != Some(&0) || bytes.get(5) != Some(&client) || le(&bytes, 6, a)? != header {
        return None;
    }
    // (The block's offset field is not checked: the library writes the data blocks listed in
    // the index block with offsets counted from a different origin.)
    let body = 6 + a + p.offset_width as usize;
    let used = b.entries.min(n - b.first);
    match &b.pages {
        None => p.format.add(b.first, bytes.get(body..body + (used as usize).checked_mul(p.format.size)?)?, table),
        Some(written) => {
            let page_bytes = (p.page_entries as usize).checked_mul(p.format.size)? + CHECKSUM as usize;
            for k in 0..used.div_ceil(p.page_entries) {
                if !*written.get(k as usize)? {
                    continue;
                }
                let at = body + CHECKSUM as usize + k as usize * page_bytes;
                let count = p.page_entries.min(used - k * p.page_entries) as usize;
                p.format.add(b.first + k * p.page_entries, bytes.get(at..at + count * p.format.size)?, table)?;
            }
            Some(())
        }
    }
}
