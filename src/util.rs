//! Small helpers shared across layers.

use std::sync::OnceLock;

use parking_lot::Mutex;

/// Steps the multi-index `idx` to the next element of an array of `shape` in C order (last
/// axis fastest); false when it wrapped around to all zeros (the last element was passed).
pub fn advance_c_order(idx: &mut [u64], shape: &[u64]) -> bool {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < shape[d] {
            return true;
        }
        idx[d] = 0;
    }
    false
}

/// Most bytes of store-controlled text (an element path, an attribute's value) shown in one
/// error message or log line.
pub const CLIP_BYTES: usize = 512;

/// `s` for a message: whole when at most [`CLIP_BYTES`] long, else its first bytes (cut at a
/// character boundary) and how long it was — a damaged store can name an element with an
/// attribute of 50 MB, which must not become a 50 MB log line.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= CLIP_BYTES {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..char_floor(s, CLIP_BYTES)], s.len()))
}

/// The largest index at most `i` (and at most `s.len()`) that starts a character of `s`: where
/// `s` may be cut without splitting one.
pub fn char_floor(s: &str, i: usize) -> usize {
    let mut end = i.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

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

/// Asks the kernel to back the whole 2 MiB pages inside `buf` with huge pages (Linux, where
/// transparent huge pages are on `madvise`; a hint that changes no byte). For large buffers
/// written at many scattered places at once.
pub fn advise_huge_pages(buf: &[u8]) {
    const HUGE: usize = 2 << 20;
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (buf.as_ptr() as usize + buf.len()) & !(HUGE - 1);
    if end > start {
        // SAFETY: `[start, end)` lies inside `buf`'s allocation; MADV_HUGEPAGE only sets a flag
        // on the mapping (no data is changed or freed). Failure (no THP) is harmless.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_text_in_messages_is_clipped() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(CLIP_BYTES);
        let c = clip(&long);
        assert!(c.len() < CLIP_BYTES + 32 && c.ends_with(&format!("… ({} bytes)", long.len())), "{c}");
        let e = crate::storage::StorageError::corrupt("x".repeat(50_000_000), "y".repeat(1 << 20));
        assert!(e.to_string().len() < 2 * CLIP_BYTES + 100);
        let m = crate::model::ModelError::invalid("p".repeat(1 << 20), "dataframe index is missing");
        assert!(m.to_string().ends_with(": dataframe index is missing") && m.to_string().len() < CLIP_BYTES + 100);
    }

    #[test]
    fn failures_are_retried_and_successes_kept() {
        let cell = RetryOnce::new();
        assert_eq!(cell.get_or_try_init(|| Err::<u32, _>("transient")), Err("transient"));
        assert!(cell.get().is_none());
        assert_eq!(cell.get_or_try_init(|| Ok::<_, &str>(7)), Ok(&7));
        assert_eq!(cell.get_or_try_init(|| Err::<u32, _>("not called")), Ok(&7));
    }

    #[test]
    fn visits_every_index_in_c_order_then_wraps() {
        let shape = [2u64, 3];
        let mut idx = [0u64, 0];
        let mut seen = vec![idx];
        while advance_c_order(&mut idx, &shape) {
            seen.push(idx);
        }
        assert_eq!(seen, vec![[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
        assert_eq!(idx, [0, 0]);
        let mut none: [u64; 0] = [];
        assert!(!advance_c_order(&mut none, &[]));
    }
}
