//! Turns a storage tree into an [`AnnData`], dispatching on each element's encoding.

use std::sync::Arc;

use super::dataframe::{column, frame};
use super::{legacy, AnnData, Arr, ArrIds, Column, Element, Elements, Matrix, ModelError, Problem, Raw, Records, Sparse, SparseFormat};
use crate::cache::ChunkCache;
use crate::storage::compound::FieldSource;
use crate::storage::{Array, DType, Group, Node, Store};

/// Largest extent accepted for one axis (2^48): anything larger is a corrupt shape.
const MAX_EXTENT: u64 = 1 << 48;

/// Shared state while building: the root (to resolve references), the cache, problems found.
pub(super) struct Ctx<'a> {
    pub root: &'a Group,
    pub cache: &'a Arc<ChunkCache>,
    pub ids: &'a ArrIds,
    pub problems: Vec<Problem>,
}

impl Ctx<'_> {
    /// Wraps a store array as an [`Arr`].
    pub(super) fn arr(&self, a: &Array) -> Arr {
        Arr::new(a.source.clone(), self.cache, self.ids)
    }

    /// Records an element that is left out.
    pub(super) fn problem(&mut self, path: &str, reason: impl Into<String>) {
        let reason = reason.into();
        log::warn!("{path}: not rendered: {reason}");
        self.problems.push(Problem { path: path.to_string(), reason });
    }
}

/// The `encoding-type` attribute of a node, if any.
pub(super) fn encoding(node: &Node) -> Option<&str> {
    node.attrs().get("encoding-type").and_then(|v| v.as_str())
}

/// Joins a store path and a child name.
pub(super) fn join(path: &str, name: &str) -> String {
    if path.ends_with('/') {
        format!("{path}{name}")
    } else {
        format!("{path}/{name}")
    }
}

/// Builds the AnnData model of `store`, reading its data through `cache`.
pub fn build(store: &Store, cache: &Arc<ChunkCache>) -> Result<AnnData, ModelError> {
    let root = &store.root;
    let mut ctx = Ctx { root, cache, ids: &cache.ids.store_arrays, problems: Vec::new() };
    let obs_node = root.get("obs").ok_or_else(|| no_anndata(root))?;
    let var_node = root.get("var").ok_or_else(|| no_anndata(root))?;
    let is_legacy = matches!(obs_node, Node::Array(_));
    let layout = if is_legacy {
        "legacy (anndata < 0.7)"
    } else if root.attrs.get("encoding-type").and_then(|v| v.as_str()) == Some("anndata") {
        "anndata >= 0.8"
    } else {
        "anndata 0.7"
    };
    let mut obs = frame(&mut ctx, obs_node, "/obs")?;
    let mut var = frame(&mut ctx, var_node, "/var")?;
    let (n_obs, n_vars) = (obs.n_rows, var.n_rows);

    let x = match root.get("X") {
        Some(node) => {
            let m = matrix(&mut ctx, node, "/X")?;
            if m.shape() != (n_obs, n_vars) {
                return Err(ModelError::invalid(
                    "/X",
                    format!("shape {:?} does not match obs × var ({n_obs}, {n_vars})", m.shape()),
                ));
            }
            Some(m)
        }
        None => None,
    };
    let mut uns = match root.get("uns") {
        Some(Node::Group(g)) => dict(&mut ctx, g, "/uns"),
        _ => Vec::new(),
    };
    let layers = mapping(&mut ctx, "layers", |ctx, n, p| matrix_checked(ctx, n, p, (n_obs, n_vars)));
    let mut obsm = mapping(&mut ctx, "obsm", |ctx, n, p| axis_element(ctx, n, p, n_obs));
    let mut varm = mapping(&mut ctx, "varm", |ctx, n, p| axis_element(ctx, n, p, n_vars));
    let mut obsp = mapping(&mut ctx, "obsp", |ctx, n, p| matrix_checked(ctx, n, p, (n_obs, n_obs)));
    let varp = mapping(&mut ctx, "varp", |ctx, n, p| matrix_checked(ctx, n, p, (n_vars, n_vars)));
    let raw = raw(&mut ctx, n_obs);

    if is_legacy {
        legacy::categories_from_uns(&mut obs, &mut var, &mut uns);
        legacy::split_compound_obsm(&mut ctx, &mut obsm, "/obsm", n_obs);
        legacy::split_compound_obsm(&mut ctx, &mut varm, "/varm", n_vars);
    }
    legacy::move_neighbor_graphs(&mut uns, &mut obsp, n_obs);

    Ok(AnnData {
        n_obs,
        n_vars,
        obs,
        var,
        x,
        layers,
        obsm,
        varm,
        obsp,
        varp,
        uns,
        raw,
        problems: ctx.problems,
        layout: layout.to_string(),
    })
}

