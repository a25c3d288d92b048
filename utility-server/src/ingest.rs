//! `seer.v1.Ingest`: meters stream their encrypted batches; the utility checks and stores each
//! exactly once and acknowledges it, in order.
//!
//! For each [`UploadBatch`] of a stream, in order: the caller must be entitled to upload for
//! the meter ([`MeterAuthorization`]); the fields must be well formed ([`Batch`]); both lanes
//! must parse as ciphertexts of their configured parameter sets ([`LaneValidator`], on the
//! blocking pool); then the store decides ([`Store::insert_batch`]). Stored batches and
//! resends of stored batches are acknowledged; anything else ends the stream with a status
//! naming the meter, the sequence and the problem (batches acknowledged before it stay
//! stored). Every error becomes a [`tonic::Status`] in one place, [`IngestError`]'s
//! conversion; database and internal failures are logged and answered without detail.

use std::pin::Pin;
use std::sync::Arc;

use seer_proto::v1::ingest_server::Ingest;
use seer_proto::v1::{Cursor, GetCursorRequest, UploadAck, UploadBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, AuthzError, IngestPolicy, MeterAction, MeterAuthorization};
use crate::batch::{Batch, BatchError, MeterId};
use crate::lanes::{LaneError, LaneValidator};
use crate::signatures::{MeterSignatures, SignatureError};
use crate::store::{InsertOutcome, Store, StoreError};

/// Acknowledgements buffered per stream before the handler waits for the client to read.
const ACK_BUFFER: usize = 32;

/// Everything an ingest call can fail with; converted to a [`Status`] by `From`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Not authenticated, or not entitled to act for the meter.
    #[error(transparent)]
    Authorization(#[from] AuthzError),
    /// The meter id of a request is malformed.
    #[error("{0}")]
    InvalidMeterId(BatchError),
    /// A batch's fields are malformed.
    #[error("meter {meter_id} batch {sequence}: {source}")]
    InvalidBatch {
        /// The meter as given (printable prefix).
        meter_id: String,
        /// The sequence as given.
        sequence: u64,
        /// What is wrong.
        source: BatchError,
    },
    /// A batch's lane is not an acceptable ciphertext.
    #[error("meter {meter_id} batch {sequence}: {source}")]
    InvalidLane {
        /// The meter.
        meter_id: MeterId,
        /// The sequence.
        sequence: u64,
        /// What is wrong.
        source: LaneError,
    },
    /// The meter's certificate or signature does not verify over the batch as received
    /// (nothing is stored).
    #[error("meter {meter_id} batch {sequence}: {source}")]
    Signature {
        /// The meter.
        meter_id: MeterId,
        /// The sequence.
        sequence: u64,
        /// Why.
        source: SignatureError,
    },
    /// The (meter, sequence) is stored with different content.
    #[error(
        "meter {meter_id} batch {sequence} was already stored with different content \
         (the meter has stored up to sequence {last})"
    )]
    Conflict {
        /// The meter.
        meter_id: MeterId,
        /// The sequence.
        sequence: u64,
        /// The meter's cursor.
        last: u64,
    },
    /// The sequence skips ahead.
    #[error("meter {meter_id} batch {sequence} skips ahead: the next sequence must be {expected}")]
    Gap {
        /// The meter.
        meter_id: MeterId,
        /// The sequence given.
        sequence: u64,
        /// The sequence the server stores next.
        expected: u64,
    },
    /// The database failed (logged; the client learns only that the store is unavailable).
    #[error("meter {meter_id}{}: the store is unavailable", batch_suffix(*.sequence))]
    Store {
        /// The meter.
        meter_id: MeterId,
        /// The sequence (`None` for a cursor read).
        sequence: Option<u64>,
        /// Why (logged, not sent).
        source: StoreError,
    },
    /// A validation task panicked or was cancelled (logged, not sent).
    #[error("meter {meter_id} batch {sequence}: internal error")]
    Internal {
        /// The meter.
        meter_id: MeterId,
        /// The sequence.
        sequence: u64,
        /// Why (logged, not sent).
        source: tokio::task::JoinError,
    },
}

