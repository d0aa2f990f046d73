//! Builds a transposed index (CSR → CSC, or CSC → CSR) by streaming passes over the stored
//! arrays, within a memory bound.
//!
//! 1. **Count.** One pass over `indptr` and `indices` counts the entries of every new major
//!    line (an old minor index), the stored lines cut into parts counted on parallel threads;
//!    the prefix sums are the new pointers.
//! 2. **Scatter.** Either one pass through per-line buffers written to their final places
//!    ([`buffered`], when the buffers are large enough: a few thousand genes), or windows of
//!    output positions that fit in the memory bound, one pass over the input each
//!    ([`windowed`]). Either way each part runs on its own thread into positions only it owns
//!    ([`Counted::shares`]). Entries are visited in stored order, so each new line lists its
//!    entries by increasing old line — sorted, duplicates and explicit zeros kept in stored
//!    order, exactly as scipy's `tocsc()` / `tocsr()`.
//!
//! No temporary spill files: every byte is written once, to its place in the index.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{IndexWriter, Layout, Section};
use super::input::Input;
use super::{buffered, windowed, IndexError};
use crate::model::Sparse;
use crate::storage::StorageError;

/// At most this many stored entries are read per step.
const MAX_STEP: u64 = 1 << 20;
/// Threads of one build, at most.
const MAX_THREADS: usize = 4;

/// How far a build has come (entries counted plus entries visited by scatter passes).
#[derive(Default)]
pub struct Progress {
    /// Work done.
    pub done: AtomicU64,
    /// Total work.
    pub total: AtomicU64,
}

impl Progress {
    /// Counts `n` more units of work done.
    pub fn add(&self, n: u64) {
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

/// Builds the transposed index of the stored matrix `m` (whole, as stored) described by
/// `layout` into `dest`, using about `mem` bytes of working memory. Returns the file's size.
pub fn build(m: &Sparse, layout: &Layout, dest: &Path, mem: u64, progress: &Progress) -> Result<u64, IndexError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
    build_as(m, layout, dest, mem, progress, Scatter::Auto, cores as u64)
}

/// How the scatter step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scatter {
    /// Buffered when its writes are large enough, else windowed.
    Auto,
    /// Always by windows (tests).
    #[cfg(test)]
    Windowed,
    /// Always buffered (tests).
    #[cfg(test)]
    Buffered,
}

/// [`build`] with the scatter step chosen by `how`, on at most `cores` threads.
fn build_as(m: &Sparse, layout: &Layout, dest: &Path, mem: u64, progress: &Progress, how: Scatter, cores: u64) -> Result<u64, IndexError> {
    let dw = m.data.elem_size() as u64;
    let (iw, nnz, n_out) = (layout.index_width(), layout.nnz, layout.out_major());
    let input = Input::new(m, layout, (mem / 32 / 24).clamp(256, MAX_STEP))?;
    // A part of the stored lines per thread, as long as each part's counts take little memory.
    let threads = cores.max(1).min((mem / 8 / (n_out.max(1) * 8)).max(1)).min(input.lines().max(1));
    let parts: Vec<Range<u64>> = (0..threads).map(|t| input.lines() * t / threads..input.lines() * (t + 1) / threads).collect();
    progress.total.store(nnz * 2, Ordering::Relaxed);
    let mut writer = IndexWriter::create(dest, layout, dw)?;

    let t0 = std::time::Instant::now();
    // 1. Count, per part.
    let counts = on_threads(parts.clone(), |lines| {
        let mut n = vec![0u64; n_out as usize];
        input.each(lines, false, progress, |_, c, _| n[c as usize] += 1)?;
        Ok(n)
    })?;
    let mut ptr = vec![0u64; n_out as usize + 1];
    for c in 0..n_out as usize {
        ptr[c + 1] = ptr[c] + counts.iter().map(|n| n[c]).sum::<u64>();
    }
    if ptr[n_out as usize] != nnz {
        return Err(input.corrupt(format!("indptr says {nnz} entries, found {}", ptr[n_out as usize])));
    }
    let counted = Counted { parts, counts, ptr };
    for piece in counted.ptr.chunks(1 << 16) {
        let mut out = Vec::with_capacity(piece.len() * iw as usize);
        piece.iter().for_each(|&v| out.extend_from_slice(&v.to_le_bytes()[..iw as usize]));
        writer.append(Section::Indptr, &out)?;
    }

    let t1 = t0.elapsed();
    // 2. Scatter: in one pass through per-line buffers when they are large enough, else by
    //    windows of about 3/4 of the memory, one pass each.
    let widths = (iw as usize, dw as usize);
    let count_bytes = threads * n_out * 8;
    // The buffered scatter's per-line state besides the counts: place and fill, staging slots.
    let stage_bytes = threads * n_out * (32 + buffered::STAGE as u64 * (iw + dw));
    let min_per_write = match how {
        Scatter::Auto => buffered::MIN_PER_WRITE,
        #[cfg(test)]
        Scatter::Buffered => 0,
        #[cfg(test)]
        Scatter::Windowed => u64::MAX,
    };
    let how = match buffered::Plan::new(&counted.counts, (mem / 4 * 3).saturating_sub(count_bytes + stage_bytes), iw + dw, min_per_write) {
        Some(plan) => {
            buffered::scatter(&input, &counted, &plan, widths, &writer, progress)?;
            format!("in one pass on {threads} threads")
        }
        None => {
            // The parts' counts, and each part's cursor and limit per new line of a window.
            let cap = ((mem / 4 * 3).saturating_sub(count_bytes * 3) / (iw + dw)).max(64);
            let passes = nnz.div_ceil(cap);
            progress.total.store(nnz * (1 + passes), Ordering::Relaxed);
            windowed::scatter(&input, &counted, cap, widths, &mut writer, progress)?;
            format!("in {passes} passes of up to {cap} entries on {threads} threads")
        }
    };
    let t2 = t0.elapsed();
    let size = writer.finish()?;
    log::debug!(
        "{}: index counted in {:.2} s, scattered {how} in {:.2} s, checksummed and synced in {:.2} s",
        layout.matrix,
        t1.as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t0.elapsed() - t2).as_secs_f64()
    );
    Ok(size)
}

