//! Reversible mapping of column and key names to file names (docs/TREE.md).

/// Suffixes that would collide with the files annfs derives from a column.
const RESERVED_SUFFIXES: [&str; 3] = [".codes", ".mask", ".categories"];

/// Encodes `name` as a file-name stem: `%`, `/`, NUL and a leading `.` are percent-encoded, and
/// a name equal to `index` or ending in a reserved suffix gets its last character encoded.
pub fn encode(name: &str) -> String {
    let mut out = encode_key(name);
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
    use super::encode;

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
}
