//! Collections: `annfs mount DIR MNT` where DIR is a directory that is not itself a Zarr store.
//! Every `*.h5ad` file and Zarr store found below DIR appears at its relative path, under its own
//! name, as a directory holding its whole tree; plain directories stay directories; other files
//! are not shown.
//!
//! Nothing is opened at mount: a directory is listed when it is read (listings are kept for
//! [`LISTING_TTL`], so stores added or removed show up on the next listing after that), and a
//! store is opened when its directory is first listed or looked into, once (again when its file
//! changes, or after it was closed as idle: [`Collection::close_idle`]). All stores share one
//! [`ChunkCache`]. A store that cannot be opened is a directory holding only a
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
use crate::index::IndexService;
use crate::model::AnnData;
use crate::storage::{OpenOptions, StoreInfo};
use crate::views::sidecar::Sidecar;
use crate::views::activity::{Activity, EntryInvalidator};
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
    /// Its transposed indexes (gene columns), when the collection has an index directory.
    index: Option<Arc<IndexService>>,
    /// Bytes on disk (the file, or every file of a Zarr directory).
    pub bytes: u64,
}

impl OpenStore {
    /// Its transposed-index service (when the collection has an index directory).
    pub fn index(&self) -> Option<&Arc<IndexService>> {
        self.index.as_ref()
    }
}

/// The shown entries of one directory: (name, kind), sorted by name.
pub type Listing = Arc<Vec<(String, Kind)>>;

/// One store's open state: opened at most once per version, until closed as idle. It also
/// holds the store's tree, so that closing the slot drops everything the store holds except
/// what the kernel still references.
pub struct Slot {
    version: Option<String>,
    state: OnceLock<Result<Arc<OpenStore>, String>>,
    tree: OnceLock<Arc<VTree>>,
    created: Instant,
}

impl Slot {
    fn new(version: Option<String>) -> Arc<Self> {
        Arc::new(Slot { version, state: OnceLock::new(), tree: OnceLock::new(), created: Instant::now() })
    }

    /// True when opening failed at least `age` ago: the failure may have passed (a network
    /// error, a file being rewritten), so the slot is dropped and the next access tries again.
    fn failed_for(&self, age: Duration) -> bool {
        matches!(self.state.get(), Some(Err(_))) && self.created.elapsed() >= age
    }

    /// The opened store, or why it could not be opened.
    pub fn result(&self) -> Result<Arc<OpenStore>, String> {
        self.state.get().cloned().unwrap_or_else(|| Err("not opened yet".into()))
    }

    fn is_open(&self) -> bool {
        matches!(self.state.get(), Some(Ok(_)))
    }
}

/// How a collection opens, serves and closes its stores.
#[derive(Clone, Debug, Default)]
pub struct StoreSetup {
    /// Storage options (remote access, the on-disk cache).
    pub open: OpenOptions,
    /// Where big text views remember their sizes (`None`: nowhere).
    pub sidecar_dir: Option<PathBuf>,
    /// Where transposed indexes live (`None`: gene columns of CSR matrices are scanned).
    pub index_dir: Option<PathBuf>,
    /// How long a gene-column read waits for an index build (`None`: until it is done).
    pub index_wait: Option<Duration>,
    /// A store that nothing used for this long, with no file of it open, is closed (`None`:
    /// stores stay open).
    pub idle: Option<Duration>,
    /// How closing a store makes the kernel forget its directory entries.
    pub invalidator: EntryInvalidator,
}

impl StoreSetup {
    /// The sidecar of the store described by `info`: sizes remembered in `sidecar_dir`, and
    /// those `annfs index` left in `index_dir`.
    pub fn sidecar(&self, info: &StoreInfo) -> Option<Arc<Sidecar>> {
        let dir = self.sidecar_dir.as_deref()?;
        Sidecar::open(dir, self.index_dir.as_deref(), info).map(Arc::new)
    }
}

/// A collection: the source, the shared cache, and the stores opened so far.
pub struct Collection {
    source: Box<dyn Source>,
    cache: Arc<ChunkCache>,
    setup: StoreSetup,
    slots: DashMap<String, Arc<Slot>>,
    activity: DashMap<String, Arc<Activity>>,
    listings: Mutex<HashMap<String, (Instant, Listing)>>,
    opened: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
}

