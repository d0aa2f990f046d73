//! Scatter by windows: the output positions are cut into windows that fit in memory; per
//! window, one pass over the stored entries places those whose final position falls in it, then
//! the window is appended to the file (sections written front to back, checksummed on the fly).
//! Used when the index has so many major lines that a buffer per line would be tiny.
//!
//! Each pass runs on as many threads as the count pass had parts: part `t` (a range of stored
//! lines) owns, in every new line `c`, the positions its own entries take there (the count pass
//! says how many, and the parts before it where they start), so the threads write disjoint
//! slots of the one window.

use std::ops::Range;

use super::build::{on_threads, Counted, Progress};
use super::format::{IndexWriter, Section};
use super::input::{entry_buffers, put, Input};
use super::IndexError;

/// Places every entry, `cap` output positions per pass, each part of `counted` on its own thread.
pub(super) fn scatter(input: &Input, counted: &Counted, cap: u64, (iw, dw): (usize, usize), writer: &mut IndexWriter, progress: &Progress) -> Result<(), IndexError> {
    let ptr = &counted.ptr;
    let nnz = ptr.last().copied().unwrap_or(0);
    let n_out = ptr.len().saturating_sub(1) as u64;
    let window = cap.min(nnz) as usize;
    let (mut idx_buf, mut dat_buf) = entry_buffers(window, (iw, dw));
    let mut w0 = 0u64;
    while w0 < nnz {
        let w1 = (w0 + cap).min(nnz);
        // New lines with entries in the window: [c_a, c_b).
        let c_a = ptr.partition_point(|&p| p <= w0).saturating_sub(1) as u64;
        let c_b = (ptr.partition_point(|&p| p < w1) as u64).min(n_out);
        let shares = counted.shares(c_a as usize..c_b as usize);
        let jobs: Vec<_> = shares
            .into_iter()
            .zip(&counted.parts)
            .map(|((cursor, limit), lines)| (lines.clone(), Pass { cursor, limit, cols: c_a..c_b, window: w0..w1 }))
            .collect();
        let len = (w1 - w0) as usize;
        let out = Window::new(&mut idx_buf[..len * iw], &mut dat_buf[..len * dw], (iw, dw));
        let w = (iw, dw);
        let placed: u64 = on_threads(jobs, |(lines, pass)| with_widths!(w, pass.run(lines, input, progress, &out)))?.into_iter().sum();
        // Slots are written at most once each (every part's writes stay inside its own
        // ranges): the window is whole when as many were placed as it has.
        if placed != w1 - w0 {
            return Err(input.corrupt(format!("{placed} entries for positions {w0}..{w1} (store changed during the build?)")));
        }
        writer.append(Section::Indices, &idx_buf[..len * iw])?;
        writer.append(Section::Data, &dat_buf[..len * dw])?;
        // The window is final: the disk writes it while the next passes run.
        writer.start_writeback();
        w0 = w1;
    }
    Ok(())
}

/// One part's scatter pass: places the entries of new lines `cols` whose output position falls
/// in `window`, advancing each line's `cursor` up to its `limit` (both indexed from `cols.start`).
struct Pass {
    cursor: Vec<u64>,
    limit: Vec<u64>,
    cols: Range<u64>,
    window: Range<u64>,
}

impl Pass {
    /// Visits the stored `lines`, placing into `out` the entries of this pass; `IW`/`DW`: fixed
    /// widths (`0, 0`: the window's). Returns how many were placed.
    fn run<const IW: usize, const DW: usize>(mut self, lines: Range<u64>, input: &Input, progress: &Progress, out: &Window) -> Result<u64, IndexError> {
        let (mut placed, mut over) = (0u64, None);
        input.each_in(lines, true, Some(self.cols.clone()), progress, |line, c, v| {
            if !self.cols.contains(&c) {
                return;
            }
            let k = (c - self.cols.start) as usize;
            let (Some(slot), Some(&limit)) = (self.cursor.get_mut(k), self.limit.get(k)) else { return };
            let pos = *slot;
            if pos >= limit {
                over.get_or_insert(c);
                return;
            }
            *slot += 1;
            if self.window.contains(&pos) {
                out.put::<IW, DW>((pos - self.window.start) as usize, line, v);
                placed += 1;
            }
        })?;
        match over {
            Some(c) => Err(input.corrupt(format!("more entries in new line {c} than counted (store changed during the build?)"))),
            None => Ok(placed),
        }
    }
}

/// The window's two output buffers, written from several threads at slots each thread owns.
struct Window {
    idx: *mut u8,
    dat: *mut u8,
    len: usize,
    widths: (usize, usize),
}

// SAFETY: threads write through `Window::put` only, at distinct slots (see `Pass::run`: each
// writes inside its own ranges of positions), and the buffers outlive the threads (scoped).
unsafe impl Sync for Window {}

impl Window {
    fn new(idx: &mut [u8], dat: &mut [u8], (iw, dw): (usize, usize)) -> Self {
        let len = (idx.len() / iw.max(1)).min(dat.len() / dw.max(1));
        Window { idx: idx.as_mut_ptr(), dat: dat.as_mut_ptr(), len, widths: (iw, dw) }
    }

    /// Stores entry `slot` (old line `line`, value bytes `v`) with [`put`]; `IW`/`DW` fixed
    /// widths (0: the window's). A slot past the window is ignored.
    #[inline(always)]
    fn put<const IW: usize, const DW: usize>(&self, slot: usize, line: u64, v: &[u8]) {
        let (iw, dw) = self.widths;
        if slot >= self.len {
            return;
        }
        // SAFETY: `slot < len`, so both slices lie inside the buffers; no other thread writes
        // this slot (the caller owns it), and nothing reads the buffers until the pass ends.
        let (i, d) = unsafe { (std::slice::from_raw_parts_mut(self.idx.add(slot * iw), iw), std::slice::from_raw_parts_mut(self.dat.add(slot * dw), dw)) };
        put::<IW, DW>(i, d, 0, line, v, (iw, dw));
    }
}
