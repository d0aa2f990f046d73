//! Logging: standard error by default (with syslog priority prefixes when it is the journal),
//! or `--log-file`, which SIGHUP reopens (for logrotate).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// The open log file and its path, shared with the logger.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

struct Writer(Arc<LogFile>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.file.lock().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.file.lock().flush()
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Whether standard error is the systemd journal (`$JOURNAL_STREAM` names its device:inode).
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else { return false };
    // SAFETY: `libc::stat` is plain integers, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat with a valid out-pointer.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    v == format!("{}:{}", st.st_dev, st.st_ino)
}

/// Sets up logging at `level` (`error` … `trace`, or env_logger filters; `$RUST_LOG` adds to
/// it), to `file` if given. Fails only when the log file cannot be opened.
pub fn init(level: &str, file: Option<&Path>) -> std::io::Result<()> {
    let mut b = env_logger::Builder::new();
    // fuser logs every request the filesystem leaves to its defaults (ENOSYS) as a warning.
    b.filter_module("fuser", log::LevelFilter::Error);
    b.parse_filters(level);
    if let Ok(env) = std::env::var("RUST_LOG") {
        b.parse_filters(&env);
    }
    if let Some(path) = file {
        let lf = Arc::new(LogFile { path: path.to_path_buf(), file: Mutex::new(open_append(path)?) });
        let _ = LOG_FILE.set(Arc::clone(&lf));
        b.target(env_logger::Target::Pipe(Box::new(Writer(lf))));
    } else if stderr_is_journal() {
        b.format(|f, r| {
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(f, "<{prio}>{}", r.args())
        });
    }
    let _ = b.try_init();
    Ok(())
}

/// Reopens the log file at its path (after logrotate moved it away); a no-op without one.
pub fn reopen() {
    let Some(lf) = LOG_FILE.get() else { return };
    match open_append(&lf.path) {
        Ok(f) => {
            *lf.file.lock() = f;
            log::info!("log file reopened: {}", lf.path.display());
        }
        Err(e) => log::error!("cannot reopen the log file {}: {e}; still writing to the old one", lf.path.display()),
    }
}