impl Collection {
    /// A collection over `source` (nothing is read yet); with `setup.idle`, a background
    /// thread closes idle stores.
    pub fn new(source: Box<dyn Source>, cache: Arc<ChunkCache>, setup: StoreSetup) -> Arc<Self> {
        let idle = setup.idle;
        let coll = Arc::new(Collection {
            source,
            cache,
            setup,
            slots: DashMap::new(),
            activity: DashMap::new(),
            listings: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        });
        if let Some(idle) = idle {
            start_closer(&coll, idle);
        }
        coll
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

    /// The use tracker of the store at `rel` (kept across closes).
    pub fn activity(&self, rel: &str) -> Arc<Activity> {
        self.activity.entry(rel.to_string()).or_insert_with(Activity::new).clone()
    }

    /// The open state of the store at `rel`, opening it on first use (and again when its
    /// file changed or it was closed as idle).
    pub fn slot(&self, rel: &str, kind: Kind) -> Arc<Slot> {
        let version = self.source.version(rel);
        let slot = {
            let mut e = self
                .slots
                .entry(rel.to_string())
                .or_insert_with(|| Slot::new(version.clone()));
            if e.version != version {
                *e = Slot::new(version);
            }
            e.clone()
        };
        slot.state.get_or_init(|| {
            self.activity(rel).touch();
            let r = self.open_now(rel, kind);
            match &r {
                Ok(_) => self.opened.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    log::warn!("{rel}: {e}");
                    self.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            r
        });
        slot
    }

    /// The store at `rel`, opened on first use (and again if its file changed).
    pub fn open(&self, rel: &str, kind: Kind) -> Result<Arc<OpenStore>, String> {
        self.slot(rel, kind).result()
    }

    fn open_now(&self, rel: &str, kind: Kind) -> Result<Arc<OpenStore>, String> {
        let loc = self.source.location(rel, kind);
        let st = crate::storage::open_with(&loc, &self.setup.open).map_err(|e| format!("cannot open the store: {e}"))?;
        let ad = crate::model::build(&st, &self.cache).map_err(|e| format!("cannot read the store as AnnData: {e}"))?;
        let sidecar = self.setup.sidecar(&st.info);
        let index = self.setup.index_dir.clone().map(|d| IndexService::new(d, self.setup.index_wait, &st.info, self.cache.clone()));
        let bytes = self.source.bytes(rel, kind, &st.info);
        Ok(Arc::new(OpenStore { ad: Arc::new(ad), info: st.info, sidecar, index, bytes }))
    }

    /// The tree of the store at `rel` (opening it if needed): its whole tree, or a README.txt
    /// saying why it failed.
    pub fn store_tree(&self, rel: &str, kind: Kind) -> Arc<VTree> {
        let slot = self.slot(rel, kind);
        slot.tree.get_or_init(|| Arc::new(self.build_tree(rel, &slot))).clone()
    }

    fn build_tree(&self, rel: &str, slot: &Slot) -> VTree {
        match slot.result() {
            Ok(s) => {
                let opts = TreeOptions { sidecar: s.sidecar.clone(), prefix: String::new(), with_rows: true, list_where: true, index: s.index.clone(), shared: None };
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

    /// Closes every opened store that nothing used for `idle` and that has no file open:
    /// forgets it and makes the kernel forget its entries, so its tree, metadata and file
    /// handles are dropped once the kernel lets go of its inodes. The next access opens it
    /// again. Returns how many were closed.
    ///
    /// A store that failed to open is forgotten the same way once the failure is `idle` old,
    /// used or not (its next access tries again): a transient failure does not last until
    /// remount. It is not counted as closed.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let candidates: Vec<String> =
            self.slots.iter().filter(|e| e.is_open() || e.failed_for(idle)).map(|e| e.key().clone()).collect();
        let mut closed = 0;
        for rel in candidates {
            let act = self.activity(&rel);
            let Some((_, slot)) = self.slots.remove_if(&rel, |_, s| (s.is_open() && act.is_idle(idle)) || s.failed_for(idle)) else {
                continue;
            };
            if slot.is_open() {
                closed += 1;
                self.closed.fetch_add(1, Ordering::Relaxed);
                log::debug!("{rel}: closed (idle for {idle:?})");
            } else {
                log::debug!("{rel}: failed to open {:?} ago; the next access tries again", slot.created.elapsed());
            }
            for (dir, name) in act.take_entries() {
                self.setup.invalidator.invalidate(dir, &name);
            }
        }
        closed
    }

    /// Number of stores open now.
    pub fn open_count(&self) -> usize {
        self.slots.iter().filter(|e| e.is_open()).count()
    }

    /// Counters for `.annfs/stats.json`: stores opened, failed and closed as idle so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.opened.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), self.closed.load(Ordering::Relaxed))
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

/// Closes idle stores every quarter of `idle` (between 0.1 s and 10 s) until the collection
/// is dropped.
fn start_closer(coll: &Arc<Collection>, idle: Duration) {
    let weak = Arc::downgrade(coll);
    let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let spawned = std::thread::Builder::new().name("annfs-idle".into()).spawn(move || loop {
        std::thread::sleep(tick);
        let Some(c) = weak.upgrade() else { break };
        c.close_idle(idle);
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the idle-store closer: {e}; stores stay open");
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
        let c = Collection::new(src, Arc::new(ChunkCache::new(1 << 20)), StoreSetup::default());
        let l = c.list("");
        let names: Vec<(&str, Kind)> = l.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        assert_eq!(names, vec![("a.h5ad", Kind::H5ad), ("b.zarr", Kind::Zarr), ("plain", Kind::Dir)]);
        assert!(is_collection(&dir) && !is_collection(&z));
        assert_eq!(c.counts(), (0, 0, 0), "listing opens nothing");
        assert!(c.open("a.h5ad", Kind::H5ad).is_err());
        assert_eq!(c.counts(), (0, 1, 0));
        assert_eq!(c.close_idle(Duration::ZERO), 0, "a failed store is not closed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
