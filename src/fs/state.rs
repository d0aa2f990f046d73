//! The read-only adapter's state shared by request threads and workers ([`FsCore`]): inode
//! resolution, attributes and TTLs, and serving a read (freshness check, rendering into the
//! worker's reply buffer, read-ahead).

use std::ffi::OsStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{Errno, FileAttr, FileType, FopenFlags, INodeNo, ReplyData};

use super::error::ToErrno;
use super::inodes::{Graft, Inodes};
use super::lane::reply_buffer;
use super::reply::{guard, VirtualStat, STORE_TTL, VOLATILE_TTL};
use super::splice::{Splicer, Unsent, MAX_SPANS, MIN_SPLICE};
use super::{source_watch, Ownership, PageCache};
use crate::cache::ChunkCache;
use crate::prefetch::Prefetcher;
use crate::views::{FileContent, NodeId, Sliced, Spliced, VNode};

/// State shared by request threads and workers.
pub(super) struct FsCore {
    pub(super) inodes: Inodes,
    pub(super) cache: Arc<ChunkCache>,
    pub(super) owner: Ownership,
    pub(super) mtime: SystemTime,
    pub(super) prefetch: Prefetcher,
    pub(super) page_cache: PageCache,
    /// Files whose reads were refused since the store changed (each logged once).
    pub(super) refused: source_watch::RefusedReads,
    /// Splices replies of stored bytes, once the mount gave the connection's descriptor.
    pub(super) splicer: OnceLock<Splicer>,
    /// Set when the mount will hand that descriptor over (before the INIT handshake, which
    /// sizes requests for it).
    pub(super) splice_planned: std::sync::atomic::AtomicBool,
}

/// One read request: `size` bytes at `offset` of `file` (at `path`) through handle `fh`.
pub(super) struct ReadAt {
    pub(super) file: Arc<dyn FileContent>,
    pub(super) path: String,
    pub(super) fh: u64,
    pub(super) offset: u64,
    pub(super) size: u32,
}

/// What a read answers: rendered bytes (in the worker's reply buffer), or stored bytes to
/// splice ([`super::splice`]).
pub(super) enum Answer {
    /// The reply's bytes.
    Bytes(Vec<u8>),
    /// The reply as a header and spans of the store file.
    Spliced(Spliced),
    /// The reply as a header and slices of cached chunks; true when the read was in order
    /// (its chunks are dropped behind once the reply is sent).
    Sliced(Sliced, bool),
}

/// A resolved inode: its tree and node id.
pub(super) type Node = (Arc<Graft>, NodeId);

impl FsCore {
    /// The node of inode `ino` (a use of the closable subtree it belongs to).
    pub(super) fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        let node = self.inodes.get(ino.0).ok_or(Errno::ENOENT)?;
        node.0.touch();
        Ok(node)
    }

    /// Attribute TTL: long for the immutable store, zero for live files (README.txt, stats).
    pub(super) fn ttl(&self, (g, id): &Node) -> Duration {
        match &g.tree.nodes[*id] {
            VNode::File(f) if f.volatile() => Duration::ZERO,
            _ if *id == 0 && self.in_volatile_dir(g) => VOLATILE_TTL,
            _ => STORE_TTL,
        }
    }

    /// True when the tree `g` was looked up in a directory whose listing changes (a
    /// collection's): its entry may disappear, so it is cached only briefly.
    fn in_volatile_dir(&self, g: &Graft) -> bool {
        let parent = g.parents.first().copied().unwrap_or(0);
        matches!(self.node(INodeNo(parent)), Ok((pg, pid)) if matches!(&pg.tree.nodes[pid], VNode::Dyn(d) if d.volatile()))
    }

    /// The attributes of `node`: read-only modes of the mount's owner.
    pub(super) fn attr(&self, (g, id): &Node) -> Result<FileAttr, Errno> {
        let stat = VirtualStat::of(&g.tree, *id).map_err(|e| {
            log::error!("{}: {e}", g.paths[*id]);
            self.cache.stats.error(&g.paths[*id], &e);
            e.to_errno()
        })?;
        let perm = if stat.kind == FileType::Directory { self.owner.dir_mode } else { self.owner.file_mode };
        Ok(stat.attr(g.base + *id as u64, perm & !self.owner.umask & !0o222, (self.owner.uid, self.owner.gid), self.mtime))
    }

    /// Resolves `name` in directory `parent`, grafting dynamic entries.
    pub(super) fn child(&self, parent: INodeNo, name: &OsStr) -> Result<Node, Errno> {
        self.child_as(parent, name, false)
    }

    /// [`FsCore::child`]; `listed`: the name comes from the directory's listing a moment ago
    /// ([`crate::views::DynDir::lookup_listed`]).
    pub(super) fn child_as(&self, parent: INodeNo, name: &OsStr, listed: bool) -> Result<Node, Errno> {
        let (g, id) = self.node(parent)?;
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        match &g.tree.nodes[id] {
            VNode::Dir(_) => g.tree.lookup(id, name).map(|c| (g.clone(), c)).ok_or(Errno::ENOENT),
            VNode::Dyn(d) => {
                let ino = self
                    .inodes
                    .lookup_dynamic(parent.0, &g.paths[id], name, g.activity.as_ref(), || if listed { d.lookup_listed(name) } else { d.lookup(name) })
                    .ok_or(Errno::ENOENT)?;
                self.inodes.get(ino).ok_or(Errno::ENOENT)
            }
            VNode::File(_) => Err(Errno::ENOTDIR),
        }
    }

    /// True when answering for this node may take long (a text index not built yet).
    pub(super) fn is_slow((g, id): &Node) -> bool {
        matches!(&g.tree.nodes[*id], VNode::File(f) if !f.size_is_cheap())
    }
}

