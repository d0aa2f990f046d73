//! Ids naming the entries of one cache: store arrays, derived arrays, rendered files and
//! computed plans each get ids from their own range, handed out by the cache they are cached
//! in. They live with the cache (one per mount; a collection's stores share it), not in the
//! process, so two mounts in one process each count on their own.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Hands out array ids (cache keys [`Key::Chunk`](super::Key::Chunk) and
/// [`Key::Strings`](super::Key::Strings)) counting up.
#[derive(Default)]
pub struct ArrIds(AtomicU32);

impl ArrIds {
    /// Ids from `first` up (a range kept apart from the store's arrays, for derived arrays).
    pub fn starting_at(first: u32) -> Self {
        ArrIds(AtomicU32::new(first))
    }

    /// The next id.
    pub fn next(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// First id of derived arrays: they count down from here, so they never meet the ids
/// [`ArrIds`] hand out counting up.
const FIRST_DERIVED: u32 = u32::MAX;

/// First id of index arrays (transposed indexes): far above the store arrays' ids, counting up.
const FIRST_INDEX_ARRAY: u32 = 0xC000_0000;

/// First plan id: cache keys `Rendered(id, 0)`, from a range file ids never reach.
const FIRST_PLAN: u64 = 1 << 62;

/// The id counters of one cache.
pub struct KeyIds {
    /// Ids of store arrays (from 0 up).
    pub store_arrays: ArrIds,
    /// Ids of the arrays of transposed indexes (from `0xC000_0000` up; one counter for every
    /// store sharing the cache, so two stores' indexes never share keys).
    pub index_arrays: ArrIds,
    derived: AtomicU32,
    files: AtomicU64,
    plans: AtomicU64,
}

impl Default for KeyIds {
    fn default() -> Self {
        KeyIds {
            store_arrays: ArrIds::default(),
            index_arrays: ArrIds::starting_at(FIRST_INDEX_ARRAY),
            derived: AtomicU32::new(FIRST_DERIVED),
            files: AtomicU64::new(1),
            plans: AtomicU64::new(FIRST_PLAN),
        }
    }
}

impl KeyIds {
    /// A fresh id of a derived array (a gathered selection, a computed pointer array).
    pub fn derived_array(&self) -> u32 {
        self.derived.fetch_sub(1, Ordering::Relaxed)
    }

    /// A fresh id for cache keys of a virtual file's rendered blocks.
    pub fn file(&self) -> u64 {
        self.files.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh id of a computed plan.
    pub fn plan(&self) -> u64 {
        self.plans.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_apart_and_counters_per_instance() {
        let (a, b) = (KeyIds::default(), KeyIds::default());
        assert_eq!(a.store_arrays.next(), 0);
        assert_eq!(a.store_arrays.next(), 1);
        assert_eq!(b.store_arrays.next(), 0, "a second cache counts on its own");
        assert_eq!(a.derived_array(), u32::MAX);
        assert_eq!(a.derived_array(), u32::MAX - 1);
        assert_eq!((a.file(), a.file()), (1, 2));
        assert_eq!(b.file(), 1);
        assert_eq!(a.plan(), 1 << 62);
    }
}
