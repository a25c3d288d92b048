//! The billing job: at the close of a month, compute each packing group's bills
//! homomorphically, ask the key authority to release them, and store what it releases.
//!
//! Meters send period-to-date billing lanes, so a home's closing batch of the month carries
//! its whole month ([`Store::closing_batches`]). For one packing group the job:
//!
//! 1. fetches the public evaluation keys the circuit needs — the Galois keys of the billing
//!    parameter set, streamed in chunks over the key authority's `seer.v1.Keys`
//!    ([`fetch_evaluation_keys`]): the key set's id and rotation steps are checked against the
//!    [`BillingLayout`] first, and the object's frame (format, parameter-set id, checksum)
//!    when it is parsed. It is the very object the key authority evaluates with, which is what
//!    makes the two evaluations byte-identical; no relinearization key is needed (the circuit
//!    multiplies by plaintexts only);
//! 2. evaluates the packed billing circuit (`seer_core::circuits::billing`: each lane masked to
//!    its home's cells at its position, the sum — the cells output —, the rate vector, the
//!    block sums — the bills output) over the group's closing lanes, on the blocking pool
//!    ([`evaluate_lanes`]);
//! 3. sends the lanes and both outputs to `Release.ReleaseBills` with the utility's token. The
//!    key authority checks every lane against the receipt its meter recorded and the meter's
//!    registered position, re-executes the circuit and requires both outputs to be the
//!    utility's, bit for bit; it then decrypts its own outputs (never a lane) and releases
//!    each home's bill to the paisa with the month's energy per tariff cell in whole Wh. The
//!    utility never decrypts anything, and it cannot obtain a decryption of anything but the
//!    registered circuit's outputs over lanes the meters vouched for;
//! 4. stores the released bills with their cells, labelled by the tariff
//!    ([`Store::record_bill`]); refusals are reported with the key authority's reason. When
//!    the key authority refuses some inputs, it refuses the whole request (the others come
//!    back `withheld`): the job then evaluates the circuit again over the withheld lanes and
//!    asks again, until nothing is withheld.
//!
//! A group whose lanes exceed what one gRPC message may carry is sent in several requests of
//! at most [`MAX_REQUEST_LANE_BYTES`] of lanes, each with the circuit evaluated over its own
//! lanes (the circuit bills any subset of a group).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seer_ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys};
use seer_core::circuits::billing::BillingLayout;
use seer_core::tariff::Tariff;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::release_client::ReleaseClient;
use seer_proto::v1::{BillInput, KeyKind, ListKeySetsRequest, ReleaseBillsRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::batch::Period;
use crate::key_authority::{connect, fetch_key_object};
use crate::lanes::LaneValidator;
use crate::store::{GroupBatch, SlabEnergy, Store, StoredBill};

/// Most bytes of billing lanes one `ReleaseBills` request carries (well under
/// [`seer_proto::MAX_MESSAGE_SIZE`], leaving room for the result and the framing).
pub const MAX_REQUEST_LANE_BYTES: usize = 48 * 1024 * 1024;

pub use crate::key_authority::{JobError, MAX_EVALUATION_KEY_BYTES};

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
    /// Homes left out because their bill was already stored (a retried job).
    pub already_stored: usize,
    /// Homes the key authority had released to an earlier request, whose stored release it
    /// returned when asked again for them alone.
    pub released_before: usize,
    /// Bills released and stored.
    pub released: Vec<StoredBill>,
    /// Homes refused.
    pub refused: Vec<Refusal>,
    /// Wall-clock time of the release calls (the key authority's checks, decryptions and
    /// re-execution included), in milliseconds.
    #[serde(serialize_with = "serialize_millis")]
    pub release_time: Duration,
    /// The utility's own time in the billing circuit (parsing the lanes, evaluating,
    /// serializing the result), in milliseconds.
    #[serde(rename = "circuit_ms", serialize_with = "serialize_millis")]
    pub circuit_time: Duration,
    /// [`circuit_time`](Self::circuit_time) per closing home, in milliseconds.
    pub circuit_ms_per_home: f64,
    /// Size of the evaluation keys fetched from the key authority (0 when nothing was
    /// billed).
    pub evaluation_key_bytes: u64,
    /// `ReleaseBills` requests sent.
    pub requests: usize,
    /// Whether the key authority found the utility's circuit result byte-identical to its
    /// re-execution in every request (false when it refused some input, which rules out
    /// the comparison).
    pub result_verified: bool,
}

