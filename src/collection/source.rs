//! Where a collection's stores live: a local directory ([`LocalDir`]) or an object-store prefix
//! ([`BucketPrefix`]: S3, GCS, Azure). A source lists one directory level at a time, tells each store's version (a
//! store is reopened when it changes) and names the location the storage layer opens.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::Kind;
use crate::storage::range::cloud::BucketClient;
use crate::storage::range::{Remote, RemoteOptions};
use crate::storage::StoreInfo;

/// The stores' home.
pub trait Source: Send + Sync {
    /// The source as the user gave it (path or URL).
    fn describe(&self) -> String;
    /// The shown entries of directory `rel` (unsorted); an error says why it cannot be listed.
    fn list(&self, rel: &str) -> Result<Vec<(String, Kind)>, String>;
    /// What the entry at `rel` is, asked directly (`None`: not shown, or only a listing can tell).
    fn classify(&self, rel: &str) -> Option<Kind>;
    /// The size of the file at `rel`, when it is one.
    fn file_size(&self, rel: &str) -> Option<u64>;
    /// The version of the store at `rel` (`None`: unknown; opened once).
    fn version(&self, rel: &str) -> Option<String>;
    /// What [`crate::storage::open_with`] opens for the store at `rel`.
    fn location(&self, rel: &str, kind: Kind) -> String;
    /// Bytes of the store at `rel` (a Zarr directory: all its files; 0 when unknown).
    fn bytes(&self, rel: &str, kind: Kind, info: &StoreInfo) -> u64;
    /// Facts about the collection itself.
    fn info(&self) -> StoreInfo;
}

/// True when `path` is a directory holding a Zarr group (`.zgroup` for v2, `zarr.json` for v3).
pub fn is_zarr_store(path: &Path) -> bool {
    path.join(".zgroup").is_file() || path.join("zarr.json").is_file()
}

/// The source `store` names when it is a collection: a local directory that is not a Zarr
/// store, or an object-store prefix such as `s3://bucket/prefix/` (ending in `/`, or the bucket
/// itself) whose name does not end in `.zarr`; `None` for a single store.
pub fn source_for(store: &str, opts: &RemoteOptions) -> Result<Option<Box<dyn Source>>, String> {
    match Remote::parse(store) {
        Some(Remote::Bucket { service, bucket, key }) => {
            let leaf = key.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if !(key.is_empty() || key.ends_with('/')) || leaf.to_ascii_lowercase().ends_with(".zarr") {
                return Ok(None);
            }
            let c = &opts.config;
            let client = BucketClient::new(service, &bucket, &key, &opts.cloud, c.connect_timeout, c.request_timeout)
                .map_err(|e| e.to_string())?;
            Ok(Some(Box::new(BucketPrefix { client, url: store.trim_end_matches('/').to_string(), etags: Mutex::default() })))
        }
        Some(Remote::Http(_)) => Ok(None),
        None => {
            let path = Path::new(store);
            Ok((path.is_dir() && !is_zarr_store(path)).then(|| Box::new(LocalDir { root: path.to_path_buf() }) as Box<dyn Source>))
        }
    }
}

