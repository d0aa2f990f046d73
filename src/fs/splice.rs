//! Read replies spliced from the store file into `/dev/fuse`.
//!
//! A read of an uncompressed array's `.npy` on a local store answers with bytes exactly as the
//! file holds them ([`crate::views::FileContent::read_spans`]). Copied, they cross memory twice
//! in the daemon — `pread` into the reply buffer, then the kernel copies the buffer into the
//! reader's pages — and the buffer is cleared first. Spliced, the reply header goes into a pipe,
//! the file's page-cache pages are linked into the same pipe (no copy), and one `splice` into
//! `/dev/fuse` makes the kernel copy them once, straight into the reader's pages: as many copies
//! as `h5py` reading the file itself.
//!
//! A reply must go into the pipe whole, so each worker thread keeps a pipe large enough for one
//! request (2 MiB for a 1 MiB read; above `/proc/sys/fs/pipe-max-size` only for root). When the
//! pipe cannot be sized, or anything else fails before the reply is sent, the caller copies as
//! usual.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::views::{Sliced, Spliced};

/// Bytes per pipe slot (a page).
const PAGE: u64 = 4096;
/// Size of `struct fuse_out_header`.
const OUT_HEADER: usize = 16;
/// Replies shorter than this are copied: three system calls cost more than the copy saved.
pub(super) const MIN_SPLICE: usize = 64 << 10;
/// Most file spans one spliced reply may take.
pub(super) const MAX_SPANS: usize = 16;

/// How a spliced reply failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unsent {
    /// Nothing reached the kernel: the caller answers the request the usual way.
    Fallback,
    /// The kernel no longer knows the request (interrupted, aborted): nothing to answer.
    Gone,
}

/// Sends spliced replies on one FUSE connection (the descriptor every request is read from).
pub(super) struct Splicer {
    dev: OwnedFd,
    /// Smallest pipe size the kernel refused (`usize::MAX`: none yet).
    refused: AtomicUsize,
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    cap: usize,
}

thread_local! {
    static PIPE: RefCell<Option<Pipe>> = const { RefCell::new(None) };
}

impl Splicer {
    /// Splices replies into `dev`, the connection's `/dev/fuse` descriptor.
    pub(super) fn new(dev: OwnedFd) -> Splicer {
        Splicer { dev, refused: AtomicUsize::new(usize::MAX) }
    }

    /// Answers request `unique` with `answer`: the reply header and `answer.head` written into
    /// this thread's pipe, the spans spliced in from their file (each under its store's gate),
    /// then the whole pipe spliced into the connection.
    pub(super) fn reply(&self, unique: u64, answer: &Spliced) -> Result<(), Unsent> {
        let total = OUT_HEADER as u64 + answer.len();
        let Ok(total32) = u32::try_from(total) else { return Err(Unsent::Fallback) };
        if OUT_HEADER + answer.head.len() > PAGE as usize {
            return Err(Unsent::Fallback);
        }
        let slots = 1 + answer.spans.iter().map(|s| pages_touched(s.offset, s.len)).sum::<u64>();
        let need = (slots * PAGE).next_power_of_two() as usize;
        if need >= self.refused.load(Ordering::Relaxed) {
            return Err(Unsent::Fallback);
        }
        PIPE.with(|cell| {
            let mut cell = cell.borrow_mut();
            let pipe = match cell.take().filter(|p| p.cap >= need) {
                Some(p) => p,
                None => match Pipe::with_capacity(need) {
                    Ok(p) => p,
                    Err(e) => {
                        if self.refused.fetch_min(need, Ordering::Relaxed) == usize::MAX {
                            log::info!("read replies are copied, not spliced: a {need}-byte pipe: {e}");
                        }
                        return Err(Unsent::Fallback);
                    }
                },
            };
            let sent = pipe.send(self.dev.as_raw_fd(), unique, total32, answer);
            // A pipe left holding bytes after a failure is dropped, never reused.
            if sent.is_ok() {
                *cell = Some(pipe);
            }
            sent
        })
    }
}

impl Splicer {
    /// Answers request `unique` with `answer` by one `writev` into the connection: the reply
    /// header and `answer.head`, then the slices as they lie in memory (the kernel copies them
    /// once, into the reader's pages — no copy into a reply buffer first).
    pub(super) fn reply_slices(&self, unique: u64, answer: &Sliced) -> Result<(), Unsent> {
        let total = OUT_HEADER as u64 + answer.len();
        let Ok(total32) = u32::try_from(total) else { return Err(Unsent::Fallback) };
        let head = reply_head(total32, unique, &answer.head);
        let mut iov = Vec::with_capacity(1 + answer.parts.len());
        iov.push(libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() });
        for (bytes, range) in &answer.parts {
            let Some(part) = bytes.get(range.clone()) else { return Err(Unsent::Fallback) };
            iov.push(libc::iovec { iov_base: part.as_ptr() as *mut libc::c_void, iov_len: part.len() });
        }
        let Ok(count) = libc::c_int::try_from(iov.len()) else { return Err(Unsent::Fallback) };
        // SAFETY: every iovec points into a buffer (`head`, or a slice of a chunk `answer` holds)
        // that lives for the call and is only read; the descriptor is open.
        let n = unsafe { libc::writev(self.dev.as_raw_fd(), iov.as_ptr(), count) };
        outcome(n, total, "reply from memory")
    }
}

