//! Regular chunk grids: which chunk holds which element, and clipping at the edges.

/// Most chunks an array may have (see [`ChunkGrid::check_count`]).
pub const MAX_CHUNKS: u64 = 1 << 32;
/// Most chunks of under [`SMALL_CHUNK_BYTES`] each an array may have.
pub const MAX_SMALL_CHUNKS: u64 = 1 << 20;
/// Chunks smaller than this count towards [`MAX_SMALL_CHUNKS`] (a million chunks of a few values
/// each; real stores' chunks hold thousands of values, whatever their layout).
pub const SMALL_CHUNK_BYTES: u64 = 64;

/// A regular chunk grid over an N-d array (N = 0 for scalars: one chunk of one element).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkGrid {
    /// Array shape.
    pub shape: Vec<u64>,
    /// Chunk shape (same rank as `shape`, every entry >= 1).
    pub chunk: Vec<u64>,
}

impl ChunkGrid {
    /// Builds a grid; chunk entries of 0 are treated as 1.
    pub fn new(shape: Vec<u64>, chunk: Vec<u64>) -> Self {
        debug_assert_eq!(shape.len(), chunk.len());
        let chunk = chunk.into_iter().map(|c| c.max(1)).collect();
        ChunkGrid { shape, chunk }
    }

    /// A grid for contiguous data: whole trailing dimensions, and as many rows as make about
    /// `target_bytes` given `elem_size` (at least one row).
    pub fn contiguous(shape: Vec<u64>, elem_size: usize, target_bytes: u64) -> Self {
        if shape.is_empty() {
            return ChunkGrid { shape, chunk: vec![] };
        }
        let row: u64 = shape[1..].iter().product::<u64>().max(1) * elem_size.max(1) as u64;
        let rows = (target_bytes / row).max(1).min(shape[0].max(1));
        let mut chunk = shape.clone();
        chunk[0] = rows;
        for c in chunk.iter_mut() {
            *c = (*c).max(1);
        }
        ChunkGrid { shape, chunk }
    }

    /// Number of chunks along each dimension.
    pub fn chunks_per_dim(&self) -> Vec<u64> {
        self.shape.iter().zip(&self.chunk).map(|(s, c)| s.div_ceil(*c)).collect()
    }

    /// Total number of chunks (1 for a scalar, 0 if any dimension is empty).
    pub fn num_chunks(&self) -> u64 {
        self.chunks_per_dim().iter().product()
    }

    /// Bytes of one full chunk of `elem`-byte elements (saturating; empty dimensions count as 1).
    pub fn chunk_bytes(&self, elem: u64) -> u64 {
        self.chunk.iter().fold(elem.max(1), |a, d| a.saturating_mul((*d).max(1)))
    }

    /// Refuses a grid of more chunks than annfs reads: more than [`MAX_CHUNKS`], or more than
    /// [`MAX_SMALL_CHUNKS`] of under [`SMALL_CHUNK_BYTES`] each (chunks of `elem`-byte elements).
    /// Every read pays per chunk, so a grid of very many tiny chunks (damaged metadata, or a
    /// dataset resized to a shape of 10^12 over one-element chunks) would take hours to read
    /// through; it is refused as an oversized chunk is.
    pub fn check_count(&self, elem: u64) -> Result<(), String> {
        let n = self.num_chunks();
        let bytes = self.chunk_bytes(elem);
        if n > MAX_CHUNKS || (bytes < SMALL_CHUNK_BYTES && n > MAX_SMALL_CHUNKS) {
            return Err(format!("{n} chunks of {bytes} bytes: more chunks than annfs reads"));
        }
        Ok(())
    }

    /// Grid coordinates of the chunk with linear (C-order) index `index`.
    pub fn coords(&self, index: u64) -> Vec<u64> {
        let per = self.chunks_per_dim();
        let mut out = vec![0; per.len()];
        let mut rem = index;
        for d in (0..per.len()).rev() {
            out[d] = rem % per[d].max(1);
            rem /= per[d].max(1);
        }
        out
    }

    /// Linear (C-order) index of the chunk at grid coordinates `coords`.
    pub fn index(&self, coords: &[u64]) -> u64 {
        let per = self.chunks_per_dim();
        coords.iter().zip(&per).fold(0, |acc, (c, p)| acc * p + c)
    }