/// How the entry `name` at `path` shows in a local collection, if at all (hidden files, files
/// that are not `.h5ad`, names that are not UTF-8 and unreadable entries are left out).
pub fn classify(path: &Path, name: &str) -> Option<Kind> {
    if name.starts_with('.') {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    kind_of_type(path, name, meta.file_type())
}

/// [`classify`] of a listed entry, from the type its directory listing gives: no `stat` for a
/// plain file or directory (a collection of thousands of `.h5ad` files on a network filesystem
/// is listed without a metadata request per file); a symbolic link, or a type the filesystem
/// does not report, is followed with [`classify`].
fn classify_listed(e: &std::fs::DirEntry, name: &str) -> Option<Kind> {
    match e.file_type() {
        Ok(t) if !name.starts_with('.') && (t.is_file() || t.is_dir()) => kind_of_type(&e.path(), name, t),
        _ => classify(&e.path(), name),
    }
}

/// How an entry of type `t` (symbolic links followed) at `path` shows in a collection.
fn kind_of_type(path: &Path, name: &str, t: std::fs::FileType) -> Option<Kind> {
    if t.is_dir() {
        Some(if is_zarr_store(path) { Kind::Zarr } else { Kind::Dir })
    } else if t.is_file() && name.to_ascii_lowercase().ends_with(".h5ad") {
        Some(Kind::H5ad)
    } else {
        None
    }
}

/// A local directory.
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

impl Source for LocalDir {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, rel: &str) -> Result<Vec<(String, Kind)>, String> {
        let dir = self.path(rel);
        let rd = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        Ok(rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                classify_listed(&e, &name).map(|k| (name, k))
            })
            .collect())
    }

    fn classify(&self, rel: &str) -> Option<Kind> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        classify(&self.path(rel), name)
    }

    fn file_size(&self, rel: &str) -> Option<u64> {
        std::fs::metadata(self.path(rel)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    fn version(&self, rel: &str) -> Option<String> {
        let m = std::fs::metadata(self.path(rel)).ok()?;
        Some(format!("{}-{}-{}.{}", m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }

    fn location(&self, rel: &str, _kind: Kind) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    fn bytes(&self, rel: &str, kind: Kind, info: &StoreInfo) -> u64 {
        match kind {
            Kind::Zarr => dir_bytes(&self.path(rel)),
            _ => info.size,
        }
    }

    fn info(&self) -> StoreInfo {
        let meta = std::fs::metadata(&self.root).ok();
        StoreInfo {
            format: "collection",
            location: self.describe(),
            size: 0,
            mtime: meta.as_ref().map(|m| m.mtime()),
            inode: meta.as_ref().map(|m| m.ino()),
            version: None,
        }
    }
}

/// Total bytes of the files below `path`.
fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

/// An object-store prefix: one delimited listing (S3's `ListObjectsV2`) per directory listing. A sub-prefix whose
/// name ends in `.zarr` is a Zarr store (telling others apart would cost requests per entry);
/// objects ending in `.h5ad` are HDF5 stores, versioned by the ETag the listing gave.
pub struct BucketPrefix {
    client: BucketClient,
    url: String,
    etags: Mutex<HashMap<String, String>>,
}

impl Source for BucketPrefix {
    fn describe(&self) -> String {
        format!("{}/", self.url)
    }

    fn list(&self, rel: &str) -> Result<Vec<(String, Kind)>, String> {
        let level = self.client.list(rel).map_err(|e| format!("cannot list {}/{rel}: {e}", self.url))?;
        let mut out = Vec::new();
        for p in level.prefixes.into_iter().filter(|p| !p.starts_with('.')) {
            let kind = if p.to_ascii_lowercase().ends_with(".zarr") { Kind::Zarr } else { Kind::Dir };
            out.push((p, kind));
        }
        let mut etags = self.etags.lock();
        for (name, _size, etag) in level.objects {
            if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".h5ad") {
                continue;
            }
            let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if let Some(e) = etag {
                etags.insert(path, e);
            }
            out.push((name, Kind::H5ad));
        }
        Ok(out)
    }

    fn classify(&self, _rel: &str) -> Option<Kind> {
        None
    }

    fn file_size(&self, _rel: &str) -> Option<u64> {
        None
    }

    fn version(&self, rel: &str) -> Option<String> {
        self.etags.lock().get(rel).cloned()
    }

    fn location(&self, rel: &str, kind: Kind) -> String {
        match kind {
            Kind::Zarr | Kind::Dir => format!("{}/{rel}/", self.url),
            Kind::H5ad => format!("{}/{rel}", self.url),
        }
    }

    fn bytes(&self, _rel: &str, _kind: Kind, info: &StoreInfo) -> u64 {
        info.size
    }

    fn info(&self) -> StoreInfo {
        StoreInfo { format: "collection", location: self.describe(), size: 0, mtime: None, inode: None, version: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing classifies every kind of entry as [`classify`] does one by one, links included.
    #[test]
    fn listing_classifies_entries_like_classify() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.h5ad"), b"x").unwrap();
        std::fs::write(root.join("B.H5AD"), b"x").unwrap();
        std::fs::write(root.join("notes.txt"), b"x").unwrap();
        std::fs::write(root.join(".hidden.h5ad"), b"x").unwrap();
        std::fs::create_dir_all(root.join("v2.zarr")).unwrap();
        std::fs::write(root.join("v2.zarr/.zgroup"), b"{}").unwrap();
        std::fs::create_dir_all(root.join("v3")).unwrap();
        std::fs::write(root.join("v3/zarr.json"), b"{}").unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(root.join("a.h5ad"), root.join("link.h5ad")).unwrap();
        std::os::unix::fs::symlink(root.join("v3"), root.join("linked")).unwrap();
        std::os::unix::fs::symlink(root.join("missing.h5ad"), root.join("dangling.h5ad")).unwrap();
        std::os::unix::fs::symlink(root.join("notes.txt"), root.join("notes.h5ad.txt")).unwrap();
        let mut got = LocalDir { root: root.to_path_buf() }.list("").unwrap();
        got.sort();
        let mut want: Vec<(String, Kind)> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().unwrap();
                classify(&e.path(), &name).map(|k| (name, k))
            })
            .collect();
        want.sort();
        assert_eq!(got, want);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["B.H5AD", "a.h5ad", "link.h5ad", "linked", "sub", "v2.zarr", "v3"]);
        assert!(got.contains(&("linked".to_string(), Kind::Zarr)) && got.contains(&("sub".to_string(), Kind::Dir)));
    }
}
