//! Walks the file's groups into the metadata [`Group`] tree: children in creation order where the
//! group indexes it, else by name.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Arc;

use hdf5_sys::h5::{H5_index_t, H5_iter_order_t};
use hdf5_sys::h5i::H5I_type_t;
use hdf5_sys::h5l::{H5L_info2_t, H5L_type_t};

use super::ffi::{locked, Hid};
use super::source::object_address;
use super::{attrs, source, FileCtx};
use crate::storage::{Array, AttrsInterner, Group, Node, StorageError, StorageResult};

/// Groups nested deeper than this are not descended into.
const MAX_DEPTH: usize = 64;

/// Most groups and datasets a file's tree is built from (each dataset is held open). More
/// fails the open: hard links repeating a group inside itself several times over make a tree
/// that doubles with every level, built for ever from a file of a few kilobytes.
pub const MAX_ELEMENTS: usize = 1 << 17;

/// Builds the group at `path` (open as `gid`, the file's root) with all descendants.
pub fn walk(ctx: &Arc<FileCtx>, gid: &Hid, path: &str) -> StorageResult<Group> {
    let mut walker = Walker { ctx, ancestors: Vec::new(), depth: 0, elements: 0, attrs: AttrsInterner::default() };
    walker.group(gid, path)
}

/// The state of one walk: the groups on the path to the current one (by object address) and
/// the elements met so far.
struct Walker<'a> {
    ctx: &'a Arc<FileCtx>,
    /// Object addresses of the groups being walked, outermost first.
    ancestors: Vec<(u64, String)>,
    /// Groups being walked (including any whose address the library would not give).
    depth: usize,
    elements: usize,
    /// Equal attribute sets, shared.
    attrs: AttrsInterner,
}

impl Walker<'_> {
    /// Builds the group at `path` (open as `gid`) with all descendants.
    fn group(&mut self, gid: &Hid, path: &str) -> StorageResult<Group> {
        let addr = object_address(gid);
        if let Some(a) = addr {
            self.ancestors.push((a, path.to_string()));
        }
        self.depth += 1;
        let built = self.members(gid, path);
        self.depth -= 1;
        if addr.is_some() {
            self.ancestors.pop();
        }
        built
    }

    fn members(&mut self, gid: &Hid, path: &str) -> StorageResult<Group> {
        let attrs = self.attrs.share(attrs::read_all(gid.id(), path));
        let mut children = Vec::new();
        for (raw, kind) in links(gid.id(), path)? {
            let name = raw.to_string_lossy().into_owned();
            let child = join(path, &name);
            if kind != H5L_type_t::H5L_TYPE_HARD && kind != H5L_type_t::H5L_TYPE_SOFT {
                log::debug!("{child}: skipping {kind:?} link");
                continue;
            }
            if let Some(node) = self.node(gid, &raw, &child, kind)? {
                children.push((name, node));
            }
        }
        Ok(Group {
            path: path.to_string(),
            attrs,
            children,
        })
    }

    /// Opens and builds one child; `None` for things annfs skips (named datatypes, dangling
    /// links, a link back to a group it is inside).
    fn node(&mut self, gid: &Hid, cname: &CStr, path: &str, kind: H5L_type_t) -> StorageResult<Option<Node>> {
        let obj = match locked(|| {
            Hid::new(
                // SAFETY: `cname` is a NUL-terminated link name alive for the call and `gid` an
                // open group; under the library lock, and the object id is owned by the `Hid`.
                unsafe { hdf5_sys::h5o::H5Oopen(gid.id(), cname.as_ptr(), 0) },
                path,
            )
        }) {
            Ok(o) => o,
            Err(e) if kind == H5L_type_t::H5L_TYPE_SOFT => {
                log::debug!("{path}: dangling soft link: {e}");
                return Ok(None);
            }
            Err(e) => return Err(as_corrupt(e)),
        };
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            let why = format!("the file holds more than {MAX_ELEMENTS} groups and datasets (links repeating groups?)");
            return Err(StorageError::unsupported(path, why));
        }
        // SAFETY: `obj` is an open id owned by this frame; H5Iget_type only looks it up; under
        // the library lock.
        match locked(|| unsafe { hdf5_sys::h5i::H5Iget_type(obj.id()) }) {
            H5I_type_t::H5I_GROUP if self.depth > MAX_DEPTH => {
                log::warn!("{path}: groups nested deeper than {MAX_DEPTH}; not descending");
                Ok(None)
            }
            H5I_type_t::H5I_GROUP => {
                let addr = object_address(&obj);
                if let Some((_, outer)) = self.ancestors.iter().find(|(a, _)| Some(*a) == addr) {
                    log::warn!("{path}: a link back to {outer}, which holds it (a cycle); not descending");
                    return Ok(None);
                }
                Ok(Some(Node::Group(self.group(&obj, path)?)))
            }
            H5I_type_t::H5I_DATASET => {
                let attrs = self.attrs.share(attrs::read_all(obj.id(), path));
                let src = source::open(self.ctx.clone(), obj, path).map_err(as_corrupt)?;
                Ok(Some(Node::Array(Array {
                    attrs,
                    source: Arc::new(src),
                })))
            }
            other => {
                log::debug!("{path}: skipping {other:?} object");
                Ok(None)
            }
        }
    }
}

/// Library failures while reading metadata mean the file is damaged.
fn as_corrupt(e: StorageError) -> StorageError {
    match e {
        StorageError::Hdf5 { path, reason } => StorageError::Corrupt { path, reason },
        other => other,
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

unsafe extern "C" fn link_cb(
    _g: i64,
    name: *const c_char,
    info: *const H5L_info2_t,
    data: *mut c_void,
) -> c_int {
    let out = &mut *data.cast::<Vec<(CString, H5L_type_t)>>();
    if name.is_null() || info.is_null() {
        return 0;
    }
    out.push((CStr::from_ptr(name).to_owned(), (*info).type_));
    0
}

/// Link names (raw bytes, as the library needs them back) and kinds: by creation order when
/// indexed, otherwise by name.
fn links(gid: i64, path: &str) -> StorageResult<Vec<(CString, H5L_type_t)>> {
    for index in [H5_index_t::H5_INDEX_CRT_ORDER, H5_index_t::H5_INDEX_NAME] {
        let mut out: Vec<(CString, H5L_type_t)> = Vec::new();
        // SAFETY: `idx` and `out` outlive the call; `link_cb` casts `data` back to this `Vec` and
        // runs only inside H5Literate2, under the library lock `locked` holds.
        let st = locked(|| unsafe {
            let mut idx = 0u64;
            hdf5_sys::h5l::H5Literate2(
                gid,
                index,
                H5_iter_order_t::H5_ITER_INC,
                &mut idx,
                Some(link_cb),
                (&mut out as *mut Vec<(CString, H5L_type_t)>).cast(),
            )
        });
        if st >= 0 {
            return Ok(out);
        }
    }
    Err(StorageError::corrupt(path, "cannot list group members"))
}
