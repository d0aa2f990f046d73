//! Buffers of chunks dropped behind a sequential reader, kept for the chunks decoded next.
//!
//! A decoder hands back each chunk in a freshly allocated buffer, and on this kind of machine
//! faulting fresh pages in costs more than copying the chunk (~0.55 ms per MiB against ~0.1): a
//! stream of chunks through the cache faulted in a new page for every 4 KiB it read. When a
//! sequential reader has passed a chunk ([`super::ChunkCache::drop_behind`]), its buffer comes
//! here instead of going back to the allocator, and the next decoded chunk of about its size is
//! copied into it ([`super::ChunkCache::adopt`]) while the decoder's buffer is freed at once.
//! Bounded: at most `limit` bytes wait here, a part of the budget's in-flight reserve.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Bytes;

/// A bounded stack of reusable buffers.
pub struct Recycler {
    bufs: Mutex<Vec<Bytes>>,
    limit: usize,
}

impl Recycler {
    /// A recycler holding at most `limit` bytes of buffers (by capacity).
    pub fn new(limit: usize) -> Self {
        Recycler { bufs: Mutex::new(Vec::new()), limit }
    }

    /// Keeps `buf` for reuse if there is room, else lets it go. A buffer a reply is still
    /// being sent from is kept too, and reused once nothing else holds it.
    pub fn give(&self, buf: Bytes) {
        let mut bufs = self.bufs.lock();
        if held(&bufs) + buf.capacity() <= self.limit && buf.capacity() > 0 {
            bufs.push(buf);
        }
    }

    /// An empty buffer of capacity at least `len` and at most a quarter more, if one is kept
    /// and nothing else holds it.
    pub fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut bufs = self.bufs.lock();
        let fits = |b: &Bytes| b.capacity() >= len && b.capacity() - len <= len / 4 && Arc::strong_count(b) == 1;
        let i = bufs.iter().rposition(fits)?;
        // Only this list holds it (and no weak references are made), so it unwraps.
        let mut buf = Arc::try_unwrap(bufs.swap_remove(i)).ok()?;
        buf.clear();
        Some(buf)
    }

    /// Bytes held (by capacity).
    pub fn held(&self) -> usize {
        held(&self.bufs.lock())
    }
}

fn held(bufs: &[Bytes]) -> usize {
    bufs.iter().map(|b| b.capacity()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_of_the_size_within_the_limit() {
        let r = Recycler::new(3000);
        r.give(Arc::new(Vec::with_capacity(1000)));
        r.give(Arc::new(Vec::with_capacity(1000)));
        r.give(Arc::new(Vec::with_capacity(2000))); // over the limit: freed
        assert_eq!(r.held(), 2000);
        assert!(r.take(1500).is_none(), "no buffer of that size");
        assert!(r.take(500).is_none(), "too large a buffer is not taken for a small chunk");
        let out = r.take(900).expect("a buffer of 1000 bytes fits 900");
        assert_eq!((out.len(), out.capacity()), (0, 1000));
        assert_eq!(r.held(), 1000);
    }

    #[test]
    fn a_buffer_still_held_elsewhere_waits() {
        let r = Recycler::new(1 << 20);
        let shared = Arc::new(vec![1u8; 1000]);
        r.give(shared.clone());
        assert!(r.take(1000).is_none(), "a reply still holds it");
        drop(shared);
        let buf = r.take(1000).expect("free now");
        assert_eq!((buf.len(), buf.capacity()), (0, 1000));
    }
}
