//! Text files made of rows (one value per line, TSV tables, matrix rows): exact sizes and
//! random access through a row-block → byte-offset index built on first use.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::column::{split_cells, ColumnCells};
use super::format::text_values::{push_field, push_num};
use super::npy_file::RowBytes;
use super::sidecar::{Sidecar, StoredLayout};
use super::{read_header_body_into, FileContent, ViewResult};
use crate::cache::{ChunkCache, Key};
use crate::model::Arr;
use crate::storage::{FieldType, NumType, StorageError};
use crate::util::RetryOnce;

/// Aim for rendered blocks of about this many bytes.
const BLOCK_TARGET: u64 = 256 * 1024;
/// Fewest lines per block (when the view has them): rendering or sizing a block reads each of
/// a table's columns once, so a table of thousands of columns — one line near
/// [`BLOCK_TARGET`] — cut into one-line blocks read every column once per line (20,000 columns
/// × 200 rows: 10 s for `obs.tsv`).
const MIN_BLOCK_ROWS: u64 = 32;

/// A text body made of lines, each ending in `\n`.
pub trait RowText: Send + Sync {
    /// Number of lines.
    fn n_rows(&self) -> u64;
    /// Rough bytes per line, to size blocks.
    fn row_cost(&self) -> u64;
    /// Appends lines `[r0, r1)`, each with its `\n`.
    fn render(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()>;

    /// Bytes and line count of lines `[r0, r1)` as [`RowText::render`] would write them
    /// (the size pass). The default renders into `scratch` and counts; override when lengths
    /// can be computed without writing the text.
    fn measure(&self, r0: u64, r1: u64, scratch: &mut Vec<u8>) -> ViewResult<(u64, u64)> {
        scratch.clear();
        self.render(r0, r1, scratch)?;
        Ok((scratch.len() as u64, bytecount_newlines(scratch)))
    }
}

/// The text before the body: fixed, or computed from the number of body lines (MatrixMarket's
/// size line needs the entry count).
pub enum Header {
    /// Known up front (may be empty).
    Fixed(Vec<u8>),
    /// Built from the body's line count once the index pass has counted them.
    FromLines(Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>),
}

/// Byte offsets of every block of lines, and the header.
struct Layout {
    block_rows: u64,
    /// `offsets[k]` = body offset of block `k`; the last entry is the body size.
    offsets: Vec<u64>,
    header: Vec<u8>,
}

/// A text file: a header, then a [`RowText`] body.
pub struct TextFile {
    id: u64,
    header: Header,
    body: Arc<dyn RowText>,
    cache: Arc<ChunkCache>,
    layout: RetryOnce<Layout>,
    sidecar: Option<(Arc<Sidecar>, String)>,
}

impl TextFile {
    /// A text file of `header` (may be empty) then `body`.
    pub fn new(header: Vec<u8>, body: Arc<dyn RowText>, cache: Arc<ChunkCache>) -> Self {
        Self::with_header(Header::Fixed(header), body, cache)
    }

    /// A text file whose header may depend on the body's line count.
    pub fn with_header(header: Header, body: Arc<dyn RowText>, cache: Arc<ChunkCache>) -> Self {
        TextFile { id: cache.ids.file(), header, body, cache, layout: RetryOnce::new(), sidecar: None }
    }

    /// Remembers this file's index in `sidecar` under `key` (its virtual path), so the next
    /// mount of the same store knows the size without a pass over the data.
    pub fn remembered(mut self, sidecar: Option<Arc<Sidecar>>, key: String) -> Self {
        self.sidecar = sidecar.map(|s| (s, key));
        self
    }

    /// True once the size is known without rendering (index built or remembered).
    pub fn size_known(&self) -> bool {
        let rows = self.block_rows();
        self.layout.get().is_some() || self.sidecar.as_ref().is_some_and(|(s, k)| s.knows(k, rows, self.blocks(rows)))
    }

    /// Number of blocks of `block_rows` lines.
    fn blocks(&self, block_rows: u64) -> u64 {
        self.body.n_rows().div_ceil(block_rows)
    }

    fn make_header(&self, lines: u64) -> Vec<u8> {
        match &self.header {
            Header::Fixed(h) => h.clone(),
            Header::FromLines(f) => f(lines),
        }
    }

