//! Every committed fixture (written by the real anndata, several versions and layouts) is
//! rendered through the same code path as `annfs cat` and compared byte for byte with the
//! goldens that the Python oracle (`integration/oracle.py`, via `scripts/make_fixtures.py
//! --golden`) wrote from what anndata/numpy/pandas read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annfs::views::{VNode, VTree};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn golden_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("golden dir").filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            golden_files(&e.path(), &rel, out);
        } else {
            out.push(rel);
        }
    }
}

fn read_all(tree: &Arc<VTree>, path: &str) -> Result<Vec<u8>, String> {
    // Through directories resolved on lookup too (the transposed csc/ of a sparse matrix).
    let (tree, id) = tree.resolve_any(path).ok_or_else(|| format!("{path}: missing from the tree"))?;
    let VNode::File(f) = &tree.nodes[id] else { return Err(format!("{path}: is a directory")) };
    let size = f.size().map_err(|e| format!("{path}: size: {e}"))?;
    let bytes = f.read(0, size as usize + 1).map_err(|e| format!("{path}: read: {e}"))?;
    if bytes.len() as u64 != size {
        return Err(format!("{path}: stat size {size} but {} bytes read", bytes.len()));
    }
    Ok(bytes)
}

/// Paths the tree may have beyond the oracle's (not covered by goldens).
fn allowed_extra(path: &str) -> bool {
    path == "README.txt"
        || path.starts_with(".annfs/")
        || path.ends_with("matrix.mtx")
        || path.contains("10x/")
        || path.contains("10x_v3/")
}

/// Renders `store` and compares every file with the goldens of `stem`; returns files matched.
fn compare_with_goldens(stem: &str, store: &str, failures: &mut Vec<String>) -> usize {
    let golden_root = fixtures().join("golden");
    let mut compared = 0usize;
    let opened = match annfs::cli::open(store, 64 << 20) {
        Ok(o) => o,
        Err(e) => {
            failures.push(format!("{store}: cannot open: {e}"));
            return 0;
        }
    };
    // Large files are recorded as `path<TAB>size<TAB>sha256` instead of being committed.
    let skipped: Vec<(String, u64, String)> = std::fs::read_to_string(golden_root.join(format!("{stem}.skip")))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_string(), f.next()?.parse().ok()?, f.next()?.to_string()))
        })
        .collect();
    for (rel, size, sha) in &skipped {
        match read_all(&opened.tree, rel) {
            Ok(got) => {
                let digest = format!("{:x}", Sha256::digest(&got));
                if got.len() as u64 == *size && &digest == sha {
                    compared += 1;
                } else {
                    failures.push(format!("{store}/{rel}: {} bytes sha256 {digest}, want {size} bytes {sha}", got.len()));
                }
            }
            Err(e) => failures.push(format!("{store}: {e}")),
        }
    }
    let skip: BTreeSet<String> = skipped.into_iter().map(|(p, _, _)| p).collect();
    let mut expected = Vec::new();
    golden_files(&golden_root.join(stem), "", &mut expected);
    for rel in &expected {
        let want = std::fs::read(golden_root.join(stem).join(rel)).expect("golden file");
        match read_all(&opened.tree, rel) {
            Ok(got) if got == want => compared += 1,
            Ok(got) => {
                let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
                let ctx = |b: &[u8]| String::from_utf8_lossy(&b[at.saturating_sub(20)..(at + 40).min(b.len())]).into_owned();
                failures.push(format!(
                    "{store}/{rel}: differs at byte {at} (got {} bytes, want {}): got {:?} want {:?}",
                    got.len(),
                    want.len(),
                    ctx(&got),
                    ctx(&want)
                ));
            }
            Err(e) => failures.push(format!("{store}: {e}")),
        }
    }
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    for (path, _) in opened.tree.walk_files(VTree::ROOT) {
        // The transposed sparse arrays (csc/ of a CSR matrix, csr/ of a CSC one) come from the
        // gene-column index and are checked against scipy in integration/test_cols.py.
        let transposed = [("/csc/", "/csr/"), ("/csr/", "/csc/")]
            .iter()
            .any(|(t, s)| {
                let stored = path.replacen(t, s, 1);
                path.contains(t) && (expected.contains(stored.as_str()) || skip.contains(&stored))
            });
        if !expected.contains(path.as_str()) && !allowed_extra(&path) && !skip.contains(&path) && !transposed {
            failures.push(format!("{store}/{path}: in the tree but not in the oracle's"));
        }
    }
    compared
}

fn golden_stems() -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(fixtures().join("golden"))
        .expect("tests/fixtures/golden exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    stems
}

#[test]
fn every_fixture_matches_its_goldens() {
    let stems = golden_stems();
    assert!(stems.len() >= 5, "expected goldens for several fixtures, found {stems:?}");
    let mut failures = Vec::new();
    let mut compared = 0usize;
    for stem in &stems {
        let store = fixtures().join(format!("{stem}.h5ad"));
        compared += compare_with_goldens(stem, &store.display().to_string(), &mut failures);
    }
    assert!(failures.is_empty(), "{} mismatches ({} files matched):\n{}", failures.len(), compared, failures.join("\n"));
    assert!(compared > 100, "only {compared} files compared");
}

/// Every Zarr twin (`tests/fixtures/zarr/<stem>.<variant>.zarr`, written by anndata from
/// `<stem>.h5ad` with `scripts/make_zarr_fixtures.py`) renders byte-identical to the h5ad's goldens.
#[test]
fn every_zarr_twin_matches_the_h5ad_goldens() {
    let stems: BTreeSet<String> = golden_stems().into_iter().collect();
    let mut stores: Vec<(String, String)> = std::fs::read_dir(fixtures().join("zarr"))
        .expect("tests/fixtures/zarr exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (stem, _variant) = name.strip_suffix(".zarr")?.rsplit_once('.')?;
            Some((stem.to_string(), e.path().display().to_string()))
        })
        .collect();
    stores.sort();
    assert!(stores.len() >= 20, "expected many zarr twins, found {}", stores.len());
    let mut failures = Vec::new();
    let mut compared = 0usize;
    for (stem, store) in &stores {
        if !stems.contains(stem) {
            failures.push(format!("{store}: no goldens for {stem}"));
            continue;
        }
        compared += compare_with_goldens(stem, store, &mut failures);
    }
    assert!(failures.is_empty(), "{} mismatches ({} files matched):\n{}", failures.len(), compared, failures.join("\n"));
    assert!(compared > 1000, "only {compared} files compared");
}
