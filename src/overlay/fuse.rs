//! The FUSE operations of [`OverlayFs`].

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, FileAttr, FileHandle, FileType as FT, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::RwLock;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use super::merge::{self, Entry};
use super::resolve::{check_name, components};
use super::store::{self, gid, uid};
use super::{Open, OverlayFs};
use crate::views::{NodeId, VNode};

/// Entry and attribute TTL of overlay mounts: short, as DIR may change under the mount.
const TTL: Duration = Duration::from_secs(1);
const BLKSIZE: u32 = 1 << 20;
/// Largest xattr value or list Linux allows.
const XATTR_MAX: usize = 1 << 16;

type R<T> = Result<T, Errno>;

fn fe(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw_os_error())
}

/// Runs `f`, turning a panic into `EIO` and a log line.
fn guard<T>(what: &str, f: impl FnOnce() -> R<T>) -> Result<T, fuser::Errno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(fe),
        Err(_) => {
            log::error!("internal error in overlay {what}");
            Err(fuser::Errno::EIO)
        }
    }
}

fn time(s: i64, ns: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

fn fuse_kind(k: FileType) -> FT {
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
    fn upper_attr(&self, ino: u64, st: &Stat) -> FileAttr {
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

    fn lower_attr(&self, ino: u64, node: NodeId, path: &str) -> R<FileAttr> {
        let (kind, perm, size, nlink) = match &self.tree.nodes[node] {
            VNode::Dir(entries) => {
                let subdirs = entries.iter().filter(|(_, c)| !matches!(self.tree.nodes[*c], VNode::File(_))).count();
                (FT::Directory, self.dir_mode(), 0, 2 + subdirs as u32)
            }
            VNode::Dyn(_) => (FT::Directory, 0o555 & !(self.owner.umask as u32), 0, 2),
            VNode::File(f) => {
                let size = f.size().map_err(|e| {
                    log::error!("{path}: {e}");
                    Errno::IO
                })?;
                (FT::RegularFile, self.file_mode(), size, 1)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm: perm as u16,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        })
    }

    fn ino_of(&self, e: &Entry) -> u64 {
        self.nodes.ino(&e.path, e.lower.map(|n| n as u64 + 1))
    }

    fn attr(&self, e: &Entry) -> R<FileAttr> {
        let ino = self.ino_of(e);
        match (&e.upper, e.lower) {
            (Some(st), _) => Ok(self.upper_attr(ino, st)),
            (None, Some(n)) => self.lower_attr(ino, n, &e.path),
            (None, None) => Err(Errno::NOENT),
        }
    }

    fn child_path(parent: &str, name: &str) -> String {
        if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}/{name}")
        }
    }

    /// The parent entry (a writable directory) and the checked name for a namespace change.
    fn parent_for_change<'n>(&self, parent: INodeNo, name: &'n OsStr) -> R<(Entry, &'n str)> {
        if self.is_inner(parent.0) {
            return Err(Errno::ROFS);
        }
        let name = check_name(name)?;
        let pe = self.walk(&self.path(parent.0)?)?;
        if pe.is_dyn(&self.tree) {
            return Err(Errno::ROFS);
        }
        if !pe.is_dir(&self.tree) {
            return Err(Errno::NOTDIR);
        }
        Ok((pe, name))
    }

    fn chown_new(&self, req: &Request, dir: impl AsFd, name: &str) -> R<()> {
        if self.is_root {
            rustix::fs::chownat(dir, name, Some(uid(req.uid())), Some(gid(req.gid())), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    fn new_handle(&self, open: Open) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, Arc::new(RwLock::new(open)));
        fh
    }

    fn open_upper(&self, e: &Entry, flags: i32) -> R<std::fs::File> {
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

    /// Creates a file (`create`, `mknod`), returning its entry and, for `create`, an open handle.
    fn make_file(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, open: bool) -> R<(Entry, Option<u64>)> {
        let (pe, name) = self.parent_for_change(parent, name)?;
        let path = Self::child_path(&pe.path, name);
        let _ns = self.ns.lock();
        match self.step(&pe, name) {
            Ok(_) => return Err(Errno::EXIST),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        let dir = self.ensure_dir_entry(&pe)?;
        let perm = mode & 0o7777 & !umask;
        let kind = mode & libc::S_IFMT;
        let file = if kind == libc::S_IFIFO {
            rustix::fs::mknodat(dir.as_fd(), name, FileType::Fifo, Mode::from_raw_mode(perm), 0)?;
            rustix::fs::chmodat(dir.as_fd(), name, Mode::from_raw_mode(perm), AtFlags::empty())?;
            None
        } else if kind == libc::S_IFREG || kind == 0 {
            let fd = rustix::fs::openat(
                dir.as_fd(),
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(perm),
            )?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm))?;
            Some(std::fs::File::from(fd))
        } else {
            return Err(Errno::PERM);
        };
        self.chown_new(req, dir.as_fd(), name)?;
        store::remove_whiteout(dir.as_fd(), name)?;
        let e = self.walk(&path)?;
        let fh = match (open, file) {
            (true, Some(f)) => Some(self.new_handle(Open::Upper(f))),
            _ => None,
        };
        Ok((e, fh))
    }

    /// The upper directory of entry `e` (a directory), created if missing.
    fn ensure_dir_entry(&self, e: &Entry) -> R<Arc<std::os::fd::OwnedFd>> {
        if let Some(d) = &e.dir {
            return Ok(d.clone());
        }
        let comps = components(&e.path)?;
        Ok(Arc::new(self.store.ensure_dir(&comps, self.dir_mode(), self.default_owner())?))
    }

    fn do_mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32) -> R<Entry> {
        let (pe, name) = self.parent_for_change(parent, name)?;
        let path = Self::child_path(&pe.path, name);
        let _ns = self.ns.lock();
        match self.step(&pe, name) {
            Ok(_) => return Err(Errno::EXIST),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        // A virtual directory of this name was deleted: the new one must not show its entries.
        let hidden_lower = pe.lower_live && pe.lower.and_then(|l| self.tree.lookup(l, name)).is_some();
        let perm = Mode::from_raw_mode(mode & 0o7777 & !umask);
        let dir = self.ensure_dir_entry(&pe)?;
        if hidden_lower {
            let (tmp, fd) = self.store.temp_dir(0o700)?;
            store::add_opaque(&fd)?;
            rustix::fs::fchmod(&fd, perm)?;
            self.store.commit(&tmp, dir.as_fd(), name)?;
        } else {
            rustix::fs::mkdirat(dir.as_fd(), name, perm)?;
            rustix::fs::chmodat(dir.as_fd(), name, perm, AtFlags::empty())?;
        }
        self.chown_new(req, dir.as_fd(), name)?;
        store::remove_whiteout(dir.as_fd(), name)?;
        self.walk(&path)
    }

    fn do_symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path) -> R<Entry> {
        let (pe, name) = self.parent_for_change(parent, name)?;
        let path = Self::child_path(&pe.path, name);
        let _ns = self.ns.lock();
        match self.step(&pe, name) {
            Ok(_) => return Err(Errno::EXIST),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        let dir = self.ensure_dir_entry(&pe)?;
        rustix::fs::symlinkat(target, dir.as_fd(), name)?;
        self.chown_new(req, dir.as_fd(), name)?;
        store::remove_whiteout(dir.as_fd(), name)?;
        self.walk(&path)
    }

    fn do_unlink(&self, parent: INodeNo, name: &OsStr, want_dir: bool) -> R<()> {
        let (pe, name) = self.parent_for_change(parent, name)?;
        let _ns = self.ns.lock();
        let e = self.step(&pe, name)?;
        let is_dir = e.is_dir(&self.tree);
        if want_dir && !is_dir {
            return Err(Errno::NOTDIR);
        }
        if !want_dir && is_dir {
            return Err(Errno::ISDIR);
        }
        if want_dir {
            if e.is_dyn(&self.tree) {
                return Err(Errno::ROFS);
            }
            if !merge::list(&self.tree, &e)?.is_empty() {
                return Err(Errno::NOTEMPTY);
            }
        }
        // Whiteout first: until the upper entry is gone it still wins, so a crash in between
        // leaves the old state, never the pristine virtual entry.
        if e.lower_any {
            let dir = self.ensure_parent(&e)?;
            store::add_whiteout(dir.as_fd(), name)?;
        }
        if e.upper.is_some() {
            let dir = e.parent.clone().ok_or(Errno::IO)?;
            if is_dir {
                self.store.trash(dir.as_fd(), name)?;
            } else {
                rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty())?;
            }
        }
        self.nodes.forget_path(&e.path);
        Ok(())
    }

    fn do_rename(&self, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags) -> R<()> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::INVAL);
        }
        let (sp, sname) = self.parent_for_change(parent, name)?;
        let (dp, dname) = self.parent_for_change(newparent, newname)?;
        let src = self.step(&sp, sname)?;
        let dst_path = Self::child_path(&dp.path, dname);
        if src.path == dst_path {
            return Ok(());
        }
        if dst_path.starts_with(&format!("{}/", src.path)) {
            return Err(Errno::INVAL);
        }
        let src_dir = src.is_dir(&self.tree);
        if src.is_dyn(&self.tree) {
            return Err(Errno::ROFS);
        }
        if src_dir && src.lower.is_some() {
            // Moving a virtual directory would mean copying it whole: callers (mv) fall back
            // to copy and delete, as on overlayfs.
            return Err(Errno::XDEV);
        }
        let check_dst = |dst: &Option<Entry>| -> R<()> {
            if let Some(d) = dst {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EXIST);
                }
                if d.is_dyn(&self.tree) {
                    return Err(Errno::ROFS);
                }
                if d.is_dir(&self.tree) {
                    if !src_dir {
                        return Err(Errno::ISDIR);
                    }
                    if d.lower.is_some() {
                        return Err(Errno::XDEV);
                    }
                    if !merge::list(&self.tree, d)?.is_empty() {
                        return Err(Errno::NOTEMPTY);
                    }
                } else if src_dir {
                    return Err(Errno::NOTDIR);
                }
            }
            Ok(())
        };
        let lookup_dst = |dp: &Entry| -> R<Option<Entry>> {
            match self.step(dp, dname) {
                Ok(d) => Ok(Some(d)),
                Err(Errno::NOENT) => Ok(None),
                Err(e) => Err(e),
            }
        };
        check_dst(&lookup_dst(&dp)?)?;

        if src.upper.is_none() {
            // A virtual file: copy it to its new name (outside the namespace lock), then
            // commit and whiteout the old name.
            let node = src.lower.ok_or(Errno::NOENT)?;
            let VNode::File(f) = &self.tree.nodes[node] else { return Err(Errno::XDEV) };
            let temp = super::copyup::copy_to_temp(&self.store, f.as_ref(), None, self.file_mode(), self.default_owner(), &mut |_, _| {})
                .map_err(|err| {
                    log::error!("rename of {}: {err}", src.path);
                    err.errno()
                })?;
            let _ns = self.ns.lock();
            let src = self.walk(&src.path)?;
            if src.upper.is_some() || src.lower != Some(node) {
                return Err(Errno::NOENT);
            }
            let dp = self.walk(&dp.path)?;
            let dst = lookup_dst(&dp)?;
            check_dst(&dst)?;
            let ddir = self.ensure_dir_entry(&dp)?;
            temp.commit(ddir.as_fd(), dname)?;
            store::remove_whiteout(ddir.as_fd(), dname)?;
            let sdir = self.ensure_parent(&src)?;
            store::add_whiteout(sdir.as_fd(), sname)?;
            self.nodes.rename(&src.path, &dst_path);
            return Ok(());
        }

        let _ns = self.ns.lock();
        let src = self.walk(&src.path)?;
        let dp = self.walk(&dp.path)?;
        let dst = lookup_dst(&dp)?;
        check_dst(&dst)?;
        let ddir = self.ensure_dir_entry(&dp)?;
        let sdir = src.parent.clone().ok_or(Errno::NOENT)?;
        if src.lower_any {
            store::add_whiteout(sdir.as_fd(), sname)?;
        }
        if src_dir {
            let hidden_lower = dp.lower_live && dp.lower.and_then(|l| self.tree.lookup(l, dname)).is_some();
            if hidden_lower {
                if let Some(d) = &src.dir {
                    store::add_opaque(d.as_fd())?;
                }
            }
            if dst.as_ref().is_some_and(|d| d.upper.is_some()) {
                self.store.trash(ddir.as_fd(), dname)?;
            }
        }
        rustix::fs::renameat(sdir.as_fd(), sname, ddir.as_fd(), dname)?;
        rustix::fs::fsync(ddir.as_fd())?;
        store::remove_whiteout(ddir.as_fd(), dname)?;
        self.nodes.rename(&src.path, &dst_path);
        Ok(())
    }

    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        size: Option<u64>,
        times: (Option<TimeOrNow>, Option<TimeOrNow>),
        fh: Option<FileHandle>,
    ) -> R<FileAttr> {
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
            let handle = fh.and_then(|f| self.handles.get(&f.0).map(|h| h.clone()));
            let done = match handle.as_ref().map(|h| h.read()) {
                Some(g) => match &*g {
                    Open::Upper(f) => {
                        f.set_len(sz).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
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
    fn xattr_fd(&self, e: &Entry) -> R<std::os::fd::OwnedFd> {
        match e.upper_kind() {
            Some(FileType::RegularFile) | Some(FileType::Directory) => {
                let (dir, name) = self.at(e);
                rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK, Mode::empty())
            }
            _ => Err(Errno::PERM),
        }
    }

    fn readdir_entries(&self, ino: INodeNo, e: &Entry) -> R<Vec<(u64, FT, String)>> {
        let parent_ino = self.nodes.ino(e.parent_path(), None);
        let mut out = vec![(ino.0, FT::Directory, ".".to_string()), (parent_ino, FT::Directory, "..".to_string())];
        for l in merge::list(&self.tree, e)? {
            let path = Self::child_path(&e.path, &l.name);
            let child = self.nodes.ino(&path, l.lower.map(|n| n as u64 + 1));
            out.push((child, fuse_kind(l.kind), l.name));
        }
        Ok(out)
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, fuser::Errno>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for OverlayFs {
    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.inner.init(req, config)
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.is_inner(parent.0) {
            return self.inner.lookup(req, parent, name, reply);
        }
        let r = guard("lookup", || {
            let pe = self.walk(&self.path(parent.0)?)?;
            if pe.is_dyn(&self.tree) {
                return Ok(None);
            }
            let name = check_name(name).map_err(|_| Errno::NOENT)?;
            let e = self.step(&pe, name)?;
            self.attr(&e).map(Some)
        });
        match r {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Ok(None) => self.inner.lookup(req, parent, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        if self.is_inner(ino.0) {
            self.inner.forget(req, ino, nlookup);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.is_inner(ino.0) {
            return self.inner.getattr(req, ino, fh, reply);
        }
        let r = guard("getattr", || {
            if let Some(h) = fh.and_then(|f| self.handles.get(&f.0).map(|h| h.clone())) {
                if let Open::Upper(f) = &*h.read() {
                    return Ok(self.upper_attr(ino.0, &rustix::fs::fstat(f)?));
                }
            }
            self.attr(&self.walk(&self.path(ino.0)?)?)
        });
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match guard("setattr", || self.do_setattr(ino, mode, (uid, gid), size, (atime, mtime), fh)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        if self.is_inner(ino.0) {
            return self.inner.readlink(req, ino, reply);
        }
        let r = guard("readlink", || {
            let e = self.walk(&self.path(ino.0)?)?;
            if e.upper_kind() != Some(FileType::Symlink) {
                return Err(Errno::INVAL);
            }
            let (dir, name) = self.at(&e);
            Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
        });
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        match guard("mknod", || self.make_file(req, parent, name, mode, umask, false).and_then(|(e, _)| self.attr(&e))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match guard("mkdir", || self.do_mkdir(req, parent, name, mode, umask).and_then(|e| self.attr(&e))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("unlink", || self.do_unlink(parent, name, false)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("rmdir", || self.do_unlink(parent, name, true)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        match guard("symlink", || self.do_symlink(req, parent, link_name, target).and_then(|e| self.attr(&e))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match guard("rename", || self.do_rename(parent, name, newparent, newname, flags)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(fuser::Errno::EPERM);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.is_inner(ino.0) {
            return self.inner.open(req, ino, flags, reply);
        }
        let r = guard("open", || {
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
        });
        match r {
            Ok((fh, fl)) => reply.opened(FileHandle(fh), fl),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self.is_inner(ino.0) {
            return self.inner.read(req, ino, fh, offset, size, flags, lock_owner, reply);
        }
        let Some(h) = self.handles.get(&fh.0).map(|h| h.clone()) else { return reply.error(fuser::Errno::EBADF) };
        let g = h.read();
        match &*g {
            Open::Lower { node, .. } => {
                let natural = INodeNo(*node as u64 + 1);
                self.inner.read(req, natural, fh, offset, size, flags, lock_owner, reply)
            }
            Open::Upper(f) => {
                let r = guard("read", || {
                    let mut buf = vec![0u8; size as usize];
                    let mut got = 0;
                    while got < buf.len() {
                        match f.read_at(&mut buf[got..], offset + got as u64) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(Errno::from_io_error(&e).unwrap_or(Errno::IO)),
                        }
                    }
                    buf.truncate(got);
                    Ok(buf)
                });
                match r {
                    Ok(d) => reply.data(&d),
                    Err(e) => reply.error(e),
                }
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = guard("write", || {
            let h = self.handles.get(&fh.0).map(|h| h.clone()).ok_or(Errno::BADF)?;
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
            f.write_all_at(data, offset).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            Ok(data.len() as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lo: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.handles.remove(&fh.0).is_some() {
            // Reads of a lower file went through the inner filesystem under this handle.
            self.inner.forget_handle(fh.0);
            reply.ok();
        } else {
            self.inner.release(req, ino, fh, flags, lo, flush, reply);
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let r = guard("fsync", || {
            if let Some(h) = self.handles.get(&fh.0).map(|h| h.clone()) {
                if let Open::Upper(f) = &*h.read() {
                    let r = if datasync { f.sync_data() } else { f.sync_all() };
                    r.map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.is_inner(ino.0) {
            return self.inner.opendir(req, ino, flags, reply);
        }
        let r = guard("opendir", || {
            let e = self.walk(&self.path(ino.0)?)?;
            if !e.is_dir(&self.tree) {
                return Err(Errno::NOTDIR);
            }
            Ok(e.is_dyn(&self.tree))
        });
        match r {
            Ok(true) => self.inner.opendir(req, ino, flags, reply),
            Ok(false) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if self.is_inner(ino.0) {
            return self.inner.readdir(req, ino, fh, offset, reply);
        }
        let r = guard("readdir", || {
            let e = self.walk(&self.path(ino.0)?)?;
            if e.is_dyn(&self.tree) {
                return Ok(None);
            }
            if !e.is_dir(&self.tree) {
                return Err(Errno::NOTDIR);
            }
            self.readdir_entries(ino, &e).map(Some)
        });
        match r {
            Ok(None) => self.inner.readdir(req, ino, fh, offset, reply),
            Ok(Some(entries)) => {
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match guard("statfs", || rustix::fs::fstatvfs(self.store.root())) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if self.is_inner(ino.0) {
            return self.inner.access(req, ino, mask, reply);
        }
        let r = guard("access", || {
            let e = self.walk(&self.path(ino.0)?)?;
            if e.is_dyn(&self.tree) && mask.bits() & libc::W_OK != 0 {
                return Err(Errno::ROFS);
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _flags: i32, reply: ReplyCreate) {
        let r = guard("create", || {
            let (e, fh) = self.make_file(req, parent, name, mode | libc::S_IFREG, umask, true)?;
            Ok((self.attr(&e)?, fh.ok_or(Errno::IO)?))
        });
        match r {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if self.is_inner(ino.0) {
            return self.inner.getxattr(req, ino, name, size, reply);
        }
        let r = guard("getxattr", || {
            let e = self.walk(&self.path(ino.0)?)?;
            if e.upper.is_none() {
                return Err(Errno::NODATA);
            }
            let fd = self.xattr_fd(&e).map_err(|_| Errno::NODATA)?;
            let mut buf = vec![0u8; XATTR_MAX];
            let n = rustix::fs::fgetxattr(&fd, name, &mut buf[..])?;
            buf.truncate(n);
            Ok(buf)
        });
        xattr_reply(reply, size, r);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.is_inner(ino.0) {
            return self.inner.listxattr(req, ino, size, reply);
        }
        let r = guard("listxattr", || {
            let e = self.walk(&self.path(ino.0)?)?;
            let Ok(fd) = self.xattr_fd(&e) else { return Ok(Vec::new()) };
            let mut buf = vec![0u8; XATTR_MAX];
            let n = rustix::fs::flistxattr(&fd, &mut buf[..])?;
            buf.truncate(n);
            Ok(buf)
        });
        xattr_reply(reply, size, r);
    }

    fn setxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _pos: u32, reply: ReplyEmpty) {
        let r = guard("setxattr", || {
            if self.is_inner(ino.0) {
                return Err(Errno::ROFS);
            }
            let path = self.path(ino.0)?;
            self.copy_up(&path, None)?;
            let e = self.walk(&path)?;
            let fd = self.xattr_fd(&e)?;
            rustix::fs::fsetxattr(&fd, name, value, rustix::fs::XattrFlags::from_bits_retain(flags as u32))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = guard("removexattr", || {
            if self.is_inner(ino.0) {
                return Err(Errno::ROFS);
            }
            let e = self.walk(&self.path(ino.0)?)?;
            if e.upper.is_none() {
                return Err(Errno::NODATA);
            }
            rustix::fs::fremovexattr(self.xattr_fd(&e)?, name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(fuser::Errno::ENOTTY);
    }
}