    /// Lines per block: about [`BLOCK_TARGET`] bytes but at least [`MIN_BLOCK_ROWS`], and never
    /// more than [`MAX_BLOCKS`] blocks (the layout's offsets stay small whatever lines a store
    /// claims).
    fn block_rows(&self) -> u64 {
        (BLOCK_TARGET / self.body.row_cost().max(1)).max(MIN_BLOCK_ROWS).max(self.body.n_rows().div_ceil(MAX_BLOCKS))
    }

    fn block(&self, k: u64, block_rows: u64) -> ViewResult<crate::cache::Bytes> {
        self.cache.bytes(Key::Rendered(self.id, k), || {
            let n = self.body.n_rows();
            let (r0, r1) = (k * block_rows, ((k + 1) * block_rows).min(n));
            let mut out = Vec::new();
            self.body.render(r0, r1, &mut out)?;
            Ok::<_, StorageError>(out)
        })
    }

    /// The layout, computed on first use by one caller while others wait. A failure (a chunk
    /// that cannot be read, a store gone away) is returned, not kept: the next call retries.
    fn layout(&self) -> ViewResult<&Layout> {
        self.layout.get_or_try_init(|| {
            let block_rows = self.block_rows();
            Ok(match self.sidecar.as_ref().and_then(|(s, k)| s.get(k, block_rows, self.blocks(block_rows))) {
                Some(stored) => {
                    self.cache.stats.text_remembered();
                    Layout { block_rows, header: self.make_header(stored.lines), offsets: stored.offsets }
                }
                None => {
                    let (offsets, lines) = self.measure(block_rows)?;
                    self.cache.stats.text_sized();
                    if let Some((s, k)) = &self.sidecar {
                        s.put(k, &StoredLayout { block_rows, lines, offsets: offsets.clone() });
                    }
                    Layout { block_rows, offsets, header: self.make_header(lines) }
                }
            })
        })
    }

    /// The one pass over the body that sizes it: every block measured ([`RowText::measure`],
    /// on up to [`MEASURE_THREADS`] threads, each with a scratch buffer it reuses), not kept.
    /// Returns the block offsets (last = body size) and the number of lines.
    fn measure(&self, block_rows: u64) -> ViewResult<(Vec<u64>, u64)> {
        let n = self.body.n_rows();
        if n > MAX_LINES {
            // A damaged shape (a length of 10^12): sizing would run for hours. Refused at once.
            return Err(StorageError::unsupported("text view", format!("{n} lines is more than a text view serves ({MAX_LINES})")));
        }
        let n_blocks = self.blocks(block_rows);
        let count_lines = matches!(self.header, Header::FromLines(_));
        let next = AtomicU64::new(0);
        let results: Mutex<Vec<(u64, u64)>> = Mutex::new(vec![(0, 0); n_blocks as usize]);
        let failed: Mutex<Option<StorageError>> = Mutex::new(None);
        // Each thread takes runs of neighbouring blocks: threads measuring adjacent blocks would
        // meet on the same stored chunk (a block of strings), one waiting while the other
        // decodes it.
        let work = || {
            let mut scratch = Vec::new();
            'runs: loop {
                let first = next.fetch_add(MEASURE_RUN, Ordering::Relaxed);
                for k in first..first.saturating_add(MEASURE_RUN).min(n_blocks) {
                    if failed.lock().is_some() {
                        break 'runs;
                    }
                    let (r0, r1) = (k * block_rows, ((k + 1) * block_rows).min(n));
                    match self.body.measure(r0, r1, &mut scratch) {
                        Ok((len, nl)) => results.lock()[k as usize] = (len, if count_lines { nl } else { 0 }),
                        Err(e) => {
                            *failed.lock() = Some(e);
                            break 'runs;
                        }
                    }
                }
                if first >= n_blocks {
                    break;
                }
            }
        };
        // Extra threads only when no other view is being sized: concurrent first `stat`s of
        // many views (an `ls -l` of a big tree) then run one thread each, bounding CPU and the
        // scratch memory they hold.
        let alone = MEASURING.fetch_add(1, Ordering::AcqRel) == 0;
        let threads = if alone { std::thread::available_parallelism().map_or(1, |p| p.get()).min(MEASURE_THREADS) } else { 1 };
        let threads = (threads as u64).min(n_blocks).max(1);
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        MEASURING.fetch_sub(1, Ordering::AcqRel);
        if let Some(e) = failed.into_inner() {
            return Err(e);
        }
        let mut offsets = Vec::with_capacity(n_blocks as usize + 1);
        let (mut at, mut lines) = (0u64, 0u64);
        for (len, nl) in results.into_inner() {
            offsets.push(at);
            at += len;
            lines += nl;
        }
        offsets.push(at);
        Ok((offsets, lines))
    }
}

