//! Mounting and unmounting: options, readiness, signals, and leaving no dead mount behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};


/// How to mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Source name shown in `/proc/mounts`.
    pub fsname: String,
    /// Let every user access the mount (`allow_other`).
    pub allow_other: bool,
    /// Let root access the mount (`allow_root`).
    pub allow_root: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Extra kernel mount options passed through as given (SELinux `context=...`).
    pub extra: Vec<String>,
    /// Mount read-write (an overlay directory takes the changes); read-only otherwise.
    pub writable: bool,
    /// Set once mounted: what to do when the store changes under this mount (the store's
    /// [`source_watch`](super::source_watch) runs it).
    pub on_stale: super::source_watch::StaleHook,
    /// Set once mounted: how to make the kernel forget a directory entry (a collection closes
    /// an idle store through it).
    pub invalidator: crate::views::activity::EntryInvalidator,
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point is unusable.
    #[error("mount point {path}: {reason}")]
    MountPoint {
        /// The mount point.
        path: String,
        /// Why.
        reason: String,
    },
    /// `allow_other` asked for by a non-root user while `/etc/fuse.conf` lacks `user_allow_other`.
    #[error("allow_other: as a non-root user (uid {uid}) this needs a line `user_allow_other` in /etc/fuse.conf \
             (add it as root), or mount as root")]
    AllowOther {
        /// The mounting user.
        uid: u32,
    },
    /// The mount did not answer requests after mounting.
    #[error("the mount at {path} does not answer: {reason}")]
    NotAnswering {
        /// The mount point.
        path: String,
        /// Why.
        reason: String,
    },
    /// The kernel or fusermount refused the mount.
    #[error("cannot mount at {path}: {source}")]
    Mount {
        /// The mount point.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn user_allow_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .map(|s| s.lines().any(|l| l.trim() == "user_allow_other"))
        .unwrap_or(false)
}

/// Fails early, with a clear message, when `allow_other` cannot work for this user.
pub fn check_allow_other(allow_other: bool) -> Result<(), MountError> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if allow_other && uid != 0 && !user_allow_other() {
        return Err(MountError::AllowOther { uid });
    }
    Ok(())
}

