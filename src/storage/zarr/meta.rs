//! Collects every node's metadata of a Zarr store: from consolidated metadata when present (one
//! read: v2 `.zmetadata`, v3 inline `consolidated_metadata` in the root `zarr.json`), otherwise by
//! walking the store directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::storage::{Attrs, StorageError, StorageResult};

/// Groups nested deeper than this are not descended into.
const MAX_DEPTH: usize = 64;

/// Most groups and arrays a walked store is built from: directory symlinks repeating a group
/// at every level of a chain make a tree that doubles per level. More fails the open (each
/// node walked costs a few file reads: 2^15 of them take seconds). Stores with consolidated
/// metadata, as anndata writes them, are not walked.
const MAX_NODES: usize = 1 << 15;

/// The Zarr format version of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Format 2 (`.zgroup`, `.zarray`, `.zattrs`).
    V2,
    /// Format 3 (`zarr.json`).
    V3,
}

/// One node's metadata.
#[derive(Clone, Debug)]
pub enum NodeMeta {
    /// A group and its attributes.
    Group(Attrs),
    /// An array: its metadata document (v2 `.zarray` or v3 `zarr.json`) and attributes.
    Array(Value, Attrs),
}

/// Every node of a store, keyed by path relative to the root (`""` is the root).
pub struct Nodes {
    /// Format version.
    pub version: Version,
    /// True when read from consolidated metadata.
    pub consolidated: bool,
    /// The nodes.
    pub nodes: BTreeMap<String, NodeMeta>,
}

/// Reads one key of the store; `Ok(None)` when it does not exist.
pub type ReadKey<'a> = dyn Fn(&str) -> StorageResult<Option<Vec<u8>>> + 'a;

fn parse(key: &str, bytes: &[u8]) -> StorageResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::corrupt(key, format!("malformed JSON metadata: {e}")))
}

