//! Zarr backend (format v2 and v3, sharded or not), local directories or `http(s)://` URLs, on
//! `zarrs`.
//!
//! Opening reads the consolidated metadata when present (one read), else walks the directory
//! ([`meta`]); every array becomes a [`source::ZarrSource`]. Data types are mapped in [`dtype`],
//! remote stores are read through the byte-range layer by [`remote`].

mod ahead;
mod contain;
mod inner;
mod shards;
pub mod dtype;
pub mod meta;
pub mod remote;
pub mod source;
mod strings;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use zarrs::array::CodecOptions;
use zarrs::storage::ReadableStorageTraits;

use meta::{NodeMeta, Nodes};
use source::ZarrSource;

use super::{Array, Attrs, AttrsInterner, Group, Node, StorageError, StorageResult, Store, StoreInfo};

/// Paths nested deeper than this are not built (guards hostile metadata).
const MAX_DEPTH: usize = 64;

/// Codec options for every read: `zarrs` decodes one chunk on one thread (the read worker's);
/// parallelism comes from concurrent requests.
fn codec_options() -> CodecOptions {
    CodecOptions::default().with_concurrent_target(1)
}

/// Opens a local Zarr store directory.
pub fn open_dir(path: &Path) -> StorageResult<Store> {
    let location = path.display().to_string();
    let storage = zarrs::filesystem::FilesystemStore::new(path)
        .map_err(|e| StorageError::NotAStore { path: location.clone(), reason: e.to_string() })?;
    let read = |key: &str| -> StorageResult<Option<Vec<u8>>> {
        match std::fs::read(path.join(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(StorageError::Io { path: format!("{location}/{key}"), source: e }),
        }
    };
    let nodes = meta::collect(&read, Some(path), &location).map_err(|e| prefix(e, &location))?;
    let mtime = ["zarr.json", ".zmetadata", ".zgroup"]
        .iter()
        .find_map(|k| std::fs::metadata(path.join(k)).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let inode = std::fs::metadata(path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let info = StoreInfo { format: "zarr", location, size: 0, mtime, inode, version: None };
    build(Arc::new(storage), nodes, info, ahead::AheadTo::Local(path.into()))
}

/// Opens a Zarr store under a remote prefix (`http(s)://…`, `s3://bucket/prefix`, …), reading keys
/// through `fetcher`. Errors name `url`; `not_hdf5` says the URL was also tried as an HDF5 file.
pub fn open_remote(url: &str, fetcher: Arc<crate::storage::range::Fetcher>, not_hdf5: bool) -> StorageResult<Store> {
    let store = Arc::new(remote::RemoteStore::new(fetcher));
    let read = |key: &str| -> StorageResult<Option<Vec<u8>>> {
        store.fetch(key, None).map_err(|e| crate::storage::remote_error(url, e))
    };
    let nodes = meta::collect(&read, None, url).map_err(|e| match e {
        StorageError::NotAStore { path, reason } if reason.starts_with("no zarr.json") => StorageError::NotAStore {
            path,
            reason: if not_hdf5 {
                "neither an HDF5 file nor a Zarr store (no HDF5 signature; zarr.json, .zmetadata and .zgroup: HTTP 404)"
            } else {
                "no Zarr store at this URL (zarr.json, .zmetadata and .zgroup: HTTP 404)"
            }
            .into(),
        },
        other => prefix(other, url),
    })?;
    // The consolidated metadata is rewritten by every write of the store (anndata, zarr-python):
    // its version identifies the store for the gene-column indexes, as the root metadata file's
    // mtime does for a local store. One HEAD; without a version the store is not indexed.
    let root_doc = match nodes.version {
        meta::Version::V3 => "zarr.json",
        meta::Version::V2 => ".zmetadata",
    };
    let version = store.version(root_doc).map(|v| format!("{root_doc} {v}"));
    let info = StoreInfo { format: "zarr", location: url.to_string(), size: 0, mtime: None, inode: None, version };
    let ahead = ahead::AheadTo::Remote(store.clone());
    build(store, nodes, info, ahead)
}

/// Names metadata keys relative to the store in errors (`store/obs/zarr.json: …`).
fn prefix(e: StorageError, location: &str) -> StorageError {
    match e {
        StorageError::Corrupt { path, reason } if !path.starts_with(location) => {
            StorageError::Corrupt { path: format!("{location}/{path}"), reason }
        }
        other => other,
    }
}

/// Builds the group tree (children sorted by name) and one source per array; `ahead` is where
/// chunks are sent ahead of their reads.
fn build(storage: Arc<dyn ReadableStorageTraits>, nodes: Nodes, info: StoreInfo, ahead: ahead::AheadTo) -> StorageResult<Store> {
    // Every ancestor is registered too: consolidated metadata may omit intermediate groups.
    let mut kids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in nodes.nodes.keys().filter(|k| !k.is_empty()) {
        let mut child = key.as_str();
        loop {
            let (parent, name) = child.rsplit_once('/').unwrap_or(("", child));
            if !kids.entry(parent.to_string()).or_default().insert(name.to_string()) || parent.is_empty() {
                break;
            }
            child = parent;
        }
    }
    log::debug!(
        "{}: zarr {:?}, {} nodes, {}",
        info.location,
        nodes.version,
        nodes.nodes.len(),
        if nodes.consolidated { "consolidated metadata" } else { "walked" }
    );
    let ctx = Ctx { storage, ahead, nodes: &nodes, kids: &kids, opts: codec_options(), attrs: Default::default() };
    let root_attrs = match nodes.nodes.get("") {
        Some(NodeMeta::Group(a)) => a.clone(),
        _ => Attrs::new(),
    };
    let root = ctx.group("", root_attrs, 0)?;
    Ok(Store { root, info, gate: Default::default() })
}

struct Ctx<'a> {
    storage: Arc<dyn ReadableStorageTraits>,
    ahead: ahead::AheadTo,
    nodes: &'a Nodes,
    kids: &'a BTreeMap<String, BTreeSet<String>>,
    opts: CodecOptions,
    /// Equal attribute sets, shared.
    attrs: std::cell::RefCell<AttrsInterner>,
}

impl Ctx<'_> {
    fn group(&self, path: &str, attrs: Attrs, depth: usize) -> StorageResult<Group> {
        let mut children = Vec::new();
        for name in self.kids.get(path).into_iter().flatten() {
            let child = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
            let node = match self.nodes.nodes.get(&child) {
                Some(NodeMeta::Array(doc, attrs)) => {
                    let mut src = ZarrSource::open(self.storage.clone(), &format!("/{child}"), doc, self.nodes.version, self.opts)?;
                    src.send_ahead(self.ahead.clone());
                    Node::Array(Array { attrs: self.attrs.borrow_mut().share(attrs.clone()), source: Arc::new(src) })
                }
                _ if depth >= MAX_DEPTH => {
                    log::warn!("/{child}: groups nested deeper than {MAX_DEPTH}; not descending");
                    continue;
                }
                Some(NodeMeta::Group(a)) => Node::Group(self.group(&child, a.clone(), depth + 1)?),
                None => Node::Group(self.group(&child, Attrs::new(), depth + 1)?),
            };
            children.push((name.clone(), node));
        }
        let attrs = self.attrs.borrow_mut().share(attrs);
        Ok(Group { path: format!("/{path}"), attrs, children })
    }
}
