//! Scatter through per-line buffers, in one pass: the stored lines are cut into parts, one per
//! thread; each part's entries go into a buffer per new line (sized in proportion to the line's
//! entries in that part), and a full buffer is written straight to its final place in the file.
//! Parts know from the count pass where each of their lines starts, so they write disjoint
//! ranges and each new line still lists its entries by increasing old line.
//!
//! One pass over the input instead of one per window; used when the buffers are large enough
//! that the writes stay few (an index of a few thousand genes), else [`super::windowed`].

use std::ops::Range;

use super::build::{on_threads, Counted, Progress};
use super::format::{IndexWriter, Section};
use super::input::{entry_buffers, put, Input};
use super::IndexError;

/// Fewest entries per buffer write on average, else the windowed scatter is used.
pub(super) const MIN_PER_WRITE: u64 = 256;

/// Entries of one new line staged together before they move to the line's buffer (software
/// write-combining): a part stores into thousands of lines at once, and a store straight into
/// each line's buffer misses the cache nearly every time; the small staging area of every line
/// stays cached, and each move writes whole cache lines.
pub(super) const STAGE: usize = 16;

/// Buffer places of one part: line `c` buffers slots `lines[c].0..lines[c].1`.
struct PartPlan {
    lines: Vec<(u64, u64)>,
    /// Slots in all.
    size: u64,
}

/// How the per-line buffers of every part are sized.
pub(super) struct Plan {
    parts: Vec<PartPlan>,
}

impl Plan {
    /// Sizes the buffers of parts with entry `counts` (per part, per new line) within `mem`
    /// bytes of `width` bytes per entry; `None` when the writes would average fewer than
    /// `min_per_write` entries. Each line's buffer starts at a multiple of [`STAGE`] slots and
    /// holds a multiple of them unless it holds the line whole, so staged groups move as whole
    /// cache lines ([`stream_copy`]); that costs at most `2 * STAGE` slots per line.
    pub(super) fn new(counts: &[Vec<u64>], mem: u64, width: u64, min_per_write: u64) -> Option<Plan> {
        let nnz: u64 = counts.iter().flatten().sum();
        let n_out = counts.first().map_or(0, |n| n.len() as u64);
        let per_part = (mem / (counts.len().max(1) as u64) / width.max(1)).saturating_sub(n_out * 2 * STAGE as u64);
        let stage = STAGE as u64;
        let mut writes = 0u64;
        let mut parts = Vec::with_capacity(counts.len());
        for n in counts {
            let total: u64 = n.iter().sum();
            let mut lines = Vec::with_capacity(n.len());
            let mut at = 0u64;
            for &k in n {
                let cap = if total <= per_part { k } else { (k as u128 * per_part as u128 / total as u128) as u64 };
                let cap = if k > 0 { cap.max(1).next_multiple_of(stage).min(k) } else { 0 };
                writes += k.div_ceil(cap.max(1));
                lines.push((at, at + cap));
                at += cap.next_multiple_of(stage);
            }
            parts.push(PartPlan { lines, size: at });
        }
        (writes.saturating_mul(min_per_write) <= nnz).then_some(Plan { parts })
    }
}

/// One new line's place in a part's buffer: the hot state of the scatter, 32 bytes within one
/// cache line instead of a load from each of four arrays per entry.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Line {
    /// First buffer slot of the line (a multiple of [`STAGE`]).
    start: u64,
    /// One past its last buffer slot.
    end: u64,
    /// Entries in the buffer, staged ones included.
    fill: u64,
    /// Of those, entries still staged.
    staged: u64,
}

/// One part's buffers and fill state.
struct Part {
    lines: Vec<Line>,
    /// Next output position of each new line.
    cursor: Vec<u64>,
    /// One past the last output position of each new line in this part.
    limit: Vec<u64>,
    idx: Vec<u8>,
    dat: Vec<u8>,
    /// Entries staged per new line, `STAGE` slots per line (made by [`Part::run`] for fixed
    /// widths only).
    stage_idx: Vec<u8>,
    stage_dat: Vec<u8>,
}

