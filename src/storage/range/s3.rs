//! [`ObjectClient`] over S3 (and S3-compatible servers) with the `object_store` crate: endpoint,
//! region and credentials from the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, web identity, ECS and EC2
//! instance metadata) and the shared config/credentials files (`AWS_PROFILE`, see
//! [`aws_profile`](super::aws_profile)), or unsigned requests for public buckets.
//!
//! `object_store` is async; its futures run on one small process-wide tokio runtime that is
//! started on first use (after the daemon has forked) and driven by the calling worker thread's
//! `block_on`. Retries are the [`Fetcher`](super::Fetcher)'s (one policy for every protocol),
//! so the crate's own are turned off.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};

use super::client::{FetchError, Got, ObjectClient, ObjectMeta, Span};

/// Largest range fetched in one GET.
const MAX_BODY: u64 = 1 << 32;

/// The runtime that drives `object_store`'s futures (two I/O threads).
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("annfs-s3")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 I/O runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Objects under `s3://bucket/prefix`.
pub struct S3Client {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

/// How to reach S3.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Send unsigned requests (public buckets), ignoring any credentials.
    pub no_sign: bool,
}

impl S3Client {
    /// A client for keys under `prefix` of `bucket`, configured from the environment.
    pub fn new(
        bucket: &str,
        prefix: &str,
        opts: &S3Options,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<S3Client, FetchError> {
        let url = format!("s3://{bucket}/{prefix}");
        // TLS through rustls with ring (the crate's default provider would build aws-lc); a
        // provider installed earlier in the process is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(connect_timeout)
                    .with_timeout(request_timeout)
                    .with_allow_http(true),
            )
            .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() });
        if opts.no_sign {
            builder = builder.with_skip_signature(true);
        }
        // `from_env` reads AWS_REGION only under its long name; the CLI's default region too.
        let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        if !env("AWS_REGION") {
            if let Ok(r) = std::env::var("AWS_DEFAULT_REGION") {
                builder = builder.with_region(r);
            }
        }
        // The shared config and credentials files (AWS_PROFILE): what the environment leaves unset.
        let profile = super::aws_profile::load().map_err(|reason| FetchError::Config { url: url.clone(), reason })?;
        if let Some(p) = profile {
            if !p.unsupported.is_empty() {
                log::warn!(
                    "the AWS profile gets credentials through {}, which annfs does not follow: set them in the environment",
                    p.unsupported.join(", ")
                );
            }
            if !env("AWS_ACCESS_KEY_ID") && !opts.no_sign {
                if let (Some(id), Some(secret)) = (p.access_key_id, p.secret_access_key) {
                    builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                    if let Some(token) = p.session_token {
                        builder = builder.with_token(token);
                    }
                }
            }
            if let Some(r) = p.region.filter(|_| !env("AWS_REGION") && !env("AWS_DEFAULT_REGION")) {
                builder = builder.with_region(r);
            }
            if let Some(e) = p.endpoint_url.filter(|_| !env("AWS_ENDPOINT_URL") && !env("AWS_ENDPOINT")) {
                builder = builder.with_endpoint(e);
            }
        }
        let store = builder.build().map_err(|e| FetchError::Config { url: url.clone(), reason: e.to_string() })?;
        Ok(S3Client {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
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
            Err(e) => classify(e, url),
        }
    }
}

/// The HTTP status named in an error's message chain ("... status code: 503 ..."), if any.
fn status_in(msg: &str) -> Option<u16> {
    let at = msg.find("status code: ")? + "status code: ".len();
    msg.get(at..at + 3)?.parse().ok()
}

/// Maps an `object_store` error: not found → `Ok(None)`, the rest to [`FetchError`].
fn classify<T>(e: object_store::Error, url: String) -> Result<Option<T>, FetchError> {
    use object_store::Error as E;
    let msg = full_message(&e);
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

impl S3Client {
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
}

impl ObjectClient for S3Client {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.path(key))
    }

    fn get(&self, key: &str, span: Span, version: Option<&str>) -> Result<Option<Got>, FetchError> {
        if span.fixed_len() == Some(0) {
            return Ok(Some(Got { data: Vec::new(), version: version.map(str::to_string) }));
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
        let got = self.run(key, async move {
            let res = store.get_opts(&path, opts).await?;
            let etag = res.meta.e_tag.clone();
            let size = res.range.end - res.range.start;
            if size > MAX_BODY {
                return Err(object_store::Error::Generic {
                    store: "S3",
                    source: format!("a range of {size} bytes is over the single-GET limit").into(),
                });
            }
            let data = res.bytes().await?;
            Ok((data, etag))
        })?;
        let Some((data, etag)) = got else { return Ok(None) };
        if let Some(want) = span.fixed_len().filter(|&l| data.len() as u64 != l) {
            return Err(FetchError::Transport {
                url: self.url(key),
                reason: format!("short body: {} bytes, expected {want}", data.len()),
            });
        }
        Ok(Some(Got { data: data.to_vec(), version: etag }))
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

    #[test]
    fn status_is_found_in_messages() {
        assert_eq!(status_in("Generic S3 error: Server returned non-2xx status code: 503 Service Unavailable"), Some(503));
        assert_eq!(status_in("connection refused"), None);
    }

    #[test]
    fn keys_join_the_prefix() {
        let c = S3Client::new("b", "dir/x.h5ad", &S3Options { no_sign: true }, Duration::from_secs(1), Duration::from_secs(1))
            .unwrap();
        assert_eq!(c.url(""), "s3://b/dir/x.h5ad");
        let z = S3Client::new("b", "s.zarr/", &S3Options { no_sign: true }, Duration::from_secs(1), Duration::from_secs(1))
            .unwrap();
        assert_eq!(z.url("X/zarr.json"), "s3://b/s.zarr/X/zarr.json");
        assert_eq!(z.url("obs/100% sure/.zarray"), "s3://b/s.zarr/obs/100% sure/.zarray");
    }
}
