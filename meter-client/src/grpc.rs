//! Connections to the SEER servers: channels, the bearer token on every call, and the
//! key authority's public key.

use std::fmt;
use std::time::Duration;

use seer_ckks::{CkksContext, PublicKey};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::{GetKeyRequest, KeyKind, ListKeySetsRequest};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Channel;

use crate::error::Error;
use crate::queue::{PinOutcome, PinnedKey, StateStore};

/// The largest public key object accepted from the key authority (a fresh N = 32768 public
/// key is about 6 MB; this bounds what a hostile server can make the meter buffer).
pub const MAX_PUBLIC_KEY_BYTES: u64 = 64 * 1024 * 1024;

/// A household's bearer token (a JWT issued by the key authority). The meter only forwards
/// it; `Debug` does not print it.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// The `authorization` header value `Bearer <token>`.
    ///
    /// # Errors
    /// [`Error::Token`] when the token is empty or not a valid header value.
    pub fn try_new(token: &str) -> Result<Self, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Token {
                reason: "the token is empty".into(),
            });
        }
        let mut value: MetadataValue<Ascii> =
            format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Token {
                    reason: "the token holds characters not allowed in a header".into(),
                })?;
        value.set_sensitive(true);
        Ok(Self(value))
    }

    /// Reads the token from environment variable `var`.
    ///
    /// # Errors
    /// [`Error::Token`] when the variable is unset, not Unicode or not a valid token.
    pub fn from_env(var: &str) -> Result<Self, Error> {
        let token = std::env::var(var).map_err(|e| Error::Token {
            reason: format!("environment variable {var}: {e}"),
        })?;
        Self::try_new(&token)
    }
}

impl BearerToken {
    /// Puts `authorization: Bearer <token>` on `request`.
    pub fn apply<T>(&self, request: &mut tonic::Request<T>) {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([REDACTED])")
    }
}

/// Adds `authorization: Bearer <token>` (when there is a token) to every call.
#[derive(Clone, Debug)]
pub struct Auth(pub Option<BearerToken>);

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.0.clone());
        }
        Ok(request)
    }
}

