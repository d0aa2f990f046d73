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

/// Buffer sizes of one part: line `c` buffers `start[c + 1] - start[c]` entries.
struct PartPlan {
    start: Vec<u64>,
}

/// How the per-line buffers of every part are sized.
pub(super) struct Plan {
    parts: Vec<PartPlan>,
}

impl Plan {
    /// Sizes the buffers of parts with entry `counts` (per part, per new line) within `mem`
    /// bytes of `width` bytes per entry; `None` when the writes would average fewer than
    /// `min_per_write` entries.
    pub(super) fn new(counts: &[Vec<u64>], mem: u64, width: u64, min_per_write: u64) -> Option<Plan> {
        let nnz: u64 = counts.iter().flatten().sum();
        let per_part = mem / (counts.len().max(1) as u64) / width.max(1);
        let mut writes = 0u64;
        let mut parts = Vec::with_capacity(counts.len());
        for n in counts {
            let total: u64 = n.iter().sum();
            let mut start = Vec::with_capacity(n.len() + 1);
            let mut at = 0u64;
            start.push(0);
            for &k in n {
                let cap = if total <= per_part { k } else { (k as u128 * per_part as u128 / total as u128) as u64 };
                let cap = if k > 0 { cap.max(1) } else { 0 };
                writes += k.div_ceil(cap.max(1));
                at += cap;
                start.push(at);
            }
            parts.push(PartPlan { start });
        }
        (writes.saturating_mul(min_per_write) <= nnz).then_some(Plan { parts })
    }
}

/// One part's buffers and fill state.
struct Part<'a> {
    plan: &'a PartPlan,
    /// Next output position of each new line.
    cursor: Vec<u64>,
    /// One past the last output position of each new line in this part.
    limit: Vec<u64>,
    fill: Vec<u64>,
    idx: Vec<u8>,
    dat: Vec<u8>,
    /// Entries staged per new line, and their bytes: `STAGE` slots per line (made by
    /// [`Part::run`] for fixed widths only).
    staged: Vec<u8>,
    stage_idx: Vec<u8>,
    stage_dat: Vec<u8>,
}

impl Part<'_> {
    /// Moves line `c`'s staged entries to the end of its filled part of the buffer.
    #[inline(always)]
    fn unstage<const IW: usize, const DW: usize>(&mut self, c: usize) {
        let n = self.staged[c] as usize;
        if n == 0 {
            return;
        }
        let to = (self.plan.start[c] + self.fill[c]) as usize - n;
        let from = c * STAGE;
        self.idx[to * IW..(to + n) * IW].copy_from_slice(&self.stage_idx[from * IW..(from + n) * IW]);
        self.dat[to * DW..(to + n) * DW].copy_from_slice(&self.stage_dat[from * DW..(from + n) * DW]);
        self.staged[c] = 0;
    }

    /// Writes line `c`'s buffered entries to their place.
    fn flush(&mut self, c: usize, iw: usize, dw: usize, writer: &IndexWriter, input: &Input) -> Result<(), IndexError> {
        let n = self.fill[c];
        if n == 0 {
            return Ok(());
        }
        let at = self.cursor[c];
        if at + n > self.limit[c] {
            return Err(input.corrupt(format!("more entries in new line {c} than counted (store changed during the build?)")));
        }
        let b = self.plan.start[c] as usize;
        writer.write_at(Section::Indices, at * iw as u64, &self.idx[b * iw..(b + n as usize) * iw])?;
        writer.write_at(Section::Data, at * dw as u64, &self.dat[b * dw..(b + n as usize) * dw])?;
        self.cursor[c] = at + n;
        self.fill[c] = 0;
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
        if IW > 0 {
            let n_out = self.fill.len();
            (self.staged, self.stage_idx, self.stage_dat) = (vec![0; n_out], vec![0; n_out * STAGE * IW], vec![0; n_out * STAGE * DW]);
        }
        let mut failed = None;
        input.each(lines, true, progress, |line, c, v| {
            let c = c as usize;
            let (Some(&b), Some(&e)) = (self.plan.start.get(c), self.plan.start.get(c + 1)) else { return };
            let slot = (b + self.fill[c]) as usize;
            if slot as u64 >= e || v.len() != dw {
                // A line with more entries than counted: caught by the flush below.
                failed.get_or_insert_with(|| input.corrupt(format!("more entries in new line {c} than counted (store changed during the build?)")));
                return;
            }
            if IW > 0 {
                let s = c * STAGE + self.staged[c] as usize;
                put::<IW, DW>(&mut self.stage_idx, &mut self.stage_dat, s, line, v, (iw, dw));
                self.staged[c] += 1;
                self.fill[c] += 1;
                if self.staged[c] as usize == STAGE || b + self.fill[c] == e {
                    self.unstage::<IW, DW>(c);
                }
            } else {
                put::<IW, DW>(&mut self.idx, &mut self.dat, slot, line, v, (iw, dw));
                self.fill[c] += 1;
            }
            if b + self.fill[c] == e && failed.is_none() {
                if let Err(err) = self.flush(c, iw, dw, writer, input) {
                    failed = Some(err);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        for c in 0..self.fill.len() {
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

/// Places every entry: part `t` of `counted` (a range of stored lines) on its own thread, into
/// its own positions of each new line.
pub(super) fn scatter(input: &Input, counted: &Counted, plan: &Plan, (iw, dw): (usize, usize), writer: &IndexWriter, progress: &Progress) -> Result<(), IndexError> {
    let n_out = counted.ptr.len().saturating_sub(1);
    let mut jobs = Vec::with_capacity(counted.parts.len());
    for (t, ((cursor, limit), lines)) in counted.shares(0..n_out).into_iter().zip(&counted.parts).enumerate() {
        let size = plan.parts[t].start.last().copied().unwrap_or(0) as usize;
        let (idx, dat) = entry_buffers(size, (iw, dw));
        let part = Part { plan: &plan.parts[t], cursor, limit, fill: vec![0; n_out], idx, dat, staged: Vec::new(), stage_idx: Vec::new(), stage_dat: Vec::new() };
        jobs.push((lines.clone(), part));
    }
    on_threads(jobs, |(lines, mut part)| with_widths!((iw, dw), part.run(lines, (iw, dw), input, writer, progress)))
    .map(drop)
}
