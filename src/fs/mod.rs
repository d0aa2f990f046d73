//! The FUSE adapter: serves a [`VTree`] read-only through `fuser`.
//!
//! Inodes come from [`inodes::Inodes`]: the static tree sits at inode 1 upward, and entries of
//! dynamic directories (`rows/…`) are grafted in on lookup. The store is immutable, so entries
//! and attributes get long TTLs and file pages are kept in the kernel cache across opens. Every
//! handler runs behind [`reply::guard`]: a panic becomes `EIO` and a log line, never a dead mount.
//!
//! Requests that touch data (reads, `stat`s that build a text index) are handed to worker pools
//! ([`workers`]) and answered within a deadline ([`deadline`]): the FUSE threads never block, and
//! no reader waits forever, whatever a worker is stuck on.

pub mod deadline;
pub mod error;
mod inodes;
mod lane;
mod listing;
pub mod mount;
pub mod reply;
pub mod source_watch;
mod splice;
mod state;
mod workers;

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use crate::cache::ChunkCache;
use crate::prefetch::{PrefetchConfig, Prefetcher};
use crate::views::{FileContent, VNode, VTree};
use state::{Answer, FsCore, Node, ReadAt};
use deadline::ErrorReply;
use inodes::Inodes;
use lane::{reply_buffer, Lane};
use reply::{answer, guard, BLKSIZE};

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
    /// The store's gate: once closed (the store changed), reads of stored data get `EIO`.
    pub gate: Arc<crate::storage::gate::Gate>,
}

impl ServeConfig {
    /// Defaults for a cache of `budget` bytes.
    pub fn for_budget(budget: u64) -> Self {
        ServeConfig {
            deadline: deadline::DEFAULT_DEADLINE,
            read_workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16),
            page_cache: PageCache::TextOnly,
            prefetch: PrefetchConfig::for_budget(budget),
            gate: Default::default(),
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

/// The read-only filesystem.
pub struct AnnFs {
    shared: Arc<FsCore>,
    io: Lane,
    slow: Lane,
    next_fh: AtomicU64,
    /// Open handles of files in closable subtrees (a collection's stores), which stay in use
    /// while they are open.
    held: dashmap::DashMap<u64, Arc<crate::views::activity::Activity>>,
}

/// A filesystem the mount loop can serve: it can say how far its inode numbers reach, so the
/// kernel's cached pages can be dropped when the store changes under the mount.
pub trait Served: Filesystem + Send + 'static {
    /// A function returning one past the highest virtual-tree inode handed out so far.
    fn inode_end(&self) -> Arc<dyn Fn() -> u64 + Send + Sync>;

    /// Where to give the connection's `/dev/fuse` descriptor once mounted, when this
    /// filesystem splices replies into it ([`splice`]). Default: it does not.
    fn splice_hook(&self) -> Option<Box<dyn FnOnce(std::os::fd::OwnedFd) + Send>> {
        None
    }
}

impl Served for AnnFs {
    fn inode_end(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || shared.inodes.end())
    }

    fn splice_hook(&self) -> Option<Box<dyn FnOnce(std::os::fd::OwnedFd) + Send>> {
        let shared = self.shared.clone();
        shared.splice_planned.store(true, Ordering::Relaxed);
        Some(Box::new(move |fd| {
            let _ = shared.splicer.set(splice::Splicer::new(fd));
        }))
    }
}

impl AnnFs {
    /// A filesystem serving `tree`, counting into `cache`'s stats.
    pub fn new(tree: Arc<VTree>, cache: Arc<ChunkCache>, owner: Ownership, mtime: SystemTime, cfg: ServeConfig) -> Self {
        let io = Lane::new("annfs-read", cfg.read_workers, cfg.deadline, &cache);
        let slow = Lane::new("annfs-slow", SLOW_WORKERS, cfg.deadline, &cache);
        let prefetch = Prefetcher::new(cfg.prefetch, cache.stats.clone());
        let shared = Arc::new(FsCore { inodes: Inodes::new(tree), cache, owner, mtime, prefetch, page_cache: cfg.page_cache, refused: source_watch::RefusedReads::new(cfg.gate.clone()), splicer: OnceLock::new(), splice_planned: Default::default() });
        AnnFs { shared, io, slow, next_fh: AtomicU64::new(1), held: Default::default() }
    }

    fn file(&self, ino: INodeNo) -> Result<(Arc<dyn FileContent>, String), Errno> {
        self.shared.file(ino)
    }

    /// Drops per-handle state (read-ahead) of a handle another layer opened and released
    /// (the overlay reads lower files through this filesystem under its own handles).
    pub fn forget_handle(&self, fh: u64) {
        self.shared.prefetch.forget(fh);
        if let Some((_, a)) = self.held.remove(&fh) {
            a.closed();
        }
    }

