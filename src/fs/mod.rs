//! The FUSE adapter: serves a [`VTree`] read-only through `fuser`.
//!
//! Inodes come from [`inodes::Inodes`]: the static tree sits at inode 1 upward, and entries of
//! dynamic directories (`rows/…`) are grafted in on lookup. The store is immutable, so entries
//! and attributes get long TTLs and file pages are kept in the kernel cache across opens. Every
//! handler runs behind [`guard`]: a panic becomes `EIO` and a log line, never a dead mount.
//!
//! Requests that touch data (reads, `stat`s that build a text index) are handed to worker pools
//! ([`workers`]) and answered within a deadline ([`deadline`]): the FUSE threads never block, and
//! no reader waits forever, whatever a worker is stuck on.

pub mod deadline;
mod inodes;
pub mod mount;
pub mod reply;
pub mod source_watch;
mod workers;

use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use crate::cache::ChunkCache;
use crate::prefetch::{PrefetchConfig, Prefetcher};
use crate::views::{FileContent, NodeId, VNode, VTree};
use deadline::{Deadlines, ErrorReply};
use inodes::{Graft, Inodes};
use workers::Workers;

/// Entry and attribute TTL: the store does not change under a mount.
const TTL: Duration = Duration::from_secs(3600);
/// Entry TTL of what a collection's directories list: stores come and go.
const VOLATILE_TTL: Duration = Duration::from_secs(1);
/// Block size reported in `stat`, so readers use large reads.
const BLKSIZE: u32 = 1 << 20;
/// Workers answering requests that build a text index.
const SLOW_WORKERS: usize = 2;

/// How file pages are cached by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCache {
    /// Every file through the page cache (`FOPEN_KEEP_CACHE`).
    All,
    /// `.npy` files direct (`FOPEN_DIRECT_IO`: large requests, no page-cache copy; `mmap` still
    /// works through `FUSE_DIRECT_IO_ALLOW_MMAP`), text files through the page cache.
    TextOnly,
    /// Every file direct.
    None,
}

/// How the adapter serves requests.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// A request not answered within this time gets `EIO`.
    pub deadline: Duration,
    /// Workers for reads.
    pub read_workers: usize,
    /// Kernel page caching of file contents.
    pub page_cache: PageCache,
    /// Read-ahead tuning.
    pub prefetch: PrefetchConfig,
}

impl ServeConfig {
    /// Defaults for a cache of `budget` bytes.
    pub fn for_budget(budget: u64) -> Self {
        ServeConfig {
            deadline: deadline::DEFAULT_DEADLINE,
            read_workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16),
            page_cache: PageCache::TextOnly,
            prefetch: PrefetchConfig::for_budget(budget),
        }
    }
}

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

/// State shared by request threads and workers.
struct Shared {
    inodes: Inodes,
    cache: Arc<ChunkCache>,
    owner: Ownership,
    mtime: SystemTime,
    prefetch: Prefetcher,
    page_cache: PageCache,
}

/// A worker pool with its request deadlines.
struct Lane {
    workers: Arc<Workers>,
    deadlines: Deadlines,
}

impl Lane {
    fn new(name: &'static str, n: usize, limit: Duration, cache: &Arc<ChunkCache>) -> Self {
        let workers = Arc::new(Workers::new(name, n));
        let (w, stats) = (workers.clone(), cache.stats.clone());
        let deadlines = Deadlines::new(
            limit,
            Box::new(move || {
                stats.deadline_expired();
                w.replace_stuck();
            }),
        );
        Lane { workers, deadlines }
    }

    /// Runs `work` on a worker and answers `reply` with its result, or with `EIO` once the
    /// deadline passes, whichever comes first.
    fn answer<R: ErrorReply, T: Send + 'static>(
        &self,
        reply: R,
        what: impl FnOnce() -> String,
        work: impl FnOnce() -> Result<T, Errno> + Send + 'static,
        send: impl FnOnce(R, T) + Send + 'static,
    ) {
        let slot = self.deadlines.track(reply, what);
        self.workers.run(move || {
            let r = work();
            if let Some(reply) = slot.take() {
                match r {
                    Ok(v) => send(reply, v),
                    Err(e) => reply.fail(e),
                }
            }
        });
    }
}

