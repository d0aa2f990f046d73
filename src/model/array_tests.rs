//! Tests of [`Arr`](super::Arr) and in-memory array sources other modules' tests build on.
use super::*;
use crate::storage::grid::{clip_chunk, ChunkGrid};

/// A sparse matrix over in-memory arrays chunked by `chunk` elements: `indptr` (int64),
/// `indices` (int32) and `data` (little-endian bytes of type `data_type`).
pub(crate) fn mem_sparse(
    format: crate::model::SparseFormat,
    shape: [u64; 2],
    (indptr, indices): (&[i64], &[i32]),
    (data_type, data): (NumType, Vec<u8>),
    chunk: u64,
    cache: &Arc<ChunkCache>,
) -> crate::model::Sparse {
    let ids = ArrIds::default();
    let arr = |n: usize, t, bytes| Arr::new(Arc::new(MemSource::num(vec![n as u64], vec![chunk], t, bytes)), cache, &ids);
    crate::model::Sparse {
        format,
        shape,
        data: arr(indices.len(), data_type, data),
        indices: arr(indices.len(), NumType::I32, indices.iter().flat_map(|v| v.to_le_bytes()).collect()),
        indptr: arr(indptr.len(), NumType::I64, indptr.iter().flat_map(|v| v.to_le_bytes()).collect()),
        indptr_base: 0,
        minor: None,
        minor_list: None,
        sorted: false,
    }
}

/// An in-memory array source for tests: u16 values 0..n in C order, any chunking.
pub(crate) struct MemSource {
    pub meta: ArrayMeta,
    pub data: Vec<u8>,
    pub strings: Vec<String>,
}

impl MemSource {
    pub(crate) fn num(shape: Vec<u64>, chunk: Vec<u64>, t: NumType, data: Vec<u8>) -> Self {
        MemSource {
            meta: ArrayMeta {
                path: "/mem".into(),
                dtype: DType::Num(t),
                grid: ChunkGrid::new(shape.clone(), chunk),
                shape,
                null: false,
                storage_desc: "memory".into(),
            },
            data,
            strings: vec![],
        }
    }
}

impl ArraySource for MemSource {
    fn meta(&self) -> &ArrayMeta {
        &self.meta
    }
    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>> {
        let g = &self.meta.grid;
        let DType::Num(t) = self.meta.dtype else {
            return Err(StorageError::unsupported(&self.meta.path, "chunks of a string array"));
        };
        if index >= g.num_chunks() {
            return Err(StorageError::corrupt(&self.meta.path, format!("chunk {index} out of range")));
        }
        let elem = t.size();
        let coords = g.coords(index);
        // Build the full chunk from the flat data, then clip.
        let full_n: u64 = g.chunk.iter().product();
        let mut full = vec![0u8; full_n as usize * elem];
        for i in 0..full_n {
            let mut rem = i;
            let mut flat = 0u64;
            let mut inside = true;
            let mut pos = vec![0u64; g.chunk.len()];
            for d in (0..g.chunk.len()).rev() {
                pos[d] = rem % g.chunk[d];
                rem /= g.chunk[d];
            }
            for d in 0..g.chunk.len() {
                let p = coords[d] * g.chunk[d] + pos[d];
                if p >= g.shape[d] {
                    inside = false;
                }
                flat = flat * g.shape[d] + p;
            }
            if inside {
                let s = flat as usize * elem;
                full[i as usize * elem..(i as usize + 1) * elem].copy_from_slice(&self.data[s..s + elem]);
            }
        }
        Ok(clip_chunk(g, &coords, &full, elem))
    }
    fn read_strings(&self, s: u64, e: u64) -> StorageResult<Vec<String>> {
        if self.meta.dtype != DType::Str {
            return Err(StorageError::unsupported(&self.meta.path, "strings of a numeric array"));
        }
        match self.strings.get(s as usize..e as usize) {
            Some(v) if s <= e && e <= self.strings.len() as u64 => Ok(v.to_vec()),
            _ => Err(StorageError::corrupt(&self.meta.path, format!("strings {s}..{e} out of range"))),
        }
    }
}

impl MemSource {
    /// A 1-D string array.
    pub(crate) fn strings(values: Vec<String>, chunk: u64) -> Self {
        let n = values.len() as u64;
        MemSource {
            meta: ArrayMeta {
                path: "/mem_str".into(),
                dtype: DType::Str,
                grid: ChunkGrid::new(vec![n], vec![chunk.max(1)]),
                shape: vec![n],
                null: false,
                storage_desc: "memory".into(),
            },
            data: vec![],
            strings: values,
        }
    }
}

fn u16s(n: u64) -> Vec<u8> {
    (0..n).flat_map(|v| (v as u16).to_le_bytes()).collect()
}

