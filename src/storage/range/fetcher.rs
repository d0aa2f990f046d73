//! [`Fetcher`]: an [`ObjectClient`] plus what every protocol shares — bounded retries with
//! exponential backoff, version checks, the validated on-disk cache and request counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::client::{FetchError, Got, GotPieces, ObjectClient, ObjectMeta, Span};
use super::disk_cache::DiskCache;

/// Timeouts and retry policy of remote reads.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Connecting (including DNS and TLS).
    pub connect_timeout: Duration,
    /// One whole request, headers and body.
    pub request_timeout: Duration,
    /// Retries after the first attempt (no answer, 5xx, 429 throttling, 408).
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// No retry is started after this much time has passed since the first attempt.
    pub deadline: Duration,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(200),
            deadline: Duration::from_secs(30),
        }
    }
}

/// Counters of one mount's remote traffic (`stats.json` → `remote`).
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// GET and HEAD requests sent (each attempt counts).
    pub requests: AtomicU64,
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// Attempts that were retried.
    pub retries: AtomicU64,
    /// Requests that failed for good.
    pub failures: AtomicU64,
    /// Reads answered from the on-disk cache.
    pub disk_hits: AtomicU64,
    /// HEAD requests made only to check that a disk-cache entry is still current.
    pub freshness_checks: AtomicU64,
}

impl RemoteStats {
    /// A JSON snapshot.
    pub fn snapshot(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Relaxed);
        serde_json::json!({
            "requests": g(&self.requests),
            "bytes": g(&self.bytes),
            "retries": g(&self.retries),
            "failures": g(&self.failures),
            "disk_hits": g(&self.disk_hits),
            "freshness_checks": g(&self.freshness_checks),
        })
    }
}

/// Reads keys of one remote location.
pub struct Fetcher {
    client: Box<dyn ObjectClient>,
    cfg: RemoteConfig,
    disk: Option<Arc<DiskCache>>,
    stats: Arc<RemoteStats>,
    /// Versions of keys as seen by this process (checked before a disk-cache entry is served).
    seen: DashMap<String, Option<String>>,
}

impl Fetcher {
    /// A fetcher over `client`, counting into `stats`, caching on `disk` when given.
    pub fn new(client: Box<dyn ObjectClient>, cfg: RemoteConfig, disk: Option<Arc<DiskCache>>, stats: Arc<RemoteStats>) -> Fetcher {
        Fetcher { client, cfg, disk, stats, seen: DashMap::new() }
    }

