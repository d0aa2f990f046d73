//! Parsing of sizes and `-o key=value` mount options.

use super::args::MountArgs;
use super::CliError;

/// Parses a byte size: `4096`, `512K`, `64M`, `1G`, `1.5G`, `2T` (binary units, `B`/`iB` optional).
pub fn parse_size(s: &str) -> Result<u64, CliError> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let stripped = upper.trim_end_matches("IB").trim_end_matches('B');
    let (num, mult) = match stripped.chars().last() {
        Some('K') => (&stripped[..stripped.len() - 1], 1u64 << 10),
        Some('M') => (&stripped[..stripped.len() - 1], 1 << 20),
        Some('G') => (&stripped[..stripped.len() - 1], 1 << 30),
        Some('T') => (&stripped[..stripped.len() - 1], 1 << 40),
        _ => (stripped, 1),
    };
    let v: f64 = num.trim().parse().map_err(|_| CliError::Usage(format!("bad size `{s}`")))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(CliError::Usage(format!("bad size `{s}`")));
    }
    Ok((v * mult as f64) as u64)
}

/// Applies `-o` options onto `args`. Generic mount(8) options are accepted and ignored.
pub fn apply_o_options(args: &mut MountArgs) -> Result<(), CliError> {
    let all: Vec<String> = args.options.iter().flat_map(|o| o.split(',').map(str::to_string)).collect();
    for opt in all {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let (k, v) = match opt.split_once('=') {
            Some((k, v)) => (k.trim().replace('-', "_"), Some(v.trim().to_string())),
            None => (opt.replace('-', "_"), None),
        };
        let need = |v: Option<String>| v.ok_or_else(|| CliError::Usage(format!("option `{k}` needs a value")));
        match k.as_str() {
            "cache_size" => args.cache_size = need(v)?,
            "cache_dir" => args.cache_dir = Some(need(v)?.into()),
            "index_dir" => args.index_dir = Some(need(v)?.into()),
            "index_wait" => {
                args.index_wait = need(v)?.parse().map_err(|_| CliError::Usage("bad index_wait (seconds)".into()))?
            }
            "store_idle" => {
                args.store_idle = need(v)?.parse().map_err(|_| CliError::Usage("bad store_idle (seconds)".into()))?
            }
            "threads" => args.threads = Some(need(v)?.parse().map_err(|_| CliError::Usage("bad threads".into()))?),
            "allow_other" => args.allow_other = true,
            "allow_root" => args.allow_root = true,
            "uid" => args.uid = Some(need(v)?),
            "gid" => args.gid = Some(need(v)?),
            "umask" => args.umask = Some(need(v)?),
            "file_mode" => args.file_mode = Some(need(v)?),
            "dir_mode" => args.dir_mode = Some(need(v)?),
            "log_level" => args.log_level = need(v)?,
            "log_file" => args.log_file = Some(need(v)?.into()),
            "disk_cache" => args.disk_cache = Some(need(v)?.into()),
            "disk_cache_size" => args.disk_cache_size = need(v)?,
            "no_sign_request" => args.no_sign_request = true,
            "log_metrics" => {
                args.log_metrics = Some(need(v)?.parse().map_err(|_| CliError::Usage("bad log_metrics (seconds)".into()))?)
            }
            "request_timeout" => {
                args.request_timeout =
                    need(v)?.parse().map_err(|_| CliError::Usage("bad request_timeout (seconds)".into()))?
            }
            "page_cache" => args.page_cache = need(v)?,
            "daemon" => args.daemon = true,
            "foreground" => args.foreground = true,
            // SELinux labels: passed to the kernel as given.
            "context" | "fscontext" | "defcontext" | "rootcontext" => {
                args.kernel_options.push(format!("{k}={}", need(v)?));
            }
            // Generic mount(8) options: the mount is always read-only, nosuid, nodev.
            "overlay" => args.overlay = Some(need(v)?.into()),
            "ro" | "rw" | "defaults" | "nosuid" | "suid" | "nodev" | "dev" | "noatime" | "atime" | "relatime"
            | "strictatime" | "nodiratime" | "lazytime" | "noexec" | "exec" | "_netdev" | "nofail" | "auto"
            | "noauto" | "user" | "users" | "nouser" | "owner" | "group" | "default_permissions" | "async"
            | "sync" | "nonempty" | "fsname" | "subtype" | "silent" | "loud" => {}
            k if k.starts_with("x_") || k.starts_with("comment") => {}
            other => return Err(CliError::Usage(format!("unknown mount option `{other}`"))),
        }
    }
    Ok(())
}

