//! Fix-ups that make old layouts read as anndata reads them today.

use std::collections::HashSet;
use std::sync::Arc;

use super::build::Ctx;
use super::{Column, DataFrame, Element, Elements, Matrix};
use crate::model::Arr;
use crate::storage::compound::FieldSource;
use crate::storage::DType;

/// Pre-0.7: categorical obs/var columns are integer codes with labels in `uns/<col>_categories`.
/// As anndata's `_clean_uns`, turn each into a categorical when its codes fit, and drop the
/// `uns` entry once used.
pub(super) fn categories_from_uns(obs: &mut DataFrame, var: &mut DataFrame, uns: &mut Elements) {
    // A set: a legacy store may hold many categorical columns (one pass, not one per entry).
    let mut used = HashSet::new();
    for (key, el) in uns.iter() {
        let Some(name) = key.strip_suffix("_categories") else { continue };
        let cats = match el {
            Element::Strings(a) | Element::Array(a) => a.clone(),
            _ => continue,
        };
        let n_cats = cats.len();
        let cats_col = if cats.is_str() { Column::Str(cats) } else { Column::Num(cats) };
        for df in [&mut *obs, &mut *var] {
            for (col_name, col) in df.columns.iter_mut() {
                if col_name != name {
                    continue;
                }
                let Column::Num(codes) = col else { continue };
                if !codes.num_type().is_some_and(|t| t.is_integer()) || !codes_below(codes, n_cats) {
                    continue;
                }
                *col = Column::Categorical { codes: codes.clone(), categories: Box::new(cats_col.clone()), ordered: false };
                used.insert(key.clone());
            }
        }
    }
    uns.retain(|(k, _)| !used.contains(k));
}

/// True when every code is `< n` (anndata's heuristic for which axis the categories belong to).
fn codes_below(codes: &Arr, n: u64) -> bool {
    match codes.read_i64(0, codes.len()) {
        Ok(v) => v.iter().all(|&c| c < n as i64),
        Err(_) => false,
    }
}

/// Pre-0.7: obsm/varm are one compound dataset; each field becomes an entry.
pub(super) fn split_compound_obsm(ctx: &mut Ctx, m: &mut Elements, path: &str, n: u64) {
    let Some(pos) = m.iter().position(|(k, _)| k.is_empty()) else { return };
    let (_, el) = m.remove(pos);
    let Element::Array(arr) = el else { return };
    let DType::Compound { fields, .. } = arr.meta().dtype.clone() else { return };
    let parent = arr.source();
    for f in fields {
        match FieldSource::new(parent.clone(), f.clone()) {
            Ok(src) if src_rows(&src) == n => {
                m.push((f.name.clone(), Element::Array(Arr::new(Arc::new(src), ctx.cache, ctx.ids))));
            }
            Ok(_) => ctx.problem(&format!("{path}[{}]", f.name), "wrong number of rows"),
            Err(e) => ctx.problem(&format!("{path}[{}]", f.name), e.to_string()),
        }
    }
}

fn src_rows(src: &FieldSource) -> u64 {
    use crate::storage::ArraySource;
    src.meta().shape.first().copied().unwrap_or(0)
}

/// Old files keep neighbour graphs in `uns/neighbors/{distances,connectivities}`; anndata
/// (`_move_adj_mtx`) moves every such 2-D matrix to `obsp`, replacing an entry of the same name.
pub(super) fn move_neighbor_graphs(uns: &mut Elements, obsp: &mut Elements, n_obs: u64) {
    let Some((_, Element::Dict(neigh))) = uns.iter_mut().find(|(k, _)| k == "neighbors") else { return };
    for key in ["distances", "connectivities"] {
        if let Some(pos) = neigh.iter().position(|(k, e)| {
            k == key
                && match e {
                    Element::Matrix(m) => m.shape() == (n_obs, n_obs),
                    Element::Array(a) => a.shape() == [n_obs, n_obs],
                    _ => false,
                }
        }) {
            let (k, e) = neigh.remove(pos);
            let e = match e {
                Element::Array(a) => Element::Matrix(Matrix::Dense(a)),
                e => e,
            };
            obsp.retain(|(o, _)| o != &k);
            obsp.push((k, e));
        }
    }
}