impl FsCore {
    pub(super) fn file(&self, ino: INodeNo) -> Result<(Arc<dyn FileContent>, String), Errno> {
        let (g, id) = self.node(ino)?;
        match &g.tree.nodes[id] {
            VNode::File(f) => Ok((f.clone(), g.paths[id].clone())),
            _ => Err(Errno::EISDIR),
        }
    }

    /// Serves a read of `size` bytes at `offset` of `file` through handle `fh`: as spans of the
    /// store file when the file offers them and replies can be spliced, else rendered into this
    /// worker's reply buffer (see [`reply_buffer`]).
    pub(super) fn read(&self, at: &ReadAt) -> Result<Answer, Errno> {
        let file = &at.file;
        if !file.volatile() {
            self.refused.check_fresh(&at.path)?;
        }
        // Files in the page cache get the kernel's own read-ahead (it asks for the next pages
        // before the reader does); direct-I/O files get ours, started before this read is
        // rendered so that the next window decodes on other cores while this one does.
        let mut in_order = false;
        if self.is_direct(&**file, &at.path) && !file.volatile() && file.reads_ahead() {
            let size = file.size_is_cheap().then(|| file.size().ok()).flatten();
            let n = size.map_or(at.size as u64, |s| s.saturating_sub(at.offset).min(at.size as u64));
            in_order = self.prefetch.observe(at.fh, file, at.offset, n);
        }
        if let Some(spliced) = self.spans(at) {
            return Ok(Answer::Spliced(spliced));
        }
        if let Some(sliced) = self.slices(at) {
            return Ok(Answer::Sliced(sliced, in_order));
        }
        let data = self.render(at)?;
        if in_order {
            file.drop_behind(at.offset, data.len());
        }
        Ok(Answer::Bytes(data))
    }

    /// The read as slices of cached chunks, when replies can be written straight from memory
    /// (the connection's descriptor is at hand) and the file offers them.
    fn slices(&self, at: &ReadAt) -> Option<Sliced> {
        self.offered(at, "slices", |f| f.read_slices(at.offset, at.size as usize, MAX_SPANS))
    }

    /// What `offer` gives for a read that may be sent past fuser (not a live file, at least
    /// [`MIN_SPLICE`] bytes, the connection's descriptor at hand); an error gives `None`.
    fn offered<T>(&self, at: &ReadAt, what: &str, offer: impl FnOnce(&dyn FileContent) -> crate::views::ViewResult<Option<T>>) -> Option<T> {
        if at.file.volatile() || (at.size as usize) < MIN_SPLICE || self.splicer.get().is_none() {
            return None;
        }
        offer(&*at.file).unwrap_or_else(|e| {
            // Rendering the read reports the error.
            log::debug!("{}: {what} at {}+{}: {e}", at.path, at.offset, at.size);
            None
        })
    }

