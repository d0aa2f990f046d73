//! The FUSE adapter: serves a [`VTree`] read-only through `fuser`.
//!
//! Inodes come from [`inodes::Inodes`]: the static tree sits at inode 1 upward, and entries of
//! dynamic directories (`rows/…`) are grafted in on lookup. The store is immutable, so entries
//! and attributes get long TTLs and file pages are kept in the kernel cache across opens. Every
//! handler runs behind [`guard`]: a panic becomes `EIO` and a log line, never a dead mount.

mod inodes;
pub mod mount;
mod prefetch;
mod slow;
pub mod source_watch;

use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use crate::cache::ChunkCache;
use crate::views::{FileContent, NodeId, VNode, VTree};
use inodes::{Graft, Inodes};
use prefetch::Prefetcher;
use slow::SlowPool;

/// Entry and attribute TTL: the store does not change under a mount.
const TTL: Duration = Duration::from_secs(3600);
/// Block size reported in `stat`, so readers use large reads.
const BLKSIZE: u32 = 1 << 20;
/// Workers answering requests that build a text index.
const SLOW_WORKERS: usize = 4;

/// Who owns the files and with which permission bits.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Bits removed from `file_mode` and `dir_mode`.
    pub umask: u16,
    /// Permission bits of files (write bits are dropped: read-only), default 0444.
    pub file_mode: u16,
    /// Permission bits of directories (write bits are dropped), default 0555.
    pub dir_mode: u16,
}

impl Ownership {
    /// The calling user, modes 0444/0555, umask 022.
    pub fn current_user() -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ownership { uid, gid, umask: 0o022, file_mode: 0o444, dir_mode: 0o555 }
    }
}

/// State shared by request threads and slow-request workers.
struct Shared {
    inodes: Inodes,
    cache: Arc<ChunkCache>,
    owner: Ownership,
    mtime: SystemTime,
}

/// The read-only filesystem.
pub struct AnnFs {
    shared: Arc<Shared>,
    prefetch: Prefetcher,
    slow: SlowPool,
}

/// A resolved inode: its tree and node id.
type Node = (Arc<Graft>, NodeId);

impl Shared {
    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.inodes.get(ino.0).ok_or(Errno::ENOENT)
    }

    /// Attribute TTL: long for the immutable store, zero for live files (README.txt, stats).
    fn ttl(&self, (g, id): &Node) -> Duration {
        match &g.tree.nodes[*id] {
            VNode::File(f) if f.volatile() => Duration::ZERO,
            _ => TTL,
        }
    }

    fn attr(&self, (g, id): &Node) -> Result<FileAttr, Errno> {
        let (kind, perm, size, nlink) = match &g.tree.nodes[*id] {
            VNode::Dir(entries) => {
                let subdirs = entries.iter().filter(|(_, c)| !matches!(g.tree.nodes[*c], VNode::File(_))).count();
                (FileType::Directory, self.owner.dir_mode, 0, 2 + subdirs as u32)
            }
            VNode::Dyn(_) => (FileType::Directory, self.owner.dir_mode, 0, 2),
            VNode::File(f) => {
                let size = f.size().map_err(|e| {
                    log::error!("{}: {e}", g.paths[*id]);
                    self.cache.stats.error(&g.paths[*id], &e);
                    Errno::EIO
                })?;
                (FileType::RegularFile, self.owner.file_mode, size, 1)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(g.base + *id as u64),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm: perm & !self.owner.umask & !0o222,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        })
    }

    /// Resolves `name` in directory `parent`, grafting dynamic entries.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<Node, Errno> {
        let (g, id) = self.node(parent)?;
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        match &g.tree.nodes[id] {
            VNode::Dir(_) => g.tree.lookup(id, name).map(|c| (g.clone(), c)).ok_or(Errno::ENOENT),
            VNode::Dyn(d) => {
                let ino = self
                    .inodes
                    .lookup_dynamic(parent.0, &g.paths[id], name, || d.lookup(name))
                    .ok_or(Errno::ENOENT)?;
                self.inodes.get(ino).ok_or(Errno::ENOENT)
            }
            VNode::File(_) => Err(Errno::ENOTDIR),
        }
    }

    /// True when answering for this node may take long (a text index not built yet).
    fn is_slow((g, id): &Node) -> bool {
        matches!(&g.tree.nodes[*id], VNode::File(f) if !f.size_is_cheap())
    }
}

/// A filesystem the mount loop can serve: it can say how far its inode numbers reach, so the
/// kernel's cached pages can be dropped when the store changes under the mount.
pub trait Served: Filesystem + Send + 'static {
    /// A function returning one past the highest virtual-tree inode handed out so far.
    fn inode_end(&self) -> Arc<dyn Fn() -> u64 + Send + Sync>;
}

impl Served for AnnFs {
    fn inode_end(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || shared.inodes.end())
    }
}

