//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// What every STORE argument may be (`--help`).
const STORE_HELP: &str = "The store: an .h5ad file, a Zarr directory, or a collection directory (every store in it); or an http(s)://, s3://, gs:// or az:// URL of one (an object-store prefix is a collection)";

/// What `annfs --version` prints after the name: the crate version and the git commit the
/// binary was built from (`unknown` when built outside a git checkout; see `build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("ANNFS_GIT_COMMIT"), ")");

/// annfs: mount AnnData stores (.h5ad, .zarr) as a read-only tree of plain files.
#[derive(Parser, Debug)]
#[command(name = "annfs", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount STORE at MOUNTPOINT (foreground unless --daemon; Ctrl-C or SIGTERM unmounts).
    Mount(Box<MountArgs>),
    /// Benchmarks only: `mount` with an extra `.annfs/zero` file, to measure the FUSE ceiling.
    #[command(hide = true)]
    BenchMount(Box<BenchMountArgs>),
    /// Unmount an annfs mount (lazily if busy); the daemon then exits.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Install the mount(8) helper: symlinks /sbin/mount.fuse.annfs (and /usr/local/bin/annfs)
    /// to this binary, so `mount -t fuse.annfs` and fstab lines work (needs root).
    InstallHelper {
        /// Directory of the helper symlink.
        #[arg(long, default_value = "/sbin")]
        sbin: PathBuf,
        /// Directory of the `annfs` symlink (for systemd units and mount.fuse3); `none` to skip.
        #[arg(long, default_value = "/usr/local/bin")]
        bin: String,
        /// Remove the symlinks instead.
        #[arg(long)]
        uninstall: bool,
    },
    /// List the virtual tree (no FUSE needed).
    Ls {
        /// The store (its forms: [`STORE_HELP`]).
        #[arg(help = STORE_HELP)]
        store: String,
        /// Remote access.
        #[command(flatten)]
        access: AccessArgs,
        /// A directory of the virtual tree.
        #[arg(default_value = "")]
        path: String,
        /// List every file below PATH, as relative paths.
        #[arg(short, long)]
        recursive: bool,
        /// Show sizes.
        #[arg(short, long)]
        long: bool,
    },
    /// Print a virtual file to standard output (same code path as a mount).
    Cat {
        /// The store (its forms: [`STORE_HELP`]).
        #[arg(help = STORE_HELP)]
        store: String,
        /// Remote access.
        #[command(flatten)]
        access: AccessArgs,
        /// A file of the virtual tree.
        path: String,
    },
    /// Describe a store: shape, elements, encodings, chunking, compression.
    Info {
        /// The store (its forms: [`STORE_HELP`]).
        #[arg(help = STORE_HELP)]
        store: String,
        /// Remote access.
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Mount the bundled sample store, tour it, and unmount.
    Demo,
    /// Build the transposed (gene-column) indexes of every sparse var-column matrix ahead of time.
    Index(IndexArgs),
    /// Write virtual files (or whole directories) out as real files below DIR, without mounting.
    Materialize {
        /// The store (its forms: [`STORE_HELP`]).
        #[arg(help = STORE_HELP)]
        store: String,
        /// Remote access.
        #[command(flatten)]
        access: AccessArgs,
        /// Files or directories of the virtual tree.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Target directory (created if missing); files land at their virtual paths below it.
        #[arg(long = "to", value_name = "DIR")]
        to: std::path::PathBuf,
    },
}

/// How the commands that open a store without mounting reach a remote one.
#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// `s3://`, `gs://`, `az://` stores: send unsigned requests (public buckets and
    /// containers), ignoring any credentials.
    #[arg(long)]
    pub no_sign_request: bool,
}

impl AccessArgs {
    /// The storage options these arguments ask for.
    pub fn options(&self) -> crate::storage::OpenOptions {
        let mut o = crate::storage::OpenOptions::default();
        o.remote.cloud.no_sign = self.no_sign_request;
        o
    }
}

/// Options of `annfs index`.
#[derive(Args, Debug, Clone)]
pub struct IndexArgs {
    /// The store (its forms: [`STORE_HELP`]).
    #[arg(help = STORE_HELP)]
    pub store: String,
    /// Remote access.
    #[command(flatten)]
    pub access: AccessArgs,
    /// Where to write the indexes (default: `index/` under the cache directory).
    #[arg(long, value_name = "DIR")]
    pub index_dir: Option<PathBuf>,
    /// The cache directory whose `index/` is the default index directory.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Memory budget (chunk cache plus the build's buffers, e.g. 512M, 4G).
    #[arg(long, default_value = "1G")]
    pub cache_size: String,
}

/// Options of the hidden `annfs bench-mount` (benchmarks and tests only).
#[derive(Args, Debug, Clone)]
pub struct BenchMountArgs {
    /// Adds `.annfs/zero`, a file of SIZE zero bytes served as the binary views are.
    #[arg(long, value_name = "SIZE")]
    pub zero_file: String,
    /// Everything `annfs mount` takes.
    #[command(flatten)]
    pub mount: MountArgs,
}

