//! Thin, checked wrappers over the raw HDF5 C API: an owning id handle, the library lock,
//! and error conversion. Every call into the library goes through [`locked`], tests included:
//! the bundled library is built without thread safety, so one unlocked call racing another
//! thread's corrupts it (a stress test of an unlocked `H5Iinc_ref` segfaults within seconds).

use std::ffi::{c_char, CString};

use hdf5_sys::h5::herr_t;
use hdf5_sys::h5i::hid_t;

use crate::storage::StorageError;

/// Runs `f` holding the HDF5 library's global (re-entrant) lock; initialises the library and
/// silences its error printing on first use.
pub fn locked<T>(f: impl FnOnce() -> T) -> T {
    hdf5::sync::sync(f)
}

/// An owned HDF5 identifier, released (`H5Idec_ref`) on drop.
#[derive(Debug)]
pub struct Hid(hid_t);

impl Hid {
    /// Takes ownership of `id` if it is valid (>= 0), else turns the library's error stack into
    /// an error about `path`.
    pub fn new(id: hid_t, path: &str) -> Result<Hid, StorageError> {
        if id < 0 {
            Err(lib_error(path))
        } else {
            Ok(Hid(id))
        }
    }

    /// The raw identifier.
    pub fn id(&self) -> hid_t {
        self.0
    }
}

impl Drop for Hid {
    fn drop(&mut self) {
        let id = self.0;
        // SAFETY: this `Hid` owns one reference to `id` (handed over to Hid::new) and gives it back
        // exactly once, here, under the library lock.
        locked(|| unsafe {
            hdf5_sys::h5i::H5Idec_ref(id);
        });
    }
}

/// Builds a [`StorageError::Hdf5`] for `path` from the library's current error stack.
pub fn lib_error(path: &str) -> StorageError {
    let reason = match hdf5::h5check(-1 as herr_t) {
        Err(e) => e.to_string(),
        Ok(_) => "unknown HDF5 error".to_string(),
    };
    StorageError::Hdf5 {
        path: path.to_string(),
        reason,
    }
}

/// Checks an `herr_t`/`c_int`-style status (negative = failure).
pub fn check(status: i64, path: &str) -> Result<i64, StorageError> {
    if status < 0 {
        Err(lib_error(path))
    } else {
        Ok(status)
    }
}

/// A C string for a name coming from the file (names never contain NUL in HDF5, but be safe).
pub fn cstr(name: &str, path: &str) -> Result<CString, StorageError> {
    CString::new(name).map_err(|_| StorageError::corrupt(path, "name contains a NUL byte"))
}

/// Copies a NUL-terminated C string allocated by the library and frees it with `H5free_memory`.
///
/// # Safety
/// `ptr` must be null or a string the library allocated for the caller.
pub unsafe fn take_lib_string(ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    let s = std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned();
    hdf5_sys::h5::H5free_memory(ptr.cast());
    Some(s)
}

/// Reads a name through a "call twice" API (`H5Iget_name`, `H5Rget_obj_name`, …): `f(buf, len)`
/// returns the full length without the NUL, or < 0 on error.
pub fn read_name(
    path: &str,
    mut f: impl FnMut(*mut c_char, usize) -> isize,
) -> Result<String, StorageError> {
    let n = f(std::ptr::null_mut(), 0);
    if n < 0 {
        return Err(lib_error(path));
    }
    let mut buf = vec![0u8; n as usize + 1];
    let m = f(buf.as_mut_ptr().cast(), buf.len());
    if m < 0 {
        return Err(lib_error(path));
    }
    buf.truncate((m as usize).min(n as usize));
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
