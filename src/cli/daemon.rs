//! `--daemon`: the parent returns only once the mount answers (exit 0), or with the child's
//! error (non-zero, message on the shared stderr), as mount(8) expects of a helper.
//!
//! The fork happens first thing, while the process has a single thread; the child mounts and
//! reports readiness through a pipe.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};

use super::CliError;

/// The daemon side: tells the waiting parent the mount is live.
pub struct Detached {
    ready: File,
}

/// Forks. The parent waits and exits the process; the child returns, in a new session with
/// standard input on /dev/null.
pub fn detach() -> Result<Detached, CliError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CliError::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptors were just created and are owned here.
    let (mut rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the process is single-threaded here (nothing has spawned a thread yet).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CliError::Io(std::io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(wr);
        let mut byte = [0u8; 1];
        if matches!(rd.read(&mut byte), Ok(1)) && byte[0] == b'1' {
            std::process::exit(0);
        }
        // The child failed (and printed why): exit with its status.
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 };
        std::process::exit(if code == 0 { 1 } else { code });
    }
    drop(rd);
    // SAFETY: plain syscalls in the child.
    unsafe { libc::setsid() };
    redirect(0, "/dev/null", false);
    Ok(Detached { ready: wr })
}

impl Detached {
    /// Releases the parent (exit 0) and detaches standard output and error: stderr is kept only
    /// when it is a socket (the journal) or a regular file, unless logs go to `--log-file`.
    pub fn ready(mut self, logs_to_file: bool) {
        redirect(1, "/dev/null", true);
        if logs_to_file || !stderr_worth_keeping() {
            redirect(2, "/dev/null", true);
        }
        let _ = self.ready.write_all(b"1");
    }
}

fn stderr_worth_keeping() -> bool {
    // SAFETY: `libc::stat` is plain integers, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor number with a valid out-pointer.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFSOCK | libc::S_IFREG)
}

fn redirect(fd: i32, path: &str, write: bool) {
    if let Ok(f) = std::fs::OpenOptions::new().read(!write).write(write).open(path) {
        // SAFETY: dup2 onto a standard descriptor.
        unsafe { libc::dup2(f.as_raw_fd(), fd) };
    }
}