fn attrs_of(v: Option<&Value>, key: &str) -> StorageResult<Attrs> {
    match v {
        None | Some(Value::Null) => Ok(Attrs::new()),
        Some(Value::Object(o)) => Ok(o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(other) => Err(StorageError::corrupt(key, format!("attributes are not a JSON object: {other}"))),
    }
}

/// Collects the nodes of the store. `dir` is the store directory when it can be listed (local
/// stores); remote stores need consolidated metadata.
pub fn collect(read: &ReadKey, dir: Option<&Path>, location: &str) -> StorageResult<Nodes> {
    if let Some(bytes) = read("zarr.json")? {
        let root = parse("zarr.json", &bytes)?;
        return v3(read, root, dir, location);
    }
    if let Some(bytes) = read(".zmetadata")? {
        let doc = parse(".zmetadata", &bytes)?;
        return v2_consolidated(&doc);
    }
    if read(".zgroup")?.is_some() {
        let Some(dir) = dir else {
            return Err(StorageError::unsupported(
                location,
                "a remote Zarr v2 store needs consolidated metadata (.zmetadata)",
            ));
        };
        let mut nodes = BTreeMap::new();
        walk_v2(read, dir, "", 0, &mut nodes, &mut vec![real_dir(dir, "")])?;
        return Ok(Nodes { version: Version::V2, consolidated: false, nodes });
    }
    if read(".zarray")?.is_some() {
        return Err(StorageError::NotAStore {
            path: location.into(),
            reason: "the root of this Zarr store is an array, not an AnnData group".into(),
        });
    }
    Err(StorageError::NotAStore {
        path: location.into(),
        reason: "no zarr.json, .zmetadata or .zgroup (not a Zarr store)".into(),
    })
}

fn v3(read: &ReadKey, root: Value, dir: Option<&Path>, location: &str) -> StorageResult<Nodes> {
    if root.get("zarr_format").and_then(Value::as_u64) != Some(3) {
        return Err(StorageError::corrupt("zarr.json", "zarr_format is not 3"));
    }
    match root.get("node_type").and_then(Value::as_str) {
        Some("group") => {}
        Some("array") => {
            return Err(StorageError::NotAStore {
                path: location.into(),
                reason: "the root of this Zarr store is an array, not an AnnData group".into(),
            })
        }
        other => return Err(StorageError::corrupt("zarr.json", format!("bad node_type {other:?}"))),
    }
    let mut nodes = BTreeMap::new();
    nodes.insert(String::new(), NodeMeta::Group(attrs_of(root.get("attributes"), "zarr.json")?));
    let consolidated = root
        .get("consolidated_metadata")
        .and_then(|c| c.get("metadata"))
        .and_then(Value::as_object);
    if let Some(members) = consolidated {
        for (path, doc) in members {
            let key = format!("{path}/zarr.json");
            nodes.insert(path.trim_matches('/').to_string(), v3_node(doc, &key)?);
        }
        return Ok(Nodes { version: Version::V3, consolidated: true, nodes });
    }
    let Some(dir) = dir else {
        return Err(StorageError::unsupported(
            location,
            "a remote Zarr v3 store needs consolidated metadata (in the root zarr.json)",
        ));
    };
    walk_v3(read, dir, "", 0, &mut nodes, &mut vec![real_dir(dir, "")])?;
    Ok(Nodes { version: Version::V3, consolidated: false, nodes })
}

fn v3_node(doc: &Value, key: &str) -> StorageResult<NodeMeta> {
    let attrs = attrs_of(doc.get("attributes"), key)?;
    match doc.get("node_type").and_then(Value::as_str) {
        Some("group") => Ok(NodeMeta::Group(attrs)),
        Some("array") => Ok(NodeMeta::Array(doc.clone(), attrs)),
        other => Err(StorageError::corrupt(key, format!("bad node_type {other:?}"))),
    }
}

fn v2_consolidated(doc: &Value) -> StorageResult<Nodes> {
    let meta = doc
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| StorageError::corrupt(".zmetadata", "no `metadata` object"))?;
    let mut nodes = BTreeMap::new();
    for (key, v) in meta {
        let (parent, leaf) = match key.rsplit_once('/') {
            Some((p, l)) => (p.to_string(), l),
            None => (String::new(), key.as_str()),
        };
        match leaf {
            ".zgroup" => {
                nodes.entry(parent).or_insert_with(|| NodeMeta::Group(Attrs::new()));
            }
            ".zarray" => {
                if !v.is_object() {
                    return Err(StorageError::corrupt(key, "array metadata is not a JSON object"));
                }
                let attrs = match nodes.remove(&parent) {
                    Some(NodeMeta::Group(a)) | Some(NodeMeta::Array(_, a)) => a,
                    None => Attrs::new(),
                };
                nodes.insert(parent, NodeMeta::Array(v.clone(), attrs));
            }
            _ => {}
        }
    }
    for (key, v) in meta {
        let Some(parent) = key.strip_suffix(".zattrs") else { continue };
        let parent = parent.trim_end_matches('/').to_string();
        let attrs = attrs_of(Some(v), key)?;
        match nodes.get_mut(&parent) {
            Some(NodeMeta::Group(a)) | Some(NodeMeta::Array(_, a)) => *a = attrs,
            None => {
                nodes.insert(parent, NodeMeta::Group(attrs));
            }
        }
    }
    nodes.entry(String::new()).or_insert_with(|| NodeMeta::Group(Attrs::new()));
    Ok(Nodes { version: Version::V2, consolidated: true, nodes })
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Sub-directories of `dir` (sorted), skipping hidden entries; a symlink to a directory is one
/// (as zarr-python lists it).
fn subdirs(dir: &Path) -> StorageResult<Vec<String>> {
    let io = |e| StorageError::Io { path: dir.display().to_string(), source: e };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let kind = e.file_type().map_err(io)?;
        if kind.is_dir() || (kind.is_symlink() && std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir())) {
            if let Ok(name) = e.file_name().into_string() {
                if !name.starts_with('.') {
                    out.push(name);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `.zattrs` of the v2 node at `prefix` (empty when absent).
fn zattrs(read: &ReadKey, prefix: &str) -> StorageResult<Attrs> {
    let key = join(prefix, ".zattrs");
    match read(&key)? {
        Some(b) => attrs_of(Some(&parse(&key, &b)?), &key),
        None => Ok(Attrs::new()),
    }
}

/// The directory of the group at `prefix` below `dir`, symlinks resolved (as given when they
/// cannot be).
fn real_dir(dir: &Path, prefix: &str) -> PathBuf {
    let p = dir.join(prefix);
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// Whether the group at `path` may be walked: not when its directory is one the walk is inside
/// (`ancestors`; a symlink back to a group holding it, a cycle: a warning says so, and it is
/// left out); and not past [`MAX_NODES`] (an error). Pushes its directory on `ancestors`.
fn enter(dir: &Path, path: &str, ancestors: &mut Vec<PathBuf>, nodes: usize) -> StorageResult<bool> {
    if nodes > MAX_NODES {
        let why = format!("the store holds more than {MAX_NODES} groups and arrays (symlinks repeating groups?)");
        return Err(StorageError::unsupported(path, why));
    }
    let real = real_dir(dir, path);
    if let Some(outer) = ancestors.iter().find(|a| **a == real) {
        log::warn!("{path}: a link back to {}, which holds it (a cycle); not descending", outer.display());
        return Ok(false);
    }
    ancestors.push(real);
    Ok(true)
}

fn walk_v2(
    read: &ReadKey,
    dir: &Path,
    prefix: &str,
    depth: usize,
    nodes: &mut BTreeMap<String, NodeMeta>,
    ancestors: &mut Vec<PathBuf>,
) -> StorageResult<()> {
    nodes.insert(prefix.to_string(), NodeMeta::Group(zattrs(read, prefix)?));
    if depth >= MAX_DEPTH {
        log::warn!("{prefix}: groups nested deeper than {MAX_DEPTH}; not descending");
        return Ok(());
    }
    for name in subdirs(&dir.join(prefix))? {
        let path = join(prefix, &name);
        if let Some(b) = read(&format!("{path}/.zarray"))? {
            let doc = parse(&format!("{path}/.zarray"), &b)?;
            let attrs = zattrs(read, &path)?;
            nodes.insert(path, NodeMeta::Array(doc, attrs));
        } else if read(&format!("{path}/.zgroup"))?.is_some() && enter(dir, &path, ancestors, nodes.len())? {
            walk_v2(read, dir, &path, depth + 1, nodes, ancestors)?;
            ancestors.pop();
        }
    }
    Ok(())
}

fn walk_v3(
    read: &ReadKey,
    dir: &Path,
    prefix: &str,
    depth: usize,
    nodes: &mut BTreeMap<String, NodeMeta>,
    ancestors: &mut Vec<PathBuf>,
) -> StorageResult<()> {
    if depth >= MAX_DEPTH {
        log::warn!("{prefix}: groups nested deeper than {MAX_DEPTH}; not descending");
        return Ok(());
    }
    for name in subdirs(&dir.join(prefix))? {
        let path = join(prefix, &name);
        let key = format!("{path}/zarr.json");
        let Some(b) = read(&key)? else { continue };
        let node = v3_node(&parse(&key, &b)?, &key)?;
        if !matches!(node, NodeMeta::Group(_)) {
            nodes.insert(path, node);
        } else if enter(dir, &path, ancestors, nodes.len())? {
            nodes.insert(path.clone(), node);
            walk_v3(read, dir, &path, depth + 1, nodes, ancestors)?;
            ancestors.pop();
        }
    }
    Ok(())
}
