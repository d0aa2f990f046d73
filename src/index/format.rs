//! The on-disk format of a transposed index, its writer and its validating reader.
//!
//! ```text
//! [0, 8)     magic  b"ANNFSIX1"
//! [8, 12)    length of the header JSON (u32 LE)
//! [12, 16)   CRC-32 of the header JSON
//! [16, ..)   header JSON: the [`Layout`] (store identity, matrix, shape, nnz, dtypes, block size)
//! H          = header rounded up to 4096: section `indptr`  ((out_major + 1) × index width)
//!            then section `indices` (nnz × index width), then section `data` (nnz × value width)
//!            then the CRC-32 of every block of every section (u32 LE, sections in order)
//!            then the CRC-32 of that table
//! ```
//!
//! Everything but the block checksums follows from the [`Layout`], so a file is valid only if its
//! header equals the layout expected for the store and matrix at hand, its length is exact and
//! its checksum table is intact; every block is checked against its CRC when it is read. The
//! writer fills each section front to back (CRCs computed as it goes), writes the header last,
//! then fsyncs and renames the temporary file into place.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::IndexError;

/// File magic (the digit is the format version).
const MAGIC: &[u8; 8] = b"ANNFSIX1";
/// Bumped whenever the layout or contents change.
pub const VERSION: u32 = 1;
/// Bytes per checksummed block (and per cached chunk when read).
pub const BLOCK: u64 = 64 << 10;
/// The header area is a multiple of this.
const HEADER_ALIGN: u64 = 4096;
/// Longest header accepted (a damaged length field must not drive a huge allocation).
const MAX_HEADER: u32 = 1 << 20;

/// Which store an index belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Canonical path of the store.
    pub location: String,
    /// File size in bytes (0 for directories).
    pub size: u64,
    /// Modification time (seconds since the epoch).
    pub mtime: i64,
    /// Inode number, when known.
    pub inode: Option<u64>,
    /// A remote store's version (ETag or Last-Modified); its mtime is then 0.
    #[serde(default)]
    pub etag: Option<String>,
}

/// Everything an index holds, known before it is built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The store.
    pub store: Identity,
    /// Store path of the matrix (`/X`, `/layers/counts`, `/raw/X`).
    pub matrix: String,
    /// The stored format, `csr` or `csc` (the index holds the other one).
    pub stored: String,
    /// `(rows, columns)` of the matrix.
    pub shape: [u64; 2],
    /// Stored entries.
    pub nnz: u64,
    /// Stored dtypes of `data`, `indices`, `indptr` (numpy descr).
    pub stored_types: [String; 3],
    /// Value dtype of the index (as stored).
    pub data_type: String,
    /// Index dtype of the index (`<i4` or `<i8`, as scipy chooses).
    pub index_type: String,
    /// Bytes per checksummed block.
    pub block: u64,
}

/// The three sections, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Pointers along the index's major axis.
    Indptr = 0,
    /// Minor-axis indices.
    Indices = 1,
    /// Values.
    Data = 2,
}

/// Byte offsets of the sections and tables of a file with a given layout.
#[derive(Clone, Debug)]
pub struct Geometry {
    /// The header bytes (magic, length, CRC, JSON).
    header: Vec<u8>,
    /// `(offset, length)` of each section.
    sections: [(u64, u64); 3],
    /// First entry of each section in the CRC table.
    first_block: [u64; 3],
    /// Offset of the CRC table.
    table: u64,
    /// Exact file length.
    pub file_len: u64,
}

impl Layout {
    /// Bytes per index value.
    pub fn index_width(&self) -> u64 {
        if self.index_type == "<i8" {
            8
        } else {
            4
        }
    }

    /// Length of the index's major axis (columns for a CSC index, rows for CSR).
    pub fn out_major(&self) -> u64 {
        if self.stored == "csr" {
            self.shape[1]
        } else {
            self.shape[0]
        }
    }

