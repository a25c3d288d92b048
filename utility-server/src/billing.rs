//! The billing job: at the close of a month, ask the key authority to release each home's
//! bill, and store what it releases.
//!
//! Meters send period-to-date billing lanes, so a home's closing batch of the month carries
//! its whole month ([`Store::closing_batches`]). The job gathers the closing lanes of one
//! packing group and sends them to the key authority's `Release.ReleaseBills` with the
//! utility's token. The key authority checks every lane against the receipt its meter
//! recorded, evaluates the packed billing circuit (`seer_core::circuits::billing`) on the
//! accepted lanes itself, and releases each home's bill rounded to the paisa — the utility
//! never decrypts anything, and it cannot obtain a decryption of anything but a bill computed
//! from lanes the meters vouched for. Released bills are stored ([`Store::record_bill`]);
//! refusals are reported with the key authority's reason.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::release_client::ReleaseClient;
use seer_proto::v1::{BillInput, ReleaseBillsRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use crate::batch::{MeterId, Period};
use crate::store::{Store, StoreError, StoredBill};

/// Why a billing run failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key authority could not be reached.
    #[error("connecting to the key authority at {url}: {source}")]
    Connect {
        /// Its URL.
        url: String,
        /// The cause.
        source: tonic::transport::Error,
    },
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

/// One refused home.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The meter.
    pub meter_id: String,
    /// The key authority's reason, as written to its audit log.
    pub reason: String,
}

/// What one billing run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BillingReport {
    /// The period billed.
    #[serde(serialize_with = "serialize_display")]
    pub period: Period,
    /// The packing group billed.
    pub group: u32,
    /// Homes of the group whose month is closed (closing lanes sent).
    pub closing_homes: usize,
    /// Bills released and stored.
    pub released: Vec<StoredBill>,
    /// Homes refused.
    pub refused: Vec<Refusal>,
    /// Wall-clock time of the release call (circuit at the key authority included).
    #[serde(serialize_with = "serialize_millis")]
    pub release_time: Duration,
}

fn serialize_display<S: serde::Serializer>(v: &Period, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// Bills one packing group for one closed month (see the module docs).
///
/// # Errors
/// When the store fails, the key authority is unreachable, or it refuses the request as a
/// whole (bad token, wrong role, malformed request, audit log unavailable).
#[tracing::instrument(skip(store, token), fields(period = %period, group))]
pub async fn bill_group(
    store: &Store,
    key_authority: &str,
    token: &str,
    period: Period,
    group: u32,
) -> Result<BillingReport, BillingError> {
    let closing = store.closing_batches(period, group).await?;
    let mut report = BillingReport {
        period,
        group,
        closing_homes: closing.len(),
        released: Vec::new(),
        refused: Vec::new(),
        release_time: Duration::ZERO,
    };
    if closing.is_empty() {
        tracing::info!("no closed month in this group: nothing to bill");
        return Ok(report);
    }
    let channel = Endpoint::from_shared(key_authority.to_owned())
        .map_err(|source| BillingError::Connect {
            url: key_authority.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|source| BillingError::Connect {
            url: key_authority.to_owned(),
            source,
        })?;
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| BillingError::Token)?;
    let mut client =
        ReleaseClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        })
        .with_seer_limits();
    let sequences: Vec<(String, u64)> = closing
        .iter()
        .map(|b| (b.meter_id.as_str().to_owned(), b.sequence))
        .collect();
    let request = ReleaseBillsRequest {
        period: period.to_string(),
        billing_group: group,
        inputs: closing
            .into_iter()
            .map(|b| BillInput {
                meter_id: b.meter_id.as_str().to_owned(),
                sequence: b.sequence,
                billing_lane: b.billing_lane,
            })
            .collect(),
    };
    let started = Instant::now();
    let response = client
        .release_bills(request)
        .await
        .map_err(|status| BillingError::Release {
            code: status.code(),
            message: status.message().to_owned(),
        })?
        .into_inner();
    report.release_time = started.elapsed();
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    for outcome in response.bills {
        if !outcome.granted {
            tracing::warn!(meter = %outcome.meter_id, reason = %outcome.refusal, "bill refused");
            report.refused.push(Refusal {
                meter_id: outcome.meter_id,
                reason: outcome.refusal,
            });
            continue;
        }
        let Some(sequence) = sequences
            .iter()
            .find(|(m, _)| *m == outcome.meter_id)
            .map(|(_, s)| *s)
        else {
            report.refused.push(Refusal {
                meter_id: outcome.meter_id,
                reason: "the key authority answered for a meter that was not asked for".into(),
            });
            continue;
        };
        let Ok(meter_id) = MeterId::try_new(outcome.meter_id.clone()) else {
            continue;
        };
        let bill = StoredBill {
            meter_id,
            period,
            amount_paise: outcome.amount_paise,
            closing_sequence: sequence,
            audit_sequence: outcome.audit_sequence,
            released_at_us: now_us,
        };
        store.record_bill(&bill).await?;
        report.released.push(bill);
    }
    tracing::info!(
        released = report.released.len(),
        refused = report.refused.len(),
        release_ms = report.release_time.as_secs_f64() * 1e3,
        "billing run done"
    );
    Ok(report)
}
