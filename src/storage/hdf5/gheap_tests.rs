//! Unit tests of the global heap parser on hand-built collections.

use super::*;

pub(crate) const S8: Sizes = Sizes { addr: 8, size: 8 };
const S4: Sizes = Sizes { addr: 4, size: 4 };

/// Builds a collection the way the library lays it out: header, objects (index, data), then the
/// free-space object filling the rest up to `total` bytes (when there is room for its header).
pub(crate) fn build(sizes: Sizes, objects: &[(u16, &[u8])], total: usize) -> Vec<u8> {
    let mut b = b"GCOL\x01\0\0\0".to_vec();
    b.extend_from_slice(&(total as u64).to_le_bytes()[..sizes.size]);
    b.resize(sizes.header(), 0);
    for (idx, data) in objects {
        b.extend_from_slice(&idx.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&(data.len() as u64).to_le_bytes()[..sizes.size]);
        b.resize(b.len().next_multiple_of(8), 0);
        b.extend_from_slice(data);
        b.resize(b.len() + (data.len().next_multiple_of(8) - data.len()), 0);
    }
    let rest = total - b.len();
    if rest >= sizes.object_header() {
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&(rest as u64).to_le_bytes()[..sizes.size]);
    }
    b.resize(total, 0);
    b
}

fn parse(b: &[u8], sizes: Sizes) -> Result<Collection, String> {
    Collection::parse(b.to_vec(), sizes)
}

#[test]
fn good_collection() {
    let b = build(S8, &[(1, b"gene_0"), (2, b""), (3, b"exactly8"), (7, "héllo".as_bytes())], 4096);
    let c = parse(&b, S8).unwrap();
    assert_eq!(c.len(), 4);
    assert_eq!(c.object(1).unwrap(), b"gene_0");
    assert_eq!(c.object(2).unwrap(), b"");
    assert_eq!(c.object(3).unwrap(), b"exactly8");
    assert_eq!(c.object(7).unwrap(), "héllo".as_bytes());
    assert!(c.object(4).is_none());
    assert!(c.object(0).is_none(), "index 0 is free space, not an object");
    assert!(c.object(70_000).is_none());
}

#[test]
fn four_byte_lengths() {
    // 4-byte lengths: headers of 12 bytes padded to 16, as the library writes them.
    let b = build(S4, &[(1, b"abc"), (2, b"defghijkl"), (3, b"z")], 256);
    let c = parse(&b, S4).unwrap();
    assert_eq!(c.object(1).unwrap(), b"abc");
    assert_eq!(c.object(2).unwrap(), b"defghijkl");
    assert_eq!(c.object(3).unwrap(), b"z");
}

#[test]
fn tail_without_free_space_header() {
    // 16 header + 16 object header + 8 data = 40; 8 bytes left: too small for a free-space header.
    let b = build(S8, &[(1, b"12345678")], 48);
    let c = parse(&b, S8).unwrap();
    assert_eq!(c.object(1).unwrap(), b"12345678");
}

#[test]
fn truncated_collection() {
    let b = build(S8, &[(1, b"gene_0")], 4096);
    let e = parse(&b[..100], S8).unwrap_err();
    assert!(e.contains("header says 4096"), "{e}");
    assert!(parse(&b[..10], S8).unwrap_err().contains("too short"));
}

#[test]
fn bad_signature_and_version() {
    let mut b = build(S8, &[(1, b"x")], 4096);
    b[0] = b'X';
    assert!(parse(&b, S8).unwrap_err().contains("signature"));
    let mut b = build(S8, &[(1, b"x")], 4096);
    b[4] = 2;
    assert!(parse(&b, S8).unwrap_err().contains("version"));
}

#[test]
fn zeroed_collection_is_an_error_not_a_loop() {
    // The issue-9 hang: a zeroed range over a collection (the library spins on object 0 of size 0).
    let mut b = build(S8, &[(1, b"gene_0"), (2, b"gene_1")], 4096);
    b[16..].fill(0);
    assert!(parse(&b, S8).unwrap_err().contains("free space"));
    assert!(check_image(&b, S8).is_err());
    b.fill(0);
    assert!(parse(&b, S8).is_err());
    assert!(check_image(&b, S8).is_err());
}

