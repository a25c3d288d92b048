//! `seer.v1.AnalyticsReceipts` and `seer.v1.Analytics` over the [`AnalyticsStore`] and the
//! [`AnalyticsReleaser`], with their wire conversions.

use std::collections::BTreeMap;

use seer_ckks::Ciphertext;
use seer_proto::v1;
use seer_proto::v1::analytics_receipts_server::AnalyticsReceipts;
use seer_proto::v1::analytics_release_chunk::Part;
use seer_proto::v1::analytics_server::Analytics;
use tonic::{Request, Response, Status, Streaming};

use super::engine::{DailyReleased, Released, SlotPeriod, check_daily_block};
use super::group_forecast::{GroupForecastReleaser, check_request, hour_labels};
use super::policy::{
    AnalyticsMeterInput, AnalyticsReleaser, AnalyticsRequest, MAX_METERS_PER_REQUEST,
};
use std::sync::Arc;

use seer_auth::device::AnalyticsReceiptStatement;

use super::store::{AnalyticsReceipt, InputLane, Recorded};
use crate::audit::{AuditLog, RequestKind};
use crate::auth::{Caller, Role, authorize, validate_meter_id};
use crate::release::{RECEIPT_WRITERS, ReleaseError};
use crate::signed_receipts::{ANALYTICS_RECEIPT_KIND, SignedReceipts};

/// The roles that may ask for analytics releases.
pub const ANALYTICS_CALLERS: &[Role] = &[Role::Utility];

/// Most input ciphertexts one receipt may list, and result ciphertexts one request may send.
const MAX_CIPHERTEXTS: usize = 64;

/// Serves `seer.v1.AnalyticsReceipts` (behind an `OnFailure::Record` interceptor: refusals of
/// the caller are logged): only
/// receipts signed by the meter's enrolled device key are recorded (see
/// [`crate::signed_receipts`]).
#[derive(Debug, Clone)]
pub struct AnalyticsReceiptsService {
    recorder: SignedReceipts,
    kinds: BTreeMap<String, usize>,
}

impl AnalyticsReceiptsService {
    /// Records into `log`'s database receipts of the served `kinds` (each with the slots of
    /// its ciphertexts, [`super::DeepEngine::kind_slots`]): blocks must lie within them.
    #[must_use]
    pub fn new(log: Arc<AuditLog>, kinds: BTreeMap<String, usize>) -> Self {
        Self {
            recorder: SignedReceipts::new(log),
            kinds,
        }
    }
}

/// The canonical statement the meter signed for an analytics receipt request, as received
/// (digests that are not 32 bytes are refused before this is built).
#[must_use]
pub fn analytics_statement(
    request: &v1::AnalyticsReceiptRequest,
    input_blake3: Vec<[u8; 32]>,
) -> AnalyticsReceiptStatement {
    AnalyticsReceiptStatement {
        kind: request.kind.clone(),
        meter_id: request.meter_id.clone(),
        input_id: request.input_id.clone(),
        model_blake3: request.model_blake3.clone(),
        slot_offset: request.slot_offset,
        slot_count: request.slot_count,
        first_period: request.first_period.clone(),
        group: request.group,
        input_blake3,
        lane: request.lane.clone(),
        epsilon: request.epsilon,
        readings_per_day: request.readings_per_day,
    }
}

