//! The overlay's upper directory: the writable directory DIR of `--overlay DIR` (as an
//! overlayfs "upperdir"), holding what was written over the read-only virtual tree. Not to be
//! confused with [`crate::storage::Store`], the opened AnnData store that tree is read from.
//!
//! Layout: `DIR/<virtual path>` holds upper files, directories and symlinks exactly where the
//! mount shows them. Bookkeeping names all start with [`RESERVED`] and are hidden from the mount:
//! - `.annfs-ovl-wh.<name>`: an empty file recording that the virtual entry `<name>` of this
//!   directory was deleted or renamed away (a whiteout); an upper entry of the same name wins;
//! - `.annfs-ovl-opaque`: inside an upper directory, hides every virtual entry of the same path
//!   (a directory removed and made again);
//! - `DIR/.annfs-ovl-work/`: temp files of copy-ups and directories being deleted; emptied on
//!   every mount. Everything lands by `rename` from here, so a crash never shows a torn file.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{fsync, mkdirat, openat, renameat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

pub use super::resolve::RESERVED;
use super::resolve::{dir_flags, open_dir, open_subdir, stat_opt};

/// Prefix of whiteout markers.
pub const WHITEOUT: &str = ".annfs-ovl-wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE: &str = ".annfs-ovl-opaque";
/// Name of the work directory.
pub const WORK: &str = ".annfs-ovl-work";

/// Why the upper directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("overlay directory {path}: {source}")]
pub struct UpperDirError {
    /// The directory.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// An open upper directory (the overlay's writable DIR).
pub struct UpperDir {
    root: OwnedFd,
    work: OwnedFd,
    path: PathBuf,
    counter: AtomicU64,
}

/// One entry of an upper directory listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Visible entries (name, type), bookkeeping excluded.
    pub entries: Vec<(String, FileType)>,
    /// Names whited out.
    pub whiteouts: Vec<String>,
    /// The directory hides the virtual entries below it.
    pub opaque: bool,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

impl UpperDir {
    /// Opens (creating if needed) the overlay directory `path` and empties its work directory.
    pub fn open(path: &Path) -> Result<UpperDir, UpperDirError> {
        let err = |source: std::io::Error| UpperDirError { path: path.display().to_string(), source };
        std::fs::create_dir_all(path).map_err(err)?;
        let root = openat(rustix::fs::CWD, path, dir_flags(), Mode::empty()).map_err(|e| err(io(e)))?;
        match mkdirat(&root, WORK, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(err(io(e))),
        }
        let work = open_subdir(&root, WORK).map_err(|e| err(io(e)))?;
        let upper = UpperDir { root, work, path: path.to_path_buf(), counter: AtomicU64::new(0) };
        // Leftovers of a crash: half-copied temp files and half-deleted directories.
        for (name, _) in list_raw(&upper.work).map_err(|e| err(io(e)))? {
            if let Err(e) = remove_tree(&upper.work, &name) {
                log::warn!("overlay: cannot remove leftover {WORK}/{name}: {e}");
            }
        }
        Ok(upper)
    }

    /// The directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory fd.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens the upper directory at `comps` (`ENOENT` if it does not exist).
    pub fn dir(&self, comps: &[&str]) -> Result<OwnedFd, Errno> {
        open_dir(&self.root, comps)
    }

