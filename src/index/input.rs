//! The stored entries of a sparse matrix, streamed front to back for a build.

use super::build::Progress;
use super::format::Layout;
use super::IndexError;
use crate::model::{Arr, Sparse};
use crate::storage::StorageError;

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
pub(super) struct Input<'a> {
    m: &'a Sparse,
    layout: &'a Layout,
    step: u64,
    ptr0: i64,
}

impl<'a> Input<'a> {
    /// The entries of `m` (whole, as stored, described by `layout`), read about `step` at a time.
    pub(super) fn new(m: &'a Sparse, layout: &'a Layout, step: u64) -> Result<Self, IndexError> {
        let ptr0 = m.indptr.read_i64(0, 1)?.first().copied().unwrap_or(0);
        let input = Input { m, layout, step: step.max(1), ptr0 };
        if ptr0 < 0 {
            return Err(input.corrupt(format!("negative indptr {ptr0}")));
        }
        Ok(input)
    }

    /// The store's matrix is not what its metadata says.
    pub(super) fn corrupt(&self, why: String) -> IndexError {
        IndexError::Store(StorageError::corrupt(&self.layout.matrix, why))
    }

    /// Stored major lines.
    pub(super) fn lines(&self) -> u64 {
        self.m.indptr.len().saturating_sub(1)
    }

    /// Calls `f(old major line, old minor index, value bytes)` for every entry of stored lines
    /// `lines` in stored order (value bytes only when `with_data`).
    pub(super) fn each(&self, lines: std::ops::Range<u64>, with_data: bool, progress: &Progress, f: impl FnMut(u64, u64, &[u8])) -> Result<(), IndexError> {
        self.each_in(lines, with_data, None, progress, f)
    }

    /// [`Input::each`], but `f` may be spared the entries whose minor index is outside `minor`
    /// (a run of a line whose indices are sorted is cut to `minor` by binary search; anything
    /// else is passed whole, for `f` to skip).
    pub(super) fn each_in(
        &self,
        lines: std::ops::Range<u64>,
        with_data: bool,
        minor: Option<std::ops::Range<u64>>,
        progress: &Progress,
        mut f: impl FnMut(u64, u64, &[u8]),
    ) -> Result<(), IndexError> {
        let (m, nnz, n_out) = (self.m, self.layout.nnz, self.layout.out_major());
        let n_in = self.lines().min(lines.end);
        let dw = m.data.elem_size();
        let (mut indices, mut data) = (Stream::new(&m.indices), Stream::new(&m.data));
        let mut idx = Vec::new();
        let mut line = lines.start;
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
                    let run = &idx[k..stop];
                    let (lo, hi) = match &minor {
                        // Sorted (and so in range when its ends are): only the wanted part.
                        Some(m) if run.is_sorted() && run.first().is_none_or(|&c| c >= 0) && run.last().is_none_or(|&c| (c as u64) < n_out) => {
                            (run.partition_point(|&c| (c as u64) < m.start), run.partition_point(|&c| (c as u64) < m.end))
                        }
                        _ => (0, run.len()),
                    };
                    let first = k + lo;
                    for (j, &c) in run[lo..hi].iter().enumerate() {
                        if c < 0 || c as u64 >= n_out {
                            return Err(self.corrupt(format!("index {c} out of range (extent {n_out})")));
                        }
                        let v = if with_data { &vals[(first + j) * dw..(first + j + 1) * dw] } else { &[][..] };
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

/// Zeroed buffers for `len` entries of `iw`-byte indices and `dw`-byte values, asked for huge
/// pages: a scatter writes them at thousands of places at once, and on 4 KiB pages nearly every
/// store would miss the TLB (with [`put`]'s prefetch: scatter 0.80 -> 0.62 s at 1M x 2,000).
pub(super) fn entry_buffers(len: usize, (iw, dw): (usize, usize)) -> (Vec<u8>, Vec<u8>) {
    let (idx, dat) = (vec![0u8; len * iw], vec![0u8; len * dw]);
    crate::util::advise_huge_pages(&idx);
    crate::util::advise_huge_pages(&dat);
    (idx, dat)
}

/// Stores entry `slot`: old line `line` as an `iw`-byte index and the `dw` value bytes `v`
/// (fixed-size moves when `IW`/`DW` are known: a `memcpy` call per field doubled the pass).
#[inline(always)]
pub(super) fn put<const IW: usize, const DW: usize>(idx: &mut [u8], dat: &mut [u8], slot: usize, line: u64, v: &[u8], (iw, dw): (usize, usize)) {
    if IW > 0 {
        let (Some(i), Some(d), Ok(val)) =
            (idx.get_mut(slot * IW..(slot + 1) * IW), dat.get_mut(slot * DW..(slot + 1) * DW), <[u8; DW]>::try_from(v))
        else {
            return;
        };
        i.copy_from_slice(&line.to_le_bytes()[..IW]);
        d.copy_from_slice(&val);
        // The next cache line of both buffers, ahead of this new line's next entry: entries of
        // one new line arrive far apart, so a store to a line not yet cached would stall.
        prefetch(idx.as_ptr().wrapping_add((slot + 1) * IW + 63));
        prefetch(dat.as_ptr().wrapping_add((slot + 1) * DW + 63));
    } else if let (Some(i), Some(d)) = (idx.get_mut(slot * iw..(slot + 1) * iw), dat.get_mut(slot * dw..(slot + 1) * dw)) {
        i.copy_from_slice(&line.to_le_bytes()[..iw]);
        d.copy_from_slice(v);
    }
}

/// Asks the CPU to bring the cache line holding `p` closer (a hint: never faults, any address).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never dereferences `p` architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
