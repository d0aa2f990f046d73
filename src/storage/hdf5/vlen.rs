//! String elements decoded from a dataset's raw (file-layout) bytes, without the HDF5 library:
//! fixed-length strings directly, variable-length strings through [`HeapReader`].
//!
//! A stored variable-length string element is its length (u32), the address of its global heap
//! collection (`sizeof_addr` bytes) and its object index in that collection (u32), little-endian.
//! The results match what the library returned before: the bytes up to the first NUL, invalid
//! UTF-8 replaced by U+FFFD, a null or empty string as "".

use hdf5_sys::h5t::H5T_str_t;

use super::file::DataFile;
use super::gheap::{le_uint, HeapReader, Sizes};
use super::library::fixed_to_string;
use crate::storage::{StorageError, StorageResult};

/// The most string bytes one read returns (a damaged dataset could point every element at
/// the same large heap object).
pub const MAX_STRING_BYTES: u64 = 256 << 20;

/// Bytes of one stored variable-length string element.
pub fn element_size(sizes: Sizes) -> usize {
    4 + sizes.addr + 4
}

/// How a dataset's string elements are stored.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// Variable-length, in global heap collections.
    Vlen(Sizes),
    /// Fixed-length: `size` bytes each, padded per `pad`.
    Fixed {
        /// Bytes per string.
        size: usize,
        /// How strings shorter than `size` are padded.
        pad: H5T_str_t,
    },
}

impl Layout {
    /// Bytes of one stored element.
    pub fn element_size(&self) -> usize {
        match self {
            Layout::Vlen(s) => element_size(*s),
            Layout::Fixed { size, .. } => *size,
        }
    }
}

/// Decodes the consecutive stored elements in `raw` (a whole number of elements). `first` is the
/// flat index of the first one, for error messages.
pub fn decode(
    raw: &[u8],
    layout: Layout,
    file: &DataFile,
    path: &str,
    first: u64,
) -> StorageResult<Vec<String>> {
    let mut out = Vec::with_capacity(raw.len() / layout.element_size().max(1));
    decode_each(raw, layout, file, path, first, &mut |s| out.push(s.to_owned()))?;
    Ok(out)
}

/// [`decode`], passing each string to `f` in order instead of keeping it (a valid UTF-8 string
/// is passed without a copy).
pub fn decode_each(
    raw: &[u8],
    layout: Layout,
    file: &DataFile,
    path: &str,
    first: u64,
    f: &mut dyn FnMut(&str),
) -> StorageResult<()> {
    let elem = layout.element_size();
    if elem == 0 {
        return Ok(());
    }
    let sizes = match layout {
        Layout::Fixed { pad, .. } => {
            raw.chunks_exact(elem).for_each(|c| f(&fixed_to_string(c, pad)));
            return Ok(());
        }
        Layout::Vlen(sizes) => sizes,
    };
    let mut heap = HeapReader::new(file, sizes, path);
    let mut total = 0u64;
    for (i, e) in raw.chunks_exact(elem).enumerate() {
        let len = le_uint(&e[..4]);
        let addr = le_uint(&e[4..4 + sizes.addr]);
        let index = le_uint(&e[4 + sizes.addr..]) as u32;
        if len == 0 || addr == 0 {
            f("");
            continue;
        }
        let at = first + i as u64;
        total += len;
        if total > MAX_STRING_BYTES {
            return Err(StorageError::corrupt(
                path,
                format!("strings up to element {at} exceed {MAX_STRING_BYTES} bytes"),
            ));
        }
        let data = heap.object(addr, index)?;
        let Some(bytes) = usize::try_from(len).ok().and_then(|n| data.get(..n)) else {
            return Err(StorageError::corrupt(
                path,
                format!(
                    "string {at} claims {len} bytes, its heap object ({addr}, {index}) holds {}",
                    data.len()
                ),
            ));
        };
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        match std::str::from_utf8(&bytes[..end]) {
            Ok(s) => f(s),
            Err(_) => f(&String::from_utf8_lossy(&bytes[..end])),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::storage::hdf5::gheap::tests::{build, S8};

    /// A file holding one collection at offset 8 with objects 1 = "abc", 2 = "x\0y",
    /// 3 = b"\xff\xfe", 4 = "longer".
    fn heap_file() -> (tempfile::TempDir, DataFile) {
        let objects: [(u16, &[u8]); 4] = [(1, b"abc"), (2, b"x\0y"), (3, b"\xff\xfe"), (4, b"longer")];
        let b = [vec![0u8; 8], build(S8, &objects, 4096)].concat();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h");
        std::fs::write(&p, &b).unwrap();
        let f = DataFile::local(std::fs::File::open(&p).unwrap(), b.len() as u64);
        (dir, f)
    }

    fn el(len: u32, addr: u64, index: u32) -> Vec<u8> {
        [&len.to_le_bytes()[..], &addr.to_le_bytes(), &index.to_le_bytes()].concat()
    }

    #[test]
    fn vlen_elements() {
        let (_d, f) = heap_file();
        let raw = [el(3, 8, 1), el(3, 8, 2), el(2, 8, 3), el(0, 0, 0), el(0, 8, 99), el(3, 8, 4)].concat();
        let got = decode(&raw, Layout::Vlen(S8), &f, "/s", 0).unwrap();
        assert_eq!(got, vec!["abc", "x", "\u{fffd}\u{fffd}", "", "", "lon"]);
    }

    #[test]
    fn string_longer_than_object_and_bad_references() {
        let (_d, f) = heap_file();
        let e = decode(&el(4, 8, 1), Layout::Vlen(S8), &f, "/s", 10).unwrap_err().to_string();
        assert!(e.contains("string 10 claims 4 bytes"), "{e}");
        for raw in [el(1, 8, 5), el(1, 9, 1), el(1, 1 << 40, 1), el(u32::MAX, 8, 1)] {
            let r = decode(&raw, Layout::Vlen(S8), &f, "/s", 0);
            assert!(matches!(r, Err(StorageError::Corrupt { .. })), "{r:?}");
        }
    }

    #[test]
    fn too_many_string_bytes() {
        let (_d, f) = heap_file();
        // One element claiming more than the cap: refused before its heap is read.
        let raw = el(MAX_STRING_BYTES as u32 + 1, 8, 4);
        let e = decode(&raw, Layout::Vlen(S8), &f, "/s", 0).unwrap_err().to_string();
        assert!(e.contains("exceed"), "{e}");
    }

    #[test]
    fn fixed_elements() {
        let (_d, f) = heap_file();
        let layout = Layout::Fixed { size: 4, pad: H5T_str_t::H5T_STR_NULLPAD };
        let got = decode(b"ab\0\0cdefg\0hi", layout, &f, "/s", 0).unwrap();
        assert_eq!(got, vec!["ab", "cdef", "g"]);
        let space = Layout::Fixed { size: 3, pad: H5T_str_t::H5T_STR_SPACEPAD };
        assert_eq!(decode(b"a  bc ", space, &f, "/s", 0).unwrap(), vec!["a", "bc"]);
    }
}
