//! A read-only `zarrs` store over HTTP(S): whole-object GETs and `Range` GETs (shard indexes and
//! inner chunks), with timeouts, bounded retries with backoff on connection errors and 5xx, and an
//! optional validated on-disk cache of chunk bytes.
//!
//! 404 means "no such key" (a missing chunk reads as the fill value); other failures are errors,
//! which the views turn into `EIO` for the read that needed them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{Bytes, MaybeBytes, MaybeBytesIterator, ReadableStorageTraits, StorageError as ZStorageError, StoreKey};

use super::disk_cache::DiskCache;

/// Largest object or range annfs fetches in one GET.
const MAX_BODY: u64 = 1 << 32;

/// Timeouts and retry policy.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Connecting (including DNS and TLS).
    pub connect_timeout: Duration,
    /// One whole request, headers and body.
    pub request_timeout: Duration,
    /// Retries after the first attempt (connection errors, 5xx, 429).
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// No retry is started after this much time has passed since the first attempt.
    pub deadline: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(200),
            deadline: Duration::from_secs(30),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// No answer (connection refused or reset, timeout, TLS…).
    #[error("{url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
}

impl HttpError {
    fn retryable(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            HttpError::Transport { .. } => true,
        }
    }
}

/// A Zarr store at an `http://` or `https://` base URL.
pub struct HttpStore {
    base: String,
    agent: ureq::Agent,
    cfg: HttpConfig,
    cache: Option<Arc<DiskCache>>,
}

/// Percent-encodes a store key for a URL path (keeps `/` and unreserved characters).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Metadata keys are never served from the disk cache (they are small and may change).
fn is_metadata(key: &str) -> bool {
    let leaf = key.rsplit('/').next().unwrap_or(key);
    matches!(leaf, "zarr.json" | ".zarray" | ".zgroup" | ".zattrs" | ".zmetadata")
}

impl HttpStore {
    /// A store rooted at `url` (a trailing `/` is ignored).
    pub fn new(url: &str, cfg: HttpConfig, cache: Option<Arc<DiskCache>>) -> HttpStore {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_global(Some(cfg.request_timeout))
            .user_agent(concat!("annfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpStore { base: url.trim_end_matches('/').to_string(), agent, cfg, cache }
    }

    /// The URL of `key`.
    pub fn url(&self, key: &str) -> String {
        format!("{}/{}", self.base, encode_key(key))
    }

    /// GETs `key` (the byte `range`, or all of it); `Ok(None)` on 404.
    pub fn fetch(&self, key: &str, range: Option<ByteRange>) -> Result<Option<Vec<u8>>, HttpError> {
        let url = self.url(key);
        let id = match range {
            None => url.clone(),
            Some(ByteRange::FromStart(o, l)) => format!("{url}#{o}+{l:?}"),
            Some(ByteRange::Suffix(n)) => format!("{url}#-{n}"),
        };
        let cacheable = self.cache.is_some() && !is_metadata(key);
        if cacheable {
            if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&id)) {
                return Ok(Some(hit));
            }
        }
        let start = Instant::now();
        let mut delay = self.cfg.backoff;
        let mut attempt = 0;
        let res = loop {
            match self.once(&url, range) {
                Err(e) if e.retryable() && attempt < self.cfg.retries && start.elapsed() + delay < self.cfg.deadline => {
                    log::debug!("{e}; retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        match &res {
            Ok(Some(data)) if cacheable => {
                if let Some(c) = &self.cache {
                    c.put(&id, data);
                }
            }
            Err(e) => log::warn!("GET {e} (after {} attempts)", attempt + 1),
            _ => {}
        }
        res
    }

    fn once(&self, url: &str, range: Option<ByteRange>) -> Result<Option<Vec<u8>>, HttpError> {
        let transport = |e: ureq::Error| HttpError::Transport { url: url.to_string(), reason: e.to_string() };
        let mut req = self.agent.get(url);
        let header = match range {
            None | Some(ByteRange::FromStart(0, None)) => None,
            Some(ByteRange::FromStart(o, None)) => Some(format!("bytes={o}-")),
            Some(ByteRange::FromStart(_, Some(0))) => return Ok(Some(Vec::new())),
            Some(ByteRange::FromStart(o, Some(l))) => Some(format!("bytes={o}-{}", o + l - 1)),
            Some(ByteRange::Suffix(n)) => Some(format!("bytes=-{n}")),
        };
        if let Some(h) = &header {
            req = req.header("Range", h);
        }
        let mut resp = req.call().map_err(transport)?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 && status != 206 {
            return Err(HttpError::Status { url: url.to_string(), status });
        }
        let body = resp.body_mut().with_config().limit(MAX_BODY).read_to_vec().map_err(transport)?;
        let short = |got: usize, want: u64| HttpError::Transport {
            url: url.to_string(),
            reason: format!("short body: {got} bytes, expected {want}"),
        };
        match (status, range) {
            // The server ignored the Range header: cut the range out of the whole object.
            (200, Some(r)) if header.is_some() => {
                let len = body.len() as u64;
                if r.end(len) > len || r.start(len) > r.end(len) {
                    return Err(HttpError::Status { url: url.to_string(), status: 416 });
                }
                Ok(Some(body[r.to_range_usize(len)].to_vec()))
            }
            (206, Some(ByteRange::FromStart(_, Some(l)))) if body.len() as u64 != l => Err(short(body.len(), l)),
            _ => Ok(Some(body)),
        }
    }

    /// The size of `key` from a HEAD request.
    fn head_size(&self, key: &str) -> Result<Option<u64>, HttpError> {
        let url = self.url(key);
        let resp = self
            .agent
            .head(&url)
            .call()
            .map_err(|e| HttpError::Transport { url: url.clone(), reason: e.to_string() })?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => Ok(resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            status => Err(HttpError::Status { url, status }),
        }
    }
}

fn zerr(e: HttpError) -> ZStorageError {
    ZStorageError::Other(e.to_string())
}

impl ReadableStorageTraits for HttpStore {
    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, ZStorageError> {
        Ok(self.fetch(key.as_str(), None).map_err(zerr)?.map(Bytes::from))
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, ZStorageError> {
        let mut out = Vec::new();
        for r in byte_ranges {
            match self.fetch(key.as_str(), Some(r)).map_err(zerr)? {
                Some(b) => out.push(Ok(Bytes::from(b))),
                None => return Ok(None),
            }
        }
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, ZStorageError> {
        self.head_size(key.as_str()).map_err(zerr)
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("obs/a/b ratio/0"), "obs/a/b%20ratio/0");
        assert_eq!(encode_key("uns/100%/é"), "uns/100%25/%C3%A9");
        assert!(is_metadata("obs/zarr.json") && is_metadata(".zmetadata") && !is_metadata("X/c/0/0"));
    }

    #[test]
    fn unreachable_server_fails_fast() {
        // Port 9 (discard) on loopback is closed here: connection refused, retried, then an error.
        let cfg = HttpConfig { backoff: Duration::from_millis(10), ..HttpConfig::default() };
        let s = HttpStore::new("http://127.0.0.1:9/store.zarr", cfg, None);
        let t = Instant::now();
        let e = s.fetch("zarr.json", None).unwrap_err();
        assert!(matches!(e, HttpError::Transport { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
