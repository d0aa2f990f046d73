//! The collection's own files: the root `README.txt`, `.annfs/collection.tsv` (one row per store,
//! computed when read: it opens every store not opened yet) and `.annfs/stats.json`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{Collection, LISTING_TTL};
use crate::views::format::text_values::push_field;
use crate::views::tree::{json_bytes, stats_json};
use crate::views::{slice, FileContent, LiveFile, ViewResult, VNode, VTree};

/// The root README.txt.
pub(super) fn root_readme(coll: &Collection) -> Vec<u8> {
    let mut s = String::new();
    let _ = writeln!(s, "annfs: a read-only view of a collection of AnnData stores");
    let _ = writeln!(s);
    let _ = writeln!(s, "source:  {}", coll.describe());
    s.push_str(
        "
Every .h5ad file and Zarr store below the source appears at its relative path, under its own
name, as a directory holding its whole tree (README.txt, obs.tsv, X/, where/, rows/, ...): see
that README.txt. A store is opened on first access, not at mount; all stores share one cache.
Plain directories stay directories; other files are not shown. A store that cannot be opened
holds only a README.txt saying why. Stores added or removed show up in listings within about
a second.

  .annfs/collection.tsv  one row per store: path, format, n_obs, n_vars, size (bytes),
                         obs_columns (comma-separated), error. Reading it opens every store.
  .annfs/stats.json      live counters: cache, stores_opened, stores_failed, stores_open,
                         stores_closed (closed after being idle; reopened on next use).
",
    );
    s.into_bytes()
}

/// `.annfs/` of the root.
pub(super) fn root_meta(coll: &Arc<Collection>) -> VTree {
    let mut t = VTree { nodes: vec![VNode::Dir(Vec::new())] };
    t.add_file(VTree::ROOT, "collection.tsv", Arc::new(TableFile { coll: coll.clone(), snap: Mutex::new(None) }));
    let c = coll.clone();
    let stats = LiveFile::new(Box::new(move || {
        let mut v = stats_json(c.cache());
        let (opened, failed, closed) = c.counts();
        v["stores_opened"] = opened.into();
        v["stores_failed"] = failed.into();
        v["stores_closed"] = closed.into();
        v["stores_open"] = c.open_count().into();
        json_bytes(&v)
    }));
    t.add_file(VTree::ROOT, "stats.json", Arc::new(stats));
    t
}

/// `.annfs/collection.tsv`: rendered when read, reused for a listing TTL (so a file's size and
/// its reads agree).
struct TableFile {
    coll: Arc<Collection>,
    snap: Mutex<Option<(Instant, Arc<Vec<u8>>)>>,
}

impl TableFile {
    fn bytes(&self) -> Arc<Vec<u8>> {
        let mut snap = self.snap.lock();
        if let Some((at, b)) = &*snap {
            if at.elapsed() < LISTING_TTL {
                return b.clone();
            }
        }
        let b = Arc::new(render(&self.coll));
        *snap = Some((Instant::now(), b.clone()));
        b
    }
}

/// One row per store.
/// `collection.tsv`: one row per store (opens every store not opened yet).
pub(super) fn render(coll: &Collection) -> Vec<u8> {
    let mut out = b"path\tformat\tn_obs\tn_vars\tsize\tobs_columns\terror\n".to_vec();
    for (rel, kind) in coll.stores() {
        push_field(&mut out, &rel);
        let row = match coll.open(&rel, kind) {
            Ok(s) => {
                let cols: Vec<&str> = s.ad.obs.columns.iter().map(|(n, _)| n.as_str()).collect();
                (s.ad.n_obs.to_string(), s.ad.n_vars.to_string(), s.bytes.to_string(), cols.join(","), String::new())
            }
            Err(e) => {
                let size = coll.file_size(&rel).map(|n| n.to_string()).unwrap_or_default();
                ("NA".into(), "NA".into(), size, "NA".into(), e)
            }
        };
        out.push(b'\t');
        out.extend_from_slice(kind.name().as_bytes());
        for f in [row.0, row.1, row.2, row.3, row.4] {
            out.push(b'\t');
            push_field(&mut out, &f);
        }
        out.push(b'\n');
    }
    out
}

impl FileContent for TableFile {
    fn size(&self) -> ViewResult<u64> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        Ok(slice(&self.bytes(), offset, len).to_vec())
    }

    fn volatile(&self) -> bool {
        true
    }

    fn size_is_cheap(&self) -> bool {
        false
    }
}
