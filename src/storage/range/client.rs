//! The seam between the byte-range layer and a protocol: an [`ObjectClient`] makes one attempt
//! at a GET or HEAD of a key (HTTP, S3…); [`Span`] says which bytes, [`ObjectMeta`] what a HEAD
//! found, [`FetchError`] why an attempt failed and whether it is worth retrying.

use std::fmt;

/// Which bytes of an object a GET asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Span {
    /// The whole object.
    All,
    /// `len` bytes from `start`.
    At {
        /// First byte.
        start: u64,
        /// Number of bytes.
        len: u64,
    },
    /// Everything from this offset on.
    From(u64),
    /// The last `n` bytes.
    Last(u64),
}

impl Span {
    /// The HTTP `Range` header value, if any (`None`: the whole object).
    pub fn header(self) -> Option<String> {
        match self {
            Span::All | Span::From(0) => None,
            Span::At { start, len } => Some(format!("bytes={start}-{}", start + len.max(1) - 1)),
            Span::From(o) => Some(format!("bytes={o}-")),
            Span::Last(n) => Some(format!("bytes=-{n}")),
        }
    }

    /// The bytes of this span within a whole object `body` (a server that ignored `Range`),
    /// or `None` when the span lies outside it.
    pub fn cut(self, body: &[u8]) -> Option<&[u8]> {
        let n = body.len() as u64;
        let (s, e) = match self {
            Span::All => (0, n),
            Span::At { start, len } => (start, start.checked_add(len)?),
            Span::From(o) => (o, n),
            Span::Last(k) => (n.saturating_sub(k), n),
        };
        (s <= e && e <= n).then(|| &body[s as usize..e as usize])
    }

    /// The exact length the answer must have, when the span fixes it.
    pub fn fixed_len(self) -> Option<u64> {
        match self {
            Span::At { len, .. } => Some(len),
            _ => None,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Span::All => Ok(()),
            Span::At { start, len } => write!(f, "#{start}+{len}"),
            Span::From(o) => write!(f, "#{o}-"),
            Span::Last(n) => write!(f, "#-{n}"),
        }
    }
}

/// What a HEAD (or a GET's headers) says about an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Length in bytes.
    pub size: u64,
    /// Its version: the ETag, else the Last-Modified date (`None`: the server gives neither).
    pub version: Option<String>,
}

/// A successful GET: the bytes and the object's version as the answer named it.
#[derive(Debug)]
pub struct Got {
    /// The requested bytes.
    pub data: Vec<u8>,
    /// ETag or Last-Modified of the object that answered.
    pub version: Option<String>,
}

/// A successful GET cut into pieces as it arrived (see [`ObjectClient::get_pieces`]).
#[derive(Debug)]
pub struct GotPieces {
    /// The requested bytes, in pieces of the asked size (the last may be shorter).
    pub pieces: Vec<Vec<u8>>,
    /// ETag or Last-Modified of the object that answered.
    pub version: Option<String>,
}

impl GotPieces {
    /// The bytes in one buffer (a single piece is taken as is, more are joined).
    pub fn into_got(mut self) -> Got {
        let data = if self.pieces.len() == 1 { self.pieces.swap_remove(0) } else { self.pieces.concat() };
        Got { data, version: self.version }
    }

    /// These pieces, when they hold as many bytes as `span` asked for (a body cut short is a
    /// transport error of `url`).
    pub fn of_span(self, span: Span, url: &str) -> Result<GotPieces, FetchError> {
        let got: u64 = self.pieces.iter().map(|p| p.len() as u64).sum();
        match span.fixed_len() {
            Some(want) if got != want => Err(FetchError::Transport {
                url: url.to_string(),
                reason: format!("short body: {got} bytes, expected {want}"),
            }),
            _ => Ok(self),
        }
    }
}

