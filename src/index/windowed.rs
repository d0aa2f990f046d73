//! Scatter by windows: the output positions are cut into windows that fit in memory; per
//! window, one pass over the stored entries places those whose final position falls in it, then
//! the window is appended to the file (sections written front to back, checksummed on the fly).
//! Used when the index has so many major lines that a buffer per line would be tiny.

use super::build::Progress;
use super::format::{IndexWriter, Section};
use super::input::{put, Input};
use super::IndexError;

/// Places every entry, `cap` output positions per pass, given the new lines' pointers `ptr`.
pub fn scatter(input: &Input, ptr: &[u64], cap: u64, (iw, dw): (usize, usize), writer: &mut IndexWriter, progress: &Progress) -> Result<(), IndexError> {
    let nnz = ptr.last().copied().unwrap_or(0);
    let n_out = ptr.len().saturating_sub(1) as u64;
    let mut cursor = vec![0u64; n_out as usize];
    let window = cap.min(nnz) as usize;
    let (mut idx_buf, mut dat_buf) = (vec![0u8; window * iw], vec![0u8; window * dw]);
    // Written at as many places at once as the window has new lines.
    crate::util::advise_huge_pages(&idx_buf);
    crate::util::advise_huge_pages(&dat_buf);
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
        let w = (iw, dw);
        with_widths!(w, pass.run(w, input, progress, idx_out, dat_out))?;
        writer.append(Section::Indices, idx_out)?;
        writer.append(Section::Data, dat_out)?;
        w0 = w1;
    }
    Ok(())
}

/// One scatter pass: places the entries of new lines `cols` whose output position falls in
/// `window`, advancing each line's fill `cursor`.
struct Pass<'a> {
    cursor: &'a mut [u64],
    cols: std::ops::Range<u64>,
    window: std::ops::Range<u64>,
}

impl Pass<'_> {
    /// The pass for `IW`-byte indices and `DW`-byte values (`0, 0`: the widths `iw`, `dw`).
    fn run<const IW: usize, const DW: usize>(
        self,
        widths: (usize, usize),
        input: &Input,
        progress: &Progress,
        idx_out: &mut [u8],
        dat_out: &mut [u8],
    ) -> Result<(), IndexError> {
        self.scatter(input, progress, |i, line, v| put::<IW, DW>(idx_out, dat_out, i, line, v, widths))
    }

    /// Visits every stored entry; `place(slot in the window, old line, value bytes)` stores
    /// those of this pass.
    fn scatter(self, input: &Input, progress: &Progress, mut place: impl FnMut(usize, u64, &[u8])) -> Result<(), IndexError> {
        let Pass { cursor, cols, window } = self;
        input.each(0..input.lines(), true, progress, |line, c, v| {
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
