//! The utility's client side of the key authority shared by its jobs (billing, analytics):
//! the one error type of those jobs, connecting, and fetching a public evaluation-key object
//! (relinearization or Galois keys) streamed in chunks by `seer.v1.Keys`.

use std::time::Duration;

use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::{GetKeyRequest, KeyKind};
use tonic::transport::Channel;

use crate::store::StoreError;

/// Largest evaluation-key object a job accepts from the key authority (Galois keys for a
/// handful of steps at n = 8192 take a few MB; at n = 32768 tens of MB).
pub const MAX_EVALUATION_KEY_BYTES: u64 = 1 << 30;

/// Why a job that works with the key authority (billing, anomaly, forecast) failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The utility's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Storing released results failed.
    #[error("storing the released results: {0}")]
    Record(#[from] sqlx::Error),
    /// The key authority could not be reached.
    #[error("connecting to the key authority at {url}: {source}")]
    Connect {
        /// Its URL.
        url: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// The TLS configuration for the key authority's `https://` URL is missing or unusable.
    #[error("TLS to the key authority: {0}")]
    Tls(#[from] seer_tls::TlsError),
    /// The evaluation keys could not be fetched or do not fit the computation.
    #[error("fetching the evaluation keys: {0}")]
    Keys(String),
    /// The encrypted computation could not be evaluated (an input unreadable, an engine
    /// error).
    #[error("evaluating the encrypted computation: {0}")]
    Circuit(String),
    /// The key authority refused or failed the whole request.
    #[error("the key authority answered {code:?}: {message}")]
    Release {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The token is not a valid header value.
    #[error("the utility token is not a valid authorization header")]
    Token,
}

/// Connects to the key authority at `url` (10 s connect timeout).
///
/// # Errors
/// [`JobError::Connect`].
pub async fn connect(url: &str) -> Result<Channel, JobError> {
    let err = |source| JobError::Connect {
        url: url.to_owned(),
        source,
    };
    seer_tls::endpoint(url)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(err)
}

/// Fetches the `kind` keys of the key set `id`, which the key authority announced at
/// `expected` bytes, checking every chunk's offset and total.
///
/// # Errors
/// [`JobError::Keys`] for an empty or oversized announcement, a refused request, an
/// inconsistent or short stream.
pub async fn fetch_key_object(
    client: &mut KeysClient<Channel>,
    id: &str,
    kind: KeyKind,
    expected: u64,
) -> Result<Vec<u8>, JobError> {
    let what = match kind {
        KeyKind::Relin => "relinearization keys",
        KeyKind::Galois => "Galois keys",
        _ => "keys",
    };
    if expected == 0 || expected > MAX_EVALUATION_KEY_BYTES {
        return Err(JobError::Keys(format!(
            "the key set {id} announces {expected} bytes of {what}"
        )));
    }
    let status = |doing: &'static str| {
        move |s: tonic::Status| JobError::Keys(format!("{doing} the {what}: {}", s.message()))
    };
    let mut stream = client
        .get_key(GetKeyRequest {
            parameter_set_id: id.to_owned(),
            kind: kind as i32,
        })
        .await
        .map_err(status("requesting"))?
        .into_inner();
    // Bounded by `expected`, itself at most MAX_EVALUATION_KEY_BYTES.
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    while let Some(chunk) = stream.message().await.map_err(status("streaming"))? {
        if chunk.total_bytes != expected
            || chunk.offset != bytes.len() as u64
            || bytes.len() as u64 + chunk.data.len() as u64 > expected
        {
            return Err(JobError::Keys(format!(
                "inconsistent chunk of the {what} of {id} (offset {}, {} bytes, total {})",
                chunk.offset,
                chunk.data.len(),
                chunk.total_bytes
            )));
        }
        bytes.extend_from_slice(&chunk.data);
    }
    if bytes.len() as u64 != expected {
        return Err(JobError::Keys(format!(
            "the {what} of {id} ended after {} of {expected} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}
