//! The `.npy` header, byte-identical to what `numpy.save` writes.

/// Builds the full `.npy` preamble (magic, version, header length, header dict, padding) for a
/// C-order array of `descr` (e.g. `<f4`) and `shape`.
pub fn header(descr: &str, shape: &[u64]) -> Vec<u8> {
    let shape_txt = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // numpy pads so that magic + version + length field + dict + padding + '\n' is a multiple of 64.
    for (major, len_bytes) in [(1u8, 2usize), (2u8, 4usize)] {
        let pre = 6 + 2 + len_bytes;
        let unpadded = pre + dict.len() + 1;
        let total = unpadded.div_ceil(64) * 64;
        let hlen = total - pre;
        if major == 1 && hlen > u16::MAX as usize {
            continue;
        }
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(b"\x93NUMPY");
        out.push(major);
        out.push(0);
        if major == 1 {
            out.extend_from_slice(&(hlen as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(hlen as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.resize(total - 1, b' ');
        out.push(b'\n');
        return out;
    }
    unreachable!("a version 2.0 header always fits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_save() {
        // numpy.save(BytesIO(), np.zeros((3, 4), "<f4")).getvalue()[:128]
        let h = header("<f4", &[3, 4]);
        assert_eq!(h.len(), 128);
        assert_eq!(&h[..10], b"\x93NUMPY\x01\x00\x76\x00");
        let txt = std::str::from_utf8(&h[10..]).unwrap();
        assert!(txt.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
        assert!(txt.ends_with(" \n"));
        let h1 = header("|b1", &[7]);
        assert!(std::str::from_utf8(&h1[10..]).unwrap().contains("'shape': (7,), }"));
        assert_eq!(h1.len() % 64, 0);
    }
}
