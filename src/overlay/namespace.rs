//! Namespace changes and lookups of the overlay: name resolution, directory listings, and
//! creating, removing and renaming entries (each a change of the overlay directory, serialized
//! by the namespace lock, with whiteouts hiding what was deleted from the virtual tree).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use fuser::{FileType as FT, INodeNo, RenameFlags};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::attr::fuse_kind;
use super::merge::{self, Entry};
use super::resolve::{check_name, components};
use super::upper::{self, gid, uid};
use super::{Open, OverlayFs, OverlayResult};
use crate::fs::error::ToErrno;
use crate::views::VNode;

/// The caller of a request that creates an entry: its owner when the daemon may chown.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caller {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
}

impl Caller {
    /// The caller of `req`.
    pub(super) fn of(req: &fuser::Request) -> Self {
        Caller { uid: req.uid(), gid: req.gid() }
    }
}

/// One entry of a directory listing: inode, kind, name.
pub(super) type Listed = (u64, FT, String);

impl OverlayFs {
    /// The path of `name` in directory `parent` (`""` is the root).
    fn child_path(parent: &str, name: &str) -> String {
        if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}/{name}")
        }
    }

    /// The parent entry (a writable directory) and the checked name for a namespace change.
    pub(super) fn parent_for_change<'n>(&self, parent: INodeNo, name: &'n OsStr) -> OverlayResult<(Entry, &'n str)> {
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

    /// `EEXIST` when `name` is in directory `pe` (checked under the namespace lock).
    fn check_absent(&self, pe: &Entry, name: &str) -> OverlayResult<()> {
        match self.step(pe, name) {
            Ok(_) => Err(Errno::EXIST),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Finishes an entry just made as `name` in `dir`: owned by the caller (when the daemon
    /// may chown), and no longer hidden by a whiteout of a deleted virtual entry.
    fn settle_new(&self, caller: Caller, dir: std::os::fd::BorrowedFd<'_>, name: &str) -> OverlayResult<()> {
        if self.is_root {
            rustix::fs::chownat(dir, name, Some(uid(caller.uid)), Some(gid(caller.gid)), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        upper::remove_whiteout(dir, name)
    }

    /// Creates a file (`create`, `mknod`), returning its entry and, for `create`, an open handle.
    pub(super) fn make_file(&self, caller: Caller, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, open: bool) -> OverlayResult<(Entry, Option<u64>)> {
        let (pe, name) = self.parent_for_change(parent, name)?;
        let path = Self::child_path(&pe.path, name);
        let _ns = self.ns.lock();
        self.check_absent(&pe, name)?;
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
        self.settle_new(caller, dir.as_fd(), name)?;
        let e = self.walk(&path)?;
        let fh = match (open, file) {
            (true, Some(f)) => Some(self.new_handle(Open::Upper(f))),
            _ => None,
        };
        Ok((e, fh))
    }

    /// The upper directory of entry `e` (a directory), created if missing.
    fn ensure_dir_entry(&self, e: &Entry) -> OverlayResult<Arc<std::os::fd::OwnedFd>> {
        if let Some(d) = &e.dir {
            return Ok(d.clone());
        }
        let comps = components(&e.path)?;
        Ok(Arc::new(self.upper.ensure_dir(&comps, self.dir_mode(), self.default_owner())?))
    }

    /// `mkdir`: a directory in the overlay; one replacing a deleted virtual directory is
    /// opaque (does not show the virtual one's entries).
    pub(super) fn make_dir(&self, caller: Caller, parent: INodeNo, name: &OsStr, mode: u32, umask: u32) -> OverlayResult<Entry> {
        let (pe, name) = self.parent_for_change(parent, name)?;
        let path = Self::child_path(&pe.path, name);
        let _ns = self.ns.lock();
        self.check_absent(&pe, name)?;
        // A virtual directory of this name was deleted: the new one must not show its entries.
        let hidden_lower = pe.lower_live && pe.lower.and_then(|l| self.tree.lookup(l, name)).is_some();
        let perm = Mode::from_raw_mode(mode & 0o7777 & !umask);
        let dir = self.ensure_dir_entry(&pe)?;
        if hidden_lower {
            let (tmp, fd) = self.upper.temp_dir(0o700)?;
            upper::add_opaque(&fd)?;
            rustix::fs::fchmod(&fd, perm)?;
            self.upper.commit(&tmp, dir.as_fd(), name)?;
        } else {
            rustix::fs::mkdirat(dir.as_fd(), name, perm)?;
            rustix::fs::chmodat(dir.as_fd(), name, perm, AtFlags::empty())?;
        }
        self.settle_new(caller, dir.as_fd(), name)?;
        self.walk(&path)
    }

    /// `symlink`: a symbolic link in the overlay.
    pub(super) fn make_symlink(&self, caller: Caller, parent: INodeNo, name: &OsStr, target: &Path) -> OverlayResult<Entry> {
        let (pe, name) = self.parent_for_change(parent, name)?;
        let path = Self::child_path(&pe.path, name);
        let _ns = self.ns.lock();
        self.check_absent(&pe, name)?;
        let dir = self.ensure_dir_entry(&pe)?;
        rustix::fs::symlinkat(target, dir.as_fd(), name)?;
        self.settle_new(caller, dir.as_fd(), name)?;
        self.walk(&path)
    }

    /// `unlink` (`want_dir` false) or `rmdir`: removes the upper entry and whites out a
    /// virtual one.
    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, want_dir: bool) -> OverlayResult<()> {
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
            upper::add_whiteout(dir.as_fd(), name)?;
        }
        if e.upper.is_some() {
            let dir = e.parent.clone().ok_or(Errno::IO)?;
            if is_dir {
                self.upper.trash(dir.as_fd(), name)?;
            } else {
                rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty())?;
            }
        }
        self.nodes.forget_path(&e.path);
        Ok(())
    }

    /// `rename` within the overlay; a virtual file is copied to its new name, a virtual
    /// directory cannot move (`EXDEV`: callers copy and delete).
    pub(super) fn rename_entry(&self, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags) -> OverlayResult<()> {
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
        if src_dir && src.lower_live {
            // Moving a directory that shows virtual entries would mean copying them: callers
            // (mv) fall back to copy and delete, as on overlayfs. An opaque one (made over a
            // deleted virtual directory) shows none and moves like any other.
            return Err(Errno::XDEV);
        }
        let check_dst = |dst: &Option<Entry>| -> OverlayResult<()> {
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
                    if d.lower_live {
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
        let lookup_dst = |dp: &Entry| -> OverlayResult<Option<Entry>> {
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
            let temp = super::copyup::copy_to_temp(&self.upper, f.as_ref(), None, self.file_mode(), self.default_owner(), &mut |_, _| {})
                .map_err(|err| {
                    log::error!("rename of {}: {err}", src.path);
                    err.to_rustix_errno()
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
            upper::remove_whiteout(ddir.as_fd(), dname)?;
            let sdir = self.ensure_parent(&src)?;
            upper::add_whiteout(sdir.as_fd(), sname)?;
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
            upper::add_whiteout(sdir.as_fd(), sname)?;
        }
        if src_dir {
            let hidden_lower = dp.lower_live && dp.lower.and_then(|l| self.tree.lookup(l, dname)).is_some();
            if hidden_lower {
                if let Some(d) = &src.dir {
                    upper::add_opaque(d.as_fd())?;
                }
            }
            if dst.as_ref().is_some_and(|d| d.upper.is_some()) {
                self.upper.trash(ddir.as_fd(), dname)?;
            }
        }
        rustix::fs::renameat(sdir.as_fd(), sname, ddir.as_fd(), dname)?;
        rustix::fs::fsync(ddir.as_fd())?;
        upper::remove_whiteout(ddir.as_fd(), dname)?;
        self.nodes.rename(&src.path, &dst_path);
        Ok(())
    }

    /// The merged listing of directory `e` (inode `ino`), with `.` and `..`.
    fn readdir_entries(&self, ino: INodeNo, e: &Entry) -> OverlayResult<Vec<Listed>> {
        let parent_ino = self.nodes.ino(e.parent_path(), None);
        let mut out = vec![(ino.0, FT::Directory, ".".to_string()), (parent_ino, FT::Directory, "..".to_string())];
        for l in merge::list(&self.tree, e)? {
            let path = Self::child_path(&e.path, &l.name);
            let child = self.nodes.ino(&path, l.lower.map(|n| n as u64 + 1));
            out.push((child, fuse_kind(l.kind), l.name));
        }
        Ok(out)
    }

    /// `lookup` of `name` in `parent`; `None` when `parent` is a dynamic directory (the
    /// read-only adapter answers).
    pub(super) fn lookup_entry(&self, parent: INodeNo, name: &OsStr) -> OverlayResult<Option<fuser::FileAttr>> {
        let pe = self.walk(&self.path(parent.0)?)?;
        if pe.is_dyn(&self.tree) {
            return Ok(None);
        }
        let name = check_name(name).map_err(|_| Errno::NOENT)?;
        let e = self.step(&pe, name)?;
        self.attr(&e).map(Some)
    }

    /// `opendir`: whether `ino` is a dynamic directory (then the read-only adapter opens it).
    pub(super) fn open_dir(&self, ino: INodeNo) -> OverlayResult<bool> {
        let e = self.walk(&self.path(ino.0)?)?;
        if !e.is_dir(&self.tree) {
            return Err(Errno::NOTDIR);
        }
        Ok(e.is_dyn(&self.tree))
    }

    /// `readdir`: the merged listing, or `None` for a dynamic directory (the read-only adapter
    /// lists it).
    pub(super) fn list_dir(&self, ino: INodeNo) -> OverlayResult<Option<Vec<Listed>>> {
        let e = self.walk(&self.path(ino.0)?)?;
        if e.is_dyn(&self.tree) {
            return Ok(None);
        }
        if !e.is_dir(&self.tree) {
            return Err(Errno::NOTDIR);
        }
        self.readdir_entries(ino, &e).map(Some)
    }

    /// `readlink` of a symbolic link in the overlay.
    pub(super) fn read_link(&self, ino: INodeNo) -> OverlayResult<Vec<u8>> {
        let e = self.walk(&self.path(ino.0)?)?;
        if e.upper_kind() != Some(FileType::Symlink) {
            return Err(Errno::INVAL);
        }
        let (dir, name) = self.at(&e);
        Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
    }

    /// `access`: writing is refused in dynamic directories only (permission bits are the
    /// kernel's, through `default_permissions`).
    pub(super) fn check_access(&self, ino: INodeNo, mask: fuser::AccessFlags) -> OverlayResult<()> {
        let e = self.walk(&self.path(ino.0)?)?;
        if e.is_dyn(&self.tree) && mask.bits() & libc::W_OK != 0 {
            return Err(Errno::ROFS);
        }
        Ok(())
    }
}