fn serialize_display<S: serde::Serializer>(v: &Period, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// The public evaluation keys of the billing circuit, as fetched from the key authority.
pub struct EvaluationKeys {
    evaluator: Evaluator,
    bytes: u64,
}

impl std::fmt::Debug for EvaluationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvaluationKeys")
            .field(
                "parameter_set",
                &self.evaluator.context().parameter_set_id(),
            )
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl EvaluationKeys {
    /// The evaluator over the fetched Galois keys.
    #[must_use]
    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }

    /// The serialized size of the fetched keys.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The label of each tariff cell, in cell order: the slab's range in kWh (`0-50 kWh`, the last
/// one open-ended: `200+ kWh`), followed by the band's name when the tariff has more than one
/// band (`50-100 kWh peak`).
#[must_use]
pub fn cell_labels(tariff: &Tariff) -> Vec<String> {
    let bands = tariff.bands();
    tariff
        .slabs()
        .iter()
        .flat_map(|slab| {
            let range = match slab.to {
                Some(to) => format!("{}-{} kWh", kwh_label(slab.from.get()), kwh_label(to.get())),
                None => format!("{}+ kWh", kwh_label(slab.from.get())),
            };
            bands.iter().map(move |band| {
                if bands.len() > 1 {
                    format!("{range} {}", band.name)
                } else {
                    range.clone()
                }
            })
        })
        .collect()
}

/// A threshold in Wh as kWh without trailing zeros (`50000` → `50`, `12500` → `12.5`).
fn kwh_label(wh: i64) -> String {
    let (whole, frac) = (wh / 1000, (wh % 1000).abs());
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:03}")
            .trim_end_matches('0')
            .to_owned()
    }
}

/// Fetches the Galois keys of `ctx`'s parameter set from the key authority behind `channel`
/// and checks them against `layout` (see the [module documentation](self)).
///
/// # Errors
/// [`JobError::Keys`] when the key authority holds no key set for the parameter set, its
/// rotation steps lack one the circuit needs, the stream is inconsistent or too large, or the
/// object does not parse as Galois keys of the parameter set.
#[tracing::instrument(skip_all, fields(parameter_set = ctx.parameter_set_id()))]
pub async fn fetch_evaluation_keys(
    channel: Channel,
    ctx: &CkksContext,
    layout: &BillingLayout,
) -> Result<EvaluationKeys, JobError> {
    let id = ctx.parameter_set_id().to_owned();
    let mut client = KeysClient::new(channel).with_seer_limits();
    let status = |doing: &str| {
        let doing = doing.to_owned();
        move |s: tonic::Status| JobError::Keys(format!("{doing}: {}", s.message()))
    };
    let sets = client
        .list_key_sets(ListKeySetsRequest {})
        .await
        .map_err(status("listing the key sets"))?
        .into_inner()
        .key_sets;
    let info = sets
        .into_iter()
        .find(|set| set.parameter_set_id == id)
        .ok_or_else(|| JobError::Keys(format!("the key authority holds no key set for {id}")))?;
    let slots = i64::try_from(ctx.slots()).unwrap_or(i64::MAX);
    let missing: Vec<i64> = layout
        .galois_steps()
        .into_iter()
        .filter(|step| {
            let normalized = step.rem_euclid(slots);
            !info
                .galois_steps
                .iter()
                .any(|have| i64::from(*have) == normalized)
        })
        .collect();
    if !missing.is_empty() {
        return Err(JobError::Keys(format!(
            "the key set {id} has no Galois keys for the rotation steps {missing:?} of the \
             billing circuit"
        )));
    }
    let expected = info.galois_keys_bytes;
    let bytes = fetch_key_object(&mut client, &id, KeyKind::Galois, expected).await?;
    let ctx = ctx.clone();
    let steps = layout.galois_steps();
    let span = tracing::Span::current();
    let evaluator = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let keys = GaloisKeys::from_bytes(&ctx, &bytes)
            .map_err(|e| JobError::Keys(format!("the Galois keys of {id}: {e}")))?;
        if let Some(step) = steps.iter().find(|&&s| !keys.supports(s, ctx.slots())) {
            return Err(JobError::Keys(format!(
                "the Galois keys of {id} do not support the rotation step {step}"
            )));
        }
        Ok(Evaluator::new(&ctx, None, Some(keys)))
    })
    .await
    .map_err(|e| JobError::Keys(format!("parsing task: {e}")))??;
    tracing::info!(bytes = expected, "evaluation keys fetched");
    Ok(EvaluationKeys {
        evaluator,
        bytes: expected,
    })
}

