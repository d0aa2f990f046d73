//! Views: the virtual file tree and the file formats that render AnnData elements as bytes.
//!
//! Every file is a [`FileContent`]: it knows its exact size and serves any byte range by
//! decoding only the chunks that range depends on. [`tree::build`] lays the files out as
//! docs/TREE.md describes; [`VTree`] is what `annfs ls`/`cat` and the FUSE adapter walk.

pub mod activity;
pub mod cols;
pub mod column;
pub mod format;
pub mod genes;
pub mod gzip;
pub mod matrix;
pub mod names;
pub mod mtx;
pub mod npy_file;
pub mod readme;
pub mod rows;
pub mod sidecar;
pub mod text_file;
pub mod transposed;
pub mod tree;
pub mod where_dir;

#[cfg(test)]
mod proptests;

use std::sync::Arc;

use crate::storage::StorageError;

/// Result of rendering: storage errors (corrupt chunk, I/O) become `EIO` at the FUSE boundary.
pub type ViewResult<T> = Result<T, StorageError>;

/// The bytes of one virtual file.
pub trait FileContent: Send + Sync {
    /// Exact size in bytes (may be computed on first call, then remembered).
    fn size(&self) -> ViewResult<u64>;

    /// Reads up to `len` bytes at `offset` (fewer only at the end of the file).
    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>>;

    /// Appends what [`FileContent::read`] returns to `out` (override to render straight into
    /// the caller's buffer: the FUSE adapter reuses one reply buffer per worker).
    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> ViewResult<()> {
        out.extend_from_slice(&self.read(offset, len)?);
        Ok(())
    }

    /// Loads what a read of `[offset, offset+len)` needs into the cache without returning the
    /// bytes (read-ahead); returns how many bytes of the file that covered (0 at the end).
    fn prefetch(&self, offset: u64, len: usize) -> ViewResult<usize> {
        self.read(offset, len).map(|b| b.len())
    }

    /// Drop-behind: a sequential reader has just read `[offset, offset+len)` and moves on; what
    /// only those bytes needed (decoded chunks) may leave the cache, so that a stream holds
    /// about its read-ahead window and reuses memory instead of faulting in fresh pages for
    /// every chunk (as the kernel drops behind a streamed file). Affects what is cached, never
    /// the bytes. Default: nothing.
    fn drop_behind(&self, _offset: u64, _len: usize) {}

    /// False for a file whose read-ahead has nothing to do (a gene column: each read costs
    /// about the entries it covers, and its `prefetch` loads nothing), so read-ahead jobs would
    /// only wake threads. Default: true.
    fn reads_ahead(&self) -> bool {
        true
    }

    /// The read size this file's readers should use (its `st_blksize`), when it is not the
    /// mount's (1 MiB). Default: `None`.
    fn io_size(&self) -> Option<u32> {
        None
    }

    /// True when the content changes over time (live counters): served without page caching.
    fn volatile(&self) -> bool {
        false
    }

    /// True when [`FileContent::size`] answers without rendering data (false for a text view
    /// whose index has not been built yet: the FUSE layer then answers off its request threads).
    fn size_is_cheap(&self) -> bool {
        true
    }

    /// True when a read may wait a while before any byte is rendered (an index being built): the
    /// FUSE layer then answers it off its request threads.
    fn read_may_block(&self) -> bool {
        false
    }

    /// What [`FileContent::read`] would return, as a few bytes rendered here followed by spans of
    /// the store file taken as they are stored, when the file can say so (an uncompressed
    /// array's `.npy` on a local store); at most `max_spans` spans. The FUSE layer then
    /// splices the spans into its reply instead of copying them. Default: `None`.
    fn read_spans(&self, _offset: u64, _len: usize, _max_spans: usize) -> ViewResult<Option<Spliced>> {
        Ok(None)
    }

    /// What [`FileContent::read`] would return, as a few bytes rendered here followed by slices
    /// of decoded chunks held in the cache, when the file can say so (the `.npy` of an array
    /// whose chunks hold whole rows); at most `max_parts` slices. The FUSE layer then sends the
    /// slices as they are instead of copying them into a reply buffer. Default: `None`.
    fn read_slices(&self, _offset: u64, _len: usize, _max_parts: usize) -> ViewResult<Option<Sliced>> {
        Ok(None)
    }
}

