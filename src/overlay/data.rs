//! Data I/O of the overlay: open handles, reads of copied-up files, writes (copying a virtual
//! file up on its first write) and `fsync`. Reads of files not copied up go to the read-only
//! adapter (see `fuse.rs`).

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{FopenFlags, INodeNo, OpenFlags};
use parking_lot::RwLock;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use super::merge::Entry;
use super::{Open, OverlayFs, OverlayResult};
use crate::fs::error::ToErrno;
use crate::views::VNode;

impl OverlayFs {
    /// Registers `open` under a fresh handle number.
    pub(super) fn new_handle(&self, open: Open) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, Arc::new(RwLock::new(open)));
        fh
    }

    /// The open handle `fh` of this layer, if it is one.
    pub(super) fn handle(&self, fh: u64) -> Option<Arc<RwLock<Open>>> {
        self.handles.get(&fh).map(|h| h.clone())
    }

    /// Opens the copied-up regular file `e` with `open(2)` `flags` (access mode, `O_TRUNC`).
    pub(super) fn open_upper(&self, e: &Entry, flags: i32) -> OverlayResult<std::fs::File> {
        if e.upper_kind() != Some(FileType::RegularFile) {
            return Err(if e.upper_kind() == Some(FileType::Directory) { Errno::ISDIR } else { Errno::LOOP });
        }
        let mut of = OFlags::NOFOLLOW | OFlags::CLOEXEC;
        of |= match flags & libc::O_ACCMODE {
            libc::O_WRONLY => OFlags::WRONLY,
            libc::O_RDWR => OFlags::RDWR,
            _ => OFlags::RDONLY,
        };
        if flags & libc::O_TRUNC != 0 {
            of |= OFlags::TRUNC;
        }
        let (dir, name) = self.at(e);
        Ok(std::fs::File::from(rustix::fs::openat(dir, name, of, Mode::empty())?))
    }

    /// `open`: a handle on the copied-up file, or on the virtual one (copied up at once when
    /// opened for writing with `O_TRUNC`), and the kernel caching flags.
    pub(super) fn open_file(&self, ino: INodeNo, flags: OpenFlags) -> OverlayResult<(u64, FopenFlags)> {
        let path = self.path(ino.0)?;
        let mut e = self.walk(&path)?;
        let writable = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if e.upper.is_none() && writable && flags.0 & libc::O_TRUNC != 0 {
            self.copy_up(&path, Some(0))?;
            e = self.walk(&path)?;
        }
        if e.upper.is_some() {
            let f = self.open_upper(&e, flags.0)?;
            return Ok((self.new_handle(Open::Upper(f)), FopenFlags::empty()));
        }
        let node = e.lower.ok_or(Errno::NOENT)?;
        let VNode::File(f) = &self.tree.nodes[node] else { return Err(Errno::ISDIR) };
        let cache = if f.volatile() {
            FopenFlags::FOPEN_DIRECT_IO
        } else if writable {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        };
        let fh = self.new_handle(Open::Lower { node, path, writable });
        Ok((fh, cache))
    }

    /// Up to `size` bytes at `offset` of the copied-up file `f` (fewer at its end).
    pub(super) fn read_upper(f: &std::fs::File, offset: u64, size: u32) -> OverlayResult<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_rustix_errno()),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// `write` through handle `fh`: a writable handle on a virtual file copies it up first.
    pub(super) fn write_data(&self, fh: u64, offset: u64, data: &[u8]) -> OverlayResult<u32> {
        let h = self.handle(fh).ok_or(Errno::BADF)?;
        let upgrade = match &*h.read() {
            Open::Lower { path, writable: true, .. } => Some(path.clone()),
            Open::Lower { .. } => return Err(Errno::BADF),
            Open::Upper(_) => None,
        };
        if let Some(path) = upgrade {
            let mut g = h.write();
            if matches!(&*g, Open::Lower { .. }) {
                self.copy_up(&path, None)?;
                let e = self.walk(&path)?;
                *g = Open::Upper(self.open_upper(&e, libc::O_RDWR)?);
            }
        }
        let g = h.read();
        let Open::Upper(f) = &*g else { return Err(Errno::BADF) };
        f.write_all_at(data, offset).map_err(|e| e.to_rustix_errno())?;
        Ok(data.len() as u32)
    }

    /// `fsync` of handle `fh` (a no-op for virtual files: nothing of them is written).
    pub(super) fn sync(&self, fh: u64, datasync: bool) -> OverlayResult<()> {
        if let Some(h) = self.handle(fh) {
            if let Open::Upper(f) = &*h.read() {
                let r = if datasync { f.sync_data() } else { f.sync_all() };
                r.map_err(|e| e.to_rustix_errno())?;
            }
        }
        Ok(())
    }
}
