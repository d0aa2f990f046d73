//! Collections: `annfs mount DIR MNT` where DIR is a directory that is not itself a Zarr store.
//! Every `*.h5ad` file and Zarr store found below DIR appears at its relative path, under its own
//! name, as a directory holding its whole tree; plain directories stay directories; other files
//! are not shown.
//!
//! Nothing is opened at mount: a directory is listed when it is read (listings are kept for
//! [`LISTING_TTL`], so stores added or removed show up on the next listing after that), and a
//! store is opened on the first lookup of its name, once (again only if its file changes). All
//! stores share one [`ChunkCache`]. A store that cannot be opened is a directory holding only a
//! `README.txt` that says why. The root also has `README.txt` and `.annfs/` (`collection.tsv`,
//! one row per store, and `stats.json`, see [`table`]).

mod dir;
mod table;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::cache::ChunkCache;
use crate::model::AnnData;
use crate::storage::{OpenOptions, StoreInfo};
use crate::views::sidecar::Sidecar;
use crate::views::tree::{self, TreeOptions};
use crate::views::{StaticFile, VNode, VTree};

pub use dir::CollectionDir;

/// How long a directory listing is reused before the directory is read again.
pub const LISTING_TTL: Duration = Duration::from_secs(1);

/// What a directory entry of the source is, as the collection shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A plain directory (may hold stores further down).
    Dir,
    /// An `.h5ad` file.
    H5ad,
    /// A Zarr store (a directory holding `.zgroup` or `zarr.json`).
    Zarr,
}

impl Kind {
    /// `hdf5`, `zarr` or `directory`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::H5ad => "hdf5",
            Kind::Zarr => "zarr",
        }
    }
}

/// True when `path` is a directory holding a Zarr group (`.zgroup` for v2, `zarr.json` for v3).
pub fn is_zarr_store(path: &Path) -> bool {
    path.join(".zgroup").is_file() || path.join("zarr.json").is_file()
}

/// True when `path` should be mounted as a collection: a directory that is not a Zarr store.
pub fn is_collection(path: &Path) -> bool {
    path.is_dir() && !is_zarr_store(path)
}

/// How the entry `name` at `path` shows in a collection, if at all (hidden files, files that
/// are not `.h5ad`, names that are not UTF-8 and unreadable entries are left out).
pub fn classify(path: &Path, name: &str) -> Option<Kind> {
    if name.starts_with('.') {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        Some(if is_zarr_store(path) { Kind::Zarr } else { Kind::Dir })
    } else if meta.is_file() && name.to_ascii_lowercase().ends_with(".h5ad") {
        Some(Kind::H5ad)
    } else {
        None
    }
}

/// An opened store of the collection.
pub struct OpenStore {
    /// The AnnData.
    pub ad: Arc<AnnData>,
    /// Facts about the store.
    pub info: StoreInfo,
    /// Where its text views remember their sizes.
    sidecar: Option<Arc<Sidecar>>,
    /// Bytes on disk (the file, or every file of a Zarr directory).
    pub bytes: u64,
}

/// The shown entries of one directory: (name, kind), sorted by name.
pub type Listing = Arc<Vec<(String, Kind)>>;

/// Identifies a version of a store on disk (reopened when it changes).
type Version = (u64, u64, i64, i64);

fn version_of(path: &Path) -> Option<Version> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// One store's open state: opened at most once per version.
struct Slot {
    version: Option<Version>,
    state: OnceLock<Result<Arc<OpenStore>, String>>,
}

/// A collection: the source directory, the shared cache, and the stores opened so far.
pub struct Collection {
    source: PathBuf,
    cache: Arc<ChunkCache>,
    opts: OpenOptions,
    sidecar_dir: Option<PathBuf>,
    slots: DashMap<String, Arc<Slot>>,
    listings: Mutex<HashMap<String, (Instant, Listing)>>,
    opened: AtomicU64,
    failed: AtomicU64,
}

impl Collection {
    /// A collection over `source` (nothing is read yet).
    pub fn new(source: &Path, cache: Arc<ChunkCache>, opts: OpenOptions, sidecar_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Collection {
            source: source.to_path_buf(),
            cache,
            opts,
            sidecar_dir,
            slots: DashMap::new(),
            listings: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The virtual tree of the collection: its root is the source directory, listed on demand.
    pub fn tree(self: &Arc<Self>) -> VTree {
        VTree { nodes: vec![VNode::Dyn(Arc::new(CollectionDir::new(self.clone(), String::new())))] }
    }

    /// Facts about the collection for `.annfs/info.json`-like uses and the mount's mtime.
    pub fn info(&self) -> StoreInfo {
        let meta = std::fs::metadata(&self.source).ok();
        StoreInfo {
            format: "collection",
            location: self.source.display().to_string(),
            size: 0,
            mtime: meta.as_ref().map(|m| m.mtime()),
            inode: meta.as_ref().map(|m| m.ino()),
            version: None,
        }
    }

    /// The source path of a relative path.
    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.source.clone()
        } else {
            self.source.join(rel)
        }
    }

