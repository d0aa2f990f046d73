//! Reversible mapping of column and key names to file names (docs/TREE.md), and the cut that
//! keeps an over-long name listable and openable.

/// Suffixes that would collide with the files annfs derives from a column.
const RESERVED_SUFFIXES: [&str; 3] = [".codes", ".mask", ".categories"];

/// Longest file-name stem: with the longest suffix annfs adds (`.categories.txt`) a name stays
/// well within Linux's 255 bytes per path component.
pub const MAX_STEM: usize = 200;

/// Encodes `name` as a file-name stem: `%`, `/`, NUL and a leading `.` are percent-encoded, and
/// a name equal to `index` or ending in a reserved suffix gets its last character encoded; an
/// encoding longer than [`MAX_STEM`] is cut ([`fit`]).
pub fn encode(name: &str) -> String {
    fit(encode_uncut(name), name, MAX_STEM)
}

/// [`encode`] without the cut (for names built from it, cut as a whole).
pub fn encode_uncut(name: &str) -> String {
    let mut out = percent(name);
    if name == "index" || RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        if let Some(last) = out.pop() {
            out.push_str(&format!("%{:02X}", last as u32));
        }
    }
    out
}

/// Encodes a mapping key (`uns`, `obsm`, …) as a file-name stem: like [`encode`] but without
/// the reserved-suffix rule, which only matters among a dataframe's derived files.
pub fn encode_key(key: &str) -> String {
    fit(percent(key), key, MAX_STEM)
}

/// `encoded` (an encoding of `name`) when at most `max` bytes long; else its first bytes (cut at
/// a character boundary) followed by `%~` and the 16 hex digits of the 64-bit FNV-1a hash of
/// `name`, `max` bytes in all. The percent encoding never writes `%~`, so a cut name cannot
/// equal an uncut one. Why: Linux opens no name over 255 bytes, and FUSE fails a whole
/// directory listing that holds one over 1,024 — one long key in a damaged or odd store made
/// every other entry of its directory unlistable.
pub fn fit(encoded: String, name: &str, max: usize) -> String {
    if encoded.len() <= max {
        return encoded;
    }
    let tag = format!("%~{:016x}", fnv1a(name.as_bytes()));
    let end = crate::util::char_floor(&encoded, max.saturating_sub(tag.len()));
    format!("{}{tag}", &encoded[..end])
}

/// The 64-bit FNV-1a hash (stable across builds and platforms, unlike the standard hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The percent encoding of `key` as [`encode_key`] makes it, without the cut.
pub fn percent(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for (i, c) in key.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{encode, encode_key, fit, MAX_STEM};

    #[test]
    fn contract_examples() {
        assert_eq!(encode("n_genes"), "n_genes");
        assert_eq!(encode("a/b ratio"), "a%2Fb ratio");
        assert_eq!(encode("100%"), "100%25");
        assert_eq!(encode(".hidden"), "%2Ehidden");
        assert_eq!(encode("index"), "inde%78");
        assert_eq!(encode("x.codes"), "x.code%73");
        assert_eq!(encode("y.mask"), "y.mas%6B");
        assert_eq!(encode("z.categories"), "z.categorie%73");
        assert_eq!(encode("nul\0"), "nul%00");
        assert_eq!(encode("my_index"), "my_index");
    }

    #[test]
    fn long_names_are_cut_to_fit_and_stay_apart() {
        let long = "é".repeat(40_000);
        let (a, b) = (encode(&long), encode(&format!("{long}x")));
        assert!(a.len() <= MAX_STEM && b.len() <= MAX_STEM, "{} {}", a.len(), b.len());
        assert_ne!(a, b, "names differing past the cut differ in their hash");
        assert!(a.starts_with("éé") && a.contains("%~"));
        assert_eq!(a, encode(&long), "the same name, the same file name");
        // A name whose encoding grows past the limit (every `%` becomes three bytes).
        let pct = "%".repeat(100);
        assert!(encode_key(&pct).len() <= MAX_STEM && encode_key(&pct).starts_with("%25%25"));
        // Names at the limit are left whole; a cut never ends inside a character.
        let at = "a".repeat(MAX_STEM);
        assert_eq!(encode_key(&at), at);
        assert_eq!(fit("ab".repeat(20), "x", 30).len(), 30);
        assert!(fit("é".repeat(20), "y", 21).len() <= 21);
        // The FNV-1a test vector (the empty input gives the offset basis).
        assert_eq!(fit("0123456789abcdefghij".into(), "", 19), "0%~cbf29ce484222325");
    }
}
