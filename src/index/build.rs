//! Builds a transposed index (CSR → CSC, or CSC → CSR) by streaming passes over the stored
//! arrays, within a memory bound.
//!
//! 1. **Count.** One pass over `indptr` and `indices` counts the entries of every new major
//!    line (an old minor index); the prefix sums are the new pointers.
//! 2. **Scatter.** The output positions are cut into windows that fit in the memory bound; per
//!    window, one pass over the stored entries places those whose final position falls in the
//!    window (each new line's fill cursor starts at its pointer), then the window is appended to
//!    the file. Entries are visited in stored order, so each new line lists its entries by
//!    increasing old line — sorted, duplicates and explicit zeros kept in stored order, exactly
//!    as scipy's `tocsc()` / `tocsr()`.
//!
//! Re-reading the input per window costs decoding, never writing: no temporary spill files
//! (page-cache writes are the slowest step on many machines). Output sections are written front
//! to back, so the file's checksums are computed on the fly.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{IndexWriter, Layout, Section};
use super::IndexError;
use crate::model::{Arr, Sparse};
use crate::storage::StorageError;

/// At most this many stored entries are read per step.
const MAX_STEP: u64 = 1 << 20;

/// How far a build has come (entries counted plus entries visited by scatter passes).
#[derive(Default)]
pub struct Progress {
    /// Work done.
    pub done: AtomicU64,
    /// Total work.
    pub total: AtomicU64,
}

impl Progress {
    fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Percent done (0–100).
    pub fn percent(&self) -> u64 {
        let (d, t) = (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed));
        (d.min(t) * 100).checked_div(t).unwrap_or(0)
    }
}

/// The index dtype scipy chooses for the transpose: `int32` unless nnz or a dimension does not
/// fit (scipy's constructor checks the stored values and `max(shape)`, `tocsc` adds `max(nnz, M)`).
pub fn index_is_wide(nnz: u64, shape: [u64; 2]) -> bool {
    let max = i32::MAX as u64;
    nnz > max || shape[0] > max || shape[1] > max
}

/// Reads a whole 1-D stored array front to back, chunk by chunk, straight from its source: a
/// build streams far more than the cache holds, and must not evict what readers use.
struct Stream<'a> {
    arr: &'a Arr,
    chunk_len: u64,
    chunk: Option<(u64, Vec<u8>)>,
}

impl<'a> Stream<'a> {
    fn new(arr: &'a Arr) -> Self {
        let chunk_len = arr.meta().grid.chunk.first().copied().unwrap_or(1).max(1);
        Stream { arr, chunk_len, chunk: None }
    }

    /// One past the last element of the chunk holding element `at`.
    fn chunk_end(&self, at: u64) -> u64 {
        (at / self.chunk_len + 1) * self.chunk_len
    }

    /// The bytes of elements `[a, b)`, which must lie in one chunk (no copy).
    fn slice(&mut self, a: u64, b: u64) -> Result<&[u8], StorageError> {
        let elem = self.arr.elem_size() as u64;
        let n = self.arr.meta().shape.first().copied().unwrap_or(0);
        let ci = a / self.chunk_len;
        let c0 = ci * self.chunk_len;
        if b > n || a > b || b > c0 + self.chunk_len || self.arr.offset() != 0 {
            return Err(StorageError::corrupt(self.arr.path(), format!("elements {a}..{b} out of range")));
        }
        if !matches!(&self.chunk, Some((i, _)) if *i == ci) {
            let want = (n - c0).min(self.chunk_len) * elem;
            let bytes = self.arr.source().read_chunk(ci)?;
            if bytes.len() as u64 != want {
                let why = format!("chunk {ci} has {} bytes, expected {want}", bytes.len());
                return Err(StorageError::corrupt(self.arr.path(), why));
            }
            self.chunk = Some((ci, bytes));
        }
        let bytes = self.chunk.as_ref().map(|c| &c.1[..]).unwrap_or_default();
        Ok(&bytes[((a - c0) * elem) as usize..((b - c0) * elem) as usize])
    }
}

/// Streams the stored entries of a whole stored matrix, validating as it goes.
struct Input<'a> {
    m: &'a Sparse,
    layout: &'a Layout,
    step: u64,
    ptr0: i64,
}