/// Whether `mp` is a directory, without triggering an automount: an autofs placeholder (a
/// systemd `.automount` or autofs trigger) is a valid mount point and is mounted over.
fn is_dir_no_automount(mp: &Path) -> std::io::Result<bool> {
    let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `libc::stat` is plain integers, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    let rc = unsafe { libc::fstatat(libc::AT_FDCWD, c.as_ptr(), &mut st, libc::AT_NO_AUTOMOUNT) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Waits until the mount at `mp` answers a request (its root lists), up to `limit`.
fn wait_answers(mp: &Path, limit: Duration) -> Result<(), MountError> {
    let start = std::time::Instant::now();
    loop {
        match std::fs::read_dir(mp).map(|mut d| d.next().is_some()) {
            // Any answer from our root counts, even a refusal (e.g. a `dir_mode` without access).
            Ok(true) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
            Ok(false) if start.elapsed() > limit => {
                return Err(MountError::NotAnswering { path: mp.display().to_string(), reason: "empty root".into() })
            }
            Err(e) if start.elapsed() > limit => {
                return Err(MountError::NotAnswering { path: mp.display().to_string(), reason: e.to_string() })
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// What a signal asks for.
enum Event {
    /// SIGINT / SIGTERM: unmount and exit.
    Stop(i32),
    /// SIGHUP: reopen the log file.
    Reload,
}

/// Routes SIGINT, SIGTERM and SIGHUP to a channel (installed before mounting, so an early
/// SIGTERM still unmounts cleanly).
fn signal_events() -> Option<mpsc::Receiver<Event>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot install signal handlers: {e}");
            return None;
        }
    };
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("annfs-signals".into()).spawn(move || {
        for sig in signals.forever() {
            let ev = if sig == SIGHUP { Event::Reload } else { Event::Stop(sig) };
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    spawned.ok().map(|_| rx)
}

/// Mounts `fs`, calls `on_ready` once the mount answers, then serves until SIGINT/SIGTERM or
/// an external unmount (calling `on_reload` on SIGHUP); returns after the mount is gone.
pub fn serve<F: super::Served>(
    fs: F,
    cfg: &MountConfig,
    on_ready: impl FnOnce(),
    on_reload: impl Fn(),
) -> Result<(), MountError> {
    let mp = &cfg.mountpoint;
    let is_dir = is_dir_no_automount(mp).map_err(|e| MountError::MountPoint { path: mp.display().to_string(), reason: e.to_string() })?;
    if !is_dir {
        return Err(MountError::MountPoint { path: mp.display().to_string(), reason: "not a directory".into() });
    }
    check_allow_other(cfg.allow_other)?;
    // SAFETY: geteuid takes no arguments and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut options = vec![
        if cfg.writable { MountOption::RW } else { MountOption::RO },
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("annfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    options.extend(cfg.extra.iter().map(|o| MountOption::CUSTOM(o.clone())));
    let acl = if cfg.allow_other {
        SessionACL::All
    } else if cfg.allow_root || is_root || user_allow_other() {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    if acl != SessionACL::Owner {
        // The kernel side unmounts when this process dies, even by SIGKILL.
        options.push(MountOption::AutoUnmount);
    } else {
        log::warn!("auto_unmount needs `user_allow_other` in /etc/fuse.conf; a killed daemon may leave a stale mount");
    }
    let config = {
        let mut c = Config::default();
        c.mount_options = options;
        c.acl = acl;
        c.n_threads = Some(cfg.threads.max(1));
        c.clone_fd = cfg.threads > 1;
        c
    };
    let events = signal_events();
    let inode_end = fs.inode_end();
    // Spliced replies go to the descriptor requests are read from: with one descriptor shared
    // by the FUSE threads (no cloned ones), a copy of it serves.
    let splice_hook = if config.clone_fd { None } else { fs.splice_hook() };
    let failed = |e| MountError::Mount { path: mp.display().to_string(), source: e };
    let session = fuser::Session::new(fs, mp, &config).map_err(failed)?;
    if let Some(hook) = splice_hook {
        use std::os::fd::AsFd;
        match session.as_fd().try_clone_to_owned() {
            Ok(fd) => hook(fd),
            Err(e) => log::debug!("read replies are copied: no copy of the FUSE descriptor: {e}"),
        }
    }
    let session = session.spawn().map_err(failed)?;
    if let Err(e) = wait_answers(mp, Duration::from_secs(30)) {
        unmount(mp);
        return Err(e);
    }
    raise_readahead(mp);
    let notifier = session.notifier();
    cfg.on_stale.set(Box::new(move || {
        // Pages of the old version cached by the kernel (FOPEN_KEEP_CACHE) must not be served.
        for ino in 1..inode_end() {
            let _ = notifier.inval_inode(fuser::INodeNo(ino), 0, -1);
        }
    }));
    let notifier = session.notifier();
    cfg.invalidator.set(Box::new(move |dir, name| {
        if let Err(e) = notifier.inval_entry(fuser::INodeNo(dir), std::ffi::OsStr::new(name)) {
            log::debug!("invalidating entry {name} of inode {dir}: {e}");
        }
    }));
    log::info!("mounted at {}", mp.display());
    on_ready();

    let (_no_signals, idle) = mpsc::channel();
    let rx = events.unwrap_or(idle);
    let dev = std::fs::metadata(mp).map(|m| m.dev()).ok();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Reload) => {
                log::info!("SIGHUP: reopening the log");
                on_reload();
            }
            Ok(Event::Stop(sig)) => {
                log::info!("signal {sig} received, unmounting {}", mp.display());
                unmount(mp);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if session.guard.is_finished() => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // A lazily detached mount stays connected while files are open: give the session a moment,
    // then abort the connection so open descriptors fail instead of keeping the daemon alive.
    if !wait_finished(&session, Duration::from_secs(2)) {
        if let Some(dev) = dev {
            abort_connection(dev);
        }
        if !wait_finished(&session, Duration::from_secs(2)) {
            log::warn!("the FUSE session did not end; exiting anyway");
            std::mem::forget(session);
            return Ok(());
        }
    }
    if let Err(e) = session.join() {
        log::warn!("session ended with: {e}");
    }
    // Read-ahead of a remote store may still be fetching: let it land in the disk cache.
    if !crate::storage::range::wait_background(Duration::from_secs(2)) {
        log::debug!("background fetches still running at exit");
    }
    log::info!("unmounted {}", mp.display());
    Ok(())
}

fn wait_finished(session: &fuser::BackgroundSession, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while !session.guard.is_finished() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Aborts the FUSE connection of device `dev` through fusectl (best effort; needs root).
fn abort_connection(dev: u64) {
    let path = format!("/sys/fs/fuse/connections/{}/abort", libc::minor(dev));
    match std::fs::write(&path, "1") {
        Ok(()) => log::info!("aborted the FUSE connection ({path}) to release open files"),
        Err(e) => log::debug!("cannot abort via {path}: {e}"),
    }
}

/// Unmounts `mp`: `umount2` as root, else `fusermount3 -u`; lazily if it is busy.
pub fn unmount(mp: &Path) {
    let try_unmount = |lazy: bool| -> bool {
        // SAFETY: geteuid takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()) else { return false };
            let flags = if lazy { libc::MNT_DETACH } else { 0 };
            // SAFETY: `c` is a NUL-terminated path alive for the call; umount2 only reads it.
            unsafe { libc::umount2(c.as_ptr(), flags) == 0 }
        } else {
            let flag = if lazy { "-uz" } else { "-u" };
            Command::new("fusermount3").arg(flag).arg(mp).status().map(|s| s.success()).unwrap_or(false)
        }
    };
    if !try_unmount(false) {
        log::warn!("{} is busy; detaching it lazily", mp.display());
        if !try_unmount(true) {
            log::error!("could not unmount {}", mp.display());
        }
    }
}

/// Raises the kernel read-ahead of the mount's backing device to 1 MiB, so sequential readers
/// send large requests (best effort: needs root).
fn raise_readahead(mp: &Path) {
    let Ok(meta) = std::fs::metadata(mp) else { return };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&path, "1024") {
        Ok(()) => log::debug!("set {path} to 1024"),
        Err(e) => log::debug!("cannot raise read-ahead via {path}: {e}"),
    }
}
