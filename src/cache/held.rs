//! Values held outside the cache's entries while something uses them — a categorical column's
//! rendered labels — shared by everything that asks for the same key while one is alive, their
//! bytes lent from the budget ([`super::ChunkCache::lend`]) by whoever makes them.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// What a held value is known by: (array id, window offset, a count such as the labels used).
pub type HeldKey = (u32, u64, u64);

/// The values alive now, by key.
#[derive(Default)]
pub struct Held(Mutex<Table>);

/// Weak references by key; entries whose value is gone are swept when the table has doubled
/// since the last sweep (so a store of many categorical columns costs O(1) per value, not a
/// pass over every column each time).
#[derive(Default)]
struct Table {
    values: HashMap<HeldKey, Weak<dyn Any + Send + Sync>>,
    sweep_at: usize,
}

impl Held {
    /// The value alive under `key`, or `make`'s, kept alive by its users from now on. Two
    /// callers missing at once may both make one (the second is used by its caller only);
    /// `make` runs without the table's lock.
    pub fn get_or_make<T: Any + Send + Sync, E>(&self, key: HeldKey, make: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        if let Some(v) = self.0.lock().values.get(&key).and_then(Weak::upgrade).and_then(|v| v.downcast::<T>().ok()) {
            return Ok(v);
        }
        let made = Arc::new(make()?);
        let mut t = self.0.lock();
        if t.values.len() >= t.sweep_at {
            t.values.retain(|_, w| w.strong_count() > 0);
            t.sweep_at = (2 * t.values.len()).max(64);
        }
        let any: Arc<dyn Any + Send + Sync> = made.clone();
        t.values.insert(key, Arc::downgrade(&any));
        Ok(made)
    }

    /// Keys with a live value.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.lock().values.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Entries in the table, live or not yet swept.
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.0.lock().values.len()
    }

    /// True when no value is alive.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_alive_made_again_after() {
        let held = Held::default();
        let a = held.get_or_make((1, 0, 5), || Ok::<_, ()>(vec![1u8])).unwrap();
        let b = held.get_or_make((1, 0, 5), || Ok::<_, ()>(vec![2u8])).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = held.get_or_make((1, 0, 6), || Ok::<_, ()>(vec![3u8])).unwrap();
        assert_eq!(*other, vec![3]);
        drop((a, b, other));
        assert!(held.is_empty());
        let c = held.get_or_make((1, 0, 5), || Ok::<_, ()>(vec![4u8])).unwrap();
        assert_eq!(*c, vec![4]);
        assert!(held.get_or_make((2, 0, 0), || Err::<Vec<u8>, _>("no")).is_err());
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn dead_entries_are_swept_as_the_table_doubles() {
        let held = Held::default();
        let mut alive = Vec::new();
        for i in 0..10_000u64 {
            let v = held.get_or_make((1, i, 0), || Ok::<_, ()>(i)).unwrap();
            if i % 2 == 0 {
                alive.push(v);
            }
        }
        assert_eq!(held.len(), 5_000);
        assert!(held.entries() < 10_000, "swept: {}", held.entries());
        assert!(held.entries() <= 2 * 5_000 + 64);
        for (k, v) in alive.iter().enumerate() {
            let again = held.get_or_make((1, 2 * k as u64, 0), || Ok::<_, ()>(u64::MAX)).unwrap();
            assert!(Arc::ptr_eq(v, &again));
        }
    }
}
