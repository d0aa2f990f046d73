//! The byte-shuffle filter, HDF5 filter id 2 (`H5Z_FILTER_SHUFFLE`, spec: the HDF5 User's Guide,
//! "Filters in HDF5", and `H5Zshuffle.c`): byte `j` of every element is stored in plane `j`.
//! Client data: `cd_values[0]` is the element size in bytes, which the library fills in from
//! the dataset's type when the filter is applied; when it is missing or 0 the dataset's element
//! size is used.

use super::FilterError;

/// The HDF5 filter id of shuffle (`H5Z_FILTER_SHUFFLE`).
pub const ID: i32 = 2;

/// The shuffle filter of one dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shuffle {
    /// Bytes per element.
    pub elem: usize,
}

impl Shuffle {
    /// Reads the client data: `cd_values[0]` is the element size, `elem_size` when absent or 0.
    pub fn from_cd_values(cd_values: &[u32], elem_size: usize) -> Shuffle {
        let size = cd_values.first().map(|v| *v as usize).filter(|v| *v > 0);
        Shuffle {
            elem: size.unwrap_or(elem_size),
        }
    }

    /// `shuffle`.
    pub fn describe(&self) -> String {
        "shuffle".into()
    }

    /// Unshuffles one chunk (never fails; see [`unshuffle`]).
    pub fn decode(&self, data: Vec<u8>, _limit: usize) -> Result<Vec<u8>, FilterError> {
        Ok(unshuffle(&data, self.elem))
    }
}

/// Undoes the shuffle of `elem`-byte elements. Trailing bytes that do not fill an element are
/// left in place, as HDF5 does.
pub fn unshuffle(data: &[u8], elem: usize) -> Vec<u8> {
    let n = if elem > 1 { data.len() / elem } else { 0 };
    if n <= 1 {
        return data.to_vec();
    }
    let mut out = vec![0u8; data.len()];
    for j in 0..elem {
        let plane = &data[j * n..(j + 1) * n];
        for (i, b) in plane.iter().enumerate() {
            out[i * elem + j] = *b;
        }
    }
    out[n * elem..].copy_from_slice(&data[n * elem..]);
    out
}

/// Shuffles (the encoding direction); used by tests.
#[cfg(test)]
pub fn shuffle(data: &[u8], elem: usize) -> Vec<u8> {
    let n = if elem > 1 { data.len() / elem } else { 0 };
    if n <= 1 {
        return data.to_vec();
    }
    let mut out = vec![0u8; data.len()];
    for i in 0..n {
        for j in 0..elem {
            out[j * n + i] = data[i * elem + j];
        }
    }
    out[n * elem..].copy_from_slice(&data[n * elem..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_data() {
        assert_eq!(Shuffle::from_cd_values(&[4], 8).elem, 4);
        assert_eq!(Shuffle::from_cd_values(&[0], 8).elem, 8);
        assert_eq!(Shuffle::from_cd_values(&[], 2).elem, 2);
        assert_eq!(Shuffle::from_cd_values(&[4], 8).describe(), "shuffle");
    }

    #[test]
    fn known_layout_and_roundtrip() {
        // Two 2-byte elements [1,2],[3,4] shuffle to [1,3,2,4]; a trailing odd byte stays.
        assert_eq!(shuffle(&[1, 2, 3, 4, 9], 2), vec![1, 3, 2, 4, 9]);
        assert_eq!(unshuffle(&[1, 3, 2, 4, 9], 2), vec![1, 2, 3, 4, 9]);
        let data: Vec<u8> = (0..=255).collect();
        for elem in [1, 2, 3, 4, 8, 16] {
            assert_eq!(unshuffle(&shuffle(&data, elem), elem), data);
        }
    }
}