    /// Answers `reply` with `node`'s attributes: here when they are cheap, else on the slow
    /// pool within the deadline (a text index being built).
    fn answer_attr<R: ErrorReply>(&self, node: Node, reply: R, op: &'static str, send: impl FnOnce(R, Duration, &FileAttr) + Send + 'static) {
        let shared = self.shared.clone();
        let slow = FsCore::is_slow(&node);
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

impl Filesystem for AnnFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Requests of up to 1 MiB, less when spliced replies need it ([`splice`]): a reply must
        // fit a pipe whole, and pipes above /proc/sys/fs/pipe-max-size (1 MiB by default) need
        // CAP_SYS_RESOURCE. Decided on what a pipe may hold, since this handshake runs before
        // the mount hands the connection's descriptor over.
        let planned = self.shared.splice_planned.load(Ordering::Relaxed);
        let largest = Some(1 << 20)
            .filter(|_| planned)
            .map(splice::largest_reply)
            .filter(|&n| n >= 64 << 10)
            .unwrap_or(1 << 20);
        if largest < 1 << 20 {
            log::debug!("read requests of at most {largest} bytes, so that replies can be spliced");
            let _ = config.set_max_write(largest);
        }
        // Let the kernel read ahead as far (or its maximum).
        if let Err(max) = config.set_max_readahead(largest) {
            let _ = config.set_max_readahead(max);
        }
        // Listings carry their entries' attributes where they are cheap, when the kernel sees
        // them used (`ls -l`): no lookup per entry ([`listing`]).
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO) {
            log::debug!("kernel lacks {missing:?}");
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
        self.shared.cache.stats.looked_up();
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
            let (g, id) = self.shared.node(ino)?;
            let VNode::File(f) = &g.tree.nodes[id] else { return Err(Errno::EISDIR) };
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                return Err(Errno::EROFS);
            }
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            if let Some(a) = &g.activity {
                a.opened();
                self.held.insert(fh, a.clone());
            }
            Ok((fh, self.shared.open_flags(&**f, &g.paths[id])))
        });
        if r.is_ok() {
            self.shared.cache.stats.opened();
        }
        answer(reply, r);
    }

    fn release(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _fl: OpenFlags, _lo: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        self.forget_handle(fh.0);
        self.shared.cache.stats.closed();
        reply.ok();
    }

    fn read(
        &self,
        req: &Request,
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
        let (shared, shared2) = (self.shared.clone(), self.shared.clone());
        let unique = req.unique().0;
        let what = format!("read of {path} at {offset}+{size}");
        // A read that may wait for a gene-column index build runs in the slow lane, so it does
        // not hold up the read workers.
        let lane = if file.read_may_block() { &self.slow } else { &self.io };
        let at = Arc::new(ReadAt { file, path, fh: fh.0, offset, size });
        let at2 = at.clone();
        lane.answer(
            reply,
            || what,
            move || guard("read", || shared.read(&at)),
            move |r, answer| match answer {
                Answer::Bytes(data) => {
                    r.data(&data);
                    reply_buffer::give_back(data);
                }
                Answer::Spliced(s) => shared2.send_spliced(r, unique, s, &at2),
                Answer::Sliced(s, in_order) => shared2.send_sliced(r, unique, s, in_order, &at2),
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

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        match guard("readdir", || self.shared.listing(ino)) {
            Ok(entries) => reply::fill_dir(reply, &entries, offset),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, reply: ReplyDirectoryPlus) {
        self.shared.fill_dir_plus(reply, ino, offset);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        let files = self.shared.inodes.get(1).map(|(g, _)| g.tree.nodes.len() as u64).unwrap_or(0);
        reply.statfs(0, 0, 0, files, 0, BLKSIZE, 255, BLKSIZE);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let r = self.shared.node(ino).and_then(|_| if mask.bits() & libc::W_OK != 0 { Err(Errno::EROFS) } else { Ok(()) });
        answer(reply, r);
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

    /// No file has extended attributes. `ENOSYS` makes the kernel answer every later
    /// `getxattr` itself (`EOPNOTSUPP`): `ls -l` asks for ACL and SELinux attributes of every
    /// entry, three round trips per file otherwise (measured: `ls -l` of 10,000 entries
    /// 2.5 s, most of it in those requests).
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        reply::xattr(reply, size, Ok(Vec::new()));
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

    /// Nothing is ever written, so there is nothing to flush: `ENOSYS` tells the kernel so once,
    /// and it stops sending a `FLUSH` round trip on every `close` (its answer to the caller stays
    /// success). A FUSE round trip is ~45 µs on the test VM; a `numpy.load` of a gene column
    /// makes about ten.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }
}
