//! Inode numbers of an overlay mount: every inode names a path of the merged tree.
//!
//! A path that exists in the virtual tree keeps the virtual tree's inode number (so reads of
//! untouched files go straight to the read-only adapter); other paths get numbers from
//! [`FIRST`] upward. Renames move an inode (and everything below it) to its new path; a path
//! freed by unlink gets a fresh number when it is used again.

use std::collections::HashMap;

use parking_lot::RwLock;

/// First inode number handed to paths that are not in the virtual tree.
pub const FIRST: u64 = 1 << 56;

#[derive(Default)]
struct Maps {
    by_ino: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
    next: u64,
}

/// The inode ⇄ path table.
pub struct Nodes {
    m: RwLock<Maps>,
}

impl Default for Nodes {
    fn default() -> Self {
        Self::new()
    }
}

impl Nodes {
    /// A table holding the root (`""`) at inode 1.
    pub fn new() -> Self {
        let mut m = Maps { next: FIRST, ..Default::default() };
        m.by_ino.insert(1, String::new());
        m.by_path.insert(String::new(), 1);
        Nodes { m: RwLock::new(m) }
    }

    /// The path inode `ino` names.
    pub fn path(&self, ino: u64) -> Option<String> {
        self.m.read().by_ino.get(&ino).cloned()
    }

    /// The inode of `path`: its current one, else `natural` (the virtual tree's number) when
    /// that is free, else a new one.
    pub fn ino(&self, path: &str, natural: Option<u64>) -> u64 {
        if let Some(i) = self.m.read().by_path.get(path) {
            return *i;
        }
        let mut m = self.m.write();
        if let Some(i) = m.by_path.get(path) {
            return *i;
        }
        let ino = match natural {
            Some(n) if !m.by_ino.contains_key(&n) => n,
            _ => {
                m.next += 1;
                m.next
            }
        };
        m.by_ino.insert(ino, path.to_string());
        m.by_path.insert(path.to_string(), ino);
        ino
    }

    /// `path` no longer names its inode (unlinked or removed): the next use gets a new number.
    /// The old inode keeps resolving to `path` for open files.
    pub fn forget_path(&self, path: &str) {
        self.m.write().by_path.remove(path);
    }

    /// The entry at `from` (and all below it) is now at `to`.
    pub fn rename(&self, from: &str, to: &str) {
        let mut m = self.m.write();
        m.by_path.remove(to);
        let prefix = format!("{from}/");
        let moved: Vec<(String, u64)> = m
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&prefix))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        let to_prefix = format!("{to}/");
        m.by_path.retain(|p, _| !p.starts_with(&to_prefix));
        for (p, ino) in moved {
            m.by_path.remove(&p);
            let np = format!("{to}{}", &p[from.len()..]);
            m.by_ino.insert(ino, np.clone());
            m.by_path.insert(np, ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_fresh_and_renamed() {
        let n = Nodes::new();
        assert_eq!(n.path(1).as_deref(), Some(""));
        assert_eq!(n.ino("a", Some(5)), 5);
        assert_eq!(n.ino("a", Some(5)), 5);
        let d = n.ino("d", None);
        let f = n.ino("d/f", None);
        assert!(d >= FIRST && f > d);
        n.rename("a", "b");
        assert_eq!(n.path(5).as_deref(), Some("b"));
        assert_ne!(n.ino("a", Some(5)), 5, "natural number taken by the moved file");
        n.rename("d", "e");
        assert_eq!(n.path(f).as_deref(), Some("e/f"));
        assert_eq!(n.ino("e/f", None), f);
        n.forget_path("e/f");
        assert_ne!(n.ino("e/f", None), f);
        assert_eq!(n.path(f).as_deref(), Some("e/f"));
    }
}
