//! Storage backends: a store (HDF5 file, Zarr directory) seen as a tree of groups and
//! arrays with JSON-like attributes, where every array's data is read chunk by chunk.
//!
//! This is the seam between the on-disk formats and the AnnData model. A backend builds
//! the whole metadata [`Group`] tree once at open (cost: O(number of elements)); data is
//! only touched through [`ArraySource`] when a view asks for it.

pub mod compound;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod counting;
pub mod error;
pub mod filters;
pub mod gate;
pub mod grid;
pub mod hdf5;
pub mod range;
pub mod shared_attrs;
pub mod zarr;

use std::sync::Arc;

pub use error::{StorageError, StorageResult};
pub use grid::ChunkGrid;
pub use shared_attrs::{AttrsInterner, SharedAttrs};

/// Attribute values, JSON-shaped. HDF5 object references become `String` paths
/// (absolute, e.g. `/obs/__categories/cell_type`), as Zarr stores them.
pub type AttrValue = serde_json::Value;

/// An element's attributes in a stable (sorted) order.
pub type Attrs = std::collections::BTreeMap<String, AttrValue>;

/// Fixed-size numeric element types, as decoded chunk bytes hold them (little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumType {
    /// A boolean, one byte (0 or 1).
    Bool,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// IEEE half-precision float.
    F16,
    /// IEEE single-precision float.
    F32,
    /// IEEE double-precision float.
    F64,
    /// Complex of two single-precision floats.
    C64,
    /// Complex of two double-precision floats.
    C128,
}

impl NumType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NumType::Bool | NumType::I8 | NumType::U8 => 1,
            NumType::I16 | NumType::U16 | NumType::F16 => 2,
            NumType::I32 | NumType::U32 | NumType::F32 => 4,
            NumType::I64 | NumType::U64 | NumType::F64 | NumType::C64 => 8,
            NumType::C128 => 16,
        }
    }

    /// The numpy `descr` string (`<f4`, `|b1`, …) for little-endian data.
    pub fn npy_descr(self) -> &'static str {
        match self {
            NumType::Bool => "|b1",
            NumType::I8 => "|i1",
            NumType::I16 => "<i2",
            NumType::I32 => "<i4",
            NumType::I64 => "<i8",
            NumType::U8 => "|u1",
            NumType::U16 => "<u2",
            NumType::U32 => "<u4",
            NumType::U64 => "<u8",
            NumType::F16 => "<f2",
            NumType::F32 => "<f4",
            NumType::F64 => "<f8",
            NumType::C64 => "<c8",
            NumType::C128 => "<c16",
        }
    }

    /// True for signed or unsigned integer types (not bool).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            NumType::I8
                | NumType::I16
                | NumType::I32
                | NumType::I64
                | NumType::U8
                | NumType::U16
                | NumType::U32
                | NumType::U64
        )
    }
}

/// One field of a compound (record) type, as [`ArraySource::read_chunk`] lays it out.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Byte offset of the field inside one packed record.
    pub offset: usize,
    /// The field's type.
    pub dtype: FieldType,
}

/// The type of a compound field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldType {
    /// `count` numbers of one type (count > 1 for sub-array fields such as `X_pca <f4 x 50`).
    Num(NumType, usize),
    /// Fixed-length byte string of `len` bytes, NUL-padded (numpy `S{len}`).
    FixedStr(usize),
    /// Variable-length string; [`ArraySource::read_field_strings`] reads it.
    VarStr,
}

/// The element type of an array.
#[derive(Clone, Debug, PartialEq)]
pub enum DType {
    /// Numbers or bools: chunks hold packed little-endian values.
    Num(NumType),
    /// Strings (variable-length or fixed); read with [`ArraySource::read_strings`].
    Str,
    /// Records; chunks hold packed records of `record_size` bytes (see [`Field::offset`]).
    Compound {
        /// The record's fields, in order.
        fields: Vec<Field>,
        /// Bytes of one packed record.
        record_size: usize,
    },
    /// A type annfs does not render; the string describes it for messages.
    Unsupported(String),
}