    /// Answers `reply` to request `unique` with `sliced`, written from memory; when it cannot
    /// be, with the same bytes rendered as usual. A read in order then drops behind what it
    /// passed (after the reply, so that the chunks' buffers can be recycled).
    pub(super) fn send_sliced(&self, reply: ReplyData, unique: u64, sliced: Sliced, in_order: bool, at: &ReadAt) {
        let sent = match self.splicer.get() {
            Some(s) => s.reply_slices(unique, &sliced),
            None => Err(Unsent::Fallback),
        };
        let n = sliced.len();
        drop(sliced);
        if sent.is_ok() {
            self.cache.stats.served(n);
            self.cache.stats.sent_from_cache(n);
        }
        self.finish(reply, sent, at);
        if in_order {
            at.file.drop_behind(at.offset, n as usize);
        }
    }

    /// The read as spans of the store file, when replies can be spliced and the file offers them.
    fn spans(&self, at: &ReadAt) -> Option<Spliced> {
        self.offered(at, "spans", |f| f.read_spans(at.offset, at.size as usize, MAX_SPANS))
    }

    /// Answers `reply` to request `unique` with `spliced`; when it cannot be spliced, with the
    /// same bytes rendered as usual.
    pub(super) fn send_spliced(&self, reply: ReplyData, unique: u64, spliced: Spliced, at: &ReadAt) {
        let sent = match self.splicer.get() {
            Some(s) => s.reply(unique, &spliced),
            None => Err(Unsent::Fallback),
        };
        if sent.is_ok() {
            let n = spliced.len();
            self.cache.stats.served(n);
            self.cache.stats.spliced(n);
        }
        self.finish(reply, sent, at);
    }

    /// After a reply sent past fuser (spliced or written from memory): nothing more when it
    /// was sent or the request is gone, else the read rendered and answered as usual.
    fn finish(&self, reply: ReplyData, sent: Result<(), Unsent>, at: &ReadAt) {
        match sent {
            // The request is answered (or gone): fuser's reply must not answer it again, and it
            // has no way to be told so — dropped, it would send EIO. Forgetting it leaks one
            // reference count of fuser's channel, no memory.
            Ok(()) | Err(Unsent::Gone) => std::mem::forget(reply),
            Err(Unsent::Fallback) => match guard("read", || self.render(at)) {
                Ok(data) => {
                    reply.data(&data);
                    reply_buffer::give_back(data);
                }
                Err(e) => reply.error(e),
            },
        }
    }

    /// The read rendered into this worker's reply buffer (see [`reply_buffer`]).
    fn render(&self, at: &ReadAt) -> Result<Vec<u8>, Errno> {
        let ReadAt { file, path, offset, size, .. } = at;
        let mut data = reply_buffer::take();
        file.read_into(*offset, *size as usize, &mut data).map_err(|e| {
            log::error!("{path}: read at {offset}+{size}: {e}");
            self.cache.stats.error(path, &e);
            e.to_errno()
        })?;
        self.cache.stats.served(data.len() as u64);
        Ok(data)
    }

    /// True when `file` at `path` is served with direct I/O (bypassing the kernel page cache).
    fn is_direct(&self, file: &dyn FileContent, path: &str) -> bool {
        file.volatile()
            || match self.page_cache {
                PageCache::All => false,
                // The benchmark's zero file is served as the binary views are (its ceiling).
                PageCache::TextOnly => (path.ends_with(".npy") && !is_small(file)) || path == ".annfs/zero",
                PageCache::None => true,
            }
    }

    /// Open flags for `file` at `path`: direct I/O or the kernel page cache.
    pub(super) fn open_flags(&self, file: &dyn FileContent, path: &str) -> FopenFlags {
        let direct = self.is_direct(file, path);
        // Nothing is ever written, so `close` needs no flush round-trip (and still succeeds
        // after the daemon is gone).
        let cache = if direct { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::FOPEN_KEEP_CACHE };
        cache | FopenFlags::FOPEN_NOFLUSH
    }
}

/// `.npy` files up to this size go through the page cache even by default: the kernel fills
/// it with one request, and `numpy.load`'s several small reads (magic, header, data) are then
/// answered without a round trip each (a row of 2,000 float32 genes is 8 KiB).
const SMALL_NPY: u64 = 256 * 1024;

/// True for a file whose size is known without work and at most [`SMALL_NPY`].
fn is_small(file: &dyn FileContent) -> bool {
    file.size_is_cheap() && file.size().is_ok_and(|n| n <= SMALL_NPY)
}
