//! Reference-model test of the overlay: random sequences of namespace and data operations
//! (create, mkdir, write, truncate, unlink, rmdir, rename) run against an [`OverlayFs`] over a
//! small virtual tree, without FUSE, and against a plain in-memory model of what a POSIX
//! filesystem would hold. After every operation the result (success or errno) must agree, and
//! so must every directory listing and every file's bytes.
//!
//! The model knows the overlay's documented limits: a virtual directory (one coming from the
//! store) cannot be renamed, nor replaced by a rename (`EXDEV`, as on overlayfs: `mv` copies).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{INodeNo, OpenFlags, RenameFlags};
use proptest::prelude::*;
use rustix::io::Errno;

use super::namespace::Caller;
use super::{Open, OverlayFs};
use crate::cache::ChunkCache;
use crate::fs::error::ToErrno;
use crate::fs::{AnnFs, Ownership, ServeConfig};
use crate::views::{StaticFile, VNode, VTree};

/// What the model holds at a path.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// A directory; `virt` when it comes from the store (it cannot move).
    Dir { virt: bool },
    /// A regular file's bytes.
    File(Vec<u8>),
}

/// Paths (`a/b`, root `""`) to nodes.
type Model = BTreeMap<String, Node>;

/// Names operations pick from: few, so that they collide with each other and the store's.
const NAMES: [&str; 5] = ["a.txt", "X", "n1", "d1", "e"];

/// The store's tree: `README.txt`, `X/{a.txt, b.npy}`, `uns/e/` (an empty directory).
fn lower() -> (VTree, Model) {
    let file = |s: &str| VNode::File(Arc::new(StaticFile(s.as_bytes().to_vec())));
    let nodes = vec![
        VNode::Dir(vec![("README.txt".into(), 1), ("X".into(), 2), ("uns".into(), 5)]),
        file("readme\n"),
        VNode::Dir(vec![("a.txt".into(), 3), ("b.npy".into(), 4)]),
        file("alpha\n"),
        file("\u{93}NUMPY bytes"),
        VNode::Dir(vec![("e".into(), 6)]),
        VNode::Dir(vec![]),
    ];
    let mut m = Model::new();
    m.insert(String::new(), Node::Dir { virt: true });
    m.insert("README.txt".into(), Node::File(b"readme\n".to_vec()));
    m.insert("X".into(), Node::Dir { virt: true });
    m.insert("X/a.txt".into(), Node::File(b"alpha\n".to_vec()));
    m.insert("X/b.npy".into(), Node::File("\u{93}NUMPY bytes".as_bytes().to_vec()));
    m.insert("uns".into(), Node::Dir { virt: true });
    m.insert("uns/e".into(), Node::Dir { virt: true });
    (VTree { nodes }, m)
}