/// `data` in pieces of `piece` bytes (the last may be shorter; none when `data` is empty).
pub fn cut_pieces(data: &[u8], piece: usize) -> Vec<Vec<u8>> {
    data.chunks(piece.max(1)).map(<[u8]>::to_vec).collect()
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The server's or client's explanation, when it gave one.
        detail: Option<String>,
    },
    /// No answer (connection refused or reset, timeout, TLS, a truncated body…).
    #[error("{url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The client cannot be used as configured (no credentials, a malformed URL…).
    #[error("{url}: {reason}")]
    Config {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The object is no longer the one the mount opened.
    #[error("{url}: the object changed under the mount (opened as version {was}, now {now}); remount to read it")]
    Changed {
        /// The URL.
        url: String,
        /// The version recorded at open.
        was: String,
        /// The version the server answered with.
        now: String,
    },
}

impl FetchError {
    /// Worth another attempt: no answer, 5xx, 429 (throttling) and 408.
    pub fn retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            FetchError::Transport { .. } => true,
            FetchError::Config { .. } | FetchError::Changed { .. } => false,
        }
    }

    /// A 401 or 403.
    pub fn is_denied(&self) -> bool {
        matches!(self, FetchError::Status { status: 401 | 403, .. })
    }
}

/// One protocol's way to read objects under a base location (an URL prefix, a bucket and
/// prefix). Keys are relative to that base; an empty key is the base object itself. Each call
/// is one attempt: retries, caching and version checks are the [`Fetcher`](super::Fetcher)'s.
pub trait ObjectClient: Send + Sync {
    /// The URL of `key`, for messages and cache ids.
    fn url(&self, key: &str) -> String;

    /// GETs `span` of `key`, sending `If-Match: version` when given; `Ok(None)` when there is
    /// no such object (404).
    fn get(&self, key: &str, span: Span, version: Option<&str>) -> Result<Option<Got>, FetchError>;

    /// GETs `span` of `key` as [`ObjectClient::get`] does, the body cut into pieces of `piece`
    /// bytes as it arrives, so that a caller keeping the pieces apart (the block cache) copies
    /// nothing. By default the body is read whole and then cut (one copy more).
    fn get_pieces(&self, key: &str, span: Span, version: Option<&str>, piece: usize) -> Result<Option<GotPieces>, FetchError> {
        Ok(self.get(key, span, version)?.map(|g| GotPieces { pieces: cut_pieces(&g.data, piece), version: g.version }))
    }

    /// HEADs `key`; `Ok(None)` when there is no such object.
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, FetchError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_render_and_cut() {
        assert_eq!(Span::At { start: 2, len: 3 }.header().as_deref(), Some("bytes=2-4"));
        assert_eq!(Span::Last(4).header().as_deref(), Some("bytes=-4"));
        assert_eq!(Span::From(0).header(), None);
        let body = b"0123456789";
        assert_eq!(Span::At { start: 2, len: 3 }.cut(body), Some(&b"234"[..]));
        assert_eq!(Span::Last(2).cut(body), Some(&b"89"[..]));
        assert_eq!(Span::From(8).cut(body), Some(&b"89"[..]));
        assert_eq!(Span::At { start: 8, len: 3 }.cut(body), None);
        assert_eq!(Span::At { start: u64::MAX, len: 3 }.cut(body), None);
    }

    #[test]
    fn pieces_join_and_check_their_length() {
        assert_eq!(cut_pieces(b"0123456789", 4), [b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]);
        let got = GotPieces { pieces: cut_pieces(b"0123456789", 4), version: Some("v".into()) };
        let got = got.of_span(Span::At { start: 0, len: 10 }, "u").unwrap().into_got();
        assert_eq!((got.data.as_slice(), got.version.as_deref()), (&b"0123456789"[..], Some("v")));
        let short = GotPieces { pieces: cut_pieces(b"012", 4), version: None };
        assert!(matches!(short.of_span(Span::At { start: 0, len: 4 }, "u"), Err(FetchError::Transport { .. })));
        assert!(GotPieces { pieces: vec![], version: None }.of_span(Span::All, "u").is_ok());
    }

    #[test]
    fn retry_classes() {
        let st = |status| FetchError::Status { url: "u".into(), status, detail: None };
        assert!(st(503).retryable() && st(429).retryable() && !st(404).retryable() && !st(403).retryable());
        assert!(st(403).is_denied());
    }
}
