//! The Google Cloud Storage client: credentials from the standard Google environment
//! (`GOOGLE_SERVICE_ACCOUNT` or `GOOGLE_SERVICE_ACCOUNT_KEY`, else application default
//! credentials — `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's file — else the GCE metadata
//! server), `GOOGLE_BASE_URL` for another endpoint, or unsigned requests for public buckets.

use std::sync::Arc;

use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::ObjectStore;

use super::{config_error, Setup};
use crate::storage::range::FetchError;

/// A GCS client for `setup.bucket`.
pub fn store(setup: Setup<'_>) -> Result<Arc<dyn ObjectStore>, FetchError> {
    let Setup { bucket, url, opts, client, retry } = setup;
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .with_client_options(client)
        .with_retry(retry);
    if opts.no_sign {
        builder = builder.with_skip_signature(true);
    }
    Ok(Arc::new(builder.build().map_err(|e| config_error(url, e))?))
}
