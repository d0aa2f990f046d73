//! The inode table: the static tree plus subtrees grafted in by lookups in dynamic
//! directories (`rows/…`). Each tree occupies a contiguous inode range; a grafted subtree is
//! dropped when the kernel forgets its root.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::views::activity::Activity;
use crate::views::{NodeId, VNode, VTree};

/// One tree and where it sits in the inode space.
pub(super) struct Graft {
    /// The tree.
    pub tree: Arc<VTree>,
    /// Inode of the tree's root; node `i` is inode `base + i`.
    pub base: u64,
    /// Parent inode of every node.
    pub parents: Vec<u64>,
    /// Virtual path of every node (for logs and error reports).
    pub paths: Vec<String>,
    /// `(dynamic directory inode, name)` this tree was looked up as; `None` for the root tree.
    key: Option<(u64, String)>,
    /// The use tracker of the closable subtree (a collection's store) this tree belongs to.
    pub activity: Option<Arc<Activity>>,
}

impl Graft {
    /// Records a use of the closable subtree this tree belongs to, if any.
    pub(super) fn touch(&self) {
        if let Some(a) = &self.activity {
            a.touch();
        }
    }
}

/// The use tracker of the closable subtree whose root directory is `tree`'s root, if any.
fn own_activity(tree: &VTree) -> Option<Arc<Activity>> {
    match tree.nodes.first() {
        Some(VNode::Dyn(d)) => d.activity(),
        _ => None,
    }
}

/// All trees of a mount.
pub(super) struct Inodes {
    grafts: RwLock<BTreeMap<u64, Arc<Graft>>>,
    next: AtomicU64,
    by_name: DashMap<(u64, String), u64>,
    /// Kernel references per grafted tree root. Locked while a reference is counted together
    /// with finding what it counts, and while one is given back together with dropping the
    /// tree: a lookup that found a grafted tree must not count it after a forget on another
    /// thread dropped it (an overlay mount reads requests on two threads; the kernel then
    /// opened an inode that no longer was: `ENOENT`).
    refs: parking_lot::Mutex<std::collections::HashMap<u64, u64>>,
}

impl Inodes {
    /// A table holding `root` at inode 1.
    pub(super) fn new(root: Arc<VTree>) -> Self {
        let t = Inodes {
            grafts: RwLock::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            by_name: DashMap::new(),
            refs: parking_lot::Mutex::default(),
        };
        t.insert(root, 1, String::new(), None, None);
        t
    }

    fn insert(&self, tree: Arc<VTree>, parent: u64, prefix: String, key: Option<(u64, String)>, activity: Option<Arc<Activity>>) -> u64 {
        let n = tree.nodes.len() as u64;
        let base = self.next.fetch_add(n.max(1), Ordering::Relaxed);
        let mut parents = vec![parent; tree.nodes.len()];
        let mut paths = vec![prefix; tree.nodes.len()];
        for (id, node) in tree.nodes.iter().enumerate() {
            if let VNode::Dir(entries) = node {
                for (name, child) in entries {
                    parents[*child] = base + id as u64;
                    paths[*child] = if paths[id].is_empty() { name.clone() } else { format!("{}/{name}", paths[id]) };
                }
            }
        }
        let graft = Arc::new(Graft { tree, base, parents, paths, key, activity });
        self.grafts.write().insert(base, graft);
        base
    }