/// The receipt as `AnalyticsReceipts.Record` checks it: `kinds` are the served kinds with the
/// slots of their ciphertexts; a `daily` receipt must also have the daily lane's shape (one
/// input, one whole 512-slot block, the exact lane at ε 0).
pub(crate) fn receipt_from_wire(
    request: v1::AnalyticsReceiptRequest,
    kinds: &BTreeMap<String, usize>,
) -> Result<AnalyticsReceipt, Status> {
    let slot_period = SlotPeriod::of_kind(&request.kind).ok_or_else(|| {
        Status::invalid_argument("kind is not an analytics kind (anomaly, forecast or daily)")
    })?;
    let slots = *kinds.get(&request.kind).ok_or_else(|| {
        Status::failed_precondition(format!(
            "{} receipts are not accepted: deep analytics (analytics.enabled) is off",
            request.kind
        ))
    })?;
    validate_meter_id(&request.meter_id)
        .map_err(|reason| Status::invalid_argument(format!("meter_id: {reason}")))?;
    if request.input_id.is_empty() || request.input_id.len() > 128 {
        return Err(Status::invalid_argument(
            "input_id must have 1 to 128 bytes",
        ));
    }
    let block = seer_proto::wire::receipt_block(&request);
    if block.count == 0 || block.end() > slots {
        return Err(Status::invalid_argument(format!(
            "the block {}..{} is empty or beyond the {slots} slots",
            block.offset,
            block.end()
        )));
    }
    if request.input_blake3.is_empty() || request.input_blake3.len() > MAX_CIPHERTEXTS {
        return Err(Status::invalid_argument(format!(
            "a receipt lists 1 to {MAX_CIPHERTEXTS} input digests"
        )));
    }
    let input_digests = request
        .input_blake3
        .iter()
        .map(|d| <[u8; 32]>::try_from(d.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Status::invalid_argument("every input_blake3 must be 32 bytes"))?;
    let first_period = slot_period
        .parse(&request.first_period)
        .map_err(|reason| Status::invalid_argument(format!("first_period: {reason}")))?;
    // Kept as signed (and rebuilt into the statement at release): a value the database
    // cannot store bit for bit (NaN, −0) is refused here.
    if !request.epsilon.is_finite()
        || (request.epsilon == 0.0 && request.epsilon.is_sign_negative())
    {
        return Err(Status::invalid_argument(
            "epsilon must be a finite number (0 on the exact lane)",
        ));
    }
    let lane = seer_proto::wire::receipt_lane(&request)
        .map_err(|e| Status::from(ReleaseError::from(e)))?;
    if request.kind == RequestKind::DAILY.as_str() {
        check_daily_block(&block, input_digests.len()).map_err(Status::invalid_argument)?;
        if lane != InputLane::Exact || request.epsilon != 0.0 || request.readings_per_day != 0 {
            return Err(Status::invalid_argument(
                "a daily receipt is on the exact lane at ε 0 (the daily model scores exact \
                 hourly energy)",
            ));
        }
    }
    Ok(AnalyticsReceipt {
        kind: request.kind,
        meter_id: request.meter_id,
        input_id: request.input_id,
        block,
        slot_period,
        first_period,
        input_digests,
        lane,
    })
}

#[tonic::async_trait]
impl AnalyticsReceipts for AnalyticsReceiptsService {
    #[tracing::instrument(name = "AnalyticsReceipts.Record", skip_all, fields(subject, meter))]
    async fn record(
        &self,
        request: Request<v1::AnalyticsReceiptRequest>,
    ) -> Result<Response<v1::AnalyticsReceiptAck>, Status> {
        // Behind an `OnFailure::Record` interceptor: refusals of the caller are logged.
        let authenticated = request.extensions().get::<Caller>().cloned();
        let authorized = authorize(&request, RECEIPT_WRITERS);
        let message = request.into_inner();
        let caller = match authorized.and_then(|caller| {
            caller.check_household_meter(&message.meter_id)?;
            Ok(caller)
        }) {
            Ok(caller) => caller,
            Err(refusal) => {
                self.recorder
                    .refuse(
                        ANALYTICS_RECEIPT_KIND,
                        authenticated.as_ref(),
                        &message.meter_id,
                        &refusal.to_string(),
                    )
                    .await?;
                return Err(refusal.into());
            }
        };
        tracing::Span::current().record("subject", caller.subject());
        tracing::Span::current().record("meter", message.meter_id.as_str());
        let signature = message.signature.clone();
        let receipt = receipt_from_wire(message.clone(), &self.kinds)?;
        let statement = analytics_statement(&message, receipt.input_digests.clone());
        let outcome = self
            .recorder
            .record_analytics(&caller, &receipt, &statement, &signature)
            .await?;
        Ok(Response::new(v1::AnalyticsReceiptAck {
            duplicate: outcome == Recorded::Duplicate,
        }))
    }
}

/// Serves `seer.v1.Analytics` (behind an `OnFailure::Record` interceptor, so that requests
/// without a valid token are logged before being refused).
#[derive(Debug, Clone)]
pub struct AnalyticsService {
    releaser: AnalyticsReleaser,
    group_forecasts: GroupForecastReleaser,
    max_ciphertext_bytes: usize,
}

impl AnalyticsService {
    /// A service applying `releaser`'s policy; `max_ciphertext_bytes` bounds each streamed
    /// ciphertext.
    #[must_use]
    pub fn new(releaser: AnalyticsReleaser, max_ciphertext_bytes: usize) -> Self {
        Self {
            group_forecasts: releaser.group_forecasts(),
            releaser,
            max_ciphertext_bytes,
        }
    }

    /// The bound on streamed ciphertexts for a parameter set's context (the engine's bound
    /// over all its sets is [`super::DeepEngine::max_ciphertext_bytes`]).
    #[must_use]
    pub fn ciphertext_limit(ctx: &seer_ckks::CkksContext) -> usize {
        Ciphertext::max_serialized_len(ctx)
    }
}

/// Ciphertexts being reassembled from chunks.
#[derive(Default)]
struct Assembly {
    parts: BTreeMap<(u32, u32), Vec<u8>>,
}

impl Assembly {
    fn add(
        &mut self,
        key: (u32, u32),
        chunk: &v1::CiphertextChunk,
        limit: usize,
    ) -> Result<(), String> {
        if chunk.total_bytes == 0 || chunk.total_bytes > limit as u64 {
            return Err(format!(
                "ciphertext {key:?} announces {} bytes (at most {limit})",
                chunk.total_bytes
            ));
        }
        let buf = self.parts.entry(key).or_default();
        if chunk.offset != buf.len() as u64
            || buf.len() as u64 + chunk.data.len() as u64 > chunk.total_bytes
        {
            return Err(format!(
                "inconsistent chunk of ciphertext {key:?} at offset {}",
                chunk.offset
            ));
        }
        // No reservation from the announced size: memory follows the bytes that arrived, so
        // a caller announcing many large ciphertexts and sending a few bytes of each holds
        // only what it sent.
        buf.extend_from_slice(&chunk.data);
        Ok(())
    }
}

/// Reads the rest of the stream after the header into a request.
pub(crate) async fn read_request(
    header: v1::AnalyticsReleaseHeader,
    stream: &mut Streaming<v1::AnalyticsReleaseChunk>,
    limit: usize,
) -> Result<AnalyticsRequest, String> {
    let meters = header.meters.len();
    if meters == 0 || meters > MAX_METERS_PER_REQUEST {
        return Err(format!(
            "a request names 1 to {MAX_METERS_PER_REQUEST} meters, not {meters}"
        ));
    }
    let results = header.result_count as usize;
    if results > MAX_CIPHERTEXTS {
        return Err(format!("at most {MAX_CIPHERTEXTS} result ciphertexts"));
    }
    let mut inputs = Assembly::default();
    let mut outputs = Assembly::default();
    while let Some(message) = stream.message().await.map_err(|s| s.message().to_owned())? {
        match message.part {
            Some(Part::Input(chunk)) => {
                if chunk.meter_index as usize >= meters || chunk.index as usize >= MAX_CIPHERTEXTS {
                    return Err(format!(
                        "input chunk for meter {} input {} is out of range",
                        chunk.meter_index, chunk.index
                    ));
                }
                inputs.add((chunk.meter_index, chunk.index), &chunk, limit)?;
            }
            Some(Part::Result(chunk)) => {
                if chunk.index as usize >= results {
                    return Err(format!("result chunk {} is out of range", chunk.index));
                }
                outputs.add((0, chunk.index), &chunk, limit)?;
            }
            Some(Part::Header(_)) => return Err("a second header".into()),
            None => return Err("an empty message".into()),
        }
    }
    let mut per_meter: Vec<Vec<Vec<u8>>> = vec![Vec::new(); meters];
    for ((m, k), bytes) in inputs.parts {
        let list = &mut per_meter[m as usize];
        if k as usize != list.len() {
            return Err(format!("meter {m}: input {} is missing", list.len()));
        }
        list.push(bytes);
    }
    let mut result = Vec::with_capacity(results);
    for ((_, k), bytes) in outputs.parts {
        if k as usize != result.len() {
            return Err(format!("result {} is missing", result.len()));
        }
        result.push(bytes);
    }
    if result.len() != results {
        return Err(format!(
            "{} of {results} result ciphertexts arrived",
            result.len()
        ));
    }
    Ok(AnalyticsRequest {
        kind: header.kind,
        model_blake3: header.model_blake3,
        meters: header
            .meters
            .into_iter()
            .zip(per_meter)
            .map(|(m, inputs)| AnalyticsMeterInput {
                meter_id: m.meter_id,
                input_id: m.input_id,
                inputs,
            })
            .collect(),
        result,
    })
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    #[tracing::instrument(name = "Analytics.Release", skip_all, fields(subject))]
    async fn release(
        &self,
        request: Request<Streaming<v1::AnalyticsReleaseChunk>>,
    ) -> Result<Response<v1::AnalyticsReleaseResponse>, Status> {
        let authorized = authorize(&request, ANALYTICS_CALLERS);
        let authenticated = request.extensions().get::<Caller>().cloned();
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(v1::AnalyticsReleaseChunk {
                part: Some(Part::Header(header)),
            }) => header,
            _ => {
                let reason = "the stream must start with a header";
                self.releaser
                    .refuse_request(authenticated.as_ref(), "anomaly", &[], reason)
                    .await?;
                return Err(Status::invalid_argument(reason));
            }
        };
        let names: Vec<String> = header.meters.iter().map(|m| m.meter_id.clone()).collect();
        let caller = match authorized {
            Ok(caller) => caller,
            Err(refusal) => {
                self.releaser
                    .refuse_request(
                        authenticated.as_ref(),
                        &header.kind,
                        &names,
                        &refusal.to_string(),
                    )
                    .await?;
                return Err(refusal.into());
            }
        };
        tracing::Span::current().record("subject", caller.subject());
        let kind = header.kind.clone();
        let message = match read_request(header, &mut stream, self.max_ciphertext_bytes).await {
            Ok(message) => message,
            Err(reason) => {
                self.releaser
                    .refuse_request(Some(&caller), &kind, &names, &reason)
                    .await?;
                return Err(Status::invalid_argument(reason));
            }
        };
        let decisions = self
            .releaser
            .release(&caller, message)
            .await
            .map_err(|error: ReleaseError| Status::from(error))?;
        Ok(Response::new(v1::AnalyticsReleaseResponse {
            meters: decisions
                .outcomes
                .into_iter()
                .map(|o| {
                    let (granted, days, refusal) = match o.decision {
                        Ok(days) => (true, days, String::new()),
                        Err(reason) => (false, Vec::new(), reason),
                    };
                    let mut release = v1::AnalyticsMeterRelease {
                        meter_id: o.meter_id,
                        granted,
                        refusal,
                        audit_sequence: o.audit_sequence,
                        lane: o.lane.map_or(String::new(), |l| l.as_str().to_owned()),
                        epsilon: o.lane.map_or(0.0, |l| l.epsilon()),
                        withheld: o.withheld,
                        ..v1::AnalyticsMeterRelease::default()
                    };
                    for d in days {
                        match d.release {
                            Released::Anomaly(r) => release.days.push(v1::DayRelease {
                                day: d.period,
                                score: r.score,
                                flagged: r.flagged,
                                has_zscore: r.zscore.is_some(),
                                zscore: r.zscore.unwrap_or(0.0),
                                explanation: r
                                    .explanation
                                    .into_iter()
                                    .map(|f| v1::ExplanationFeature {
                                        name: f.name,
                                        excess: f.excess,
                                        ..v1::ExplanationFeature::default()
                                    })
                                    .collect(),
                                explanation_hours: r.explanation_hours,
                            }),
                            Released::Forecast { kwh } => {
                                release.forecasts.push(v1::HourForecast {
                                    hour: d.period,
                                    kwh,
                                });
                            }
                            Released::Daily(r) => daily_to_wire(r, &mut release),
                        }
                    }
                    release
                })
                .collect(),
            result_verified: decisions.result_verified,
            flag_threshold: decisions.flag_threshold.unwrap_or(0.0),
        }))
    }

    #[tracing::instrument(
        name = "Analytics.ReleaseGroupForecast",
        skip_all,
        fields(subject, group, day)
    )]
    async fn release_group_forecast(
        &self,
        request: Request<v1::GroupForecastRequest>,
    ) -> Result<Response<v1::GroupForecastResponse>, Status> {
        let authorized = authorize(&request, ANALYTICS_CALLERS);
        let authenticated = request.extensions().get::<Caller>().cloned();
        let message = request.into_inner();
        let scope = format!(
            "group {} day {:?}",
            message.group,
            message.day.chars().take(16).collect::<String>()
        );
        let caller = match authorized {
            Ok(caller) => caller,
            Err(refusal) => {
                self.group_forecasts
                    .refuse_request(authenticated.as_ref(), &scope, &refusal.to_string())
                    .await?;
                return Err(refusal.into());
            }
        };
        let span = tracing::Span::current();
        span.record("subject", caller.subject());
        span.record("group", message.group);
        let query = match check_request(message.group, &message.day, &message.model_blake3) {
            Ok(query) => query,
            Err(reason) => {
                self.group_forecasts
                    .refuse_request(Some(&caller), &scope, &reason)
                    .await?;
                return Err(Status::invalid_argument(reason));
            }
        };
        span.record("day", query.day.to_string());
        let decided = self.group_forecasts.release(&caller, query).await?;
        let (granted, refusal, hours) = match decided.decision {
            Ok(total) => (
                true,
                String::new(),
                hour_labels(decided.query.day)
                    .into_iter()
                    .zip(total)
                    .map(|(hour, milli)| v1::HourForecast {
                        hour,
                        kwh: milli_to_kwh(milli),
                    })
                    .collect(),
            ),
            Err(refusal) => (false, refusal.to_string(), Vec::new()),
        };
        Ok(Response::new(v1::GroupForecastResponse {
            granted,
            refusal,
            already_released: decided.already_released,
            homes: decided.homes,
            hours,
            audit_sequence: decided.audit_sequence,
        }))
    }
}