fn no_anndata(root: &Group) -> ModelError {
    let names: Vec<&str> = root.children.iter().map(|(n, _)| n.as_str()).take(8).collect();
    ModelError::invalid("/", format!("no AnnData here: no `obs` and `var` at the root (found: {names:?})"))
}

/// Builds every child of the root group `name` with `f`; failures become problems.
fn mapping(
    ctx: &mut Ctx,
    name: &str,
    mut f: impl FnMut(&mut Ctx, &Node, &str) -> Result<Option<Element>, ModelError>,
) -> Elements {
    let mut out = Vec::new();
    let Some(node) = ctx.root.get(name) else { return out };
    let path = format!("/{name}");
    match node {
        Node::Group(g) => {
            for (k, child) in &g.children {
                let p = join(&path, k);
                match f(ctx, child, &p) {
                    Ok(Some(e)) => out.push((k.clone(), e)),
                    Ok(None) => {}
                    Err(e) => ctx.problem(&p, e.reason()),
                }
            }
        }
        Node::Array(a) if matches!(a.meta().dtype, DType::Compound { .. }) => {
            // Legacy compound obsm/varm: split later into one array per field.
            out.push((String::new(), Element::Array(ctx.arr(a))));
        }
        Node::Array(_) => ctx.problem(&path, "expected a group"),
    }
    out
}

fn matrix_checked(ctx: &mut Ctx, node: &Node, path: &str, want: (u64, u64)) -> Result<Option<Element>, ModelError> {
    let m = matrix(ctx, node, path)?;
    if m.shape() != want {
        return Err(ModelError::invalid(path, format!("shape {:?}, expected {want:?}", m.shape())));
    }
    Ok(Some(Element::Matrix(m)))
}

/// An `obsm`/`varm` entry: first axis must be `n`.
fn axis_element(ctx: &mut Ctx, node: &Node, path: &str, n: u64) -> Result<Option<Element>, ModelError> {
    let Some(e) = element(ctx, node, path)? else { return Ok(None) };
    let rows = match &e {
        Element::Frame(f) => f.n_rows,
        Element::Matrix(m) => m.shape().0,
        Element::Array(a) => a.rows(),
        _ => return Err(ModelError::invalid(path, "not an array, matrix or dataframe")),
    };
    if rows != n {
        return Err(ModelError::invalid(path, format!("{rows} rows, expected {n}")));
    }
    Ok(Some(e))
}

/// Reads a matrix: sparse group (modern or legacy `h5sparse`) or dense 2-D array.
pub(super) fn matrix(ctx: &mut Ctx, node: &Node, path: &str) -> Result<Matrix, ModelError> {
    match node {
        Node::Group(g) => sparse(ctx, g, path).map(Matrix::Sparse),
        Node::Array(a) => {
            let arr = ctx.arr(a);
            if arr.num_type().is_none() {
                return Err(ModelError::invalid(path, format!("dense matrix of unsupported type {:?}", a.meta().dtype)));
            }
            if arr.shape().len() != 2 {
                return Err(ModelError::invalid(path, format!("expected 2 dimensions, found shape {:?}", arr.shape())));
            }
            check_extent(path, arr.shape(), arr.elem_size())?;
            Ok(Matrix::Dense(arr))
        }
    }
}