/// The serving configuration from `--request-timeout`, `--page-cache` and the cache budget.
pub fn serve_config(args: &MountArgs, budget: u64) -> Result<crate::fs::ServeConfig, CliError> {
    use crate::fs::PageCache;
    let mut cfg = crate::fs::ServeConfig::for_budget(budget);
    if args.request_timeout == 0 {
        return Err(CliError::Usage("request_timeout must be at least 1 second".into()));
    }
    cfg.deadline = std::time::Duration::from_secs(args.request_timeout);
    if let Some(n) = args.threads {
        if n == 0 {
            return Err(CliError::Usage("threads must be at least 1".into()));
        }
        cfg.read_workers = n;
    }
    cfg.page_cache = match args.page_cache.as_str() {
        "text" => PageCache::TextOnly,
        "all" => PageCache::All,
        "none" => PageCache::None,
        other => return Err(CliError::Usage(format!("bad page_cache `{other}` (text, all or none)"))),
    };
    Ok(cfg)
}

/// Resolves `s`: a number, or a name `lookup` finds (`what`: `user`/`uid`, `group`/`gid`).
fn resolve_id(s: &str, (what, id): (&str, &str), lookup: impl FnOnce(&std::ffi::CStr) -> Option<u32>) -> Result<u32, CliError> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let c = std::ffi::CString::new(s).map_err(|_| CliError::Usage(format!("bad {id} `{s}`")))?;
    lookup(&c).ok_or_else(|| CliError::Usage(format!("unknown {what} `{s}` ({id})")))
}

/// Resolves a user: a numeric uid or a name from the passwd database.
pub fn resolve_uid(s: &str) -> Result<u32, CliError> {
    resolve_id(s, ("user", "uid"), |c| {
        // SAFETY: getpwnam with a valid C string; the result is read before any other call.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        // SAFETY: a non-null result points to a valid passwd entry.
        (!pw.is_null()).then(|| unsafe { (*pw).pw_uid })
    })
}

/// Resolves a group: a numeric gid or a name from the group database.
pub fn resolve_gid(s: &str) -> Result<u32, CliError> {
    resolve_id(s, ("group", "gid"), |c| {
        // SAFETY: getgrnam with a valid C string; the result is read before any other call.
        let gr = unsafe { libc::getgrnam(c.as_ptr()) };
        // SAFETY: a non-null result points to a valid group entry.
        (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
    })
}

/// Parses octal permission bits (`022`, `0o755`); `None` gives `default`.
pub fn parse_mode(what: &str, s: Option<&str>, default: u16) -> Result<u16, CliError> {
    match s {
        None => Ok(default),
        Some(s) => u16::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(|m| m & 0o777)
            .ok_or_else(|| CliError::Usage(format!("bad {what} `{s}` (octal expected)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn modes_and_owners() {
        assert_eq!(parse_mode("umask", Some("027"), 0).unwrap(), 0o027);
        assert_eq!(parse_mode("umask", None, 0o22).unwrap(), 0o22);
        assert!(parse_mode("umask", Some("9"), 0).is_err());
        assert_eq!(resolve_uid("0").unwrap(), 0);
        assert_eq!(resolve_uid("root").unwrap(), 0);
        assert!(resolve_uid("no-such-user-annfs").is_err());
    }

    #[test]
    fn o_options() {
        use clap::Parser;
        let cli = crate::cli::args::Cli::parse_from(["annfs", "mount", "s", "m", "-o", "ro,allow_other,cache_size=4G,nofail,x-systemd.automount,uid=7,file-mode=0440,context=system_u:object_r:tmp_t:s0"]);
        let crate::cli::args::Command::Mount(mut a) = cli.command else { panic!() };
        apply_o_options(&mut a).unwrap();
        assert!(a.allow_other);
        assert_eq!(a.cache_size, "4G");
        assert_eq!(a.uid.as_deref(), Some("7"));
        assert_eq!(a.file_mode.as_deref(), Some("0440"));
        assert_eq!(a.kernel_options, vec!["context=system_u:object_r:tmp_t:s0".to_string()]);
        a.options = vec!["bogus".into()];
        assert!(apply_o_options(&mut a).is_err());
    }
}
