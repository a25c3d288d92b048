//! Draining the outbox to the utility server over `seer.v1.Ingest`.
//!
//! A **session** connects, asks `GetCursor` where the server stands, marks every queued batch
//! with a sequence `<= last` as held by the server (stored earlier: its ack was lost, or the
//! meter crashed before processing it), and opens one `Upload` stream. A feeder sends the
//! queued batches after `last` in sequence order, and new ones as the producer commits them,
//! keeping at most `window` batches unacknowledged; each ack is recorded in the outbox
//! ([`StateStore::acknowledge`]). A batch leaves the outbox once its receipt is acknowledged
//! too (see [`crate::receipts`], which runs beside the uploader). The stream is closed when the
//! producer has finished and every batch is sent; the session ends when the last ack has
//! arrived.
//!
//! A dropped connection or a transient status (UNAVAILABLE, INTERNAL, …, and
//! FAILED_PRECONDITION, after which the cursor is re-read) ends the session; the uploader
//! retries with exponential backoff (with jitter) and resumes from the server's cursor. Only
//! consecutive failures without progress count towards the retry limit. Refusals of content
//! (ALREADY_EXISTS: a different batch under a stored sequence; INVALID_ARGUMENT),
//! authentication failures and a cursor that contradicts the outbox
//! ([`Error::CursorMismatch`]) stop the uploader: retrying cannot fix them.
//!
//! Every call carries `authorization: Bearer <token>`.

use std::sync::Arc;
use std::time::Duration;

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::ingest_client::IngestClient;
use seer_proto::v1::{GetCursorRequest, UploadBatch};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Event;
use crate::batch::SealedBatch;
use crate::error::Error;
use crate::grpc::{Auth, BearerToken, connect};
use crate::identity::DeviceIdentity;
use crate::queue::StateStore;
use crate::signing::{BatchSignatures, signatures_for};
use crate::tokens::TokenSource;

/// How the producer stands: what it has committed and whether it is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStatus {
    /// The last sequence committed to the outbox.
    pub built_through: u64,
    /// No more batches will be committed.
    pub finished: bool,
}

/// Exponential backoff between reconnection attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 200 ms, doubling up to 10 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th consecutive failure: `initial · 2^(failures−1)`,
    /// capped at `max`, scaled by a jitter factor in `[0.5, 1)`.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self.initial.saturating_mul(1 << exp).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = 0.5 + f64::from(nanos % 1_000) / 2_000.0;
        base.mul_f64(jitter)
    }
}

/// The uploader's settings.
#[derive(Clone, Debug)]
pub struct UploadConfig {
    /// The utility server, e.g. `http://127.0.0.1:50051`.
    pub url: String,
    /// The household's token, sent on every call (without `tokens`).
    pub token: Option<BearerToken>,
    /// The meter's utility-audience tokens, renewed with its device key (an enrolled meter).
    pub tokens: Option<Arc<TokenSource>>,
    /// The meter's identity: every batch is sent with its signature and certificate (see
    /// [`crate::signing`]); without one (an unenrolled meter) batches go unsigned and a
    /// utility that checks signatures refuses them.
    pub identity: Option<Arc<DeviceIdentity>>,
    /// The meter.
    pub meter_id: String,
    /// Batches sent ahead of their acks (at least 1).
    pub window: usize,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Consecutive failed attempts (without any ack in between) before giving up.
    pub max_attempts: u32,
}

/// What an upload did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Batches acknowledged (duplicates included).
    pub acknowledged: u64,
    /// Acks marked duplicate (the server had the batch already).
    pub duplicates: u64,
    /// Queued batches not sent because the cursor showed them stored (their ack was lost).
    pub skipped_by_cursor: u64,
    /// Sessions that failed and were retried.
    pub reconnects: u32,
}

/// A batch time as sent: RFC 3339 at the batch's UTC offset.
pub fn wire_time(t: chrono::NaiveDateTime, offset: chrono::FixedOffset) -> String {
    t.and_local_timezone(offset)
        .single()
        .map_or_else(|| t.and_utc().to_rfc3339(), |t| t.to_rfc3339())
}

/// The wire form of a queued batch, unsigned (see [`to_signed_wire`]).
pub fn to_wire(meter_id: &str, batch: &SealedBatch) -> UploadBatch {
    let rfc3339 = |t: chrono::NaiveDateTime| wire_time(t, batch.utc_offset);
    UploadBatch {
        meter_id: meter_id.to_owned(),
        sequence: batch.sequence,
        period: batch.period.to_string(),
        start: rfc3339(batch.start),
        end: rfc3339(batch.end),
        readings: batch.readings,
        billing_lane: batch.billing_lane.clone(),
        billing_position: batch.billing_position,
        billing_group: batch.billing_group,
        analytics_lane: batch.analytics_lane.clone(),
        epsilon_spent: batch.epsilon_spent,
        signature: Vec::new(),
        meter_certificate: Vec::new(),
        noise_plan: batch
            .noise
            .as_ref()
            .map(seer_proto::statements::noise_plan_wire),
    }
}

