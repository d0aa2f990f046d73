//! [`ObjectClient`] over plain HTTP(S): `GET` with `Range` and `If-Match`, `HEAD`, through one
//! pooled `ureq` agent with connect and request timeouts.

use std::io::Read;
use std::time::Duration;

use super::client::{cut_pieces, FetchError, Got, GotPieces, ObjectClient, ObjectMeta, Span};

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

    /// One GET of `span` of `key` (`If-Match: version` when given): the body whole (one piece),
    /// or, with `piece`, in pieces of that many bytes read straight from the connection.
    fn fetch(&self, key: &str, span: Span, version: Option<&str>, piece: Option<usize>) -> Result<Option<GotPieces>, FetchError> {
        let url = self.url(key);
        if span.fixed_len() == Some(0) {
            return Ok(Some(GotPieces { pieces: Vec::new(), version: version.map(str::to_string) }));
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
        // Read into buffers of the expected length: growing one by doubling copied every body
        // (a 4 MiB run was copied and its fresh pages faulted in several times over; a fifth
        // of the daemon's CPU reading a remote Zarr store). The length is the server's word:
        // trusted up to PREALLOC_MAX (a buffer grows past it).
        let expected: Option<u64> =
            resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let io = |e: std::io::Error| FetchError::Transport { url: url.clone(), reason: e.to_string() };
        let mut reader = resp.body_mut().with_config().limit(MAX_BODY).reader();
        let ignored_range = status == 200 && header.is_some();
        let pieces = match piece.filter(|_| !ignored_range) {
            Some(piece) => read_pieces(&mut reader, piece, expected).map_err(io)?,
            None => {
                let mut body = Vec::with_capacity(expected.unwrap_or(0).min(PREALLOC_MAX) as usize);
                reader.read_to_end(&mut body).map_err(io)?;
                if ignored_range {
                    // The server ignored the Range header: cut the span out of the whole object.
                    let Some(part) = span.cut(&body) else {
                        return Err(FetchError::Status { url, status: 416, detail: None });
                    };
                    match piece {
                        Some(piece) => cut_pieces(part, piece),
                        None => vec![part.to_vec()],
                    }
                } else {
                    vec![body]
                }
            }
        };
        GotPieces { pieces, version: got_version }.of_span(span, &url).map(Some)
    }
}

/// Reads `r` to its end in pieces of `piece` bytes, each buffer sized for its piece (`expected`
/// bytes in all, when the server said; trusted only up to a piece per buffer).
fn read_pieces(r: &mut impl Read, piece: usize, expected: Option<u64>) -> std::io::Result<Vec<Vec<u8>>> {
    let piece = piece.max(1);
    let mut left = expected;
    let mut pieces = Vec::new();
    loop {
        let cap = left.map_or(piece, |l| (l as usize).min(piece));
        let mut buf = Vec::with_capacity(cap);
        let n = r.by_ref().take(piece as u64).read_to_end(&mut buf)?;
        if n == 0 {
            return Ok(pieces);
        }
        if buf.capacity() > piece {
            // The announced length was short: the buffer grew past a piece.
            buf.shrink_to_fit();
        }
        left = left.map(|l| l.saturating_sub(n as u64));
        pieces.push(buf);
        if n < piece {
            return Ok(pieces);
        }
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
        Ok(self.fetch(key, span, version, None)?.map(GotPieces::into_got))
    }

    fn get_pieces(&self, key: &str, span: Span, version: Option<&str>, piece: usize) -> Result<Option<GotPieces>, FetchError> {
        self.fetch(key, span, version, Some(piece))
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

    /// A body is cut into pieces of the asked size whatever the announced length says (a lying
    /// `Content-Length` only sizes the buffers, never more than a piece each).
    #[test]
    fn bodies_are_read_in_pieces() {
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for expected in [Some(1000), None, Some(7), Some(u64::MAX)] {
            let pieces = read_pieces(&mut &body[..], 300, expected).unwrap();
            assert_eq!(pieces.iter().map(Vec::len).collect::<Vec<_>>(), [300, 300, 300, 100]);
            assert_eq!(pieces.concat(), body);
            assert!(pieces.iter().all(|p| p.capacity() <= 300));
        }
        assert_eq!(read_pieces(&mut &body[..600], 300, Some(600)).unwrap().len(), 2);
        assert!(read_pieces(&mut &b""[..], 300, Some(0)).unwrap().is_empty());
    }
}