/// Options of `annfs mount`.
#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The store (its forms: [`STORE_HELP`]).
    #[arg(help = STORE_HELP)]
    pub store: String,
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Byte budget of the decoded-chunk cache (e.g. 512M, 4G).
    #[arg(long, default_value = "1G")]
    pub cache_size: String,
    /// Where big text views remember their sizes across mounts
    /// (default: `$XDG_CACHE_HOME/annfs`, else `~/.cache/annfs`, else for root `/var/cache/annfs`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Where transposed (gene-column) indexes are kept and built (default: `index/` under the
    /// cache directory). A read-only directory holding valid indexes is used as is.
    #[arg(long, value_name = "DIR")]
    pub index_dir: Option<PathBuf>,
    /// Seconds a read of cols/, genes/ or a transposed csc/ waits for its index to be built
    /// before failing with EIO (the build goes on in the background).
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub index_wait: f64,
    /// Collections: close a store after SECS with no request and no open file (its metadata
    /// and file handles are released; the next access opens it again); 0 keeps stores open.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub store_idle: f64,
    /// Threads serving reads (default: the number of CPUs, between 2 and 16).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Let all users access the mount.
    #[arg(long)]
    pub allow_other: bool,
    /// Let root access the mount.
    #[arg(long)]
    pub allow_root: bool,
    /// Owner of the files, a uid or user name (default: the mounting user).
    #[arg(long)]
    pub uid: Option<String>,
    /// Group of the files, a gid or group name (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<String>,
    /// Permission bits to clear (octal, e.g. 027).
    #[arg(long)]
    pub umask: Option<String>,
    /// Remote stores: keep fetched chunks in this directory (validated; reused by later mounts).
    #[arg(long, value_name = "DIR")]
    pub disk_cache: Option<PathBuf>,
    /// Byte budget of the on-disk chunk cache (e.g. 10G); least recently used entries are removed.
    #[arg(long, default_value = "10G", value_name = "SIZE")]
    pub disk_cache_size: String,
    /// `s3://`, `gs://`, `az://` stores: send unsigned requests (public buckets and
    /// containers), ignoring any credentials.
    #[arg(long)]
    pub no_sign_request: bool,
    /// Permission bits of files (octal, default 0444; write bits are always dropped).
    #[arg(long)]
    pub file_mode: Option<String>,
    /// Permission bits of directories (octal, default 0555).
    #[arg(long)]
    pub dir_mode: Option<String>,
    /// Run in the background once the mount answers (the parent exits 0, or non-zero with the error).
    #[arg(long)]
    pub daemon: bool,
    /// Log a line of metrics (cache hit rate, bytes served, decode time, open files, errors) every SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub log_metrics: Option<u64>,
    /// Invoked as a mount(8) helper: daemonize unless `-o foreground`.
    #[arg(long, hide = true)]
    pub helper: bool,
    /// With --helper: stay in the foreground.
    #[arg(long, hide = true)]
    pub foreground: bool,
    /// mount(8)'s `-f`: check everything, mount nothing.
    #[arg(long, hide = true)]
    pub fake: bool,
    /// Kernel mount options passed through (SELinux `context=` and friends), from `-o`.
    #[arg(skip)]
    pub kernel_options: Vec<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Append logs to this file instead of standard error.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// A request (read, or a `stat` that sizes a text view) not answered within SECS seconds
    /// fails with EIO and a log line, whatever it waits for.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub request_timeout: u64,
    /// Kernel page caching: `text` (default: .npy files are served with direct I/O — large
    /// requests, no page-cache copy, still mmap-able — text files through the page cache),
    /// `all` (every file through the page cache) or `none` (every file direct).
    #[arg(long, default_value = "text", value_name = "MODE")]
    pub page_cache: String,
    /// Make the mount writable: every change lands in DIR (created if missing), never in the
    /// store. Removing DIR restores the pristine view.
    #[arg(long, value_name = "DIR")]
    pub overlay: Option<PathBuf>,
    /// Mount options as `key=value,...` (every option above, plus generic mount options).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn zero_file_is_a_bench_mount_option_only() {
        assert!(Cli::try_parse_from(["annfs", "mount", "s.h5ad", "/mnt", "--bench-zero-file", "1G"]).is_err());
        let cli = Cli::try_parse_from(["annfs", "bench-mount", "--zero-file", "1G", "s.h5ad", "/mnt", "--cache-size", "64M"]);
        match cli.map(|c| c.command) {
            Ok(Command::BenchMount(b)) => {
                assert_eq!(b.zero_file, "1G");
                assert_eq!((b.mount.store.as_str(), b.mount.cache_size.as_str()), ("s.h5ad", "64M"));
            }
            other => panic!("bench-mount did not parse: {other:?}"),
        }
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("mount") && !help.contains("bench-mount"), "bench-mount is hidden from --help");
    }
}