    /// The clipped extent (elements per dimension) of the chunk at `coords`.
    pub fn clipped_shape(&self, coords: &[u64]) -> Vec<u64> {
        coords
            .iter()
            .zip(self.shape.iter().zip(&self.chunk))
            .map(|(c, (s, k))| (s - c * k).min(*k))
            .collect()
    }
}

/// Copies the part of a full (unclipped) chunk that lies inside the array into a packed buffer.
/// `full` holds `grid.chunk` elements of `elem` bytes in C order.
pub fn clip_chunk(grid: &ChunkGrid, coords: &[u64], full: &[u8], elem: usize) -> Vec<u8> {
    let clipped = grid.clipped_shape(coords);
    if clipped == grid.chunk {
        let n = clipped.iter().product::<u64>() as usize * elem;
        return full[..n.min(full.len())].to_vec();
    }
    let rank = clipped.len();
    if rank == 0 {
        return full[..elem.min(full.len())].to_vec();
    }
    // Copy runs along the last dimension.
    let run = clipped[rank - 1] as usize * elem;
    let total: u64 = clipped.iter().product();
    let mut out = Vec::with_capacity(total as usize * elem);
    let outer: u64 = clipped[..rank - 1].iter().product();
    let mut idx = vec![0u64; rank.saturating_sub(1)];
    for _ in 0..outer {
        // Offset of idx in the full chunk.
        let mut off = 0u64;
        for (d, i) in idx.iter().enumerate() {
            off = off * grid.chunk[d] + i;
        }
        let start = (off * grid.chunk[rank - 1]) as usize * elem;
        out.extend_from_slice(&full[start..start + run]);
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            if idx[d] < clipped[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More than 2^32 chunks, or more than 2^20 chunks of under 64 bytes, are refused; real
    /// grids (and many small chunks of a small array) pass.
    #[test]
    fn too_many_chunks_are_refused() {
        let count = |shape: u64, chunk: u64, elem: u64| ChunkGrid::new(vec![shape], vec![chunk]).check_count(elem);
        assert!(count(1 << 35, 4, 16).unwrap_err().contains("8589934592 chunks of 64 bytes"));
        assert!(count(1 << 32, 1, 64).is_ok(), "2^32 chunks of 64 bytes");
        assert!(count((1 << 20) + 1, 1, 8).is_err(), "over 2^20 chunks of 8 bytes");
        assert!(count(1 << 20, 1, 8).is_ok());
        assert!(count(1 << 40, 1 << 12, 16).is_ok(), "2^28 chunks of 64 KiB");
        assert!(count(0, 1, 8).is_ok());
        assert!(ChunkGrid::new(vec![1 << 30, 1 << 30], vec![1, 1 << 30]).check_count(4).is_ok());
        assert!(ChunkGrid::new(vec![1 << 33, 2], vec![1, 1]).check_count(4).is_err());
    }

    #[test]
    fn coords_roundtrip() {
        let g = ChunkGrid::new(vec![10, 7], vec![3, 4]);
        assert_eq!(g.chunks_per_dim(), vec![4, 2]);
        for i in 0..g.num_chunks() {
            assert_eq!(g.index(&g.coords(i)), i);
        }
        assert_eq!(g.clipped_shape(&[3, 1]), vec![1, 3]);
    }

    #[test]
    fn clip_edge_chunk() {
        let g = ChunkGrid::new(vec![3, 3], vec![2, 2]);
        // full chunk at (1,1): elements [[a,b],[c,d]] of which only a is inside.
        let full = [1u8, 2, 3, 4];
        assert_eq!(clip_chunk(&g, &[1, 1], &full, 1), vec![1]);
        assert_eq!(clip_chunk(&g, &[0, 1], &full, 1), vec![1, 3]);
        assert_eq!(clip_chunk(&g, &[1, 0], &full, 1), vec![1, 2]);
    }

    #[test]
    fn contiguous_rows() {
        let g = ChunkGrid::contiguous(vec![1000, 10], 4, 400);
        assert_eq!(g.chunk, vec![10, 10]);
        let s = ChunkGrid::contiguous(vec![], 4, 400);
        assert_eq!(s.num_chunks(), 1);
    }
}
