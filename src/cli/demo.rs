//! `annfs demo`: mounts the bundled sample store, tours it with plain file reads, unmounts.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::CliError;
use crate::fs::mount::{serve, MountConfig};
use crate::fs::{AnnFs, Ownership};

/// The sample store, compiled into the binary.
const SAMPLE: &[u8] = include_bytes!("../../data/sample.h5ad");

fn head(path: &Path, lines: usize) -> std::io::Result<String> {
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    Ok(f.lines().take(lines).collect::<Result<Vec<_>, _>>()?.join("\n"))
}

fn tour(mnt: &Path) -> std::io::Result<()> {
    let show = |title: &str, body: String| println!("\n$ {title}\n{body}");
    let mut listing: Vec<String> = std::fs::read_dir(mnt)?
        .filter_map(|e| e.ok())
        .map(|e| {
            let dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            format!("{}{}", e.file_name().to_string_lossy(), if dir { "/" } else { "" })
        })
        .collect();
    listing.sort();
    show(&format!("ls {}", mnt.display()), listing.join("  "));
    show("head -8 README.txt", head(&mnt.join("README.txt"), 8)?);
    show("head -4 obs.tsv", head(&mnt.join("obs.tsv"), 4)?);
    show("head -3 obs/cell_type.txt", head(&mnt.join("obs/cell_type.txt"), 3)?);
    show("cat obs/cell_type.categories.txt", std::fs::read_to_string(mnt.join("obs/cell_type.categories.txt"))?);
    let mut x: Vec<String> = std::fs::read_dir(mnt.join("X"))?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    x.sort();
    show("ls X/", x.join("  "));
    let dense = mnt.join("X/dense.npy");
    let size = std::fs::metadata(&dense)?.len();
    let mut f = std::fs::File::open(&dense)?;
    let mut hdr = vec![0u8; 128];
    f.read_exact(&mut hdr)?;
    let dict = String::from_utf8_lossy(&hdr[10..]).trim_end().to_string();
    f.seek(SeekFrom::End(-16))?;
    let mut tail = [0u8; 16];
    f.read_exact(&mut tail)?;
    let last: Vec<f32> = tail.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    show(
        "stat -c %s X/dense.npy; head -c 128 X/dense.npy",
        format!("{size} bytes (a 300 x 120 float32 matrix, densified on the fly from gzip CSR)\n{dict}\nlast 4 values: {last:?}"),
    );
    show("head -2 obsm/X_umap.tsv", head(&mnt.join("obsm/X_umap.tsv"), 2)?);
    show("cat uns/neighbors/params/n_neighbors.txt", std::fs::read_to_string(mnt.join("uns/neighbors/params/n_neighbors.txt"))?);
    show("cat .annfs/stats.json", std::fs::read_to_string(mnt.join(".annfs/stats.json"))?);
    println!("\nIn Python: numpy.load('{}/X/dense.npy', mmap_mode='r'); pandas.read_csv('{}/obs.tsv', sep='\\t', index_col=0)", mnt.display(), mnt.display());
    Ok(())
}

/// Runs the demo.
pub(super) fn demo() -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("annfs-demo-{}", std::process::id()));
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let store = dir.join("sample.h5ad");
    std::fs::write(&store, SAMPLE)?;
    let store_s = store.display().to_string();
    println!("annfs demo: mounting the bundled sample store ({store_s}) at {}", mnt.display());
    let o = super::open(&store_s, 64 << 20)?;
    let owner = Ownership::current_user();
    let fs = AnnFs::new(o.tree.clone(), Arc::clone(&o.cache), owner, SystemTime::now(), crate::fs::ServeConfig::for_budget(64 << 20));
    let cfg = MountConfig { mountpoint: mnt.clone(), fsname: format!("annfs:{store_s}"), allow_other: false, allow_root: false, threads: 2, extra: Vec::new(), writable: false, on_stale: Default::default(), invalidator: Default::default() };
    let (tx, rx) = std::sync::mpsc::channel();
    let mnt2 = mnt.clone();
    let server = std::thread::spawn(move || serve(fs, &cfg, move || {
        let _ = tx.send(());
    }, || {}));
    let result = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => {
            let r = tour(&mnt2);
            crate::fs::mount::unmount(&mnt2);
            r.map_err(CliError::Io)
        }
        Err(_) => Err(CliError::Path("the demo mount did not come up".into())),
    };
    match server.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(CliError::Path("the mount thread failed".into())),
    }
    result?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nunmounted; demo done.");
    Ok(())
}
