//! Dataset handles opened on use. An open dataset costs the library ~15 KB (its layout,
//! property lists, types, chunk-cache slots), outside annfs's budget, and annfs needs the
//! handle only for the few reads that go through the library (compact and external layouts,
//! strings it cannot decode itself, chunk tables it cannot parse): a file of 30,000 datasets
//! held them all open cost 530 MB. A reader keeps its dataset's object token and borrows an
//! open handle from the file's [`Handles`], which keeps the few most recently used.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use hdf5_sys::h5o::H5O_token_t;

use super::ffi::{locked, Hid};
use crate::storage::StorageResult;

/// Open handles kept for reuse: enough for the datasets one view reads together (a sparse
/// matrix's three arrays, a dataframe's columns in one block of lines).
const KEEP: usize = 64;

/// How a reader reaches its dataset.
#[derive(Debug)]
pub enum Dataset {
    /// Reopened by its object token when needed.
    Token(H5O_token_t),
    /// Held open (the library gave no token for it).
    Held(Arc<Hid>),
}

impl Dataset {
    /// Keeps `dset` as a token when the library gives one, else keeps the handle open.
    pub fn keep(dset: Hid) -> Dataset {
        match object_token(&dset) {
            Some(t) => Dataset::Token(t),
            None => Dataset::Held(Arc::new(dset)),
        }
    }

    /// The dataset's object token, when it is kept as one.
    pub fn token(&self) -> Option<H5O_token_t> {
        match self {
            Dataset::Token(t) => Some(*t),
            Dataset::Held(_) => None,
        }
    }
}

/// The most recently used dataset handles of one file, newest last.
pub struct Handles {
    recent: Mutex<VecDeque<(H5O_token_t, Arc<Hid>)>>,
    /// How many are kept.
    keep: usize,
}

impl Default for Handles {
    fn default() -> Self {
        Handles { recent: Mutex::default(), keep: KEEP }
    }
}

impl Handles {
    /// An open handle to `dataset` of file `file` (`path` names it in errors).
    pub fn open(&self, file: &Hid, dataset: &Dataset, path: &str) -> StorageResult<Arc<Hid>> {
        let token = match dataset {
            Dataset::Held(h) => return Ok(h.clone()),
            Dataset::Token(t) => *t,
        };
        if let Some(h) = self.take(&token) {
            return Ok(h);
        }
        // SAFETY: `file` is the open file the token came from; the id goes to the `Hid`; under
        // the library lock (the handle list's mutex is not held: lock order stays list → library).
        let h = Arc::new(locked(|| Hid::new(unsafe { hdf5_sys::h5o::H5Oopen_by_token(file.id(), token) }, path))?);
        let evicted = {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.push_back((token, h.clone()));
            (recent.len() > self.keep).then(|| recent.pop_front()).flatten()
        };
        drop(evicted); // closed (under the library lock) after the list's mutex is released
        Ok(h)
    }

    /// The kept handle for `token`, moved to the newest place.
    fn take(&self, token: &H5O_token_t) -> Option<Arc<Hid>> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let at = recent.iter().rposition(|(t, _)| t == token)?;
        let entry = recent.remove(at)?;
        let h = entry.1.clone();
        recent.push_back(entry);
        Some(h)
    }
}

/// The object token (identity in the file) of an open object, if the library gives it.
pub fn object_token(obj: &Hid) -> Option<H5O_token_t> {
    locked(|| {
        let mut info = std::mem::MaybeUninit::<hdf5_sys::h5o::H5O_info2_t>::uninit();
        // SAFETY: `info` is a valid out-pointer; the object id is open; under the library lock.
        if unsafe { hdf5_sys::h5o::H5Oget_info3(obj.id(), info.as_mut_ptr(), hdf5_sys::h5o::H5O_INFO_BASIC) } < 0 {
            return None;
        }
        // SAFETY: H5Oget_info3 succeeded, so `info` is initialised (its basic fields).
        Some(unsafe { info.assume_init() }.token)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `name` in file `fid` by path, the way the tree walk does.
    fn open_path(fid: &Hid, name: &str) -> Hid {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: `c` is a NUL-terminated path alive for the call; under the library lock.
        locked(|| Hid::new(unsafe { hdf5_sys::h5o::H5Oopen(fid.id(), c.as_ptr(), 0) }, name)).unwrap()
    }

    fn elements(dset: &Hid) -> i64 {
        // SAFETY: `dset` is an open dataset; the space id goes to the `Hid`; under the lock.
        locked(|| unsafe {
            let space = Hid::new(hdf5_sys::h5d::H5Dget_space(dset.id()), "").unwrap();
            hdf5_sys::h5s::H5Sget_simple_extent_npoints(space.id())
        })
    }

    #[test]
    fn datasets_reopen_by_token_and_only_the_newest_stay_open() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/csr_gzip.h5ad\0");
        let fid = locked(|| {
            // SAFETY: `path` is NUL-terminated; read-only open with default lists; under the lock.
            Hid::new(unsafe { hdf5_sys::h5f::H5Fopen(path.as_ptr().cast(), hdf5_sys::h5f::H5F_ACC_RDONLY, 0) }, path)
        })
        .unwrap();
        let names = ["/X/data", "/X/indices", "/X/indptr"];
        let sizes: Vec<i64> = names.iter().map(|n| elements(&open_path(&fid, n))).collect();
        let kept: Vec<Dataset> = names.iter().map(|n| Dataset::keep(open_path(&fid, n))).collect();
        assert!(kept.iter().all(|d| matches!(d, Dataset::Token(_))), "closed, kept as tokens");
        let handles = Handles { recent: Mutex::default(), keep: 2 };
        let first = handles.open(&fid, &kept[0], names[0]).unwrap();
        assert!(Arc::ptr_eq(&first, &handles.open(&fid, &kept[0], names[0]).unwrap()), "reused while kept");
        for (i, d) in kept.iter().enumerate() {
            assert_eq!(elements(&handles.open(&fid, d, names[i]).unwrap()), sizes[i], "{}", names[i]);
        }
        assert_eq!(handles.recent.lock().unwrap().len(), 2, "only the newest two stay open");
        let again = handles.open(&fid, &kept[0], names[0]).unwrap();
        assert!(!Arc::ptr_eq(&first, &again), "evicted, then reopened");
        assert_eq!((elements(&first), elements(&again)), (sizes[0], sizes[0]), "a handle held by a reader outlives its eviction");
        assert_eq!(object_token(&again), object_token(&first));
    }
}