/// The read-only filesystem.
pub struct AnnFs {
    shared: Arc<Shared>,
    io: Lane,
    slow: Lane,
    next_fh: AtomicU64,
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
            _ if *id == 0 && self.in_volatile_dir(g) => VOLATILE_TTL,
            _ => TTL,
        }
    }

    /// True when the tree `g` was looked up in a directory whose listing changes (a
    /// collection's): its entry may disappear, so it is cached only briefly.
    fn in_volatile_dir(&self, g: &Graft) -> bool {
        let parent = g.parents.first().copied().unwrap_or(0);
        matches!(self.node(INodeNo(parent)), Ok((pg, pid)) if matches!(&pg.tree.nodes[pid], VNode::Dyn(d) if d.volatile()))
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
    pub fn new(tree: Arc<VTree>, cache: Arc<ChunkCache>, owner: Ownership, mtime: SystemTime, cfg: ServeConfig) -> Self {
        let io = Lane::new("annfs-read", cfg.read_workers, cfg.deadline, &cache);
        let slow = Lane::new("annfs-slow", SLOW_WORKERS, cfg.deadline, &cache);
        let prefetch = Prefetcher::new(cfg.prefetch, cache.stats.clone());
        let shared = Arc::new(Shared { inodes: Inodes::new(tree), cache, owner, mtime, prefetch, page_cache: cfg.page_cache });
        AnnFs { shared, io, slow, next_fh: AtomicU64::new(1) }
    }

    fn file(&self, ino: INodeNo) -> Result<(Arc<dyn FileContent>, String), Errno> {
        self.shared.file(ino)
    }

    /// Drops per-handle state (read-ahead) of a handle another layer opened and released
    /// (the overlay reads lower files through this filesystem under its own handles).
    pub fn forget_handle(&self, fh: u64) {
        self.shared.prefetch.forget(fh);
    }

    /// Answers `reply` with `node`'s attributes: here when they are cheap, else on the slow
    /// pool within the deadline (a text index being built).
    fn answer_attr<R: ErrorReply>(&self, node: Node, reply: R, op: &'static str, send: impl FnOnce(R, Duration, &FileAttr) + Send + 'static) {
        let shared = self.shared.clone();
        let slow = Shared::is_slow(&node);
        let path = if slow { node.0.paths[node.1].clone() } else { String::new() };
        let work = move || guard(op, || shared.attr(&node).map(|a| (shared.ttl(&node), a)));
        if slow {
            self.slow.answer(reply, || format!("{op} {path}"), work, move |r, (ttl, a)| send(r, ttl, &a));
        } else {
            match work() {
                Ok((ttl, a)) => send(reply, ttl, &a),
                Err(e) => reply.fail(e),
            }
        }
    }
}

impl Shared {
    fn file(&self, ino: INodeNo) -> Result<(Arc<dyn FileContent>, String), Errno> {
        let (g, id) = self.node(ino)?;
        match &g.tree.nodes[id] {
            VNode::File(f) => Ok((f.clone(), g.paths[id].clone())),
            _ => Err(Errno::EISDIR),
        }
    }

    /// Serves a read of `size` bytes at `offset` of `file` through handle `fh`, into this
    /// worker's reply buffer (see [`reply_buffer`]).
    fn read(&self, file: &Arc<dyn FileContent>, path: &str, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if !file.volatile() {
            source_watch::check_fresh(path)?;
        }
        let mut data = reply_buffer::take();
        file.read_into(offset, size as usize, &mut data).map_err(|e| {
            log::error!("{path}: read at {offset}+{size}: {e}");
            self.cache.stats.error(path, &e);
            Errno::EIO
        })?;
        self.cache.stats.served(data.len() as u64);
        // Files in the page cache get the kernel's own read-ahead (it asks for the next pages
        // before the reader does); direct-I/O files get ours.
        if self.is_direct(&**file, path) && !file.volatile() {
            self.prefetch.observe(fh, file, offset, data.len() as u64);
        }
        Ok(data)
    }