/// A read's answer as [`FileContent::read_slices`] gives it: `head`, then the bytes of `parts`.
pub struct Sliced {
    /// Bytes rendered in memory (a `.npy` header), first.
    pub head: Vec<u8>,
    /// Ranges of shared buffers (decoded chunks), in order.
    pub parts: Vec<crate::cache::Slice>,
}

impl Sliced {
    /// Length of the whole answer in bytes.
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.parts.iter().map(|(_, r)| r.len() as u64).sum::<u64>()
    }

    /// True for an empty answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read's answer as [`FileContent::read_spans`] gives it: `head`, then the bytes of `spans`.
pub struct Spliced {
    /// Bytes rendered in memory (a `.npy` header), first.
    pub head: Vec<u8>,
    /// Stored bytes, in order.
    pub spans: Vec<crate::storage::FileSpan>,
}

impl Spliced {
    /// Length of the whole answer in bytes.
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.spans.iter().map(|s| s.len).sum::<u64>()
    }

    /// True for an empty answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file whose bytes are known up front (README.txt, info.json).
///
/// Every view answers reads the same way: up to `len` bytes at `offset`, fewer only at the end.
///
/// ```
/// use annfs::views::{FileContent, StaticFile};
///
/// let f = StaticFile(b"hello, world\n".to_vec());
/// assert_eq!(f.size().unwrap(), 13);
/// assert_eq!(f.read(7, 100).unwrap(), b"world\n");
/// assert!(f.read(13, 10).unwrap().is_empty());
/// ```
pub struct StaticFile(pub Vec<u8>);

impl FileContent for StaticFile {
    fn size(&self) -> ViewResult<u64> {
        Ok(self.0.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        Ok(slice(&self.0, offset, len).to_vec())
    }
}

/// A file rendered afresh for every reader (e.g. `.annfs/stats.json`): a read at offset 0
/// renders a new snapshot, later offsets continue the latest one, so a reader sees one
/// consistent rendering even while the content changes.
pub struct LiveFile {
    render: Box<dyn Fn() -> Vec<u8> + Send + Sync>,
    last: parking_lot::Mutex<Arc<Vec<u8>>>,
}

impl LiveFile {
    /// A file whose content is `render()`.
    pub fn new(render: Box<dyn Fn() -> Vec<u8> + Send + Sync>) -> Self {
        LiveFile { render, last: parking_lot::Mutex::new(Arc::new(Vec::new())) }
    }

    fn snapshot(&self, fresh: bool) -> Arc<Vec<u8>> {
        let mut last = self.last.lock();
        if fresh || last.is_empty() {
            *last = Arc::new((self.render)());
        }
        last.clone()
    }
}

impl FileContent for LiveFile {
    fn size(&self) -> ViewResult<u64> {
        Ok(self.snapshot(true).len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        Ok(slice(&self.snapshot(offset == 0), offset, len).to_vec())
    }

    fn volatile(&self) -> bool {
        true
    }
}

/// A file of zeros, for measuring the FUSE ceiling (`annfs bench-mount --zero-file SIZE`).
pub struct ZeroFile(pub u64);

impl FileContent for ZeroFile {
    fn size(&self) -> ViewResult<u64> {
        Ok(self.0)
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(offset, len, &mut out)?;
        Ok(out)
    }