impl Input<'_> {
    fn corrupt(&self, why: String) -> IndexError {
        IndexError::Store(StorageError::corrupt(&self.layout.matrix, why))
    }

    /// Calls `f(old major line, old minor index, value bytes)` for every entry in stored order
    /// (value bytes only when `with_data`).
    fn each(&self, with_data: bool, progress: &Progress, mut f: impl FnMut(u64, u64, &[u8])) -> Result<(), IndexError> {
        let (m, nnz, n_out) = (self.m, self.layout.nnz, self.layout.out_major());
        let n_in = m.indptr.len().saturating_sub(1);
        let dw = m.data.elem_size();
        let (mut indices, mut data) = (Stream::new(&m.indices), Stream::new(&m.data));
        let mut idx = Vec::new();
        let mut line = 0u64;
        while line < n_in {
            let l1 = (line + self.step).min(n_in);
            let ptr = m.indptr.read_i64(line, l1 + 1)?;
            if ptr.windows(2).any(|w| w[0] > w[1]) || ptr.iter().any(|&v| v < self.ptr0 || (v - self.ptr0) as u64 > nnz) {
                return Err(self.corrupt(format!("indptr out of order or past the data near line {line}")));
            }
            let (mut at, end) = (ptr[0], ptr[ptr.len() - 1]);
            let mut li = 0usize;
            while at < end {
                // A step never crosses a chunk of either array, so both are read in place.
                let mut e = (at as u64 + self.step).min(end as u64).min(indices.chunk_end(at as u64));
                if with_data {
                    e = e.min(data.chunk_end(at as u64));
                }
                let e = e as i64;
                m.indices.decode_i64(indices.slice(at as u64, e as u64)?, &mut idx)?;
                let vals = if with_data { data.slice(at as u64, e as u64)? } else { &[][..] };
                // Entries [at, e) line by line: line li holds [ptr[li], ptr[li + 1]).
                let mut k = 0usize;
                while k < idx.len() {
                    while ptr[li + 1] <= at + k as i64 {
                        li += 1;
                    }
                    let stop = ((ptr[li + 1] - at) as usize).min(idx.len());
                    let old = line + li as u64;
                    for (j, &c) in idx[k..stop].iter().enumerate() {
                        if c < 0 || c as u64 >= n_out {
                            return Err(self.corrupt(format!("index {c} out of range (extent {n_out})")));
                        }
                        let v = if with_data { &vals[(k + j) * dw..(k + j + 1) * dw] } else { &[][..] };
                        f(old, c as u64, v);
                    }
                    k = stop;
                }
                progress.add((e - at) as u64);
                at = e;
            }
            line = l1;
        }
        Ok(())
    }
}

