//! Buffers of chunks dropped behind a sequential reader, kept for the chunks decoded next.
//!
//! A decoder hands back each chunk in a freshly allocated buffer, and on this kind of machine
//! faulting fresh pages in costs more than copying the chunk (~0.55 ms per MiB against ~0.1): a
//! stream of chunks through the cache faulted in a new page for every 4 KiB it read. When a
//! sequential reader has passed a chunk ([`super::ChunkCache::drop_behind`]), its buffer comes
//! here instead of going back to the allocator, and the next decoded chunk of about its size is
//! copied into it ([`super::ChunkCache::adopt`]) while the decoder's buffer is freed at once.
//! Bounded: at most `limit` bytes wait here, a part of the budget's in-flight reserve (the
//! oldest go first). Every operation costs the same however many buffers wait: buffers under
//! a page are not kept, the bytes held are counted as they come and go, and `take` looks at
//! the newest few only — an array of a million one-element chunks (valid HDF5, made by the
//! semantic fuzzer) once kept a million buffers here, each `give` summing them all.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Bytes;

/// Smallest buffer kept: a page (a smaller fresh allocation costs no page fault of its own).
pub const MIN_BYTES: usize = 4 << 10;
/// Most buffers `take` looks at, newest first.
const SCAN: usize = 64;

/// A bounded queue of reusable buffers, newest at the back.
pub struct Recycler {
    bufs: Mutex<Kept>,
    limit: usize,
}

#[derive(Default)]
struct Kept {
    bufs: VecDeque<Bytes>,
    /// Sum of the capacities in `bufs`.
    bytes: usize,
}

impl Recycler {
    /// A recycler holding at most `limit` bytes of buffers (by capacity), so at most
    /// `limit / MIN_BYTES` of them.
    pub fn new(limit: usize) -> Self {
        Recycler { bufs: Mutex::new(Kept::default()), limit }
    }

    /// Keeps `buf` for reuse if it is at least [`MIN_BYTES`] and fits the limit, letting the
    /// oldest buffers go to make room. A buffer a reply is still being sent from is kept too,
    /// and reused once nothing else holds it.
    pub fn give(&self, buf: Bytes) {
        let cap = buf.capacity();
        if cap < MIN_BYTES || cap > self.limit {
            return;
        }
        let mut kept = self.bufs.lock();
        while kept.bytes + cap > self.limit {
            let Some(old) = kept.bufs.pop_front() else { break };
            kept.bytes -= old.capacity();
        }
        kept.bytes += cap;
        kept.bufs.push_back(buf);
    }

    /// An empty buffer of capacity at least `len` and at most a quarter more, if one of the
    /// [`SCAN`] newest fits and nothing else holds it.
    pub fn take(&self, len: usize) -> Option<Vec<u8>> {
        if len < MIN_BYTES {
            return None;
        }
        let mut kept = self.bufs.lock();
        let fits = |b: &Bytes| b.capacity() >= len && b.capacity() - len <= len / 4 && Arc::strong_count(b) == 1;
        let n = kept.bufs.len();
        let i = (n.saturating_sub(SCAN)..n).rev().find(|&i| fits(&kept.bufs[i]))?;
        let buf = kept.bufs.remove(i)?;
        kept.bytes -= buf.capacity();
        // Only this queue held it (and no weak references are made), so it unwraps.
        let mut buf = Arc::try_unwrap(buf).ok()?;
        buf.clear();
        Some(buf)
    }

    /// Bytes held (by capacity).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.bufs.lock().bytes
    }

    /// Buffers held.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.bufs.lock().bufs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: usize = MIN_BYTES;

    #[test]
    fn reuses_buffers_of_the_size_within_the_limit() {
        let r = Recycler::new(6 * K);
        r.give(Arc::new(Vec::with_capacity(2 * K)));
        r.give(Arc::new(Vec::with_capacity(2 * K)));
        assert_eq!(r.held(), 4 * K);
        assert!(r.take(3 * K).is_none(), "no buffer of that size");
        assert!(r.take(K).is_none(), "too large a buffer is not taken for a small chunk");
        let out = r.take(2 * K - K / 4).expect("a buffer of 2 K bytes fits 1.75 K");
        assert_eq!((out.len(), out.capacity()), (0, 2 * K));
        assert_eq!((r.count(), r.held()), (1, 2 * K));
    }

    #[test]
    fn a_buffer_still_held_elsewhere_waits() {
        let r = Recycler::new(1 << 20);
        let shared = Arc::new(vec![1u8; K]);
        r.give(shared.clone());
        assert!(r.take(K).is_none(), "a reply still holds it");
        drop(shared);
        let buf = r.take(K).expect("free now");
        assert_eq!((buf.len(), buf.capacity()), (0, K));
    }

    #[test]
    fn small_buffers_are_not_kept_and_the_oldest_make_room() {
        // A million one-element chunks dropped behind a reader: none is kept.
        let r = Recycler::new(16 * K);
        for _ in 0..100_000 {
            r.give(Arc::new(Vec::with_capacity(8)));
        }
        assert_eq!((r.count(), r.held()), (0, 0));
        assert!(r.take(8).is_none());
        // More buffers than fit: the oldest make room for the newest.
        for i in 0..1000 {
            r.give(Arc::new(vec![i as u8; K]));
        }
        assert_eq!((r.count(), r.held()), (16, 16 * K));
        r.give(Arc::new(Vec::with_capacity(2 * K)));
        assert_eq!((r.count(), r.held()), (15, 16 * K), "two of the oldest went");
        assert_eq!(r.take(2 * K).map(|b| b.capacity()), Some(2 * K));
        assert!(r.take(K).is_some(), "one of the newest");
        let before = r.count();
        r.give(Arc::new(Vec::with_capacity(32 * K)));
        assert_eq!(r.count(), before, "over the limit by itself: not kept, and nothing let go");
    }
}