impl AnnFs {
    /// A filesystem serving `tree`, counting into `cache`'s stats.
    pub fn new(tree: Arc<VTree>, cache: Arc<ChunkCache>, owner: Ownership, mtime: SystemTime) -> Self {
        let shared = Arc::new(Shared { inodes: Inodes::new(tree), cache, owner, mtime });
        AnnFs { shared, prefetch: Prefetcher::new(), slow: SlowPool::new(SLOW_WORKERS) }
    }

    fn file(&self, ino: INodeNo) -> Result<(Arc<dyn FileContent>, String), Errno> {
        let (g, id) = self.shared.node(ino)?;
        match &g.tree.nodes[id] {
            VNode::File(f) => Ok((f.clone(), g.paths[id].clone())),
            _ => Err(Errno::EISDIR),
        }
    }

    /// Runs `f` here, or on the slow pool when `node` needs a text index built first.
    fn answer(&self, node: &Node, f: impl FnOnce() + Send + 'static) {
        if Shared::is_slow(node) {
            self.slow.run(f);
        } else {
            f();
        }
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

/// Reads `size` bytes at `offset` of `file` (content and virtual path), counting and logging.
fn read_now(shared: &Shared, (f, path): &(Arc<dyn FileContent>, String), offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
    if !f.volatile() {
        source_watch::check_fresh(path)?;
    }
    let data = f.read(offset, size as usize).map_err(|e| {
        log::error!("{path}: read at {offset}+{size}: {e}");
        shared.cache.stats.error(path, &e);
        Errno::EIO
    })?;
    shared.cache.stats.served(data.len() as u64);
    Ok(data)
}

/// A synthetic inode for `readdir` of dynamic directories (never looked up by the kernel).
fn listing_ino(dir: u64, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (dir, name).hash(&mut h);
    h.finish() | (1 << 63)
}

impl Filesystem for AnnFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Let the kernel read ahead up to 1 MiB (or its maximum).
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        // Let lookups in one directory run in parallel: a slow first `stat` (a text index being
        // built) must not hold up other users' lookups next to it.
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS) {
            log::debug!("kernel lacks {missing:?}");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let node = match guard("lookup", || self.shared.child(parent, name)) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let shared = self.shared.clone();
        self.answer(&node.clone(), move || match guard("lookup", || shared.attr(&node)) {
            Ok(attr) => reply.entry(&shared.ttl(&node), &attr, Generation(0)),
            Err(e) => reply.error(e),
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let node = match self.shared.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let shared = self.shared.clone();
        self.answer(&node.clone(), move || match guard("getattr", || shared.attr(&node)) {
            Ok(attr) => reply.attr(&shared.ttl(&node), &attr),
            Err(e) => reply.error(e),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = guard("open", || {
            let (f, _) = self.file(ino)?;
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                return Err(Errno::EROFS);
            }
            // Nothing is ever written, so `close` needs no flush round-trip (and still succeeds
            // after the daemon is gone).
            let cache = if f.volatile() { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::FOPEN_KEEP_CACHE };
            Ok(cache | FopenFlags::FOPEN_NOFLUSH)
        });
        match r {
            Ok(fl) => {
                self.shared.cache.stats.opened();
                reply.opened(FileHandle(0), fl)
            }
            Err(e) => reply.error(e),
        }
    }

    fn release(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _fl: OpenFlags, _lo: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        self.shared.cache.stats.closed();
        reply.ok();
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
        let file = match self.file(ino) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        // A read that waits for an index build is answered off the request threads.
        if file.0.read_may_block() {
            let shared = self.shared.clone();
            return self.slow.run(move || match guard("read", || read_now(&shared, &file, offset, size)) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            });
        }
        let r = guard("read", || {
            let data = read_now(&self.shared, &file, offset, size)?;
            if !file.0.volatile() {
                self.prefetch.observe(ino.0, &file.0, offset, data.len() as u64);
            }
            Ok(data)
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.node(ino) {
            Ok((g, id)) if !matches!(g.tree.nodes[id], VNode::File(_)) => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR)
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listing = guard("readdir", || {
            let (g, id) = self.shared.node(ino)?;
            let parent = INodeNo(g.parents[id]);
            let mut out = vec![(ino, FileType::Directory, ".".to_string()), (parent, FileType::Directory, "..".to_string())];
            match &g.tree.nodes[id] {
                VNode::Dir(entries) => {
                    for (name, child) in entries {
                        let kind = match g.tree.nodes[*child] {
                            VNode::File(_) => FileType::RegularFile,
                            _ => FileType::Directory,
                        };
                        out.push((INodeNo(g.base + *child as u64), kind, name.clone()));
                    }
                }
                VNode::Dyn(d) => {
                    for name in d.list() {
                        out.push((INodeNo(listing_ino(ino.0, &name)), FileType::RegularFile, name));
                    }
                }
                VNode::File(_) => return Err(Errno::ENOTDIR),
            }
            Ok(out)
        });
        match listing {
            Ok(entries) => {
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(*child, i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        let files = self.shared.inodes.get(1).map(|(g, _)| g.tree.nodes.len() as u64).unwrap_or(0);
        reply.statfs(0, 0, 0, files, 0, BLKSIZE, 255, BLKSIZE);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.shared.node(ino) {
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
