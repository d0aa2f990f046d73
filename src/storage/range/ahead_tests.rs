use super::*;
use crate::storage::range::fake::FakeServer;
use crate::storage::range::Span;

const LIMITS: Limits = Limits { start: 2, max: 8, queued: 64, kept_bytes: 8 << 20 };

fn ahead(server: &Arc<FakeServer>, limits: Limits) -> Arc<FetchAhead<String>> {
    let fetcher = server.fetcher();
    Arc::new(FetchAhead::new("test".into(), limits, Box::new(move |k: &String| fetcher.get(k, Span::All, None, true))))
}

/// A server answering after `delay` that holds `n` keys `{prefix}/{i}` of ten bytes `byte`.
fn server_with(delay: Duration, prefix: &str, n: usize, byte: u8) -> (Arc<FakeServer>, Vec<String>) {
    let server = FakeServer::new(delay);
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}/{i}")).collect();
    for k in &keys {
        server.put(k, vec![byte; 10], "v");
    }
    (server, keys)
}

/// Waits until nothing is queued or in flight.
fn idle<K>(fa: &FetchAhead<K>) {
    let t = std::time::Instant::now();
    while !fa.state.lock().pending.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "fetches never finished");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Keys fetched ahead are handed out once, absent keys as absent; a key never asked for ahead
/// is not there, and a key read is not fetched ahead again.
#[test]
fn keys_fetched_ahead_are_taken_once() {
    let server = FakeServer::new(Duration::from_millis(5));
    server.put("a/c/0", vec![1; 100], "v");
    server.put("a/c/1", vec![2; 100], "v");
    let fa = ahead(&server, LIMITS);
    fa.prefetch(["a/c/0".to_string(), "a/c/1".to_string(), "a/c/9".to_string()]);
    idle(&fa);
    assert_eq!(fa.take(&"a/c/1".into()), Some(Some(vec![2; 100])));
    assert_eq!(fa.take(&"a/c/0".into()), Some(Some(vec![1; 100])));
    assert_eq!(fa.take(&"a/c/9".into()), Some(None));
    assert_eq!(fa.take(&"a/c/1".into()), None, "taken once");
    assert_eq!(fa.take(&"a/c/2".into()), None);
    fa.prefetch(["a/c/0".to_string()]);
    idle(&fa);
    assert_eq!(server.gets.lock().len(), 3, "a key just read is not fetched ahead again");
}

/// A read that finds its key in flight waits for it (one GET in all), and one more fetch is
/// then allowed in flight.
#[test]
fn a_read_waits_for_its_fetch_and_widens_the_window() {
    let (server, keys) = server_with(Duration::from_millis(100), "c", 6, 7);
    let fa = ahead(&server, LIMITS);
    fa.prefetch(keys.clone());
    let t = std::time::Instant::now();
    while server.asked.load(Relaxed) < LIMITS.start as u64 {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::yield_now();
    }
    let first = fa.state.lock().queue.iter().any(|k| k == "c/0");
    assert!(!first, "the first key is in flight");
    assert_eq!(fa.take(&"c/0".into()), Some(Some(vec![7; 10])));
    assert_eq!(fa.limit.load(Relaxed), LIMITS.start + 1);
    idle(&fa);
    assert_eq!(server.gets.lock().iter().filter(|g| g.span == Span::All).count(), 6, "each key once");
}

/// What is kept is bounded: the oldest keys are dropped, and read again by their readers.
#[test]
fn kept_bytes_are_bounded() {
    let server = FakeServer::new(Duration::ZERO);
    let big = (LIMITS.kept_bytes / 3) as usize;
    for i in 0..5 {
        server.put(&format!("c/{i}"), vec![i as u8; big], "v");
    }
    // One GET at a time: the keys arrive in order.
    let fa = ahead(&server, Limits { start: 1, max: 1, ..LIMITS });
    fa.prefetch((0..5).map(|i| format!("c/{i}")));
    idle(&fa);
    let s = fa.state.lock();
    assert!(s.kept_bytes <= LIMITS.kept_bytes, "{}", s.kept_bytes);
    assert!(s.kept.iter().all(|(k, _)| k != "c/0") && s.kept.iter().any(|(k, _)| k == "c/4"));
}

/// A failed background fetch is forgotten: the read finds nothing, fetches itself and sees the
/// error (or, the server recovered, the bytes); keys beyond `queued` are not fetched ahead.
#[test]
fn failures_are_forgotten_and_the_queue_is_bounded() {
    let server = FakeServer::new(Duration::ZERO);
    server.put("k", vec![3; 10], "v");
    server.fail.store(u64::MAX, Relaxed);
    let fa = ahead(&server, Limits { queued: 2, ..LIMITS });
    fa.prefetch(["k".to_string()]);
    idle(&fa);
    assert_eq!(fa.take(&"k".into()), None, "a failed fetch is not handed out");
    server.fail.store(0, Relaxed);
    let fa = ahead(&server, Limits { queued: 2, ..LIMITS });
    fa.prefetch((0..5).map(|i| format!("q/{i}")));
    idle(&fa);
    assert_eq!(fa.state.lock().kept.len(), 2);
}

/// A read of a key still queued (one GET at a time, two keys ahead of it) fetches it itself, at
/// once, and no worker fetches it again.
#[test]
fn a_queued_key_is_fetched_by_its_reader() {
    let (server, keys) = server_with(Duration::from_millis(200), "q", 3, 9);
    let fa = ahead(&server, Limits { start: 1, max: 1, ..LIMITS });
    fa.prefetch(keys.clone());
    assert!(fa.state.lock().queue.iter().any(|k| k == "q/2"), "queued behind the others");
    let t = std::time::Instant::now();
    assert_eq!(fa.take(&"q/2".into()), Some(Some(vec![9; 10])));
    assert!(t.elapsed() < Duration::from_millis(390), "fetched at once, not after the others: {:?}", t.elapsed());
    idle(&fa);
    let gets = server.gets.lock();
    assert_eq!(gets.len(), 3, "each key once");
    assert!(gets.iter().any(|g| !g.background), "q/2 by its reader: {gets:?}");
}
