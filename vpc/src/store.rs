//! Object stores and the SQS client, built from the settings.
//!
//! Files come through `object_store` (S3 or a compatible service, or a local directory whose
//! subdirectories stand for buckets), one client per bucket, built on first use and kept. The
//! queue is read with the official AWS SDK (`aws-sdk-sqs`), configured by `aws-config`: region
//! and endpoint from the settings, credentials from the default chain (environment variables
//! first, which is how tests reach a local moto server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

use crate::config::{QueueSettings, StoreSettings};

/// A store could not be built for a bucket.
#[derive(Debug, thiserror::Error)]
#[error("object store for bucket {bucket:?}: {source}")]
pub struct StoreError {
    bucket: String,
    #[source]
    source: object_store::Error,
}

/// The object stores of the settings, one per bucket.
pub struct Stores {
    settings: StoreSettings,
    cache: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Stores {
    /// Stores for these settings (nothing is connected yet).
    pub fn new(settings: StoreSettings) -> Stores {
        Stores { settings, cache: Mutex::new(HashMap::new()) }
    }

    /// The store holding `bucket`.
    ///
    /// # Errors
    /// [`StoreError`] when the client cannot be built (a bad endpoint, a bucket name that is not
    /// a directory name).
    pub fn bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = cache.get(bucket) {
            return Ok(store.clone());
        }
        let err = |source| StoreError { bucket: bucket.to_string(), source };
        let store: Arc<dyn ObjectStore> = match &self.settings {
            StoreSettings::S3 { endpoint, region, allow_http } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_region(region);
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
                }
                Arc::new(b.with_allow_http(*allow_http).build().map_err(err)?)
            }
            StoreSettings::Local { root } => {
                if bucket.is_empty() || bucket.contains('/') || bucket == "." || bucket == ".." {
                    return Err(err(object_store::Error::Generic {
                        store: "local",
                        source: format!("{bucket:?} is not a directory name").into(),
                    }));
                }
                Arc::new(LocalFileSystem::new_with_prefix(root.join(bucket)).map_err(err)?)
            }
        };
        cache.insert(bucket.to_string(), store.clone());
        Ok(store)
    }
}

/// An SQS client for the queue settings.
pub async fn sqs_client(queue: &QueueSettings) -> aws_sdk_sqs::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(queue.region.clone()));
    if let Some(endpoint) = &queue.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::new(&loader.load().await)
}
