//! Lanes: a worker pool with its request deadlines ([`Lane`]), and the per-worker reply buffers
//! reads render into.

use std::sync::Arc;
use std::time::Duration;

use fuser::Errno;

use super::deadline::{Deadlines, ErrorReply};
use super::workers::Workers;
use crate::cache::ChunkCache;

/// A worker pool with its request deadlines.
pub(super) struct Lane {
    workers: Arc<Workers>,
    deadlines: Deadlines,
}

impl Lane {
    pub(super) fn new(name: &'static str, n: usize, limit: Duration, cache: &Arc<ChunkCache>) -> Self {
        let workers = Arc::new(Workers::new(name, n));
        let (w, stats) = (workers.clone(), cache.stats.clone());
        let deadlines = Deadlines::new(
            limit,
            Box::new(move || {
                stats.deadline_expired();
                w.replace_stuck();
            }),
        );
        Lane { workers, deadlines }
    }

    /// Runs `work` on a worker and answers `reply` with its result, or with `EIO` once the
    /// deadline passes, whichever comes first.
    pub(super) fn answer<R: ErrorReply, T: Send + 'static>(
        &self,
        reply: R,
        what: impl FnOnce() -> String,
        work: impl FnOnce() -> Result<T, Errno> + Send + 'static,
        send: impl FnOnce(R, T) + Send + 'static,
    ) {
        let slot = self.deadlines.track(reply, what);
        self.workers.run(move || {
            let r = work();
            if let Some(reply) = slot.take() {
                match r {
                    Ok(v) => send(reply, v),
                    Err(e) => reply.fail(e),
                }
            }
        });
    }
}


/// One reusable reply buffer per worker thread: a read renders into it, the reply is sent from
/// it, and it goes back for the next read. Fresh multi-MiB buffers per request cost a page fault
/// per page (the kernel zeroes every new page); this keeps them warm. Buffers above
/// [`reply_buffer::KEEP`] are not kept, so idle workers hold little.
pub(super) mod reply_buffer {
    use std::cell::RefCell;

    /// Largest buffer kept between requests (a FUSE read is at most 1 MiB by default).
    pub(crate) const KEEP: usize = 4 << 20;

    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// This thread's buffer, empty.
    pub(crate) fn take() -> Vec<u8> {
        let mut v = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        v.clear();
        v
    }

    /// Returns a buffer for reuse by this thread.
    pub(crate) fn give_back(v: Vec<u8>) {
        if v.capacity() <= KEEP {
            BUF.with(|b| *b.borrow_mut() = v);
        }
    }
}

