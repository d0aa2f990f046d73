//! Safe path resolution inside the overlay directory: every name is checked, and directories are
//! walked one component at a time with `openat(O_NOFOLLOW)` relative to the overlay's root fd, so
//! no `..`, absolute path or symlink can lead outside it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Names starting with this prefix belong to the overlay's bookkeeping: hidden from the mount
/// and refused as new names.
pub const RESERVED: &str = ".annfs-ovl";

/// Checks a single name coming from the kernel or a user: UTF-8, not empty, not `.`/`..`,
/// no `/` or NUL, not reserved. Returns it as `&str`.
pub fn check_name(name: &OsStr) -> Result<&str, Errno> {
    let s = name.to_str().ok_or(Errno::INVAL)?;
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(Errno::INVAL);
    }
    if s.starts_with(RESERVED) {
        return Err(Errno::PERM);
    }
    if s.len() > 255 {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(s)
}

/// Splits a `/`-separated relative path into checked components.
pub fn components(path: &str) -> Result<Vec<&str>, Errno> {
    path.split('/').filter(|c| !c.is_empty()).map(|c| check_name(OsStr::new(c))).collect()
}

/// Flags for opening a directory we walk through: never follows a symlink.
pub fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens `dir`'s child directory `name` without following symlinks (`ELOOP`/`ENOTDIR` if it
/// is a symlink or not a directory).
pub fn open_subdir(dir: impl AsFd, name: &str) -> Result<OwnedFd, Errno> {
    openat(dir, name, dir_flags(), Mode::empty())
}

/// Opens the directory at `comps` below `root`, one component at a time.
pub fn open_dir(root: impl AsFd, comps: &[&str]) -> Result<OwnedFd, Errno> {
    let mut cur = openat(root, ".", dir_flags(), Mode::empty())?;
    for c in comps {
        cur = open_subdir(&cur, c)?;
    }
    Ok(cur)
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub fn stat_opt(dir: impl AsFd, name: &str) -> Result<Option<Stat>, Errno> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file type of a stat.
pub fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name(OsStr::new("obs.tsv")).is_ok());
        assert_eq!(check_name(OsStr::new("..")), Err(Errno::INVAL));
        assert_eq!(check_name(OsStr::new(".")), Err(Errno::INVAL));
        assert_eq!(check_name(OsStr::new("a/b")), Err(Errno::INVAL));
        assert_eq!(check_name(OsStr::new("")), Err(Errno::INVAL));
        assert_eq!(check_name(OsStr::new(".annfs-ovl-wh.x")), Err(Errno::PERM));
        assert!(components("a/../b").is_err());
        assert_eq!(components("a//b/").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", root.path().join("rel")).unwrap();
        let fd = openat(rustix::fs::CWD, root.path(), dir_flags(), Mode::empty()).unwrap();
        assert!(open_dir(&fd, &["real"]).is_ok());
        assert!(open_dir(&fd, &["abs"]).is_err(), "absolute symlink followed");
        assert!(open_dir(&fd, &["rel"]).is_err(), "relative symlink followed");
        let st = stat_opt(&fd, "abs").unwrap().unwrap();
        assert_eq!(kind(&st), FileType::Symlink);
        assert!(stat_opt(&fd, "missing").unwrap().is_none());
    }
}
