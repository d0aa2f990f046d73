//! Attributes of overlay entries: `stat` answers built from the overlay directory or the
//! virtual tree, `setattr` (copying a virtual file up first), and extended attributes (kept on
//! copied-up files and directories only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileHandle, FileType as FT, INodeNo, TimeOrNow};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::merge::Entry;
use super::upper::{gid, uid};
use super::{Open, OverlayFs, OverlayResult};
use crate::fs::error::ToErrno;
use crate::fs::reply::{VirtualStat, BLKSIZE};
use crate::views::{NodeId, VNode};

/// Largest xattr value or list Linux allows.
const XATTR_MAX: usize = 1 << 16;

/// A `stat` time from seconds and nanoseconds (times before the epoch read as the epoch).
fn time(s: i64, ns: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

/// The FUSE file type of a file type in the overlay directory.
pub(super) fn fuse_kind(k: FileType) -> FT {
    match k {
        FileType::Directory => FT::Directory,
        FileType::Symlink => FT::Symlink,
        FileType::Fifo => FT::NamedPipe,
        FileType::CharacterDevice => FT::CharDevice,
        FileType::BlockDevice => FT::BlockDevice,
        FileType::Socket => FT::Socket,
        _ => FT::RegularFile,
    }
}

/// A `utimensat` time from a `setattr` one (absent: left alone).
fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
        Some(TimeOrNow::Now) => Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as _ }
        }
    }
}

