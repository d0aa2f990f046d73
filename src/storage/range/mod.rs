//! One byte-range layer under both backends: a store's bytes come from a local file, an
//! `http(s)://` URL or an object store (`s3://`, `gs://`, `az://`) through the same few types.
//!
//! - [`RangeRead`]: random access to one file-like object (`read_exact_at`), implemented by
//!   [`LocalFile`] (`pread`) and [`object::RemoteFile`] (range GETs with a block cache). The
//!   HDF5 backend reads through it, both its own data reads and the library's (its driver).
//! - [`client::ObjectClient`]: one attempt at a GET/HEAD of a key, per protocol
//!   ([`http::HttpClient`], [`cloud::BucketClient`]).
//! - [`Fetcher`]: a client plus what every protocol shares: bounded retries with backoff,
//!   version checks (a changed object is an error, never mixed bytes), the validated on-disk
//!   cache ([`disk_cache`]) and request counters ([`RemoteStats`]). The Zarr backend reads keys
//!   through it.
//! - [`location`]: which of these a mount source names.

pub mod ahead;
pub mod client;
pub mod cloud;
pub mod disk_cache;
#[cfg(test)]
pub(crate) mod fake;
pub mod fetcher;
pub mod http;
pub mod location;
pub mod object;

use std::fs::File;
use std::os::unix::fs::FileExt;

pub use client::{FetchError, ObjectClient, ObjectMeta, Span};
pub use fetcher::{Fetcher, RemoteConfig, RemoteStats};
pub use object::wait_background;
pub use location::{Remote, RemoteOptions};

/// Random access to the bytes of one file-like object. Shared by threads.
pub trait RangeRead: Send + Sync {
    /// Length in bytes (as of opening).
    fn len(&self) -> u64;

    /// True for an empty object.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset`; a range past the end (of [`RangeRead::len`]; an
    /// empty one at an offset past it included) is `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;

    /// Hints that `len` bytes at `offset` will be read soon (best effort).
    fn will_need(&self, _offset: u64, _len: u64) {}

    /// True when reading the same bytes again costs about a memory copy (a local file, served
    /// from the OS page cache), so that callers need not keep copies. Default: false.
    fn rereads_are_cheap(&self) -> bool {
        false
    }

    /// Hints that each `(offset, len)` range will be read soon, exactly so (small metadata such
    /// as the child nodes of an index node); a remote object fetches them in parallel.
    fn prefetch_exact(&self, _ranges: &[(u64, u64)]) {}

    /// A number identifying the object among those open in this process (the HDF5 library
    /// compares open files with it).
    fn identity(&self) -> (u64, u64);

    /// The object's version when the protocol gives one (ETag, Last-Modified).
    fn version(&self) -> Option<&str> {
        None
    }

    /// A descriptor of a local file whose bytes can be spliced (`None` for remote objects).
    fn splice_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// A local file read with `pread`.
#[derive(Debug)]
pub struct LocalFile {
    file: File,
    len: u64,
    id: (u64, u64),
}

impl LocalFile {
    /// Opens `path` read-only.
    pub fn open(path: &std::path::Path) -> std::io::Result<LocalFile> {
        use std::os::unix::fs::MetadataExt;
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(LocalFile { file, len: meta.len(), id: (meta.dev(), meta.ino()) })
    }

    /// Wraps an open file whose length is `len` (no identity: tests).
    pub fn new(file: File, len: u64) -> LocalFile {
        LocalFile { file, len, id: (0, 0) }
    }
}

impl RangeRead for LocalFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn rereads_are_cheap(&self) -> bool {
        true
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        // The length is the one seen at open: bytes a writer appends later are past the end
        // (as for a remote object), and so is a range no file offset can address (`pread`
        // would fail with EINVAL instead).
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.len) {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        self.file.read_exact_at(buf, offset)
    }

    fn will_need(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return;
        }
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(end - offset)) else { return };
        let fd = self.file.as_raw_fd();
        // A range whose first and last bytes are in the page cache is (nearly always) cached
        // whole, and WILLNEED would walk every page of it to find nothing to read: a profile
        // of warm 200 MB reads had 15% of the daemon's CPU there. Two non-blocking one-byte
        // reads tell (RWF_NOWAIT fails instead of reading from the disk).
        let cached = |at: libc::off_t| {
            let mut byte = 0u8;
            let iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
            // SAFETY: the iovec points at one writable byte on this stack frame; the
            // descriptor is owned by `self.file` and open for the call's duration.
            unsafe { libc::preadv2(fd, &iov, 1, at, libc::RWF_NOWAIT) == 1 }
        };
        if cached(off) && cached(off + n - 1) {
            return;
        }
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is owned by
        // `self.file` and open for the call's duration.
        unsafe {
            libc::posix_fadvise(fd, off, n, libc::POSIX_FADV_WILLNEED);
        }
    }

    fn identity(&self) -> (u64, u64) {
        self.id
    }

    fn splice_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.file.as_fd())
    }
}
