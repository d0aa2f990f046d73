//! Tests of the remote object reader: read-ahead of remote objects against a slow in-memory server.

use super::*;
use crate::storage::range::client::{FetchError, Got, ObjectClient, Span};
use crate::storage::range::fetcher::RemoteConfig;

/// An in-memory object that records each GET's span and the thread that sent it, slowly
/// enough (2 ms per GET) that read-ahead has something to hide.
struct Slow {
    data: Vec<u8>,
    gets: Mutex<Vec<(u64, u64, bool)>>,
    delay: Duration,
}

impl Slow {
    fn new(data: Vec<u8>) -> Arc<Slow> {
        Arc::new(Slow { data, gets: Mutex::new(Vec::new()), delay: Duration::from_millis(2) })
    }
}

impl ObjectClient for Arc<Slow> {
    fn url(&self, key: &str) -> String {
        format!("slow://{key}")
    }
    fn get(&self, _key: &str, span: Span, _version: Option<&str>) -> Result<Option<Got>, FetchError> {
        std::thread::sleep(self.delay);
        let Span::At { start, len } = span else { return Ok(None) };
        let background = std::thread::current().name() == Some("annfs-fetch");
        self.gets.lock().push((start, len, background));
        Ok(Some(Got { data: span.cut(&self.data).unwrap_or_default().to_vec(), version: Some("v".into()) }))
    }
    fn head(&self, _key: &str) -> Result<Option<ObjectMeta>, FetchError> {
        Ok(Some(ObjectMeta { size: self.data.len() as u64, version: Some("v".into()) }))
    }
}

/// A sequential reader of small pieces gets every byte right, no block twice, and after
/// the first run finds the next runs fetched in the background (the reader's own GETs are
/// the first run and the ones where read-ahead fell behind).
#[test]
fn sequential_small_reads_are_read_ahead_in_the_background() {
    let len = 48 * BLOCK;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let slow = Slow::new(data.clone());
    let fetcher = Fetcher::new(Box::new(slow.clone()), RemoteConfig::default(), None, Arc::default());
    let f = RemoteFile::new(Arc::new(fetcher), ObjectMeta { size: len, version: Some("v".into()) });
    let mut buf = vec![0u8; 64 << 10];
    for off in (0..len).step_by(buf.len()) {
        f.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(buf[..], data[off as usize..off as usize + buf.len()]);
        std::thread::sleep(Duration::from_micros(200));
    }
    let gets = slow.gets.lock().clone();
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
    let slow = Slow::new(vec![7u8; (4 * BLOCK) as usize]);
    let fetcher = Fetcher::new(Box::new(slow.clone()), RemoteConfig::default(), None, Arc::default());
    let f = RemoteFile::new(Arc::new(fetcher), ObjectMeta { size: 4 * BLOCK, version: Some("v".into()) });
    f.will_need(0, 2 * BLOCK);
    assert!(wait_background(Duration::from_secs(10)));
    assert_eq!(slow.gets.lock().iter().map(|g| g.1).sum::<u64>(), 2 * BLOCK);
}

/// A reader's own block fetch is waited for at exit too (the reader may be gone — a FUSE read
/// interrupted, a read-ahead job of the mount — while its blocks are still to reach the disk
/// cache): `wait_background` returns only once the GET is answered.
#[test]
fn exit_waits_for_a_readers_fetch() {
    let slow = Arc::new(Slow { data: vec![7u8; (4 * BLOCK) as usize], gets: Mutex::new(Vec::new()), delay: Duration::from_millis(300) });
    let fetcher = Fetcher::new(Box::new(slow.clone()), RemoteConfig::default(), None, Arc::default());
    let f = Arc::new(RemoteFile::new(Arc::new(fetcher), ObjectMeta { size: 4 * BLOCK, version: Some("v".into()) }));
    let reader = {
        let f = f.clone();
        std::thread::spawn(move || f.read_exact_at(&mut [0u8; 100], 3 * BLOCK + 5))
    };
    // Once the reader's GET (300 ms) is under way, it counts as in flight.
    let start = std::time::Instant::now();
    while IN_FLIGHT.load(Relaxed) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::yield_now();
    }
    assert!(slow.gets.lock().is_empty(), "the GET is still being answered");
    assert!(wait_background(Duration::from_secs(10)));
    assert_eq!(slow.gets.lock().len(), 1, "the GET was answered before wait_background returned");
    reader.join().unwrap().unwrap();
}
