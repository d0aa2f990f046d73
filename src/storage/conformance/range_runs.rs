//! The byte suite's runs: [`LocalFile`] and [`RemoteFile`] (with and without a disk cache) over
//! the same bytes, and byte sources that each break one promise.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use super::{check_range_read, fails, labelled, Rng};
use crate::storage::range::disk_cache::DiskCache;
use crate::storage::range::fake::FakeServer;
use crate::storage::range::object::{RemoteFile, BLOCK};
use crate::storage::range::{Fetcher, LocalFile, RangeRead};

/// Bytes for the runs: three 512 KiB blocks and a part, so that reads cross blocks.
fn object_bytes() -> Vec<u8> {
    Rng::new("range conformance").bytes((3 * BLOCK + 12_345) as usize)
}

/// A temporary file holding `data`.
fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, data).expect("write temp file");
    file
}

#[test]
fn local_file_keeps_the_contract() {
    let data = object_bytes();
    let tmp = temp_file(&data);
    let f = LocalFile::open(tmp.path()).unwrap();
    check_range_read("LocalFile", &f, &data);
    let g = LocalFile::new(std::fs::File::open(tmp.path()).unwrap(), data.len() as u64);
    check_range_read("LocalFile::new", &g, &data);
    check_range_read("empty LocalFile", &LocalFile::open(temp_file(&[]).path()).unwrap(), &[]);
    // The identity names the file: the same file opened again has it, another file not.
    assert_eq!(LocalFile::open(tmp.path()).unwrap().identity(), f.identity());
    assert_ne!(LocalFile::open(temp_file(&data).path()).unwrap().identity(), f.identity());
    // Bytes appended after the open are past the end of the length it saw, as for a remote object.
    let mut grown = std::fs::OpenOptions::new().append(true).open(tmp.path()).unwrap();
    std::io::Write::write_all(&mut grown, b"appended").unwrap();
    for (offset, n) in [(data.len() as u64, 8), (data.len() as u64 - 4, 8)] {
        let err = f.read_exact_at(&mut vec![0; n], offset).expect_err("a read of appended bytes");
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{n} bytes at {offset}: {err}");
    }
    check_range_read("LocalFile of a grown file", &f, &data);
}

#[test]
fn remote_file_keeps_the_contract() {
    let data = object_bytes();
    let server = FakeServer::object(data.clone(), Duration::ZERO);
    let f = server.remote_file();
    check_range_read("RemoteFile", &f, &data);
    assert_ne!(server.remote_file().identity(), f.identity(), "two open objects share an identity");
    // With a disk cache every read goes through whole blocks.
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap());
    let fetcher = Fetcher::new(Box::new(server.clone()), Default::default(), Some(cache), Arc::default());
    let meta = fetcher.head("").unwrap().unwrap();
    check_range_read("RemoteFile with a disk cache", &RemoteFile::new(Arc::new(fetcher), meta), &data);
    let empty = FakeServer::object(Vec::new(), Duration::ZERO);
    check_range_read("empty RemoteFile", &empty.remote_file(), &[]);
}

/// A byte source breaking one promise of the local file it wraps.
struct Broken {
    inner: LocalFile,
    fault: ByteFault,
    calls: std::sync::atomic::AtomicU64,
}

#[derive(Clone, Copy, Debug)]
enum ByteFault {
    /// A read covering byte 1000 gets it wrong.
    WrongByte,
    /// A read past the end answers zeros.
    ZerosPastEnd,
    /// A read past the end fails with another error kind.
    OtherErrorPastEnd,
    /// The identity changes on each call.
    Identity,
    /// After a `will_need` hint, reads answer zeros.
    HintBreaksReads,
}

impl RangeRead for Broken {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let past = offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.len());
        match self.fault {
            ByteFault::ZerosPastEnd if past => {
                buf.fill(0);
                return Ok(());
            }
            ByteFault::OtherErrorPastEnd if past => return Err(std::io::Error::other("past the end")),
            ByteFault::HintBreaksReads if self.calls.load(std::sync::atomic::Ordering::Relaxed) > 0 => {
                buf.fill(0);
                return Ok(());
            }
            _ if past => return Err(ErrorKind::UnexpectedEof.into()),
            _ => {}
        }
        self.inner.read_exact_at(buf, offset)?;
        if let (ByteFault::WrongByte, Some(k)) = (self.fault, 1000u64.checked_sub(offset)) {
            if let Some(b) = buf.get_mut(k as usize) {
                *b ^= 1;
            }
        }
        Ok(())
    }
    fn will_need(&self, _offset: u64, _len: u64) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn identity(&self) -> (u64, u64) {
        match self.fault {
            ByteFault::Identity => (0, self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            _ => self.inner.identity(),
        }
    }
}

/// Each broken promise makes the suite fail (the suite can fail; the plain file passes it).
#[test]
fn broken_byte_sources_fail_the_suite() {
    let data = object_bytes();
    let tmp = temp_file(&data);
    for fault in [ByteFault::WrongByte, ByteFault::ZerosPastEnd, ByteFault::OtherErrorPastEnd, ByteFault::Identity, ByteFault::HintBreaksReads] {
        let f = Broken { inner: LocalFile::open(tmp.path()).unwrap(), fault, calls: Default::default() };
        assert!(fails(|| check_range_read(&format!("{fault:?}"), &f, &data)), "{fault:?} passed the suite");
    }
    labelled("unbroken", || check_range_read("LocalFile", &LocalFile::open(tmp.path()).unwrap(), &data));
}
