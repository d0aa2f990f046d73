//! The Fletcher-32 checksum filter, HDF5 filter id 3 (`H5Z_FILTER_FLETCHER32`, spec: the HDF5
//! User's Guide, "Filters in HDF5", and `H5checksum.c`): a 4-byte checksum appended to the
//! chunk. Client data: none.

use super::FilterError;

/// The HDF5 filter id of Fletcher-32 (`H5Z_FILTER_FLETCHER32`).
pub const ID: i32 = 3;

/// The Fletcher-32 filter of one dataset (no parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fletcher32;

impl Fletcher32 {
    /// There is no client data to read.
    pub fn from_cd_values(_cd_values: &[u32], _elem_size: usize) -> Fletcher32 {
        Fletcher32
    }

    /// `fletcher32`.
    pub fn describe(&self) -> String {
        "fletcher32".into()
    }

    /// Verifies and strips the trailing checksum (see [`verify_strip`]).
    pub fn decode(&self, data: Vec<u8>, _limit: usize) -> Result<Vec<u8>, FilterError> {
        verify_strip(data)
    }
}

/// HDF5's Fletcher-32 variant (`H5_checksum_fletcher32`): big-endian 16-bit words, an odd
/// trailing byte as the high half of a word.
pub fn checksum(data: &[u8]) -> u32 {
    let (mut sum1, mut sum2) = (0u32, 0u32);
    let mut words = data.chunks_exact(2);
    loop {
        let block: Vec<&[u8]> = words.by_ref().take(360).collect();
        if block.is_empty() {
            break;
        }
        for w in block {
            sum1 += (u32::from(w[0]) << 8) | u32::from(w[1]);
            sum2 += sum1;
        }
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    if data.len() % 2 == 1 {
        sum1 += u32::from(data[data.len() - 1]) << 8;
        sum2 += sum1;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    (sum2 << 16) | sum1
}

/// Verifies the trailing checksum (stored little-endian; HDF5 < 1.6.3 wrote it with swapped
/// byte pairs, which is accepted too) and strips it.
pub fn verify_strip(mut data: Vec<u8>) -> Result<Vec<u8>, FilterError> {
    let n = data.len().checked_sub(4).ok_or_else(|| {
        FilterError::Corrupt("fletcher32: chunk shorter than its checksum".into())
    })?;
    let stored = u32::from_le_bytes([data[n], data[n + 1], data[n + 2], data[n + 3]]);
    let sum = checksum(&data[..n]);
    let b = sum.to_le_bytes();
    let reversed = u32::from_le_bytes([b[1], b[0], b[3], b[2]]);
    if stored != sum && stored != reversed {
        return Err(FilterError::Corrupt(format!(
            "fletcher32 checksum mismatch (stored {stored:08x}, computed {sum:08x})"
        )));
    }
    data.truncate(n);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_corruption() {
        let payload = b"abcdefghijk".to_vec();
        let mut chunk = payload.clone();
        chunk.extend_from_slice(&checksum(&payload).to_le_bytes());
        assert_eq!(verify_strip(chunk.clone()).unwrap(), payload);
        chunk[3] ^= 1;
        assert!(verify_strip(chunk).is_err());
        assert!(verify_strip(vec![1, 2]).is_err());
    }

    #[test]
    fn reference_value() {
        // Big-endian words 0x6162, 0x6364 and the odd byte as 0x6500, sums reduced mod 65535.
        let s = checksum(b"abcde");
        let sum1 = (0x6162u32 + 0x6364 + 0x6500) % 0xffff;
        let sum2 = (0x6162u32 + (0x6162 + 0x6364) + (0x6162 + 0x6364 + 0x6500)) % 0xffff;
        assert_eq!(s, (sum2 << 16) | sum1);
    }
}