fn check_extent(path: &str, shape: &[u64], elem: usize) -> Result<(), ModelError> {
    let mut total: u64 = elem.max(1) as u64;
    for &s in shape {
        if s > MAX_EXTENT {
            return Err(ModelError::invalid(path, format!("absurd shape {shape:?}")));
        }
        total = total
            .checked_mul(s)
            .filter(|t| *t < (1 << 62))
            .ok_or_else(|| ModelError::invalid(path, format!("shape {shape:?} overflows")))?;
    }
    Ok(())
}

fn sparse(ctx: &mut Ctx, g: &Group, path: &str) -> Result<Sparse, ModelError> {
    let attrs = &g.attrs;
    let enc = attrs.get("encoding-type").and_then(|v| v.as_str());
    let legacy = attrs.get("h5sparse_format").and_then(|v| v.as_str());
    let format = match (enc, legacy) {
        (Some("csr_matrix"), _) | (None, Some("csr")) => SparseFormat::Csr,
        (Some("csc_matrix"), _) | (None, Some("csc")) => SparseFormat::Csc,
        (e, l) => {
            return Err(ModelError::invalid(path, format!("not a sparse matrix (encoding {e:?}, h5sparse_format {l:?})")))
        }
    };
    let shape_attr = attrs.get("shape").or_else(|| attrs.get("h5sparse_shape"));
    let shape: Vec<u64> = shape_attr
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f as u64))).collect())
        .unwrap_or_default();
    if shape.len() != 2 {
        return Err(ModelError::invalid(path, format!("bad `shape` attribute {shape_attr:?}")));
    }
    let get = |name: &str| -> Result<Arr, ModelError> {
        match g.get(name) {
            Some(Node::Array(a)) => Ok(ctx.arr(a)),
            _ => Err(ModelError::invalid(join(path, name), "missing sparse component")),
        }
    };
    let (data, indices, indptr) = (get("data")?, get("indices")?, get("indptr")?);
    let t = data.num_type().ok_or_else(|| ModelError::invalid(join(path, "data"), "not numeric"))?;
    check_extent(path, &shape, t.size())?;
    for a in [&indices, &indptr] {
        if !a.num_type().is_some_and(|t| t.is_integer()) {
            return Err(ModelError::invalid(a.path(), "sparse index array is not integer"));
        }
    }
    let major = if format == SparseFormat::Csr { shape[0] } else { shape[1] };
    if indptr.len() != major + 1 {
        return Err(ModelError::invalid(indptr.path(), format!("length {}, expected {}", indptr.len(), major + 1)));
    }
    if data.len() != indices.len() {
        return Err(ModelError::invalid(path, format!("data has {} values but indices {}", data.len(), indices.len())));
    }
    Ok(Sparse { format, shape: [shape[0], shape[1]], data, indices, indptr, indptr_base: 0, minor: None, minor_list: None, sorted: false })
}

/// Reads a dict-like group into elements; failures become problems.
pub(super) fn dict(ctx: &mut Ctx, g: &Group, path: &str) -> Elements {
    let mut out = Vec::new();
    for (k, child) in &g.children {
        let p = join(path, k);
        match element(ctx, child, &p) {
            Ok(Some(e)) => out.push((k.clone(), e)),
            Ok(None) => {}
            Err(e) => ctx.problem(&p, e.reason()),
        }
    }
    out
}

