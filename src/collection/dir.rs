//! A directory of a collection: lists the stores and plain directories below it on demand. A
//! store is a [`StoreDir`], whose lookup costs nothing (`ls -l` of a directory of stores opens
//! none); the store is opened when its own directory is listed or looked into.

use std::sync::Arc;

use super::table::{root_meta, root_readme};
use super::{Collection, Kind};
use crate::views::activity::Activity;
use crate::views::{DynDir, StaticFile, VNode, VTree};

/// Directory `rel` of a collection (`""` is the root, which also holds README.txt and .annfs/).
pub struct CollectionDir {
    coll: Arc<Collection>,
    rel: String,
}

impl CollectionDir {
    /// Directory `rel` (relative to the source) of `coll`.
    pub fn new(coll: Arc<Collection>, rel: String) -> Self {
        CollectionDir { coll, rel }
    }

    fn is_root(&self) -> bool {
        self.rel.is_empty()
    }

    fn child(&self, name: &str) -> String {
        if self.is_root() {
            name.to_string()
        } else {
            format!("{}/{name}", self.rel)
        }
    }
}

impl DynDir for CollectionDir {
    fn list(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_root() {
            out.extend(["README.txt".to_string(), ".annfs".to_string()]);
        }
        out.extend(self.coll.list(&self.rel).iter().map(|(n, _)| n.clone()));
        out
    }

    fn is_dir(&self, name: &str) -> bool {
        !(self.is_root() && name == "README.txt")
    }

    fn volatile(&self) -> bool {
        true
    }

    /// A listed entry is a node that opens nothing yet.
    fn lookup_is_cheap(&self) -> bool {
        true
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        self.entry(name, || self.coll.kind_of(&self.rel, name))
    }

    /// Without a `stat` per entry (the source may be a network filesystem): the kind the
    /// listing gave.
    fn lookup_listed(&self, name: &str) -> Option<VTree> {
        let listing = self.coll.list(&self.rel);
        // The listing is sorted by name.
        let kind = listing.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| listing[i].1);
        self.entry(name, || kind)
    }
}

impl CollectionDir {
    /// The entry `name`: one of the root's own files, else a store or directory of the kind
    /// `kind` tells (`None`: not shown).
    fn entry(&self, name: &str, kind: impl FnOnce() -> Option<Kind>) -> Option<VTree> {
        if self.is_root() {
            match name {
                "README.txt" => return Some(VTree::single(Arc::new(StaticFile(root_readme(&self.coll))))),
                ".annfs" => return Some(root_meta(&self.coll)),
                _ => {}
            }
        }
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return None;
        }
        let rel = self.child(name);
        match kind()? {
            Kind::Dir => Some(VTree { nodes: vec![VNode::Dyn(Arc::new(CollectionDir::new(self.coll.clone(), rel)))] }),
            kind => {
                let activity = self.coll.activity(&rel);
                Some(VTree { nodes: vec![VNode::Dyn(Arc::new(StoreDir { coll: self.coll.clone(), rel, kind, activity }))] })
            }
        }
    }
}

/// A store of a collection: its tree, built when first listed or looked into. The tree lives
/// in the collection's slot for the store, so that a store reopened (its file changed, or it
/// was closed as idle) shows its new tree here.
pub(super) struct StoreDir {
    coll: Arc<Collection>,
    rel: String,
    kind: Kind,
    activity: Arc<Activity>,
}

impl StoreDir {
    fn tree(&self) -> Arc<VTree> {
        self.coll.store_tree(&self.rel, self.kind)
    }
}

impl DynDir for StoreDir {
    fn list(&self) -> Vec<String> {
        match self.tree().nodes.first() {
            Some(VNode::Dir(entries)) => entries.iter().map(|(n, _)| n.clone()).collect(),
            _ => Vec::new(),
        }
    }

    fn is_dir(&self, name: &str) -> bool {
        let t = self.tree();
        t.lookup(VTree::ROOT, name).is_some_and(|id| !matches!(t.nodes[id], VNode::File(_)))
    }

    fn lookup(&self, name: &str) -> Option<VTree> {
        let t = self.tree();
        t.subtree(t.lookup(VTree::ROOT, name)?)
    }

    /// An entry is a part of the store's tree, which listing it has built.
    fn lookup_is_cheap(&self) -> bool {
        true
    }

    fn activity(&self) -> Option<Arc<Activity>> {
        Some(self.activity.clone())
    }
}
