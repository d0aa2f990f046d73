//! The deflate (zlib) filter, HDF5 id 1, decoded with flate2.

use std::io::Read;

use super::FilterError;

/// Inflates a zlib stream, refusing to produce more than `limit` bytes.
pub fn decode(data: &[u8], limit: usize) -> Result<Vec<u8>, FilterError> {
    let mut out = Vec::with_capacity(limit);
    let mut dec = flate2::read::ZlibDecoder::new(data).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| FilterError::Corrupt(format!("deflate: {e}")))?;
    if out.len() > limit {
        return Err(FilterError::Corrupt(format!(
            "deflate: output exceeds {limit} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_and_limits() {
        let raw = vec![5u8; 1000];
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        let z = enc.finish().unwrap();
        assert_eq!(decode(&z, 1000).unwrap(), raw);
        assert!(decode(&z, 999).is_err());
        assert!(decode(b"not zlib", 1000).is_err());
    }
}
