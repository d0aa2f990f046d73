//! The Azure Blob Storage client: account and credentials from the standard Azure environment
//! (`AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, a
//! service principal (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), workload
//! identity or managed identity), `AZURE_STORAGE_ENDPOINT` for another endpoint,
//! `AZURE_STORAGE_USE_EMULATOR=true` for Azurite, or unsigned requests for public containers.

use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::ObjectStore;

use super::{config_error, Setup};
use crate::storage::range::FetchError;

/// An Azure Blob client for container `setup.bucket`.
pub fn store(setup: Setup<'_>) -> Result<Arc<dyn ObjectStore>, FetchError> {
    let Setup { bucket, url, opts, client, retry } = setup;
    let mut builder =
        MicrosoftAzureBuilder::from_env().with_container_name(bucket).with_client_options(client).with_retry(retry);
    if opts.no_sign {
        builder = builder.with_skip_signature(true);
    }
    builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>).map_err(|e| match e {
        object_store::Error::Generic { .. } if e.to_string().contains("Account must be specified") => FetchError::Config {
            url: url.to_string(),
            reason: "no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME (AZURE_STORAGE_USE_EMULATOR=true for Azurite)".into(),
        },
        e => config_error(url, e),
    })
}