/// One operation; indices pick among the model's current entries (modulo their count).
#[derive(Clone, Debug)]
enum Op {
    Create { dir: usize, name: usize },
    Mkdir { dir: usize, name: usize },
    Write { file: usize, off: u16, len: u8, byte: u8 },
    Truncate { file: usize, len: u16 },
    Unlink { entry: usize },
    Rmdir { entry: usize },
    Rename { entry: usize, dir: usize, name: usize, noreplace: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0usize..64;
    prop_oneof![
        (i(), 0..NAMES.len()).prop_map(|(dir, name)| Op::Create { dir, name }),
        (i(), 0..NAMES.len()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        (i(), 0u16..64, 1u8..24, any::<u8>()).prop_map(|(file, off, len, byte)| Op::Write { file, off, len, byte }),
        (i(), 0u16..40).prop_map(|(file, len)| Op::Truncate { file, len }),
        i().prop_map(|entry| Op::Unlink { entry }),
        i().prop_map(|entry| Op::Rmdir { entry }),
        (i(), i(), 0..NAMES.len(), any::<bool>()).prop_map(|(entry, dir, name, noreplace)| Op::Rename { entry, dir, name, noreplace }),
    ]
}

fn parent_of(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

fn children<'m>(m: &'m Model, dir: &'m str) -> impl Iterator<Item = &'m String> + 'm {
    m.keys().filter(move |p| !p.is_empty() && parent_of(p).0 == dir)
}

fn pick(m: &Model, i: usize, keep: impl Fn(&Node) -> bool) -> Option<&String> {
    let all: Vec<&String> = m.iter().filter(|(_, n)| keep(n)).map(|(p, _)| p).collect();
    (!all.is_empty()).then(|| all[i % all.len()])
}

/// The result the model expects from renaming `src` to `dst` (POSIX, plus the overlay's
/// `EXDEV` for virtual directories), applying it on success.
fn model_rename(m: &mut Model, src: &str, dst: &str, noreplace: bool) -> Result<(), Errno> {
    let s = m.get(src).cloned().ok_or(Errno::NOENT)?;
    if src == dst {
        return Ok(());
    }
    if dst.starts_with(&format!("{src}/")) {
        return Err(Errno::INVAL);
    }
    let src_dir = matches!(s, Node::Dir { .. });
    if matches!(s, Node::Dir { virt: true }) {
        return Err(Errno::XDEV);
    }
    if let Some(d) = m.get(dst) {
        if noreplace {
            return Err(Errno::EXIST);
        }
        match d {
            Node::Dir { virt } => {
                if !src_dir {
                    return Err(Errno::ISDIR);
                }
                if *virt {
                    return Err(Errno::XDEV);
                }
                if children(m, dst).next().is_some() {
                    return Err(Errno::NOTEMPTY);
                }
            }
            Node::File(_) if src_dir => return Err(Errno::NOTDIR),
            Node::File(_) => {}
        }
    }
    let moved: Vec<(String, Node)> = m
        .iter()
        .filter(|(p, _)| *p == src || p.starts_with(&format!("{src}/")))
        .map(|(p, n)| (format!("{dst}{}", &p[src.len()..]), n.clone()))
        .collect();
    m.retain(|p, _| p != src && !p.starts_with(&format!("{src}/")) && p != dst);
    m.extend(moved);
    Ok(())
}

/// A harness: the overlay under test, its directory, and the store's tree.
struct Harness {
    fs: OverlayFs,
    tree: Arc<VTree>,
    dir: std::path::PathBuf,
    caller: Caller,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    fn new(tree: VTree) -> Harness {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("annfs-reftest-{}-{n}", std::process::id()));
        let tree = Arc::new(tree);
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let owner = Ownership::current_user();
        let now = SystemTime::now();
        let inner = AnnFs::new(tree.clone(), cache, owner, now, ServeConfig::for_budget(1 << 20));
        let fs = OverlayFs::new(inner, tree.clone(), &dir, owner, now).expect("overlay directory");
        Harness { fs, tree, dir, caller: Caller { uid: owner.uid, gid: owner.gid } }
    }

    /// The inode of `path`, by lookups from the root.
    fn ino(&self, path: &str) -> Result<INodeNo, Errno> {
        let mut ino = INodeNo(1);
        for c in path.split('/').filter(|c| !c.is_empty()) {
            let attr = self.fs.lookup_entry(ino, OsStr::new(c))?.ok_or(Errno::NOENT)?;
            ino = attr.ino;
        }
        Ok(ino)
    }

    fn parent(&self, path: &str) -> Result<(INodeNo, String), Errno> {
        let (dir, name) = parent_of(path);
        Ok((self.ino(dir)?, name.to_string()))
    }

    /// The bytes of the file at `path`, read through a read-only handle.
    fn read(&self, path: &str) -> Result<Vec<u8>, Errno> {
        let (fh, _) = self.fs.open_file(self.ino(path)?, OpenFlags(libc::O_RDONLY))?;
        let h = self.fs.handle(fh).ok_or(Errno::BADF)?;
        let bytes = match &*h.read() {
            Open::Upper(f) => OverlayFs::read_upper(f, 0, 1 << 16),
            Open::Lower { node, .. } => match &self.tree.nodes[*node] {
                VNode::File(f) => f.read(0, 1 << 16).map_err(|e| e.to_rustix_errno()),
                _ => Err(Errno::ISDIR),
            },
        };
        self.fs.handles.remove(&fh);
        bytes
    }

    /// Writes `data` at `off` of `path` through a writable handle.
    fn write(&self, path: &str, off: u64, data: &[u8]) -> Result<(), Errno> {
        let (fh, _) = self.fs.open_file(self.ino(path)?, OpenFlags(libc::O_RDWR))?;
        let r = self.fs.write_data(fh, off, data).map(drop);
        self.fs.handles.remove(&fh);
        r
    }

    /// Runs `op` on the overlay and on the model; both must agree.
    fn step(&self, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
        let is_dir = |n: &Node| matches!(n, Node::Dir { .. });
        let is_file = |n: &Node| matches!(n, Node::File(_));
        let any = |_: &Node| true;
        let (got, want): (Result<(), Errno>, Result<(), Errno>) = match op {
            Op::Create { dir, name } => {
                let Some(d) = pick(m, *dir, is_dir).cloned() else { return Ok(()) };
                let path = join(&d, NAMES[*name]);
                let got = self
                    .ino(&d)
                    .and_then(|p| self.fs.make_file(self.caller, p, OsStr::new(NAMES[*name]), libc::S_IFREG | 0o644, 0, true))
                    .map(|(_, fh)| {
                        if let Some(fh) = fh {
                            self.fs.handles.remove(&fh);
                        }
                    });
                let want = if m.contains_key(&path) { Err(Errno::EXIST) } else { Ok(()) };
                if want.is_ok() {
                    m.insert(path, Node::File(Vec::new()));
                }
                (got, want)
            }
            Op::Mkdir { dir, name } => {
                let Some(d) = pick(m, *dir, is_dir).cloned() else { return Ok(()) };
                let path = join(&d, NAMES[*name]);
                let got = self.ino(&d).and_then(|p| self.fs.make_dir(self.caller, p, OsStr::new(NAMES[*name]), 0o755, 0)).map(drop);
                let want = if m.contains_key(&path) { Err(Errno::EXIST) } else { Ok(()) };
                if want.is_ok() {
                    m.insert(path, Node::Dir { virt: false });
                }
                (got, want)
            }
            Op::Write { file, off, len, byte } => {
                let Some(path) = pick(m, *file, is_file).cloned() else { return Ok(()) };
                let data = vec![*byte; *len as usize];
                let got = self.write(&path, *off as u64, &data);
                if let Some(Node::File(b)) = m.get_mut(&path) {
                    let end = *off as usize + data.len();
                    if b.len() < end {
                        b.resize(end, 0);
                    }
                    b[*off as usize..end].copy_from_slice(&data);
                }
                (got, Ok(()))
            }
            Op::Truncate { file, len } => {
                let Some(path) = pick(m, *file, is_file).cloned() else { return Ok(()) };
                let got = self.ino(&path).and_then(|ino| self.fs.set_attr(ino, None, (None, None), Some(*len as u64), (None, None), None)).map(drop);
                if let Some(Node::File(b)) = m.get_mut(&path) {
                    b.resize(*len as usize, 0);
                }
                (got, Ok(()))
            }
            Op::Unlink { entry } | Op::Rmdir { entry } => {
                let Some(path) = pick(m, *entry, any).filter(|p| !p.is_empty()).cloned() else { return Ok(()) };
                let want_dir = matches!(op, Op::Rmdir { .. });
                let got = self.parent(&path).and_then(|(p, name)| self.fs.remove(p, OsStr::new(&name), want_dir));
                let want = match (&m[&path], want_dir) {
                    (Node::File(_), true) => Err(Errno::NOTDIR),
                    (Node::Dir { .. }, false) => Err(Errno::ISDIR),
                    (Node::Dir { .. }, true) if children(m, &path).next().is_some() => Err(Errno::NOTEMPTY),
                    _ => Ok(()),
                };
                if want.is_ok() {
                    m.remove(&path);
                }
                (got, want)
            }
            Op::Rename { entry, dir, name, noreplace } => {
                let Some(src) = pick(m, *entry, any).filter(|p| !p.is_empty()).cloned() else { return Ok(()) };
                let Some(d) = pick(m, *dir, is_dir).cloned() else { return Ok(()) };
                let dst = join(&d, NAMES[*name]);
                let flags = if *noreplace { RenameFlags::RENAME_NOREPLACE } else { RenameFlags::empty() };
                let got = self.parent(&src).and_then(|(sp, sname)| {
                    let dp = self.ino(&d)?;
                    self.fs.rename_entry(sp, OsStr::new(&sname), dp, OsStr::new(NAMES[*name]), flags)
                });
                let want = model_rename(m, &src, &dst, *noreplace);
                (got, want)
            }
        };
        prop_assert_eq!(got, want, "{:?}", op);
        self.check(m)
    }

    /// Every directory lists exactly the model's children; every file reads as the model's bytes.
    fn check(&self, m: &Model) -> Result<(), TestCaseError> {
        for (path, node) in m {
            match node {
                Node::Dir { .. } => {
                    let listed = self.fs.list_dir(self.ino(path).map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?);
                    let listed = listed.map_err(|e| TestCaseError::fail(format!("list {path}: {e}")))?.unwrap_or_default();
                    let mut names: Vec<String> = listed.into_iter().map(|(_, _, n)| n).filter(|n| n != "." && n != "..").collect();
                    names.sort();
                    let want: Vec<String> = children(m, path).map(|p| parent_of(p).1.to_string()).collect();
                    prop_assert_eq!(names, want, "listing of {:?}", path);
                }
                Node::File(bytes) => {
                    let got = self.read(path).map_err(|e| TestCaseError::fail(format!("read {path}: {e}")))?;
                    prop_assert_eq!(&got, bytes, "bytes of {:?}", path);
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of operations leaves the overlay agreeing with the model after each one.
    #[test]
    fn overlay_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let (tree, mut model) = lower();
        let h = Harness::new(tree);
        for op in &ops {
            h.step(&mut model, op)?;
        }
    }
}