/// Stored bytes that are, unchanged, part of a read's answer: `len` bytes at `offset` of a
/// local file. A reader may move them with `splice` (no copy through user space) while it holds
/// `gate` entered (see [`gate::Gate::enter`]).
#[derive(Clone)]
pub struct FileSpan {
    /// The file; [`range::RangeRead::splice_fd`] gives its descriptor.
    pub file: Arc<dyn range::RangeRead>,
    /// Byte offset in the file.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
    /// The store's gate.
    pub gate: Arc<gate::Gate>,
}

/// Static facts about an array, known at open.
#[derive(Clone, Debug)]
pub struct ArrayMeta {
    /// Absolute path inside the store, e.g. `/obs/n_genes`.
    pub path: String,
    /// Element type.
    pub dtype: DType,
    /// Shape; empty for a scalar (0-d). For a null dataspace `null` is set and shape is empty.
    pub shape: Vec<u64>,
    /// True for an HDF5 NULL dataspace (anndata's `null` encoding).
    pub null: bool,
    /// How the array is split into chunks. Contiguous storage is presented as a grid too.
    pub grid: ChunkGrid,
    /// One line describing storage for `annfs info` (e.g. `chunks 1000x200, gzip(4)+shuffle`).
    pub storage_desc: String,
}

impl ArrayMeta {
    /// Number of elements (1 for a scalar, 0 for null).
    pub fn len(&self) -> u64 {
        if self.null {
            0
        } else {
            self.shape.iter().product()
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element for numeric and compound types (0 for strings and unsupported types).
    pub fn dtype_size(&self) -> usize {
        match &self.dtype {
            DType::Num(t) => t.size(),
            DType::Compound { record_size, .. } => *record_size,
            _ => 0,
        }
    }
}

/// Reads an array's data. Implementations must be cheap to call from many threads at once
/// (no global lock on numeric data).
pub trait ArraySource: Send + Sync {
    /// Static facts about the array.
    fn meta(&self) -> &ArrayMeta;

    /// Decodes the chunk at linear (C-order) index `index` of [`ArrayMeta::grid`] and returns its
    /// elements *clipped to the array's extent*, in C order, little-endian — for `DType::Num` packed
    /// values, for `DType::Compound` packed records. A chunk that was never written reads as the
    /// fill value. An index past the grid's last chunk is an error.
    fn read_chunk(&self, index: u64) -> StorageResult<Vec<u8>>;

    /// True when the array's chunk index is loaded (or it has none): locating a chunk then
    /// costs no request. Default: true.
    fn index_loaded(&self) -> bool {
        true
    }

    /// Loads the array's chunk index if it has one and it is not loaded (errors are left to
    /// the reads that need it). Default: nothing.
    fn load_index(&self) {}

    /// Hints that the chunks at linear indices `chunks` will be read soon, so the backend can
    /// start fetching their stored bytes in the background (a local file: the kernel reads
    /// them ahead). Must not block for long. Default: nothing.
    fn will_need(&self, _chunks: &[u64]) {}

    /// True when chunks are stored exactly as [`ArraySource::read_chunk`] returns them (no
    /// filter, little-endian numbers, every chunk spanning all dimensions but the first) in a
    /// file that is cheap to read again (local): readers then copy their bytes straight from the
    /// file into their own buffer with [`ArraySource::read_packed_into`] instead of caching
    /// decoded chunks. Default: false.
    fn packed_in_place(&self) -> bool {
        false
    }

    /// Fills `dst` with bytes `[from, from + dst.len())` of chunk `index` as
    /// [`ArraySource::read_chunk`] would return it, read straight from the file, when
    /// [`ArraySource::packed_in_place`] holds and the chunk is stored (`Ok(false)` otherwise,
    /// with `dst` untouched: the caller decodes the chunk the usual way).
    fn read_packed_into(&self, _index: u64, _from: u64, _dst: &mut [u8]) -> StorageResult<bool> {
        Ok(false)
    }

    /// Where bytes `[from, from + len)` of chunk `index`, as [`ArraySource::read_packed_into`]
    /// would read them, lie in a local file that can be spliced (`Ok(None)` when they cannot be
    /// named so: the caller reads them). Default: `None`.
    fn packed_span(&self, _index: u64, _from: u64, _len: u64) -> StorageResult<Option<FileSpan>> {
        Ok(None)
    }

    /// Reads elements `[start, end)` (flat C-order indices) of a string array. A range past the
    /// end (or with `start > end`) is an error.
    fn read_strings(&self, start: u64, end: u64) -> StorageResult<Vec<String>>;

    /// Calls `f` with each string of elements `[start, end)` in order, keeping none (the size
    /// pass of text views). Default: through [`ArraySource::read_strings`].
    fn each_string(&self, start: u64, end: u64, f: &mut dyn FnMut(&str)) -> StorageResult<()> {
        self.read_strings(start, end)?.iter().for_each(|s| f(s));
        Ok(())
    }

    /// Reads a variable-length string field of records `[start, end)` of a 1-D compound array. A
    /// range past the end (or with `start > end`) is an error.
    fn read_field_strings(&self, _field: &str, _start: u64, _end: u64) -> StorageResult<Vec<String>> {
        Err(StorageError::Unsupported {
            path: self.meta().path.clone(),
            reason: "variable-length string fields in compound datasets".into(),
        })
    }
}

/// A node of the store's metadata tree.
#[derive(Clone)]
pub enum Node {
    /// A group and its members.
    Group(Group),
    /// An array with its attributes and a reader for its data.
    Array(Array),
}

impl Node {
    /// The node's attributes.
    pub fn attrs(&self) -> &Attrs {
        match self {
            Node::Group(g) => &g.attrs,
            Node::Array(a) => &a.attrs,
        }
    }
}

/// A group: attributes plus named children in the store's order (creation order where the
/// store records it, otherwise sorted by name).
#[derive(Clone, Default)]
pub struct Group {
    /// Absolute path (`/` for the root).
    pub path: String,
    /// The group's attributes.
    pub attrs: SharedAttrs,
    /// Children in store order.
    pub children: Vec<(String, Node)>,
}

impl Group {
    /// Looks up a direct child by name.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|(n, _)| n == name).map(|(_, n)| n)
    }

    /// Looks up a descendant by a relative `/`-separated path.
    pub fn get_path(&self, path: &str) -> Option<&Node> {
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let first = parts.next()?;
        let mut node = self.get(first)?;
        for p in parts {
            match node {
                Node::Group(g) => node = g.get(p)?,
                Node::Array(_) => return None,
            }
        }
        Some(node)
    }
}

/// An array node: attributes and a shared reader.
#[derive(Clone)]
pub struct Array {
    /// The array's attributes.
    pub attrs: SharedAttrs,
    /// Reads the array's data.
    pub source: Arc<dyn ArraySource>,
}

impl Array {
    /// Static facts about the array.
    pub fn meta(&self) -> &ArrayMeta {
        self.source.meta()
    }
}

/// Facts about the opened store, for `info.json` and source-change checks.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoreInfo {
    /// `hdf5` or `zarr`.
    pub format: &'static str,
    /// The store path or URL as given.
    pub location: String,
    /// Size in bytes of the store file (0 for directories).
    pub size: u64,
    /// Modification time (seconds since the epoch), when known.
    pub mtime: Option<i64>,
    /// Inode number of the store file or directory, when known.
    pub inode: Option<u64>,
    /// The version of a remote store file (ETag or Last-Modified), when known.
    pub version: Option<String>,
}