    fn read_into(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> ViewResult<()> {
        out.resize(out.len() + self.0.saturating_sub(offset).min(len as u64) as usize, 0);
        Ok(())
    }
}

/// Serves bytes `[offset, offset+len)` of a file made of `header` then a body of `body_size`
/// bytes; `body(b0, b1)` appends body bytes `[b0, b1)` (clipped to the file) to the output.
pub fn read_header_body(
    header: &[u8],
    body_size: u64,
    offset: u64,
    len: usize,
    body: impl FnOnce(u64, u64, &mut Vec<u8>) -> ViewResult<()>,
) -> ViewResult<Vec<u8>> {
    let mut out = Vec::new();
    read_header_body_into(header, body_size, offset, len, &mut out, body)?;
    Ok(out)
}

/// [`read_header_body`] appending to `out`.
pub fn read_header_body_into(
    header: &[u8],
    body_size: u64,
    offset: u64,
    len: usize,
    out: &mut Vec<u8>,
    body: impl FnOnce(u64, u64, &mut Vec<u8>) -> ViewResult<()>,
) -> ViewResult<()> {
    let hlen = header.len() as u64;
    let end = offset.saturating_add(len as u64).min(hlen.saturating_add(body_size));
    if offset >= end {
        return Ok(());
    }
    out.reserve((end - offset) as usize);
    if offset < hlen {
        out.extend_from_slice(slice(header, offset, (end.min(hlen) - offset) as usize));
    }
    if end > hlen {
        body(offset.max(hlen) - hlen, end - hlen, out)?;
    }
    Ok(())
}

/// `bytes[offset..offset+len]`, clipped to the slice.
pub fn slice(bytes: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = (offset.min(bytes.len() as u64)) as usize;
    let end = start.saturating_add(len).min(bytes.len());
    &bytes[start..end]
}

/// Index of a node in a [`VTree`].
pub type NodeId = usize;

/// A directory whose entries are made on lookup (`rows/`): any valid name resolves, and
/// `readdir` shows only [`DynDir::list`].
pub trait DynDir: Send + Sync {
    /// The names `readdir` shows (all files).
    fn list(&self) -> Vec<String>;
    /// Builds the entry `name` as a tree whose root node is the entry itself.
    fn lookup(&self, name: &str) -> Option<VTree>;
    /// True when the listed entry `name` is a directory (for `readdir`'s entry types).
    fn is_dir(&self, _name: &str) -> bool {
        false
    }
    /// True when [`DynDir::lookup_listed`] costs little (no data read, no row list computed):
    /// a listing then carries its entries' attributes (`readdirplus`).
    fn lookup_is_cheap(&self) -> bool {
        false
    }
    /// [`DynDir::lookup`] of a name this directory has just listed: it may answer from that
    /// listing instead of asking its source again.
    fn lookup_listed(&self, name: &str) -> Option<VTree> {
        self.lookup(name)
    }
    /// True when the listing changes over time (a collection's directories): the kernel must
    /// not cache it, and entries found in it get a short TTL.
    fn volatile(&self) -> bool {
        false
    }
    /// The use tracker of the closable subtree this directory is the root of (a collection's
    /// store), or `None` when it inherits its parent's.
    fn activity(&self) -> Option<Arc<activity::Activity>> {
        None
    }
}

/// A node of the virtual tree.
pub enum VNode {
    /// A directory with named children (in display order).
    Dir(Vec<(String, NodeId)>),
    /// A file.
    File(Arc<dyn FileContent>),
    /// A directory resolved on lookup.
    Dyn(Arc<dyn DynDir>),
}

/// The whole virtual tree; node 0 is the root directory.
pub struct VTree {
    /// All nodes, indexed by [`NodeId`].
    pub nodes: Vec<VNode>,
}

impl VTree {
    /// The root's id.
    pub const ROOT: NodeId = 0;

    /// A tree of one file.
    pub fn single(f: Arc<dyn FileContent>) -> VTree {
        VTree { nodes: vec![VNode::File(f)] }
    }

    /// Looks up `name` in the static directory `dir`.
    pub fn lookup(&self, dir: NodeId, name: &str) -> Option<NodeId> {
        match self.nodes.get(dir)? {
            VNode::Dir(entries) => entries.iter().find(|(n, _)| n == name).map(|(_, id)| *id),
            _ => None,
        }
    }

    /// Resolves a `/`-separated path relative to the root (`""` is the root) through static
    /// directories only.
    pub fn resolve(&self, path: &str) -> Option<NodeId> {
        path.split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .try_fold(Self::ROOT, |id, name| self.lookup(id, name))
    }

    /// Resolves a path through static and dynamic directories, returning the tree that holds
    /// the node (a dynamic entry's own tree) and the node's id in it.
    pub fn resolve_any(self: &Arc<Self>, path: &str) -> Option<(Arc<VTree>, NodeId)> {
        let mut cur = (self.clone(), Self::ROOT);
        for name in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            cur = match &cur.0.nodes[cur.1] {
                VNode::Dir(_) => {
                    let id = cur.0.lookup(cur.1, name)?;
                    (cur.0.clone(), id)
                }
                VNode::Dyn(d) => (Arc::new(d.lookup(name)?), Self::ROOT),
                VNode::File(_) => return None,
            };
        }
        Some(cur)
    }

