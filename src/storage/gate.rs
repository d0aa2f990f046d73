//! The source gate: once the store file changes under a live mount, every further read of it
//! fails instead of returning stale or torn bytes.
//!
//! Each opened store has its own [`Gate`] (`Store::gate`). Backends take a [`Gate::enter`]
//! guard around each access to the file (pread or library). A watcher (see
//! `fs::source_watch`) calls [`Gate::close`] when the file is replaced, modified, or about to be
//! opened for writing: `close` marks the store stale, then waits for the reads in flight to
//! finish, so that nothing reads the file once it returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::{RwLock, RwLockReadGuard};

use super::{StorageError, StorageResult};

/// The gate of one store.
#[derive(Debug, Default)]
pub struct Gate {
    stale: AtomicBool,
    lock: RwLock<()>,
    reason: OnceLock<String>,
}

/// Held while a read touches the store file.
pub struct Guard<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

impl Gate {
    /// Whether the store changed under the mount (then every data read fails).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// Why the store is stale, if it is.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    fn stale_error(&self, path: &str) -> StorageError {
        let why = self.reason().unwrap_or("changed");
        StorageError::Io {
            path: path.to_string(),
            source: std::io::Error::other(format!("the store file changed under the mount ({why}); remount to read it")),
        }
    }

    /// Enters a read of the store on behalf of element `path`; fails once the store is stale.
    pub fn enter(&self, path: &str) -> StorageResult<Guard<'_>> {
        if self.is_stale() {
            return Err(self.stale_error(path));
        }
        // Recursive: a read may nest another read on the same thread while `close` waits.
        let g = self.lock.read_recursive();
        if self.is_stale() {
            return Err(self.stale_error(path));
        }
        Ok(Guard(g))
    }

    /// Marks the store stale for `reason` and waits until no read is using it. Returns `false`
    /// if it was already stale.
    pub fn close(&self, reason: String) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.stale.store(true, Ordering::Release);
        drop(self.lock.write());
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_waits_for_reads_and_refuses_new_ones() {
        let g = std::sync::Arc::new(Gate::default());
        assert!(g.enter("/X").is_ok() && !g.is_stale());
        let reading = g.enter("/X").ok();
        let g2 = g.clone();
        let closer = std::thread::spawn(move || g2.close("replaced".into()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!closer.is_finished(), "close waits for the read in flight");
        drop(reading);
        assert!(closer.join().unwrap());
        let e = g.enter("/X").err().unwrap().to_string();
        assert!(e.contains("/X") && e.contains("replaced"), "{e}");
        assert!(!g.close("again".into()));
        // Another store's gate is unaffected.
        assert!(Gate::default().enter("/X").is_ok());
    }
}
