//! The process's resident anonymous memory (`RssAnon` of `/proc/self/status`): the memory the
//! budget is measured against, used to count what opening a store holds outside the cache.

/// Resident anonymous bytes of this process, if `/proc` tells.
pub fn anonymous_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, "RssAnon:").and_then(|k| k.checked_mul(1024))
}

/// The value of `field` (a line `field   1234 kB`) in kibibytes.
fn parse_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_field_in_kibibytes() {
        let status = "Name:\tannfs\nRssAnon:\t   95812 kB\nRssFile:\t   12328 kB\n";
        assert_eq!(parse_kib(status, "RssAnon:"), Some(95812));
        assert_eq!(parse_kib(status, "VmHWM:"), None);
    }

    #[test]
    fn this_process_has_some() {
        assert!(anonymous_bytes().is_some_and(|b| b > 0));
    }
}