    /// One past the highest inode handed out so far.
    pub(super) fn end(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// The tree holding inode `ino` and the node's id in it.
    pub(super) fn get(&self, ino: u64) -> Option<(Arc<Graft>, NodeId)> {
        let grafts = self.grafts.read();
        let (_, g) = grafts.range(..=ino).next_back()?;
        let id = (ino - g.base) as usize;
        (id < g.tree.nodes.len()).then(|| (g.clone(), id))
    }

    /// The inode of entry `name` of dynamic directory `dir` (inode `dir_ino`, path
    /// `dir_path`), building and grafting it on first use. Counts one kernel reference. The
    /// new tree belongs to the closable subtree its root directory tracks, else to `inherited`
    /// (its parent's).
    pub(super) fn lookup_dynamic(
        &self,
        dir_ino: u64,
        dir_path: &str,
        name: &str,
        inherited: Option<&Arc<Activity>>,
        build: impl FnOnce() -> Option<VTree>,
    ) -> Option<u64> {
        let key = (dir_ino, name.to_string());
        let found = {
            let mut refs = self.refs.lock();
            let known = self.by_name.get(&key).map(|b| *b).and_then(|base| self.grafts.read().get(&base).cloned());
            known.map(|g| {
                *refs.entry(g.base).or_insert(0) += 1;
                (g.base, own_activity(&g.tree))
            })
        };
        let (base, own) = match found {
            Some(f) => f,
            None => {
                let tree = Arc::new(build()?);
                let prefix = if dir_path.is_empty() { name.to_string() } else { format!("{dir_path}/{name}") };
                let own = own_activity(&tree);
                let activity = own.clone().or_else(|| inherited.cloned());
                let base = self.insert(tree, dir_ino, prefix, Some(key.clone()), activity);
                let mut refs = self.refs.lock();
                self.by_name.insert(key, base);
                *refs.entry(base).or_insert(0) += 1;
                (base, own)
            }
        };
        // The kernel knows the closable subtree by this entry (again, after it was told to forget it).
        if let Some(a) = own {
            a.entered_as(dir_ino, name);
        }
        Some(base)
    }

    /// The kernel dropped `n` references to `ino`: a grafted subtree goes when none are left.
    pub(super) fn forget(&self, ino: u64, n: u64) {
        let mut refs = self.refs.lock();
        let Some(r) = refs.get_mut(&ino) else { return };
        *r = r.saturating_sub(n);
        if *r > 0 {
            return;
        }
        refs.remove(&ino);
        if let Some(g) = self.grafts.write().remove(&ino) {
            if let Some(key) = &g.key {
                self.by_name.remove_if(key, |_, b| *b == ino);
            }
        }
    }

    /// Number of grafted subtrees.
    #[cfg(test)]
    pub(super) fn grafted(&self) -> usize {
        self.grafts.read().len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::StaticFile;

    #[test]
    fn a_lookup_racing_a_forget_never_counts_a_dropped_tree() {
        let root = VTree { nodes: vec![VNode::Dir(Vec::new())] };
        let t = Arc::new(Inodes::new(Arc::new(root)));
        let leaf = || Some(VTree { nodes: vec![VNode::File(Arc::new(StaticFile(vec![1])))] });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        let ino = t.lookup_dynamic(1, "d", "x", None, leaf).unwrap();
                        // This thread holds a reference: the inode must resolve until it forgets it.
                        assert!(t.get(ino).is_some_and(|(g, id)| g.base == ino && id == 0), "inode {ino} gone while referenced");
                        t.forget(ino, 1);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.grafted(), 0, "every reference given back");
    }

    #[test]
    fn graft_lookup_and_forget() {
        let root = VTree { nodes: vec![VNode::Dir(vec![("a".into(), 1)]), VNode::File(Arc::new(StaticFile(vec![1])))] };
        let t = Inodes::new(Arc::new(root));
        assert_eq!(t.get(1).unwrap().1, 0);
        assert_eq!(t.get(2).unwrap().0.paths[1], "a");
        assert!(t.get(3).is_none());
        let mk = || Some(VTree::single(Arc::new(StaticFile(vec![2]))));
        let ino = t.lookup_dynamic(1, "", "x", None, mk).unwrap();
        assert_eq!(t.lookup_dynamic(1, "", "x", None, || None), Some(ino), "same name, same inode");
        assert_eq!(t.get(ino).unwrap().0.paths[0], "x");
        t.forget(ino, 1);
        assert!(t.get(ino).is_some(), "one reference left");
        t.forget(ino, 1);
        assert!(t.get(ino).is_none());
        assert_eq!(t.grafted(), 0);
    }
}
