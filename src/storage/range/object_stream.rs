//! Sequential readers of a remote object: who counts as one, and the runs of blocks read ahead
//! of them (part of [`super`]'s block reader).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::{Shared, BLOCK, MAX_RUN};

/// Runs read ahead of a sequential reader at most (16 MiB). Read-ahead starts one run ahead and
/// goes one run deeper each time the reader reaches a run still in flight: a reader of stored
/// bytes (`csr/data.npy`) outruns one run at 20 ms per request, while a reader that renders much
/// from little (`dense.npy` of a sparse matrix) never waits and keeps to one run (three runs
/// always fetched 53 instead of 29 MiB for its 17 MB, and were slower against a loopback server
/// sharing its cores).
const MAX_DEPTH: u64 = 4;
/// Runs read ahead for sequential readers remembered per object, at most.
const MAX_TRIGGERS: usize = 64;

/// The last few values recorded (a ring; 0 stands for none, so values are stored plus one).
#[derive(Default)]
pub(super) struct Recent {
    ring: [AtomicU64; 32],
    next: AtomicUsize,
}

impl Recent {
    /// Records `v`, forgetting the oldest value.
    pub(super) fn record(&self, v: u64) {
        let i = self.next.fetch_add(1, Relaxed) % self.ring.len();
        self.ring[i].store(v.saturating_add(1), Relaxed);
    }

    /// True when a recorded value lies in `[lo, hi]`.
    pub(super) fn any_in(&self, lo: u64, hi: u64) -> bool {
        self.ring.iter().any(|v| matches!(v.load(Relaxed), x if x > lo && x - 1 <= hi))
    }
}

impl Shared {
    /// Starts the background fetches of the runs of blocks from `from` (for a sequential
    /// reader), as many as the read-ahead depth, marking the first block of each: reading it
    /// starts the runs after.
    pub(super) fn read_ahead(self: &Arc<Self>, from: u64, runs: u64, at: u64) {
        // What is read ahead must fit in half the block cache, or it is evicted unread.
        let depth = runs.min(self.cache_bytes / 2 / (MAX_RUN * BLOCK)).max(1);
        let consumed = self.consumed.load(Relaxed);
        for k in 0..depth {
            let from = from + k * MAX_RUN;
            // A reader streaming from where it was when the run was started (block `at`) has read
            // about the bytes up to the run's first block when it gets there: half of them is
            // asked for (sorted random rows read a chunk of each array per row, ~0.2 MB, while
            // skipping ~1.5 MB: asking for a quarter let them stream 330 instead of 280 MiB
            // for 200 rows).
            let need = from.saturating_sub(at) * BLOCK / 2;
            if from > self.last_block() {
                return;
            }
            let to = (from + MAX_RUN - 1).min(self.last_block());
            {
                let mut t = self.triggers.lock();
                if t.len() >= MAX_TRIGGERS {
                    // Runs nobody reached (the reader stopped or jumped): forget them.
                    t.clear();
                }
                t.insert(from, (to, consumed, need));
                self.armed.store(t.len(), Relaxed);
            }
            self.prefetch(from, to);
        }
    }

    /// A sequential reader reached block `b` (still being fetched: `waits`): if read-ahead
    /// marked it, read the next runs ahead — one run deeper if the reader has to wait for it.
    pub(super) fn on_trigger(self: &Arc<Self>, b: u64, waits: bool) {
        if self.armed.load(Relaxed) == 0 {
            return;
        }
        let next = {
            let mut t = self.triggers.lock();
            let next = t.remove(&b);
            self.armed.store(t.len(), Relaxed);
            next
        };
        let Some((to, since, need)) = next else { return };
        // Readers that skip forward through the object (sorted random rows) reach runs read
        // ahead too, having read little of what came before: not a stream to feed.
        if self.consumed.load(Relaxed).saturating_sub(since) < need {
            return;
        }
        if waits {
            let _ = self.depth.fetch_update(Relaxed, Relaxed, |d| (d < MAX_DEPTH).then_some(d + 1));
        }
        self.read_ahead(to + 1, self.depth.load(Relaxed), b);
    }

}
