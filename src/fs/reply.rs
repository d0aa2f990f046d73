//! FUSE answers shared by both adapters (the read-only [`AnnFs`](super::AnnFs) and the
//! overlay): the panic guard, TTLs and block size, attribute building, directory listings, and
//! replies for xattr and ioctl requests. One copy, so both mounts answer alike.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyWrite, ReplyXattr,
};

use super::deadline::ErrorReply;
use super::error::ToErrno;
use crate::storage::StorageError;
use crate::views::{NodeId, VNode, VTree};

/// Entry and attribute TTL of the read-only store: it does not change under a mount.
pub const STORE_TTL: Duration = Duration::from_secs(3600);
/// Entry and attribute TTL of what may change under the mount: a collection's directories
/// (stores come and go) and every entry of an overlay mount (its directory may change).
pub const VOLATILE_TTL: Duration = Duration::from_secs(1);
/// Block size reported in `stat`, so readers use large reads.
pub const BLKSIZE: u32 = 1 << 20;

/// Runs `f`, answering its error with its errno ([`ToErrno`]), and turning a panic into `EIO`
/// and a log line naming `what` and the panic message.
pub fn guard<T, E: ToErrno>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, Errno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_errno()),
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

/// A reply that can carry a successful result of type `T`.
pub trait Reply<T>: ErrorReply {
    /// Answers with `v`.
    fn send(self, v: T);
}

/// Answers `reply` with `r`: the value, or the error.
pub fn answer<T, R: Reply<T>>(reply: R, r: Result<T, Errno>) {
    match r {
        Ok(v) => reply.send(v),
        Err(e) => reply.fail(e),
    }
}

impl Reply<()> for ReplyEmpty {
    fn send(self, (): ()) {
        self.ok();
    }
}

impl Reply<Vec<u8>> for ReplyData {
    fn send(self, v: Vec<u8>) {
        self.data(&v);
    }
}

impl Reply<(Duration, FileAttr)> for ReplyAttr {
    fn send(self, (ttl, a): (Duration, FileAttr)) {
        self.attr(&ttl, &a);
    }
}

impl Reply<(Duration, FileAttr)> for ReplyEntry {
    fn send(self, (ttl, a): (Duration, FileAttr)) {
        self.entry(&ttl, &a, Generation(0));
    }
}

impl Reply<(u64, FopenFlags)> for ReplyOpen {
    fn send(self, (fh, flags): (u64, FopenFlags)) {
        self.opened(FileHandle(fh), flags);
    }
}

impl Reply<u32> for ReplyWrite {
    fn send(self, n: u32) {
        self.written(n);
    }
}

impl Reply<(Duration, FileAttr, u64)> for ReplyCreate {
    fn send(self, (ttl, a, fh): (Duration, FileAttr, u64)) {
        self.created(&ttl, &a, Generation(0), FileHandle(fh), FopenFlags::empty());
    }
}

/// Answers an xattr request that asked for `size` bytes with `r`: the value's length when
/// `size` is 0, `ERANGE` when it does not fit, the bytes otherwise.
pub fn xattr(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Errno>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

/// Answers an `ioctl`: files have no special controls and are no terminal (Python's `open()`
/// asks `TCGETS`).
pub fn no_ioctl(reply: ReplyIoctl) {
    reply.error(Errno::ENOTTY);
}

/// One entry of a directory listing: inode, kind, name.
pub type Listed = (u64, FileType, String);

/// Answers a `readdir` from `offset` on with `entries` (the whole listing, `.` and `..`
/// first), as many as fit.
pub fn fill_dir(mut reply: ReplyDirectory, entries: &[Listed], offset: u64) {
    for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
        if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
            break;
        }
    }
    reply.ok();
}

/// Attributes for a listed entry that the kernel must look up before any use: only the inode
/// and the kind count (sent with a zero TTL, they expire at once).
pub fn expiring_attr((ino, kind, _): &Listed) -> FileAttr {
    let dir = *kind == FileType::Directory;
    VirtualStat { kind: *kind, size: 0, nlink: if dir { 2 } else { 1 }, blksize: BLKSIZE }.attr(*ino, 0, (0, 0), SystemTime::UNIX_EPOCH)
}

/// Answers a `readdirplus` from `offset` on with `entries`, every one with [`expiring_attr`]: in
/// effect a plain `readdir`, each entry looked up before use.
pub fn fill_dir_plus_expiring(mut reply: ReplyDirectoryPlus, entries: &[Listed], offset: u64) {
    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
        if reply.add(INodeNo(e.0), i as u64 + 1, &e.2, &Duration::ZERO, &expiring_attr(e), Generation(0)) {
            break;
        }
    }
    reply.ok();
}

/// What a virtual node shows in `stat`, whoever serves it.
#[derive(Clone, Copy, Debug)]
pub struct VirtualStat {
    /// Directory or regular file.
    pub kind: FileType,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Link count: 2 plus subdirectories for a directory, 1 for a file.
    pub nlink: u32,
    /// `st_blksize`: [`BLKSIZE`] unless the file asks for another ([`crate::views::FileContent::io_size`]).
    pub blksize: u32,
}

impl VirtualStat {
    /// The kind, size and link count of node `id` of `tree` (sizing a file may fail).
    pub fn of(tree: &VTree, id: NodeId) -> Result<Self, StorageError> {
        Ok(match &tree.nodes[id] {
            VNode::Dir(entries) => {
                let subdirs = entries.iter().filter(|(_, c)| !matches!(tree.nodes[*c], VNode::File(_))).count();
                VirtualStat { kind: FileType::Directory, size: 0, nlink: 2 + subdirs as u32, blksize: BLKSIZE }
            }
            VNode::Dyn(_) => VirtualStat { kind: FileType::Directory, size: 0, nlink: 2, blksize: BLKSIZE },
            VNode::File(f) => VirtualStat { kind: FileType::RegularFile, size: f.size()?, nlink: 1, blksize: f.io_size().unwrap_or(BLKSIZE) },
        })
    }

    /// The attributes of this node as inode `ino` with permission bits `perm`, owned by
    /// `(uid, gid)`, every time `mtime`.
    pub fn attr(&self, ino: u64, perm: u16, (uid, gid): (u32, u32), mtime: SystemTime) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: self.kind,
            perm,
            nlink: self.nlink,
            uid,
            gid,
            rdev: 0,
            blksize: self.blksize,
            flags: 0,
        }
    }
}
