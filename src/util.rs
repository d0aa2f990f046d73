//! Small helpers shared across layers.

use std::sync::OnceLock;

use parking_lot::Mutex;

/// A value computed once on first use — but only a success is kept: a failure (a chunk that
/// could not be read, a network error) is returned to that caller and the next caller tries
/// again. Concurrent first callers wait for one computation instead of repeating it.
pub struct RetryOnce<T> {
    value: OnceLock<T>,
    computing: Mutex<()>,
}

impl<T> Default for RetryOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RetryOnce<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        RetryOnce { value: OnceLock::new(), computing: Mutex::new(()) }
    }

    /// The value if it has been computed.
    pub fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// The value, computing it with `f` if no earlier call succeeded.
    pub fn get_or_try_init<E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let _one = self.computing.lock();
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let v = f()?;
        Ok(self.value.get_or_init(|| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_retried_and_successes_kept() {
        let cell = RetryOnce::new();
        assert_eq!(cell.get_or_try_init(|| Err::<u32, _>("transient")), Err("transient"));
        assert!(cell.get().is_none());
        assert_eq!(cell.get_or_try_init(|| Ok::<_, &str>(7)), Ok(&7));
        assert_eq!(cell.get_or_try_init(|| Err::<u32, _>("not called")), Ok(&7));
    }
}
