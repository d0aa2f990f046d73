//! Live counters for `.annfs/stats.json`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Key;

/// Counters updated lock-free on the read path.
#[derive(Default)]
pub struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    chunks_decoded: AtomicU64,
    bytes_decoded: AtomicU64,
    decode_nanos: AtomicU64,
    blocks_rendered: AtomicU64,
    bytes_served: AtomicU64,
    bytes_spliced: AtomicU64,
    bytes_from_cache: AtomicU64,
    reads: AtomicU64,
    errors: AtomicU64,
    opens: AtomicU64,
    releases: AtomicU64,
    prefetch_jobs: AtomicU64,
    prefetched_bytes: AtomicU64,
    prefetch_skipped: AtomicU64,
    dropped_behind: AtomicU64,
    recycled: AtomicU64,
    deadline_expired: AtomicU64,
    text_sized: AtomicU64,
    text_remembered: AtomicU64,
    lookups: AtomicU64,
    /// The most recent read failures, one per file: (virtual path, error).
    failures: parking_lot::Mutex<Vec<(String, String)>>,
    /// The store's gate (`store_changed`), when set.
    gate: std::sync::OnceLock<std::sync::Arc<crate::storage::gate::Gate>>,
    /// Counters of remote reads, when the mount has a remote store.
    remote: std::sync::OnceLock<std::sync::Arc<crate::storage::range::RemoteStats>>,
}

/// How many distinct failing files are remembered.
const MAX_FAILURES: usize = 64;

impl Stats {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    pub(crate) fn loaded(&self, key: &Key, bytes: u64, took: Duration) {
        match key {
            Key::Chunk(..) | Key::Strings(..) => {
                self.chunks_decoded.fetch_add(1, Relaxed);
                self.bytes_decoded.fetch_add(bytes, Relaxed);
                self.decode_nanos.fetch_add(took.as_nanos() as u64, Relaxed);
            }
            Key::Rendered(..) => {
                self.blocks_rendered.fetch_add(1, Relaxed);
            }
        }
    }

    /// Records a size pass over a text view (its layout was not remembered).
    pub(crate) fn text_sized(&self) {
        self.text_sized.fetch_add(1, Relaxed);
    }

    /// Records a text view whose layout came from a sidecar (no size pass).
    pub(crate) fn text_remembered(&self) {
        self.text_remembered.fetch_add(1, Relaxed);
    }

    /// Records a lookup request from the kernel (`readdirplus` spares `ls -l` one per entry).
    pub fn looked_up(&self) {
        self.lookups.fetch_add(1, Relaxed);
    }

    /// Records one served read of `bytes` bytes.
    pub fn served(&self, bytes: u64) {
        self.reads.fetch_add(1, Relaxed);
        self.bytes_served.fetch_add(bytes, Relaxed);
    }

    /// Records `bytes` answered straight from cached chunks (written from memory, not copied).
    pub fn sent_from_cache(&self, bytes: u64) {
        self.bytes_from_cache.fetch_add(bytes, Relaxed);
    }

    /// Records `bytes` of a served read that were spliced from the store file, not copied.
    pub fn spliced(&self, bytes: u64) {
        self.bytes_spliced.fetch_add(bytes, Relaxed);
    }

    /// Records one opened file.
    pub fn opened(&self) {
        self.opens.fetch_add(1, Relaxed);
    }

    /// Records one closed (released) file.
    pub fn closed(&self) {
        self.releases.fetch_add(1, Relaxed);
    }

    /// Records one read-ahead job that loaded `bytes` bytes of a file ahead of its reader.
    pub fn prefetched(&self, bytes: u64) {
        self.prefetch_jobs.fetch_add(1, Relaxed);
        self.prefetched_bytes.fetch_add(bytes, Relaxed);
    }

    /// Records one read-ahead window not started because the read-ahead queue was full.
    pub fn prefetch_skipped(&self) {
        self.prefetch_skipped.fetch_add(1, Relaxed);
    }

    /// Records one cached chunk dropped behind a sequential reader.
    pub fn dropped_behind(&self) {
        self.dropped_behind.fetch_add(1, Relaxed);
    }

    /// Records one decoded chunk moved into a buffer dropped behind.
    pub fn recycled(&self) {
        self.recycled.fetch_add(1, Relaxed);
    }

    /// Records one request answered `EIO` because it missed its deadline.
    pub fn deadline_expired(&self) {
        self.deadline_expired.fetch_add(1, Relaxed);
    }

    /// Files currently open on the mount.
    pub fn open_files(&self) -> u64 {
        self.opens.load(Relaxed).saturating_sub(self.releases.load(Relaxed))
    }

    /// Records one failed request on virtual file `path`.
    pub fn error(&self, path: &str, err: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        let mut f = self.failures.lock();
        if !f.iter().any(|(p, _)| p == path) && f.len() < MAX_FAILURES {
            f.push((path.to_string(), err.to_string()));
        }
    }

    /// Reports whether `gate` is closed (`store_changed`); the first call wins.
    pub fn set_gate(&self, gate: std::sync::Arc<crate::storage::gate::Gate>) {
        let _ = self.gate.set(gate);
    }

    /// Reports `remote`'s counters in the snapshot (`remote`); the first call wins.
    pub fn set_remote(&self, remote: std::sync::Arc<crate::storage::range::RemoteStats>) {
        let _ = self.remote.set(remote);
    }

    /// Files whose reads failed so far, with the error.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.failures.lock().clone()
    }

    /// A JSON snapshot of the counters.
    pub fn snapshot(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let (hits, misses) = (g(&self.hits), g(&self.misses));
        serde_json::json!({
            "cache_hits": hits,
            "cache_misses": misses,
            "cache_hit_rate": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            "chunks_decoded": g(&self.chunks_decoded),
            "bytes_decoded": g(&self.bytes_decoded),
            "decode_seconds": g(&self.decode_nanos) as f64 / 1e9,
            "blocks_rendered": g(&self.blocks_rendered),
            "reads": g(&self.reads),
            "bytes_served": g(&self.bytes_served),
            "bytes_spliced": g(&self.bytes_spliced),
            "bytes_sent_from_cache": g(&self.bytes_from_cache),
            "errors": g(&self.errors),
            "open_files": self.open_files(),
            "prefetch_jobs": g(&self.prefetch_jobs),
            "prefetched_bytes": g(&self.prefetched_bytes),
            "prefetch_skipped": g(&self.prefetch_skipped),
            "dropped_behind": g(&self.dropped_behind),
            "chunks_recycled": g(&self.recycled),
            "deadline_expired": g(&self.deadline_expired),
            "text_views_sized": g(&self.text_sized),
            "text_layouts_remembered": g(&self.text_remembered),
            "lookups": g(&self.lookups),
            "store_changed": self.gate.get().and_then(|g| g.reason()),
            "remote": self.remote.get().map(|r| r.snapshot()),
            "failing_files": self.failures().into_iter().map(|(p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>(),
        })
    }
}
