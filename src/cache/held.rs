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
pub struct Held(Mutex<HashMap<HeldKey, Weak<dyn Any + Send + Sync>>>);

impl Held {
    /// The value alive under `key`, or `make`'s, kept alive by its users from now on. Two
    /// callers missing at once may both make one (the second is used by its caller only);
    /// `make` runs without the table's lock.
    pub fn get_or_make<T: Any + Send + Sync, E>(&self, key: HeldKey, make: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        if let Some(v) = self.0.lock().get(&key).and_then(Weak::upgrade).and_then(|v| v.downcast::<T>().ok()) {
            return Ok(v);
        }
        let made = Arc::new(make()?);
        let mut map = self.0.lock();
        map.retain(|_, w| w.strong_count() > 0);
        let any: Arc<dyn Any + Send + Sync> = made.clone();
        map.insert(key, Arc::downgrade(&any));
        Ok(made)
    }

    /// Keys with a live value.
    pub fn len(&self) -> usize {
        self.0.lock().values().filter(|w| w.strong_count() > 0).count()
    }

    /// True when no value is alive.
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
}
