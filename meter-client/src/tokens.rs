//! The meter's household tokens, renewed with its device key.
//!
//! A meter holds no long-lived bearer credential. For each service it talks to it asks the
//! key authority for a short-lived household token naming that service alone
//! (`seer.v1.Enrolment.RenewToken`, authenticated by the device key's signature over a dated
//! [`TokenRenewalStatement`]): one for the utility server (`seer-utility-server`) and one for
//! the key authority (`seer-key-authority`). The utility thus only ever receives tokens that
//! the key authority refuses, and every token dies within the hour. A [`TokenSource`] caches
//! its token and renews it [`RENEW_BEFORE`] before it expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seer_auth::device::TokenRenewalStatement;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::RenewTokenRequest;
use seer_proto::v1::enrolment_client::EnrolmentClient;

use crate::error::Error;
use crate::grpc::{BearerToken, connect};
use crate::identity::DeviceIdentity;

/// How long before its expiry a cached token is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(10 * 60);

/// The deadline of one `Enrolment.RenewToken` call.
pub const RENEW_TIMEOUT: Duration = Duration::from_secs(30);

/// Household tokens for one audience, renewed with the meter's device key.
pub struct TokenSource {
    key_authority_url: String,
    identity: Arc<DeviceIdentity>,
    audience: String,
    cached: tokio::sync::Mutex<Option<(BearerToken, i64)>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("key_authority_url", &self.key_authority_url)
            .field("meter_id", &self.identity.meter_id())
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl TokenSource {
    /// Tokens for `audience` (`seer-utility-server` or `seer-key-authority`) from the key
    /// authority at `key_authority_url`.
    #[must_use]
    pub fn new(key_authority_url: &str, identity: Arc<DeviceIdentity>, audience: &str) -> Self {
        Self {
            key_authority_url: key_authority_url.to_owned(),
            identity,
            audience: audience.to_owned(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The audience.
    #[must_use]
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// A token valid for at least [`RENEW_BEFORE`] more (renewed first when needed).
    ///
    /// # Errors
    /// The key authority cannot be reached or refuses the renewal (a revoked or unenrolled
    /// meter: PERMISSION_DENIED), or returns a token that is not a header value.
    pub async fn token(&self) -> Result<BearerToken, Error> {
        let mut cached = self.cached.lock().await;
        let now = unix_now();
        let margin = i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(i64::MAX);
        if let Some((token, expires_at)) = cached.as_ref()
            && expires_at.saturating_sub(now) > margin
        {
            return Ok(token.clone());
        }
        let statement = TokenRenewalStatement {
            meter_id: self.identity.meter_id().to_owned(),
            issued_at: now,
            audience: self.audience.clone(),
        };
        let channel = connect(&self.key_authority_url).await?;
        let mut client = EnrolmentClient::new(channel).with_seer_limits();
        let mut request = tonic::Request::new(RenewTokenRequest {
            meter_id: statement.meter_id.clone(),
            issued_at: now,
            audience: self.audience.clone(),
            signature: self.identity.sign(&statement),
        });
        request.set_timeout(RENEW_TIMEOUT);
        let response = client
            .renew_token(request)
            .await
            .map_err(|status| Error::rpc("Enrolment.RenewToken", &status))?
            .into_inner();
        let token = BearerToken::try_new(&response.token)?;
        tracing::debug!(audience = %self.audience, expires_at = response.expires_at, "renewed the household token");
        *cached = Some((token.clone(), response.expires_at));
        Ok(token)
    }
}