impl StoreInfo {
    /// The name that identifies the store whatever path it was given by: a URL as given, a local
    /// path made canonical (`./a.h5ad` and `/data/a.h5ad` are one store). Caches keyed by the
    /// store (indexes, remembered sizes) use it.
    pub fn canonical_location(&self) -> std::io::Result<String> {
        if range::Remote::parse(&self.location).is_some() {
            return Ok(self.location.clone());
        }
        Ok(std::fs::canonicalize(&self.location)?.display().to_string())
    }
}

/// An opened store: its metadata tree and facts about it.
pub struct Store {
    /// The root group.
    pub root: Group,
    /// Facts about the store.
    pub info: StoreInfo,
    /// Closed when the store file changes under the mount (reads then fail).
    pub gate: Arc<gate::Gate>,
}

/// Options for opening a store (they only matter for remote stores).
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Timeouts, retries, signing, the disk cache and counters of remote reads.
    pub remote: range::RemoteOptions,
}

/// Opens a store, choosing the backend from what the location is: a URL (`http(s)://`,
/// `s3://`) → a remote HDF5 file or Zarr store (told apart by the object's bytes); a directory
/// → Zarr (v2 or v3); anything else → HDF5.
pub fn open(location: &str) -> StorageResult<Store> {
    open_with(location, &OpenOptions::default())
}

