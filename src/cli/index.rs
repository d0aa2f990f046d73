//! `annfs index STORE [--index-dir DIR]`: builds the transposed index of every sparse matrix
//! whose columns are vars (X, layers, raw/X) ahead of time, with a progress line on a terminal
//! and a summary (time, bytes written).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::IndexArgs;
use super::{options, CliError};
use crate::cache::ChunkCache;
use crate::index::{format, IndexService};
use crate::model::{AnnData, Element, Matrix, Sparse};

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

/// Runs `annfs index`.
pub fn run(args: &IndexArgs) -> Result<(), CliError> {
    let budget = options::parse_size(&args.cache_size)?;
    let dir = args
        .index_dir
        .clone()
        .or_else(|| crate::index::default_dir(args.cache_dir.as_deref()))
        .ok_or_else(|| CliError::Usage("no index directory: pass --index-dir DIR".into()))?;
    format::probe_writable(&dir)
        .map_err(|e| CliError::Usage(format!("cannot write indexes into {}: {e}", dir.display())))?;
    let st = crate::storage::open(&args.store).map_err(|source| CliError::Storage { store: args.store.clone(), source })?;
    let cache = Arc::new(ChunkCache::new(budget));
    let ad = crate::model::build(&st, &cache).map_err(|source| CliError::Model { store: args.store.clone(), source })?;
    let service = IndexService::new(dir.clone(), None, &st.info, cache);
    let tty = unsafe { libc::isatty(2) } == 1; // SAFETY: isatty on a descriptor number.
    let start = Instant::now();
    let (mut built, mut fresh, mut bytes) = (0, 0, 0u64);
    let mut err = std::io::stderr();
    for (name, m) in var_matrices(&ad) {
        let handle = service
            .handle(&m)
            .ok_or_else(|| CliError::Usage(format!("{name}: cannot be indexed (see the message above)")))?;
        if handle.has_valid_file() {
            writeln!(err, "{name}: up to date ({})", handle.path().display())?;
            fresh += 1;
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
        built += 1;
        bytes += b;
    }
    writeln!(
        err,
        "annfs index: {built} built, {fresh} up to date in {:.2} s; {bytes} bytes written to {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    )?;
    Ok(())
}