impl Part {
    /// Moves line `c`'s staged entries to the end of its filled part of the buffer.
    #[inline(always)]
    fn unstage<const IW: usize, const DW: usize>(&mut self, c: usize) {
        let l = &mut self.lines[c];
        let n = l.staged as usize;
        if n == 0 {
            return;
        }
        let to = (l.start + l.fill) as usize - n;
        l.staged = 0;
        let from = c * STAGE;
        let (idx, dat) = (&mut self.idx[to * IW..(to + n) * IW], &mut self.dat[to * DW..(to + n) * DW]);
        let (si, sd) = (&self.stage_idx[from * IW..(from + n) * IW], &self.stage_dat[from * DW..(from + n) * DW]);
        if n == STAGE {
            stream_copy(idx, si);
            stream_copy(dat, sd);
        } else {
            idx.copy_from_slice(si);
            dat.copy_from_slice(sd);
        }
    }

    /// Writes line `c`'s buffered entries to their place.
    fn flush(&mut self, c: usize, iw: usize, dw: usize, writer: &IndexWriter, input: &Input) -> Result<(), IndexError> {
        let Line { start, fill: n, .. } = self.lines[c];
        if n == 0 {
            return Ok(());
        }
        let at = self.cursor[c];
        if at + n > self.limit[c] {
            return Err(input.corrupt(format!("more entries in new line {c} than counted (store changed during the build?)")));
        }
        store_fence();
        let b = start as usize;
        writer.write_at(Section::Indices, at * iw as u64, &self.idx[b * iw..(b + n as usize) * iw])?;
        writer.write_at(Section::Data, at * dw as u64, &self.dat[b * dw..(b + n as usize) * dw])?;
        self.cursor[c] = at + n;
        self.lines[c].fill = 0;
        Ok(())
    }