proptest::proptest! {
    #[test]
    fn rows_match_flat_data(
        shape in proptest::collection::vec(1u64..7, 1..4),
        chunk_seed in proptest::collection::vec(1u64..5, 3),
        a in 0u64..100, b in 0u64..100,
    ) {
        let chunk: Vec<u64> = shape.iter().zip(&chunk_seed).map(|(s, c)| (*c).min(*s)).collect();
        let n: u64 = shape.iter().product();
        let data = u16s(n);
        let src = MemSource::num(shape.clone(), chunk, NumType::U16, data.clone());
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let arr = Arr::new(Arc::new(src), &cache, &ArrIds::default());
        let rows = shape[0];
        let (r0, r1) = (a % (rows + 1), b % (rows + 1));
        let (r0, r1) = (r0.min(r1), r0.max(r1));
        let row = (n / rows) as usize * 2;
        let got = arr.read_rows(r0, r1).unwrap();
        proptest::prop_assert_eq!(&got[..], &data[r0 as usize * row..r1 as usize * row]);
        let (e0, e1) = ((a % (n + 1)).min(b % (n + 1)), (a % (n + 1)).max(b % (n + 1)));
        let flat = arr.read_flat(e0, e1).unwrap();
        proptest::prop_assert_eq!(&flat[..], &data[e0 as usize * 2..e1 as usize * 2]);
    }
}

#[test]
fn drop_behind_forgets_the_chunks_that_end_among_the_rows_read() {
    // 10 rows x 3 columns, chunks of 4 rows x 2 columns: row bands [0,4) [4,8) [8,10), two
    // chunks per band.
    let data = u16s(30);
    let cache = Arc::new(ChunkCache::new(1 << 20));
    let arr = Arr::new(Arc::new(MemSource::num(vec![10, 3], vec![4, 2], NumType::U16, data.clone())), &cache, &ArrIds::default());
    assert_eq!(arr.read_rows(0, 10).unwrap(), data);
    let cached = |index: u64| cache.contains(Key::Chunk(arr.id, index));
    assert!((0..6).all(cached));
    // Rows [2, 5): the band [0, 4) ends among them, the band [4, 8) does not.
    arr.drop_behind(2, 5);
    assert_eq!((0..6).map(cached).collect::<Vec<_>>(), [false, false, true, true, true, true]);
    // The last band ends at the array's end.
    arr.drop_behind(5, 10);
    assert!((0..6).all(|i| !cached(i)));
    // Dropped chunks read again as before; a window drops its parent's chunks by stored rows.
    assert_eq!(arr.read_rows(0, 10).unwrap(), data);
    let w = arr.window(4, 10);
    w.drop_behind(0, 4);
    assert_eq!((0..6).map(cached).collect::<Vec<_>>(), [true, true, false, false, true, true]);
    w.drop_behind(4, 99); // out of range: nothing
    assert!(cached(4));
    assert_eq!(w.read_rows(0, 6).unwrap(), data[4 * 6..]);
}

#[test]
fn recycled_buffers_take_the_next_chunks_with_their_bytes() {
    // Chunks of 64 KiB, the smallest the recycler keeps.
    let c = (crate::cache::recycle::MIN_BYTES / 2) as u64;
    let data = u16s(4 * c);
    let cache = Arc::new(ChunkCache::new(64 << 20));
    let arr = Arr::new(Arc::new(MemSource::num(vec![4 * c], vec![c], NumType::U16, data.clone())), &cache, &ArrIds::default());
    let half = data.len() / 2;
    assert_eq!(arr.read_rows(0, 2 * c).unwrap(), data[..half]);
    arr.drop_behind(0, 2 * c);
    assert_eq!(cache.stats.snapshot()["dropped_behind"], 2);
    // The next two chunks land in the two buffers dropped behind, with their own bytes.
    assert_eq!(arr.read_rows(2 * c, 4 * c).unwrap(), data[half..]);
    assert_eq!(cache.stats.snapshot()["chunks_recycled"], 2);
    assert_eq!(arr.read_rows(0, 4 * c).unwrap(), data);
}

proptest::proptest! {
    /// Cached slices of any byte range, joined, are the bytes a read returns, in a row window
    /// too; chunks that split the trailing dimensions give none.
    #[test]
    fn cached_slices_join_to_the_rows_read(
        rows in 1u64..60, cols in 1u64..5, ch in 1u64..9, split in proptest::bool::ANY,
        w in (0u64..60, 0u64..60), b in (0u64..1000, 0u64..1000), max in 1usize..20,
    ) {
        let n = rows * cols;
        let data = u16s(n);
        let chunk = vec![ch, if split && cols > 1 { cols - 1 } else { cols }];
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let arr = Arr::new(Arc::new(MemSource::num(vec![rows, cols], chunk, NumType::U16, data.clone())), &cache, &ArrIds::default());
        let (w0, w1) = ((w.0 % rows).min(w.1 % rows), (w.0 % rows).max(w.1 % rows) + 1);
        let win = arr.window(w0, w1);
        let len = (w1 - w0) * cols * 2;
        let (b0, b1) = ((b.0 % len).min(b.1 % len), (b.0 % len).max(b.1 % len) + 1);
        let got = win.cached_slices(b0, b1, max).unwrap();
        let row = (cols * 2) as usize;
        let want = &data[w0 as usize * row..w1 as usize * row][b0 as usize..b1 as usize];
        match got {
            Some(parts) => {
                proptest::prop_assert!(!(split && cols > 1), "chunks split the columns");
                proptest::prop_assert!(parts.len() <= max);
                let joined: Vec<u8> = parts.iter().flat_map(|(bytes, r)| bytes[r.clone()].to_vec()).collect();
                proptest::prop_assert_eq!(&joined[..], want);
            }
            None => proptest::prop_assert!(split && cols > 1 || ((w0 * row as u64 + b1 - 1) / (ch * row as u64)) - (w0 * row as u64 + b0) / (ch * row as u64) >= max as u64),
        }
    }
}
