//! `annfs index STORE [--index-dir DIR]`: builds the transposed index of every sparse matrix
//! whose columns are vars (X, layers, raw/X) ahead of time, with a progress line on a terminal
//! and a summary (time, bytes written); then sizes the store's big text views into the same
//! directory, where mounts find them (no size pass on their first `stat`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::IndexArgs;
use super::{options, CliError};
use crate::cache::ChunkCache;
use crate::collection::{Collection, StoreSetup};
use crate::index::{format, IndexService};
use crate::model::{AnnData, Element, Matrix, Sparse};
use crate::storage::StoreInfo;
use crate::views::sidecar::Sidecar;
use crate::views::tree::{self, TreeOptions};
use crate::views::{VNode, VTree};

/// The sparse var-column matrices of `ad`, with their virtual paths.
fn var_matrices(ad: &AnnData) -> Vec<(String, Sparse)> {
    let mut out = Vec::new();
    let mut push = |name: String, m: Option<&Matrix>| {
        if let Some(Matrix::Sparse(s)) = m {
            out.push((name, s.clone()));
        }
    };
    push("X".into(), ad.x.as_ref());
    for (name, el) in &ad.layers {
        if let Element::Matrix(m) = el {
            push(format!("layers/{name}"), Some(m));
        }
    }
    push("raw/X".into(), ad.raw.as_ref().and_then(|r| r.x.as_ref()));
    out
}

/// What `annfs index` did so far.
#[derive(Default)]
struct Totals {
    built: u64,
    fresh: u64,
    bytes: u64,
    failed: u64,
}

