//! Child addresses of a version-1 B-tree node of a chunked dataset's index, read from the node's
//! bytes as the library reads them through the driver ([`super::vfd`]). A remote file uses them
//! to fetch every child node of an internal node at once, in parallel, instead of one round trip
//! per node as the library walks the tree depth first.
//!
//! Layout (HDF5 file format, "Version 1 B-trees"): `TREE`, node type (1 = raw data chunks),
//! level (0 = leaf), entries used (2 bytes), left and right sibling addresses, then keys and
//! child addresses interleaved (`key0 child0 key1 child1 … keyN`). The node is read whole, so
//! its size gives the key size: `size = 8 + 2·a + (2K+1)·key + 2K·a` for the file's `K`.

/// The "undefined address" of `width`-byte (1 to 8) file addresses: all bits set.
pub fn undefined_addr(width: usize) -> u64 {
    u64::MAX >> (64 - 8 * width.clamp(1, 8) as u32)
}

/// Child node addresses of the internal chunk-index node `node` (`addr_width`-byte addresses),
/// or nothing when `node` is not one (a leaf's children are chunks, not nodes).
pub fn child_nodes(node: &[u8], addr_width: usize) -> Vec<u64> {
    let a = addr_width;
    if node.len() < 8 + 2 * a || !node.starts_with(b"TREE") || node[4] != 1 || node[5] == 0 || !(2..=8).contains(&a) {
        return Vec::new();
    }
    let used = u16::from_le_bytes([node[6], node[7]]) as usize;
    let body = node.len() - 8 - 2 * a;
    // K is the file's "indexed storage" half-capacity (32 by default); the key size must then be a
    // whole number of bytes, 8 + 8·(rank+1) with a rank of at most 32.
    let key = [32usize, 64, 16, 128, 8, 256, 4, 512, 2, 1].into_iter().find_map(|k| {
        let rest = body.checked_sub(2 * k * a)?;
        (rest % (2 * k + 1) == 0 && used <= 2 * k).then(|| rest / (2 * k + 1)).filter(|key| {
            *key >= 16 && (*key - 8) % 8 == 0 && *key <= 8 + 8 * 33
        })
    });
    let Some(key) = key else { return Vec::new() };
    let mut out = Vec::with_capacity(used);
    for i in 0..used {
        let at = 8 + 2 * a + i * (key + a) + key;
        let Some(bytes) = node.get(at..at + a) else { break };
        let addr = super::gheap::le_uint(bytes);
        if addr != undefined_addr(a) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with K = 32, rank-1 keys (8 + 16 bytes), 8-byte addresses and `children`.
    fn node(level: u8, children: &[u64]) -> Vec<u8> {
        let (k, key, a) = (32usize, 24usize, 8usize);
        let mut n = b"TREE".to_vec();
        n.extend_from_slice(&[1, level]);
        n.extend_from_slice(&(children.len() as u16).to_le_bytes());
        n.extend_from_slice(&[0xff; 16]);
        for i in 0..2 * k {
            n.extend_from_slice(&[0u8; 24][..key]);
            n.extend_from_slice(&children.get(i).copied().unwrap_or(0).to_le_bytes()[..a]);
        }
        n.extend_from_slice(&[0u8; 24]);
        n
    }

    #[test]
    fn internal_nodes_give_their_children() {
        assert_eq!(child_nodes(&node(1, &[4096, 9000, 123_456]), 8), vec![4096, 9000, 123_456]);
        assert!(child_nodes(&node(0, &[4096]), 8).is_empty(), "a leaf's children are chunks");
    }

    #[test]
    fn anything_else_gives_nothing() {
        assert!(child_nodes(b"TREE", 8).is_empty());
        assert!(child_nodes(b"GCOL and more bytes than a header holds....", 8).is_empty());
        let mut n = node(1, &[1, 2]);
        n.truncate(n.len() - 5); // not a whole node: no key size fits
        assert!(child_nodes(&n, 8).is_empty());
        n = node(1, &[1, 2]);
        n[4] = 0; // a group B-tree
        assert!(child_nodes(&n, 8).is_empty());
    }
}