    /// The file geometry of this layout, with `data_width` bytes per value.
    pub fn geometry(&self, data_width: u64) -> Result<Geometry, IndexError> {
        let json = serde_json::to_vec(self).map_err(|e| IndexError::invalid("index header", e.to_string()))?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(json.len() as u32).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        header.extend_from_slice(&json);
        let iw = self.index_width();
        let lens = [
            self.out_major().checked_add(1).and_then(|n| n.checked_mul(iw)),
            self.nnz.checked_mul(iw),
            self.nnz.checked_mul(data_width),
        ];
        let mut at = (header.len() as u64).div_ceil(HEADER_ALIGN) * HEADER_ALIGN;
        let (mut sections, mut first_block, mut blocks) = ([(0, 0); 3], [0; 3], 0u64);
        for (i, len) in lens.into_iter().enumerate() {
            let len = len.ok_or_else(|| IndexError::invalid(&self.matrix, "index too large"))?;
            sections[i] = (at, len);
            first_block[i] = blocks;
            blocks += len.div_ceil(self.block);
            at = at.checked_add(len).ok_or_else(|| IndexError::invalid(&self.matrix, "index too large"))?;
        }
        let file_len = at + blocks * 4 + 4;
        Ok(Geometry { header, sections, first_block, table: at, file_len })
    }
}

/// An opened, validated index file.
pub struct IndexFile {
    file: File,
    path: PathBuf,
    geo: Geometry,
    block: u64,
    crcs: Vec<u32>,
}

impl IndexFile {
    /// Opens `path` and checks it against `layout`: header, exact length, checksum table.
    pub fn open(path: &Path, layout: &Layout, data_width: u64) -> Result<IndexFile, IndexError> {
        let io = |e| IndexError::io(path, e);
        let bad = |why: &str| IndexError::invalid(path.display().to_string(), why);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = [0u8; 16];
        file.read_exact_at(&mut head, 0).map_err(|_| bad("shorter than a header"))?;
        let json_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if &head[..8] != MAGIC || json_len > MAX_HEADER {
            return Err(bad("not an annfs index of this version"));
        }
        let mut json = vec![0u8; json_len as usize];
        file.read_exact_at(&mut json, 16).map_err(|_| bad("truncated header"))?;
        if crc32fast::hash(&json).to_le_bytes() != head[12..16] {
            return Err(bad("header checksum mismatch"));
        }
        let found: Layout = serde_json::from_slice(&json).map_err(|_| bad("unreadable header"))?;
        if &found != layout {
            return Err(bad("made for another store, matrix or version (stale)"));
        }
        let geo = layout.geometry(data_width)?;
        if len != geo.file_len {
            return Err(bad(&format!("{len} bytes, expected {} (truncated or partial)", geo.file_len)));
        }
        let mut table = vec![0u8; (geo.file_len - geo.table) as usize];
        file.read_exact_at(&mut table, geo.table).map_err(io)?;
        let (crcs, tail) = table.split_at(table.len() - 4);
        if crc32fast::hash(crcs).to_le_bytes() != tail {
            return Err(bad("checksum table damaged"));
        }
        let crcs = crcs.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(IndexFile { file, path: path.to_path_buf(), geo, block: layout.block, crcs })
    }

    /// Reads block `b` of `section`, checking its CRC.
    pub fn read_block(&self, section: Section, b: u64) -> Result<Vec<u8>, IndexError> {
        let (off, len) = self.geo.sections[section as usize];
        let start = b.saturating_mul(self.block);
        if start >= len {
            return Err(IndexError::invalid(self.path.display().to_string(), format!("block {b} past the section")));
        }
        let mut buf = vec![0u8; (len - start).min(self.block) as usize];
        self.file.read_exact_at(&mut buf, off + start).map_err(|e| IndexError::io(&self.path, e))?;
        let want = self.crcs.get((self.geo.first_block[section as usize] + b) as usize).copied();
        if want != Some(crc32fast::hash(&buf)) {
            return Err(IndexError::invalid(self.path.display().to_string(), format!("block {b} of {section:?}: checksum mismatch")));
        }
        Ok(buf)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Running CRCs of one section written front to back.
#[derive(Default)]
struct SectionCrc {
    written: u64,
    hasher: crc32fast::Hasher,
    in_block: u64,
    crcs: Vec<u32>,
}

/// Writes an index file into a temporary file next to its final path, then renames it.
pub struct IndexWriter {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    geo: Geometry,
    block: u64,
    crc: [SectionCrc; 3],
    /// Bytes written by [`IndexWriter::write_at`] per section (their CRCs are computed at the end).
    placed: [std::sync::atomic::AtomicU64; 3],
    done: bool,
}

impl IndexWriter {
    /// Starts writing the index of `layout` to `dest` (through `dest.tmp.<pid>.<n>`).
    pub fn create(dest: &Path, layout: &Layout, data_width: u64) -> Result<IndexWriter, IndexError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dest.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let file = File::options().read(true).write(true).create_new(true).open(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        let geo = layout.geometry(data_width)?;
        // The whole file's blocks at once: placed writes then fill allocated blocks instead of
        // reserving them page by page. Not every filesystem can (a failure changes nothing).
        // SAFETY: plain system call on a descriptor this function owns; no memory is passed.
        unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, geo.file_len as libc::off_t) };
        Ok(IndexWriter {
            file,
            tmp,
            dest: dest.to_path_buf(),
            geo,
            block: layout.block,
            crc: Default::default(),
            placed: Default::default(),
            done: false,
        })
    }

