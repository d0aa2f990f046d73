//! Object stores — S3 (and S3-compatible servers), Google Cloud Storage and Azure Blob Storage —
//! as one [`ObjectClient`] over the `object_store` crate: [`BucketClient`] reads keys under
//! `SCHEME://bucket/prefix` with whichever service's client [`aws`], [`gcs`] or [`azure`] built
//! from that service's standard environment.
//!
//! `object_store` is async; its futures run on one small process-wide tokio runtime that is
//! started on first use (after the daemon has forked) and driven by the calling worker thread's
//! `block_on`. Retries are the [`Fetcher`](super::Fetcher)'s (one policy for every protocol),
//! so the crate's own are turned off.

pub mod aws;
pub mod aws_profile;
pub mod azure;
pub mod gcs;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};

use super::client::{FetchError, Got, GotPieces, ObjectClient, ObjectMeta, Span};

/// Largest range fetched in one GET.
const MAX_BODY: u64 = 1 << 32;

/// The runtime that drives `object_store`'s futures (two I/O threads).
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("annfs-cloud")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the object-store I/O runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// An object-store service, named by its URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Amazon S3 or an S3-compatible server: `s3://bucket/key`.
    S3,
    /// Google Cloud Storage: `gs://bucket/key`.
    Gcs,
    /// Azure Blob Storage: `az://container/key`.
    Azure,
}

impl Service {
    /// The service a URL scheme names (`s3`, `s3a`, `gs`, `gcs`, `az`, `azure`; any case).
    pub fn from_scheme(scheme: &str) -> Option<Service> {
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Some(Service::S3),
            "gs" | "gcs" => Some(Service::Gcs),
            "az" | "azure" => Some(Service::Azure),
            _ => None,
        }
    }

    /// The scheme annfs writes in URLs and messages.
    pub fn scheme(self) -> &'static str {
        match self {
            Service::S3 => "s3",
            Service::Gcs => "gs",
            Service::Azure => "az",
        }
    }

    /// Where the service's credentials come from, for messages about missing ones.
    fn credentials_hint(self) -> &'static str {
        match self {
            Service::S3 => "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or pass --no-sign-request for a public bucket",
            Service::Gcs => "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT, or pass --no-sign-request for a public bucket",
            Service::Azure => "set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or pass --no-sign-request for a public container",
        }
    }

    /// The service's name in error messages.
    fn label(self) -> &'static str {
        match self {
            Service::S3 => "S3",
            Service::Gcs => "GCS",
            Service::Azure => "Azure",
        }
    }
}

/// How to reach an object store.
#[derive(Clone, Debug, Default)]
pub struct CloudOptions {
    /// Send unsigned (anonymous) requests — public buckets and containers — ignoring any
    /// credentials.
    pub no_sign: bool,
}

/// What every service's client builder gets: the bucket (container), the URL for messages, the
/// options and the HTTP client options.
pub struct Setup<'a> {
    /// Bucket (S3, GCS) or container (Azure) name.
    pub bucket: &'a str,
    /// `SCHEME://bucket/prefix`, for messages.
    pub url: &'a str,
    /// Signing.
    pub opts: &'a CloudOptions,
    /// Timeouts; plain `http://` endpoints allowed (S3-compatible servers, emulators).
    pub client: ClientOptions,
    /// No retries (the fetcher's policy applies).
    pub retry: RetryConfig,
}

/// Objects under `SCHEME://bucket/prefix`.
pub struct BucketClient {
    store: Arc<dyn ObjectStore>,
    service: Service,
    bucket: String,
    prefix: String,
}

impl BucketClient {
    /// A client for keys under `prefix` of `bucket` of `service`, configured from that
    /// service's environment; a configuration the service's client refuses (no account, an
    /// unreadable credentials file) is a [`FetchError::Config`] naming the URL.
    pub fn new(
        service: Service,
        bucket: &str,
        prefix: &str,
        opts: &CloudOptions,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<BucketClient, FetchError> {
        let url = format!("{}://{bucket}/{prefix}", service.scheme());
        // TLS through rustls with ring (the crate's default provider would build aws-lc); a
        // provider installed earlier in the process is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let setup = Setup {
            bucket,
            url: &url,
            opts,
            client: ClientOptions::new()
                .with_connect_timeout(connect_timeout)
                .with_timeout(request_timeout)
                .with_allow_http(true),
            retry: RetryConfig { max_retries: 0, ..RetryConfig::default() },
        };
        let store = match service {
            Service::S3 => aws::store(setup),
            Service::Gcs => gcs::store(setup),
            Service::Azure => azure::store(setup),
        }?;
        Ok(BucketClient { store, service, bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() })
    }

    /// The object path of `key`, taken as the object's name (`Path::from` would percent-encode
    /// characters such as `%`, naming another object).
    fn path(&self, key: &str) -> ObjPath {
        let full = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        };
        ObjPath::parse(&full).unwrap_or_else(|_| ObjPath::from(full))
    }

    fn run<T>(&self, key: &str, fut: impl std::future::Future<Output = object_store::Result<T>>) -> Result<Option<T>, FetchError> {
        let url = self.url(key);
        let rt = runtime().map_err(|reason| FetchError::Config { url: url.clone(), reason })?;
        match rt.block_on(fut) {
            Ok(v) => Ok(Some(v)),
            Err(e) => classify(e, url, self.service),
        }
    }
}