    /// A copy of the subtree rooted at `id` (files and dynamic directories shared), as a tree
    /// whose root is that node.
    pub fn subtree(&self, id: NodeId) -> Option<VTree> {
        let mut out = VTree { nodes: Vec::new() };
        let mut todo = vec![(id, 0usize)];
        out.nodes.push(VNode::Dir(Vec::new()));
        while let Some((src, dst)) = todo.pop() {
            out.nodes[dst] = match self.nodes.get(src)? {
                VNode::File(f) => VNode::File(f.clone()),
                VNode::Dyn(d) => VNode::Dyn(d.clone()),
                VNode::Dir(entries) => {
                    let mut mine = Vec::with_capacity(entries.len());
                    for (name, child) in entries {
                        let at = out.nodes.len();
                        out.nodes.push(VNode::Dir(Vec::new()));
                        mine.push((name.clone(), at));
                        todo.push((*child, at));
                    }
                    VNode::Dir(mine)
                }
            };
        }
        Some(out)
    }

    /// Adds a file named `name` to directory `dir`.
    pub fn add_file(&mut self, dir: NodeId, name: &str, f: Arc<dyn FileContent>) {
        let id = self.nodes.len();
        self.nodes.push(VNode::File(f));
        if let Some(VNode::Dir(entries)) = self.nodes.get_mut(dir) {
            entries.push((name.to_string(), id));
        }
    }

    /// Every file below `dir`, as (relative path, id), depth first in display order.
    pub fn walk_files(&self, dir: NodeId) -> Vec<(String, NodeId)> {
        let mut out = Vec::new();
        self.walk_into(dir, "", &mut out);
        out
    }

    fn walk_into(&self, dir: NodeId, prefix: &str, out: &mut Vec<(String, NodeId)>) {
        if let Some(VNode::Dir(entries)) = self.nodes.get(dir) {
            for (name, id) in entries {
                let p = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                match &self.nodes[*id] {
                    VNode::Dir(_) => self.walk_into(*id, &p, out),
                    VNode::File(_) => out.push((p, *id)),
                    VNode::Dyn(_) => {}
                }
            }
        }
    }

    /// Every file path below `dir` including the listed entries of dynamic directories, and
    /// the files below listed dynamic subdirectories (what `find` on a mount shows).
    pub fn walk_paths(&self, dir: NodeId, prefix: &str, out: &mut Vec<String>) {
        let join = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        match self.nodes.get(dir) {
            Some(VNode::Dir(entries)) => {
                for (name, id) in entries {
                    let p = join(name);
                    match &self.nodes[*id] {
                        VNode::File(_) => out.push(p),
                        _ => self.walk_paths(*id, &p, out),
                    }
                }
            }
            Some(VNode::Dyn(d)) => {
                for name in d.list() {
                    match d.lookup(&name) {
                        Some(sub) if d.is_dir(&name) => sub.walk_paths(Self::ROOT, &join(&name), out),
                        _ => out.push(join(&name)),
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_copies_a_directory_and_shares_files() {
        let f: Arc<dyn FileContent> = Arc::new(StaticFile(b"x".to_vec()));
        let tree = VTree {
            nodes: vec![
                VNode::Dir(vec![("a".into(), 1), ("top".into(), 3)]),
                VNode::Dir(vec![("b".into(), 2), ("f".into(), 4)]),
                VNode::Dir(vec![]),
                VNode::File(f.clone()),
                VNode::File(f),
            ],
        };
        let sub = tree.subtree(1).unwrap();
        let mut paths = Vec::new();
        sub.walk_paths(VTree::ROOT, "", &mut paths);
        assert_eq!(paths, vec!["f"]);
        assert!(sub.resolve("b").is_some() && sub.resolve("top").is_none());
        assert!(matches!(sub.nodes[sub.resolve("f").unwrap()], VNode::File(_)));
        assert!(tree.subtree(9).is_none());
    }
}
