//! The [`RangeRead`] contract: [`check_range_read`].

use std::io::ErrorKind;

use super::Rng;
use crate::storage::range::object::BLOCK;
use crate::storage::range::RangeRead;

/// Random reads per check.
const READS: usize = 48;

/// Checks `f` against every promise of [`RangeRead`], its bytes being `want` (see the module
/// documentation); `name` labels failures.
pub(crate) fn check_range_read(name: &str, f: &dyn RangeRead, want: &[u8]) {
    let len = want.len() as u64;
    let mut rng = Rng::new(name);
    assert_eq!(f.len(), len, "{name}: len");
    assert_eq!(f.is_empty(), len == 0, "{name}: is_empty");
    let read = |offset: u64, n: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n as usize];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    };
    let expect = |offset: u64, n: u64, what: &str| {
        let got = read(offset, n).unwrap_or_else(|e| panic!("{name}: {what}: read of {n} bytes at {offset}: {e}"));
        assert!(got[..] == want[offset as usize..][..n as usize], "{name}: {what}: {n} bytes at {offset} differ");
    };
    // Random reads, small and large, some across block boundaries (a remote object's blocks,
    // pages) and some ending at the last byte.
    let random = |rng: &mut Rng, what: &str| {
        for k in 0..READS {
            let (offset, n) = match k % 4 {
                0 => (rng.below(len + 1), rng.below(65)),
                1 => (rng.below(len + 1), rng.below(len / 2 + 1)),
                2 => {
                    let edge = [BLOCK, 4096, len / 2][k / 4 % 3].max(1);
                    let at = (rng.below(len / edge + 1) * edge).min(len);
                    let before = rng.below(at.min(300) + 1);
                    (at - before, before + rng.below(300))
                }
                _ => {
                    let n = rng.below(len + 1);
                    (len - n, n)
                }
            };
            let n = n.min(len - offset);
            expect(offset, n, what);
        }
    };
    expect(0, len, "the whole object");
    random(&mut rng, "random reads");
    for offset in [0, len / 2, len] {
        assert!(read(offset, 0).is_ok(), "{name}: a zero-length read at {offset} failed");
    }
    for (offset, n) in [(len, 1), (len.saturating_sub(1), 2), (0, len + 1), (len + 10, 1), (len + 1, 0), (u64::MAX, 1), (u64::MAX - 2, 4), (u64::MAX, 0)] {
        match read(offset, n) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("{name}: {n} bytes at {offset}, past the end of {len}: {e} ({:?}), not UnexpectedEof", e.kind()),
            Ok(_) => panic!("{name}: {n} bytes at {offset}, past the end of {len}, were read"),
        }
    }
    let (id, version) = (f.identity(), f.version().map(str::to_string));
    // Hints, sensible and not (empty, past the end, overflowing), change nothing read.
    let mut hints: Vec<(u64, u64)> = (0..8).map(|_| (rng.below(len), rng.below(len / 4 + 1))).collect();
    hints.extend([(0, 0), (len, 10), (len / 2, u64::MAX), (u64::MAX, u64::MAX), (0, len)]);
    for &(o, n) in &hints {
        f.will_need(o, n);
    }
    f.prefetch_exact(&hints);
    let exact: Vec<(u64, u64)> = (0..6).map(|_| (rng.below(len), 1 + rng.below(4096))).map(|(o, n)| (o, n.min(len - o))).filter(|r| r.1 > 0).collect();
    f.prefetch_exact(&exact);
    for &(o, n) in &exact {
        expect(o, n, "a range prefetched exactly");
    }
    random(&mut rng, "after hints");
    assert_eq!(f.identity(), id, "{name}: identity changed");
    assert_eq!(f.version().map(str::to_string), version, "{name}: version changed");
    if let Some(fd) = f.splice_fd() {
        // The descriptor to splice from reads the same bytes.
        let file = std::fs::File::from(fd.try_clone_to_owned().unwrap_or_else(|e| panic!("{name}: splice descriptor: {e}")));
        for _ in 0..8 {
            let (a, b) = rng.range(len);
            let mut buf = vec![0u8; (b - a) as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, a).unwrap_or_else(|e| panic!("{name}: through the splice descriptor: {e}"));
            assert!(buf[..] == want[a as usize..b as usize], "{name}: the splice descriptor reads other bytes at {a}");
        }
    }
    std::thread::scope(|s| {
        for t in 0..2 {
            let mut rng = Rng::new(&format!("{name}#{t}"));
            let random = &random;
            s.spawn(move || random(&mut rng, "from two threads"));
        }
    });
}