/// Most blocks a text view is cut into.
const MAX_BLOCKS: u64 = 1 << 20;

/// Most lines of a text view (6.9e10: a MatrixMarket file of that many entries is already
/// terabytes).
const MAX_LINES: u64 = 1 << 36;

/// Threads sizing one text view (its first `stat`).
const MEASURE_THREADS: usize = 4;

/// Blocks a sizing thread takes at a time.
const MEASURE_RUN: u64 = 16;

/// Size passes running in this process. Process-wide on purpose: it shares out the process's
/// cores (extra threads only for a pass running alone), whichever mount the pass serves.
static MEASURING: AtomicUsize = AtomicUsize::new(0);

/// Number of `\n` bytes in `b`.
pub fn bytecount_newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

impl FileContent for TextFile {
    fn size(&self) -> ViewResult<u64> {
        let layout = self.layout()?;
        Ok(layout.header.len() as u64 + layout.offsets.last().copied().unwrap_or(0))
    }

    fn size_is_cheap(&self) -> bool {
        self.size_known()
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(offset, len, &mut out)?;
        Ok(out)
    }

    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> ViewResult<()> {
        let layout = self.layout()?;
        let body_size = layout.offsets.last().copied().unwrap_or(0);
        read_header_body_into(&layout.header, body_size, offset, len, out, |b0, b1, out| {
            // First block whose start is <= b0.
            let mut k = layout.offsets.partition_point(|&o| o <= b0).saturating_sub(1);
            while k + 1 < layout.offsets.len() && layout.offsets[k] < b1 {
                let start = layout.offsets[k];
                let bytes = self.block(k as u64, layout.block_rows)?;
                // A remembered layout that does not fit the data (damaged, or written for other
                // data) fails the read rather than serve misplaced bytes.
                let want = layout.offsets[k + 1].checked_sub(start);
                if want != Some(bytes.len() as u64) {
                    return Err(StorageError::corrupt(
                        "text view",
                        format!(
                            "block {k} is {} bytes, its layout says {} (a damaged remembered size?)",
                            bytes.len(),
                            want.map_or_else(|| "a negative length".to_string(), |w| w.to_string())
                        ),
                    ));
                }
                let s = b0.max(start) - start;
                let e = b1.min(start + bytes.len() as u64) - start;
                out.extend_from_slice(&bytes[s as usize..e as usize]);
                k += 1;
            }
            Ok(())
        })
    }
}

/// One cell per line (index.txt, `<col>.txt`, string arrays, scalars).
pub struct ColumnText {
    cells: ColumnCells,
    n: u64,
}

impl ColumnText {
    /// Lines of `cells` (`n` of them).
    pub fn new(cells: ColumnCells, n: u64) -> Self {
        ColumnText { cells, n }
    }
}

impl RowText for ColumnText {
    fn n_rows(&self) -> u64 {
        self.n
    }

    fn row_cost(&self) -> u64 {
        12
    }

    fn render(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        let mut ends = Vec::with_capacity((r1 - r0) as usize);
        let mut cells = Vec::new();
        self.cells.render_cells(r0, r1, &mut cells, &mut ends)?;
        for cell in split_cells(&cells, &ends) {
            out.extend_from_slice(cell);
            out.push(b'\n');
        }
        Ok(())
    }

    fn measure(&self, r0: u64, r1: u64, _scratch: &mut Vec<u8>) -> ViewResult<(u64, u64)> {
        let (bytes, cells) = self.cells.measure_cells(r0, r1)?;
        Ok((bytes + cells, cells))
    }
}

/// Appends each row and a newline.
fn join_lines(out: &mut Vec<u8>, rows: Vec<Vec<u8>>) {
    for r in rows {
        out.extend_from_slice(&r);
        out.push(b'\n');
    }
}

/// A dataframe as TSV rows: the index, then every column, tab-separated.
pub struct TableText {
    /// Index cells, then column cells.
    pub columns: Vec<ColumnCells>,
    /// Number of rows.
    pub n: u64,
    /// Appended to every row before its newline (e.g. `\tGene Expression`).
    pub trailer: &'static str,
}