    /// The URL of `key`.
    pub fn url(&self, key: &str) -> String {
        self.client.url(key)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<RemoteStats> {
        &self.stats
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry budget is spent.
    fn with_retries<T>(&self, what: &str, mut attempt: impl FnMut() -> Result<T, FetchError>) -> Result<T, FetchError> {
        let start = Instant::now();
        let mut delay = self.cfg.backoff;
        let mut tries = 0;
        loop {
            self.stats.requests.fetch_add(1, Relaxed);
            match attempt() {
                Err(e) if e.retryable() && tries < self.cfg.retries && start.elapsed() + delay < self.cfg.deadline => {
                    log::debug!("{what} {e}; retrying in {delay:?}");
                    self.stats.retries.fetch_add(1, Relaxed);
                    std::thread::sleep(delay);
                    delay *= 2;
                    tries += 1;
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Relaxed);
                    log::warn!("{what} {e} (after {} attempts)", tries + 1);
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }

    /// HEADs `key` (with retries); `Ok(None)` when it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<ObjectMeta>, FetchError> {
        let meta = self.with_retries("HEAD", || self.client.head(key))?;
        if let Some(m) = &meta {
            self.seen.insert(key.to_string(), m.version.clone());
        }
        Ok(meta)
    }

    /// GETs `span` of `key`; `Ok(None)` when the key does not exist.
    ///
    /// `version` is the object's version recorded at open (an HDF5 file): an answer from
    /// another version is [`FetchError::Changed`]. `cache` allows the on-disk cache: an entry is
    /// served only when its recorded version is current — equal to `version`, or, without one,
    /// to the version a HEAD finds (once per key and process).
    pub fn get(&self, key: &str, span: Span, version: Option<&str>, cache: bool) -> Result<Option<Vec<u8>>, FetchError> {
        let disk = self.disk.as_ref().filter(|_| cache);
        let id = format!("{}{span}", self.client.url(key));
        if let Some(disk) = disk {
            if let Some(entry) = disk.get(&id) {
                if self.is_current(key, entry.version.as_deref(), version)? {
                    self.stats.disk_hits.fetch_add(1, Relaxed);
                    return Ok(Some(entry.data));
                }
            }
        }
        let got = self.checked(key, version, |g: &Got| g.version.as_deref(), || self.client.get(key, span, version))?;
        let Some(got) = got else { return Ok(None) };
        self.stats.bytes.fetch_add(got.data.len() as u64, Relaxed);
        if let Some(disk) = disk {
            let seen = got.version.as_deref().or(version);
            disk.put(&id, seen, &got.data);
        }
        Ok(Some(got.data))
    }

    /// GETs `span` of `key` in pieces of `piece` bytes, each kept as it arrived (no copy; see
    /// [`ObjectClient::get_pieces`]); not through the disk cache (the caller keeps pieces of
    /// its choosing there, [`Fetcher::disk_put`]). Retries and version checks as [`Fetcher::get`].
    pub fn get_pieces(&self, key: &str, span: Span, version: Option<&str>, piece: usize) -> Result<Option<Vec<Vec<u8>>>, FetchError> {
        let attempt = || self.client.get_pieces(key, span, version, piece);
        let got = self.checked(key, version, |g: &GotPieces| g.version.as_deref(), attempt)?;
        let Some(got) = got else { return Ok(None) };
        self.stats.bytes.fetch_add(got.pieces.iter().map(|p| p.len() as u64).sum(), Relaxed);
        Ok(Some(got.pieces))
    }

    /// Runs the GET `attempt` with retries; an answer from another version than `version` (the
    /// one recorded at open) is [`FetchError::Changed`]. Without a recorded version, the version
    /// that answered (`answered`) is remembered for the key.
    fn checked<T>(
        &self,
        key: &str,
        version: Option<&str>,
        answered: impl Fn(&T) -> Option<&str>,
        attempt: impl Fn() -> Result<Option<T>, FetchError>,
    ) -> Result<Option<T>, FetchError> {
        let got = self.with_retries("GET", || {
            let got = attempt()?;
            match (got.as_ref().and_then(&answered), version) {
                (Some(now), Some(want)) if now != want => Err(FetchError::Changed {
                    url: self.client.url(key),
                    was: want.to_string(),
                    now: now.to_string(),
                }),
                _ => Ok(got),
            }
        })?;
        if let (Some(g), None) = (&got, version) {
            self.seen.insert(key.to_string(), answered(g).map(str::to_string));
        }
        Ok(got)
    }

    /// Whether fetched bytes are kept on disk.
    pub fn has_disk_cache(&self) -> bool {
        self.disk.is_some()
    }

    /// The on-disk entry `name` of the object `key` at `version`, when there is a current one
    /// (for callers that cache pieces of their own choosing, e.g. aligned blocks).
    pub fn disk_get(&self, key: &str, name: &str, version: &str) -> Option<Vec<u8>> {
        let entry = self.disk.as_ref()?.get(&format!("{}#{name}", self.client.url(key)))?;
        (entry.version.as_deref() == Some(version)).then(|| {
            self.stats.disk_hits.fetch_add(1, Relaxed);
            entry.data
        })
    }

    /// Stores `data` as the on-disk entry `name` of `key` at `version` (no-op without a disk cache).
    pub fn disk_put(&self, key: &str, name: &str, version: &str, data: &[u8]) {
        if let Some(disk) = &self.disk {
            disk.put(&format!("{}#{name}", self.client.url(key)), Some(version), data);
        }
    }

    /// Whether a disk entry recorded at version `entry` may be served.
    fn is_current(&self, key: &str, entry: Option<&str>, version: Option<&str>) -> Result<bool, FetchError> {
        if let Some(v) = version {
            return Ok(entry == Some(v));
        }
        if let Some(seen) = self.seen.get(key) {
            return Ok(seen.as_deref() == entry);
        }
        self.stats.freshness_checks.fetch_add(1, Relaxed);
        let now = self.head(key)?.and_then(|m| m.version);
        Ok(now.as_deref() == entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::range::fake::FakeServer;

    fn setup(disk: &std::path::Path) -> (Arc<FakeServer>, Fetcher) {
        let fake = FakeServer::new(Duration::ZERO);
        fake.put("k", b"0123456789".to_vec(), "\"v1\"");
        let cfg = RemoteConfig { backoff: Duration::from_millis(1), ..RemoteConfig::default() };
        let cache = Arc::new(DiskCache::open(disk, 1 << 20).unwrap());
        let f = Fetcher::new(Box::new(fake.clone()), cfg, Some(cache), Arc::default());
        (fake, f)
    }

    #[test]
    fn retries_then_succeeds_and_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, f) = setup(dir.path());
        fake.fail.store(2, Relaxed);
        assert_eq!(f.get("k", Span::At { start: 2, len: 3 }, None, false).unwrap().unwrap(), b"234");
        assert_eq!(f.stats().retries.load(Relaxed), 2);
        fake.fail.store(10, Relaxed);
        assert!(f.get("k", Span::All, None, false).is_err());
        fake.fail.store(0, Relaxed);
        assert!(f.get("missing", Span::All, None, false).unwrap().is_none());
    }

    #[test]
    fn disk_entries_are_served_only_while_current() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, f) = setup(dir.path());
        let span = Span::At { start: 0, len: 4 };
        assert_eq!(f.get("k", span, Some("\"v1\""), true).unwrap().unwrap(), b"0123");
        // A new process (new fetcher) over the same cache: no data request for the same bytes.
        let (fake2, f2) = setup(dir.path());
        assert_eq!(f2.get("k", span, Some("\"v1\""), true).unwrap().unwrap(), b"0123");
        assert_eq!(fake2.asked.load(Relaxed), 0);
        // Without a recorded version, a HEAD decides; a replaced object is fetched again.
        assert_eq!(f2.get("k", span, None, true).unwrap().unwrap(), b"0123");
        assert_eq!(fake2.asked.load(Relaxed), 0);
        assert_eq!(f2.stats().freshness_checks.load(Relaxed), 1);
        let (fake3, f3) = setup(dir.path());
        fake3.put("k", b"abcdefghij".to_vec(), "\"v2\"");
        assert_eq!(f3.get("k", span, None, true).unwrap().unwrap(), b"abcd");
        assert_eq!(f3.stats().freshness_checks.load(Relaxed), 1);
        assert_eq!(fake3.asked.load(Relaxed), 1);
        // A read pinned to the old version fails instead of mixing versions.
        assert!(matches!(f3.get("k", Span::At { start: 5, len: 1 }, Some("\"v1\""), true), Err(FetchError::Changed { .. })));
        drop(fake);
    }
}
