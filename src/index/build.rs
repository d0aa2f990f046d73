//! Builds a transposed index (CSR → CSC, or CSC → CSR) in one streaming pass over the stored
//! arrays, within a memory bound.
//!
//! 1. **Spill.** The stored lines are read in bounded steps; every entry is counted for its
//!    minor index (the new major axis) and appended, as `(major, minor, value)`, to the spill of
//!    its bucket — a range of new major lines, chosen so a bucket's output fits in half the
//!    memory. A spill stays in memory while everything fits, else it goes to a temporary file.
//! 2. **Scatter.** The counts become the new pointers. Each bucket's spill is then read back and
//!    its entries placed at their final positions, in windows of at most half the memory (a
//!    bucket larger than one window is re-read once per window). Spills hold entries in stored
//!    order, so each new line lists its entries by increasing old line — sorted, duplicates kept
//!    in stored order, exactly as scipy's `tocsc()` / `tocsr()`.
//!
//! Output sections are written front to back, so the file's checksums are computed on the fly.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{IndexWriter, Layout, Section};
use super::IndexError;
use crate::model::Sparse;
use crate::storage::StorageError;

/// At most this many spill buckets (their write buffers all live at once).
const MAX_BUCKETS: u64 = 64;
/// At most this many stored entries are read per step.
const MAX_STEP: u64 = 1 << 20;

/// How far a build has come (entries spilled plus entries placed, out of twice nnz).
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

/// Memory plan of one build.
struct Plan {
    /// Entries per output window.
    cap: u64,
    /// New major lines per bucket.
    width: u64,
    buckets: u64,
    /// Entries read per step.
    step: u64,
    /// Bytes buffered per spill before writing (usize::MAX: all in memory).
    flush_at: usize,
}

fn plan(nnz: u64, n_out: u64, rec: u64, out_entry: u64, mem: u64) -> Plan {
    let cap = ((mem / 2) / out_entry).max(64);
    let buckets = nnz.div_ceil((cap / 2).max(1)).clamp(1, MAX_BUCKETS).min(n_out.max(1));
    let width = n_out.div_ceil(buckets).max(1);
    let buckets = n_out.div_ceil(width).max(1);
    let step = (mem / 16 / 24).clamp(256, MAX_STEP);
    let in_memory = buckets == 1 && nnz.saturating_mul(rec) <= mem / 4;
    let flush_at = if in_memory { usize::MAX } else { ((mem / 8) / buckets).clamp(4096, 1 << 20) as usize };
    Plan { cap, width, buckets, step, flush_at }
}

/// Entries of one bucket, in stored order: in memory, then in a temporary file once large.
struct Spill {
    path: PathBuf,
    file: Option<File>,
    on_disk: u64,
    buf: Vec<u8>,
    flush_at: usize,
}