/// A builder's refusal as a [`FetchError::Config`] naming `url`.
pub(crate) fn config_error(url: &str, e: object_store::Error) -> FetchError {
    FetchError::Config { url: url.to_string(), reason: full_message(&e) }
}

/// The HTTP status named in an error's message chain ("... status code: 503 ..."), if any.
fn status_in(msg: &str) -> Option<u16> {
    let at = msg.find("status code: ")? + "status code: ".len();
    msg.get(at..at + 3)?.parse().ok()
}

/// Maps an `object_store` error: not found → `Ok(None)`, credentials that could not be had
/// (the instance metadata service or a token exchange failed: no credentials are configured)
/// → [`FetchError::Config`] with `service`'s hint, the rest by status to [`FetchError`].
fn classify<T>(e: object_store::Error, url: String, service: Service) -> Result<Option<T>, FetchError> {
    use object_store::Error as E;
    let msg = full_message(&e);
    if msg.contains("169.254.169.254") || msg.contains("token request") {
        return Err(FetchError::Config { url, reason: format!("no usable credentials: {} ({msg})", service.credentials_hint()) });
    }
    match e {
        E::NotFound { .. } => Ok(None),
        E::PermissionDenied { .. } => Err(FetchError::Status { url, status: 403, detail: Some(msg) }),
        E::Unauthenticated { .. } => Err(FetchError::Status { url, status: 401, detail: Some(msg) }),
        E::Precondition { .. } => Err(FetchError::Changed { url, was: "?".into(), now: "a newer version".into() }),
        _ => match status_in(&msg) {
            Some(status) => Err(FetchError::Status { url, status, detail: Some(msg) }),
            None if msg.contains("credential") || msg.contains("Missing") => Err(FetchError::Config { url, reason: msg }),
            None => Err(FetchError::Transport { url, reason: msg }),
        },
    }
}

/// An error and its sources, joined.
fn full_message(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        src = s.source();
    }
    msg
}

/// One level of a listing: the sub-prefixes (names ending before the next `/`) and the objects
/// (name, size, ETag) directly under a prefix.
#[derive(Debug, Default)]
pub struct Level {
    /// Names of the sub-prefixes ("directories").
    pub prefixes: Vec<String>,
    /// Objects: (name, size, ETag).
    pub objects: Vec<(String, u64, Option<String>)>,
}

impl BucketClient {
    /// Lists one level below `key` (relative to the client's prefix; `""` for the prefix
    /// itself), all pages.
    pub fn list(&self, key: &str) -> Result<Level, FetchError> {
        let path = self.path(key);
        let store = self.store.clone();
        let base = path.to_string();
        let listed = self.run(key, async move {
            let prefix = (!base.is_empty()).then_some(&path);
            store.list_with_delimiter(prefix).await
        })?;
        let Some(listed) = listed else { return Ok(Level::default()) };
        let leaf = |p: &ObjPath| p.filename().map(str::to_string);
        Ok(Level {
            prefixes: listed.common_prefixes.iter().filter_map(leaf).collect(),
            objects: listed.objects.iter().filter_map(|o| Some((leaf(&o.location)?, o.size, o.e_tag.clone()))).collect(),
        })
    }

    /// One GET of `span` of `key` (`If-Match: version` when given): the body whole (one piece),
    /// or, with `piece`, in pieces of that many bytes filled from the body's frames as they
    /// arrive (no whole-body buffer to cut).
    fn fetch(&self, key: &str, span: Span, version: Option<&str>, piece: Option<usize>) -> Result<Option<GotPieces>, FetchError> {
        if let (Service::Azure, Span::Last(n)) = (self.service, span) {
            // Azure Blob Storage has no suffix ranges: the object's size (and version) first.
            let Some(meta) = self.head(key)? else { return Ok(None) };
            let len = n.min(meta.size);
            let version = version.map(str::to_string).or(meta.version);
            return self.fetch(key, Span::At { start: meta.size - len, len }, version.as_deref(), piece);
        }
        if span.fixed_len() == Some(0) {
            return Ok(Some(GotPieces { pieces: Vec::new(), version: version.map(str::to_string) }));
        }
        let range = match span {
            Span::All => None,
            Span::At { start, len } => Some(GetRange::Bounded(start..start.saturating_add(len))),
            Span::From(o) => Some(GetRange::Offset(o)),
            Span::Last(n) => Some(GetRange::Suffix(n)),
        };
        let opts = GetOptions { range, if_match: version.map(str::to_string), ..GetOptions::default() };
        let path = self.path(key);
        let store = self.store.clone();
        let label = self.service.label();
        let got = self.run(key, async move {
            let res = store.get_opts(&path, opts).await?;
            let etag = res.meta.e_tag.clone();
            let size = res.range.end - res.range.start;
            if size > MAX_BODY {
                return Err(object_store::Error::Generic {
                    store: label,
                    source: format!("a range of {size} bytes is over the single-GET limit").into(),
                });
            }
            let pieces = match piece {
                // Into a Vec without a copy when the body's buffer is not shared (a copy otherwise).
                None => vec![Vec::from(res.bytes().await?)],
                Some(piece) => read_pieces(res.into_stream(), size, piece).await?,
            };
            Ok((pieces, etag))
        })?;
        let Some((pieces, etag)) = got else { return Ok(None) };
        GotPieces { pieces, version: etag }.of_span(span, &self.url(key)).map(Some)
    }
}