    /// True when `file` at `path` is served with direct I/O (bypassing the kernel page cache).
    fn is_direct(&self, file: &dyn FileContent, path: &str) -> bool {
        file.volatile()
            || match self.page_cache {
                PageCache::All => false,
                // The benchmark's zero file is served as the binary views are (its ceiling).
                PageCache::TextOnly => path.ends_with(".npy") || path == ".annfs/zero",
                PageCache::None => true,
            }
    }

    /// Open flags for `file` at `path`: direct I/O or the kernel page cache.
    fn open_flags(&self, file: &dyn FileContent, path: &str) -> FopenFlags {
        let direct = self.is_direct(file, path);
        // Nothing is ever written, so `close` needs no flush round-trip (and still succeeds
        // after the daemon is gone).
        let cache = if direct { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::FOPEN_KEEP_CACHE };
        cache | FopenFlags::FOPEN_NOFLUSH
    }
}

/// One reusable reply buffer per worker thread: a read renders into it, the reply is sent from
/// it, and it goes back for the next read. Fresh multi-MiB buffers per request cost a page fault
/// per page (the kernel zeroes every new page); this keeps them warm. Buffers above
/// [`reply_buffer::KEEP`] are not kept, so idle workers hold little.
mod reply_buffer {
    use std::cell::RefCell;

    /// Largest buffer kept between requests (a FUSE read is at most 1 MiB by default).
    pub const KEEP: usize = 4 << 20;

    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// This thread's buffer, empty.
    pub fn take() -> Vec<u8> {
        let mut v = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        v.clear();
        v
    }

    /// Returns a buffer for reuse by this thread.
    pub fn give_back(v: Vec<u8>) {
        if v.capacity() <= KEEP {
            BUF.with(|b| *b.borrow_mut() = v);
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
        // Direct-I/O files stay mappable (`numpy.load(mmap_mode="r")`); kernels before 6.6
        // lack this and refuse `mmap` of those files. A large direct read (`numpy.load` reads a
        // whole file in one call) is sent as several requests at once (async DIO), which the
        // read workers serve in parallel.
        if self.shared.page_cache != PageCache::All {
            if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO) {
                log::debug!("kernel lacks {missing:?}");
            }
            if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
                log::warn!("kernel lacks {missing:?}: .npy files served with direct I/O cannot be mmapped");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let node = match guard("lookup", || self.shared.child(parent, name)) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        self.answer_attr(node, reply, "lookup", |r, ttl, a| r.entry(&ttl, a, Generation(0)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let node = match self.shared.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        self.answer_attr(node, reply, "getattr", |r, ttl, a| r.attr(&ttl, a));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = guard("open", || {
            let (f, path) = self.file(ino)?;
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                return Err(Errno::EROFS);
            }
            Ok(self.shared.open_flags(&*f, &path))
        });
        match r {
            Ok(fl) => {
                self.shared.cache.stats.opened();
                reply.opened(FileHandle(self.next_fh.fetch_add(1, Ordering::Relaxed)), fl)
            }
            Err(e) => reply.error(e),
        }
    }

    fn release(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _fl: OpenFlags, _lo: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        self.shared.prefetch.forget(fh.0);
        self.shared.cache.stats.closed();
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (file, path) = match guard("read", || self.file(ino)) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let shared = self.shared.clone();
        let what = format!("read of {path} at {offset}+{size}");
        // A read that may wait for a gene-column index build runs in the slow lane, so it does
        // not hold up the read workers.
        let lane = if file.read_may_block() { &self.slow } else { &self.io };
        lane.answer(
            reply,
            || what,
            move || guard("read", || shared.read(&file, &path, fh.0, offset, size)),
            |r, data| {
                r.data(&data);
                reply_buffer::give_back(data);
            },
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.node(ino) {
            Ok((g, id)) if matches!(&g.tree.nodes[id], VNode::Dyn(d) if d.volatile()) => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
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
                        let kind = if d.is_dir(&name) { FileType::Directory } else { FileType::RegularFile };
                        out.push((INodeNo(listing_ino(ino.0, &name)), kind, name));
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
