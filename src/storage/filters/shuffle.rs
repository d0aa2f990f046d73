//! The byte-shuffle filter, HDF5 id 2: byte `j` of every element is stored in plane `j`.

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
