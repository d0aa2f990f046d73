//! [`ObjectClient`] over plain HTTP(S): `GET` with `Range` and `If-Match`, `HEAD`, through one
//! pooled `ureq` agent with connect and request timeouts.

use std::io::Read;
use std::time::Duration;

use super::client::{FetchError, Got, ObjectClient, ObjectMeta, Span};

/// Largest object or range fetched in one GET.
const MAX_BODY: u64 = 1 << 32;
/// Largest body buffer allocated ahead on a server's `Content-Length`.
const PREALLOC_MAX: u64 = 64 << 20;

/// Objects under an `http://` or `https://` base URL.
pub struct HttpClient {
    base: String,
    agent: ureq::Agent,
}

/// Percent-encodes a key for a URL path (keeps `/` and unreserved characters).
pub fn encode_key(key: &str) -> String {
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

/// The object's version from response headers: the ETag, else Last-Modified.
fn version_of(headers: &ureq::http::HeaderMap) -> Option<String> {
    ["etag", "last-modified"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::to_string))
}

impl HttpClient {
    /// A client for keys under `base` (a trailing `/` is ignored).
    pub fn new(base: &str, connect_timeout: Duration, request_timeout: Duration) -> HttpClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(connect_timeout))
            .timeout_global(Some(request_timeout))
            .user_agent(concat!("annfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpClient { base: base.trim_end_matches('/').to_string(), agent }
    }
}

impl ObjectClient for HttpClient {
    fn url(&self, key: &str) -> String {
        if key.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, encode_key(key))
        }
    }

    fn get(&self, key: &str, span: Span, version: Option<&str>) -> Result<Option<Got>, FetchError> {
        let url = self.url(key);
        if span.fixed_len() == Some(0) {
            return Ok(Some(Got { data: Vec::new(), version: version.map(str::to_string) }));
        }
        let transport = |e: ureq::Error| FetchError::Transport { url: url.clone(), reason: e.to_string() };
        let mut req = self.agent.get(&url);
        let header = span.header();
        if let Some(h) = &header {
            req = req.header("Range", h);
        }
        if let Some(v) = version.filter(|v| v.starts_with('"') || v.starts_with("W/")) {
            req = req.header("If-Match", v);
        }
        let mut resp = req.call().map_err(transport)?;
        let status = resp.status().as_u16();
        let got_version = version_of(resp.headers());
        match status {
            404 => return Ok(None),
            412 => {
                return Err(FetchError::Changed {
                    url,
                    was: version.unwrap_or("?").to_string(),
                    now: got_version.unwrap_or_else(|| "?".into()),
                })
            }
            200 | 206 => {}
            _ => return Err(FetchError::Status { url, status, detail: None }),
        }
        // Read into a buffer of the expected length: growing one by doubling copied every body
        // (a 4 MiB block was copied and its fresh pages faulted in several times over; a fifth
        // of the daemon's CPU reading a remote Zarr store).
        // The length is the server's word: trusted up to PREALLOC_MAX (the buffer grows past it).
        let expected = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let mut body = Vec::with_capacity(expected.unwrap_or(0).min(PREALLOC_MAX) as usize);
        resp.body_mut()
            .with_config()
            .limit(MAX_BODY)
            .reader()
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Transport { url: url.clone(), reason: e.to_string() })?;
        let data = if status == 200 && header.is_some() {
            // The server ignored the Range header: cut the span out of the whole object.
            match span.cut(&body) {
                Some(part) => part.to_vec(),
                None => return Err(FetchError::Status { url, status: 416, detail: None }),
            }
        } else {
            body
        };
        if let Some(want) = span.fixed_len().filter(|&l| data.len() as u64 != l) {
            return Err(FetchError::Transport {
                url,
                reason: format!("short body: {} bytes, expected {want}", data.len()),
            });
        }
        Ok(Some(Got { data, version: got_version }))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, FetchError> {
        let url = self.url(key);
        let resp = self
            .agent
            .head(&url)
            .call()
            .map_err(|e| FetchError::Transport { url: url.clone(), reason: e.to_string() })?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => {
                let size = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                match size {
                    Some(size) => Ok(Some(ObjectMeta { size, version: version_of(resp.headers()) })),
                    None => Err(FetchError::Transport { url, reason: "HEAD gave no Content-Length".into() }),
                }
            }
            status => Err(FetchError::Status { url, status, detail: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("obs/a/b ratio/0"), "obs/a/b%20ratio/0");
        assert_eq!(encode_key("uns/100%/é"), "uns/100%25/%C3%A9");
        let c = HttpClient::new("http://h/s.zarr/", Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(c.url(""), "http://h/s.zarr");
        assert_eq!(c.url("X/0"), "http://h/s.zarr/X/0");
    }
}
