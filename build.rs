//! Build script: records the git commit the binary is built from, for `annfs --version`.
//!
//! Sets `ANNFS_GIT_COMMIT` for the crate: `$ANNFS_GIT_COMMIT` if set (builds from a source
//! tarball), else `git rev-parse --short=12 HEAD`, else `unknown` (no git, or not a checkout).
//! Reruns when HEAD moves (a commit, a checkout), not on every source change.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git -C dir ARGS` and returns its trimmed standard output lines, or `None` on any failure.
fn git(dir: &Path, args: &[&str]) -> Option<Vec<String>> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    (!lines.is_empty()).then_some(lines)
}

/// The files whose change means HEAD moved: HEAD, the branch it names, and packed-refs.
fn head_files(dir: &Path) -> Vec<PathBuf> {
    let Some(dirs) = git(dir, &["rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir"]) else {
        return Vec::new();
    };
    let (git_dir, common) = match dirs.as_slice() {
        [g, c] => (PathBuf::from(g), PathBuf::from(c)),
        _ => return Vec::new(),
    };
    let mut files = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]).and_then(|l| l.into_iter().next()) {
        files.push(common.join(branch));
    }
    // A path that does not exist would make cargo rerun this script on every build.
    files.into_iter().filter(|f| f.exists()).collect()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ANNFS_GIT_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let from_env = std::env::var("ANNFS_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = from_env
        .or_else(|| git(&dir, &["rev-parse", "--short=12", "HEAD"]).and_then(|l| l.into_iter().next()))
        .unwrap_or_else(|| "unknown".to_string());
    for f in head_files(&dir) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rustc-env=ANNFS_GIT_COMMIT={commit}");
}