    /// Appends `bytes` to `section` (each section is written front to back).
    pub fn append(&mut self, section: Section, mut bytes: &[u8]) -> Result<(), IndexError> {
        let (off, len) = self.geo.sections[section as usize];
        let c = &mut self.crc[section as usize];
        if c.written + bytes.len() as u64 > len {
            return Err(IndexError::invalid(self.tmp.display().to_string(), format!("{section:?} overflows")));
        }
        self.file.write_all_at(bytes, off + c.written).map_err(|e| IndexError::io(&self.tmp, e))?;
        c.written += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((self.block - c.in_block) as usize).min(bytes.len());
            c.hasher.update(&bytes[..take]);
            c.in_block += take as u64;
            bytes = &bytes[take..];
            if c.in_block == self.block {
                c.crcs.push(std::mem::take(&mut c.hasher).finalize());
                c.in_block = 0;
            }
        }
        Ok(())
    }

    /// Starts writing the file's dirty pages to disk without waiting for them, so that the
    /// final sync waits only for what is written after: for a writer whose bytes so far are
    /// final (appended sections). Failures are left for that sync to report.
    pub fn start_writeback(&self) {
        // SAFETY: plain system call on a descriptor this writer owns; no memory is passed.
        unsafe { libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }

    /// Writes `bytes` at byte `at` of `section`, from any thread. A section is written either
    /// this way (every byte exactly once; checksums computed by [`IndexWriter::finish`] from the
    /// file) or by [`IndexWriter::append`], not both.
    pub fn write_at(&self, section: Section, at: u64, bytes: &[u8]) -> Result<(), IndexError> {
        let (off, len) = self.geo.sections[section as usize];
        if at.checked_add(bytes.len() as u64).is_none_or(|e| e > len) {
            return Err(IndexError::invalid(self.tmp.display().to_string(), format!("{section:?} overflows")));
        }
        self.file.write_all_at(bytes, off + at).map_err(|e| IndexError::io(&self.tmp, e))?;
        self.placed[section as usize].fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Computes the block CRCs of a section written by [`IndexWriter::write_at`] by reading it back.
    fn checksum_placed(&mut self, i: usize) -> Result<(), IndexError> {
        let (off, len) = self.geo.sections[i];
        let piece = (self.block * 64).min(len.max(1));
        let mut buf = vec![0u8; piece as usize];
        let c = &mut self.crc[i];
        let mut at = 0u64;
        while at < len {
            let n = piece.min(len - at) as usize;
            self.file.read_exact_at(&mut buf[..n], off + at).map_err(|e| IndexError::io(&self.tmp, e))?;
            c.crcs.extend(buf[..n].chunks(self.block as usize).map(crc32fast::hash));
            at += n as u64;
        }
        c.written = len;
        Ok(())
    }

    /// Writes the checksum table and the header, syncs, and renames the file into place.
    /// Returns the file's size.
    pub fn finish(mut self) -> Result<u64, IndexError> {
        let io = |p: &Path, e| IndexError::io(p, e);
        let t0 = std::time::Instant::now();
        // The sections go to disk while their checksums are computed; the sync below then
        // waits only for the table and the header.
        let file = self.file.try_clone().map_err(|e| io(&self.tmp, e))?;
        let early = std::thread::scope(|s| {
            let sync = s.spawn(move || file.sync_data());
            for i in 0..3 {
                let placed = self.placed[i].load(std::sync::atomic::Ordering::Relaxed);
                if placed > 0 && self.crc[i].written == 0 && placed == self.geo.sections[i].1 {
                    self.checksum_placed(i)?;
                }
            }
            Ok::<_, IndexError>(sync.join())
        })?;
        if let Ok(Err(e)) = early {
            return Err(io(&self.tmp, e));
        }
        let mut table = Vec::new();
        for (i, c) in self.crc.iter_mut().enumerate() {
            if c.written != self.geo.sections[i].1 {
                return Err(IndexError::invalid(self.tmp.display().to_string(), "a section was not filled"));
            }
            if c.in_block > 0 {
                c.crcs.push(std::mem::take(&mut c.hasher).finalize());
            }
            table.extend(c.crcs.iter().flat_map(|v| v.to_le_bytes()));
        }
        let tail = crc32fast::hash(&table);
        table.extend_from_slice(&tail.to_le_bytes());
        self.file.write_all_at(&table, self.geo.table).map_err(|e| io(&self.tmp, e))?;
        self.file.write_all_at(&self.geo.header, 0).map_err(|e| io(&self.tmp, e))?;
        self.file.set_len(self.geo.file_len).map_err(|e| io(&self.tmp, e))?;
        let t1 = t0.elapsed();
        self.file.sync_all().map_err(|e| io(&self.tmp, e))?;
        log::debug!("{}: checksummed in {:.2} s, synced in {:.2} s", self.tmp.display(), t1.as_secs_f64(), (t0.elapsed() - t1).as_secs_f64());
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| io(&self.dest, e))?;
        self.done = true;
        if let Some(dir) = self.dest.parent() {
            // Make the rename durable; a failure here only risks a rebuild after a crash.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(self.geo.file_len)
    }
}

impl Drop for IndexWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Geometry {
    /// The header bytes (for tests).
    #[cfg(test)]
    pub fn header_len(&self) -> u64 {
        self.header.len() as u64
    }
}

/// Writes `bytes` to a fresh file (used for probing a directory's writability).
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(format!(".probe.{}", std::process::id()));
    let r = File::create(&p).and_then(|mut f| f.write_all(b"annfs"));
    let _ = std::fs::remove_file(&p);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            version: VERSION,
            store: Identity { location: "/s.h5ad".into(), size: 10, mtime: 3, inode: Some(4), etag: None },
            matrix: "/X".into(),
            stored: "csr".into(),
            shape: [5, 3],
            nnz: 70_000,
            stored_types: ["<f4".into(), "<i4".into(), "<i4".into()],
            data_type: "<f4".into(),
            index_type: "<i4".into(),
            block: 4096,
        }
    }

    fn write(dir: &Path, l: &Layout) -> PathBuf {
        let p = dir.join("x.idx");
        let mut w = IndexWriter::create(&p, l, 4).unwrap();
        w.append(Section::Indptr, &[1u8; 16]).unwrap();
        for chunk in vec![2u8; 280_000].chunks(777) {
            w.append(Section::Indices, chunk).unwrap();
        }
        w.append(Section::Data, &vec![3u8; 280_000]).unwrap();
        w.finish().unwrap();
        p
    }

    #[test]
    fn round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout();
        let p = write(dir.path(), &l);
        let f = IndexFile::open(&p, &l, 4).unwrap();
        assert_eq!(f.read_block(Section::Indices, 68).unwrap(), vec![2u8; 280_000 - 68 * 4096]);
        assert_eq!(f.read_block(Section::Indptr, 0).unwrap(), vec![1u8; 16]);
        assert!(f.read_block(Section::Data, 69).is_err(), "past the end");
        // Another store, a truncated file, a flipped byte in a block, a damaged header.
        let other = Layout { store: Identity { mtime: 9, ..l.store.clone() }, ..l.clone() };
        assert!(IndexFile::open(&p, &other, 4).is_err());
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(IndexFile::open(&p, &l, 4).is_err());
        let mut flipped = bytes.clone();
        let at = (l.geometry(4).unwrap().header_len().div_ceil(4096) * 4096 + 16 + 5000) as usize;
        flipped[at] ^= 1;
        std::fs::write(&p, &flipped).unwrap();
        let f = IndexFile::open(&p, &l, 4).unwrap();
        assert!(f.read_block(Section::Indices, 1).is_err(), "block CRC");
        assert!(f.read_block(Section::Indices, 2).is_ok());
        let mut head = bytes.clone();
        head[20] ^= 1;
        std::fs::write(&p, &head).unwrap();
        assert!(IndexFile::open(&p, &l, 4).is_err());
    }

    #[test]
    fn unfinished_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout();
        let p = dir.path().join("y.idx");
        let mut w = IndexWriter::create(&p, &l, 4).unwrap();
        w.append(Section::Indptr, &[0u8; 16]).unwrap();
        assert!(w.append(Section::Indptr, &[0u8; 1]).is_err(), "overflow");
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let w = IndexWriter::create(&p, &l, 4).unwrap();
        assert!(w.finish().is_err(), "sections not filled");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