    /// Opens the upper directory at `comps`, creating missing components with `mode` (and
    /// `owner`, when given). A non-directory in the way fails with `ENOTDIR`/`ELOOP`.
    pub fn ensure_dir(&self, comps: &[&str], mode: u32, owner: Option<(u32, u32)>) -> Result<OwnedFd, Errno> {
        let mut cur = open_dir(&self.root, &[])?;
        for c in comps {
            cur = match open_subdir(&cur, c) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match mkdirat(&cur, *c, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                    let fd = open_subdir(&cur, c)?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                    if let Some((u, g)) = owner {
                        let _ = rustix::fs::fchown(&fd, Some(uid(u)), Some(gid(g)));
                    }
                    fd
                }
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }

    /// A fresh temp name in the work directory.
    pub fn temp_name(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("tmp.{}.{n}", std::process::id())
    }

    /// Creates an empty temp file in the work directory.
    pub fn temp_file(&self, mode: u32) -> Result<(String, std::fs::File), Errno> {
        let name = self.temp_name();
        let fd = openat(
            &self.work,
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok((name, std::fs::File::from(fd)))
    }

    /// Creates a directory in the work directory (to be renamed into place).
    pub fn temp_dir(&self, mode: u32) -> Result<(String, OwnedFd), Errno> {
        let name = self.temp_name();
        mkdirat(&self.work, name.as_str(), Mode::from_raw_mode(mode))?;
        let fd = open_subdir(&self.work, &name)?;
        Ok((name, fd))
    }

    /// Renames the work entry `tmp` to `name` in `dir` (atomically replacing a file there) and
    /// makes the rename durable.
    pub fn commit(&self, tmp: &str, dir: impl AsFd, name: &str) -> Result<(), Errno> {
        renameat(&self.work, tmp, &dir, name)?;
        fsync(&dir)
    }

    /// Drops a work entry (a temp that will not be committed).
    pub fn discard(&self, tmp: &str) {
        let _ = remove_tree(&self.work, tmp);
    }

    /// Moves `name` out of `dir` into the work directory and deletes it there: the entry
    /// disappears atomically, however long the deletion takes.
    pub fn trash(&self, dir: impl AsFd, name: &str) -> Result<(), Errno> {
        let tmp = self.temp_name();
        renameat(&dir, name, &self.work, tmp.as_str())?;
        fsync(&dir)?;
        remove_tree(&self.work, &tmp)
    }
}

/// A uid for rustix.
pub fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

/// A gid for rustix.
pub fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

fn whiteout_name(name: &str) -> String {
    format!("{WHITEOUT}{name}")
}

/// True when `dir` holds a whiteout for `name`.
pub fn is_whiteout(dir: impl AsFd, name: &str) -> Result<bool, Errno> {
    Ok(stat_opt(dir, &whiteout_name(name))?.is_some())
}

/// True when the upper directory `dir` is opaque.
pub fn is_opaque(dir: impl AsFd) -> Result<bool, Errno> {
    Ok(stat_opt(dir, OPAQUE)?.is_some())
}

/// Records a whiteout for `name` in `dir`, durably (an empty file appears atomically).
pub fn add_whiteout(dir: impl AsFd, name: &str) -> Result<(), Errno> {
    let wh = whiteout_name(name);
    if wh.len() > 255 {
        return Err(Errno::NAMETOOLONG);
    }
    match openat(&dir, wh.as_str(), OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600)) {
        Ok(_) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    fsync(&dir)
}

/// Removes the whiteout for `name` in `dir`, if any.
pub fn remove_whiteout(dir: impl AsFd, name: &str) -> Result<(), Errno> {
    match unlinkat(&dir, whiteout_name(name).as_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Marks the upper directory `dir` opaque.
pub fn add_opaque(dir: impl AsFd) -> Result<(), Errno> {
    match openat(&dir, OPAQUE, OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600)) {
        Ok(_) => fsync(&dir),
        Err(e) => Err(e),
    }
}

/// Removes every bookkeeping entry of `dir` (before deleting or replacing it).
pub fn clear_bookkeeping(dir: impl AsFd) -> Result<(), Errno> {
    for (name, _) in list_raw(&dir)? {
        if name.starts_with(RESERVED) {
            remove_tree(&dir, &name)?;
        }
    }
    Ok(())
}

/// Every entry of `dir` but `.` and `..`, with non-UTF-8 names skipped.
fn list_raw(dir: impl AsFd) -> Result<Vec<(String, FileType)>, Errno> {
    let mut out = Vec::new();
    for e in Dir::read_from(&dir)? {
        let e = e?;
        let Ok(name) = e.file_name().to_str() else { continue };
        if name == "." || name == ".." {
            continue;
        }
        let mut ft = e.file_type();
        if ft == FileType::Unknown {
            ft = stat_opt(&dir, name)?.map(|s| super::resolve::kind(&s)).unwrap_or(FileType::Unknown);
        }
        out.push((name.to_string(), ft));
    }
    Ok(out)
}

/// The upper listing of `dir`: visible entries, whiteouts and opacity.
pub fn list(dir: impl AsFd) -> Result<Listed, Errno> {
    let mut l = Listed { entries: Vec::new(), whiteouts: Vec::new(), opaque: false };
    for (name, ft) in list_raw(dir)? {
        if let Some(w) = name.strip_prefix(WHITEOUT) {
            l.whiteouts.push(w.to_string());
        } else if name == OPAQUE {
            l.opaque = true;
        } else if !name.starts_with(RESERVED) {
            l.entries.push((name, ft));
        }
    }
    l.entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(l)
}

/// Deletes `name` in `dir` and everything below it, never following symlinks.
pub fn remove_tree(dir: impl AsFd, name: &str) -> Result<(), Errno> {
    let Some(st) = stat_opt(&dir, name)? else { return Ok(()) };
    if super::resolve::kind(&st) == FileType::Directory {
        let sub = open_subdir(&dir, name)?;
        for (child, _) in list_raw(&sub)? {
            remove_tree(&sub, &child)?;
        }
        unlinkat(&dir, name, AtFlags::REMOVEDIR)
    } else {
        unlinkat(&dir, name, AtFlags::empty())
    }
}

/// A C string of `s` (names are checked to hold no NUL before they get here).
pub fn cstr(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::INVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_opaque_and_work_cleanup() {
        let d = tempfile::tempdir().unwrap();
        let s = UpperDir::open(d.path()).unwrap();
        let (tmp, _f) = s.temp_file(0o644).unwrap();
        drop(s);
        assert!(d.path().join(WORK).join(&tmp).exists());
        let s = UpperDir::open(d.path()).unwrap();
        assert!(!d.path().join(WORK).join(&tmp).exists(), "leftover temp removed on open");
        let sub = s.ensure_dir(&["a", "b"], 0o755, None).unwrap();
        add_whiteout(&sub, "x").unwrap();
        add_whiteout(&sub, "x").unwrap();
        assert!(is_whiteout(&sub, "x").unwrap());
        assert!(!is_opaque(&sub).unwrap());
        add_opaque(&sub).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"1").unwrap();
        let l = list(&sub).unwrap();
        assert!(l.opaque);
        assert_eq!(l.whiteouts, vec!["x"]);
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].0, "f");
        remove_whiteout(&sub, "x").unwrap();
        assert!(!is_whiteout(&sub, "x").unwrap());
        let top = s.dir(&["a"]).unwrap();
        s.trash(&top, "b").unwrap();
        assert!(!d.path().join("a/b").exists());
        assert_eq!(list(s.dir(&[]).unwrap()).unwrap().entries.len(), 1, "work dir hidden");
    }

    #[test]
    fn ensure_dir_refuses_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let s = UpperDir::open(d.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("obsm")).unwrap();
        assert!(s.ensure_dir(&["obsm", "x"], 0o755, None).is_err());
        assert!(!outside.path().join("x").exists());
    }
}
