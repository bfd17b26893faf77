//! SDK clients: one per distinct (region, endpoint, profile), built once from the AWS
//! configuration chain and reused so their connections are too.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_kms::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_kms::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use keyward_core::Error;
use keyward_core::uri::{AwsKmsUri, KmsKeyRef};

use crate::KmsSettings;

/// The longest a TCP/TLS connect may take before the attempt counts as failed.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What selects an SDK client: the overrides that end up in its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    region: Option<String>,
    endpoint: Option<String>,
    profile: Option<String>,
}

impl ClientKey {
    /// The overrides for `uri`: the URI's own, then the region inside a key ARN, then
    /// the backend settings; what is still `None` comes from the AWS chain.
    pub(crate) fn for_uri(uri: &AwsKmsUri, settings: &KmsSettings) -> Self {
        let arn_region = match &uri.key {
            KmsKeyRef::Arn(arn) => arn
                .split(':')
                .nth(3)
                .filter(|r| !r.is_empty())
                .map(str::to_string),
            _ => None,
        };
        ClientKey {
            region: uri
                .region
                .clone()
                .or(arn_region)
                .or_else(|| settings.region.clone()),
            endpoint: uri.endpoint.clone().or_else(|| settings.endpoint.clone()),
            profile: uri.profile.clone().or_else(|| settings.profile.clone()),
        }
    }
}

/// An SDK client and the endpoint it talks to, for error messages.
pub(crate) struct KmsClient {
    /// The SDK client (cheap to clone; clones share the connection pool).
    pub(crate) sdk: aws_sdk_kms::Client,
    /// The endpoint as configured, before any request went out.
    configured: String,
    /// The endpoint the SDK actually sent a request to (scheme and authority).
    seen: Arc<OnceLock<String>>,
}

impl KmsClient {
    /// The endpoint this client sends to, as `scheme://host[:port]`.
    pub(crate) fn endpoint(&self) -> &str {
        self.seen.get().unwrap_or(&self.configured)
    }
}

#[cfg(test)]
impl KmsClient {
    /// A client that is never sent anything, for tests of the retry loop.
    pub(crate) fn offline(endpoint: &str) -> Self {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        KmsClient {
            sdk: aws_sdk_kms::Client::from_conf(conf),
            configured: endpoint.to_string(),
            seen: Arc::new(OnceLock::new()),
        }
    }
}

impl std::fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsClient")
            .field("endpoint", &self.endpoint())
            .finish_non_exhaustive()
    }
}

/// The clients built so far, by their overrides.
#[derive(Default)]
pub(crate) struct ClientPool {
    clients: tokio::sync::Mutex<HashMap<ClientKey, Arc<KmsClient>>>,
}

impl ClientPool {
    /// The client for `key`, building it on first use.
    pub(crate) async fn get(
        &self,
        key: &ClientKey,
        settings: &KmsSettings,
    ) -> Result<Arc<KmsClient>, Error> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(key) {
            return Ok(Arc::clone(c));
        }
        // Loading the chain may query instance metadata for a region: bound it too.
        let built = tokio::time::timeout(settings.deadline, build(key, settings)).await;
        let client = Arc::new(built.map_err(|_| {
            Error::unavailable(
                format!(
                    "loading the AWS configuration (region, profile, endpoint) took longer than {:?}",
                    settings.deadline
                ),
                None,
            )
        })??);
        clients.insert(key.clone(), Arc::clone(&client));
        Ok(client)
    }
}

async fn build(key: &ClientKey, settings: &KmsSettings) -> Result<KmsClient, Error> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.deadline.min(MAX_CONNECT_TIMEOUT))
        .operation_attempt_timeout(settings.deadline)
        .operation_timeout(settings.deadline)
        .build();
    // keyward retries itself (see retry.rs), bounded by the deadline; the SDK must not.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(p) = &key.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &key.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &key.endpoint {
        loader = loader.endpoint_url(e);
    }
    let sdk_config = loader.load().await;
    let Some(region) = sdk_config.region().map(|r| r.to_string()) else {
        return Err(Error::backend(
            "no AWS region for KMS: set AWS_REGION, a region in the AWS profile, or ?region= on the key URI",
        ));
    };
    let configured = key
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_KMS").ok())
        .or_else(|| sdk_config.endpoint_url().map(str::to_string))
        .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
    let seen = Arc::new(OnceLock::new());
    let conf = aws_sdk_kms::config::Builder::from(&sdk_config)
        .interceptor(EndpointRecorder(Arc::clone(&seen)))
        .build();
    tracing::debug!(endpoint = %configured, %region, "built AWS KMS client");
    Ok(KmsClient {
        sdk: aws_sdk_kms::Client::from_conf(conf),
        configured: origin(&configured).to_string(),
        seen,
    })
}

/// Notes the endpoint of the first request the SDK transmits, so that errors name
/// the endpoint really used (the chain has several places that can set it).
#[derive(Debug)]
struct EndpointRecorder(Arc<OnceLock<String>>);

impl Intercept for EndpointRecorder {
    fn name(&self) -> &'static str {
        "keyward-endpoint-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.0.get().is_none() {
            let _ = self.0.set(origin(context.request().uri()).to_string());
        }
        Ok(())
    }
}

/// `scheme://authority` of a URL (its path and query dropped).
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find(['/', '?']) {
        Some(i) => &url[..start + i],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_drops_path_and_query() {
        assert_eq!(origin("http://127.0.0.1:5000/"), "http://127.0.0.1:5000");
        assert_eq!(
            origin("https://kms.eu-west-1.amazonaws.com/x?y"),
            "https://kms.eu-west-1.amazonaws.com"
        );
        assert_eq!(origin("http://h:1"), "http://h:1");
    }

    #[test]
    fn uri_overrides_win_then_arn_region_then_settings() {
        let settings = KmsSettings {
            region: Some("eu-west-1".into()),
            endpoint: Some("http://a".into()),
            profile: Some("p".into()),
            ..KmsSettings::default()
        };
        let parse = |s: &str| match keyward_core::KeyUri::parse(s).unwrap() {
            keyward_core::KeyUri::AwsKms(u) => u,
            _ => unreachable!(),
        };
        let k = ClientKey::for_uri(&parse("awskms:alias/x"), &settings);
        assert_eq!(k.region.as_deref(), Some("eu-west-1"));
        assert_eq!(k.endpoint.as_deref(), Some("http://a"));
        let k = ClientKey::for_uri(
            &parse("awskms:arn:aws:kms:us-west-2:111122223333:key/abcd"),
            &settings,
        );
        assert_eq!(k.region.as_deref(), Some("us-west-2"));
        let k = ClientKey::for_uri(
            &parse("awskms:alias/x?region=ap-south-1&endpoint=http%3A%2F%2Fb&profile=q"),
            &settings,
        );
        assert_eq!(k.region.as_deref(), Some("ap-south-1"));
        assert_eq!(k.endpoint.as_deref(), Some("http://b"));
        assert_eq!(k.profile.as_deref(), Some("q"));
    }
}