    /// The shown entries of directory `rel`, sorted by name (kept for [`LISTING_TTL`]).
    pub fn list(&self, rel: &str) -> Listing {
        if let Some((at, l)) = self.listings.lock().get(rel) {
            if at.elapsed() < LISTING_TTL {
                return l.clone();
            }
        }
        let dir = self.path(rel);
        let mut out = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let Ok(name) = e.file_name().into_string() else { continue };
                    if let Some(kind) = classify(&e.path(), &name) {
                        out.push((name, kind));
                    }
                }
            }
            Err(e) => log::warn!("cannot list {}: {e}", dir.display()),
        }
        out.sort();
        let l = Arc::new(out);
        self.listings.lock().insert(rel.to_string(), (Instant::now(), l.clone()));
        l
    }

    /// Every store below the source, as (relative path, kind), depth first in name order.
    pub fn stores(&self) -> Vec<(String, Kind)> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let mut dirs = Vec::new();
            for (name, kind) in self.list(&rel).iter() {
                let p = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                match kind {
                    Kind::Dir => dirs.push(p),
                    _ => out.push((p, *kind)),
                }
            }
            stack.extend(dirs.into_iter().rev());
        }
        out.sort();
        out
    }

    /// The store at `rel`, opened on first use (and again if its file changed).
    pub fn open(&self, rel: &str, kind: Kind) -> Result<Arc<OpenStore>, String> {
        let path = self.path(rel);
        let version = version_of(&path);
        let slot = {
            let mut e = self.slots.entry(rel.to_string()).or_insert_with(|| Arc::new(Slot { version, state: OnceLock::new() }));
            if e.version != version {
                *e = Arc::new(Slot { version, state: OnceLock::new() });
            }
            e.clone()
        };
        slot.state
            .get_or_init(|| {
                let r = self.open_now(&path, kind);
                match &r {
                    Ok(_) => self.opened.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        log::warn!("{rel}: {e}");
                        self.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                r
            })
            .clone()
    }

    fn open_now(&self, path: &Path, kind: Kind) -> Result<Arc<OpenStore>, String> {
        let loc = path.to_string_lossy();
        let st = crate::storage::open_with(&loc, &self.opts).map_err(|e| format!("cannot open the store: {e}"))?;
        let ad = crate::model::build(&st, &self.cache).map_err(|e| format!("cannot read the store as AnnData: {e}"))?;
        let sidecar = self.sidecar_dir.as_deref().and_then(|d| Sidecar::open(d, &st.info)).map(Arc::new);
        let bytes = match kind {
            Kind::Zarr => dir_bytes(path),
            _ => st.info.size,
        };
        Ok(Arc::new(OpenStore { ad: Arc::new(ad), info: st.info, sidecar, bytes }))
    }

    /// The tree of the store at `rel`: its whole tree, or a README.txt saying why it failed.
    pub fn store_tree(&self, rel: &str, kind: Kind) -> VTree {
        match self.open(rel, kind) {
            Ok(s) => {
                let opts = TreeOptions { sidecar: s.sidecar.clone(), prefix: String::new(), with_rows: true, list_where: true, index: None };
                tree::build(&s.ad, &s.info, self.cache.clone(), &opts)
            }
            Err(why) => {
                let text = format!("annfs: {rel} could not be opened; the rest of the collection works.\n\n{why}\n");
                let mut t = VTree { nodes: vec![VNode::Dir(Vec::new())] };
                t.add_file(VTree::ROOT, "README.txt", Arc::new(StaticFile(text.into_bytes())));
                t
            }
        }
    }

    /// Counters for `.annfs/stats.json`: stores opened and failed so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.opened.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// The shared cache.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }
}

/// Total bytes of the files below `path`.
fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_entries() {
        let dir = std::env::temp_dir().join(format!("annfs-coll-{}", std::process::id()));
        let z = dir.join("b.zarr");
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join(".zgroup"), b"{}").unwrap();
        std::fs::create_dir_all(dir.join("plain")).unwrap();
        std::fs::write(dir.join("a.h5ad"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.join(".hidden.h5ad"), b"x").unwrap();
        let c = Collection::new(&dir, Arc::new(ChunkCache::new(1 << 20)), OpenOptions::default(), None);
        let l = c.list("");
        let names: Vec<(&str, Kind)> = l.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        assert_eq!(names, vec![("a.h5ad", Kind::H5ad), ("b.zarr", Kind::Zarr), ("plain", Kind::Dir)]);
        assert!(is_collection(&dir) && !is_collection(&z));
        assert_eq!(c.counts(), (0, 0), "listing opens nothing");
        assert!(c.open("a.h5ad", Kind::H5ad).is_err());
        assert_eq!(c.counts(), (0, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
