//! Positioned reads of the HDF5 file for data (chunks, contiguous blocks, global heap
//! collections) through the byte-range layer (`pread` of a local file, range GETs of a remote
//! one) into owned buffers, every range checked against the file length and a size cap before
//! anything is allocated.
//!
//! The data path does not map the file: pages of a file mapping that the daemon touches count in
//! its resident set, so reading a large store through a mapping grows RSS far past the cache
//! budget. Owned buffers are accounted for by whoever keeps them (the chunk cache).

use std::sync::Arc;

use crate::storage::range::RangeRead;
use crate::storage::gate::Gate;
use crate::storage::{FileSpan, StorageError, StorageResult};

/// The largest single read annfs makes from an HDF5 file (one stored chunk, one contiguous
/// block, one heap collection). Larger claims in the file's metadata are treated as corruption.
pub const MAX_READ_BYTES: u64 = 288 << 20;

/// The store file opened for positioned reads, with its length as of opening (a change of a
/// local file under a mount is caught by [`crate::storage::gate`], of a remote one by its
/// version).
pub struct DataFile {
    src: Arc<dyn RangeRead>,
    len: u64,
}

impl DataFile {
    /// Reads through `src`.
    pub fn new(src: Arc<dyn RangeRead>) -> DataFile {
        let len = src.len();
        DataFile { src, len }
    }

    /// A local file whose length is `len` (tests).
    pub fn local(file: std::fs::File, len: u64) -> DataFile {
        DataFile { src: Arc::new(crate::storage::range::LocalFile::new(file, len)), len }
    }

    /// The file length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks that `len` bytes at `addr` lie inside the file and under [`MAX_READ_BYTES`];
    /// errors name element `path` and what was being read.
    pub fn check(&self, addr: u64, len: u64, path: &str, what: &str) -> StorageResult<usize> {
        if len > MAX_READ_BYTES {
            return Err(StorageError::corrupt(
                path,
                format!("{what} at {addr} claims {len} bytes (more than the {MAX_READ_BYTES}-byte limit)"),
            ));
        }
        match addr.checked_add(len) {
            Some(end) if end <= self.len => Ok(len as usize),
            _ => Err(StorageError::corrupt(
                path,
                format!(
                    "{what} at {addr}+{len} lies beyond the end of the file ({} bytes)",
                    self.len
                ),
            )),
        }
    }

    /// Hints that `len` bytes at `addr` will be read soon: the kernel starts reading them into
    /// its page cache in the background (best effort; ranges outside the file are ignored).
    pub fn advise(&self, addr: u64, len: u64) {
        self.src.will_need(addr, len);
    }

    /// Hints that each `(addr, len)` range will be read soon, exactly so (a remote file fetches
    /// them in parallel).
    pub fn prefetch_exact(&self, ranges: &[(u64, u64)]) {
        self.src.prefetch_exact(ranges);
    }

    /// True when reading the same bytes again costs about a memory copy (a local file).
    pub fn rereads_are_cheap(&self) -> bool {
        self.src.rereads_are_cheap()
    }

    /// Reads `len` bytes at `addr` into a new buffer, checked as in [`DataFile::check`].
    pub fn read(&self, addr: u64, len: u64, path: &str, what: &str) -> StorageResult<Vec<u8>> {
        let n = self.check(addr, len, path, what)?;
        let mut buf = vec![0u8; n];
        self.read_into(addr, &mut buf, path, what)?;
        Ok(buf)
    }

    /// Fills `buf` from the file at `addr` with one positioned read. A short read (the file was
    /// truncated) is a [`StorageError::Corrupt`] naming `path`.
    pub fn read_into(&self, addr: u64, buf: &mut [u8], path: &str, what: &str) -> StorageResult<()> {
        self.check(addr, buf.len() as u64, path, what)?;
        self.src.read_exact_at(buf, addr).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => StorageError::corrupt(
                path,
                format!("{what} at {addr}+{}: the file ends early", buf.len()),
            ),
            _ => StorageError::Io {
                path: path.to_string(),
                source: e,
            },
        })
    }
}

impl DataFile {
    /// `len` bytes at `addr` as a span of a local file that can be spliced, checked as in
    /// [`DataFile::check`]; `None` for a remote object.
    pub fn span(&self, addr: u64, len: u64, gate: &Arc<Gate>, path: &str, what: &str) -> StorageResult<Option<FileSpan>> {
        if self.src.splice_fd().is_none() {
            return Ok(None);
        }
        self.check(addr, len, path, what)?;
        Ok(Some(FileSpan { file: self.src.clone(), offset: addr, len, gate: gate.clone() }))
    }
}

/// A temporary file holding `bytes`, opened as a [`DataFile`] (tests).
#[cfg(test)]
pub(crate) fn file_with(bytes: &[u8]) -> (tempfile::TempDir, DataFile) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, bytes).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    (dir, DataFile::local(f, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_refuses_outside() {
        let (_d, f) = file_with(b"0123456789");
        assert_eq!(f.read(2, 3, "/x", "chunk").unwrap(), b"234");
        assert_eq!(f.read(10, 0, "/x", "chunk").unwrap(), b"");
        let e = f.read(8, 3, "/x", "chunk 7").unwrap_err().to_string();
        assert!(e.contains("/x") && e.contains("chunk 7") && e.contains("beyond"), "{e}");
        assert!(f.read(u64::MAX, 2, "/x", "chunk").is_err());
        let e = f.read(0, MAX_READ_BYTES + 1, "/x", "chunk").unwrap_err().to_string();
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn short_read_is_corrupt_not_panic() {
        // The recorded length is larger than the file (it was truncated after opening).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = DataFile::local(std::fs::File::open(&p).unwrap(), 100);
        match f.read(1, 10, "/y", "heap") {
            Err(StorageError::Corrupt { path, reason }) => {
                assert_eq!(path, "/y");
                assert!(reason.contains("ends early"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