/// What the count pass found: the stored lines cut into parts (one per thread), each part's
/// entries per new line, and the new lines' pointers (`ptr[c]..ptr[c + 1]`: line `c`'s positions).
pub(super) struct Counted {
    /// Stored lines of each part.
    pub parts: Vec<Range<u64>>,
    /// Entries per new line, per part.
    pub counts: Vec<Vec<u64>>,
    /// Output position of each new line's first entry, and `nnz` last.
    pub ptr: Vec<u64>,
}

impl Counted {
    /// Each part's positions in new lines `cols`: `(start, end)` per line, indexed from
    /// `cols.start`. Part `t`'s entries of a line follow part `t - 1`'s, so each line keeps
    /// them in stored order and the parts' ranges never overlap.
    pub(super) fn shares(&self, cols: Range<usize>) -> Vec<(Vec<u64>, Vec<u64>)> {
        let mut at = self.ptr[cols.clone()].to_vec();
        self.counts
            .iter()
            .map(|n| {
                let end: Vec<u64> = at.iter().zip(&n[cols.clone()]).map(|(s, k)| s + k).collect();
                (std::mem::replace(&mut at, end.clone()), end)
            })
            .collect()
    }
}

/// Runs `f` on every item, each on its own thread (the first on this one); the results in order.
pub(super) fn on_threads<I: Send, T: Send>(items: Vec<I>, f: impl Fn(I) -> Result<T, IndexError> + Sync) -> Result<Vec<T>, IndexError> {
    let mut items = items.into_iter();
    let Some(first) = items.next() else { return Ok(Vec::new()) };
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items.map(|i| s.spawn(move || f(i))).collect();
        let mut out = vec![f(first)?];
        for h in handles {
            out.push(h.join().map_err(|_| IndexError::invalid("index build", "a build thread panicked"))??);
        }
        Ok(out)
    })
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
        fn index_equals_reference_transpose(major in prop_oneof![0u64..80, 300u64..600], minor in 1u64..40, seed in any::<u64>(), csc in any::<bool>(),
                                            chunk in 1u64..50, mem in prop::sample::select(vec![1u64, 300, 5000, 1 << 20]), ptr0 in 0i64..3,
                                            how in prop::sample::select(vec![Scatter::Auto, Scatter::Windowed, Scatter::Buffered]),
                                            cores in 1u64..5, sorted in any::<bool>(),
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
                let mut line: Vec<(i32, f64)> = (0..n)
                    .map(|_| ((next() % minor) as i32, if next() % 6 == 0 { 0.0 } else { (next() % 1000) as f64 - 500.0 }))
                    .collect();
                // Sorted lines (duplicates kept in stored order) let a windowed pass skip by
                // binary search; unsorted ones are visited whole.
                if sorted {
                    line.sort_by_key(|e| e.0);
                }
                idx.extend(line.iter().map(|e| e.0));
                data.extend(line.iter().map(|e| e.1));
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
            let size = build_as(&m, &l, &dest, mem, &progress, how, cores).unwrap();
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
            sorted: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&m, Identity { location: "/s".into(), size: 1, mtime: 2, inode: None, etag: None }, "/X".into()).unwrap();
        let err = build(&m, &l, &dir.path().join("x"), 1 << 20, &Progress::default()).unwrap_err().to_string();
        assert!(err.contains("/X") && err.contains("out of range"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
