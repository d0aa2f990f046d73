//! The fixed-array chunk index HDF5 writes for a chunked dataset of fixed size in a file made
//! with `libver="latest"` (HDF5 file format specification, "Fixed Array Header" and "Fixed
//! Array Data Block"): a header (`FAHD`) naming a data block (`FADB`) that lists one entry per
//! chunk in row-major chunk order — its address, and for filtered chunks its stored size and
//! filter mask. A data block of more than 2^page-bits entries is cut into pages, each with its
//! own checksum, after a bitmap of the pages that were ever written. Read in two requests (the
//! header, then the whole data block), every size checked against the grid and the file.

use std::collections::HashMap;

use super::btree::undefined_addr;
use super::chunk_index::{le, Entries, Reader};
use super::chunks::ChunkLoc;
use crate::storage::ChunkGrid;

/// Bytes of a checksum (Jenkins lookup3) closing the header, the data block and each page.
const CHECKSUM: usize = 4;
/// Pages of at most 2^this many entries (HDF5 writes 10).
const MAX_PAGE_BITS: u8 = 32;

/// The chunk table of the fixed array whose header is at `header`, for chunks of `chunk_bytes`
/// bytes before filtering. `None` when anything does not add up.
pub(super) fn read(r: &Reader, header: u64, grid: &ChunkGrid, chunk_bytes: u64) -> Option<HashMap<u64, ChunkLoc>> {
    let (a, s) = (r.sizes.addr, r.sizes.size);
    if header == undefined_addr(a) {
        return Some(HashMap::new());
    }
    // Signature, version, client (0: plain chunks, 1: filtered), entry size, page bits,
    // entry count, data block address, checksum.
    let h = r.read(header, (8 + s + a + CHECKSUM) as u64)?;
    if !h.starts_with(b"FAHD") || h.get(4) != Some(&0) {
        return None;
    }
    let (client, entry, page_bits) = (*h.get(5)?, usize::from(*h.get(6)?), *h.get(7)?);
    let n = le(&h, 8, s)?;
    let block = le(&h, 8 + s, a)?;
    // The entries are laid out for the dataset's maximum dims: a count other than the grid's
    // means they are larger than its shape, which is left to the library.
    if n != grid.num_chunks() || page_bits > MAX_PAGE_BITS {
        return None;
    }
    let format = Entries::new(client, entry, a, chunk_bytes)?;
    if block == undefined_addr(a) {
        return Some(HashMap::new());
    }
    let page = 1u64 << page_bits;
    let pages = if n > page { n.div_ceil(page) } else { 0 };
    let bitmap = pages.div_ceil(8);
    // Signature, version, client, header address, [page bitmap, checksum,] entries (or pages
    // of entries, each followed by its checksum), [checksum].
    let prefix = 6 + a as u64 + bitmap + if pages > 0 { CHECKSUM as u64 } else { 0 };
    let entries = n.checked_mul(entry as u64)?;
    let trailer = CHECKSUM as u64 * pages.max(1);
    let total = prefix.checked_add(entries)?.checked_add(trailer)?;
    if total > r.data.len() {
        return None;
    }
    let b = r.read(block, total)?;
    if !b.starts_with(b"FADB") || b.get(4) != Some(&0) || b.get(5) != Some(&client) || le(&b, 6, a)? != header {
        return None;
    }
    let mut table = HashMap::new();
    let body = 6 + a;
    if pages == 0 {
        format.add(0, b.get(body..body + entries as usize)?, &mut table)?;
        return Some(table);
    }
    let written = b.get(body..body + bitmap as usize)?;
    let mut at = prefix as usize;
    for k in 0..pages {
        let len = (page.min(n - k * page) * entry as u64) as usize;
        // Bit k, most significant first: the page was written (an unwritten page's bytes are
        // not entries; its chunks read as the fill value).
        if written.get((k / 8) as usize)? & (0x80 >> (k % 8)) != 0 {
            format.add(k * page, b.get(at..at + len)?, &mut table)?;
        }
        at += len + CHECKSUM;
    }
    Some(table)
}
