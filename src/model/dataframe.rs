//! Dataframes and their columns, for every layout: `dataframe` 0.2.0 (anndata ≥ 0.8),
//! `dataframe` 0.1.0 (0.7: categories by reference), and legacy compound datasets.

use super::build::{array_column, encoding, join, Ctx};
use super::{Column, DataFrame, ModelError};
use crate::storage::compound::FieldSource;
use crate::storage::{Array, DType, Node};
use std::sync::Arc;

/// Reads a dataframe element at `path`.
pub(super) fn frame(ctx: &mut Ctx, node: &Node, path: &str) -> Result<DataFrame, ModelError> {
    match node {
        Node::Array(a) => compound_frame(ctx, a, path),
        Node::Group(g) => {
            let enc = encoding(node);
            if enc.is_some_and(|e| e != "dataframe") {
                return Err(ModelError::invalid(path, format!("expected a dataframe, found encoding `{}`", enc.unwrap_or(""))));
            }
            let index_key = g.attrs.get("_index").and_then(|v| v.as_str()).unwrap_or("_index").to_string();
            let index_node = g
                .get_path(&index_key)
                .ok_or_else(|| ModelError::invalid(join(path, &index_key), "dataframe index is missing"))?;
            let index = column(ctx, index_node, &join(path, &index_key))?;
            let n_rows = index.len();
            let order: Vec<String> = match g.attrs.get("column-order") {
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            };
            let mut columns = Vec::new();
            for name in order {
                let p = join(path, &name);
                let Some(child) = g.get_path(&name) else {
                    ctx.problem(&p, "listed in column-order but missing");
                    continue;
                };
                match column(ctx, child, &p) {
                    Ok(c) if c.len() == n_rows => columns.push((name, c)),
                    Ok(c) => ctx.problem(&p, format!("{} values, expected {n_rows}", c.len())),
                    Err(e) => ctx.problem(&p, e.reason()),
                }
            }
            let index_name = (index_key != "_index").then_some(index_key);
            Ok(DataFrame { n_rows, index_name, index, columns })
        }
    }
}

/// Reads one column (any encoding) at `path`.
pub(super) fn column(ctx: &mut Ctx, node: &Node, path: &str) -> Result<Column, ModelError> {
    let arr_of = |ctx: &Ctx, name: &str| -> Result<crate::model::Arr, ModelError> {
        match node {
            Node::Group(g) => match g.get(name) {
                Some(Node::Array(a)) => Ok(ctx.arr(a)),
                _ => Err(ModelError::invalid(join(path, name), "missing")),
            },
            Node::Array(_) => Err(ModelError::invalid(path, "expected a group")),
        }
    };
    match (node, encoding(node)) {
        (Node::Group(g), Some("categorical")) => {
            let codes = arr_of(ctx, "codes")?;
            let cats_node = g.get("categories").ok_or_else(|| ModelError::invalid(join(path, "categories"), "missing"))?;
            let categories = column(ctx, cats_node, &join(path, "categories"))?;
            let ordered = g.attrs.get("ordered").and_then(|v| v.as_bool().or(v.as_i64().map(|i| i != 0))).unwrap_or(false);
            categorical(codes, categories, ordered, path)
        }
        (Node::Group(_), Some("nullable-integer" | "nullable-boolean" | "nullable-string-array")) => {
            let values = arr_of(ctx, "values")?;
            let mask = arr_of(ctx, "mask")?;
            if mask.len() != values.len() {
                return Err(ModelError::invalid(path, "mask and values differ in length"));
            }
            Ok(Column::Nullable { values, mask })
        }
        (Node::Group(_), enc) => Err(ModelError::invalid(path, format!("unsupported column encoding {enc:?}"))),
        (Node::Array(a), _) => {
            if a.meta().shape.len() != 1 {
                return Err(ModelError::invalid(path, format!("column of shape {:?}", a.meta().shape)));
            }
            // anndata 0.7: integer codes whose `categories` attribute points at the labels.
            if let Some(target) = a.attrs.get("categories").and_then(|v| v.as_str()) {
                let cats = resolve(ctx, target, path)
                    .ok_or_else(|| ModelError::invalid(path, format!("categories reference `{target}` not found")))?;
                let categories = column(ctx, &cats, target)?;
                let ordered = a.attrs.get("ordered").and_then(|v| v.as_bool()).unwrap_or(false);
                return categorical(ctx.arr(a), categories, ordered, path);
            }
            array_column(ctx, a, path)
        }
    }
}

fn categorical(codes: crate::model::Arr, categories: Column, ordered: bool, path: &str) -> Result<Column, ModelError> {
    if !codes.num_type().is_some_and(|t| t.is_integer()) {
        return Err(ModelError::invalid(path, "categorical codes are not integers"));
    }
    Ok(Column::Categorical { codes, categories: Box::new(categories), ordered })
}

/// Resolves a reference stored as a path: absolute from the root, else relative to the
/// element's parent group.
fn resolve(ctx: &Ctx, target: &str, from: &str) -> Option<Node> {
    if let Some(abs) = target.strip_prefix('/') {
        return ctx.root.get_path(abs).cloned();
    }
    let parent = from.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    ctx.root
        .get_path(&format!("{}/{}", parent.trim_start_matches('/'), target))
        .or_else(|| ctx.root.get_path(target))
        .cloned()
}

/// A legacy (pre-0.7) dataframe: a compound dataset whose first field is the index.
fn compound_frame(ctx: &mut Ctx, a: &Array, path: &str) -> Result<DataFrame, ModelError> {
    let DType::Compound { fields, .. } = &a.meta().dtype else {
        return Err(ModelError::invalid(path, format!("expected a dataframe, found an array of {:?}", a.meta().dtype)));
    };
    if a.meta().shape.len() != 1 || fields.is_empty() {
        return Err(ModelError::invalid(path, "legacy dataframe must be a 1-D compound dataset"));
    }
    let mut cols = Vec::new();
    for f in fields {
        let src = FieldSource::new(a.source.clone(), f.clone())?;
        let arr = crate::model::Arr::new(Arc::new(src), ctx.cache, ctx.ids);
        let p = format!("{path}[{}]", f.name);
        let col = match arr.meta().dtype {
            DType::Str => Column::Str(arr),
            DType::Num(_) if arr.shape().len() == 1 => Column::Num(arr),
            _ => {
                ctx.problem(&p, "sub-array field in a dataframe");
                continue;
            }
        };
        cols.push((f.name.clone(), col));
    }
    let (index_name, index) = cols.remove(0);
    Ok(DataFrame { n_rows: a.meta().shape[0], index_name: Some(index_name), index, columns: cols })
}