impl OverlayFs {
    /// The attributes of a copied-up entry, from its `stat`.
    pub(super) fn upper_attr(&self, ino: u64, st: &Stat) -> FileAttr {
        let ctime = time(st.st_ctime, st.st_ctime_nsec as i64);
        FileAttr {
            ino: INodeNo(ino),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec as i64),
            mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
            ctime,
            crtime: ctime,
            kind: fuse_kind(FileType::from_raw_mode(st.st_mode)),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    /// The attributes of virtual node `node` (at `path`), as the overlay shows it: writable
    /// modes, except for dynamic directories.
    fn lower_attr(&self, ino: u64, node: NodeId, path: &str) -> OverlayResult<FileAttr> {
        let stat = VirtualStat::of(&self.tree, node).map_err(|e| {
            log::error!("{path}: {e}");
            e.to_rustix_errno()
        })?;
        let perm = match &self.tree.nodes[node] {
            VNode::Dir(_) => self.dir_mode(),
            VNode::Dyn(_) => 0o555 & !(self.owner.umask as u32),
            VNode::File(_) => self.file_mode(),
        };
        Ok(stat.attr(ino, perm as u16, (self.owner.uid, self.owner.gid), self.mtime))
    }

    /// The inode number of entry `e`.
    pub(super) fn ino_of(&self, e: &Entry) -> u64 {
        self.nodes.ino(&e.path, e.lower.map(|n| n as u64 + 1))
    }

    /// The attributes of entry `e`: the copied-up object's when there is one.
    pub(super) fn attr(&self, e: &Entry) -> OverlayResult<FileAttr> {
        let ino = self.ino_of(e);
        match (&e.upper, e.lower) {
            (Some(st), _) => Ok(self.upper_attr(ino, st)),
            (None, Some(n)) => self.lower_attr(ino, n, &e.path),
            (None, None) => Err(Errno::NOENT),
        }
    }

    /// `getattr`: through the open handle `fh` when it is a copied-up file, else by path.
    pub(super) fn stat(&self, ino: INodeNo, fh: Option<FileHandle>) -> OverlayResult<FileAttr> {
        if let Some(h) = fh.and_then(|f| self.handle(f.0)) {
            if let Open::Upper(f) = &*h.read() {
                return Ok(self.upper_attr(ino.0, &rustix::fs::fstat(f)?));
            }
        }
        self.attr(&self.walk(&self.path(ino.0)?)?)
    }

    /// `setattr`: copies `ino` up (only the bytes kept by a truncation), then changes it.
    pub(super) fn set_attr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        size: Option<u64>,
        times: (Option<TimeOrNow>, Option<TimeOrNow>),
        fh: Option<FileHandle>,
    ) -> OverlayResult<FileAttr> {
        if self.is_inner(ino.0) {
            return Err(Errno::ROFS);
        }
        let path = self.path(ino.0)?;
        let mut e = self.walk(&path)?;
        if e.upper.is_none() {
            self.copy_up(&path, size)?;
            e = self.walk(&path)?;
        }
        let (dir, name) = self.at(&e);
        if let Some(sz) = size {
            let handle = fh.and_then(|f| self.handle(f.0));
            let done = match handle.as_ref().map(|h| h.read()) {
                Some(g) => match &*g {
                    Open::Upper(f) => {
                        f.set_len(sz).map_err(|e| e.to_rustix_errno())?;
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if !done {
                if e.upper_kind() != Some(FileType::RegularFile) {
                    return Err(if e.is_dir(&self.tree) { Errno::ISDIR } else { Errno::INVAL });
                }
                let fd = rustix::fs::openat(dir, name, OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
                rustix::fs::ftruncate(&fd, sz)?;
            }
        }
        if let Some(m) = mode {
            if e.upper_kind() == Some(FileType::Symlink) {
                return Err(Errno::OPNOTSUPP);
            }
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(m & 0o7777), AtFlags::empty())?;
        }
        if owner.0.is_some() || owner.1.is_some() {
            rustix::fs::chownat(dir, name, owner.0.map(uid), owner.1.map(gid), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        if times.0.is_some() || times.1.is_some() {
            let ts = Timestamps { last_access: timespec(times.0), last_modification: timespec(times.1) };
            rustix::fs::utimensat(dir, name, &ts, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        self.attr(&self.walk(&path)?)
    }

    /// An fd for xattr calls on `e`'s upper object (regular files and directories).
    fn xattr_fd(&self, e: &Entry) -> OverlayResult<std::os::fd::OwnedFd> {
        match e.upper_kind() {
            Some(FileType::RegularFile) | Some(FileType::Directory) => {
                let (dir, name) = self.at(e);
                rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK, Mode::empty())
            }
            _ => Err(Errno::PERM),
        }
    }


    /// `getxattr`: the value of `name` on `ino`'s copied-up object.
    pub(super) fn get_xattr(&self, ino: INodeNo, name: &std::ffi::OsStr) -> OverlayResult<Vec<u8>> {
        let e = self.walk(&self.path(ino.0)?)?;
        if e.upper.is_none() {
            return Err(Errno::NODATA);
        }
        let fd = self.xattr_fd(&e).map_err(|_| Errno::NODATA)?;
        let mut buf = vec![0u8; XATTR_MAX];
        let n = rustix::fs::fgetxattr(&fd, name, &mut buf[..])?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `listxattr`: the names on `ino`'s copied-up object (none on a virtual one).
    pub(super) fn list_xattr(&self, ino: INodeNo) -> OverlayResult<Vec<u8>> {
        let e = self.walk(&self.path(ino.0)?)?;
        let Ok(fd) = self.xattr_fd(&e) else { return Ok(Vec::new()) };
        let mut buf = vec![0u8; XATTR_MAX];
        let n = rustix::fs::flistxattr(&fd, &mut buf[..])?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `setxattr`: copies `ino` up, then sets `name` on it.
    pub(super) fn set_xattr(&self, ino: INodeNo, name: &std::ffi::OsStr, value: &[u8], flags: i32) -> OverlayResult<()> {
        if self.is_inner(ino.0) {
            return Err(Errno::ROFS);
        }
        let path = self.path(ino.0)?;
        self.copy_up(&path, None)?;
        let e = self.walk(&path)?;
        let fd = self.xattr_fd(&e)?;
        rustix::fs::fsetxattr(&fd, name, value, XattrFlags::from_bits_retain(flags as u32))
    }

    /// `removexattr`: removes `name` from `ino`'s copied-up object.
    pub(super) fn remove_xattr(&self, ino: INodeNo, name: &std::ffi::OsStr) -> OverlayResult<()> {
        if self.is_inner(ino.0) {
            return Err(Errno::ROFS);
        }
        let e = self.walk(&self.path(ino.0)?)?;
        if e.upper.is_none() {
            return Err(Errno::NODATA);
        }
        rustix::fs::fremovexattr(self.xattr_fd(&e)?, name)
    }
}
