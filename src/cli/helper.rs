//! The mount(8) helper: `mount -t fuse.annfs STORE MNT -o OPTS` and fstab lines.
//!
//! mount(8) runs `/sbin/mount.fuse.annfs STORE MNT [-sfnv] [-o OPTS]` (installed by
//! `annfs install-helper` as a symlink to this binary); without it, `mount.fuse3` runs
//! `annfs STORE MNT -o OPTS` from the standard PATH. Both forms are rewritten here into
//! `annfs mount STORE MNT --helper -o OPTS`, which daemonizes once the mount answers.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::CliError;

/// Sub-command names (argv[1] values that are not a helper-style STORE).
const SUBCOMMANDS: &[&str] = &["mount", "bench-mount", "umount", "ls", "cat", "info", "demo", "index", "materialize", "install-helper", "help"];

/// The name mount(8) looks for in /sbin for `-t fuse.annfs`.
pub const HELPER_NAME: &str = "mount.fuse.annfs";

/// Rewrites a helper-style command line into `annfs mount ... --helper`; others pass through.
pub fn rewrite(argv: Vec<OsString>) -> Vec<OsString> {
    let name = argv.first().map(|a| Path::new(a).file_name().unwrap_or(a.as_os_str()).to_os_string()).unwrap_or_default();
    let as_helper = name.as_bytes().starts_with(b"mount.")
        || (argv.len() >= 3
            && !argv[1].as_bytes().starts_with(b"-")
            && !SUBCOMMANDS.iter().any(|s| OsStr::new(s) == argv[1]));
    if !as_helper {
        return argv;
    }
    let mut pos = Vec::new();
    let mut out: Vec<OsString> = vec!["annfs".into(), "mount".into(), "--helper".into()];
    let mut it = argv.into_iter().skip(1);
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        match b {
            b"-o" => {
                if let Some(v) = it.next() {
                    out.extend(["-o".into(), v]);
                }
            }
            _ if b.starts_with(b"-o") => out.extend(["-o".into(), OsStr::from_bytes(&b[2..]).to_os_string()]),
            b"-t" => {
                it.next();
            }
            // mount(8)'s -f is "fake": do everything but mount.
            b"-f" => out.push("--fake".into()),
            // -n (no mtab), -s (sloppy), -v (verbose): nothing to do.
            _ if b.starts_with(b"-") && b.len() > 1 => {}
            _ => pos.push(a),
        }
    }
    out.splice(2..2, pos);
    out
}

/// `annfs install-helper`: symlinks `SBIN/mount.fuse.annfs` (and `BIN/annfs`) to this binary.
pub fn install(sbin: &Path, bin: Option<&Path>, uninstall: bool) -> Result<(), CliError> {
    let exe = std::env::current_exe()?.canonicalize()?;
    let mut links = vec![sbin.join(HELPER_NAME)];
    if let Some(bin) = bin {
        links.push(bin.join("annfs"));
    }
    for link in links {
        if uninstall {
            if std::fs::read_link(&link).is_ok() {
                std::fs::remove_file(&link)?;
                println!("removed {}", link.display());
            }
            continue;
        }
        if link == exe {
            continue;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&link) {
            if !meta.file_type().is_symlink() {
                return Err(CliError::Usage(format!("{} exists and is not a symlink; not replacing it", link.display())));
            }
            std::fs::remove_file(&link)?;
        }
        std::os::unix::fs::symlink(&exe, &link)
            .map_err(|e| CliError::Usage(format!("cannot create {}: {e} (run as root)", link.display())))?;
        println!("{} -> {}", link.display(), exe.display());
    }
    Ok(())
}

/// Default directories for [`install`].
pub fn default_dirs() -> (PathBuf, PathBuf) {
    (PathBuf::from("/sbin"), PathBuf::from("/usr/local/bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_forms() {
        let want = v(&["annfs", "mount", "s.h5ad", "/m", "--helper", "-o", "ro,allow_other"]);
        assert_eq!(rewrite(v(&["/sbin/mount.fuse.annfs", "s.h5ad", "/m", "-n", "-o", "ro,allow_other"])), want);
        assert_eq!(rewrite(v(&["annfs", "s.h5ad", "/m", "-oro,allow_other"])), want);
        assert_eq!(rewrite(v(&["annfs", "s.h5ad", "/m", "-t", "fuse.annfs", "-o", "ro,allow_other"])), want);
        let plain = v(&["annfs", "mount", "s.h5ad", "/m"]);
        assert_eq!(rewrite(plain.clone()), plain);
        assert_eq!(rewrite(v(&["annfs", "ls", "s.h5ad"])), v(&["annfs", "ls", "s.h5ad"]));
    }
}

#[cfg(test)]
mod subcommand_tests {
    use clap::CommandFactory;

    /// The helper's list of sub-commands must name every sub-command the CLI has, or a new
    /// command would be mistaken for a mount(8) helper invocation.
    #[test]
    fn subcommand_list_matches_clap() {
        for sub in super::super::args::Cli::command().get_subcommands() {
            assert!(super::SUBCOMMANDS.contains(&sub.get_name()), "{} missing from SUBCOMMANDS", sub.get_name());
        }
    }
}
