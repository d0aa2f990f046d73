//! The merged view: one path of the mount resolved against the overlay directory (upper) and
//! the virtual tree (lower). An upper entry wins; a whiteout hides the lower entry of its name;
//! an upper directory merges with a lower directory unless it is opaque.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{fstat, FileType, Stat};
use rustix::io::Errno;

use super::resolve::{kind, open_subdir, stat_opt};
use super::upper::{is_opaque, is_whiteout, UpperDir};
use crate::views::{NodeId, VNode, VTree};

/// A resolved path of the merged tree.
pub struct Entry {
    /// Path relative to the root (`""` is the root).
    pub path: String,
    /// Upper directory of the parent, when it exists (`None` for the root).
    pub parent: Option<Arc<OwnedFd>>,
    /// The upper object (not followed if a symlink).
    pub upper: Option<Stat>,
    /// The upper directory itself, opened, when the upper object is a directory.
    pub dir: Option<Arc<OwnedFd>>,
    /// The visible lower node.
    pub lower: Option<NodeId>,
    /// A lower node exists at this path, visible or not (deleting the upper must whiteout it).
    pub lower_any: bool,
    /// A directory whose lower children are visible.
    pub lower_live: bool,
}

impl Entry {
    /// The last component (`""` for the root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// The parent's path.
    pub fn parent_path(&self) -> &str {
        self.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
    }

    /// True for directories (upper, virtual or dynamic).
    pub fn is_dir(&self, tree: &VTree) -> bool {
        match &self.upper {
            Some(st) => kind(st) == FileType::Directory,
            None => self.lower.is_some_and(|n| !matches!(tree.nodes[n], VNode::File(_))),
        }
    }

    /// True for a dynamic directory served by the read-only adapter (`rows/`).
    pub fn is_dyn(&self, tree: &VTree) -> bool {
        self.upper.is_none() && self.lower.is_some_and(|n| matches!(tree.nodes[n], VNode::Dyn(_)))
    }

    /// The upper object's type, if any.
    pub fn upper_kind(&self) -> Option<FileType> {
        self.upper.as_ref().map(kind)
    }
}

/// The root of the merged tree.
pub fn root(upper: &UpperDir) -> Result<Entry, Errno> {
    let dir = upper.dir(&[])?;
    let upper = fstat(&dir)?;
    let opaque = is_opaque(&dir)?;
    Ok(Entry {
        path: String::new(),
        parent: None,
        upper: Some(upper),
        dir: Some(Arc::new(dir)),
        lower: Some(VTree::ROOT),
        lower_any: true,
        lower_live: !opaque,
    })
}

/// The child `name` of directory `parent` (`ENOENT`, `ENOTDIR` as a local filesystem would).
pub fn step(tree: &VTree, parent: &Entry, name: &str) -> Result<Entry, Errno> {
    if !parent.is_dir(tree) {
        return Err(Errno::NOTDIR);
    }
    let pdir = parent.dir.clone();
    let up = match &pdir {
        Some(d) => stat_opt(d.as_ref(), name)?,
        None => None,
    };
    let whiteout = match (&pdir, &up) {
        (Some(d), None) => is_whiteout(d.as_ref(), name)?,
        _ => false,
    };
    let lower_any = if parent.lower_live { parent.lower.and_then(|l| tree.lookup(l, name)) } else { None };
    let is_lower_dir = |n: &NodeId| matches!(tree.nodes[*n], VNode::Dir(_));
    let (lower, dir) = match &up {
        Some(st) if kind(st) == FileType::Directory => {
            let fd = open_subdir(pdir.as_deref().ok_or(Errno::IO)?, name)?;
            (lower_any.filter(is_lower_dir), Some(Arc::new(fd)))
        }
        Some(_) => (None, None),
        None => (if whiteout { None } else { lower_any }, None),
    };
    if up.is_none() && lower.is_none() {
        return Err(Errno::NOENT);
    }
    let lower_live = match (&dir, lower) {
        (Some(fd), Some(_)) => !is_opaque(fd.as_ref())?,
        (None, Some(n)) => is_lower_dir(&n),
        _ => false,
    };
    let path = if parent.path.is_empty() { name.to_string() } else { format!("{}/{name}", parent.path) };
    Ok(Entry { path, parent: pdir, upper: up, dir, lower, lower_any: lower_any.is_some(), lower_live })
}

/// Resolves a whole path from the root.
pub fn walk(tree: &VTree, upper: &UpperDir, path: &str) -> Result<Entry, Errno> {
    let mut e = root(upper)?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if e.is_dyn(tree) {
            return Err(Errno::NOENT);
        }
        e = step(tree, &e, c)?;
    }
    Ok(e)
}

/// One entry of a merged listing.
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Directory or not, symlink…
    pub kind: FileType,
    /// The visible lower node, if any.
    pub lower: Option<NodeId>,
}

/// The merged listing of directory `e`: virtual entries in display order (minus whiteouts,
/// typed by their upper entry when one shadows them), then upper-only entries by name.
pub fn list(tree: &VTree, e: &Entry) -> Result<Vec<Listed>, Errno> {
    let up = match &e.dir {
        Some(d) => super::upper::list(d.as_ref())?,
        None => super::upper::Listed { entries: Vec::new(), whiteouts: Vec::new(), opaque: false },
    };
    let mut out = Vec::new();
    let mut used = std::collections::HashSet::new();
    if e.lower_live {
        if let Some(VNode::Dir(entries)) = e.lower.map(|n| &tree.nodes[n]) {
            for (name, child) in entries {
                if let Some((_, ft)) = up.entries.iter().find(|(n, _)| n == name) {
                    let lower = (*ft == FileType::Directory && matches!(tree.nodes[*child], VNode::Dir(_))).then_some(*child);
                    out.push(Listed { name: name.clone(), kind: *ft, lower });
                    used.insert(name.as_str());
                } else if !up.whiteouts.iter().any(|w| w == name) {
                    let kind = if matches!(tree.nodes[*child], VNode::File(_)) { FileType::RegularFile } else { FileType::Directory };
                    out.push(Listed { name: name.clone(), kind, lower: Some(*child) });
                }
            }
        }
    }
    for (name, ft) in &up.entries {
        if !used.contains(name.as_str()) {
            out.push(Listed { name: name.clone(), kind: *ft, lower: None });
        }
    }
    Ok(out)
}