#[test]
fn free_space_must_reach_the_end() {
    let mut b = build(S8, &[(1, b"gene_0")], 4096);
    // Free space header right after object 1 (16 + 16 + 8 = 40): shrink its size by 8.
    b[48..56].copy_from_slice(&(4096u64 - 40 - 8).to_le_bytes());
    assert!(parse(&b, S8).unwrap_err().contains("free space"));
}

#[test]
fn check_image_of_prefixes_and_wholes() {
    let b = build(S8, &[(1, b"gene_0"), (2, b"gene_1")], 8192);
    // The library's first read of a larger collection: a valid header is enough.
    assert!(check_image(&b[..4096], S8).is_ok());
    assert!(check_image(&b, S8).is_ok());
    let mut bad = b.clone();
    bad[16 + 8..16 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(check_image(&bad[..4096], S8).is_ok(), "objects are checked on the full read");
    assert!(check_image(&bad, S8).is_err());
    // A read longer than the collection (speculative, clipped to the end of allocation).
    let mut longer = build(S8, &[(1, b"x")], 4096);
    longer.extend_from_slice(&[7u8; 100]);
    assert!(check_image(&longer, S8).is_ok());
    assert!(check_image(b"GCOL\x01", S8).is_err());
}

#[test]
fn index_missing() {
    let b = build(S8, &[(1, b"a"), (3, b"c")], 4096);
    let c = parse(&b, S8).unwrap();
    assert!(c.object(2).is_none());
}

#[test]
fn size_overflow_and_oversized_objects() {
    // An object size field claiming 2^64-1 bytes.
    let mut b = build(S8, &[(1, b"abcdef")], 4096);
    b[16 + 8..16 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse(&b, S8).unwrap_err().contains("past the collection end"));
    // An object running 1 byte past the collection.
    let mut b = build(S8, &[(1, b"abcdef")], 4096);
    b[16 + 8..16 + 16].copy_from_slice(&(4096u64 - 32 + 1).to_le_bytes());
    assert!(parse(&b, S8).is_err());
    // A collection size of 2^64-1 and one beyond the cap.
    for size in [u64::MAX, MAX_COLLECTION_BYTES + 8] {
        let mut b = build(S8, &[(1, b"x")], 4096);
        b[8..16].copy_from_slice(&size.to_le_bytes());
        assert!(parse(&b, S8).unwrap_err().contains("outside"), "{size}");
    }
}

#[test]
fn duplicate_index_is_corrupt() {
    let b = build(S8, &[(1, b"a"), (1, b"b")], 4096);
    assert!(parse(&b, S8).unwrap_err().contains("twice"));
}

use crate::storage::hdf5::file::file_with;

#[test]
fn reader_reads_small_and_large_collections_once() {
    let big = vec![b'q'; 10_000];
    let mut bytes = vec![0u8; 64];
    bytes.extend(build(S8, &[(1, b"first"), (2, b"second")], 4096));
    let second = bytes.len() as u64;
    bytes.extend(build(S8, &[(1, &big)], 10_048));
    let (_d, f) = file_with(&bytes);
    let mut r = HeapReader::new(&f, S8, "/var/_index");
    assert_eq!(r.object(64, 2).unwrap(), b"second");
    assert_eq!(r.object(64, 1).unwrap(), b"first");
    assert_eq!(r.object(second, 1).unwrap(), &big[..]);
    assert_eq!(r.parsed_count(), 2);
    let e = r.object(64, 9).unwrap_err().to_string();
    assert!(e.contains("/var/_index") && e.contains("no object 9"), "{e}");
    for addr in [0, 1, 63, bytes.len() as u64 - 8, u64::MAX] {
        let e = r.object(addr, 1).unwrap_err();
        assert!(matches!(e, StorageError::Corrupt { .. }), "{addr}: {e}");
    }
}

#[test]
fn reader_refuses_collection_past_end_of_file() {
    let mut bytes = vec![0u8; 8];
    bytes.extend(build(S8, &[(1, b"x")], 4096));
    bytes.truncate(2000);
    let (_d, f) = file_with(&bytes);
    let e = HeapReader::new(&f, S8, "/p").object(8, 1).unwrap_err().to_string();
    assert!(e.contains("past the end of the file"), "{e}");
}

#[test]
fn le_uint_of_every_width() {
    let bytes = [0x01u8, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    for n in 0..=8 {
        let want = bytes[..n].iter().enumerate().map(|(i, b)| u64::from(*b) << (8 * i)).sum::<u64>();
        assert_eq!(le_uint(&bytes[..n]), want, "{n} bytes");
    }
}