/// Builds the transposed index of the stored matrix `m` (whole, as stored) described by
/// `layout` into `dest`, using about `mem` bytes of working memory. Returns the file's size.
pub fn build(m: &Sparse, layout: &Layout, dest: &Path, mem: u64, progress: &Progress) -> Result<u64, IndexError> {
    let dw = m.data.elem_size() as u64;
    let (iw, nnz, n_out) = (layout.index_width(), layout.nnz, layout.out_major());
    let ptr0 = m.indptr.read_i64(0, 1)?.first().copied().unwrap_or(0);
    let step = (mem / 32 / 24).clamp(256, MAX_STEP);
    let input = Input { m, layout, step, ptr0 };
    if ptr0 < 0 {
        return Err(input.corrupt(format!("negative indptr {ptr0}")));
    }
    // Window of output entries placed per pass: about 3/4 of the memory.
    let cap = ((mem / 4 * 3) / (iw + dw)).max(64);
    let passes = nnz.div_ceil(cap);
    progress.total.store(nnz * (1 + passes), Ordering::Relaxed);
    let mut writer = IndexWriter::create(dest, layout, dw)?;

    let t0 = std::time::Instant::now();
    // 1. Count.
    let mut ptr = vec![0u64; n_out as usize + 1];
    input.each(false, progress, |_, c, _| ptr[c as usize + 1] += 1)?;
    for i in 0..n_out as usize {
        ptr[i + 1] += ptr[i];
    }
    if ptr[n_out as usize] != nnz {
        return Err(input.corrupt(format!("indptr says {nnz} entries, found {}", ptr[n_out as usize])));
    }
    for piece in ptr.chunks(1 << 16) {
        let mut out = Vec::with_capacity(piece.len() * iw as usize);
        piece.iter().for_each(|&v| out.extend_from_slice(&v.to_le_bytes()[..iw as usize]));
        writer.append(Section::Indptr, &out)?;
    }

    let t1 = t0.elapsed();
    // 2. Scatter, one window of output positions per pass.
    let mut cursor = vec![0u64; n_out as usize];
    let (iw, dw) = (iw as usize, dw as usize);
    let window = cap.min(nnz) as usize;
    let (mut idx_buf, mut dat_buf) = (vec![0u8; window * iw], vec![0u8; window * dw]);
    let mut w0 = 0u64;
    while w0 < nnz {
        let w1 = (w0 + cap).min(nnz);
        // New lines with entries in the window: [c_a, c_b).
        let c_a = ptr.partition_point(|&p| p <= w0).saturating_sub(1) as u64;
        let c_b = (ptr.partition_point(|&p| p < w1) as u64).min(n_out);
        cursor[c_a as usize..c_b as usize].copy_from_slice(&ptr[c_a as usize..c_b as usize]);
        // Every position of the window is written exactly once: no need to clear between passes.
        let (idx_out, dat_out) = (&mut idx_buf[..(w1 - w0) as usize * iw], &mut dat_buf[..(w1 - w0) as usize * dw]);
        let pass = Pass { cursor: &mut cursor, cols: c_a..c_b, window: w0..w1 };
        match (iw, dw) {
            (4, 4) => pass.run::<4, 4>(&input, progress, idx_out, dat_out)?,
            (4, 8) => pass.run::<4, 8>(&input, progress, idx_out, dat_out)?,
            (8, 4) => pass.run::<8, 4>(&input, progress, idx_out, dat_out)?,
            (8, 8) => pass.run::<8, 8>(&input, progress, idx_out, dat_out)?,
            (4, 2) => pass.run::<4, 2>(&input, progress, idx_out, dat_out)?,
            (4, 1) => pass.run::<4, 1>(&input, progress, idx_out, dat_out)?,
            _ => pass.run_any(iw, dw, &input, progress, idx_out, dat_out)?,
        }
        writer.append(Section::Indices, idx_out)?;
        writer.append(Section::Data, dat_out)?;
        w0 = w1;
    }
    let t2 = t0.elapsed();
    let size = writer.finish()?;
    log::debug!(
        "{}: index counted in {:.2} s, scattered in {:.2} s ({passes} passes of up to {cap} entries), synced in {:.2} s",
        layout.matrix,
        t1.as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t0.elapsed() - t2).as_secs_f64()
    );
    Ok(size)
}

/// One scatter pass: places the entries of new lines `cols` whose output position falls in
/// `window`, advancing each line's fill `cursor`.
struct Pass<'a> {
    cursor: &'a mut [u64],
    cols: std::ops::Range<u64>,
    window: std::ops::Range<u64>,
}

