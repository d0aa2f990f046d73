//! The LZF filter, HDF5 filter id 32000 (registered with The HDF Group by h5py; spec: h5py's
//! `lzf/lzf_filter.c` and the LZF format of liblzf), decoded with the pure-Rust `lzf` crate.
//! Client data (written by h5py, none needed to decode): `cd_values[0]` the filter revision,
//! `cd_values[1]` the LZF version, `cd_values[2]` the chunk size in bytes.

use super::FilterError;

/// The HDF5 filter id of LZF (`H5PY_FILTER_LZF`).
pub const ID: i32 = 32000;

/// The LZF filter of one dataset (no parameters needed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lzf;

impl Lzf {
    /// Nothing in the client data is needed to decode.
    pub fn from_cd_values(_cd_values: &[u32], _elem_size: usize) -> Lzf {
        Lzf
    }

    /// `lzf`.
    pub fn describe(&self) -> String {
        "lzf".into()
    }

    /// Decompresses one chunk (an LZF block) into at most `limit` bytes (h5py stores the full
    /// chunk size).
    pub fn decode(&self, data: Vec<u8>, limit: usize) -> Result<Vec<u8>, FilterError> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        lzf::decompress(&data, limit.max(1)).map_err(|e| FilterError::Corrupt(format!("lzf: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let raw: Vec<u8> = (0..2000u32).map(|i| (i % 17) as u8).collect();
        let c = lzf::compress(&raw).unwrap();
        let decode = |c: &[u8], limit| Lzf.decode(c.to_vec(), limit);
        assert_eq!(decode(&c, raw.len()).unwrap(), raw);
        assert!(decode(&c, 10).is_err());
        assert!(decode(&[0xff, 0xff, 0xff], 100).is_err());
    }
}
