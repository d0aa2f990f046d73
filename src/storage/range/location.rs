//! What a mount source names: a local path, an `http(s)://` URL or an `s3://bucket/key` object
//! or prefix; and the [`Fetcher`] that reads a remote one.

use std::sync::Arc;

use super::client::{FetchError, ObjectClient};
use super::disk_cache::DiskCache;
use super::fetcher::{Fetcher, RemoteConfig, RemoteStats};
use super::http::HttpClient;
use super::s3::{S3Client, S3Options};

/// A remote location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// An `http://` or `https://` URL.
    Http(String),
    /// An object or prefix in an S3 bucket.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key or prefix (no leading `/`).
        key: String,
    },
}

impl Remote {
    /// Parses `source`; `None` for anything that is not a supported URL (a local path).
    pub fn parse(source: &str) -> Option<Remote> {
        let (scheme, rest) = source.split_once("://")?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Some(Remote::Http(source.to_string())),
            "s3" | "s3a" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                Some(Remote::S3 { bucket: bucket.to_string(), key: key.trim_start_matches('/').to_string() })
            }
            _ => None,
        }
    }

    /// The last path component (`atlas.h5ad`), without a trailing `/`.
    pub fn leaf(&self) -> &str {
        let path = match self {
            Remote::Http(u) => u.split(['?', '#']).next().unwrap_or(u),
            Remote::S3 { key, .. } => key,
        };
        path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
    }
}

/// Everything a remote read needs besides the location.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions {
    /// Timeouts and retries.
    pub config: RemoteConfig,
    /// S3 signing.
    pub s3: S3Options,
    /// The on-disk cache, when enabled.
    pub disk: Option<Arc<DiskCache>>,
    /// The mount's counters.
    pub stats: Arc<RemoteStats>,
}

/// A fetcher whose keys are relative to `remote` (an object, key `""`, or a prefix).
pub fn fetcher(remote: &Remote, opts: &RemoteOptions) -> Result<Fetcher, FetchError> {
    let c = &opts.config;
    let client: Box<dyn ObjectClient> = match remote {
        Remote::Http(url) => Box::new(HttpClient::new(url, c.connect_timeout, c.request_timeout)),
        Remote::S3 { bucket, key } => Box::new(S3Client::new(bucket, key, &opts.s3, c.connect_timeout, c.request_timeout)?),
    };
    Ok(Fetcher::new(client, c.clone(), opts.disk.clone(), opts.stats.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(Remote::parse("/data/a.h5ad"), None);
        assert_eq!(Remote::parse("HTTPS://h/x.h5ad"), Some(Remote::Http("HTTPS://h/x.h5ad".into())));
        let s3 = Remote::parse("s3://bkt/dir/a.zarr/").unwrap();
        assert_eq!(s3, Remote::S3 { bucket: "bkt".into(), key: "dir/a.zarr/".into() });
        assert_eq!(s3.leaf(), "a.zarr");
        assert_eq!(Remote::parse("s3://bkt").unwrap(), Remote::S3 { bucket: "bkt".into(), key: String::new() });
        assert_eq!(Remote::parse("http://h/p/x.h5ad?sig=1").unwrap().leaf(), "x.h5ad");
        assert_eq!(Remote::parse("gs://b/k"), None);
    }
}