impl Pass<'_> {
    /// The pass for `IW`-byte indices and `DW`-byte values: fixed-size copies the compiler
    /// turns into single moves (a `memcpy` call per field was a fifth of the build).
    fn run<const IW: usize, const DW: usize>(
        self,
        input: &Input,
        progress: &Progress,
        idx_out: &mut [u8],
        dat_out: &mut [u8],
    ) -> Result<(), IndexError> {
        self.scatter(input, progress, |i, line, v| {
            let (Some(id), Some(dd), Ok(val)) =
                (idx_out.get_mut(i * IW..(i + 1) * IW), dat_out.get_mut(i * DW..(i + 1) * DW), <[u8; DW]>::try_from(v))
            else {
                return;
            };
            id.copy_from_slice(&line.to_le_bytes()[..IW]);
            dd.copy_from_slice(&val);
        })
    }

    /// [`Pass::run`] for any widths.
    fn run_any(self, iw: usize, dw: usize, input: &Input, progress: &Progress, idx_out: &mut [u8], dat_out: &mut [u8]) -> Result<(), IndexError> {
        self.scatter(input, progress, |i, line, v| {
            let dd = dat_out.get_mut(i * dw..(i + 1) * dw).filter(|d| d.len() == v.len());
            if let (Some(id), Some(dd)) = (idx_out.get_mut(i * iw..(i + 1) * iw), dd) {
                id.copy_from_slice(&line.to_le_bytes()[..iw]);
                dd.copy_from_slice(v);
            }
        })
    }

    /// Visits every stored entry; `place(slot in the window, old line, value bytes)` stores
    /// those of this pass.
    fn scatter(self, input: &Input, progress: &Progress, mut place: impl FnMut(usize, u64, &[u8])) -> Result<(), IndexError> {
        let Pass { cursor, cols, window } = self;
        input.each(true, progress, |line, c, v| {
            if !cols.contains(&c) {
                return;
            }
            let Some(slot) = cursor.get_mut(c as usize) else { return };
            let pos = *slot;
            *slot += 1;
            if window.contains(&pos) {
                place((pos - window.start) as usize, line, v);
            }
        })
    }
}

