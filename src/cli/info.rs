//! `annfs info`: shapes, elements, encodings, chunking and compression of a store.

use std::io::Write;

use super::CliError;
use crate::storage::{Group, Node};

fn walk(out: &mut impl Write, g: &Group) -> std::io::Result<()> {
    for (_, node) in &g.children {
        match node {
            Node::Group(sub) => {
                let enc = sub.attrs.get("encoding-type").and_then(|v| v.as_str()).unwrap_or("group");
                writeln!(out, "  {:<40} {enc}", format!("{}/", sub.path))?;
                walk(out, sub)?;
            }
            Node::Array(a) => {
                let m = a.meta();
                let enc = a.attrs.get("encoding-type").and_then(|v| v.as_str()).unwrap_or("-");
                let dtype = match &m.dtype {
                    crate::storage::DType::Num(t) => t.npy_descr().to_string(),
                    crate::storage::DType::Str => "str".into(),
                    crate::storage::DType::Compound { fields, .. } => format!("record[{}]", fields.len()),
                    crate::storage::DType::Unsupported(d) => format!("unsupported({d})"),
                };
                writeln!(out, "  {:<40} {enc} {dtype} {:?} {}", m.path, m.shape, m.storage_desc)?;
            }
        }
    }
    Ok(())
}

/// Prints the summary of `store`.
pub(super) fn info(store: &str, opts: &crate::storage::OpenOptions) -> Result<(), CliError> {
    let source = crate::collection::source_for(store, &opts.remote).map_err(|reason| CliError::Storage {
        store: store.into(),
        source: crate::storage::StorageError::NotAStore { path: store.into(), reason },
    })?;
    if let Some(source) = source {
        // A collection: what it holds, one row per store (every store is opened).
        let cache = std::sync::Arc::new(crate::cache::ChunkCache::new(64 << 20));
        let setup = crate::collection::StoreSetup { open: opts.clone(), ..Default::default() };
        let coll = crate::collection::Collection::new(source, cache, setup);
        std::io::stdout().lock().write_all(&coll.summary())?;
        return Ok(());
    }
    let st = crate::storage::open_with(store, opts).map_err(|source| CliError::Storage { store: store.into(), source })?;
    let o = super::open_with(store, 64 << 20, opts, None)?;
    let mut out = std::io::stdout().lock();
    if let Some(crate::views::VNode::File(f)) = o.tree.resolve("README.txt").map(|id| &o.tree.nodes[id]) {
        let readme = f.read(0, usize::MAX >> 1).unwrap_or_default();
        let text = String::from_utf8_lossy(&readme);
        let summary = text.split("\nHow to read the files:").next().unwrap_or("");
        writeln!(out, "{}", summary.trim_end())?;
    }
    writeln!(out, "\nStorage (path, encoding, dtype, shape, layout):")?;
    walk(&mut out, &st.root)?;
    Ok(())
}