    /// Visits the part's stored `lines`, buffering and flushing; `IW`/`DW` fixed widths (0: use
    /// `iw`/`dw`).
    fn run<const IW: usize, const DW: usize>(
        &mut self,
        lines: Range<u64>,
        (iw, dw): (usize, usize),
        input: &Input,
        writer: &IndexWriter,
        progress: &Progress,
    ) -> Result<(), IndexError> {
        let (iw, dw) = if IW > 0 { (IW, DW) } else { (iw, dw) };
        let n_out = self.lines.len();
        if IW > 0 {
            (self.stage_idx, self.stage_dat) = (vec![0; n_out * STAGE * IW], vec![0; n_out * STAGE * DW]);
        }
        let mut failed = None;
        input.each(lines, true, progress, |line, c, v| {
            let c = c as usize;
            let Some(l) = self.lines.get_mut(c) else { return };
            let slot = l.start + l.fill;
            if slot >= l.end || v.len() != dw {
                // A line with more entries than counted: caught by the flush below.
                failed.get_or_insert_with(|| input.corrupt(format!("more entries in new line {c} than counted (store changed during the build?)")));
                return;
            }
            l.fill += 1;
            let full = slot + 1 == l.end;
            if IW > 0 {
                let s = c * STAGE + l.staged as usize;
                l.staged += 1;
                let staged = l.staged as usize;
                stage::<IW, DW>(&mut self.stage_idx, &mut self.stage_dat, s, line, v);
                if staged == STAGE || full {
                    self.unstage::<IW, DW>(c);
                }
            } else {
                put::<IW, DW>(&mut self.idx, &mut self.dat, slot as usize, line, v, (iw, dw));
            }
            if full && failed.is_none() {
                if let Err(err) = self.flush(c, iw, dw, writer, input) {
                    failed = Some(err);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        for c in 0..n_out {
            if IW > 0 {
                self.unstage::<IW, DW>(c);
            }
            self.flush(c, iw, dw, writer, input)?;
            if self.cursor[c] != self.limit[c] {
                return Err(input.corrupt(format!("fewer entries in new line {c} than counted (store changed during the build?)")));
            }
        }
        Ok(())
    }
}

/// Stores staged entry `slot`: old line `line` as an `IW`-byte index and the `DW` value bytes
/// `v` (the staging area stays cached: no prefetch, unlike [`put`]).
#[inline(always)]
fn stage<const IW: usize, const DW: usize>(idx: &mut [u8], dat: &mut [u8], slot: usize, line: u64, v: &[u8]) {
    if let (Some(i), Some(d), Ok(val)) = (idx.get_mut(slot * IW..(slot + 1) * IW), dat.get_mut(slot * DW..(slot + 1) * DW), <[u8; DW]>::try_from(v)) {
        i.copy_from_slice(&line.to_le_bytes()[..IW]);
        d.copy_from_slice(&val);
    }
}

/// Copies `src` to `dst` (same length) with non-temporal stores when both are whole 64-byte
/// lines of `dst`: a group of staged entries lands in a line of the buffer that is not cached,
/// and a plain store would first read that line from memory only to overwrite it.
#[inline(always)]
fn stream_copy(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if dst.len() == src.len() && dst.len() % 64 == 0 && (dst.as_ptr() as usize) % 64 == 0 {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        for k in (0..dst.len()).step_by(16) {
            // SAFETY: `k + 16 <= len` for both slices (equal lengths, a multiple of 16); the
            // destination is 16-byte aligned (64-byte aligned base, steps of 16); SSE2 is part of
            // x86_64. [`store_fence`] orders these stores before the buffer is read.
            unsafe { _mm_stream_si128(dst.as_mut_ptr().add(k).cast::<__m128i>(), _mm_loadu_si128(src.as_ptr().add(k).cast::<__m128i>())) };
        }
        return;
    }
    dst.copy_from_slice(src);
}

/// Makes [`stream_copy`]'s stores visible before the buffer is written out.
#[inline(always)]
fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a fence has no operands; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Places every entry: part `t` of `counted` (a range of stored lines) on its own thread, into
/// its own positions of each new line.
pub(super) fn scatter(input: &Input, counted: &Counted, plan: &Plan, (iw, dw): (usize, usize), writer: &IndexWriter, progress: &Progress) -> Result<(), IndexError> {
    let n_out = counted.ptr.len().saturating_sub(1);
    let mut jobs = Vec::with_capacity(counted.parts.len());
    for (t, ((cursor, limit), stored)) in counted.shares(0..n_out).into_iter().zip(&counted.parts).enumerate() {
        let (idx, dat) = entry_buffers(plan.parts[t].size as usize, (iw, dw));
        let lines = plan.parts[t].lines.iter().map(|&(start, end)| Line { start, end, fill: 0, staged: 0 }).collect();
        let part = Part { lines, cursor, limit, idx, dat, stage_idx: Vec::new(), stage_dat: Vec::new() };
        jobs.push((stored.clone(), part));
    }
    on_threads(jobs, |(lines, mut part)| with_widths!((iw, dw), part.run(lines, (iw, dw), input, writer, progress)))
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64-byte-aligned storage.
    #[repr(C, align(64))]
    struct Lines([u8; 256]);

    /// Whole aligned lines are streamed, anything else copied: the bytes are the same either way.
    #[test]
    fn stream_copy_copies_aligned_and_unaligned() {
        let src: Vec<u8> = (0..=255u8).collect();
        let mut dst = Lines([0; 256]);
        for (at, len) in [(0, 64), (0, 256), (64, 128), (4, 64), (0, 60), (16, 48)] {
            dst.0.fill(0);
            stream_copy(&mut dst.0[at..at + len], &src[..len]);
            store_fence();
            assert_eq!(&dst.0[at..at + len], &src[..len], "at {at}, {len} bytes");
            assert!(dst.0[..at].iter().chain(&dst.0[at + len..]).all(|&b| b == 0), "nothing else written");
        }
    }

    /// Every line's buffer starts at a multiple of `STAGE` slots and never overlaps the next;
    /// a line is buffered whole or in multiples of `STAGE`; a plan the build would use (writes
    /// large enough) keeps the padding within its memory.
    #[test]
    fn plan_aligns_line_buffers() {
        let small = vec![vec![0, 1, 17, 40, 5, 300], vec![3, 0, 64, 2, 100, 31]];
        let large: Vec<Vec<u64>> = small.iter().map(|n| n.iter().map(|k| k * 1000).collect()).collect();
        for (counts, min_per_write) in [(&small, 0), (&large, MIN_PER_WRITE)] {
            for mem in [1u64 << 10, 4 << 10, 64 << 10, 1 << 20, 16 << 20] {
                let Some(plan) = Plan::new(counts, mem, 8, min_per_write) else { continue };
                for (p, n) in plan.parts.iter().zip(counts) {
                    let mut last_end = 0;
                    for (&(s, e), &k) in p.lines.iter().zip(n) {
                        assert!(s % STAGE as u64 == 0 && s >= last_end && e - s <= k, "{mem}: {s}..{e} of {k}");
                        assert!(k == 0 || e - s == k || (e - s) % STAGE as u64 == 0, "{mem}: {s}..{e} of {k}");
                        assert!(k == 0 || e > s);
                        last_end = e;
                    }
                    assert!(p.size >= last_end);
                    if min_per_write > 0 {
                        assert!(p.size * 8 <= mem / 2, "{mem}: {} slots exceed the part's share", p.size);
                    }
                }
            }
        }
    }
}
