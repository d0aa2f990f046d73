//! A read-only HDF5 virtual file driver ("annfs-guard") through which the library reads the
//! file: plain positioned reads, except that bytes the library is about to parse as a global
//! heap collection are first checked by [`gheap::check_image`]. A damaged collection then fails
//! that read (an error for the attribute or element using it) instead of sending the library's
//! parser into an endless loop under its global lock (issue 9: `H5HG__cache_heap_deserialize`).
//!
//! The library reads global heap collections as raw data (`H5F_block_read` maps
//! `H5FD_MEM_GHEAP` to `H5FD_MEM_DRAW`), so a raw read that starts with `GCOL` is treated as
//! one. Metadata accumulation is not offered, so each read reaches the driver exactly as asked.
//!
//! The structs mirror `H5FDdevelop.h` of the bundled HDF5 2.x (`hdf5-sys` declares an older
//! layout of `H5FD_class_t`).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use hdf5_sys::h5::{haddr_t, herr_t, hsize_t};
use hdf5_sys::h5i::hid_t;

use super::ffi::{locked, Hid};
use super::gheap::{self, Sizes};
use crate::storage::range::{LocalFile, RangeRead};
use crate::storage::{StorageError, StorageResult};

/// `H5FD_t` of HDF5 2.x: the library fills these fields in.
#[repr(C)]
struct Public {
    driver_id: hid_t,
    cls: *const Class,
    fileno: c_ulong,
    access_flags: c_uint,
    feature_flags: c_ulong,
    maxaddr: haddr_t,
    base_addr: haddr_t,
    threshold: hsize_t,
    alignment: hsize_t,
    paged_aggr: bool,
}

/// An unused callback slot.
type Unused = Option<unsafe extern "C" fn()>;

/// `H5FD_class_t` of HDF5 2.x (`H5FD_CLASS_VERSION` 1).
#[repr(C)]
struct Class {
    version: c_uint,
    value: c_int,
    name: *const c_char,
    maxaddr: haddr_t,
    fc_degree: c_int,
    terminate: Unused,
    sb_size: Unused,
    sb_encode: Unused,
    sb_decode: Unused,
    fapl_size: usize,
    fapl_get: Unused,
    fapl_copy: Unused,
    fapl_free: Unused,
    dxpl_size: usize,
    dxpl_copy: Unused,
    dxpl_free: Unused,
    open: Option<unsafe extern "C" fn(*const c_char, c_uint, hid_t, haddr_t) -> *mut Public>,
    close: Option<unsafe extern "C" fn(*mut Public) -> herr_t>,
    cmp: Option<unsafe extern "C" fn(*const Public, *const Public) -> c_int>,
    query: Option<unsafe extern "C" fn(*const Public, *mut c_ulong) -> herr_t>,
    get_type_map: Unused,
    alloc: Unused,
    free: Unused,
    get_eoa: Option<unsafe extern "C" fn(*const Public, c_int) -> haddr_t>,
    set_eoa: Option<unsafe extern "C" fn(*mut Public, c_int, haddr_t) -> herr_t>,
    get_eof: Option<unsafe extern "C" fn(*const Public, c_int) -> haddr_t>,
    get_handle: Unused,
    read: Option<unsafe extern "C" fn(*mut Public, c_int, hid_t, haddr_t, usize, *mut c_void) -> herr_t>,
    write: Option<unsafe extern "C" fn(*mut Public, c_int, hid_t, haddr_t, usize, *const c_void) -> herr_t>,
    read_vector: Unused,
    write_vector: Unused,
    read_selection: Unused,
    write_selection: Unused,
    flush: Unused,
    truncate: Unused,
    lock: Unused,
    unlock: Unused,
    del: Unused,
    ctl: Unused,
    fl_map: [c_int; 7],
}

/// One open file: the library's header first, then ours.
#[repr(C)]
struct Guarded {
    public: Public,
    src: Arc<dyn RangeRead>,
    eoa: haddr_t,
    eof: u64,
    sizes: Option<Sizes>,
}