/// The utility's serialized evaluation of the billing circuit: the two outputs the key
/// authority compares with its re-execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOutputs {
    /// The cells output.
    pub cells: Vec<u8>,
    /// The bills output.
    pub bills: Vec<u8>,
}

/// The utility's evaluation of the billing circuit over serialized closing lanes, each with
/// its home's position: parses each (frame and parameter set checked), evaluates, serializes
/// both outputs. Blocking and CPU-heavy: call it off the async runtime.
///
/// # Errors
/// [`JobError::Circuit`] when a lane does not parse or the evaluation fails.
pub fn evaluate_lanes<'a, I>(
    layout: &BillingLayout,
    keys: &EvaluationKeys,
    lanes: I,
) -> Result<CircuitOutputs, JobError>
where
    I: IntoIterator<Item = (&'a str, usize, &'a [u8])>,
{
    let ctx = keys.evaluator.context();
    let mut acc = seer_core::circuits::billing::GroupAccumulator::new(layout, &keys.evaluator)
        .map_err(|e| JobError::Circuit(e.to_string()))?;
    for (meter, position, lane) in lanes {
        let ct = Ciphertext::from_bytes(ctx, lane)
            .map_err(|e| JobError::Circuit(format!("the stored lane of meter {meter}: {e}")))?;
        acc.add(position, &ct)
            .map_err(|e| JobError::Circuit(format!("adding the lane of meter {meter}: {e}")))?;
    }
    let outputs = acc.finish().map_err(|e| JobError::Circuit(e.to_string()))?;
    let serialize = |ct: &Ciphertext| {
        ct.to_bytes(ctx)
            .map_err(|e| JobError::Circuit(format!("serializing an output: {e}")))
    };
    Ok(CircuitOutputs {
        cells: serialize(&outputs.cells)?,
        bills: serialize(&outputs.bills)?,
    })
}

/// Splits the closing lanes into requests of at most [`MAX_REQUEST_LANE_BYTES`] of lanes (at
/// least one lane each).
fn split_requests(closing: Vec<GroupBatch>) -> Vec<Vec<GroupBatch>> {
    let mut requests: Vec<Vec<GroupBatch>> = Vec::new();
    let mut bytes = 0;
    for batch in closing {
        let len = batch.billing_lane.len();
        match requests.last_mut() {
            Some(last) if bytes + len <= MAX_REQUEST_LANE_BYTES => {
                bytes += len;
                last.push(batch);
            }
            _ => {
                bytes = len;
                requests.push(vec![batch]);
            }
        }
    }
    requests
}

/// Bills one packing group for one closed month (see the [module documentation](self)).
/// `lanes` gives the billing parameter set's context and the tariff's layout (the
/// utility-server's settings).
///
/// # Errors
/// When the store fails, the key authority is unreachable, its evaluation keys cannot be
/// fetched, the circuit fails, or the key authority refuses a request as a whole (bad token,
/// wrong role, malformed request, audit log unavailable).
pub async fn bill_group(
    store: &Store,
    lanes: &LaneValidator,
    key_authority: &str,
    token: &str,
    period: Period,
    group: u32,
) -> Result<BillingReport, JobError> {
    bill_group_with(store, lanes, key_authority, token, period, group, false).await
}

