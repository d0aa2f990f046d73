//! Source-change safety: notices when the store file is replaced or modified under a live
//! mount and closes the [`gate`](crate::storage::gate), so reads fail with `EIO` (and a log line)
//! instead of serving stale or torn bytes.
//!
//! Two mechanisms, both best effort and cheap:
//! - a **read lease** (`F_SETLEASE`) on the file, where the filesystem supports it (local
//!   filesystems, as root or as the file's owner): the kernel holds back any `open` for writing
//!   or `truncate` of the file until we release the lease, and we first close the gate, which
//!   waits for reads in flight. So an in-place writer can never pull pages out from under the
//!   mapping (no `SIGBUS`) and no read sees a half-written file;
//! - a **poll** of `stat(path)` and `fstat(fd)` every second: catches a file renamed over the
//!   store (the old inode stays mapped and intact, but is no longer the store), and modifications
//!   on filesystems without leases (NFS, Lustre, GPFS), where a truncation racing a read is only
//!   narrowed to the poll interval, not excluded.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::storage::gate::Gate;

/// How often the store is `stat`ed.
pub const POLL: Duration = Duration::from_secs(1);

/// What identifies a version of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Version {
    fn of(m: &std::fs::Metadata) -> Self {
        Version { dev: m.dev(), ino: m.ino(), size: m.size(), mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128 }
    }

    /// How `now` differs from `self`, in words.
    fn change(&self, now: &Version) -> Option<String> {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            Some("replaced by another file".into())
        } else if self.size != now.size {
            Some(format!("size changed from {} to {} bytes", self.size, now.size))
        } else if self.mtime_ns != now.mtime_ns {
            Some("modified (mtime changed)".into())
        } else {
            None
        }
    }
}

/// What a mount does once its store went stale (drop the kernel's cached pages of the old
/// version), set once the mount exists. Clones share one hook.
#[derive(Clone, Default)]
pub struct StaleHook(Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>);

impl StaleHook {
    /// Registers what to do once the store went stale (the first registration wins).
    pub fn set(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.0.set(f);
    }

    /// Runs the registered action, if any.
    fn run(&self) {
        if let Some(f) = self.0.get() {
            f();
        }
    }
}

impl std::fmt::Debug for StaleHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "StaleHook(set)" } else { "StaleHook(unset)" })
    }
}

fn close(gate: &Gate, path: &Path, why: &str, hook: &StaleHook) {
    if gate.close(format!("{}: {why}", path.display())) {
        log::error!("the store {} changed under the mount ({why}); every data read now fails with EIO until it is remounted", path.display());
        hook.run();
    }
}

/// Starts watching the store file at `path` (a no-op for directories such as Zarr stores):
/// once it changed, `gate` is closed and `hook` runs.
pub fn start(path: &Path, gate: Arc<Gate>, hook: StaleHook) -> std::io::Result<()> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(());
    }
    let base = Version::of(&meta);
    let file = Arc::new(file);
    if let Err(e) = take_lease(&file, path, gate.clone(), hook.clone()) {
        log::info!("no read lease on {} ({e}); watching it by polling every {}s", path.display(), POLL.as_secs());
    }
    let path: PathBuf = path.to_path_buf();
    std::thread::Builder::new().name("annfs-watch".into()).spawn(move || {
        while !gate.is_stale() {
            std::thread::sleep(POLL);
            let why = match (std::fs::metadata(&path), file.metadata()) {
                (Ok(p), Ok(f)) => base.change(&Version::of(&p)).or_else(|| base.change(&Version::of(&f))),
                (Err(e), _) | (_, Err(e)) => Some(format!("cannot stat it: {e}")),
            };
            if let Some(why) = why {
                close(&gate, &path, &why, &hook);
            }
        }
    })?;
    Ok(())
}

/// Takes a read lease on `file`; on a lease break (someone opens it for writing or truncates
/// it), closes the gate, then releases the lease so the writer proceeds.
fn take_lease(file: &Arc<File>, path: &Path, gate: Arc<Gate>, hook: StaleHook) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGIO])?;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
        let e = std::io::Error::last_os_error();
        signals.handle().close();
        return Err(e);
    }
    log::debug!("read lease taken on {}", path.display());
    let (file, path) = (Arc::clone(file), path.to_path_buf());
    std::thread::Builder::new().name("annfs-lease".into()).spawn(move || {
        for _ in signals.forever() {
            // SIGIO may have other senders: only a pending break counts.
            // SAFETY: F_GETLEASE takes no argument; `file`, moved here, keeps the descriptor open.
            let lease = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLEASE) };
            if lease == libc::F_RDLCK {
                continue;
            }
            close(&gate, &path, "opened for writing or truncated by another process", &hook);
            // SAFETY: F_SETLEASE takes an int argument; `file` still keeps the descriptor open.
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
            break;
        }
    })?;
    Ok(())
}

/// The files of one mount whose reads were refused, each logged once, and the gate that
/// decides.
#[derive(Default)]
pub struct RefusedReads {
    gate: Arc<Gate>,
    logged: parking_lot::Mutex<Vec<String>>,
}

impl RefusedReads {
    /// Refuses reads once `gate` is closed.
    pub fn new(gate: Arc<Gate>) -> Self {
        RefusedReads { gate, logged: Default::default() }
    }

    /// `EIO` (logged once per file, for the first 64 files) if the store changed under the
    /// mount: cached bytes of the old version are not served either.
    pub fn check_fresh(&self, vpath: &str) -> Result<(), fuser::Errno> {
        if !self.gate.is_stale() {
            return Ok(());
        }
        let mut logged = self.logged.lock();
        if logged.len() < 64 && !logged.iter().any(|p| p == vpath) {
            logged.push(vpath.to_string());
            log::error!("{vpath}: read refused with EIO: the store changed under the mount ({})", self.gate.reason().unwrap_or("?"));
        }
        Err(fuser::Errno::EIO)
    }
}
