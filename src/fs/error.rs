//! The errno table: every error type the adapters (the read-only [`AnnFs`](super::AnnFs) and
//! the overlay) reply with maps to an errno here, and nowhere else.
//!
//! fuser's [`Errno`] is the crate's reply errno type. The overlay works in rustix's errno
//! (what its syscalls return) and converts at the seam: [`super::reply::guard`] takes any
//! [`ToErrno`], and overlay code that must turn another error into rustix's errno goes through
//! [`ToErrno::to_rustix_errno`], which reads the same table.
//!
//! Not here: literal protocol answers (`EROFS` for a write on a read-only mount, `ENOENT` for a
//! missing name, `ENOTDIR`, `EISDIR`, `ENOSYS`, `EIO` for a panic or a missed deadline), which
//! are answers where they are given, not mappings of an error.

use fuser::Errno;

use crate::overlay::copyup::CopyError;
use crate::overlay::upper::UpperDirError;
use crate::storage::StorageError;

/// An error a FUSE request can fail with, as the errno it is answered with.
pub trait ToErrno {
    /// The errno answered for this error.
    fn to_errno(&self) -> Errno;

    /// The same errno as rustix's type, for overlay code (which works in rustix's errno).
    fn to_rustix_errno(&self) -> rustix::io::Errno {
        rustix::io::Errno::from_raw_os_error(self.to_errno().code())
    }
}

impl ToErrno for Errno {
    fn to_errno(&self) -> Errno {
        *self
    }
}

impl ToErrno for rustix::io::Errno {
    fn to_errno(&self) -> Errno {
        Errno::from_i32(self.raw_os_error())
    }
}

/// The operating system's errno when the error carries one, else `EIO`.
impl ToErrno for std::io::Error {
    fn to_errno(&self) -> Errno {
        self.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
    }
}

/// `EIO` whatever went wrong: the store's own errors (even an `Io` one, whose errno concerns
/// the store file, not the virtual file read) are reported in the log and the stats, and the
/// reader sees an I/O error.
impl ToErrno for StorageError {
    fn to_errno(&self) -> Errno {
        match self {
            StorageError::Io { .. }
            | StorageError::NotAStore { .. }
            | StorageError::Corrupt { .. }
            | StorageError::Unsupported { .. }
            | StorageError::Hdf5 { .. } => Errno::EIO,
        }
    }
}

/// A copy-up that failed reading the virtual file is `EIO` (as any store error); one that failed
/// writing the overlay directory answers that write's errno (`ENOSPC`, `EDQUOT`, ...).
impl ToErrno for CopyError {
    fn to_errno(&self) -> Errno {
        match self {
            CopyError::Read(e) => e.to_errno(),
            CopyError::Write(e) => e.to_errno(),
        }
    }
}

/// The errno of the I/O error that made the overlay directory unusable.
impl ToErrno for UpperDirError {
    fn to_errno(&self) -> Errno {
        self.source.to_errno()
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn io_errors_keep_their_os_errno() {
        assert_eq!(io::Error::from_raw_os_error(libc::ENOSPC).to_errno(), Errno::ENOSPC);
        assert_eq!(io::Error::from_raw_os_error(libc::EACCES).to_errno(), Errno::EACCES);
        assert_eq!(io::Error::other("short copy").to_errno(), Errno::EIO);
        assert_eq!(io::Error::from(io::ErrorKind::UnexpectedEof).to_errno(), Errno::EIO);
    }

    #[test]
    fn errno_types_convert_both_ways() {
        assert_eq!(rustix::io::Errno::ACCESS.to_errno(), Errno::EACCES);
        assert_eq!(rustix::io::Errno::NOENT.to_errno(), Errno::ENOENT);
        assert_eq!(Errno::EROFS.to_errno(), Errno::EROFS);
        assert_eq!(Errno::ENOSPC.to_rustix_errno(), rustix::io::Errno::NOSPC);
        assert_eq!(rustix::io::Errno::XDEV.to_rustix_errno(), rustix::io::Errno::XDEV);
    }

    #[test]
    fn storage_errors_are_eio() {
        let all = [
            StorageError::Io { path: "x.h5".into(), source: io::Error::from_raw_os_error(libc::EACCES) },
            StorageError::NotAStore { path: "x".into(), reason: "no HDF5 signature".into() },
            StorageError::corrupt("X", "bad chunk"),
            StorageError::unsupported("X", "a filter"),
            StorageError::Hdf5 { path: "X".into(), reason: "stack".into() },
        ];
        for e in &all {
            assert_eq!(e.to_errno(), Errno::EIO, "{e}");
            assert_eq!(e.to_rustix_errno(), rustix::io::Errno::IO, "{e}");
        }
    }

    #[test]
    fn copy_errors() {
        assert_eq!(CopyError::Read(StorageError::corrupt("X", "bad chunk")).to_errno(), Errno::EIO);
        assert_eq!(CopyError::Write(io::Error::from_raw_os_error(libc::ENOSPC)).to_errno(), Errno::ENOSPC);
        assert_eq!(CopyError::Write(io::Error::other("short copy: 1 of 2 bytes")).to_errno(), Errno::EIO);
        assert_eq!(CopyError::from(rustix::io::Errno::DQUOT).to_errno(), Errno::EDQUOT);
        assert_eq!(CopyError::Write(io::Error::from_raw_os_error(libc::ENOSPC)).to_rustix_errno(), rustix::io::Errno::NOSPC);
    }

    #[test]
    fn upper_dir_errors_answer_their_io_errno() {
        let e = |source| UpperDirError { path: "/ovl".into(), source };
        assert_eq!(e(io::Error::from_raw_os_error(libc::EACCES)).to_errno(), Errno::EACCES);
        assert_eq!(e(io::Error::other("?")).to_errno(), Errno::EIO);
    }
}