/// A body's frames gathered into pieces of `piece` bytes as they arrive (the last may be
/// shorter); `size`, the length the answer announced, only sizes the buffers (a piece at most).
async fn read_pieces<B: AsRef<[u8]>>(
    mut frames: impl futures_util::Stream<Item = object_store::Result<B>> + Unpin,
    size: u64,
    piece: usize,
) -> object_store::Result<Vec<Vec<u8>>> {
    let piece = piece.max(1);
    let mut left = usize::try_from(size).unwrap_or(usize::MAX);
    let mut pieces = Vec::with_capacity(left.div_ceil(piece).min(1 << 16));
    let mut cur: Vec<u8> = Vec::with_capacity(left.min(piece));
    while let Some(frame) = frames.next().await {
        let frame = frame?;
        let mut frame = frame.as_ref();
        while !frame.is_empty() {
            let take = (piece - cur.len()).min(frame.len());
            cur.extend_from_slice(&frame[..take]);
            frame = &frame[take..];
            left = left.saturating_sub(take);
            if cur.len() == piece {
                pieces.push(std::mem::replace(&mut cur, Vec::with_capacity(left.min(piece))));
            }
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    Ok(pieces)
}

impl ObjectClient for BucketClient {
    fn url(&self, key: &str) -> String {
        format!("{}://{}/{}", self.service.scheme(), self.bucket, self.path(key))
    }

    fn get(&self, key: &str, span: Span, version: Option<&str>) -> Result<Option<Got>, FetchError> {
        Ok(self.fetch(key, span, version, None)?.map(GotPieces::into_got))
    }

    fn get_pieces(&self, key: &str, span: Span, version: Option<&str>, piece: usize) -> Result<Option<GotPieces>, FetchError> {
        self.fetch(key, span, version, Some(piece))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, FetchError> {
        let path = self.path(key);
        let store = self.store.clone();
        let meta = self.run(key, async move { store.head(&path).await })?;
        Ok(meta.map(|m| ObjectMeta {
            size: m.size,
            version: m.e_tag.or_else(|| Some(m.last_modified.to_rfc2822())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of any sizes fill pieces of the asked size; the announced size only sizes buffers.
    #[test]
    fn frames_gather_into_pieces() {
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let rt = runtime().unwrap();
        for (frame, size) in [(1, 1000), (7, 1000), (300, 3), (1000, u64::MAX), (999, 0)] {
            let frames = futures_util::stream::iter(body.chunks(frame).map(|c| Ok(c.to_vec())).collect::<Vec<_>>());
            let pieces = rt.block_on(read_pieces(frames, size, 300)).unwrap();
            assert_eq!(pieces.iter().map(Vec::len).collect::<Vec<_>>(), [300, 300, 300, 100], "frames of {frame}");
            assert_eq!(pieces.concat(), body);
        }
        let none = futures_util::stream::iter(Vec::<object_store::Result<Vec<u8>>>::new());
        assert!(rt.block_on(read_pieces(none, 0, 300)).unwrap().is_empty());
    }

    #[test]
    fn status_is_found_in_messages() {
        assert_eq!(status_in("Generic S3 error: Server returned non-2xx status code: 503 Service Unavailable"), Some(503));
        assert_eq!(status_in("connection refused"), None);
    }

    #[test]
    fn schemes_name_services() {
        assert_eq!(Service::from_scheme("S3A"), Some(Service::S3));
        assert_eq!(Service::from_scheme("gcs"), Some(Service::Gcs));
        assert_eq!(Service::from_scheme("azure"), Some(Service::Azure));
        assert_eq!(Service::from_scheme("abfs"), None);
    }

    #[test]
    fn keys_join_the_prefix() {
        let opts = CloudOptions { no_sign: true };
        let t = Duration::from_secs(1);
        let c = BucketClient::new(Service::S3, "b", "dir/x.h5ad", &opts, t, t).unwrap();
        assert_eq!(c.url(""), "s3://b/dir/x.h5ad");
        let z = BucketClient::new(Service::S3, "b", "s.zarr/", &opts, t, t).unwrap();
        assert_eq!(z.url("X/zarr.json"), "s3://b/s.zarr/X/zarr.json");
        assert_eq!(z.url("obs/100% sure/.zarray"), "s3://b/s.zarr/obs/100% sure/.zarray");
        let g = BucketClient::new(Service::Gcs, "b", "a.zarr", &opts, t, t).unwrap();
        assert_eq!(g.url("zarr.json"), "gs://b/a.zarr/zarr.json");
    }
}
