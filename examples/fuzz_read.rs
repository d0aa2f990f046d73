//! `fuzz_read STORE [MAX_BYTES]`: opens a store as `annfs cat` does and reads every file of its
//! virtual tree (up to MAX_BYTES of each, default 32 MiB), in one process, for
//! `scripts/fuzz_stores.py` (one `annfs cat` per file costs a store open per file).
//!
//! Prints `ok PATH BYTES` or `error PATH: MESSAGE` per file, then `done`. Exit status: 0 when
//! every file read, 2 when some failed cleanly, 1 when the store did not open.

use std::process::ExitCode;

use annfs::views::VNode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(store) = args.get(1) else {
        eprintln!("usage: fuzz_read STORE [MAX_BYTES]");
        return ExitCode::from(1);
    };
    let max: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32 << 20);
    let opened = match annfs::cli::open(store, 256 << 20) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("annfs: {e}");
            return ExitCode::from(1);
        }
    };
    let Some((root, id)) = opened.tree.resolve_any("") else {
        eprintln!("annfs: no root");
        return ExitCode::from(1);
    };
    let mut paths = Vec::new();
    root.walk_paths(id, "", &mut paths);
    let mut failed = false;
    for path in paths {
        match read_file(&opened.tree, &path, max) {
            Ok(n) => println!("ok {path} {n}"),
            Err(e) => {
                failed = true;
                println!("error {path}: {e}");
            }
        }
    }
    println!("done");
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads up to `max` bytes of `path` in 4 MiB requests, as `annfs cat` does, and drops behind
/// each as a mount does for a sequential reader (the next read decodes what it needs again).
fn read_file(tree: &std::sync::Arc<annfs::views::VTree>, path: &str, max: u64) -> Result<u64, String> {
    let (t, id) = tree.resolve_any(path).ok_or("vanished from the tree")?;
    let Some(VNode::File(f)) = t.nodes.get(id) else {
        return Err("not a file".into());
    };
    let size = f.size().map_err(|e| e.to_string())?;
    let mut off = 0u64;
    while off < size.min(max) {
        let chunk = f.read(off, (4u64 << 20).min(size - off) as usize).map_err(|e| e.to_string())?;
        if chunk.is_empty() {
            break;
        }
        f.drop_behind(off, chunk.len());
        off += chunk.len() as u64;
    }
    Ok(off)
}
