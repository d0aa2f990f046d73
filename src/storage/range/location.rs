//! What a mount source names: a local path, an `http(s)://` URL, or an object or prefix in an
//! object store (`s3://bucket/key`, `gs://bucket/key`, `az://container/key`); and the
//! [`Fetcher`] that reads a remote one.

use std::sync::Arc;

use super::client::{FetchError, ObjectClient};
use super::disk_cache::DiskCache;
use super::fetcher::{Fetcher, RemoteConfig, RemoteStats};
use super::http::HttpClient;
use super::cloud::{BucketClient, CloudOptions, Service};

/// A remote location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// An `http://` or `https://` URL.
    Http(String),
    /// An object or prefix in an object store's bucket.
    Bucket {
        /// Which object store.
        service: Service,
        /// The bucket (Azure: the container).
        bucket: String,
        /// The key or prefix (no leading `/`).
        key: String,
    },
}

impl Remote {
    /// Parses `source`; `None` for anything that is not a supported URL (a local path).
    pub fn parse(source: &str) -> Option<Remote> {
        let (scheme, rest) = source.split_once("://")?;
        if matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return Some(Remote::Http(source.to_string()));
        }
        let service = Service::from_scheme(scheme)?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Some(Remote::Bucket { service, bucket: bucket.to_string(), key: key.trim_start_matches('/').to_string() })
    }

    /// The last path component (`atlas.h5ad`), without a trailing `/`.
    pub fn leaf(&self) -> &str {
        let path = match self {
            Remote::Http(u) => u.split(['?', '#']).next().unwrap_or(u),
            Remote::Bucket { key, .. } => key,
        };
        path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
    }
}

/// Everything a remote read needs besides the location.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions {
    /// Timeouts and retries.
    pub config: RemoteConfig,
    /// Object-store request signing.
    pub cloud: CloudOptions,
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
        Remote::Bucket { service, bucket, key } => {
            Box::new(BucketClient::new(*service, bucket, key, &opts.cloud, c.connect_timeout, c.request_timeout)?)
        }
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
        let bucket = |service, bucket: &str, key: &str| Remote::Bucket { service, bucket: bucket.into(), key: key.into() };
        assert_eq!(s3, bucket(Service::S3, "bkt", "dir/a.zarr/"));
        assert_eq!(s3.leaf(), "a.zarr");
        assert_eq!(Remote::parse("s3://bkt").unwrap(), bucket(Service::S3, "bkt", ""));
        assert_eq!(Remote::parse("http://h/p/x.h5ad?sig=1").unwrap().leaf(), "x.h5ad");
        assert_eq!(Remote::parse("gs://b/k.h5ad"), Some(bucket(Service::Gcs, "b", "k.h5ad")));
        assert_eq!(Remote::parse("az://c/d/"), Some(bucket(Service::Azure, "c", "d/")));
        assert_eq!(Remote::parse("ftp://h/x"), None);
    }
}
