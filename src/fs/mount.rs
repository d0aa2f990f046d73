//! Mounting and unmounting: options, readiness, signals, and leaving no dead mount behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use super::AnnFs;

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

/// Mounts `fs`, calls `on_ready` once the mount answers, then serves until SIGINT/SIGTERM or
/// an external unmount; returns after the mount is gone.
pub fn serve(fs: AnnFs, cfg: &MountConfig, on_ready: impl FnOnce()) -> Result<(), MountError> {
    let mp = &cfg.mountpoint;
    let meta = std::fs::metadata(mp).map_err(|e| MountError::MountPoint { path: mp.display().to_string(), reason: e.to_string() })?;
    if !meta.is_dir() {
        return Err(MountError::MountPoint { path: mp.display().to_string(), reason: "not a directory".into() });
    }
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut options = vec![
        MountOption::RO,
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("annfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
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
    let session = fuser::spawn_mount(fs, mp, &config)
        .map_err(|e| MountError::Mount { path: mp.display().to_string(), source: e })?;
    raise_readahead(mp);
    log::info!("mounted at {}", mp.display());
    on_ready();

    let (tx, rx) = mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        log::warn!("cannot install signal handler: {e}");
    }
    let dev = std::fs::metadata(mp).map(|m| m.dev()).ok();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => {
                log::info!("signal received, unmounting {}", mp.display());
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
        if unsafe { libc::geteuid() } == 0 {
            let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()) else { return false };
            let flags = if lazy { libc::MNT_DETACH } else { 0 };
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