/// Reads any element (`uns` values, `obsm` values…). `Ok(None)` means "absent" (null).
pub(super) fn element(ctx: &mut Ctx, node: &Node, path: &str) -> Result<Option<Element>, ModelError> {
    let enc = encoding(node);
    match node {
        Node::Group(g) if enc.is_none() && g.attrs.contains_key("h5sparse_format") => {
            Ok(Some(Element::Matrix(Matrix::Sparse(sparse(ctx, g, path)?))))
        }
        Node::Group(g) => match enc {
            None | Some("dict") => Ok(Some(Element::Dict(dict(ctx, g, path)))),
            Some("dataframe") => Ok(Some(Element::Frame(frame(ctx, node, path)?))),
            Some("csr_matrix") | Some("csc_matrix") => Ok(Some(Element::Matrix(Matrix::Sparse(sparse(ctx, g, path)?)))),
            Some("categorical") | Some("nullable-integer") | Some("nullable-boolean") | Some("nullable-string-array") => {
                Ok(Some(Element::Column(column(ctx, node, path)?)))
            }
            Some("awkward-array") => Err(ModelError::invalid(path, "awkward arrays are not rendered")),
            Some(other) => Err(ModelError::invalid(path, format!("unknown encoding `{other}`"))),
        },
        Node::Array(a) => {
            let meta = a.meta();
            if meta.null || enc == Some("null") {
                return Ok(None);
            }
            match (&meta.dtype, enc) {
                (_, Some(e)) if !matches!(e, "array" | "string-array" | "string" | "numeric-scalar" | "rec-array") => {
                    Err(ModelError::invalid(path, format!("unknown encoding `{e}`")))
                }
                (DType::Num(_), _) => {
                    check_extent(path, &meta.shape, a.meta().dtype_size())?;
                    Ok(Some(Element::Array(ctx.arr(a))))
                }
                (DType::Str, _) => Ok(Some(Element::Strings(ctx.arr(a)))),
                (DType::Compound { .. }, _) => Ok(Some(Element::Records(records(ctx, a, path)?))),
                (DType::Unsupported(d), _) => Err(ModelError::invalid(path, format!("unsupported data type {d}"))),
            }
        }
    }
}

/// Reads a 1-D compound array as a record array with one column per field.
pub(super) fn records(ctx: &mut Ctx, a: &Array, path: &str) -> Result<Records, ModelError> {
    let DType::Compound { fields, .. } = &a.meta().dtype else {
        return Err(ModelError::invalid(path, "not a record array"));
    };
    let mut cols = Vec::new();
    for f in fields {
        let src = FieldSource::new(a.source.clone(), f.clone())?;
        cols.push((f.clone(), Arr::new(Arc::new(src), ctx.cache, ctx.ids)));
    }
    Ok(Records { array: ctx.arr(a), fields: cols })
}

fn raw(ctx: &mut Ctx, n_obs: u64) -> Option<Raw> {
    let root = ctx.root;
    let (x_node, var_node, varm_node, base) = match root.get("raw") {
        Some(Node::Group(g)) => (g.get("X"), g.get("var"), g.get("varm"), "/raw/"),
        _ => (root.get("raw.X"), root.get("raw.var"), root.get("raw.varm"), "/raw."),
    };
    let var_node = var_node?;
    let var = match frame(ctx, var_node, &format!("{base}var")) {
        Ok(v) => v,
        Err(e) => {
            ctx.problem(&format!("{base}var"), e.reason());
            return None;
        }
    };
    let x = x_node.and_then(|n| {
        let p = format!("{base}X");
        match matrix(ctx, n, &p) {
            Ok(m) if m.shape() == (n_obs, var.n_rows) => Some(m),
            Ok(m) => {
                ctx.problem(&p, format!("shape {:?}, expected ({n_obs}, {})", m.shape(), var.n_rows));
                None
            }
            Err(e) => {
                ctx.problem(&p, e.reason());
                None
            }
        }
    });
    let mut varm = Vec::new();
    if let Some(node) = varm_node {
        let p = format!("{base}varm");
        match node {
            Node::Group(g) => {
                for (k, child) in &g.children {
                    let cp = join(&p, k);
                    match axis_element(ctx, child, &cp, var.n_rows) {
                        Ok(Some(e)) => varm.push((k.clone(), e)),
                        Ok(None) => {}
                        Err(e) => ctx.problem(&cp, e.reason()),
                    }
                }
            }
            Node::Array(a) => {
                varm.push((String::new(), Element::Array(ctx.arr(a))));
                legacy::split_compound_obsm(ctx, &mut varm, &p, var.n_rows);
            }
        }
    }
    Some(Raw { x, var, varm })
}

/// Re-exported for dataframe parsing: a plain 1-D array as a column.
pub(super) fn array_column(ctx: &Ctx, a: &Array, path: &str) -> Result<Column, ModelError> {
    let arr = ctx.arr(a);
    match a.meta().dtype {
        DType::Num(_) => Ok(Column::Num(arr)),
        DType::Str => Ok(Column::Str(arr)),
        ref d => Err(ModelError::invalid(path, format!("unsupported column type {d:?}"))),
    }
}