/// Runs `annfs index` on a store, or on every store of a collection (a store that cannot be
/// opened is reported and skipped; the command then fails after indexing the others).
pub(super) fn run(args: &IndexArgs) -> Result<(), CliError> {
    let budget = options::parse_size(&args.cache_size)?;
    let dir = args
        .index_dir
        .clone()
        .or_else(|| crate::index::default_dir(args.cache_dir.as_deref()))
        .ok_or_else(|| CliError::Usage("no index directory: pass --index-dir DIR".into()))?;
    format::probe_writable(&dir)
        .map_err(|e| CliError::Usage(format!("cannot write indexes into {}: {e}", dir.display())))?;
    let cache = Arc::new(ChunkCache::new(budget));
    let start = Instant::now();
    let mut totals = Totals::default();
    let opts = args.access.options();
    let source = crate::collection::source_for(&args.store, &opts.remote).map_err(|reason| CliError::Storage {
        store: args.store.clone(),
        source: crate::storage::StorageError::NotAStore { path: args.store.clone(), reason },
    })?;
    if let Some(source) = source {
        let setup = StoreSetup { open: opts.clone(), index_dir: Some(dir.clone()), ..Default::default() };
        let coll = Collection::new(source, cache.clone(), setup);
        for (rel, kind) in coll.stores() {
            // The setup names the index directory, so every opened store has a service.
            match coll.open(&rel, kind).and_then(|s| s.index().cloned().map(|i| (s, i)).ok_or_else(|| "no index service".into())) {
                Ok((s, service)) => {
                    let prefix = format!("{rel}/");
                    index_store(&prefix, &s.ad, &service, &mut totals)?;
                    size_text_views(&prefix, &s.ad, &s.info, &cache, &dir)?;
                }
                Err(e) => {
                    writeln!(std::io::stderr(), "{rel}: skipped: {e}")?;
                    totals.failed += 1;
                }
            }
        }
    } else {
        let st = crate::storage::open_with(&args.store, &opts).map_err(|source| CliError::Storage { store: args.store.clone(), source })?;
        let ad = crate::model::build(&st, &cache).map_err(|source| CliError::Model { store: args.store.clone(), source })?;
        let service = IndexService::new(dir.clone(), None, &st.info, cache.clone());
        index_store("", &ad, &service, &mut totals)?;
        size_text_views("", &Arc::new(ad), &st.info, &cache, &dir)?;
    }
    let Totals { built, fresh, bytes, failed } = totals;
    writeln!(
        std::io::stderr(),
        "annfs index: {built} built, {fresh} up to date in {:.2} s; {bytes} bytes written to {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    )?;
    if failed > 0 {
        return Err(CliError::Usage(format!("{failed} store(s) of {} could not be indexed (see above)", args.store)));
    }
    Ok(())
}

/// Sizes every text view of `ad`'s tree whose size is not known yet (the `rows/S:E/` and
/// `where/` subsets, sized per mount, excepted), remembering the big ones' layouts in `dir`;
/// a view that cannot be sized (damaged data) is reported and skipped (a mount fails just
/// that file too).
fn size_text_views(
    prefix: &str,
    ad: &Arc<AnnData>,
    info: &StoreInfo,
    cache: &Arc<ChunkCache>,
    dir: &Path,
) -> Result<(), CliError> {
    let mut err = std::io::stderr();
    let Some(sidecar) = Sidecar::open(dir, None, info) else {
        writeln!(err, "{prefix}text views: not sized (nothing tells whether the store changes)")?;
        return Ok(());
    };
    let t0 = Instant::now();
    let sidecar = Arc::new(sidecar);
    let before = sidecar.len();
    let opts = TreeOptions { sidecar: Some(sidecar.clone()), prefix: String::new(), with_rows: false, list_where: false, index: None, shared: None };
    let tree = Arc::new(tree::build(ad, info, cache.clone(), &opts));
    let mut paths = Vec::new();
    tree.walk_paths(VTree::ROOT, "", &mut paths);
    let (mut sized, mut failed) = (0, 0);
    for path in paths {
        let Some((t, id)) = tree.resolve_any(&path) else { continue };
        let VNode::File(f) = &t.nodes[id] else { continue };
        if f.size_is_cheap() {
            continue;
        }
        match f.size() {
            Ok(_) => sized += 1,
            Err(e) => {
                writeln!(err, "{prefix}{path}: not sized: {e}")?;
                failed += 1;
            }
        }
    }
    // Small views are sized at once by any mount: only big ones' layouts are kept.
    let written = sidecar.len() - before;
    let failed = if failed > 0 { format!(", {failed} failed (see above)") } else { String::new() };
    let secs = t0.elapsed().as_secs_f64();
    writeln!(err, "{prefix}text views: {written} sizes written ({sized} views sized{failed}) in {secs:.2} s")?;
    Ok(())
}

/// Builds (or finds up to date) the index of every var-column sparse matrix of `ad`, naming
/// each as `prefix` + its virtual path, with a progress line on a terminal.
fn index_store(prefix: &str, ad: &AnnData, service: &Arc<IndexService>, totals: &mut Totals) -> Result<(), CliError> {
    // SAFETY: isatty on a descriptor number; it only queries the descriptor.
    let tty = unsafe { libc::isatty(2) } == 1;
    let mut err = std::io::stderr();
    for (name, m) in var_matrices(ad) {
        let name = format!("{prefix}{name}");
        let handle = service
            .handle(&m)
            .ok_or_else(|| CliError::Usage(format!("{name}: cannot be indexed (see the message above)")))?;
        if handle.has_valid_file() {
            writeln!(err, "{name}: up to date ({})", handle.path().display())?;
            totals.fresh += 1;
            continue;
        }
        let t0 = Instant::now();
        let worker = {
            let h = handle.clone();
            std::thread::spawn(move || h.ready().map(|_| ()))
        };
        while !worker.is_finished() {
            if tty {
                write!(err, "\r{name}: {:3}%  {:.1} s ", handle.progress().percent(), t0.elapsed().as_secs_f64())?;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let result = worker.join().map_err(|_| CliError::Usage(format!("{name}: the build panicked")))?;
        if tty {
            write!(err, "\r\x1b[K")?;
        }
        result.map_err(|e| CliError::Usage(format!("{name}: {e}")))?;
        let b = handle.built_bytes();
        writeln!(err, "{name}: built in {:.2} s, {b} bytes ({})", t0.elapsed().as_secs_f64(), handle.path().display())?;
        totals.built += 1;
        totals.bytes += b;
    }
    Ok(())
}