/// The layout of the index of the stored matrix `m` (whole) of the store `store`.
pub fn layout(m: &Sparse, store: super::format::Identity, matrix: String) -> Result<Layout, StorageError> {
    let n = m.indptr.len();
    let ends = if n == 0 { Vec::new() } else { [m.indptr.read_i64(0, 1)?, m.indptr.read_i64(n - 1, n)?].concat() };
    let nnz = match ends[..] {
        [a, b] if 0 <= a && a <= b => (b - a) as u64,
        [..] if n == 0 => 0,
        _ => return Err(StorageError::corrupt(m.indptr.path(), "indptr ends out of order")),
    };
    let descr = |a: &crate::model::Arr| a.num_type().map(|t| t.npy_descr().to_string()).unwrap_or_default();
    Ok(Layout {
        version: super::format::VERSION,
        store,
        matrix,
        stored: m.format.name().to_string(),
        shape: m.shape,
        nnz,
        stored_types: [descr(&m.data), descr(&m.indices), descr(&m.indptr)],
        data_type: descr(&m.data),
        index_type: if index_is_wide(nnz, m.shape) { "<i8" } else { "<i4" }.to_string(),
        block: super::format::BLOCK,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::cache::ChunkCache;
    use crate::model::array::tests::mem_sparse;
    use crate::index::format::{Identity, IndexFile};
    use crate::model::array::tests::MemSource;
    use crate::model::{Arr, ArrIds, SparseFormat};
    use crate::storage::NumType;

    fn le<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }

    /// Reads a whole section back through block reads.
    fn section(f: &IndexFile, s: Section, len: u64) -> Vec<u8> {
        (0..len.div_ceil(4096)).flat_map(|b| f.read_block(s, b).unwrap()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The index equals a reference counting transpose (rows sorted within each new line,
        /// duplicates and explicit zeros kept in stored order), for any memory bound.
        #[test]
        fn index_equals_reference_transpose(major in 0u64..80, minor in 1u64..40, seed in any::<u64>(), csc in any::<bool>(),
                                            chunk in 1u64..50, mem in prop::sample::select(vec![1u64, 300, 5000, 1 << 20]), ptr0 in 0i64..3,
                                            dtype in prop::sample::select(vec![NumType::F64, NumType::F32, NumType::I16, NumType::C128])) {
            // Values are whole numbers, exact in every type; a complex value is (v, -v).
            let enc = |v: f64| -> Vec<u8> {
                match dtype {
                    NumType::F32 => (v as f32).to_le_bytes().to_vec(),
                    NumType::I16 => (v as i16).to_le_bytes().to_vec(),
                    NumType::C128 => [v.to_le_bytes(), (-v).to_le_bytes()].concat(),
                    _ => v.to_le_bytes().to_vec(),
                }
            };
            let mut x = seed | 1;
            let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
            let (mut indptr, mut idx, mut data) = (vec![ptr0], Vec::new(), Vec::new());
            // Leading garbage entries before indptr[0], as a window of a larger array would have.
            for _ in 0..ptr0 { idx.push(0i32); data.push(7.0); }
            for _ in 0..major {
                let n = if next() % 5 == 0 { 0 } else { next() % (minor + 4) };
                for _ in 0..n {
                    idx.push((next() % minor) as i32);
                    data.push(if next() % 6 == 0 { 0.0 } else { (next() % 1000) as f64 - 500.0 });
                }
                indptr.push(idx.len() as i64);
            }
            let cache = Arc::new(ChunkCache::new(1 << 16));
            let shape = if csc { [minor, major] } else { [major, minor] };
            let format = if csc { SparseFormat::Csc } else { SparseFormat::Csr };
            let m = mem_sparse(format, shape, (&indptr, &idx), (dtype, le(&data, enc)), chunk, &cache);
            // Reference: per new line, (old line, value) in stored order.
            let mut lines: Vec<Vec<(i32, f64)>> = vec![Vec::new(); minor as usize];
            for l in 0..major as usize {
                for k in indptr[l] as usize..indptr[l + 1] as usize {
                    lines[idx[k] as usize].push((l as i32, data[k]));
                }
            }
            let want_ptr: Vec<i32> = std::iter::once(0).chain(lines.iter().scan(0, |a, l| { *a += l.len() as i32; Some(*a) })).collect();
            let want_idx: Vec<i32> = lines.iter().flatten().map(|e| e.0).collect();
            let want_data: Vec<f64> = lines.iter().flatten().map(|e| e.1).collect();

            let dir = tempfile::tempdir().unwrap();
            let store = Identity { location: "/s".into(), size: 1, mtime: 2, inode: None, etag: None };
            let mut l = layout(&m, store, "/X".into()).unwrap();
            l.block = 4096;
            let dest = dir.path().join("x.idx");
            let progress = Progress::default();
            let size = build(&m, &l, &dest, mem, &progress).unwrap();
            prop_assert_eq!(progress.percent(), if want_idx.is_empty() { 0 } else { 100 });
            prop_assert_eq!(std::fs::metadata(&dest).unwrap().len(), size);
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(names.len(), 1, "temporary files removed: {:?}", names);
            let f = IndexFile::open(&dest, &l, dtype.size() as u64).unwrap();
            let nnz = want_idx.len() as u64;
            prop_assert_eq!(section(&f, Section::Indptr, (minor + 1) * 4), le(&want_ptr, |v| v.to_le_bytes().to_vec()));
            prop_assert_eq!(section(&f, Section::Indices, nnz * 4), le(&want_idx, |v| v.to_le_bytes().to_vec()));
            prop_assert_eq!(section(&f, Section::Data, nnz * dtype.size() as u64), le(&want_data, enc));
        }
    }

    #[test]
    fn wide_indices_and_bad_input() {
        assert!(!index_is_wide(i32::MAX as u64, [i32::MAX as u64, 5]));
        assert!(index_is_wide(i32::MAX as u64 + 1, [5, 5]));
        assert!(index_is_wide(0, [5, i32::MAX as u64 + 1]));
        // An out-of-range index fails the build with the matrix named, and leaves no file.
        let cache = Arc::new(ChunkCache::new(1 << 16));
        let ids = ArrIds::default();
        let arr = |n: u64, t, b| Arr::new(Arc::new(MemSource::num(vec![n], vec![4], t, b)), &cache, &ids);
        let m = Sparse {
            format: SparseFormat::Csr,
            shape: [2, 3],
            data: arr(2, NumType::F32, le(&[1f32, 2.0], |v| v.to_le_bytes().to_vec())),
            indices: arr(2, NumType::I32, le(&[0i32, 7], |v| v.to_le_bytes().to_vec())),
            indptr: arr(3, NumType::I32, le(&[0i32, 1, 2], |v| v.to_le_bytes().to_vec())),
            indptr_base: 0,
            minor: None,
            minor_list: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&m, Identity { location: "/s".into(), size: 1, mtime: 2, inode: None, etag: None }, "/X".into()).unwrap();
        let err = build(&m, &l, &dir.path().join("x"), 1 << 20, &Progress::default()).unwrap_err().to_string();
        assert!(err.contains("/X") && err.contains("out of range"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