/// [`open`] with options.
pub fn open_with(location: &str, opts: &OpenOptions) -> StorageResult<Store> {
    if let Some(remote) = range::Remote::parse(location) {
        return open_remote(location, &remote, opts);
    }
    let lower = location.to_ascii_lowercase();
    let path = std::path::Path::new(location);
    let meta = std::fs::metadata(path).map_err(|e| StorageError::Io {
        path: location.to_string(),
        source: e,
    })?;
    if meta.is_dir() {
        return zarr::open_dir(path);
    }
    if lower.ends_with(".zip") {
        return Err(StorageError::unsupported(
            location,
            "zip-packed Zarr stores (.zarr.zip) are not supported; unzip it and mount the directory",
        ));
    }
    hdf5::open(path)
}

/// A remote read's failure at open, naming the URL and the cause.
pub fn remote_error(url: &str, e: range::FetchError) -> StorageError {
    use range::FetchError as F;
    let reason = match &e {
        F::Status { status: 401 | 403, .. } => format!("access denied ({e})"),
        F::Status { status: 404, .. } => format!("not found ({e})"),
        F::Status { status: 301 | 307 | 400, .. } => format!("refused ({e}); wrong region or endpoint?"),
        F::Config { reason, .. } => format!("cannot set up the client: {reason}"),
        _ => e.to_string(),
    };
    StorageError::NotAStore { path: url.to_string(), reason }
}

/// Opens a remote store: an object with an HDF5 signature is an HDF5 file, anything else is
/// tried as a Zarr prefix.
fn open_remote(location: &str, remote: &range::Remote, opts: &OpenOptions) -> StorageResult<Store> {
    let started = std::time::Instant::now();
    let fetcher = Arc::new(range::location::fetcher(remote, &opts.remote).map_err(|e| remote_error(location, e))?);
    let stats = opts.remote.stats.clone();
    let before = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    let leaf = remote.leaf().to_ascii_lowercase();
    let hdf5_named = [".h5ad", ".h5", ".hdf5"].iter().any(|s| leaf.ends_with(s));
    let object_probed = !(leaf.ends_with(".zarr") || location.ends_with('/'));
    let object = if !object_probed {
        None
    } else {
        match fetcher.head("") {
            Ok(m) => m.filter(|m| m.size > 0),
            Err(e) => return Err(remote_error(location, e)),
        }
    };
    let store = match object {
        Some(meta) => {
            let file = Arc::new(range::object::RemoteFile::new(fetcher.clone(), meta));
            let is_hdf5 = hdf5::find_superblock(&*file)
                .map_err(|e| StorageError::NotAStore { path: location.to_string(), reason: e.to_string() })?
                .is_some();
            if is_hdf5 {
                let info = StoreInfo {
                    format: "hdf5",
                    location: location.to_string(),
                    size: range::RangeRead::len(&*file),
                    mtime: None,
                    inode: None,
                    version: range::RangeRead::version(&*file).map(str::to_string),
                };
                hdf5::open_remote(file, info)
            } else if hdf5_named {
                Err(StorageError::NotAStore { path: location.to_string(), reason: "no HDF5 signature".into() })
            } else {
                zarr::open_remote(location, fetcher, true)
            }
        }
        None if hdf5_named => Err(remote_error(
            location,
            range::FetchError::Status { url: location.to_string(), status: 404, detail: None },
        )),
        None => zarr::open_remote(location, fetcher, object_probed),
    }?;
    log::info!(
        "{location}: opened ({}) in {:.2} s with {} requests",
        store.info.format,
        started.elapsed().as_secs_f64(),
        stats.requests.load(std::sync::atomic::Ordering::Relaxed) - before
    );
    Ok(store)
}

/// Path of a committed test fixture: `rel` under `tests/fixtures/` (one copy for every test).
#[cfg(test)]
pub(crate) fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}
