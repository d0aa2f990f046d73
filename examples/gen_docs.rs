//! Generates the man pages and shell completions of `annfs` from its command-line definition
//! (the same clap definition `annfs --help` prints), for `scripts/package.sh`:
//!
//! ```text
//! cargo build --release --example gen_docs && target/release/examples/gen_docs OUT
//! ```
//!
//! writes `OUT/man/annfs.8` (the command, its sub-commands, the mount(8) helper and fstab
//! form, files), `OUT/man/annfs-SUBCOMMAND.8` (each sub-command's options, from its help) and
//! `OUT/completions/{annfs.bash,_annfs,annfs.fish}`.

use std::io::Write;
use std::path::{Path, PathBuf};

use annfs::cli::args::{Cli, VERSION};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

/// The manual section: annfs is a system administration command (it mounts file systems).
const SECTION: &str = "8";

/// Hand-written sections of `annfs.8` about what clap does not describe: the mount(8) helper,
/// fstab lines, signals and files.
const EXTRA: &str = r#".SH MOUNT HELPER AND FSTAB
.B mount \-t fuse.annfs
.I STORE MOUNTPOINT
.B \-o
.I ro,allow_other,cache_size=4G,...
runs
.BR /sbin/mount.fuse.annfs ,
which mounts
.I STORE
in the background and returns once the mount answers (exit 0), or prints the error and exits
non\-zero. Every
.B annfs mount
option is also a
.B \-o
key, with
.B _
for
.BR \- .
The same works as an
.BR fstab (5)
line:
.PP
.RS
.EX
/srv/atlases/atlas.h5ad /data/atlas fuse.annfs ro,allow_other,cache_size=4G,nofail 0 0
.EE
.RE
.PP
Generic mount options (ro, rw, defaults, nosuid, nodev, noatime, _netdev, nofail, user,
x\-systemd.*, comment=) are accepted and ignored: the mount is read\-only unless
.B \-\-overlay
is given, and always nosuid, nodev.
.SH SIGNALS
SIGTERM and SIGINT unmount and exit 0; SIGHUP reopens the log file given with
.BR \-\-log\-file .
.SH FILES
.TP
.I /lib/systemd/system/annfs@.service
a template unit mounting the store described by
.I /etc/annfs/NAME.conf
(STORE=, MOUNTPOINT=, OPTIONS=) as
.BR annfs@NAME .
.TP
.I /usr/share/doc/annfs/
the reference: the virtual tree, file formats, memory model, overlay, collections.
.TP
.I MOUNTPOINT/.annfs/stats.json
live counters of a mount (cache, reads, errors).
.SH SEE ALSO
.BR mount (8),
.BR fstab (5),
.BR fusermount3 (1),
.BR systemd.mount (5)
"#;

/// Writes one man page: clap's rendering of `cmd`, then `extra` roff text.
fn write_page(cmd: clap::Command, dir: &Path, extra: &str) -> std::io::Result<PathBuf> {
    let man = Man::new(cmd).section(SECTION).source(format!("annfs {VERSION}")).manual("annfs manual");
    let path = dir.join(man.get_filename());
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    man.render(&mut file)?;
    file.write_all(extra.as_bytes())?;
    file.flush()?;
    Ok(path)
}

/// Writes `annfs.8` and one page per visible sub-command.
fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = vec![write_page(cmd.clone(), dir, EXTRA)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("annfs-{}", sub.get_name());
        let see_also = ".SH SEE ALSO\n.BR annfs (8)\n";
        pages.push(write_page(sub.clone().display_name(name), dir, see_also)?);
    }
    Ok(pages)
}

/// Writes bash, zsh and fish completions under the names each shell looks for.
fn write_completions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (shell, file) in [(Shell::Bash, "annfs.bash"), (Shell::Zsh, "_annfs"), (Shell::Fish, "annfs.fish")] {
        let path = dir.join(file);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        clap_complete::generate(shell, &mut Cli::command(), "annfs", &mut f);
        f.flush()?;
        out.push(path);
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen_docs OUT_DIR");
        return std::process::ExitCode::from(2);
    };
    let written = write_man_pages(&out.join("man")).and_then(|mut pages| {
        pages.extend(write_completions(&out.join("completions"))?);
        Ok(pages)
    });
    match written {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_docs: {}: {e}", out.display());
            std::process::ExitCode::FAILURE
        }
    }
}
