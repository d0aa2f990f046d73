//! Directory listings: `readdir`, and `readdirplus`, which gives the kernel each entry's
//! attributes along with its name, so that `ls -l` of a large directory (a collection of
//! thousands of stores) costs a request per few hundred entries instead of a lookup per entry.
//!
//! An entry gets its real attributes only when they cost little: a text view whose size needs a
//! pass over its rows, and entries of dynamic directories that would have to be built to be
//! known (`rows/`, `where/`, ...), are given placeholder attributes that expire at once (size 0,
//! zero TTL), so the kernel asks again — with a lookup, as without `readdirplus` — before any
//! use. A plain `ls` of a store therefore never starts a size pass.

use std::ffi::OsStr;
use std::time::Duration;

use fuser::{Errno, FileAttr, FileType, Generation, INodeNo, ReplyDirectoryPlus};

use super::reply::{expiring_attr, guard, Listed};
use super::state::{FsCore, Node};
use crate::views::VNode;

/// An inode for entries of dynamic directories that `readdir` lists without building them (the
/// kernel never looks these up: a `readdirplus` entry carrying one expires at once).
fn listing_ino(dir: u64, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (dir, name).hash(&mut h);
    h.finish() | (1 << 63)
}

/// One `readdirplus` entry: its attributes (inode included), their TTL, and whether resolving
/// it grafted a subtree (a reference the kernel now holds, or must be given back).
struct PlusEntry {
    attr: FileAttr,
    ttl: Duration,
    grafted: bool,
}

impl FsCore {
    /// The whole listing of directory `ino`: `.` and `..` first, then its entries.
    pub(super) fn listing(&self, ino: INodeNo) -> Result<Vec<Listed>, Errno> {
        listing_of(&self.node(ino)?, ino)
    }

    /// Answers a `readdirplus` of directory `dir` from `offset` on, as many entries as fit.
    pub(super) fn fill_dir_plus(&self, mut reply: ReplyDirectoryPlus, dir: INodeNo, offset: u64) {
        let listed = guard("readdirplus", || {
            let node = self.node(dir)?;
            let entries = listing_of(&node, dir)?;
            Ok::<_, Errno>((node, entries))
        });
        let (node, entries) = match listed {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (i, listed) in entries.iter().enumerate().skip(offset as usize) {
            let e = guard("readdirplus", || Ok::<_, Errno>(self.plus_entry(&node, dir, listed, i < 2))).unwrap_or_else(|_| self.placeholder(listed));
            if reply.add(e.attr.ino, i as u64 + 1, &listed.2, &e.ttl, &e.attr, Generation(0)) {
                if e.grafted {
                    // Not sent: the kernel will not forget what it never got.
                    self.inodes.forget(e.attr.ino.0, 1);
                }
                break;
            }
        }
        reply.ok();
    }

    /// The entry `listed` of directory `dir`, inode `dir_ino` (`dot`: `.` or `..`, which the
    /// kernel does not look up).
    fn plus_entry(&self, (g, id): &Node, dir_ino: INodeNo, listed: &Listed, dot: bool) -> PlusEntry {
        let (node, grafted) = match &g.tree.nodes[*id] {
            _ if dot => return self.placeholder(listed),
            VNode::Dir(_) => match self.inodes.get(listed.0) {
                Some(n) => (n, false),
                None => return self.placeholder(listed),
            },
            VNode::Dyn(d) if d.lookup_is_cheap() => match self.child_as(dir_ino, OsStr::new(&listed.2), true) {
                Ok(n) => (n, true),
                Err(_) => return self.placeholder(listed),
            },
            _ => return self.placeholder(listed),
        };
        let known = if FsCore::is_slow(&node) { None } else { self.attr(&node).ok() };
        match known {
            Some(attr) => PlusEntry { ttl: self.ttl(&node), attr, grafted },
            None => {
                let ino = node.0.base + node.1 as u64;
                PlusEntry { grafted, ..self.placeholder(&(ino, listed.1, listed.2.clone())) }
            }
        }
    }

    /// An entry the kernel looks up before using it.
    fn placeholder(&self, listed: &Listed) -> PlusEntry {
        PlusEntry { attr: expiring_attr(listed), ttl: Duration::ZERO, grafted: false }
    }
}

/// The listing of directory node `(g, id)`, inode `ino`: `.` and `..` first, then its entries.
fn listing_of((g, id): &Node, ino: INodeNo) -> Result<Vec<Listed>, Errno> {
    let id = *id;
    let mut out = vec![(ino.0, FileType::Directory, ".".to_string()), (g.parents[id], FileType::Directory, "..".to_string())];
    match &g.tree.nodes[id] {
        VNode::Dir(entries) => {
            for (name, child) in entries {
                let kind = match g.tree.nodes[*child] {
                    VNode::File(_) => FileType::RegularFile,
                    _ => FileType::Directory,
                };
                out.push((g.base + *child as u64, kind, name.clone()));
            }
        }
        VNode::Dyn(d) => {
            for name in d.list() {
                let kind = if d.is_dir(&name) { FileType::Directory } else { FileType::RegularFile };
                out.push((listing_ino(ino.0, &name), kind, name));
            }
        }
        VNode::File(_) => return Err(Errno::ENOTDIR),
    }
    Ok(out)
}
