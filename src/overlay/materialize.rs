//! `annfs materialize STORE PATH... --to DIR`: virtual files written out as real files, at
//! their virtual paths below DIR, without mounting (the same atomic copy-up as the overlay,
//! so DIR can later serve as `--overlay DIR`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::copyup::{copy_to_temp, CopyError};
use super::resolve::components;
use super::upper::{UpperDir, UpperDirError};
use crate::views::{FileContent, VNode, VTree};

/// Why materializing failed.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The path is not in the virtual tree.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The target directory is unusable.
    #[error(transparent)]
    UpperDir(#[from] UpperDirError),
    /// Copying one file failed.
    #[error("{path}: {source}")]
    Copy {
        /// Virtual path.
        path: String,
        /// Why.
        #[source]
        source: CopyError,
    },
}

/// Files below this size get no progress line.
const PROGRESS_MIN: u64 = 16 << 20;

/// Every file `path` names: itself, or all files below a directory (with the listed entries
/// of dynamic directories).
/// A virtual file to write: its path and content.
type Job = (String, Arc<dyn FileContent>);

fn files_of(tree: &Arc<VTree>, path: &str) -> Result<Vec<Job>, MaterializeError> {
    let base = path.trim_matches('/').to_string();
    let (t, id) = tree.resolve_any(&base).ok_or_else(|| MaterializeError::NotFound(path.to_string()))?;
    let join = |rel: &str| if base.is_empty() { rel.to_string() } else { format!("{base}/{rel}") };
    match &t.nodes[id] {
        VNode::File(f) => Ok(vec![(base.clone(), f.clone())]),
        _ => {
            let mut rels = Vec::new();
            t.walk_paths(id, "", &mut rels);
            let mut out = Vec::new();
            for rel in rels {
                let full = join(&rel);
                if let Some((ft, fid)) = tree.resolve_any(&full) {
                    if let VNode::File(f) = &ft.nodes[fid] {
                        out.push((full, f.clone()));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Writes each of `paths` (files or directories of `tree`) below `dir`; returns the number of
/// files and bytes written. Shows progress on standard error when it is a terminal.
pub fn materialize(tree: &Arc<VTree>, paths: &[String], dir: &Path) -> Result<(usize, u64), MaterializeError> {
    let mut files = Vec::new();
    for p in paths {
        files.extend(files_of(tree, p)?);
    }
    let upper = UpperDir::open(dir)?;
    let tty = std::io::stderr().is_terminal();
    let (mut count, mut bytes) = (0usize, 0u64);
    for (path, f) in files {
        let err = |source: CopyError| MaterializeError::Copy { path: path.clone(), source };
        let comps = components(&path).map_err(|e| err(e.into()))?;
        let Some((name, parents)) = comps.split_last() else { continue };
        let parent = upper.ensure_dir(parents, 0o755, None).map_err(|e| err(e.into()))?;
        let start = Instant::now();
        let mut last = Instant::now();
        let mut progress = |done: u64, total: u64| {
            if tty && total >= PROGRESS_MIN && (last.elapsed().as_millis() >= 200 || done == total) {
                last = Instant::now();
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3) / (1 << 20) as f64;
                let mut e = std::io::stderr().lock();
                let _ = write!(e, "\r{path}: {:>3}% ({} / {} MiB, {rate:.0} MiB/s)", done * 100 / total.max(1), done >> 20, total >> 20);
                if done == total {
                    let _ = writeln!(e);
                }
            }
        };
        let temp = copy_to_temp(&upper, f.as_ref(), None, 0o644, None, &mut progress).map_err(err)?;
        let size = temp.file.metadata().map(|m| m.len()).unwrap_or(0);
        temp.commit(&parent, name).map_err(|e| err(e.into()))?;
        count += 1;
        bytes += size;
    }
    // The work directory is only needed while copying.
    let _ = std::fs::remove_dir(dir.join(super::upper::WORK));
    Ok((count, bytes))
}
