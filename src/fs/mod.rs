//! The FUSE adapter: serves a [`VTree`] read-only through `fuser`.
//!
//! Inode `n` is tree node `n - 1` (the root is inode 1). The store is immutable, so entries and
//! attributes get long TTLs and file pages are kept in the kernel cache across opens. Every
//! handler runs behind [`guard`]: a panic becomes `EIO` and a log line, never a dead mount.

pub mod mount;
mod prefetch;

use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use crate::cache::ChunkCache;
use crate::views::{FileContent, NodeId, VNode, VTree};
use prefetch::Prefetcher;

/// Entry and attribute TTL: the store does not change under a mount.
const TTL: Duration = Duration::from_secs(3600);
/// Block size reported in `stat`, so readers use large reads.
const BLKSIZE: u32 = 1 << 20;

/// Who owns the files and with which permission bits.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Bits removed from 0444 (files) and 0555 (directories).
    pub umask: u16,
}

/// The read-only filesystem.
pub struct AnnFs {
    tree: Arc<VTree>,
    parents: Vec<NodeId>,
    paths: Vec<String>,
    cache: Arc<ChunkCache>,
    owner: Ownership,
    mtime: SystemTime,
    prefetch: Prefetcher,
}

impl AnnFs {
    /// A filesystem serving `tree`, counting into `cache`'s stats.
    pub fn new(tree: Arc<VTree>, cache: Arc<ChunkCache>, owner: Ownership, mtime: SystemTime) -> Self {
        let mut parents = vec![VTree::ROOT; tree.nodes.len()];
        let mut paths = vec![String::new(); tree.nodes.len()];
        for (id, node) in tree.nodes.iter().enumerate() {
            if let VNode::Dir(entries) = node {
                for (name, child) in entries {
                    parents[*child] = id;
                    paths[*child] = if id == VTree::ROOT { name.clone() } else { format!("{}/{name}", paths[id]) };
                }
            }
        }
        AnnFs { tree, parents, paths, cache, owner, mtime, prefetch: Prefetcher::new() }
    }

    fn node(&self, ino: INodeNo) -> Result<(NodeId, &VNode), Errno> {
        let id = (ino.0 as usize).checked_sub(1).ok_or(Errno::ENOENT)?;
        self.tree.nodes.get(id).map(|n| (id, n)).ok_or(Errno::ENOENT)
    }

    fn file(&self, ino: INodeNo) -> Result<&Arc<dyn FileContent>, Errno> {
        match self.node(ino)?.1 {
            VNode::File(f) => Ok(f),
            VNode::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Attribute TTL: long for the immutable store, zero for live files (README.txt, stats).
    fn ttl(&self, ino: INodeNo) -> Duration {
        match self.node(ino) {
            Ok((_, VNode::File(f))) if f.volatile() => Duration::ZERO,
            _ => TTL,
        }
    }

    fn attr(&self, id: NodeId) -> Result<FileAttr, Errno> {
        let (kind, perm, size, nlink) = match &self.tree.nodes[id] {
            VNode::Dir(entries) => {
                let subdirs = entries.iter().filter(|(_, c)| matches!(self.tree.nodes[*c], VNode::Dir(_))).count();
                (FileType::Directory, 0o555, 0, 2 + subdirs as u32)
            }
            VNode::File(f) => {
                let size = f.size().map_err(|e| {
                    log::error!("{}: {e}", self.paths[id]);
                    self.cache.stats.error(&self.paths[id], &e);
                    Errno::EIO
                })?;
                (FileType::RegularFile, 0o444, size, 1)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(id as u64 + 1),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm: perm & !self.owner.umask,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        })
    }
}

/// Runs `f`, turning a panic into `EIO` (and a log line naming `what`).
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("internal error in {what}: {msg}");
            Err(Errno::EIO)
        }
    }
}

impl Filesystem for AnnFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Let the kernel read ahead up to 1 MiB (or its maximum).
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = guard("lookup", || {
            let (pid, _) = self.node(parent)?;
            let name = name.to_str().ok_or(Errno::ENOENT)?;
            let id = self.tree.lookup(pid, name).ok_or(Errno::ENOENT)?;
            self.attr(id)
        });
        match r {
            Ok(attr) => reply.entry(&self.ttl(attr.ino), &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match guard("getattr", || self.attr(self.node(ino)?.0)) {
            Ok(attr) => reply.attr(&self.ttl(ino), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = guard("open", || {
            let f = self.file(ino)?;
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                return Err(Errno::EROFS);
            }
            // Nothing is ever written, so `close` needs no flush round-trip (and still succeeds
            // after the daemon is gone).
            let cache = if f.volatile() { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::FOPEN_KEEP_CACHE };
            Ok(cache | FopenFlags::FOPEN_NOFLUSH)
        });
        match r {
            Ok(fl) => reply.opened(FileHandle(0), fl),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = guard("read", || {
            let f = self.file(ino)?;
            let data = f.read(offset, size as usize).map_err(|e| {
                let path = &self.paths[ino.0 as usize - 1];
                log::error!("{path}: read at {offset}+{size}: {e}");
                self.cache.stats.error(path, &e);
                Errno::EIO
            })?;
            self.cache.stats.served(data.len() as u64);
            if !f.volatile() {
                self.prefetch.observe(ino.0, f, offset, data.len() as u64);
            }
            Ok(data)
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match guard("opendir", || self.node(ino).map(|(_, n)| matches!(n, VNode::Dir(_)))) {
            Ok(true) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR),
            Ok(false) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = guard("readdir", || match self.node(ino)? {
            (id, VNode::Dir(entries)) => Ok((id, entries)),
            _ => Err(Errno::ENOTDIR),
        });
        let (id, entries) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let dots = [(".".to_string(), id), ("..".to_string(), self.parents[id])];
        for (i, (name, child)) in dots.iter().chain(entries.iter()).enumerate().skip(offset as usize) {
            let kind = match self.tree.nodes[*child] {
                VNode::Dir(_) => FileType::Directory,
                VNode::File(_) => FileType::RegularFile,
            };
            if reply.add(INodeNo(*child as u64 + 1), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let r = guard("readdirplus", || match self.node(ino)? {
            (id, VNode::Dir(entries)) => Ok((id, entries)),
            _ => Err(Errno::ENOTDIR),
        });
        let (id, entries) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let dots = [(".".to_string(), id), ("..".to_string(), self.parents[id])];
        for (i, (name, child)) in dots.iter().chain(entries.iter()).enumerate().skip(offset as usize) {
            let Ok(attr) = guard("readdirplus", || self.attr(*child)) else { continue };
            let ino = INodeNo(*child as u64 + 1);
            if reply.add(ino, i as u64 + 1, name, &self.ttl(ino), &attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        let files = self.tree.nodes.len() as u64;
        reply.statfs(0, 0, 0, files, 0, BLKSIZE, 255, BLKSIZE);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.node(ino) {
            Ok(_) if mask.bits() & libc::W_OK != 0 => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    // Every mutation: the mount is read-only.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _l: &std::path::Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: fuser::WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _f: i32, reply: fuser::ReplyCreate) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
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
        // Not a terminal, no special controls (Python's open() asks TCGETS).
        reply.error(Errno::ENOTTY);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }
}
