//! The S3 client: endpoint, region and credentials from the standard AWS environment
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
//! `AWS_SESSION_TOKEN`, web identity, ECS and EC2 instance metadata) and the shared
//! config/credentials files (`AWS_PROFILE`, see [`aws_profile`](super::aws_profile)), or
//! unsigned requests for public buckets.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;

use super::{config_error, Setup};
use crate::storage::range::FetchError;

/// An S3 client for `setup.bucket`.
pub fn store(setup: Setup<'_>) -> Result<Arc<dyn ObjectStore>, FetchError> {
    let Setup { bucket, url, opts, client, retry } = setup;
    let mut builder =
        AmazonS3Builder::from_env().with_bucket_name(bucket).with_client_options(client).with_retry(retry);
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
    let profile = super::aws_profile::load().map_err(|reason| FetchError::Config { url: url.to_string(), reason })?;
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
    Ok(Arc::new(builder.build().map_err(|e| config_error(url, e))?))
}