impl From<IngestError> for Status {
    fn from(error: IngestError) -> Self {
        match &error {
            IngestError::Authorization(AuthzError::Unauthenticated) => {
                Status::unauthenticated(error.to_string())
            }
            IngestError::Authorization(_) => Status::permission_denied(error.to_string()),
            IngestError::InvalidMeterId(_)
            | IngestError::InvalidBatch { .. }
            | IngestError::InvalidLane { .. } => Status::invalid_argument(error.to_string()),
            IngestError::Conflict { .. } => Status::already_exists(error.to_string()),
            IngestError::Signature { .. } => Status::permission_denied(error.to_string()),
            IngestError::Gap { .. } => Status::failed_precondition(error.to_string()),
            IngestError::Store {
                meter_id,
                sequence,
                source,
            } => {
                tracing::error!(
                    %meter_id,
                    sequence = sequence.unwrap_or(0),
                    error = %source,
                    cause = ?std::error::Error::source(source),
                    "store failed"
                );
                Status::unavailable(error.to_string())
            }
            IngestError::Internal {
                meter_id,
                sequence,
                source,
            } => {
                tracing::error!(%meter_id, sequence, error = %source, "ingest task failed");
                Status::internal(error.to_string())
            }
        }
    }
}

/// The `seer.v1.Ingest` service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestService {
    store: Store,
    lanes: LaneValidator,
    policy: Arc<dyn MeterAuthorization>,
    signatures: Option<Arc<MeterSignatures>>,
    /// The dashboard's count of refused batches, if it has one.
    refusals: Option<crate::dashboard::IngestRefusals>,
}

impl IngestService {
    /// The service over `store`, checking lanes with `lanes`, under the [`IngestPolicy`].
    #[must_use]
    pub fn new(store: Store, lanes: LaneValidator) -> Self {
        Self::with_policy(store, lanes, Arc::new(IngestPolicy))
    }

    /// The service under another authorization policy.
    #[must_use]
    pub fn with_policy(
        store: Store,
        lanes: LaneValidator,
        policy: Arc<dyn MeterAuthorization>,
    ) -> Self {
        Self {
            store,
            lanes,
            policy,
            signatures: None,
            refusals: None,
        }
    }

    /// Counts every refused batch in `refusals` (the dashboard's ingest status).
    #[must_use]
    pub fn with_refusal_counter(mut self, refusals: crate::dashboard::IngestRefusals) -> Self {
        self.refusals = Some(refusals);
        self
    }

    fn count_refusal(&self, status: &Status) {
        if let Some(refusals) = &self.refusals {
            refusals.record(status.code());
        }
    }

    /// Requires every batch to carry the meter's certificate and its signature over the
    /// batch as received, checked with `signatures` (see [`crate::signatures`]).
    #[must_use]
    pub fn with_signatures(mut self, signatures: Option<Arc<MeterSignatures>>) -> Self {
        self.signatures = signatures;
        self
    }

