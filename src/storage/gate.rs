//! The source gate: once the store file changes under a live mount, every further read of it
//! fails instead of returning stale or torn bytes.
//!
//! Backends take an [`enter`] guard around each access to the file (pread or library). A
//! watcher (see `fs::source_watch`) calls [`close`] when the file is replaced, modified, or
//! about to be opened for writing: `close` marks the store stale, then waits for the reads in
//! flight to finish, so that nothing reads the file once it returns. One store per process,
//! hence one process-wide gate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::{RwLock, RwLockReadGuard};

use super::{StorageError, StorageResult};

static STALE: AtomicBool = AtomicBool::new(false);
static LOCK: RwLock<()> = RwLock::new(());
static REASON: OnceLock<String> = OnceLock::new();

/// Held while a read touches the store file.
pub struct Guard(#[allow(dead_code)] RwLockReadGuard<'static, ()>);

/// Whether the store changed under the mount (then every data read fails).
pub fn is_stale() -> bool {
    STALE.load(Ordering::Acquire)
}

/// Why the store is stale, if it is.
pub fn reason() -> Option<&'static str> {
    REASON.get().map(String::as_str)
}

fn stale_error(path: &str) -> StorageError {
    let why = reason().unwrap_or("changed");
    StorageError::Io {
        path: path.to_string(),
        source: std::io::Error::other(format!("the store file changed under the mount ({why}); remount to read it")),
    }
}

/// Enters a read of the store on behalf of element `path`; fails once the store is stale.
pub fn enter(path: &str) -> StorageResult<Guard> {
    if is_stale() {
        return Err(stale_error(path));
    }
    // Recursive: a read may nest another read on the same thread while `close` waits.
    let g = LOCK.read_recursive();
    if is_stale() {
        return Err(stale_error(path));
    }
    Ok(Guard(g))
}

/// Marks the store stale for `reason` and waits until no read is using it. Returns `false` if
/// it was already stale.
pub fn close(reason: String) -> bool {
    let first = REASON.set(reason).is_ok();
    STALE.store(true, Ordering::Release);
    drop(LOCK.write());
    first
}
