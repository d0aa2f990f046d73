//! Tests of the remote object reader: read-ahead of remote objects against a slow in-memory server.

use super::*;
use crate::storage::range::fake::FakeServer;

/// GETs of the slow in-memory server take 2 ms each: read-ahead has something to hide.
const SLOW: Duration = Duration::from_millis(2);

/// A sequential reader of small pieces gets every byte right, no block twice, and after
/// the first run finds the next runs fetched in the background (the reader's own GETs are
/// the first run and the ones where read-ahead fell behind).
#[test]
fn sequential_small_reads_are_read_ahead_in_the_background() {
    let len = 48 * BLOCK;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let slow = FakeServer::object(data.clone(), SLOW);
    let f = slow.remote_file();
    let mut buf = vec![0u8; 64 << 10];
    for off in (0..len).step_by(buf.len()) {
        f.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(buf[..], data[off as usize..off as usize + buf.len()]);
        std::thread::sleep(Duration::from_micros(200));
    }
    let gets = slow.spans();
    let mut spans: Vec<(u64, u64)> = gets.iter().map(|&(s, l, _)| (s, l)).collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0), "a block fetched twice: {spans:?}");
    assert_eq!(spans.iter().map(|s| s.1).sum::<u64>(), len);
    let ahead: u64 = gets.iter().filter(|g| g.2).map(|g| g.1).sum();
    assert!(ahead >= len / 2, "read ahead {ahead} of {len} bytes: {gets:?}");
}

/// Read-ahead in flight is waited for at exit: when `wait_background` returns, the blocks
/// asked for have been fetched.
#[test]
fn exit_waits_for_read_ahead() {
    let slow = FakeServer::object(vec![7u8; (4 * BLOCK) as usize], SLOW);
    let f = slow.remote_file();
    f.will_need(0, 2 * BLOCK);
    assert!(wait_background(Duration::from_secs(10)));
    assert_eq!(slow.spans().iter().map(|g| g.1).sum::<u64>(), 2 * BLOCK);
}

/// A reader's own block fetch is waited for at exit too (the reader may be gone — a FUSE read
/// interrupted, a read-ahead job of the mount — while its blocks are still to reach the disk
/// cache): `wait_background` returns only once the GET is answered.
#[test]
fn exit_waits_for_a_readers_fetch() {
    let slow = FakeServer::object(vec![7u8; (4 * BLOCK) as usize], Duration::from_millis(300));
    let f = Arc::new(slow.remote_file());
    let reader = {
        let f = f.clone();
        std::thread::spawn(move || f.read_exact_at(&mut [0u8; 100], 3 * BLOCK + 5))
    };
    // Once the reader's GET (300 ms) has reached the server, it counts as in flight (waiting
    // for the server, not for `IN_FLIGHT`: other tests' fetches count there too).
    let start = std::time::Instant::now();
    while slow.asked.load(Relaxed) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::yield_now();
    }
    assert!(IN_FLIGHT.load(Relaxed) > 0);
    assert!(slow.gets.lock().is_empty(), "the GET is still being answered");
    assert!(wait_background(Duration::from_secs(10)));
    assert_eq!(slow.gets.lock().len(), 1, "the GET was answered before wait_background returned");
    reader.join().unwrap().unwrap();
}

/// Hints that each start where the last ended (the mount's read-ahead walking a file, a piece
/// at a time) are read ahead beyond what they name, as a sequential reader's misses are.
#[test]
fn a_walk_of_hints_is_read_ahead_beyond_them() {
    let slow = FakeServer::object(vec![3u8; (64 * BLOCK) as usize], SLOW);
    let f = slow.remote_file();
    for piece in 0..3 {
        f.will_need(piece * 2 * BLOCK, 2 * BLOCK);
    }
    assert!(wait_background(Duration::from_secs(10)));
    let end = slow.spans().iter().map(|&(s, l, _)| s + l).max().unwrap_or(0);
    assert!(end > 6 * BLOCK, "nothing fetched past the hints: {:?}", slow.spans());
    // A hint elsewhere (a row's values) is fetched alone.
    let before = slow.spans().len();
    f.will_need(40 * BLOCK + 100, 300);
    assert!(wait_background(Duration::from_secs(10)));
    let new: Vec<_> = slow.spans()[before..].to_vec();
    assert_eq!(new.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(), vec![(40 * BLOCK, BLOCK)]);
}

/// A reader that reaches a run read ahead for it without having read much since (a reader
/// skipping forward, as sorted random rows do) does not start the runs after it: only what was
/// read ahead once is fetched.
#[test]
fn a_reader_skipping_forward_does_not_stream_the_object() {
    let slow = FakeServer::object(vec![5u8; (64 * BLOCK) as usize], SLOW);
    let f = slow.remote_file();
    let mut row = [0u8; 100];
    // Block 0, then block 1 (the block before was read: a sequential miss, one run read ahead).
    f.read_exact_at(&mut row, 10).unwrap();
    f.read_exact_at(&mut row, BLOCK + 10).unwrap();
    assert!(wait_background(Duration::from_secs(10)));
    // Into the run read ahead (its first block), having read 200 bytes since it was started.
    f.read_exact_at(&mut row, 2 * BLOCK + 10).unwrap();
    assert!(wait_background(Duration::from_secs(10)));
    let end = slow.spans().iter().map(|&(s, l, _)| s + l).max().unwrap_or(0);
    assert_eq!(end, (2 + MAX_RUN) * BLOCK, "{:?}", slow.spans());
}