/// [`bill_group`], leaving out the homes whose bill of `period` is already stored when
/// `skip_stored` (what the billing job of a worker does: a retried job asks only for what is
/// still missing). A home whose bill the key authority released to an earlier request — one
/// whose answer was lost, or another worker's running the same job — comes back
/// `already_released`; it is asked for again on its own, and the key authority answers from
/// its releases (`bill.retry`), so its bill is stored exactly as first released.
///
/// # Errors
/// As [`bill_group`].
#[tracing::instrument(skip(store, lanes, token), fields(period = %period, group))]
pub async fn bill_group_with(
    store: &Store,
    lanes: &LaneValidator,
    key_authority: &str,
    token: &str,
    period: Period,
    group: u32,
    skip_stored: bool,
) -> Result<BillingReport, JobError> {
    let mut closing = store.closing_batches(period, group).await?;
    let mut already_stored = 0;
    if skip_stored {
        let billed = store.billed_meters(period, group).await?;
        let before = closing.len();
        closing.retain(|b| !billed.contains(b.meter_id.as_str()));
        already_stored = before - closing.len();
    }
    let mut report = BillingReport {
        period,
        group,
        already_stored,
        closing_homes: closing.len(),
        released: Vec::new(),
        refused: Vec::new(),
        release_time: Duration::ZERO,
        circuit_time: Duration::ZERO,
        circuit_ms_per_home: 0.0,
        evaluation_key_bytes: 0,
        requests: 0,
        released_before: 0,
        result_verified: false,
    };
    if closing.is_empty() {
        tracing::info!("no closed month in this group: nothing to bill");
        return Ok(report);
    }
    let channel = connect(key_authority).await?;
    let keys = std::sync::Arc::new(
        fetch_evaluation_keys(channel.clone(), lanes.billing_context(), lanes.layout()).await?,
    );
    report.evaluation_key_bytes = keys.bytes();
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| JobError::Token)?;
    let mut client =
        ReleaseClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        })
        .with_seer_limits();
    let labels = cell_labels(lanes.layout().tariff());
    let mut verified = true;
    let mut pending: std::collections::VecDeque<Vec<GroupBatch>> = split_requests(closing).into();
    // Meters asked for alone after an `already_released` answer: asked once more at most.
    let mut asked_alone: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    while let Some(batches) = pending.pop_front() {
        let lone_retry = batches
            .iter()
            .all(|b| asked_alone.contains(b.meter_id.as_str()));
        // The circuit, on the blocking pool.
        let started = Instant::now();
        let (layout, keys_for_task) = (lanes.clone(), std::sync::Arc::clone(&keys));
        let span = tracing::info_span!("billing.circuit", homes = batches.len());
        let (batches, result) = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = evaluate_lanes(
                layout.layout(),
                &keys_for_task,
                batches.iter().map(|b| {
                    (
                        b.meter_id.as_str(),
                        b.billing_position as usize,
                        b.billing_lane.as_slice(),
                    )
                }),
            );
            (batches, result)
        })
        .await
        .map_err(|e| JobError::Circuit(format!("circuit task: {e}")))?;
        let outputs = result?;
        report.circuit_time += started.elapsed();

        let request = ReleaseBillsRequest {
            period: period.to_string(),
            billing_group: group,
            inputs: batches
                .iter()
                .map(|b| BillInput {
                    meter_id: b.meter_id.as_str().to_owned(),
                    sequence: b.sequence,
                    billing_lane: b.billing_lane.clone(),
                })
                .collect(),
            result: outputs.bills,
            cells: outputs.cells,
        };
        let started = Instant::now();
        let response = client
            .release_bills(request)
            .await
            .map_err(|status| JobError::Release {
                code: status.code(),
                message: status.message().to_owned(),
            })?
            .into_inner();
        report.release_time += started.elapsed();
        report.requests += 1;
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let mut withheld = Vec::new();
        let mut by_meter: std::collections::HashMap<String, GroupBatch> = batches
            .into_iter()
            .map(|b| (b.meter_id.as_str().to_owned(), b))
            .collect();
        let refused_before = report.refused.len();
        let mut released_before = Vec::new();
        for outcome in response.bills {
            if outcome.withheld {
                if let Some(batch) = by_meter.remove(&outcome.meter_id) {
                    withheld.push(batch);
                }
                continue;
            }
            if !outcome.granted
                && outcome.already_released
                && !asked_alone.contains(&outcome.meter_id)
            {
                // Released to an earlier request: asked for again on its own, the key
                // authority returns its stored release.
                if let Some(batch) = by_meter.remove(&outcome.meter_id) {
                    tracing::info!(meter = %batch.meter_id, "bill released before: asking for the stored release");
                    asked_alone.insert(outcome.meter_id.clone());
                    released_before.push(batch);
                }
                continue;
            }
            if !outcome.granted {
                tracing::warn!(meter = %outcome.meter_id, reason = %outcome.refusal, "bill refused");
                // Shown on the dashboard as "bills refused".
                store
                    .record_bill_refusal(&outcome.meter_id, period, &outcome.refusal)
                    .await?;
                report.refused.push(Refusal {
                    meter_id: outcome.meter_id,
                    reason: outcome.refusal,
                });
                continue;
            }
            let Some(batch) = by_meter.remove(&outcome.meter_id) else {
                report.refused.push(Refusal {
                    meter_id: outcome.meter_id,
                    reason: "the key authority answered for a meter that was not asked for".into(),
                });
                continue;
            };
            if outcome.cell_wh.len() != labels.len() {
                tracing::error!(
                    meter = %batch.meter_id,
                    released = outcome.cell_wh.len(),
                    tariff = labels.len(),
                    "the key authority's tariff has another number of cells than ours"
                );
            }
            let slabs = outcome
                .cell_wh
                .iter()
                .enumerate()
                .map(|(cell, &wh)| SlabEnergy {
                    label: labels
                        .get(cell)
                        .cloned()
                        .unwrap_or_else(|| format!("cell {cell}")),
                    wh,
                })
                .collect();
            let bill = StoredBill {
                meter_id: batch.meter_id,
                period,
                amount_paise: outcome.amount_paise,
                closing_sequence: batch.sequence,
                audit_sequence: outcome.audit_sequence,
                released_at_us: now_us,
                slabs,
            };
            store.record_bill(&bill).await?;
            if lone_retry {
                report.released_before += 1;
            }
            report.released.push(bill);
        }
        let answered_before = !released_before.is_empty();
        if answered_before {
            pending.push_back(released_before);
        }
        if withheld.is_empty() {
            verified &= response.result_verified;
        } else if report.refused.len() > refused_before || answered_before {
            // The refused inputs are out; the rest is asked for again on its own.
            tracing::info!(
                withheld = withheld.len(),
                "inputs withheld for refused ones: asking again without them"
            );
            pending.push_back(withheld);
        } else {
            return Err(JobError::Release {
                code: tonic::Code::Internal,
                message: "the key authority withheld inputs without refusing any".into(),
            });
        }
    }
    report.result_verified = verified && report.requests > 0;
    report.circuit_ms_per_home =
        report.circuit_time.as_secs_f64() * 1e3 / report.closing_homes as f64;
    tracing::info!(
        released = report.released.len(),
        refused = report.refused.len(),
        requests = report.requests,
        circuit_ms = report.circuit_time.as_secs_f64() * 1e3,
        release_ms = report.release_time.as_secs_f64() * 1e3,
        evaluation_key_bytes = report.evaluation_key_bytes,
        result_verified = report.result_verified,
        "billing run done"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::MeterId;
    use seer_core::tariff::{BandConfig, SlabConfig, TariffConfig};

    #[test]
    fn bescom_cells_are_labelled_by_their_slab() {
        assert_eq!(
            cell_labels(&Tariff::bescom()),
            ["0-50 kWh", "50-100 kWh", "100-200 kWh", "200+ kWh"]
        );
    }

    #[test]
    fn cells_of_a_tariff_with_bands_name_the_band() {
        let tariff = Tariff::try_new(TariffConfig {
            name: "tou".into(),
            slabs: vec![
                SlabConfig {
                    up_to_kwh: Some(12.5),
                    rate_paise: 400,
                },
                SlabConfig {
                    up_to_kwh: None,
                    rate_paise: 600,
                },
            ],
            bands: vec![BandConfig {
                name: "peak".into(),
                hours: vec!["18:00-22:00".into()],
                rate_percent: 120,
            }],
        })
        .expect("tariff");
        assert_eq!(
            cell_labels(&tariff),
            [
                "0-12.5 kWh peak",
                "0-12.5 kWh standard",
                "12.5+ kWh peak",
                "12.5+ kWh standard"
            ]
        );
    }

    #[test]
    fn requests_split_by_lane_bytes() {
        let lane = |meter: &str, len: usize| GroupBatch {
            meter_id: MeterId::try_new(meter).expect("meter"),
            sequence: 1,
            billing_position: 0,
            billing_lane: vec![0; len],
        };
        let third = MAX_REQUEST_LANE_BYTES / 3;
        let requests = split_requests(vec![
            lane("a", third),
            lane("b", third),
            lane("c", third),
            lane("d", 1),
            lane("e", MAX_REQUEST_LANE_BYTES + 1),
            lane("f", 1),
        ]);
        let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 1, 1, 1]);
        assert!(split_requests(Vec::new()).is_empty());
    }
}
