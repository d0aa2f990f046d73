//! Use of a part of the tree that can be closed when idle (a collection's store): when it was
//! last touched, how many files of it are open, and which kernel directory entries lead to it,
//! so that closing it can make the kernel forget them (and with them every inode below).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Milliseconds since the first call in this process (a cheap, monotonic clock).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The use of one closable subtree. The filesystem touches it on every request that resolves a
/// node below it and counts the files of it held open.
#[derive(Debug)]
pub struct Activity {
    last_ms: AtomicU64,
    open: AtomicU64,
    /// `(directory inode, name)` of each kernel entry that leads to the subtree's root.
    entries: Mutex<Vec<(u64, String)>>,
}

impl Activity {
    /// A subtree used just now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity { last_ms: AtomicU64::new(now_ms()), open: AtomicU64::new(0), entries: Mutex::new(Vec::new()) })
    }

    /// Records a use now.
    pub fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A file below was opened.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// A file below was closed.
    pub fn closed(&self) {
        let _ = self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        self.touch();
    }

    /// True when no file below is open and nothing touched it for `idle`.
    pub fn is_idle(&self, idle: Duration) -> bool {
        self.open.load(Ordering::Relaxed) == 0
            && now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)) >= idle.as_millis() as u64
    }

    /// The kernel knows the subtree's root as `name` in directory inode `dir`.
    pub fn entered_as(&self, dir: u64, name: &str) {
        let mut e = self.entries.lock();
        if !e.iter().any(|(d, n)| *d == dir && n == name) {
            e.push((dir, name.to_string()));
        }
    }

    /// Takes the recorded kernel entries (to invalidate them).
    pub fn take_entries(&self) -> Vec<(u64, String)> {
        std::mem::take(&mut *self.entries.lock())
    }
}

/// How to invalidate the kernel's entry `name` of directory inode `dir`.
pub type InvalidateFn = Box<dyn Fn(u64, &str) + Send + Sync>;

/// Tells the kernel to forget a directory entry `(directory inode, name)`; set by the mount
/// once the FUSE session runs (until then, and for `annfs cat`, it does nothing).
#[derive(Clone, Default)]
pub struct EntryInvalidator(Arc<OnceLock<InvalidateFn>>);

impl EntryInvalidator {
    /// Registers how to invalidate an entry (the first registration wins).
    pub fn set(&self, f: InvalidateFn) {
        let _ = self.0.set(f);
    }

    /// Invalidates entry `name` of directory inode `dir`, if a mount registered how.
    pub fn invalidate(&self, dir: u64, name: &str) {
        if let Some(f) = self.0.get() {
            f(dir, name);
        }
    }
}

impl std::fmt::Debug for EntryInvalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "EntryInvalidator(set)" } else { "EntryInvalidator(unset)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_after_quiet_period_with_nothing_open() {
        let a = Activity::new();
        assert!(!a.is_idle(Duration::from_secs(60)));
        assert!(a.is_idle(Duration::ZERO));
        a.opened();
        assert!(!a.is_idle(Duration::ZERO), "an open file keeps it in use");
        a.closed();
        a.closed();
        assert!(a.is_idle(Duration::ZERO), "extra closes do not underflow");
        a.entered_as(1, "a.h5ad");
        a.entered_as(1, "a.h5ad");
        assert_eq!(a.take_entries(), vec![(1, "a.h5ad".to_string())]);
        assert!(a.take_entries().is_empty());
    }
}
