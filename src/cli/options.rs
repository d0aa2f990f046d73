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
            "threads" => args.threads = Some(need(v)?.parse().map_err(|_| CliError::Usage("bad threads".into()))?),
            "allow_other" => args.allow_other = true,
            "allow_root" => args.allow_root = true,
            "uid" => args.uid = Some(need(v)?.parse().map_err(|_| CliError::Usage("bad uid".into()))?),
            "gid" => args.gid = Some(need(v)?.parse().map_err(|_| CliError::Usage("bad gid".into()))?),
            "umask" => args.umask = Some(need(v)?),
            "log_level" => args.log_level = need(v)?,
            "log_file" => args.log_file = Some(need(v)?.into()),
            "disk_cache" => args.disk_cache = Some(need(v)?.into()),
            "disk_cache_size" => args.disk_cache_size = need(v)?,
            "ro" | "rw" | "defaults" | "nosuid" | "suid" | "nodev" | "dev" | "noatime" | "atime" | "relatime"
            | "noexec" | "exec" | "_netdev" | "nofail" | "auto" | "noauto" | "user" | "users" | "nouser"
            | "default_permissions" | "async" | "sync" => {}
            k if k.starts_with("x_systemd") || k.starts_with("x-systemd") || k.starts_with("comment") || k == "context" => {}
            other => return Err(CliError::Usage(format!("unknown mount option `{other}`"))),
        }
    }
    Ok(())
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
}
