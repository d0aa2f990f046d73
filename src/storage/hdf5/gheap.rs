//! HDF5 global heap collections, parsed by annfs with every offset, length and index checked
//! (the C library's parser can loop forever on a damaged collection while holding its global
//! lock). Variable-length strings live here; see [`crate::storage::hdf5::vlen`].
//!
//! A collection (HDF5 file format spec, "Global Heap Collection"): `GCOL`, version 1, 3 reserved
//! bytes, the collection size (`sizeof_size` bytes, header included); the header is padded to 8
//! bytes. Then objects: index u16, reference count u16, 4 reserved bytes, object size
//! (`sizeof_size` bytes), the header padded to 8 bytes (as the library's `H5HG_SIZEOF_OBJHDR`),
//! the data padded to a multiple of 8. Object 0 is the free space and ends
//! the list; so does a tail too small for an object header.

use std::collections::HashMap;

use super::file::DataFile;
use crate::storage::{StorageError, StorageResult};

/// The largest collection annfs parses; a larger size field is treated as corruption. Objects
/// larger than this (a single string of over 64 MiB) are therefore not readable.
pub const MAX_COLLECTION_BYTES: u64 = 64 << 20;

/// Bytes read at a collection's address before its size is known (the library's minimum
/// collection size; most collections are exactly this big).
const FIRST_READ: u64 = 4096;

/// Field widths of the file (from its superblock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes of a file address.
    pub addr: usize,
    /// Bytes of a length field.
    pub size: usize,
}

impl Sizes {
    /// Checks widths reported by the library; annfs decodes widths of 2 to 8 bytes.
    pub fn new(addr: usize, size: usize) -> Option<Sizes> {
        let ok = |w: usize| (2..=8).contains(&w);
        (ok(addr) && ok(size)).then_some(Sizes { addr, size })
    }

    /// Bytes of the collection header (padded to 8).
    fn header(&self) -> usize {
        (8 + self.size).next_multiple_of(8)
    }

    /// Bytes of an object header (padded to 8, like the collection header).
    fn object_header(&self) -> usize {
        (8 + self.size).next_multiple_of(8)
    }
}

/// Decodes a little-endian unsigned integer of `bytes.len()` (<= 8) bytes.
pub fn le_uint(bytes: &[u8]) -> u64 {
    // The common widths in one load each (a million string references per column).
    match bytes.len() {
        8 => u64::from_le_bytes(bytes.try_into().unwrap_or_default()),
        4 => u32::from_le_bytes(bytes.try_into().unwrap_or_default()).into(),
        2 => u16::from_le_bytes(bytes.try_into().unwrap_or_default()).into(),
        _ => bytes.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    }
}

/// One parsed collection: its bytes and where each object's data lies in them.
#[derive(Debug)]
pub struct Collection {
    bytes: Vec<u8>,
    /// (object index, data offset, data length), sorted by index.
    objects: Vec<(u16, usize, usize)>,
}

impl Collection {
    /// Parses a whole collection (`bytes` holds exactly the collection size from its header).
    pub fn parse(bytes: Vec<u8>, sizes: Sizes) -> Result<Collection, String> {
        let objects = index_objects(&bytes, sizes)?;
        Ok(Collection { bytes, objects })
    }

    /// The data of object `index`.
    pub fn object(&self, index: u32) -> Option<&[u8]> {
        let index = u16::try_from(index).ok()?;
        // Objects are usually numbered 1, 2, 3, ...: try the slot that index would have.
        let guess = usize::from(index).wrapping_sub(1);
        let at = match self.objects.get(guess) {
            Some(o) if o.0 == index => guess,
            _ => self.objects.binary_search_by_key(&index, |o| o.0).ok()?,
        };
        let (_, off, len) = self.objects[at];
        self.bytes.get(off..off + len)
    }

    /// Number of objects (free space excluded).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when the collection holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Lists the objects of a whole collection image (`bytes` holds exactly its declared size),
/// sorted by index. Free space (object 0) must run to the end of the collection, as the library
/// writes it: the library's own parser skips it by its size and loops forever on a size of 0.
fn index_objects(bytes: &[u8], sizes: Sizes) -> Result<Vec<(u16, usize, usize)>, String> {
    let declared = declared_size(bytes, sizes)?;
    if declared != bytes.len() as u64 {
        return Err(format!(
            "collection holds {} bytes, its header says {declared}",
            bytes.len()
        ));
    }
    let end = bytes.len();
    let hdr = sizes.object_header();
    // Room for as many objects as the smallest ones (a header and 8 data bytes) would fill.
    let mut objects = Vec::with_capacity(end / (hdr + 8));
    let mut p = sizes.header();
    while p.checked_add(hdr).is_some_and(|h| h <= end) {
        let field = |at: usize, n: usize| le_uint(bytes.get(p + at..p + at + n).unwrap_or(&[]));
        let index = field(0, 2) as u16;
        let size = field(8, sizes.size);
        if index == 0 {
            if size != (end - p) as u64 {
                return Err(format!(
                    "free space at offset {p} claims {size} bytes, {} remain",
                    end - p
                ));
            }
            break;
        }
        let data = p + hdr;
        let fits = usize::try_from(size)
            .ok()
            .filter(|s| data.checked_add(*s).is_some_and(|e| e <= end));
        let Some(size) = fits else {
            return Err(format!(
                "object {index} at offset {p} claims {size} bytes, past the collection end ({end})"
            ));
        };
        objects.push((index, data, size));
        // The next object starts after the data padded to 8 bytes (or the collection ends).
        match data.checked_add(size.next_multiple_of(8)) {
            Some(next) => p = next,
            None => break,
        }
    }
    objects.sort_unstable_by_key(|o| o.0);
    if let Some(w) = objects.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("object index {} appears twice", w[0].0));
    }
    Ok(objects)
}

