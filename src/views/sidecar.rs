//! The sidecar index: text-file layouts (size, block offsets, line count) remembered on disk,
//! keyed by the store's identity, so a second mount of the same store knows the size of a big
//! text view without another pass over the data.
//!
//! One file per store under the cache directory, named by a hash of (canonical path, size,
//! mtime, inode, annfs format version); one JSON line per file. Lines that do not parse or do
//! not fit are ignored, so a torn write costs at most a recomputation.
//!
//! A mount also reads the same file in its index directory, where `annfs index` leaves the
//! layouts of every big text view of the store: an index directory built once and shared
//! (read-only) by every node spares each of them the size passes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::storage::StoreInfo;

/// Bumped whenever a rendering changes, so old sidecars stop matching.
const FORMAT_VERSION: u32 = 1;
/// Only layouts with at least this many blocks are worth remembering.
const MIN_BLOCKS: usize = 8;

/// A remembered layout.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredLayout {
    /// Lines per block when it was built (must match to be reused).
    pub block_rows: u64,
    /// Number of body lines.
    pub lines: u64,
    /// Body offset of every block, then the body size.
    pub offsets: Vec<u64>,
}

impl StoredLayout {
    /// True when this layout cuts the view as one of `blocks` blocks of `block_rows` lines does.
    fn fits(&self, block_rows: u64, blocks: u64) -> bool {
        self.block_rows == block_rows && self.offsets.len() as u64 == blocks.saturating_add(1)
    }
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    #[serde(flatten)]
    layout: StoredLayout,
}

/// The sidecar of one store.
pub struct Sidecar {
    /// Where new layouts are appended (`None`: the cache directory is not usable).
    path: Option<PathBuf>,
    entries: Mutex<HashMap<String, StoredLayout>>,
}

/// The default cache directory: `$XDG_CACHE_HOME/annfs`, else `$HOME/.cache/annfs`, else for
/// root `/var/cache/annfs` (a system service runs with neither variable set); `None` for
/// another user with neither.
pub fn default_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    default_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"), root)
}

/// [`default_dir`] from the two variables and whether the process runs as root.
fn default_dir_from(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>, root: bool) -> Option<PathBuf> {
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    match (set(xdg), set(home)) {
        (Some(x), _) => Some(x.join("annfs")),
        (None, Some(h)) => Some(h.join(".cache").join("annfs")),
        (None, None) => root.then(|| PathBuf::from("/var/cache/annfs")),
    }
}

/// The sidecar file name of the store described by `info`: a hash of its identity, the path
/// canonical (so `./a.h5ad` and `/data/a.h5ad` share one), or `None` when nothing tells whether
/// the store changed (neither an mtime nor a version).
fn file_name(info: &StoreInfo) -> Option<String> {
    if info.mtime.is_none() && info.version.is_none() {
        return None;
    }
    let location = info.canonical_location().unwrap_or_else(|_| info.location.clone());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&location, info.size, info.mtime, info.inode, &info.version, FORMAT_VERSION).hash(&mut h);
    Some(format!("{:016x}.layouts", h.finish()))
}

/// Adds the valid layouts of the sidecar file at `path` (if any) to `entries`.
fn load(path: &Path, entries: &mut HashMap<String, StoredLayout>) {
    let Ok(f) = std::fs::File::open(path) else { return };
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        if let Ok(l) = serde_json::from_str::<Line>(&line) {
            if valid(&l.layout) {
                entries.insert(l.key, l.layout);
            }
        }
    }
}

impl Sidecar {
    /// Opens (creating if needed) the sidecar of the store described by `info` under `dir`,
    /// with the layouts of the same store found under `shared` (an index directory, read only)
    /// as well; those of `dir` win. Returns `None` (and logs) when neither holds or can hold
    /// one: sizes are then recomputed.
    pub fn open(dir: &Path, shared: Option<&Path>, info: &StoreInfo) -> Option<Sidecar> {
        let name = file_name(info)?;
        let mut entries = HashMap::new();
        for d in shared.into_iter().chain([dir]) {
            load(&d.join(&name), &mut entries);
        }
        let path = match std::fs::create_dir_all(dir) {
            Ok(()) => Some(dir.join(&name)),
            Err(e) => {
                log::info!("sizes of text views are not remembered: cannot create {}: {e}", dir.display());
                None
            }
        };
        log::debug!("sidecar {name} holds {} layouts", entries.len());
        (path.is_some() || !entries.is_empty()).then(|| Sidecar { path, entries: Mutex::new(entries) })
    }

    /// The remembered layout of `key`, if it was built with `block_rows` lines per block and
    /// has an offset for each of `blocks` blocks and the end.
    pub fn get(&self, key: &str, block_rows: u64, blocks: u64) -> Option<StoredLayout> {
        self.entries.lock().get(key).filter(|l| l.fits(block_rows, blocks)).cloned()
    }

