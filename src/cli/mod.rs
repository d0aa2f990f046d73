//! The `annfs` command line: `mount`, `umount`, `ls`, `cat`, `info`, `demo`, `index`,
//! `install-helper`, and the mount(8) helper forms (see [`helper`]).

pub mod args;
pub mod daemon;
mod demo;
pub mod helper;
mod index;
mod info;
pub mod logging;
mod metrics;
pub mod notify;
pub mod options;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;

use crate::cache::ChunkCache;
use crate::collection::StoreSetup;
use crate::fs::mount::{serve, MountConfig, MountError};
use crate::fs::{AnnFs, Ownership};
use crate::model::ModelError;
use crate::storage::{OpenOptions, StorageError, StoreInfo};
use crate::views::{VNode, VTree};
use args::{Cli, Command, MountArgs};

/// A failed command, printed as one line on standard error.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The store could not be opened.
    #[error("cannot open {store}: {}", without_prefix(store, source))]
    Storage {
        /// The store argument.
        store: String,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The store holds no usable AnnData.
    #[error("cannot read {store} as AnnData: {source}")]
    Model {
        /// The store argument.
        store: String,
        /// Why.
        #[source]
        source: ModelError,
    },
    /// A path of the virtual tree does not exist or is the wrong kind.
    #[error("{0}")]
    Path(String),
    /// Reading a virtual file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// Virtual path.
        path: String,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// Mounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Writing the output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

/// `err`'s message without a leading `store: ` (storage errors name the file themselves).
fn without_prefix(store: &str, err: &impl std::fmt::Display) -> String {
    let msg = err.to_string();
    msg.strip_prefix(&format!("{store}: ")).map(str::to_string).unwrap_or(msg)
}

/// An opened store, ready to serve.
pub struct Opened {
    /// The virtual tree.
    pub tree: Arc<VTree>,
    /// The shared cache.
    pub cache: Arc<ChunkCache>,
    /// Facts about the store.
    pub info: StoreInfo,
    /// The store's transposed indexes (`None` when there is no index directory).
    pub index: Option<Arc<crate::index::IndexService>>,
    /// The store's gate (a collection's is never closed).
    pub gate: Arc<crate::storage::gate::Gate>,
    /// What the open store's metadata holds, lent from the cache's budget while it is open.
    pub metadata: Option<crate::cache::Loan>,
}

/// Opens `store` and builds its virtual tree with a cache of `cache_bytes` (a directory that is
/// not a Zarr store is a collection: nothing in it is opened yet); big text views
/// remember their sizes under `cache_dir` (default: `$XDG_CACHE_HOME/annfs`), transposed
/// indexes live in `index/` there; `opts` carries storage options (e.g. the on-disk cache of
/// remote stores).
pub fn open_with(
    store: &str,
    cache_bytes: u64,
    opts: &OpenOptions,
    cache_dir: Option<&std::path::Path>,
) -> Result<Opened, CliError> {
    open_indexed(store, cache_bytes, &setup_for(opts, cache_dir, &crate::index::IndexConfig::default()))
}

/// How stores are opened: `opts`, sizes remembered under `cache_dir` (default:
/// `$XDG_CACHE_HOME/annfs`), indexes kept as `index` says (default directory: `index/` under
/// the cache directory).
fn setup_for(opts: &OpenOptions, cache_dir: Option<&std::path::Path>, index: &crate::index::IndexConfig) -> StoreSetup {
    StoreSetup {
        open: opts.clone(),
        sidecar_dir: cache_dir.map(std::path::Path::to_path_buf).or_else(crate::views::sidecar::default_dir),
        index_dir: index.dir.clone().or_else(|| crate::index::default_dir(cache_dir)),
        index_wait: index.wait,
        ..Default::default()
    }
}

/// [`open_with`], with everything `setup` says (index directory and wait; for a collection
/// also when to close idle stores).
pub fn open_indexed(store: &str, cache_bytes: u64, setup: &StoreSetup) -> Result<Opened, CliError> {
    let source = crate::collection::source_for(store, &setup.open.remote).map_err(|reason| CliError::Storage {
        store: store.into(),
        source: crate::storage::StorageError::NotAStore { path: store.into(), reason },
    })?;
    if let Some(source) = source {
        let cache = Arc::new(ChunkCache::new(cache_bytes));
        let coll = crate::collection::Collection::new(source, cache.clone(), setup.clone());
        return Ok(Opened { tree: Arc::new(coll.tree()), cache, info: coll.info(), index: None, gate: Default::default(), metadata: None });
    }
    let before = crate::cache::resident::anonymous_bytes();
    let st = crate::storage::open_with(store, &setup.open).map_err(|source| CliError::Storage { store: store.into(), source })?;
    let cache = Arc::new(ChunkCache::new(cache_bytes));
    let ad = crate::model::build(&st, &cache).map_err(|source| CliError::Model { store: store.into(), source })?;
    let sidecar = setup.sidecar(&st.info);
    let index = setup.index_dir.clone().map(|d| crate::index::IndexService::new(d, setup.index_wait, &st.info, cache.clone()));
    let opts = crate::views::tree::TreeOptions { sidecar, prefix: String::new(), with_rows: true, list_where: true, index: index.clone(), shared: None };
    let tree = Arc::new(crate::views::tree::build(&Arc::new(ad), &st.info, cache.clone(), &opts));
    let metadata = lend_metadata(store, &cache, before);
    Ok(Opened { tree, cache, info: st.info, index, gate: st.gate, metadata })
}

/// Lends from the cache's budget what opening `store` made the process hold outside the cache
/// (resident memory grown since `before`, less the cache's own bytes): the metadata tree, the
/// views, the HDF5 library's caches. A store of 30,000 datasets holds ~80 MB, outside any
/// cache entry; lent, the cache shrinks so that the two together stay within one budget.
fn lend_metadata(store: &str, cache: &Arc<ChunkCache>, before: Option<u64>) -> Option<crate::cache::Loan> {
    let grown = crate::cache::resident::anonymous_bytes()?.saturating_sub(before?);
    let held = grown.saturating_sub(cache.weight());
    let loan = cache.lend(held);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    if loan.bytes() < held {
        log::warn!(
            "{store}: its metadata holds {:.1} MiB, more than the cache budget can lend ({:.1} MiB); memory use will exceed --cache-size",
            mib(held),
            mib(loan.bytes())
        );
    } else {
        log::info!("{store}: its metadata holds {:.1} MiB, lent from the cache budget", mib(held));
    }
    Some(loan)
}

/// Storage options from the mount arguments: the on-disk cache, request signing, counters.
fn remote_options(args: &args::MountArgs) -> Result<OpenOptions, CliError> {
    let disk = match &args.disk_cache {
        Some(dir) => {
            let limit = options::parse_size(&args.disk_cache_size)?;
            let cache = crate::storage::range::disk_cache::DiskCache::open(dir, limit)
                .map_err(|e| CliError::Usage(format!("--disk-cache {}: {e}", dir.display())))?;
            Some(Arc::new(cache))
        }
        None => None,
    };
    let mut remote = crate::storage::range::RemoteOptions { disk, ..Default::default() };
    remote.cloud.no_sign = args.no_sign_request;
    Ok(OpenOptions { remote })
}

/// [`open_with`] with default storage options and cache directory.
pub fn open(store: &str, cache_bytes: u64) -> Result<Opened, CliError> {
    open_with(store, cache_bytes, &OpenOptions::default(), None)
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(helper::rewrite(std::env::args_os().collect()));
    let mount_args = match &cli.command {
        Command::Mount(m) => Some(&**m),
        Command::BenchMount(b) => Some(&b.mount),
        _ => None,
    };
    let (level, file) = match mount_args {
        Some(m) => {
            // `-o log_level=...,log_file=...` must take effect before logging starts.
            let mut m = m.clone();
            let ok = options::apply_o_options(&mut m).is_ok();
            // A daemon started from a terminal loses its stderr once ready: stay quiet there,
            // as mount helpers do, unless asked otherwise.
            let daemonizing = m.daemon || (m.helper && !m.foreground);
            // SAFETY: isatty on a descriptor number.
            if daemonizing && m.log_file.is_none() && m.log_level == "info" && unsafe { libc::isatty(2) } == 1 {
                m.log_level = "warn".into();
            }
            (m.log_level, if ok { m.log_file } else { None })
        }
        _ => ("warn".to_string(), None),
    };
    if let Err(e) = logging::init(&level, file.as_deref()) {
        let path = file.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        eprintln!("annfs: cannot open log file {path}: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Mount(args) => mount(*args, None),
        Command::BenchMount(b) => mount(b.mount, Some(&b.zero_file)),
        Command::Umount { mountpoint } => {
            crate::fs::mount::unmount(&mountpoint);
            Ok(())
        }
        Command::InstallHelper { sbin, bin, uninstall } => {
            let bin = (bin != "none").then(|| std::path::PathBuf::from(bin));
            helper::install(&sbin, bin.as_deref(), uninstall)
        }
        Command::Ls { store, access, path, recursive, long } => ls(&store, &access.options(), &path, recursive, long),
        Command::Cat { store, access, path } => cat(&store, &access.options(), &path),
        Command::Info { store, access } => info::info(&store, &access.options()),
        Command::Demo => demo::demo(),
        Command::Materialize { store, access, paths, to } => materialize(&store, &access.options(), &paths, &to),
        Command::Index(args) => index::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            log::debug!("failed: {e}");
            eprintln!("annfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn node_at(tree: &Arc<VTree>, path: &str) -> Result<(Arc<VTree>, usize), CliError> {
    tree.resolve_any(path).ok_or_else(|| CliError::Path(format!("{path}: no such file or directory")))
}

fn ls(store: &str, opts: &OpenOptions, path: &str, recursive: bool, long: bool) -> Result<(), CliError> {
    let o = open_with(store, 64 << 20, opts, None)?;
    let (t, id) = node_at(&o.tree, path)?;
    let base = path.trim_matches('/');
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Size column for `-l`: resolved from the root, through dynamic directories too.
    let size_of = |rel: &str| -> String {
        let full = if base.is_empty() { rel.to_string() } else { format!("{base}/{rel}") };
        match o.tree.resolve_any(&full) {
            Some((ft, fid)) => match &ft.nodes[fid] {
                VNode::File(f) => f.size().map(|s| s.to_string()).unwrap_or_else(|_| "EIO".into()),
                _ => "-".into(),
            },
            None => "?".into(),
        }
    };
    let names: Vec<String> = match &t.nodes[id] {
        VNode::File(_) => {
            writeln!(out, "{base}")?;
            return Ok(());
        }
        _ if recursive => {
            let mut paths = Vec::new();
            t.walk_paths(id, "", &mut paths);
            paths
        }
        VNode::Dir(entries) => entries
            .iter()
            .map(|(name, cid)| if matches!(t.nodes[*cid], VNode::File(_)) { name.clone() } else { format!("{name}/") })
            .collect(),
        VNode::Dyn(d) => d.list().into_iter().map(|n| if d.is_dir(&n) { format!("{n}/") } else { n }).collect(),
    };
    for name in names {
        let shown = escape_listed(&name);
        if long {
            writeln!(out, "{:>14}  {shown}", size_of(name.trim_end_matches('/')))?;
        } else {
            writeln!(out, "{shown}")?;
        }
    }
    Ok(())
}

/// A listed name on one line: a newline in a name (a category label in `where/`) is written
/// `\n` and a backslash `\\`, so every line of `annfs ls` is one entry.
pub fn escape_listed(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(['\\', '\n']) {
        name.replace('\\', "\\\\").replace('\n', "\\n").into()
    } else {
        name.into()
    }
}

fn cat(store: &str, opts: &OpenOptions, path: &str) -> Result<(), CliError> {
    let o = open_with(store, 256 << 20, opts, None)?;
    let (t, id) = node_at(&o.tree, path)?;
    let VNode::File(f) = &t.nodes[id] else {
        return Err(CliError::Path(format!("{path}: is a directory")));
    };
    let read_err = |source| CliError::Read { path: path.to_string(), source };
    let size = f.size().map_err(read_err)?;
    // Pieces of 4 MiB go to standard output as they are: through `Stdout`'s line buffering,
    // every piece was scanned for a newline (11% of `annfs cat`'s samples on a dense block).
    let mut out = std::fs::File::from(std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?);
    let mut off = 0u64;
    while off < size {
        let chunk = f.read(off, (4 << 20).min(size - off) as usize).map_err(read_err)?;
        if chunk.is_empty() {
            break;
        }
        out.write_all(&chunk)?;
        // A sequential reader, as a mount's: what it passed may leave the cache.
        f.drop_behind(off, chunk.len());
        off += chunk.len() as u64;
    }
    Ok(())
}

/// `annfs mount`; `zero_file` (from `bench-mount`) adds `.annfs/zero` of that size.
fn mount(mut args: MountArgs, zero_file: Option<&str>) -> Result<(), CliError> {
    options::apply_o_options(&mut args)?;
    let budget = options::parse_size(&args.cache_size)?;
    let owner = Ownership {
        // SAFETY: getuid takes no arguments and cannot fail.
        uid: args.uid.as_deref().map(options::resolve_uid).transpose()?.unwrap_or_else(|| unsafe { libc::getuid() }),
        // SAFETY: getgid takes no arguments and cannot fail.
        gid: args.gid.as_deref().map(options::resolve_gid).transpose()?.unwrap_or_else(|| unsafe { libc::getgid() }),
        umask: options::parse_mode("umask", args.umask.as_deref(), 0o022)?,
        file_mode: options::parse_mode("file_mode", args.file_mode.as_deref(), 0o444)?,
        dir_mode: options::parse_mode("dir_mode", args.dir_mode.as_deref(), 0o555)?,
    };
    crate::fs::mount::check_allow_other(args.allow_other)?;
    if args.fake {
        return Ok(());
    }
    // Fork while still single-threaded; the parent exits once the mount answers.
    let detached = if args.daemon || (args.helper && !args.foreground) { Some(daemon::detach()?) } else { None };
    let store_opts = remote_options(&args)?;
    let index = crate::index::IndexConfig {
        dir: args.index_dir.clone(),
        wait: Some(Duration::try_from_secs_f64(args.index_wait).map_err(|_| CliError::Usage("bad --index-wait".into()))?),
    };
    let invalidator = crate::views::activity::EntryInvalidator::default();
    let setup = StoreSetup {
        idle: (args.store_idle > 0.0)
            .then(|| Duration::try_from_secs_f64(args.store_idle))
            .transpose()
            .map_err(|_| CliError::Usage("bad --store-idle".into()))?,
        invalidator: invalidator.clone(),
        ..setup_for(&store_opts, args.cache_dir.as_deref(), &index)
    };
    if setup.sidecar_dir.is_none() {
        log::warn!("no cache directory ($XDG_CACHE_HOME and $HOME are unset; pass --cache-dir DIR): sizes of big text views are not remembered across mounts");
    }
    if setup.index_dir.is_none() {
        log::warn!("no index directory (pass --index-dir DIR or --cache-dir DIR): columns of CSR matrices are served by scanning them (slow)");
    }
    let mut o = open_indexed(&args.store, budget, &setup)?;
    if let Some(size) = zero_file {
        let size = options::parse_size(size)?;
        let dir = o.tree.resolve(".annfs");
        if let (Some(dir), Some(tree)) = (dir, Arc::get_mut(&mut o.tree)) {
            tree.add_file(dir, "zero", Arc::new(crate::views::ZeroFile(size)));
        }
    }
    o.cache.stats.set_remote(store_opts.remote.stats.clone());
    o.cache.stats.set_gate(o.gate.clone());
    let remote = crate::storage::range::Remote::parse(&args.store).is_some();
    let collection = o.info.format == "collection";
    if collection && args.overlay.is_some() {
        return Err(CliError::Usage(format!("{}: --overlay is not supported for a collection (mount one store)", args.store)));
    }
    // A collection's stores come and go: its directory is not watched as one store is.
    let on_stale = crate::fs::source_watch::StaleHook::default();
    if !remote && !collection {
        if let Err(e) = crate::fs::source_watch::start(std::path::Path::new(&args.store), o.gate.clone(), on_stale.clone()) {
            log::warn!("cannot watch {} for changes: {e}", args.store);
        }
    }
    let mtime = o.info.mtime.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)).unwrap_or(SystemTime::now());
    let serving = crate::fs::ServeConfig { gate: o.gate.clone(), ..options::serve_config(&args, budget)? };
    let fs = AnnFs::new(o.tree.clone(), o.cache.clone(), owner, mtime, serving);

    // Requests are parsed by one FUSE thread (two with an overlay, whose writes are answered
    // in place) and served by the read workers; each FUSE thread holds a 16 MiB request buffer.
    let threads = if args.overlay.is_some() { 2 } else { 1 };
    let cfg = MountConfig {
        mountpoint: args.mountpoint.clone(),
        fsname: format!("annfs:{}", args.store),
        allow_other: args.allow_other,
        allow_root: args.allow_root,
        threads,
        extra: args.kernel_options.clone(),
        writable: args.overlay.is_some(),
        on_stale,
        invalidator,
    };
    if let Some(secs) = args.log_metrics.filter(|s| *s > 0) {
        metrics::start(o.cache.clone(), Duration::from_secs(secs));
    }
    let logs_to_file = args.log_file.is_some();
    let on_ready = move || {
        notify::ready(&args.mountpoint);
        if let Some(d) = detached {
            d.ready(logs_to_file);
        }
    };
    let result = match &args.overlay {
        Some(dir) => {
            let ofs = crate::overlay::OverlayFs::new(fs, o.tree.clone(), dir, owner, mtime)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            serve(ofs, &cfg, on_ready, logging::reopen)
        }
        None => serve(fs, &cfg, on_ready, logging::reopen),
    };
    notify::stopping();
    result?;
    Ok(())
}

fn materialize(store: &str, opts: &OpenOptions, paths: &[String], to: &std::path::Path) -> Result<(), CliError> {
    let o = open_with(store, 256 << 20, opts, None)?;
    let (files, bytes) =
        crate::overlay::materialize::materialize(&o.tree, paths, to).map_err(|e| CliError::Path(e.to_string()))?;
    log::info!("materialized {files} files ({bytes} bytes) into {}", to.display());
    Ok(())
}
