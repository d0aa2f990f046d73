//! The `annfs` command line: `mount`, `ls`, `cat`, `info`, `demo`.

pub mod args;
mod demo;
mod info;
pub mod options;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;

use crate::cache::ChunkCache;
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
}

/// Opens `store` and builds its virtual tree with a cache of `cache_bytes`.
pub fn open(store: &str, cache_bytes: u64) -> Result<Opened, CliError> {
    open_with(store, cache_bytes, &OpenOptions::default())
}

/// [`open`] with storage options (e.g. the on-disk cache of remote stores).
pub fn open_with(store: &str, cache_bytes: u64, opts: &OpenOptions) -> Result<Opened, CliError> {
    let st = crate::storage::open_with(store, opts).map_err(|source| CliError::Storage { store: store.into(), source })?;
    let cache = Arc::new(ChunkCache::new(cache_bytes));
    let ad = crate::model::build(&st, &cache).map_err(|source| CliError::Model { store: store.into(), source })?;
    let tree = Arc::new(crate::views::tree::build(&ad, &st.info, cache.clone()));
    Ok(Opened { tree, cache, info: st.info })
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Mount(m) => m.log_level.clone(),
        _ => "warn".to_string(),
    };
    init_logging(&level, match &cli.command {
        Command::Mount(m) => m.log_file.as_deref(),
        _ => None,
    });
    let result = match cli.command {
        Command::Mount(args) => mount(*args),
        Command::Ls { store, path, recursive, long } => ls(&store, &path, recursive, long),
        Command::Cat { store, path } => cat(&store, &path),
        Command::Info { store } => info::info(&store),
        Command::Demo => demo::demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("annfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, file: Option<&std::path::Path>) {
    let mut b = env_logger::Builder::new();
    // fuser logs every request the filesystem leaves to its defaults (ENOSYS) as a warning.
    b.filter_module("fuser", log::LevelFilter::Error);
    b.parse_filters(level);
    if let Ok(env) = std::env::var("RUST_LOG") {
        b.parse_filters(&env);
    }
    if let Some(path) = file {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => {
                b.target(env_logger::Target::Pipe(Box::new(f)));
            }
            Err(e) => eprintln!("annfs: cannot open log file {}: {e}", path.display()),
        }
    }
    let _ = b.try_init();
}

fn node_at<'a>(tree: &'a VTree, path: &str) -> Result<(usize, &'a VNode), CliError> {
    let id = tree.resolve(path).ok_or_else(|| CliError::Path(format!("{path}: no such file or directory")))?;
    Ok((id, &tree.nodes[id]))
}

fn ls(store: &str, path: &str, recursive: bool, long: bool) -> Result<(), CliError> {
    let o = open(store, 64 << 20)?;
    let (id, node) = node_at(&o.tree, path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let size_of = |id: usize| -> String {
        match &o.tree.nodes[id] {
            VNode::File(f) => f.size().map(|s| s.to_string()).unwrap_or_else(|_| "EIO".into()),
            VNode::Dir(_) => "-".into(),
        }
    };
    match node {
        VNode::File(_) => writeln!(out, "{}", path.trim_matches('/'))?,
        VNode::Dir(entries) if recursive => {
            for (p, fid) in o.tree.walk_files(id) {
                if long {
                    writeln!(out, "{:>14}  {p}", size_of(fid))?;
                } else {
                    writeln!(out, "{p}")?;
                }
            }
            let _ = entries;
        }
        VNode::Dir(entries) => {
            for (name, cid) in entries {
                let slash = if matches!(o.tree.nodes[*cid], VNode::Dir(_)) { "/" } else { "" };
                if long {
                    writeln!(out, "{:>14}  {name}{slash}", size_of(*cid))?;
                } else {
                    writeln!(out, "{name}{slash}")?;
                }
            }
        }
    }
    Ok(())
}

fn cat(store: &str, path: &str) -> Result<(), CliError> {
    let o = open(store, 256 << 20)?;
    let (_, node) = node_at(&o.tree, path)?;
    let VNode::File(f) = node else {
        return Err(CliError::Path(format!("{path}: is a directory")));
    };
    let read_err = |source| CliError::Read { path: path.to_string(), source };
    let size = f.size().map_err(read_err)?;
    let mut out = std::io::stdout().lock();
    let mut off = 0u64;
    while off < size {
        let chunk = f.read(off, (4 << 20).min(size - off) as usize).map_err(read_err)?;
        if chunk.is_empty() {
            break;
        }
        out.write_all(&chunk)?;
        off += chunk.len() as u64;
    }
    out.flush()?;
    Ok(())
}

fn parse_umask(s: Option<&str>) -> Result<u16, CliError> {
    match s {
        None => Ok(0o022 & 0o777),
        Some(s) => u16::from_str_radix(s.trim_start_matches("0o"), 8)
            .map(|m| m & 0o777)
            .map_err(|_| CliError::Usage(format!("bad umask `{s}` (octal expected)"))),
    }
}

fn mount(mut args: MountArgs) -> Result<(), CliError> {
    options::apply_o_options(&mut args)?;
    let budget = options::parse_size(&args.cache_size)?;
    let store_opts = OpenOptions {
        disk_cache: args.disk_cache.clone(),
        disk_cache_size: options::parse_size(&args.disk_cache_size)?,
    };
    let mut o = open_with(&args.store, budget, &store_opts)?;
    if let Some(size) = &args.bench_zero_file {
        let size = options::parse_size(size)?;
        let dir = o.tree.resolve(".annfs");
        if let (Some(dir), Some(tree)) = (dir, Arc::get_mut(&mut o.tree)) {
            tree.add_file(dir, "zero", Arc::new(crate::views::ZeroFile(size)));
        }
    }
    let owner = Ownership {
        uid: args.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
        gid: args.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
        umask: parse_umask(args.umask.as_deref())?,
    };
    let mtime = o.info.mtime.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)).unwrap_or(SystemTime::now());
    let fs = AnnFs::new(o.tree.clone(), o.cache.clone(), owner, mtime);
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2));
    let cfg = MountConfig {
        mountpoint: args.mountpoint.clone(),
        fsname: format!("annfs:{}", args.store),
        allow_other: args.allow_other,
        allow_root: args.allow_root,
        threads,
    };
    serve(fs, &cfg, || {})?;
    Ok(())
}