/// Byte sources handed to the driver by name: the library opens a file by name only, so a
/// remote object is registered under a made-up name for the duration of `H5Fopen`.
static HANDOFF: Mutex<Option<HashMap<String, Arc<dyn RangeRead>>>> = Mutex::new(None);

/// While alive, the driver opens `name` as the registered byte source.
pub struct Handoff(String);

impl Handoff {
    /// Registers `src` under a name unique in the process; open the file by [`Handoff::name`].
    pub fn new(src: Arc<dyn RangeRead>) -> Handoff {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("annfs-source:{n}");
        HANDOFF.lock().get_or_insert_with(HashMap::new).insert(name.clone(), src);
        Handoff(name)
    }

    /// The name to open.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(map) = HANDOFF.lock().as_mut() {
            map.remove(&self.0);
        }
    }
}

const MEM_SUPER: c_int = 1;
const MEM_DRAW: c_int = 3;
const FEAT_AGGREGATE_METADATA: c_ulong = 0x1;
const FEAT_AGGREGATE_SMALLDATA: c_ulong = 0x10;
/// `H5F_ACC_RDWR | H5F_ACC_TRUNC | H5F_ACC_EXCL | H5F_ACC_CREAT`: refused.
const WRITE_FLAGS: c_uint = 0x1 | 0x2 | 0x4 | 0x10;
const MAXADDR: haddr_t = i64::MAX as haddr_t;
/// A driver number from the range HDF5 leaves to applications (256..=511).
const VALUE: c_int = 0x1a5;
const HADDR_UNDEF: haddr_t = haddr_t::MAX;

/// The registered driver id (registered once per process).
///
/// The cell is only touched under the library lock: a thread that waited on the cell while
/// holding the lock, for another thread whose registration waits for the lock, would deadlock.
fn driver() -> StorageResult<hid_t> {
    static ID: OnceLock<Result<hid_t, String>> = OnceLock::new();
    let id = locked(|| ID.get_or_init(|| {
        let class = Class {
            version: 1,
            value: VALUE,
            name: c"annfs-guard".as_ptr(),
            maxaddr: MAXADDR,
            fc_degree: 1, // H5F_CLOSE_WEAK
            terminate: None,
            sb_size: None,
            sb_encode: None,
            sb_decode: None,
            fapl_size: 0,
            fapl_get: None,
            fapl_copy: None,
            fapl_free: None,
            dxpl_size: 0,
            dxpl_copy: None,
            dxpl_free: None,
            open: Some(open),
            close: Some(close),
            cmp: Some(cmp),
            query: Some(query),
            get_type_map: None,
            alloc: None,
            free: None,
            get_eoa: Some(get_eoa),
            set_eoa: Some(set_eoa),
            get_eof: Some(get_eof),
            get_handle: None,
            read: Some(read),
            write: Some(write),
            read_vector: None,
            write_vector: None,
            read_selection: None,
            write_selection: None,
            flush: None,
            truncate: None,
            lock: None,
            unlock: None,
            del: None,
            ctl: None,
            // H5FD_FLMAP_DICHOTOMY
            fl_map: [MEM_SUPER, MEM_SUPER, MEM_SUPER, MEM_DRAW, MEM_DRAW, MEM_SUPER, MEM_SUPER],
        };
        // SAFETY: `class` mirrors `H5FD_class_t` of the bundled HDF5 2.x and the library copies it;
        // its name is a static C string and its callbacks are plain fns. Under the library lock
        // (taken around the cell).
        let id = unsafe { hdf5_sys::h5fd::H5FDregister((&class as *const Class).cast()) };
        if id < 0 {
            Err("cannot register the annfs-guard HDF5 driver".to_string())
        } else {
            Ok(id)
        }
    }).clone());
    id.map_err(|e| StorageError::Hdf5 { path: String::new(), reason: e })
}