/// Connects to `url`: `https://host:port` with mutual TLS (the meter's certificate and the
/// deployment CA from `SEER_TLS_CA_FILE`, `SEER_TLS_CERT_FILE`, `SEER_TLS_KEY_FILE`; see
/// [`seer_tls::config`]), or plaintext `http://host:port`, which servers configured with TLS
/// refuse.
///
/// # Errors
/// [`Error::InvalidSetting`] for a malformed URL or a missing or unusable TLS configuration;
/// [`Error::Connect`] when the server cannot be reached (or refuses the handshake).
pub async fn connect(url: &str) -> Result<Channel, Error> {
    let endpoint = seer_tls::endpoint(url)
        .map_err(|e| Error::InvalidSetting {
            setting: "server url and TLS",
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    endpoint.connect().await.map_err(|source| Error::Connect {
        url: url.to_owned(),
        source,
    })
}

/// The public key object of `parameter_set_id` as served by the key authority at `url`:
/// checked against the key authority's own listing (its size and BLAKE3), reassembled from
/// its chunks (offsets contiguous, total consistent, bounded by [`MAX_PUBLIC_KEY_BYTES`]).
///
/// # Errors
/// Connection and call failures; [`Error::KeyAuthority`] for a missing key set or an
/// inconsistent answer.
pub async fn fetch_public_key(
    url: &str,
    token: Option<BearerToken>,
    parameter_set_id: &str,
) -> Result<Vec<u8>, Error> {
    let channel = connect(url).await?;
    let mut client = KeysClient::with_interceptor(channel, Auth(token)).with_seer_limits();
    let sets = client
        .list_key_sets(ListKeySetsRequest {})
        .await
        .map_err(|s| Error::rpc("Keys.ListKeySets", &s))?
        .into_inner()
        .key_sets;
    let listed = sets
        .iter()
        .find(|s| s.parameter_set_id == parameter_set_id)
        .ok_or_else(|| Error::KeyAuthority {
            reason: format!(
                "no key set for parameter set {parameter_set_id} (it has: {})",
                sets.iter()
                    .map(|s| s.parameter_set_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?
        .clone();
    let mut stream = client
        .get_key(GetKeyRequest {
            parameter_set_id: parameter_set_id.to_owned(),
            kind: KeyKind::Public.into(),
        })
        .await
        .map_err(|s| Error::rpc("Keys.GetKey", &s))?
        .into_inner();
    let bad = |reason: String| Error::KeyAuthority { reason };
    let mut bytes: Vec<u8> = Vec::new();
    let mut total: Option<u64> = None;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| Error::rpc("Keys.GetKey", &s))?
    {
        if chunk.total_bytes > MAX_PUBLIC_KEY_BYTES {
            return Err(bad(format!(
                "public key of {} bytes exceeds the {MAX_PUBLIC_KEY_BYTES}-byte limit",
                chunk.total_bytes
            )));
        }
        match total {
            None => {
                total = Some(chunk.total_bytes);
                bytes.reserve(usize::try_from(chunk.total_bytes).unwrap_or(0));
            }
            Some(t) if t != chunk.total_bytes => {
                return Err(bad(format!(
                    "chunks disagree on the key's size: {t} and {}",
                    chunk.total_bytes
                )));
            }
            Some(_) => {}
        }
        if chunk.offset != bytes.len() as u64 {
            return Err(bad(format!(
                "chunk at offset {} where {} was expected",
                chunk.offset,
                bytes.len()
            )));
        }
        bytes.extend_from_slice(&chunk.data);
        if bytes.len() as u64 > chunk.total_bytes {
            return Err(bad("chunks run past the key's size".into()));
        }
    }
    let total = total.unwrap_or(0);
    if bytes.is_empty() || bytes.len() as u64 != total {
        return Err(bad(format!(
            "received {} of {total} bytes of the public key",
            bytes.len()
        )));
    }
    let digest = blake3::hash(&bytes).to_hex().to_string();
    if listed.public_key_bytes != total || listed.public_key_blake3 != digest {
        return Err(bad(format!(
            "the key served (blake3 {digest}, {total} bytes) differs from the key listed \
             (blake3 {}, {} bytes)",
            listed.public_key_blake3, listed.public_key_bytes
        )));
    }
    Ok(bytes)
}

/// Checks the key object `bytes` for `ctx`'s parameter set against the configured
/// fingerprints `pins` ([`crate::pins`]), records it in `store` (or checks it against the key
/// recorded there), then loads it.
///
/// # Errors
/// [`Error::PublicKeyNotPinned`] or [`Error::PublicKeyPinMismatch`] when the configured pins
/// do not accept it; [`Error::PublicKeyChanged`] when it differs from the key recorded in the
/// state; [`Error::Ckks`] when it is not a valid public key for `ctx` (then nothing is
/// recorded).
pub async fn pin_and_load(
    store: &StateStore,
    ctx: &CkksContext,
    bytes: &[u8],
    pins: &[crate::pins::KeyPin],
) -> Result<(PublicKey, PinOutcome), Error> {
    crate::pins::check(pins, ctx.parameter_set_id(), bytes)?;
    let key = PinnedKey {
        parameter_set_id: ctx.parameter_set_id().to_owned(),
        public_key_blake3: blake3::hash(bytes).to_hex().to_string(),
        public_key_bytes: bytes.len() as u64,
    };
    // Validate before pinning: a malformed object must not become the pinned key.
    let public_key = PublicKey::from_bytes(ctx, bytes)?;
    let outcome = store.pin_public_key(&key).await?;
    Ok((public_key, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated_and_redacted() {
        let token = BearerToken::try_new("abc.def.ghi").unwrap();
        assert_eq!(format!("{token:?}"), "BearerToken([REDACTED])");
        assert_eq!(token.0.to_str().unwrap(), "Bearer abc.def.ghi");
        assert!(BearerToken::try_new("  ").is_err());
        assert!(BearerToken::try_new("a\nb").is_err());
    }

    #[test]
    fn interceptor_adds_the_header() {
        let mut auth = Auth(Some(BearerToken::try_new("t").unwrap()));
        let request = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer t"
        );
        let mut none = Auth(None);
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }
}
