//! An in-process object server for tests (one copy, shared by the fetcher's, the remote
//! object's and the storage conformance tests): objects held in memory and answered through
//! [`ObjectClient`], optionally slowly or failing, every GET recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::client::{FetchError, Got, ObjectClient, ObjectMeta, Span};
use super::fetcher::{Fetcher, RemoteConfig};
use super::object::RemoteFile;

/// One GET the server answered.
#[derive(Clone, Debug)]
pub(crate) struct Get {
    /// The bytes asked for.
    pub(crate) span: Span,
    /// Sent by a background fetch thread (`annfs-fetch`), not by a reader.
    pub(crate) background: bool,
}

/// Objects by key, each with its version (ETag). Absent keys answer 404 (`Ok(None)`).
pub(crate) struct FakeServer {
    objects: Mutex<HashMap<String, (Vec<u8>, String)>>,
    /// How long each GET takes before it is answered.
    delay: Duration,
    /// The next this-many GETs fail with HTTP 503 (retryable).
    pub(crate) fail: AtomicU64,
    /// GET attempts received, counted on arrival (failed ones too).
    pub(crate) asked: AtomicU64,
    /// GETs answered, in order, recorded once the delay has passed.
    pub(crate) gets: Mutex<Vec<Get>>,
}

impl FakeServer {
    /// An empty server answering each GET after `delay`.
    pub(crate) fn new(delay: Duration) -> Arc<FakeServer> {
        Arc::new(FakeServer {
            objects: Mutex::default(),
            delay,
            fail: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            gets: Mutex::default(),
        })
    }

    /// A server holding one object (key `""`, version `v`): what a [`RemoteFile`] reads.
    pub(crate) fn object(data: Vec<u8>, delay: Duration) -> Arc<FakeServer> {
        let server = FakeServer::new(delay);
        server.put("", data, "v");
        server
    }

    /// Stores (or replaces) `key`.
    pub(crate) fn put(&self, key: &str, data: Vec<u8>, version: &str) {
        self.objects.lock().insert(key.to_string(), (data, version.to_string()));
    }

    /// `(start, len, background)` of each answered range GET.
    pub(crate) fn spans(&self) -> Vec<(u64, u64, bool)> {
        let gets = self.gets.lock();
        gets.iter()
            .filter_map(|g| match g.span {
                Span::At { start, len } => Some((start, len, g.background)),
                _ => None,
            })
            .collect()
    }

    /// A [`Fetcher`] over this server: default configuration but a 1 ms backoff, no disk cache.
    pub(crate) fn fetcher(self: &Arc<Self>) -> Fetcher {
        let cfg = RemoteConfig { backoff: Duration::from_millis(1), ..RemoteConfig::default() };
        Fetcher::new(Box::new(self.clone()), cfg, None, Arc::default())
    }

    /// A [`RemoteFile`] reading object `""`, of the size and version a HEAD finds.
    pub(crate) fn remote_file(self: &Arc<Self>) -> RemoteFile {
        let fetcher = self.fetcher();
        let meta = fetcher.head("").expect("HEAD").expect("object \"\" is stored");
        RemoteFile::new(Arc::new(fetcher), meta)
    }
}

impl ObjectClient for Arc<FakeServer> {
    fn url(&self, key: &str) -> String {
        format!("fake://{key}")
    }

    fn get(&self, key: &str, span: Span, version: Option<&str>) -> Result<Option<Got>, FetchError> {
        self.asked.fetch_add(1, Relaxed);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if self.fail.load(Relaxed) > 0 {
            self.fail.fetch_sub(1, Relaxed);
            return Err(FetchError::Status { url: self.url(key), status: 503, detail: None });
        }
        let background = std::thread::current().name() == Some("annfs-fetch");
        self.gets.lock().push(Get { span, background });
        let objects = self.objects.lock();
        let Some((data, v)) = objects.get(key) else { return Ok(None) };
        if version.is_some_and(|w| w != v) {
            return Err(FetchError::Changed { url: self.url(key), was: String::new(), now: v.clone() });
        }
        Ok(Some(Got { data: span.cut(data).unwrap_or_default().to_vec(), version: Some(v.clone()) }))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, FetchError> {
        let objects = self.objects.lock();
        Ok(objects.get(key).map(|(d, v)| ObjectMeta { size: d.len() as u64, version: Some(v.clone()) }))
    }
}
