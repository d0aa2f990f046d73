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
pub mod source;
mod table;

use std::collections::HashMap;
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
pub use source::{classify, is_zarr_store, source_for, Source};

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

/// True when `path` should be mounted as a collection: a directory that is not a Zarr store.
pub fn is_collection(path: &Path) -> bool {
    path.is_dir() && !is_zarr_store(path)
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

/// One store's open state: opened at most once per version.
struct Slot {
    version: Option<String>,
    state: OnceLock<Result<Arc<OpenStore>, String>>,
}

/// A collection: the source, the shared cache, and the stores opened so far.
pub struct Collection {
    source: Box<dyn Source>,
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
    pub fn new(source: Box<dyn Source>, cache: Arc<ChunkCache>, opts: OpenOptions, sidecar_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Collection {
            source,
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
        self.source.info()
    }

    /// The source as given (path or URL).
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The shown entries of directory `rel`, sorted by name (kept for [`LISTING_TTL`]).
    pub fn list(&self, rel: &str) -> Listing {
        if let Some((at, l)) = self.listings.lock().get(rel) {
            if at.elapsed() < LISTING_TTL {
                return l.clone();
            }
        }
        let mut out = self.source.list(rel).unwrap_or_else(|e| {
            log::warn!("{e}");
            Vec::new()
        });
        out.sort();
        let l = Arc::new(out);
        self.listings.lock().insert(rel.to_string(), (Instant::now(), l.clone()));
        l
    }

    /// What entry `name` of directory `dir` is: asked of the source directly when it can tell
    /// (a local directory: a store added since the last listing is found), else from the
    /// directory's listing.
    pub fn kind_of(&self, dir: &str, name: &str) -> Option<Kind> {
        let rel = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
        if let Some(k) = self.source.classify(&rel) {
            return Some(k);
        }
        self.list(dir).iter().find(|(n, _)| n == name).map(|(_, k)| *k)
    }

    /// The size of the file at `rel`, when the source can tell.
    pub fn file_size(&self, rel: &str) -> Option<u64> {
        self.source.file_size(rel)
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
        let version = self.source.version(rel);
        let slot = {
            let mut e = self
                .slots
                .entry(rel.to_string())
                .or_insert_with(|| Arc::new(Slot { version: version.clone(), state: OnceLock::new() }));
            if e.version != version {
                *e = Arc::new(Slot { version, state: OnceLock::new() });
            }
            e.clone()
        };
        slot.state
            .get_or_init(|| {
                let r = self.open_now(rel, kind);
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

    fn open_now(&self, rel: &str, kind: Kind) -> Result<Arc<OpenStore>, String> {
        let loc = self.source.location(rel, kind);
        let st = crate::storage::open_with(&loc, &self.opts).map_err(|e| format!("cannot open the store: {e}"))?;
        let ad = crate::model::build(&st, &self.cache).map_err(|e| format!("cannot read the store as AnnData: {e}"))?;
        let sidecar = self.sidecar_dir.as_deref().and_then(|d| Sidecar::open(d, &st.info)).map(Arc::new);
        let bytes = self.source.bytes(rel, kind, &st.info);
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

    /// The root `README.txt` followed by `collection.tsv` (what `annfs info` prints for a
    /// collection).
    pub fn summary(&self) -> Vec<u8> {
        let mut out = table::root_readme(self);
        out.extend_from_slice(b"\ncollection.tsv:\n");
        out.extend_from_slice(&table::render(self));
        out
    }

    /// The shared cache.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }
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
        let src = source_for(dir.to_str().unwrap(), &Default::default()).unwrap().unwrap();
        let c = Collection::new(src, Arc::new(ChunkCache::new(1 << 20)), OpenOptions::default(), None);
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
