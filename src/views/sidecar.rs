//! The sidecar index: text-file layouts (size, block offsets, line count) remembered on disk,
//! keyed by the store's identity, so a second mount of the same store knows the size of a big
//! text view without another pass over the data.
//!
//! One file per store under the cache directory, named by a hash of (path, size, mtime, inode,
//! annfs format version); one JSON line per file. Lines that do not parse or do not fit are
//! ignored, so a torn write costs at most a recomputation.

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

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    #[serde(flatten)]
    layout: StoredLayout,
}

/// The sidecar of one store.
pub struct Sidecar {
    path: PathBuf,
    entries: Mutex<HashMap<String, StoredLayout>>,
}

/// The default cache directory: `$XDG_CACHE_HOME/annfs`, else `$HOME/.cache/annfs`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("annfs"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("annfs"))
}

impl Sidecar {
    /// Opens (creating if needed) the sidecar of the store described by `info` under `dir`.
    /// Returns `None` (and logs) when the directory is not usable: sizes are then recomputed.
    pub fn open(dir: &Path, info: &StoreInfo) -> Option<Sidecar> {
        // Neither an mtime nor a version (ETag): no way to tell whether the store changed.
        if info.mtime.is_none() && info.version.is_none() {
            return None;
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            log::info!("no sidecar index: cannot create {}: {e}", dir.display());
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&info.location, info.size, info.mtime, info.inode, &info.version, FORMAT_VERSION).hash(&mut h);
        let path = dir.join(format!("{:016x}.layouts", h.finish()));
        let mut entries = HashMap::new();
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(l) = serde_json::from_str::<Line>(&line) {
                    if valid(&l.layout) {
                        entries.insert(l.key, l.layout);
                    }
                }
            }
        }
        log::debug!("sidecar {} holds {} layouts", path.display(), entries.len());
        Some(Sidecar { path, entries: Mutex::new(entries) })
    }

    /// The remembered layout of `key`, if it was built with `block_rows` lines per block.
    pub fn get(&self, key: &str, block_rows: u64) -> Option<StoredLayout> {
        self.entries.lock().get(key).filter(|l| l.block_rows == block_rows).cloned()
    }

    /// Remembers a layout (large ones only) and appends it to the sidecar file.
    pub fn put(&self, key: &str, layout: &StoredLayout) {
        if layout.offsets.len() < MIN_BLOCKS {
            return;
        }
        let mut entries = self.entries.lock();
        entries.insert(key.to_string(), layout.clone());
        let line = Line { key: key.to_string(), layout: layout.clone() };
        let written = serde_json::to_string(&line).map_err(std::io::Error::other).and_then(|mut s| {
            s.push('\n');
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            f.write_all(s.as_bytes())
        });
        if let Err(e) = written {
            log::info!("cannot write sidecar {}: {e}", self.path.display());
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
        let s = Sidecar::open(dir.path(), &info).unwrap();
        let layout = StoredLayout { block_rows: 4, lines: 40, offsets: (0..10).map(|i| i * 100).collect() };
        s.put("X/matrix.mtx", &layout);
        std::fs::OpenOptions::new().append(true).open(&s.path).unwrap().write_all(b"{torn").unwrap();
        let again = Sidecar::open(dir.path(), &info).unwrap();
        assert_eq!(again.get("X/matrix.mtx", 4).unwrap().offsets, layout.offsets);
        assert!(again.get("X/matrix.mtx", 5).is_none(), "other block size");
        let changed = StoreInfo { mtime: Some(6), ..info };
        assert!(Sidecar::open(dir.path(), &changed).unwrap().get("X/matrix.mtx", 4).is_none());
    }
}