impl Spill {
    fn push(&mut self, rec: &[u8]) -> Result<(), IndexError> {
        self.buf.extend_from_slice(rec);
        if self.buf.len() >= self.flush_at {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IndexError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let io = |e| IndexError::io(&self.path, e);
        if self.file.is_none() {
            self.file = Some(File::options().read(true).write(true).create_new(true).open(&self.path).map_err(io)?);
        }
        if let Some(f) = &self.file {
            f.write_all_at(&self.buf, self.on_disk).map_err(io)?;
        }
        self.on_disk += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Calls `f` on pieces (whole records of `rec` bytes) of everything spilled, in order.
    fn for_each(&self, rec: usize, piece: usize, mut f: impl FnMut(&[u8])) -> Result<(), IndexError> {
        if let Some(file) = &self.file {
            let mut buf = vec![0u8; (piece / rec).max(1) * rec];
            let mut at = 0;
            while at < self.on_disk {
                let n = (self.on_disk - at).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], at).map_err(|e| IndexError::io(&self.path, e))?;
                f(&buf[..n]);
                at += n as u64;
            }
        }
        f(&self.buf);
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn put_uint(out: &mut Vec<u8>, v: u64, width: u64) {
    out.extend_from_slice(&v.to_le_bytes()[..width as usize]);
}

fn get_uint(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(x)
}

/// Builds the transposed index of the stored matrix `m` (whole, as stored) described by
/// `layout` into `dest`, using about `mem` bytes of working memory and spilling next to `dest`.
/// Returns the index file's size.
pub fn build(m: &Sparse, layout: &Layout, dest: &Path, mem: u64, progress: &Progress) -> Result<u64, IndexError> {
    let corrupt = |why: String| IndexError::Store(StorageError::corrupt(&layout.matrix, why));
    let dw = m.data.elem_size() as u64;
    let n_in = m.indptr.len().saturating_sub(1);
    let n_out = layout.out_major();
    let (iw, nnz) = (layout.index_width(), layout.nnz);
    let mw = if n_in > u32::MAX as u64 { 8 } else { 4 };
    let cw = if n_out > u32::MAX as u64 { 8 } else { 4 };
    let rec = mw + cw + dw;
    let p = plan(nnz, n_out, rec, iw + dw, mem);
    progress.total.store(2 * nnz, Ordering::Relaxed);
    let mut writer = IndexWriter::create(dest, layout, dw)?;
    let stem = dest.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut spills: Vec<Spill> = (0..p.buckets)
        .map(|b| Spill {
            path: dest.with_file_name(format!(".{stem}.spill.{}.{b}", std::process::id())),
            file: None,
            on_disk: 0,
            buf: Vec::new(),
            flush_at: p.flush_at,
        })
        .collect();

    // 1. Spill, counting entries per new major line.
    let mut counts = vec![0u64; n_out as usize + 1];
    let ptr0 = m.indptr.read_i64(0, 1)?.first().copied().unwrap_or(0);
    if ptr0 < 0 {
        return Err(corrupt(format!("negative indptr {ptr0}")));
    }
    let mut recbuf = Vec::with_capacity(rec as usize);
    let mut line = 0u64;
    while line < n_in {
        let l1 = (line + p.step).min(n_in);
        let ptr = m.indptr.read_i64(line, l1 + 1)?;
        if ptr.windows(2).any(|w| w[0] > w[1]) || ptr.iter().any(|&v| v < ptr0 || (v - ptr0) as u64 > nnz) {
            return Err(corrupt(format!("indptr out of order or past the data near line {line}")));
        }
        let (mut at, end) = (ptr[0], ptr[ptr.len() - 1]);
        let mut li = 0usize;
        while at < end {
            let e = (at + p.step as i64).min(end);
            let idx = m.indices.read_i64(at as u64, e as u64)?;
            let data = m.data.read_flat(at as u64, e as u64)?;
            for (k, (&c, v)) in idx.iter().zip(data.chunks_exact(dw as usize)).enumerate() {
                let pos = at + k as i64;
                while ptr[li + 1] <= pos {
                    li += 1;
                }
                if c < 0 || c as u64 >= n_out {
                    return Err(corrupt(format!("index {c} out of range (extent {n_out})")));
                }
                counts[c as usize + 1] += 1;
                recbuf.clear();
                put_uint(&mut recbuf, line + li as u64, mw);
                put_uint(&mut recbuf, c as u64, cw);
                recbuf.extend_from_slice(v);
                spills[(c as u64 / p.width) as usize].push(&recbuf)?;
            }
            progress.add((e - at) as u64);
            at = e;
        }
        line = l1;
    }

    // 2. Pointers, then each bucket's entries at their places.
    for i in 0..n_out as usize {
        counts[i + 1] += counts[i];
    }
    let ptr = counts;
    if ptr[n_out as usize] != nnz {
        return Err(corrupt(format!("indptr says {nnz} entries, found {}", ptr[n_out as usize])));
    }
    for piece in ptr.chunks(1 << 16) {
        let mut out = Vec::with_capacity(piece.len() * iw as usize);
        piece.iter().for_each(|&v| put_uint(&mut out, v, iw));
        writer.append(Section::Indptr, &out)?;
    }
    let piece = p.flush_at.min(1 << 20);
    for (b, spill) in spills.into_iter().enumerate() {
        let c_lo = b as u64 * p.width;
        let c_hi = (c_lo + p.width).min(n_out);
        let (p_lo, p_hi) = (ptr[c_lo as usize], ptr[c_hi as usize]);
        let mut w0 = p_lo;
        while w0 < p_hi {
            let w1 = (w0 + p.cap).min(p_hi);
            let mut cursor = ptr[c_lo as usize..c_hi as usize].to_vec();
            let mut idx_out = vec![0u8; ((w1 - w0) * iw) as usize];
            let mut dat_out = vec![0u8; ((w1 - w0) * dw) as usize];
            let (mw, cw, iw, dw) = (mw as usize, cw as usize, iw as usize, dw as usize);
            spill.for_each(rec as usize, piece, |bytes| {
                for r in bytes.chunks_exact(rec as usize) {
                    let slot = &mut cursor[(get_uint(&r[mw..mw + cw]) - c_lo) as usize];
                    let pos = *slot;
                    *slot += 1;
                    if pos >= w0 && pos < w1 {
                        let i = (pos - w0) as usize;
                        idx_out[i * iw..][..iw].copy_from_slice(&get_uint(&r[..mw]).to_le_bytes()[..iw]);
                        dat_out[i * dw..][..dw].copy_from_slice(&r[mw + cw..]);
                    }
                }
            })?;
            writer.append(Section::Indices, &idx_out)?;
            writer.append(Section::Data, &dat_out)?;
            progress.add(w1 - w0);
            w0 = w1;
        }
    }
    writer.finish()
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
                                            chunk in 1u64..50, mem in prop::sample::select(vec![1u64, 300, 5000, 1 << 20]), ptr0 in 0i64..3) {
            let mut x = seed | 1;
            let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
            let (mut indptr, mut idx, mut data) = (vec![ptr0], Vec::new(), Vec::new());
            // Leading garbage entries before indptr[0], as a window of a larger array would have.
            for _ in 0..ptr0 { idx.push(0i32); data.push(f64::NAN); }
            for _ in 0..major {
                let n = if next() % 5 == 0 { 0 } else { next() % (minor + 4) };
                for _ in 0..n {
                    idx.push((next() % minor) as i32);
                    data.push(if next() % 6 == 0 { 0.0 } else { (next() % 1000) as f64 - 500.0 });
                }
                indptr.push(idx.len() as i64);
            }
            let cache = Arc::new(ChunkCache::new(1 << 16));
            let ids = ArrIds::default();
            let arr = |n: u64, t, b| Arr::new(Arc::new(MemSource::num(vec![n], vec![chunk], t, b)), &cache, &ids);
            let len = idx.len() as u64;
            let shape = if csc { [minor, major] } else { [major, minor] };
            let m = Sparse {
                format: if csc { SparseFormat::Csc } else { SparseFormat::Csr },
                shape,
                data: arr(len, NumType::F64, le(&data, |v| v.to_le_bytes().to_vec())),
                indices: arr(len, NumType::I32, le(&idx, |v| v.to_le_bytes().to_vec())),
                indptr: arr(major + 1, NumType::I64, le(&indptr, |v| v.to_le_bytes().to_vec())),
                indptr_base: 0,
                minor: None,
            };
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
            let store = Identity { location: "/s".into(), size: 1, mtime: 2, inode: None };
            let mut l = layout(&m, store, "/X".into()).unwrap();
            l.block = 4096;
            let dest = dir.path().join("x.idx");
            let progress = Progress::default();
            let size = build(&m, &l, &dest, mem, &progress).unwrap();
            prop_assert_eq!(progress.percent(), if want_idx.is_empty() { 0 } else { 100 });
            prop_assert_eq!(std::fs::metadata(&dest).unwrap().len(), size);
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(names.len(), 1, "spills and temporaries removed: {:?}", names);
            let f = IndexFile::open(&dest, &l, 8).unwrap();
            let nnz = want_idx.len() as u64;
            prop_assert_eq!(section(&f, Section::Indptr, (minor + 1) * 4), le(&want_ptr, |v| v.to_le_bytes().to_vec()));
            prop_assert_eq!(section(&f, Section::Indices, nnz * 4), le(&want_idx, |v| v.to_le_bytes().to_vec()));
            prop_assert_eq!(section(&f, Section::Data, nnz * 8), le(&want_data, |v| v.to_le_bytes().to_vec()));
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
        };
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&m, Identity { location: "/s".into(), size: 1, mtime: 2, inode: None }, "/X".into()).unwrap();
        let err = build(&m, &l, &dir.path().join("x"), 1 << 20, &Progress::default()).unwrap_err().to_string();
        assert!(err.contains("/X") && err.contains("out of range"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
