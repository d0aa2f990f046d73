//! Copy-up: materializing a virtual file's bytes into the overlay directory.
//!
//! The content is streamed chunk by chunk from its [`FileContent`] into a temp file in the work
//! directory (memory stays at one chunk whatever the size), fsynced, then renamed into place,
//! so the destination holds either its old state or the whole new file, never a torn copy.

use std::io::Write;
use std::os::fd::AsFd;

use rustix::io::Errno;

use super::upper::UpperDir;
use crate::storage::StorageError;
use crate::views::FileContent;

/// Bytes read from the view per step.
pub const CHUNK: usize = 4 << 20;

/// Why a copy-up failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Rendering the virtual file failed.
    #[error("reading the virtual file: {0}")]
    Read(#[from] StorageError),
    /// Writing the overlay directory failed.
    #[error("writing the overlay directory: {0}")]
    Write(#[from] std::io::Error),
}

impl From<Errno> for CopyError {
    fn from(e: Errno) -> Self {
        CopyError::Write(std::io::Error::from_raw_os_error(e.raw_os_error()))
    }
}

/// A copied file waiting in the work directory; removed on drop unless committed.
pub struct Temp<'a> {
    upper: &'a UpperDir,
    name: Option<String>,
    /// The open temp file.
    pub file: std::fs::File,
}

impl Temp<'_> {
    /// Renames the temp to `name` in `dir`, durably.
    pub fn commit(mut self, dir: impl AsFd, name: &str) -> Result<(), Errno> {
        let tmp = self.name.take().ok_or(Errno::INVAL)?;
        let r = self.upper.commit(&tmp, dir, name);
        if r.is_err() {
            self.upper.discard(&tmp);
        }
        r
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name.take() {
            self.upper.discard(&n);
        }
    }
}

/// Streams the first `limit` bytes (all when `None`) of `content` into a fresh temp file with
/// permission bits `mode`, fsynced. `progress(done, total)` is called after every chunk.
pub fn copy_to_temp<'a>(
    upper: &'a UpperDir,
    content: &dyn FileContent,
    limit: Option<u64>,
    mode: u32,
    owner: Option<(u32, u32)>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Temp<'a>, CopyError> {
    let (name, file) = upper.temp_file(0o600)?;
    let temp = Temp { upper, name: Some(name), file };
    let size = content.size()?;
    let total = limit.map_or(size, |l| l.min(size));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &temp.file);
    let mut off = 0u64;
    while off < total {
        let want = (total - off).min(CHUNK as u64) as usize;
        let chunk = content.read(off, want)?;
        if chunk.is_empty() {
            break;
        }
        out.write_all(&chunk)?;
        off += chunk.len() as u64;
        progress(off, total);
    }
    out.flush()?;
    drop(out);
    if off != total {
        return Err(CopyError::Write(std::io::Error::other(format!("short copy: {off} of {total} bytes"))));
    }
    rustix::fs::fchmod(&temp.file, rustix::fs::Mode::from_raw_mode(mode))?;
    if let Some((u, g)) = owner {
        let _ = rustix::fs::fchown(&temp.file, Some(super::upper::uid(u)), Some(super::upper::gid(g)));
    }
    temp.file.sync_all()?;
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{StaticFile, ZeroFile};

    #[test]
    fn streams_and_commits() {
        let d = tempfile::tempdir().unwrap();
        let s = UpperDir::open(d.path()).unwrap();
        let data: Vec<u8> = (0..(CHUNK * 2 + 123)).map(|i| (i % 251) as u8).collect();
        let f = StaticFile(data.clone());
        let mut calls = 0;
        let t = copy_to_temp(&s, &f, None, 0o640, None, &mut |_, _| calls += 1).unwrap();
        assert_eq!(calls, 3);
        let root = s.dir(&[]).unwrap();
        t.commit(&root, "out").unwrap();
        assert_eq!(std::fs::read(d.path().join("out")).unwrap(), data);
        let t = copy_to_temp(&s, &f, Some(10), 0o640, None, &mut |_, _| {}).unwrap();
        t.commit(&root, "out").unwrap();
        assert_eq!(std::fs::read(d.path().join("out")).unwrap(), &data[..10]);
    }

    #[test]
    fn dropped_temp_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = UpperDir::open(d.path()).unwrap();
        let t = copy_to_temp(&s, &ZeroFile(1000), None, 0o644, None, &mut |_, _| {}).unwrap();
        drop(t);
        let work = d.path().join(super::super::upper::WORK);
        assert_eq!(std::fs::read_dir(work).unwrap().count(), 0);
    }
}