    /// True when [`Sidecar::get`] would return a layout (without copying it).
    pub fn knows(&self, key: &str, block_rows: u64, blocks: u64) -> bool {
        self.entries.lock().get(key).is_some_and(|l| l.fits(block_rows, blocks))
    }

    /// Number of layouts held.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Remembers a layout (large ones only) and appends it to the sidecar file.
    pub fn put(&self, key: &str, layout: &StoredLayout) {
        if layout.offsets.len() < MIN_BLOCKS {
            return;
        }
        let mut entries = self.entries.lock();
        entries.insert(key.to_string(), layout.clone());
        let Some(path) = &self.path else { return };
        let line = Line { key: key.to_string(), layout: layout.clone() };
        let written = serde_json::to_string(&line).map_err(std::io::Error::other).and_then(|mut s| {
            s.push('\n');
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            f.write_all(s.as_bytes())
        });
        if let Err(e) = written {
            log::info!("cannot write sidecar {}: {e}", path.display());
        }
    }
}

fn valid(l: &StoredLayout) -> bool {
    l.block_rows > 0 && !l.offsets.is_empty() && l.offsets.windows(2).all(|w| w[0] <= w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_opens_and_ignores_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let info = StoreInfo { format: "hdf5", location: "/x.h5ad".into(), size: 10, mtime: Some(5), inode: Some(7), version: None };
        let s = Sidecar::open(dir.path(), None, &info).unwrap();
        let layout = StoredLayout { block_rows: 4, lines: 40, offsets: (0..10).map(|i| i * 100).collect() };
        s.put("X/matrix.mtx", &layout);
        let path = s.path.clone().unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{torn").unwrap();
        let again = Sidecar::open(dir.path(), None, &info).unwrap();
        assert_eq!(again.get("X/matrix.mtx", 4, 9).unwrap().offsets, layout.offsets);
        assert!(again.get("X/matrix.mtx", 5, 9).is_none(), "other block size");
        assert!(again.get("X/matrix.mtx", 4, 10).is_none() && !again.knows("X/matrix.mtx", 4, 10), "other block count");
        assert!(again.knows("X/matrix.mtx", 4, 9));
        let changed = StoreInfo { mtime: Some(6), ..info };
        assert!(Sidecar::open(dir.path(), None, &changed).unwrap().get("X/matrix.mtx", 4, 9).is_none());
    }

    #[test]
    fn default_dir_falls_back_to_var_cache_for_root_only() {
        let v = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(default_dir_from(v("/x"), v("/h"), false), Some(PathBuf::from("/x/annfs")));
        assert_eq!(default_dir_from(v(""), v("/h"), false), Some(PathBuf::from("/h/.cache/annfs")));
        assert_eq!(default_dir_from(None, None, true), Some(PathBuf::from("/var/cache/annfs")));
        assert_eq!(default_dir_from(None, v(""), false), None);
    }

    #[test]
    fn shared_layouts_are_read_and_own_ones_win() {
        let (own, shared) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = shared.path().join("a.h5ad");
        std::fs::write(&store, b"x").unwrap();
        // The same store named two ways: one sidecar file.
        let named = |location: String| StoreInfo { format: "hdf5", location, size: 1, mtime: Some(5), inode: None, version: None };
        let (abs, rel) = (named(store.display().to_string()), named(format!("{}/./a.h5ad", shared.path().display())));
        let layout = |n: u64| StoredLayout { block_rows: 4, lines: 40, offsets: (0..10).map(|i| i * n).collect() };
        Sidecar::open(shared.path(), None, &abs).unwrap().put("obs.tsv", &layout(100));
        Sidecar::open(shared.path(), None, &abs).unwrap().put("var.tsv", &layout(100));
        let s = Sidecar::open(own.path(), Some(shared.path()), &rel).unwrap();
        assert_eq!(s.get("obs.tsv", 4, 9).unwrap().offsets, layout(100).offsets, "read from the shared directory");
        s.put("var.tsv", &layout(7));
        let again = Sidecar::open(own.path(), Some(shared.path()), &abs).unwrap();
        assert_eq!(again.get("var.tsv", 4, 9).unwrap().offsets, layout(7).offsets, "the own directory wins");
        // A cache directory that cannot be created still serves the shared layouts.
        let blocked = own.path().join("file");
        std::fs::write(&blocked, b"").unwrap();
        let ro = Sidecar::open(&blocked.join("sub"), Some(shared.path()), &abs).unwrap();
        assert!(ro.path.is_none() && ro.get("obs.tsv", 4, 9).is_some());
        ro.put("X.tsv", &layout(3));
        assert!(Sidecar::open(&blocked.join("sub"), None, &abs).is_none(), "nothing to read, nowhere to write");
    }
}
