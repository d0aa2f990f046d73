//! The write overlay (`annfs mount --overlay DIR`): the mount becomes writable and every change
//! lands in DIR, never in the store (docs/OVERLAY.md).
//!
//! [`OverlayFs`] wraps the read-only [`AnnFs`]: paths are resolved against DIR first (see
//! [`merge`]), untouched virtual files are still read through the read-only adapter (with its
//! cache and read-ahead), and the first write to a virtual file copies it up ([`copyup`]).
//! Dynamic `rows/` directories stay read-only. Layout and crash safety: [`upper`].

mod attr;
pub mod copyup;
mod data;
mod fuse;
pub mod materialize;
pub mod merge;
mod namespace;
pub mod nodes;
#[cfg(test)]
mod reftests;
pub mod resolve;
pub mod upper;

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use rustix::io::Errno;

use crate::fs::error::ToErrno;
use crate::fs::{AnnFs, Ownership};
use crate::views::{NodeId, VNode, VTree};
use merge::Entry;
use nodes::Nodes;
use upper::{UpperDir, UpperDirError};

/// What an overlay operation returns: a value or the errno to answer.
type OverlayResult<T> = Result<T, Errno>;

/// An open file of an overlay mount.
enum Open {
    /// A virtual file not copied up (yet): reads go to the read-only adapter; the first write
    /// of a writable handle copies it up.
    Lower { node: NodeId, path: String, writable: bool },
    /// A file in the overlay directory.
    Upper(std::fs::File),
}

/// First handle number the overlay hands out: far above the inner filesystem's, so a handle
/// names one open file whichever layer made it.
const OVERLAY_FH_BASE: u64 = 1 << 62;

/// The writable filesystem: a read-only [`AnnFs`] with an overlay directory on top.
pub struct OverlayFs {
    inner: AnnFs,
    tree: Arc<VTree>,
    /// Inodes `1..=static_len` are the virtual tree's; `static_len < ino < nodes::FIRST` are
    /// subtrees grafted by the read-only adapter (`rows/`), served by it alone.
    static_len: u64,
    upper: UpperDir,
    nodes: Nodes,
    handles: DashMap<u64, Arc<RwLock<Open>>>,
    next_fh: AtomicU64,
    owner: Ownership,
    mtime: SystemTime,
    /// Serializes namespace changes (create, unlink, rename, copy-up commits); never held
    /// while copying data.
    ns: Mutex<()>,
    /// One lock per path being copied up, so concurrent writers copy once.
    copying: DashMap<String, Arc<Mutex<()>>>,
    is_root: bool,
}

impl crate::fs::Served for OverlayFs {
    fn inode_end(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        self.inner.inode_end()
    }
}

impl OverlayFs {
    /// Wraps `inner` (serving `tree`) with the overlay directory `dir` (created if missing).
    pub fn new(inner: AnnFs, tree: Arc<VTree>, dir: &Path, owner: Ownership, mtime: SystemTime) -> Result<Self, UpperDirError> {
        let upper = UpperDir::open(dir)?;
        log::info!("overlay directory {}", dir.display());
        Ok(OverlayFs {
            inner,
            static_len: tree.nodes.len() as u64,
            tree,
            upper,
            nodes: Nodes::new(),
            handles: DashMap::new(),
            next_fh: AtomicU64::new(OVERLAY_FH_BASE),
            owner,
            mtime,
            ns: Mutex::new(()),
            copying: DashMap::new(),
            // SAFETY: geteuid takes no arguments and cannot fail.
            is_root: unsafe { libc::geteuid() } == 0,
        })
    }

    /// True for inodes of subtrees grafted by the read-only adapter.
    fn is_inner(&self, ino: u64) -> bool {
        ino > self.static_len && ino < nodes::FIRST
    }

    fn path(&self, ino: u64) -> Result<String, Errno> {
        self.nodes.path(ino).ok_or(Errno::NOENT)
    }

    fn walk(&self, path: &str) -> Result<Entry, Errno> {
        merge::walk(&self.tree, &self.upper, path)
    }

    fn step(&self, parent: &Entry, name: &str) -> Result<Entry, Errno> {
        merge::step(&self.tree, parent, name)
    }

    /// The owner given to files and directories the overlay makes on its own (copy-ups,
    /// parent directories): the mount's owner, when the daemon may chown.
    fn default_owner(&self) -> Option<(u32, u32)> {
        self.is_root.then_some((self.owner.uid, self.owner.gid))
    }

    fn file_mode(&self) -> u32 {
        0o644 & !(self.owner.umask as u32)
    }

    fn dir_mode(&self) -> u32 {
        0o755 & !(self.owner.umask as u32)
    }

    /// The upper directory of `path`'s parent, created if missing.
    fn ensure_parent(&self, e: &Entry) -> Result<Arc<std::os::fd::OwnedFd>, Errno> {
        if let Some(p) = &e.parent {
            return Ok(p.clone());
        }
        let comps = resolve::components(e.parent_path())?;
        Ok(Arc::new(self.upper.ensure_dir(&comps, self.dir_mode(), self.default_owner())?))
    }

    /// The directory fd and name addressing `e` in the overlay (`(root, ".")` for the root).
    fn at<'a>(&'a self, e: &'a Entry) -> (BorrowedFd<'a>, &'a str) {
        match &e.parent {
            Some(p) => (p.as_fd(), e.name()),
            None => (self.upper.root(), "."),
        }
    }

    /// Makes sure `path` exists in the overlay directory: a virtual file is copied up (only its
    /// first `limit` bytes when given: a truncate), a virtual directory created.
    fn copy_up(&self, path: &str, limit: Option<u64>) -> Result<(), Errno> {
        let lock = self.copying.entry(path.to_string()).or_default().clone();
        let _g = lock.lock();
        let e = self.walk(path)?;
        if e.upper.is_some() {
            return Ok(());
        }
        let node = e.lower.ok_or(Errno::NOENT)?;
        let f = match &self.tree.nodes[node] {
            VNode::File(f) => f.clone(),
            VNode::Dir(_) => {
                let comps = resolve::components(path)?;
                let _ns = self.ns.lock();
                self.upper.ensure_dir(&comps, self.dir_mode(), self.default_owner())?;
                return Ok(());
            }
            VNode::Dyn(_) => return Err(Errno::ROFS),
        };
        let started = std::time::Instant::now();
        let temp = copyup::copy_to_temp(&self.upper, f.as_ref(), limit, self.file_mode(), self.default_owner(), &mut |_, _| {})
            .map_err(|err| {
                log::error!("copy-up of {path}: {err}");
                err.to_rustix_errno()
            })?;
        let _ns = self.ns.lock();
        let again = self.walk(path)?;
        if again.upper.is_some() {
            return Ok(());
        }
        if again.lower != Some(node) {
            return Err(Errno::NOENT);
        }
        let dir = self.ensure_parent(&again)?;
        temp.commit(dir.as_fd(), again.name())?;
        log::debug!("copied up {path} in {:?}", started.elapsed());
        Ok(())
    }
}