/// The wire form of a queued batch with the meter's signature and certificate.
pub fn to_signed_wire(
    identity: &DeviceIdentity,
    batch: &SealedBatch,
    signatures: &BatchSignatures,
) -> UploadBatch {
    UploadBatch {
        signature: signatures.batch.clone(),
        meter_certificate: identity.certificate().to_bytes(),
        ..to_wire(identity.meter_id(), batch)
    }
}

/// Uploads until the producer has finished and the outbox is empty; see the
/// [module docs](self).
///
/// # Errors
/// A final refusal by the server, a cursor contradicting the outbox, a local state error, or
/// [`Error::RetriesExhausted`].
pub async fn upload(
    store: Arc<StateStore>,
    config: &UploadConfig,
    producer: watch::Receiver<ProducerStatus>,
    observer: &(dyn Fn(&Event) + Send + Sync),
) -> Result<UploadReport, Error> {
    let mut report = UploadReport::default();
    let mut failures = 0_u32;
    loop {
        let acked_before = report.acknowledged;
        match session(&store, config, producer.clone(), &mut report, observer).await {
            Ok(()) => return Ok(report),
            Err(e) if e.is_transient() => {
                if report.acknowledged > acked_before {
                    failures = 0;
                }
                failures += 1;
                if failures >= config.max_attempts.max(1) {
                    return Err(Error::RetriesExhausted {
                        attempts: failures,
                        last: Box::new(e),
                    });
                }
                let delay = config.backoff.delay(failures);
                tracing::warn!(error = %e, attempt = failures, ?delay, "upload interrupted, retrying");
                observer(&Event::Reconnecting {
                    attempt: failures,
                    delay,
                    error: e.to_string(),
                });
                report.reconnects += 1;
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn session(
    store: &Arc<StateStore>,
    config: &UploadConfig,
    producer: watch::Receiver<ProducerStatus>,
    report: &mut UploadReport,
    observer: &(dyn Fn(&Event) + Send + Sync),
) -> Result<(), Error> {
    let token = match &config.tokens {
        Some(tokens) => Some(tokens.token().await?),
        None => config.token.clone(),
    };
    let channel = connect(&config.url).await?;
    let mut client = IngestClient::with_interceptor(channel, Auth(token)).with_seer_limits();
    let last = client
        .get_cursor(GetCursorRequest {
            meter_id: config.meter_id.clone(),
        })
        .await
        .map_err(|s| Error::rpc("Ingest.GetCursor", &s))?
        .into_inner()
        .last;
    let mismatch = |reason: String| Error::CursorMismatch {
        meter: config.meter_id.clone(),
        server_last: last,
        reason,
    };
    let built = store.built_through().await?;
    if last > built {
        return Err(mismatch(format!(
            "this meter has built only {built} batches (was its state directory replaced?)"
        )));
    }
    report.skipped_by_cursor += store.acknowledge(last).await?;
    // Batches up to `last` may still be queued, waiting for their receipts: not for us.
    let queued: Vec<u64> = store
        .queued_sequences()
        .await?
        .into_iter()
        .filter(|&s| s > last)
        .collect();
    let first_needed = last + 1;
    match queued.first() {
        Some(&first) if first > first_needed => {
            return Err(mismatch(format!(
                "batches {first_needed} to {} were acknowledged earlier and are gone from \
                 this meter",
                first - 1
            )));
        }
        None if built > last => {
            return Err(mismatch(format!(
                "batches {first_needed} to {built} were acknowledged earlier and are gone \
                 from this meter"
            )));
        }
        None if producer.borrow().finished => return Ok(()),
        _ => {}
    }

    let window = config.window.max(1);
    let (tx, rx) = mpsc::channel::<UploadBatch>(window);
    let permits = Arc::new(Semaphore::new(window));
    let feeder = tokio::spawn(seer_tls::inherit_client_identity(feed(
        Arc::clone(store),
        config.meter_id.clone(),
        config.identity.clone(),
        first_needed,
        tx,
        Arc::clone(&permits),
        producer,
    )));
    let mut feeder = AbortOnDrop(Some(feeder));
    let result = drive(
        store,
        config,
        &mut client,
        rx,
        first_needed,
        &permits,
        &mut feeder,
        report,
        observer,
    )
    .await;
    // The session never outlives its feeder: a feeder still running (an error, a timeout) is
    // stopped before the session returns, so that nothing holds the store afterwards.
    feeder.stop().await;
    result
}

/// The `Upload` call of a session: sends through the feeder, processes the acks.
#[allow(
    clippy::too_many_arguments,
    reason = "the session's parts, split out so that it can stop the feeder on every exit"
)]
async fn drive(
    store: &Arc<StateStore>,
    config: &UploadConfig,
    client: &mut IngestClient<InterceptedService<Channel, Auth>>,
    rx: mpsc::Receiver<UploadBatch>,
    first_needed: u64,
    permits: &Semaphore,
    feeder: &mut AbortOnDrop,
    report: &mut UploadReport,
    observer: &(dyn Fn(&Event) + Send + Sync),
) -> Result<(), Error> {
    let mut acks = client
        .upload(ReceiverStream::new(rx))
        .await
        .map_err(|s| Error::rpc("Ingest.Upload", &s))?
        .into_inner();
    let mut expected = first_needed;
    loop {
        match acks.message().await {
            Ok(Some(ack)) => {
                if ack.sequence != expected || ack.meter_id != config.meter_id {
                    return Err(Error::Rpc {
                        method: "Ingest.Upload",
                        code: tonic::Code::Internal,
                        message: format!(
                            "acknowledgement of {}/{} where {}/{expected} was expected",
                            ack.meter_id, ack.sequence, config.meter_id
                        ),
                    });
                }
                store.acknowledge(ack.sequence).await?;
                report.acknowledged += 1;
                if ack.duplicate {
                    report.duplicates += 1;
                }
                observer(&Event::Acknowledged {
                    sequence: ack.sequence,
                    duplicate: ack.duplicate,
                });
                permits.add_permits(1);
                expected += 1;
            }
            Ok(None) => {
                // The server closed its side: normal once the feeder has closed ours.
                let fed = match feeder.0.as_mut() {
                    Some(h) => tokio::time::timeout(Duration::from_secs(5), h).await,
                    None => return Ok(()),
                };
                if fed.is_ok() {
                    // Finished: nothing left to stop.
                    feeder.0 = None;
                }
                return match fed {
                    Ok(Ok(Ok(last_sent))) if last_sent + 1 == expected => Ok(()),
                    Ok(Ok(Err(e))) => Err(e),
                    Ok(Err(join)) => Err(join.into()),
                    _ => Err(Error::Rpc {
                        method: "Ingest.Upload",
                        code: tonic::Code::Unavailable,
                        message: "the server ended the stream before acknowledging every batch"
                            .into(),
                    }),
                };
            }
            Err(status) => return Err(Error::rpc("Ingest.Upload", &status)),
        }
    }
}

/// Aborts the feeder when a session ends early.
struct AbortOnDrop(Option<tokio::task::JoinHandle<Result<u64, Error>>>);

impl AbortOnDrop {
    /// Aborts the feeder (if still there) and waits until it is gone.
    async fn stop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Sends queued batches from `next` on, in order, waiting for the producer when the outbox
/// runs dry; returns the last sequence sent once the producer has finished and everything is
/// sent (or the call has ended).
async fn feed(
    store: Arc<StateStore>,
    meter_id: String,
    identity: Option<Arc<DeviceIdentity>>,
    mut next: u64,
    tx: mpsc::Sender<UploadBatch>,
    permits: Arc<Semaphore>,
    mut producer: watch::Receiver<ProducerStatus>,
) -> Result<u64, Error> {
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return Ok(next - 1);
        };
        let status = *producer.borrow_and_update();
        if let Some(batch) = store.batch(next).await? {
            let wire = match &identity {
                Some(identity) => {
                    let stored = store.signatures(next).await?;
                    let signatures = signatures_for(identity, &batch, stored)?;
                    to_signed_wire(identity, &batch, &signatures)
                }
                None => to_wire(&meter_id, &batch),
            };
            if tx.send(wire).await.is_err() {
                // The call ended; the session reports why.
                return Ok(next - 1);
            }
            tracing::debug!(sequence = next, "batch sent");
            permit.forget();
            next += 1;
            continue;
        }
        drop(permit);
        if status.finished || producer.changed().await.is_err() {
            return Ok(next - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d1 = b.delay(1);
        assert!(d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(100));
        let d3 = b.delay(3);
        assert!(d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(400));
        assert!(b.delay(30) < Duration::from_secs(1));
    }
}