    /// Checks, stores and acknowledges one batch (see the
    /// [module documentation](self)).
    ///
    /// # Errors
    /// Why the batch is refused.
    #[tracing::instrument(
        name = "ingest.batch",
        skip_all,
        fields(meter_id = %wire.meter_id, sequence = wire.sequence)
    )]
    pub async fn ingest(
        &self,
        principal: Option<&auth::Principal>,
        wire: UploadBatch,
    ) -> Result<UploadAck, IngestError> {
        let sequence = wire.sequence;
        let meter_id = MeterId::try_new(wire.meter_id.clone()).map_err(|source| {
            IngestError::InvalidBatch {
                meter_id: printable(&wire.meter_id),
                sequence,
                source: source.into(),
            }
        })?;
        // Authorize before reading the rest: a stranger learns nothing about the batch.
        self.policy
            .authorize(principal, &meter_id, MeterAction::Upload)?;
        // The meter's signature over the batch as received: its integrity and origin (an
        // altered lane is refused here, and nothing is stored).
        if let Some(signatures) = &self.signatures {
            signatures
                .check_batch(&wire)
                .map_err(|source| IngestError::Signature {
                    meter_id: meter_id.clone(),
                    sequence,
                    source,
                })?;
        }
        let batch =
            Batch::try_from_wire(wire, self.lanes.billing_capacity()).map_err(|source| {
                IngestError::InvalidBatch {
                    meter_id: meter_id.to_string(),
                    sequence,
                    source,
                }
            })?;
        let (batch, verdict) =
            self.lanes
                .check_blocking(batch)
                .await
                .map_err(|source| IngestError::Internal {
                    meter_id: meter_id.clone(),
                    sequence,
                    source,
                })?;
        verdict.map_err(|source| IngestError::InvalidLane {
            meter_id: meter_id.clone(),
            sequence,
            source,
        })?;
        let outcome =
            self.store
                .insert_batch(&batch)
                .await
                .map_err(|source| IngestError::Store {
                    meter_id: meter_id.clone(),
                    sequence: Some(sequence),
                    source,
                })?;
        let ack = |duplicate, last| UploadAck {
            meter_id: meter_id.to_string(),
            sequence,
            duplicate,
            last,
        };
        match outcome {
            InsertOutcome::Inserted => {
                tracing::debug!("stored");
                Ok(ack(false, sequence))
            }
            InsertOutcome::Duplicate { last } => {
                tracing::info!(last, "resend of a stored batch acknowledged");
                Ok(ack(true, last))
            }
            InsertOutcome::Conflict { last } => Err(IngestError::Conflict {
                meter_id,
                sequence,
                last,
            }),
            InsertOutcome::Gap { expected } => Err(IngestError::Gap {
                meter_id,
                sequence,
                expected,
            }),
        }
    }

    /// The cursor of `meter_id` for `principal`.
    ///
    /// # Errors
    /// A malformed meter id, a caller not entitled to read it, or a database failure.
    pub async fn cursor(
        &self,
        principal: Option<&auth::Principal>,
        meter_id: &str,
    ) -> Result<Cursor, IngestError> {
        let meter_id =
            MeterId::try_new(meter_id).map_err(|e| IngestError::InvalidMeterId(e.into()))?;
        self.policy
            .authorize(principal, &meter_id, MeterAction::ReadCursor)?;
        let last = self
            .store
            .last_sequence(&meter_id)
            .await
            .map_err(|source| IngestError::Store {
                meter_id: meter_id.clone(),
                sequence: None,
                source,
            })?;
        Ok(Cursor {
            meter_id: meter_id.to_string(),
            last,
        })
    }
}

fn batch_suffix(sequence: Option<u64>) -> String {
    sequence.map_or_else(String::new, |sequence| format!(" batch {sequence}"))
}

/// A printable prefix of an unchecked meter id, for messages about it.
fn printable(meter_id: &str) -> String {
    format!("{:?}", meter_id.chars().take(64).collect::<String>())
}

/// The response stream of `Upload`.
pub type AckStream = Pin<Box<dyn Stream<Item = Result<UploadAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type UploadStream = AckStream;

    async fn upload(
        &self,
        request: Request<Streaming<UploadBatch>>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let principal = auth::principal(request.extensions()).cloned();
        if principal.is_none() {
            let status = AuthzError::Unauthenticated.into_status();
            self.count_refusal(&status);
            return Err(status);
        }
        let mut batches = request.into_inner();
        let service = self.clone();
        let (acks, receiver) = mpsc::channel(ACK_BUFFER);
        tokio::spawn(async move {
            while let Some(next) = batches.next().await {
                let answer = match next {
                    Ok(wire) => service
                        .ingest(principal.as_ref(), wire)
                        .await
                        .map_err(Status::from)
                        .inspect_err(|status| service.count_refusal(status)),
                    // The client went away, or the message was refused by the decoder
                    // (oversized, malformed protobuf): pass the status on and stop.
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if acks.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_cursor(
        &self,
        request: Request<GetCursorRequest>,
    ) -> Result<Response<Cursor>, Status> {
        let principal = auth::principal(request.extensions()).cloned();
        let cursor = self
            .cursor(principal.as_ref(), &request.get_ref().meter_id)
            .await?;
        Ok(Response::new(cursor))
    }
}

impl AuthzError {
    fn into_status(self) -> Status {
        IngestError::from(self).into()
    }
}
