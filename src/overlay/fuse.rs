//! The FUSE operations of [`OverlayFs`]: dispatch only. Inodes of subtrees grafted by the
//! read-only adapter go to it; the rest is answered by the operations in [`attr`](super::attr),
//! [`namespace`](super::namespace) and [`data`](super::data), through the shared answers of
//! [`crate::fs::reply`].

use std::ffi::OsStr;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, FileHandle, Filesystem, FopenFlags, INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::io::Errno;

use super::namespace::Caller;
use super::{Open, OverlayFs};
use crate::fs::reply::{self, answer, guard, Reply, VOLATILE_TTL as TTL};

impl Filesystem for OverlayFs {
    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.inner.init(req, config)
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.is_inner(parent.0) {
            return self.inner.lookup(req, parent, name, reply);
        }
        match guard("overlay lookup", || self.lookup_entry(parent, name)) {
            Ok(Some(attr)) => reply.send((TTL, attr)),
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
        answer(reply, guard("overlay getattr", || self.stat(ino, fh)).map(|a| (TTL, a)));
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
        let r = guard("overlay setattr", || self.set_attr(ino, mode, (uid, gid), size, (atime, mtime), fh));
        answer(reply, r.map(|a| (TTL, a)));
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        if self.is_inner(ino.0) {
            return self.inner.readlink(req, ino, reply);
        }
        answer(reply, guard("overlay readlink", || self.read_link(ino)));
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        let r = guard("overlay mknod", || {
            self.make_file(Caller::of(req), parent, name, mode, umask, false).and_then(|(e, _)| self.attr(&e))
        });
        answer(reply, r.map(|a| (TTL, a)));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let r = guard("overlay mkdir", || self.make_dir(Caller::of(req), parent, name, mode, umask).and_then(|e| self.attr(&e)));
        answer(reply, r.map(|a| (TTL, a)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, guard("overlay unlink", || self.remove(parent, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, guard("overlay rmdir", || self.remove(parent, name, true)));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let r = guard("overlay symlink", || {
            self.make_symlink(Caller::of(req), parent, link_name, target).and_then(|e| self.attr(&e))
        });
        answer(reply, r.map(|a| (TTL, a)));
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
        answer(reply, guard("overlay rename", || self.rename_entry(parent, name, newparent, newname, flags)));
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(fuser::Errno::EPERM);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.is_inner(ino.0) {
            return self.inner.open(req, ino, flags, reply);
        }
        answer(reply, guard("overlay open", || self.open_file(ino, flags)));
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
        let Some(h) = self.handle(fh.0) else { return reply.error(fuser::Errno::EBADF) };
        let g = h.read();
        match &*g {
            Open::Lower { node, .. } => {
                let natural = INodeNo(*node as u64 + 1);
                self.inner.read(req, natural, fh, offset, size, flags, lock_owner, reply)
            }
            Open::Upper(f) => answer(reply, guard("overlay read", || Self::read_upper(f, offset, size))),
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
        answer(reply, guard("overlay write", || self.write_data(fh.0, offset, data)));
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
        answer(reply, guard("overlay fsync", || self.sync(fh.0, datasync)));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.is_inner(ino.0) {
            return self.inner.opendir(req, ino, flags, reply);
        }
        match guard("overlay opendir", || self.open_dir(ino)) {
            Ok(true) => self.inner.opendir(req, ino, flags, reply),
            r => answer(reply, r.map(|_| (0, FopenFlags::empty()))),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        if self.is_inner(ino.0) {
            return self.inner.readdir(req, ino, fh, offset, reply);
        }
        match guard("overlay readdir", || self.list_dir(ino)) {
            Ok(None) => self.inner.readdir(req, ino, fh, offset, reply),
            Ok(Some(entries)) => reply::fill_dir(reply, &entries, offset),
            Err(e) => reply.error(e),
        }
    }

    /// Merged directories list without attributes (each entry is looked up, as with `readdir`);
    /// the read-only tree's own directories answer with theirs.
    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectoryPlus) {
        if self.is_inner(ino.0) {
            return self.inner.readdirplus(req, ino, fh, offset, reply);
        }
        match guard("overlay readdirplus", || self.list_dir(ino)) {
            Ok(None) => self.inner.readdirplus(req, ino, fh, offset, reply),
            Ok(Some(entries)) => reply::fill_dir_plus_expiring(reply, &entries, offset),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match guard("overlay statfs", || rustix::fs::fstatvfs(self.upper.root())) {
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
        answer(reply, guard("overlay access", || self.check_access(ino, mask)));
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _flags: i32, reply: ReplyCreate) {
        let r = guard("overlay create", || {
            let (e, fh) = self.make_file(Caller::of(req), parent, name, mode | libc::S_IFREG, umask, true)?;
            Ok::<_, Errno>((TTL, self.attr(&e)?, fh.ok_or(Errno::IO)?))
        });
        answer(reply, r);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if self.is_inner(ino.0) {
            return self.inner.getxattr(req, ino, name, size, reply);
        }
        reply::xattr(reply, size, guard("overlay getxattr", || self.get_xattr(ino, name)));
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.is_inner(ino.0) {
            return self.inner.listxattr(req, ino, size, reply);
        }
        reply::xattr(reply, size, guard("overlay listxattr", || self.list_xattr(ino)));
    }

    fn setxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _pos: u32, reply: ReplyEmpty) {
        answer(reply, guard("overlay setxattr", || self.set_xattr(ino, name, value, flags)));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, guard("overlay removexattr", || self.remove_xattr(ino, name)));
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
        reply::no_ioctl(reply);
    }
}