/// A file access property list that opens files through this driver.
pub fn fapl(path: &str) -> StorageResult<Hid> {
    let id = driver()?;
    locked(|| {
        let fapl = Hid::new(
            // SAFETY: the file-access class id is the library's global, set up by `locked`; the new
            // list is owned by the `Hid`. Under the library lock.
            unsafe { hdf5_sys::h5p::H5Pcreate(*hdf5_sys::h5p::H5P_CLS_FILE_ACCESS) },
            path,
        )?;
        // SAFETY: `fapl` was just created and `id` is the registered driver, whose `fapl_size` is
        // 0, so a null info pointer is what it takes. Under the library lock.
        let st = unsafe { hdf5_sys::h5p::H5Pset_driver(fapl.id(), id, std::ptr::null()) };
        super::ffi::check(i64::from(st), path)?;
        bound_metadata_cache(&fapl, path)?;
        Ok(fapl)
    })
}

/// Serialized bytes of metadata the library keeps cached per file ([`bound_metadata_cache`]).
const METADATA_CACHE_BYTES: usize = 512 << 10;

/// Keeps the library's metadata cache at [`METADATA_CACHE_BYTES`] (its default grows to 2 MiB
/// and more). The cache counts an object header's stored bytes, but a cached header also holds
/// its decoded messages — a dataset's layout alone is ~2.5 KB decoded —, so a walk of 30,000
/// datasets left 34 MB of them behind a 2 MiB cache; at 512 KiB, 8 MB. Reads hardly notice:
/// annfs decodes chunk indexes and strings itself, and the walk visits each header once.
/// Caller holds the library lock.
fn bound_metadata_cache(fapl: &Hid, path: &str) -> StorageResult<()> {
    let mut config = hdf5_sys::h5ac::H5AC_cache_config_t { version: 1, ..Default::default() };
    // SAFETY: `config` is a live config whose `version` is set, as the call requires; `fapl` is
    // an open access list. Under the library lock.
    super::ffi::check(i64::from(unsafe { hdf5_sys::h5p::H5Pget_mdc_config(fapl.id(), &mut config) }), path)?;
    config.set_initial_size = 1;
    config.initial_size = METADATA_CACHE_BYTES;
    config.max_size = METADATA_CACHE_BYTES;
    config.min_size = config.min_size.min(METADATA_CACHE_BYTES);
    // SAFETY: as above; the library copies the config.
    super::ffi::check(i64::from(unsafe { hdf5_sys::h5p::H5Pset_mdc_config(fapl.id(), &config) }), path)?;
    Ok(())
}

/// Address and length widths from the superblock (found at 0, 512, 1024, ...), if readable.
fn superblock_sizes(src: &dyn RangeRead) -> Option<Sizes> {
    let at = super::find_superblock(src).ok()??;
    let mut buf = [0u8; 16];
    src.read_exact_at(&mut buf, at).ok()?;
    let (a, s) = match buf[8] {
        0 | 1 => (buf[13], buf[14]),
        _ => (buf[9], buf[10]),
    };
    Sizes::new(usize::from(a), usize::from(s))
}

unsafe extern "C" fn open(name: *const c_char, flags: c_uint, _fapl: hid_t, maxaddr: haddr_t) -> *mut Public {
    if name.is_null() || flags & WRITE_FLAGS != 0 || maxaddr == 0 || maxaddr == HADDR_UNDEF {
        return std::ptr::null_mut();
    }
    let name = CStr::from_ptr(name).to_bytes();
    let handed = std::str::from_utf8(name)
        .ok()
        .and_then(|n| HANDOFF.lock().as_ref().and_then(|m| m.get(n).cloned()));
    let src: Arc<dyn RangeRead> = match handed {
        Some(src) => src,
        None => match LocalFile::open(std::path::Path::new(std::ffi::OsStr::from_bytes(name))) {
            Ok(f) => Arc::new(f),
            Err(_) => return std::ptr::null_mut(),
        },
    };
    let sizes = superblock_sizes(&*src);
    let g = Box::new(Guarded {
        public: std::mem::zeroed(),
        eof: src.len(),
        src,
        eoa: 0,
        sizes,
    });
    Box::into_raw(g).cast()
}