impl Pipe {
    fn with_capacity(bytes: usize) -> std::io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a writable array of two descriptors, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let size = libc::c_int::try_from(bytes).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: F_SETPIPE_SZ takes an int argument; the descriptor is open.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Pipe { read, write, cap: got as usize })
    }

    fn send(&self, dev: RawFd, unique: u64, total: u32, answer: &Spliced) -> Result<(), Unsent> {
        let head = reply_head(total, unique, &answer.head);
        // SAFETY: `head` is a live buffer of `head.len()` bytes; the descriptor is open.
        let n = unsafe { libc::write(self.write.as_raw_fd(), head.as_ptr().cast(), head.len()) };
        if n != head.len() as isize {
            return Err(Unsent::Fallback);
        }
        for span in &answer.spans {
            let Ok(_gate) = span.gate.enter("") else { return Err(Unsent::Fallback) };
            let Some(fd) = span.file.splice_fd() else { return Err(Unsent::Fallback) };
            self.fill(fd.as_raw_fd(), span.offset, span.len)?;
        }
        // SAFETY: both descriptors are open; null offsets mean "current position", as pipes and
        // /dev/fuse require.
        let n = unsafe {
            libc::splice(self.read.as_raw_fd(), std::ptr::null_mut(), dev, std::ptr::null_mut(), total as usize, 0)
        };
        outcome(n, u64::from(total), "spliced reply")
    }

    /// Links `len` bytes of `fd` at `offset` into the pipe.
    fn fill(&self, fd: RawFd, offset: u64, len: u64) -> Result<(), Unsent> {
        let Ok(mut off) = libc::loff_t::try_from(offset) else { return Err(Unsent::Fallback) };
        let mut left = len;
        while left > 0 {
            // SAFETY: `off` is a live loff_t the call updates; both descriptors are open.
            let n = unsafe {
                libc::splice(fd, &mut off, self.write.as_raw_fd(), std::ptr::null_mut(), left as usize, libc::SPLICE_F_NONBLOCK)
            };
            if n <= 0 {
                // The file ended early (truncated under the mount) or the pipe is full.
                let why = if n < 0 { std::io::Error::last_os_error().to_string() } else { "end of file".into() };
                log::debug!("splicing {len} bytes at {offset}: {why} with {left} left");
                return Err(Unsent::Fallback);
            }
            left -= n as u64;
        }
        Ok(())
    }
}

/// What writing a reply of `total` bytes into the connection came to, from the call's result
/// `n` (read right after it, with `errno`): sent whole; the request gone (`ENOENT`: interrupted
/// or aborted); anything else leaves the reply to be sent the usual way.
fn outcome(n: isize, total: u64, what: &str) -> Result<(), Unsent> {
    let err = std::io::Error::last_os_error();
    match n {
        n if n >= 0 && n as u64 == total => Ok(()),
        n if n < 0 && err.raw_os_error() == Some(libc::ENOENT) => Err(Unsent::Gone),
        n => {
            log::debug!("{what} of {total} bytes: {}", if n < 0 { err.to_string() } else { format!("{n} sent") });
            Err(Unsent::Fallback)
        }
    }
}

/// A reply's `struct fuse_out_header` (length `total`, no error, request `unique`) followed by
/// `head`.
fn reply_head(total: u32, unique: u64, head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OUT_HEADER + head.len());
    out.extend_from_slice(&total.to_ne_bytes());
    out.extend_from_slice(&0i32.to_ne_bytes());
    out.extend_from_slice(&unique.to_ne_bytes());
    out.extend_from_slice(head);
    out
}

/// Pipe slots a reply keeps for spans beyond its first: each span that does not start where
/// the previous one ended may take one more slot for a partial page.
const SPAN_ROOM: u64 = 4;

/// The largest read reply up to `want` bytes this process can splice: a reply takes a pipe slot
/// (page) for its header, one per page of data, one more for data that does not start on a
/// page boundary, and up to [`SPAN_ROOM`] more for further spans (a stored array's chunks are
/// not all adjacent in the file: in anndata's `X/data`, 35 of 2,048 are not, and a 1 MiB
/// reply of two spans needed one slot more than a 1 MiB pipe has — where a larger pipe is
/// refused, every such reply was copied instead, 17% of `csr/data.npy`). 0 when no pipe can be
/// enlarged at all.
pub(super) fn largest_reply(want: u32) -> u32 {
    let need = (u64::from(want).div_ceil(PAGE) + 2 + SPAN_ROOM) * PAGE;
    for size in [need.next_power_of_two(), need.next_power_of_two() / 2] {
        if let Ok(p) = Pipe::with_capacity(size as usize) {
            let fits = (p.cap as u64 / PAGE).saturating_sub(2 + SPAN_ROOM) * PAGE;
            return fits.min(u64::from(want)) as u32;
        }
    }
    0
}