/// Checks bytes the HDF5 library is about to parse as a global heap collection: the header,
/// and when `image` holds the whole collection, every object (see [`index_objects`]). A prefix
/// shorter than the declared size (the library's first, speculative read) passes on a valid
/// header; the full read that follows is checked then.
pub fn check_image(image: &[u8], sizes: Sizes) -> Result<(), String> {
    let declared = declared_size(image, sizes)?;
    match usize::try_from(declared) {
        Ok(n) if n <= image.len() => index_objects(&image[..n], sizes).map(|_| ()),
        _ => Ok(()),
    }
}

/// Checks the collection header at the start of `bytes` and returns its declared size.
fn declared_size(bytes: &[u8], sizes: Sizes) -> Result<u64, String> {
    let hdr = sizes.header();
    if bytes.len() < hdr {
        return Err(format!("{} bytes is too short for a collection header", bytes.len()));
    }
    if &bytes[..4] != b"GCOL" {
        return Err("no GCOL signature".into());
    }
    if bytes[4] != 1 {
        return Err(format!("unknown collection version {}", bytes[4]));
    }
    let size = le_uint(&bytes[8..8 + sizes.size]);
    if size < hdr as u64 || size > MAX_COLLECTION_BYTES {
        return Err(format!(
            "collection size {size} outside {hdr}..={MAX_COLLECTION_BYTES}"
        ));
    }
    Ok(size)
}

/// Reads objects out of the collections of one file, parsing each collection at most once (one
/// reader per `read_strings` call; failures are remembered too).
pub struct HeapReader<'a> {
    file: &'a DataFile,
    sizes: Sizes,
    path: &'a str,
    /// The collection of the previous lookup (strings are stored in order, so most lookups
    /// hit it), with its address.
    last: Option<(u64, Result<Collection, String>)>,
    /// The other collections parsed so far.
    parsed: HashMap<u64, Result<Collection, String>>,
    /// Collection bytes held (`last` and `parsed`), bounded by [`MAX_HELD_BYTES`].
    held: u64,
}

/// Bytes a parsed collection holds.
fn weight(c: &Result<Collection, String>) -> u64 {
    c.as_ref().map_or(0, |c| c.bytes.len() as u64)
}

/// Collection bytes one reader keeps parsed at a time; beyond this the map is cleared.
const MAX_HELD_BYTES: u64 = 2 * MAX_COLLECTION_BYTES;

impl<'a> HeapReader<'a> {
    /// A reader for the collections of `file`, reporting errors against element `path`.
    pub fn new(file: &'a DataFile, sizes: Sizes, path: &'a str) -> HeapReader<'a> {
        HeapReader {
            file,
            sizes,
            path,
            last: None,
            parsed: HashMap::new(),
            held: 0,
        }
    }

    /// Number of collections currently parsed (or remembered as bad).
    pub fn parsed_count(&self) -> usize {
        self.parsed.len() + usize::from(self.last.is_some())
    }

    /// The data of object `index` in the collection at `addr`.
    pub fn object(&mut self, addr: u64, index: u32) -> StorageResult<&[u8]> {
        if self.last.as_ref().map(|l| l.0) != Some(addr) {
            let c = match self.parsed.remove(&addr) {
                Some(c) => c,
                None => {
                    let c = self.load(addr);
                    let size = weight(&c);
                    if self.held + size > MAX_HELD_BYTES {
                        self.parsed.clear();
                        self.held = self.last.as_ref().map_or(0, |l| weight(&l.1));
                    }
                    self.held += size;
                    c
                }
            };
            if let Some((prev, pc)) = self.last.replace((addr, c)) {
                self.parsed.insert(prev, pc);
            }
        }
        let path = self.path;
        match self.last.as_ref().map(|l| &l.1) {
            Some(Ok(c)) => c.object(index).ok_or_else(|| {
                StorageError::corrupt(
                    path,
                    format!(
                        "global heap collection at {addr} has no object {index} ({} objects)",
                        c.len()
                    ),
                )
            }),
            Some(Err(e)) => Err(StorageError::corrupt(
                path,
                format!("global heap collection at {addr}: {e}"),
            )),
            None => Err(StorageError::corrupt(path, "global heap cache lost an entry")),
        }
    }

    /// Reads and parses the collection at `addr`: usually one read of [`FIRST_READ`] bytes, a
    /// second one only for larger collections.
    fn load(&self, addr: u64) -> Result<Collection, String> {
        let what = "global heap collection";
        let avail = self.file.len().saturating_sub(addr);
        if addr == 0 || avail < self.sizes.header() as u64 {
            return Err(format!("address {addr} is outside the file ({} bytes)", self.file.len()));
        }
        let mut bytes = self
            .file
            .read(addr, FIRST_READ.min(avail), self.path, what)
            .map_err(|e| e.to_string())?;
        let size = declared_size(&bytes, self.sizes)?;
        if size > avail {
            return Err(format!(
                "size {size} runs past the end of the file ({} bytes)",
                self.file.len()
            ));
        }
        if size <= bytes.len() as u64 {
            bytes.truncate(size as usize);
        } else {
            bytes = self
                .file
                .read(addr, size, self.path, what)
                .map_err(|e| e.to_string())?;
        }
        Collection::parse(bytes, self.sizes)
    }
}

#[cfg(test)]
#[path = "gheap_tests.rs"]
pub(crate) mod tests;