unsafe extern "C" fn close(f: *mut Public) -> herr_t {
    if !f.is_null() {
        drop(Box::from_raw(f.cast::<Guarded>()));
    }
    0
}

unsafe extern "C" fn cmp(a: *const Public, b: *const Public) -> c_int {
    let (a, b) = (&*a.cast::<Guarded>(), &*b.cast::<Guarded>());
    match a.src.identity().cmp(&b.src.identity()) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }
}

unsafe extern "C" fn query(_f: *const Public, flags: *mut c_ulong) -> herr_t {
    if !flags.is_null() {
        *flags = FEAT_AGGREGATE_METADATA | FEAT_AGGREGATE_SMALLDATA;
    }
    0
}

unsafe extern "C" fn get_eoa(f: *const Public, _type: c_int) -> haddr_t {
    (*f.cast::<Guarded>()).eoa
}

unsafe extern "C" fn set_eoa(f: *mut Public, _type: c_int, addr: haddr_t) -> herr_t {
    if addr > MAXADDR {
        return -1;
    }
    (*f.cast::<Guarded>()).eoa = addr;
    0
}

unsafe extern "C" fn get_eof(f: *const Public, _type: c_int) -> haddr_t {
    (*f.cast::<Guarded>()).eof
}

unsafe extern "C" fn read(
    f: *mut Public,
    kind: c_int,
    _dxpl: hid_t,
    addr: haddr_t,
    size: usize,
    buf: *mut c_void,
) -> herr_t {
    let g = &*f.cast::<Guarded>();
    if addr == HADDR_UNDEF || addr.checked_add(size as u64).is_none_or(|e| e > MAXADDR) {
        return -1;
    }
    if size == 0 {
        return 0;
    }
    let out = std::slice::from_raw_parts_mut(buf.cast::<u8>(), size);
    if let Err(e) = fill(&*g.src, addr, out) {
        log::warn!("HDF5 driver: reading {size} bytes at {addr}: {e}");
        return -1;
    }
    // An internal node of a chunk index: its child nodes are fetched together (remote files).
    if out.starts_with(b"TREE") {
        if let Some(sizes) = g.sizes {
            let kids = super::btree::child_nodes(out, sizes.addr);
            if !kids.is_empty() {
                let ranges: Vec<(u64, u64)> = kids.into_iter().map(|a| (a, size as u64)).collect();
                g.src.prefetch_exact(&ranges);
            }
        }
    }
    if kind == MEM_DRAW && out.starts_with(b"GCOL") {
        let verdict = match g.sizes {
            Some(sizes) => gheap::check_image(out, sizes),
            None => Err("address widths unknown".into()),
        };
        if let Err(e) = verdict {
            log::warn!("refusing a damaged global heap collection at {addr}: {e}");
            return -1;
        }
    }
    0
}

/// Reads `out.len()` bytes at `addr`; bytes past the end of the file read as zeros (as the
/// library's own drivers do).
fn fill(src: &dyn RangeRead, addr: u64, out: &mut [u8]) -> std::io::Result<()> {
    let avail = src.len().saturating_sub(addr).min(out.len() as u64) as usize;
    let (head, tail) = out.split_at_mut(avail);
    tail.fill(0);
    match src.read_exact_at(head, addr) {
        // The file shrank since it was opened: what is missing reads as zeros too.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            head.fill(0);
            Ok(())
        }
        other => other,
    }
}

unsafe extern "C" fn write(
    _f: *mut Public,
    _kind: c_int,
    _dxpl: hid_t,
    _addr: haddr_t,
    _size: usize,
    _buf: *const c_void,
) -> herr_t {
    -1
}