/// Thousandths of kWh as kWh (exact to the nearest double: a released total is a whole number
/// of thousandths, recovered by rounding `kwh × 1000`).
#[expect(
    clippy::cast_precision_loss,
    reason = "totals far below 2^53 thousandths"
)]
fn milli_to_kwh(milli: i64) -> f64 {
    milli as f64 / 1000.0
}

/// A `daily` home-day on the wire: one [`v1::DayRelease`] when the anomaly part is present
/// (explanation features with their text, usual range and hours; `explanation_hours` their
/// union; no z-score) and 24 [`v1::HourForecast`]s of the next day when the forecast part is.
fn daily_to_wire(released: DailyReleased, out: &mut v1::AnalyticsMeterRelease) {
    let DailyReleased {
        release: r,
        explanation_scores,
    } = released;
    if let Some(anomaly) = r.anomaly {
        let mut hours: Vec<u32> = anomaly
            .explanation
            .iter()
            .flat_map(|item| item.hours.iter().copied())
            .collect();
        hours.sort_unstable();
        hours.dedup();
        out.days.push(v1::DayRelease {
            day: r.day.to_string(),
            score: anomaly.score,
            flagged: anomaly.flagged,
            has_zscore: false,
            zscore: 0.0,
            explanation: anomaly
                .explanation
                .into_iter()
                .zip(explanation_scores)
                .map(|(item, excess)| v1::ExplanationFeature {
                    name: item.feature,
                    excess,
                    text: item.text,
                    usual_low: item.usual_low,
                    usual_high: item.usual_high,
                    hours: item.hours,
                })
                .collect(),
            explanation_hours: hours,
        });
    }
    if let Some(forecast) = r.forecast {
        let next = r
            .day
            .succ_opt()
            .unwrap_or(r.day)
            .and_time(chrono::NaiveTime::MIN);
        out.forecasts.extend(
            forecast
                .into_iter()
                .enumerate()
                .map(|(h, kwh)| v1::HourForecast {
                    hour: SlotPeriod::Hour.label(next, h),
                    kwh,
                }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembly_holds_what_arrived_not_what_was_announced() {
        let limit = 8 << 20;
        let mut assembly = Assembly::default();
        // 64 ciphertexts announced at the limit (512 MiB in all), one byte of each sent.
        for i in 0..64 {
            let chunk = v1::CiphertextChunk {
                meter_index: i,
                index: 0,
                total_bytes: limit as u64,
                offset: 0,
                data: vec![1],
            };
            assembly
                .add((i, 0), &chunk, limit)
                .expect("a consistent chunk");
        }
        let held: usize = assembly.parts.values().map(Vec::capacity).sum();
        assert!(held <= 64 * 64, "{held} bytes held for 64 bytes received");
        // Announcing more than the limit, or bytes past the announced size, is refused.
        let over = v1::CiphertextChunk {
            total_bytes: limit as u64 + 1,
            data: vec![1],
            ..Default::default()
        };
        assert!(assembly.add((99, 0), &over, limit).is_err());
        let past = v1::CiphertextChunk {
            total_bytes: 1,
            offset: 1,
            data: vec![1],
            ..Default::default()
        };
        assert!(assembly.add((0, 0), &past, limit).is_err());
    }
}
