//! The LZF filter, id 32000 (registered by h5py), decoded with the pure-Rust `lzf` crate.

use super::FilterError;

/// Decompresses an LZF block into at most `limit` bytes (h5py stores the full chunk size).
pub fn decode(data: &[u8], limit: usize) -> Result<Vec<u8>, FilterError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    lzf::decompress(data, limit.max(1)).map_err(|e| FilterError::Corrupt(format!("lzf: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let raw: Vec<u8> = (0..2000u32).map(|i| (i % 17) as u8).collect();
        let c = lzf::compress(&raw).unwrap();
        assert_eq!(decode(&c, raw.len()).unwrap(), raw);
        assert!(decode(&c, 10).is_err());
        assert!(decode(&[0xff, 0xff, 0xff], 100).is_err());
    }
}