/// Pages (pipe slots) `len` bytes at `offset` of a file touch.
fn pages_touched(offset: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    (offset + len - 1) / PAGE - offset / PAGE + 1
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;
    use crate::storage::gate::Gate;
    use crate::storage::range::LocalFile;
    use crate::storage::FileSpan;

    /// Drains `fd` (non-blocking) into a vector.
    fn drain(fd: &OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: `buf` is a live writable buffer of its length; the descriptor is open.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    #[test]
    fn a_reply_is_header_head_then_spans_in_order() {
        let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&bytes).unwrap();
        let file: Arc<dyn crate::storage::range::RangeRead> = Arc::new(LocalFile::open(tmp.path()).unwrap());
        let gate = Arc::new(Gate::default());
        let span = |offset: u64, len: u64| FileSpan { file: file.clone(), offset, len, gate: gate.clone() };
        let answer = Spliced { head: b"NPYHEAD".to_vec(), spans: vec![span(5, 300_001), span(400_000, 99_999)] };
        // A pipe stands in for /dev/fuse: it receives exactly what the kernel would.
        let dev = Pipe::with_capacity(1 << 20).unwrap();
        let pipe = Pipe::with_capacity(1 << 20).unwrap();
        let total = (OUT_HEADER as u64 + answer.len()) as u32;
        pipe.send(dev.write.as_raw_fd(), 77, total, &answer).unwrap();
        let got = drain(&dev.read);
        assert_eq!(got.len(), total as usize);
        assert_eq!(&got[..4], &total.to_ne_bytes());
        assert_eq!(&got[4..8], &0i32.to_ne_bytes());
        assert_eq!(&got[8..16], &77u64.to_ne_bytes());
        let mut want = b"NPYHEAD".to_vec();
        want.extend_from_slice(&bytes[5..300_006]);
        want.extend_from_slice(&bytes[400_000..499_999]);
        assert!(got[16..] == want[..], "payload differs");
        assert!(drain(&pipe.read).is_empty(), "the pipe is left empty");
    }

    /// Sends one span of a 10,000-byte file under `gate` into a pipe standing in for the
    /// connection: what `send` returned and what reached the connection.
    fn send_span(offset: u64, len: u64, gate: Arc<Gate>) -> (Result<(), Unsent>, Vec<u8>) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&[7u8; 10_000]).unwrap();
        let file: Arc<dyn crate::storage::range::RangeRead> = Arc::new(LocalFile::open(tmp.path()).unwrap());
        let answer = Spliced { head: Vec::new(), spans: vec![FileSpan { file, offset, len, gate }] };
        let (dev, pipe) = (Pipe::with_capacity(1 << 16).unwrap(), Pipe::with_capacity(1 << 16).unwrap());
        let total = (OUT_HEADER as u64 + answer.len()) as u32;
        (pipe.send(dev.write.as_raw_fd(), 1, total, &answer), drain(&dev.read))
    }

    #[test]
    fn a_span_past_the_end_of_the_file_is_not_sent() {
        assert_eq!(send_span(5_000, 8_000, Default::default()), (Err(Unsent::Fallback), Vec::new()));
        assert_eq!(send_span(1_000, 8_000, Default::default()).1.len(), 16 + 8_000, "a span inside is sent");
    }

    #[test]
    fn a_closed_gate_stops_the_splice() {
        let gate = Arc::new(Gate::default());
        gate.close("replaced".into());
        assert_eq!(send_span(0, 8_000, gate), (Err(Unsent::Fallback), Vec::new()));
    }

    #[test]
    fn the_largest_reply_fits_a_pipe_this_process_may_make() {
        let n = largest_reply(1 << 20);
        assert!(n == 0 || (64 << 10..=1 << 20).contains(&n), "{n}");
        if n > 0 {
            // Split into SPAN_ROOM + 1 spans, each starting mid-page.
            let spans = SPAN_ROOM + 1;
            let part = u64::from(n) / spans;
            let slots = 1 + (0..spans).map(|i| pages_touched(i * (1 << 30) + 1, part)).sum::<u64>();
            assert!(Pipe::with_capacity((slots * PAGE).next_power_of_two() as usize).is_ok(), "{n} bytes in {slots} slots");
        }
    }

    #[test]
    fn pages_touched_counts_partial_pages() {
        assert_eq!(pages_touched(0, 0), 0);
        assert_eq!(pages_touched(0, 4096), 1);
        assert_eq!(pages_touched(1, 4096), 2);
        assert_eq!(pages_touched(4095, 2), 2);
        assert_eq!(pages_touched(128, 1 << 20), 257);
    }
}