impl RowText for TableText {
    fn n_rows(&self) -> u64 {
        self.n
    }

    fn row_cost(&self) -> u64 {
        12 * self.columns.len() as u64
    }

    fn render(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        let n = (r1 - r0) as usize;
        let mut cols = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let (mut cells, mut ends) = (Vec::new(), Vec::with_capacity(n));
            c.render_cells(r0, r1, &mut cells, &mut ends)?;
            if ends.len() != n {
                return Err(StorageError::corrupt("table", format!("a column has {} of {n} rows", ends.len())));
            }
            cols.push((cells, ends));
        }
        for i in 0..n {
            for (j, (cells, ends)) in cols.iter().enumerate() {
                if j > 0 {
                    out.push(b'\t');
                }
                let start = if i == 0 { 0 } else { ends[i - 1] };
                out.extend_from_slice(&cells[start..ends[i]]);
            }
            out.extend_from_slice(self.trailer.as_bytes());
            out.push(b'\n');
        }
        Ok(())
    }

    fn measure(&self, r0: u64, r1: u64, _scratch: &mut Vec<u8>) -> ViewResult<(u64, u64)> {
        let n = r1 - r0;
        let mut bytes = 0;
        for c in &self.columns {
            let (b, cells) = c.measure_cells(r0, r1)?;
            if cells != n {
                return Err(StorageError::corrupt("table", format!("a column has {cells} of {n} rows")));
            }
            bytes += b;
        }
        let seps = self.columns.len().saturating_sub(1) as u64 + self.trailer.len() as u64 + 1;
        Ok((bytes + n * seps, n))
    }
}

/// The header line of a table: `cells` quoted and tab-separated; an empty line is written `""`.
pub fn header_line(cells: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        push_field(&mut out, c);
    }
    if out.is_empty() {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b'\n');
    out
}

/// Numeric rows as TSV lines (values tab-separated), from any row source.
pub struct NumRowsText {
    /// The rows.
    pub rows: Arc<dyn RowBytes>,
    /// Element type.
    pub t: NumType,
}

impl RowText for NumRowsText {
    fn n_rows(&self) -> u64 {
        self.rows.n_rows()
    }

    fn row_cost(&self) -> u64 {
        (self.rows.row_bytes() / self.t.size() as u64).max(1) * 10
    }

    fn render(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        let bytes = self.rows.read_rows(r0, r1)?;
        let rb = self.rows.row_bytes() as usize;
        let w = self.t.size();
        if rb == 0 {
            (r0..r1).for_each(|_| out.push(b'\n'));
            return Ok(());
        }
        for row in bytes.chunks_exact(rb) {
            for (i, v) in row.chunks_exact(w).enumerate() {
                if i > 0 {
                    out.push(b'\t');
                }
                push_num(out, self.t, v);
            }
            out.push(b'\n');
        }
        Ok(())
    }
}

/// A record array as TSV rows (no index column); sub-array fields span several columns.
pub struct RecordsText {
    /// One entry per field: its array (1-D numbers or strings, or 2-D numbers).
    pub fields: Vec<(FieldType, Arr)>,
    /// Number of records.
    pub n: u64,
}

impl RowText for RecordsText {
    fn n_rows(&self) -> u64 {
        self.n
    }

    fn row_cost(&self) -> u64 {
        12 * self.fields.len() as u64
    }

    fn render(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> ViewResult<()> {
        let mut rows = vec![Vec::new(); (r1 - r0) as usize];
        for (i, (ft, arr)) in self.fields.iter().enumerate() {
            if i > 0 {
                rows.iter_mut().for_each(|r| r.push(b'\t'));
            }
            match ft {
                FieldType::Num(t, k) => {
                    let bytes = arr.read_rows(r0, r1)?;
                    for (row, vals) in rows.iter_mut().zip(bytes.chunks_exact(t.size() * k)) {
                        for (j, v) in vals.chunks_exact(t.size()).enumerate() {
                            if j > 0 {
                                row.push(b'\t');
                            }
                            push_num(row, *t, v);
                        }
                    }
                }
                _ => {
                    for (row, s) in rows.iter_mut().zip(arr.read_strings(r0, r1)?) {
                        push_field(row, &s);
                    }
                }
            }
        }
        join_lines(out, rows);
        Ok(())
    }
}
