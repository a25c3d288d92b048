//! The release policy for group totals (see the [module documentation](super)).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta, Timelike as _, Utc};
use seer_auth::device::{NoisePlanStatement, Statement as _};
use seer_ckks::{Ciphertext, Evaluator, Level};
use seer_core::circuits::group_totals;
use seer_core::dp::{Epsilon, SharePlan};
use seer_core::units::Wh;
use seer_proto::v1::UploadBatch;
use sha2::Digest as _;
use tracing::Instrument as _;

use super::store::{self, StoredHour};
use super::{GROUP_TOTALS_INPUT_KIND, GROUP_TOTALS_KIND};
use crate::audit::{AuditLog, Decision, InputDigest, NewEntry, RequestKind};
use crate::auth::{Caller, validate_meter_id};
use crate::enrolment::{EnrolmentError, device_key};
use crate::keys::KeyStore;
use crate::outputs::{self, LaneSum};
use crate::release::{ReceiptStore, ReleaseError};

/// The most inputs one request may hold: a window of 31 days of daily batches for a group of
/// the largest billing layout, with room to spare.
pub const MAX_INPUTS: usize = 100_000;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupTotalsHeader {
    /// The noise group (billing packing group).
    pub group: u32,
    /// The plan every input must carry (its span fields are ignored).
    pub plan: NoisePlanStatement,
    /// Also release each interval's total.
    pub per_interval: bool,
}

/// One input: a meter's batch of the window, as it signed it, with its billing lane's digest
/// in place of the lane.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupTotalsInput {
    /// The batch (`billing_lane` empty).
    pub batch: UploadBatch,
    /// BLAKE3 of the batch's billing lane.
    pub billing_lane_blake3: Vec<u8>,
}

/// What happened to one hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HourStatus {
    /// Released by this request.
    Released,
    /// Released before: the stored values are returned.
    AlreadyReleased,
    /// Withheld: an interval had too few meters present.
    TooFewPresent,
}

/// One hour of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupHourOutcome {
    /// The hour's start, RFC 3339 in UTC.
    pub start: String,
    /// What happened.
    pub status: HourStatus,
    /// The released values (released and already-released hours); `interval_wh` empty unless
    /// asked for when released.
    pub values: Option<StoredHour>,
    /// The fewest meters present in an interval of the hour, in this request.
    pub min_present: u32,
}

/// An input left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRefusal {
    /// The meter, as sent.
    pub meter_id: String,
    /// The sequence, as sent.
    pub sequence: u64,
    /// Why.
    pub reason: String,
}

/// The decisions on one request.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupTotalsDecision {
    /// The group.
    pub group: u32,
    /// The window's start, as the plan names it.
    pub window_start: String,
    /// One outcome per hour of the window, in order.
    pub hours: Vec<GroupHourOutcome>,
    /// Inputs left out.
    pub refused: Vec<InputRefusal>,
    /// Inputs summed.
    pub accepted: u32,
    /// The request's audit entry.
    pub audit_seq: u64,
    /// ε per reading and the draw's scale Δ/ε, Wh.
    pub epsilon: f64,
    /// The scale of each interval's draw, Δ/ε in Wh.
    pub noise_scale_wh: f64,
}

/// The header, checked: the share plan and the window's geometry.
#[derive(Clone, Debug)]
pub struct Window {
    plan: SharePlan,
    statement: NoisePlanStatement,
    start: DateTime<FixedOffset>,
    interval: TimeDelta,
    slots: usize,
    slots_per_hour: usize,
}

impl Window {
    /// The hour starts, RFC 3339 in UTC.
    fn hour_starts(&self) -> Vec<String> {
        (0..self.slots / self.slots_per_hour)
            .map(|h| {
                let at = self.start + TimeDelta::hours(i64::try_from(h).unwrap_or(i64::MAX));
                at.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            })
            .collect()
    }
}

/// Checks a header's plan and window against the parameter set's `slots`.
///
/// # Errors
/// The reason, in words.
pub fn check_header(plan: &NoisePlanStatement, slots: usize) -> Result<Window, String> {
    let share_plan = SharePlan::try_new(
        plan.group_size,
        plan.tolerated,
        Wh::try_new(plan.sensitivity_wh).map_err(|e| format!("sensitivity_wh: {e}"))?,
        Epsilon::try_new(plan.epsilon).map_err(|e| format!("epsilon: {e}"))?,
    )
    .map_err(|e| format!("the plan: {e}"))?;
    let start = DateTime::parse_from_rfc3339(&plan.window_start)
        .map_err(|e| format!("window_start {:?}: {e}", plan.window_start))?;
    // A whole hour in the offset the meters stated (local midnight at +05:30 is 18:30 UTC),
    // as the meters cut their windows and the utility checks them at ingest.
    if start.minute() != 0 || start.second() != 0 || start.nanosecond() != 0 {
        return Err(format!(
            "window_start {} is not on a whole hour",
            plan.window_start
        ));
    }
    let interval = plan.interval_seconds;
    if interval == 0 || 3_600 % interval != 0 {
        return Err(format!(
            "an interval of {interval} s does not divide the hour"
        ));
    }
    let slots_per_hour = (3_600 / interval) as usize;
    let window = plan.window_slots as usize;
    if window == 0 || !window.is_multiple_of(slots_per_hour) {
        return Err(format!(
            "a window of {window} intervals of {interval} s is not whole hours"
        ));
    }
    if u64::from(plan.window_slots) * u64::from(interval) > 31 * 86_400 {
        return Err(format!(
            "a window of {window} intervals is longer than 31 days"
        ));
    }
    if window > slots {
        return Err(format!(
            "a window of {window} intervals does not fit the {slots} slots of a lane"
        ));
    }
    Ok(Window {
        plan: share_plan,
        statement: plan.clone(),
        start,
        interval: TimeDelta::seconds(i64::from(interval)),
        slots: window,
        slots_per_hour,
    })
}

/// Checks that `input`'s plan is the window's and its span fits the window and the batch.
fn check_span(window: &Window, batch: &UploadBatch) -> Result<(usize, usize), String> {
    let Some(plan) = batch.noise_plan.as_ref() else {
        return Err("the batch carries no noise plan (a meter built before plans existed)".into());
    };
    let ours = &window.statement;
    let same = plan.group_size == ours.group_size
        && plan.tolerated == ours.tolerated
        && plan.sensitivity_wh == ours.sensitivity_wh
        && plan.epsilon.to_bits() == ours.epsilon.to_bits()
        && plan.interval_seconds == ours.interval_seconds
        && plan.window_slots == ours.window_slots
        && DateTime::parse_from_rfc3339(&plan.window_start).ok() == Some(window.start);
    if !same {
        return Err(format!(
            "the batch's plan (n {}, t {}, Δ {} Wh, ε {}, window {} of {} × {} s) is not the \
             request's",
            plan.group_size,
            plan.tolerated,
            plan.sensitivity_wh,
            plan.epsilon,
            plan.window_start,
            plan.window_slots,
            plan.interval_seconds
        ));
    }
    let (first, count) = (plan.first_slot as usize, plan.slot_count as usize);
    if count == 0 || first + count > window.slots {
        return Err(format!(
            "the span of {count} slots from slot {first} does not lie in the window's {}",
            window.slots
        ));
    }
    let start = DateTime::parse_from_rfc3339(&batch.start)
        .map_err(|e| format!("start {:?}: {e}", batch.start))?;
    let end = DateTime::parse_from_rfc3339(&batch.end)
        .map_err(|e| format!("end {:?}: {e}", batch.end))?;
    let slot_of = |t: DateTime<FixedOffset>| -> Option<usize> {
        let offset = t - window.start;
        let step = window.interval.num_seconds();
        (offset.num_seconds() >= 0 && offset.num_seconds() % step == 0)
            .then(|| usize::try_from(offset.num_seconds() / step).ok())
            .flatten()
    };
    if slot_of(start) != Some(first) || slot_of(end) != Some(first + count) {
        return Err(format!(
            "the span (slots {first} .. {}) is not the batch's {} .. {}",
            first + count,
            batch.start,
            batch.end
        ));
    }
    Ok((first, count))
}

/// The audit entry's period field: the group and the window.
fn scope(group: u32, window_start: &str) -> String {
    format!("group {group} window {window_start}")
}

/// Applies the release policy for group totals: checks, sum, top-up, decryption, audit,
/// record.
#[derive(Debug, Clone)]
pub struct GroupTotalsReleaser {
    audit: Arc<AuditLog>,
    receipts: ReceiptStore,
    keys: Arc<KeyStore>,
    parameter_set: String,
}

/// A request being received: the checked header, the running sum and what each input was.
pub struct Accumulator {
    header: GroupTotalsHeader,
    window: Window,
    sum: LaneSum,
    presence: Vec<u32>,
    spans: BTreeMap<String, Vec<(usize, usize)>>,
    seen: HashSet<(String, u64)>,
    accepted: Vec<(String, u64, [u8; 32])>,
    refused: Vec<InputRefusal>,
    inputs: usize,
}

impl std::fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field("group", &self.header.group)
            .field("accepted", &self.accepted.len())
            .field("refused", &self.refused.len())
            .finish_non_exhaustive()
    }
}

impl GroupTotalsReleaser {
    /// A releaser over `audit`'s database, summing lanes of `parameter_set` (the billing
    /// parameter set, whose key set `keys` holds).
    ///
    /// # Errors
    /// [`ReleaseError::Config`] when the key store has no key set for `parameter_set`.
    pub fn try_new(
        audit: Arc<AuditLog>,
        keys: Arc<KeyStore>,
        parameter_set: &str,
    ) -> Result<Self, ReleaseError> {
        if keys.get(parameter_set).is_none() {
            return Err(ReleaseError::Config(format!(
                "no key set for the group totals' parameter set {parameter_set}"
            )));
        }
        Ok(Self {
            receipts: ReceiptStore::new(&audit),
            audit,
            keys,
            parameter_set: parameter_set.to_owned(),
        })
    }

    fn context(&self) -> Result<&seer_ckks::CkksContext, ReleaseError> {
        self.keys
            .get(&self.parameter_set)
            .map(crate::keys::KeySet::context)
            .ok_or_else(|| ReleaseError::Engine("no key set for group totals".into()))
    }

    /// Records the refusal of a whole request (no valid token, a role that may not ask, a
    /// malformed header or stream): one audit entry.
    ///
    /// # Errors
    /// [`ReleaseError::Audit`] when the log cannot be written.
    pub async fn refuse_request(
        &self,
        caller: Option<&Caller>,
        group: Option<u32>,
        reason: &str,
    ) -> Result<(), ReleaseError> {
        let what = group.map_or_else(|| "a request".to_owned(), |g| format!("group {g}"));
        let entry = NewEntry::request_refused(kind(GROUP_TOTALS_KIND)?, reason, &what, caller);
        self.audit.append(entry).await?;
        Ok(())
    }

    /// Starts a request: checks its header.
    ///
    /// # Errors
    /// [`ReleaseError::InvalidArgument`] for a header that cannot be served (logged by the
    /// caller through [`Self::refuse_request`]).
    pub fn begin(&self, header: GroupTotalsHeader) -> Result<Accumulator, ReleaseError> {
        let ctx = self.context()?;
        let window =
            check_header(&header.plan, ctx.slots()).map_err(ReleaseError::InvalidArgument)?;
        Ok(Accumulator {
            presence: vec![0; window.slots],
            window,
            header,
            sum: LaneSum::new(),
            spans: BTreeMap::new(),
            seen: HashSet::new(),
            accepted: Vec::new(),
            refused: Vec::new(),
            inputs: 0,
        })
    }

    /// Checks one input and, when it passes, adds its lane to the sum (CPU work of one
    /// parse and one addition, on a blocking thread: the signature and registry checks come
    /// first, so an input that fails them costs no ciphertext work).
    ///
    /// # Errors
    /// [`ReleaseError::InvalidArgument`] past [`MAX_INPUTS`]; storage failures.
    pub async fn add(
        &self,
        acc: &mut Accumulator,
        input: GroupTotalsInput,
    ) -> Result<(), ReleaseError> {
        acc.inputs += 1;
        if acc.inputs > MAX_INPUTS {
            return Err(ReleaseError::InvalidArgument(format!(
                "a request holds at most {MAX_INPUTS} inputs"
            )));
        }
        let (meter, sequence) = (input.batch.meter_id.clone(), input.batch.sequence);
        let checked = match self.check_input(acc, &input).await? {
            Ok((first, count, digest)) => {
                let ctx = self.context()?.clone();
                let parameter_set = self.parameter_set.clone();
                let mut sum = std::mem::take(&mut acc.sum);
                let lane = input.batch.analytics_lane;
                let (sum, added) = tokio::task::spawn_blocking(move || {
                    let added = match Ciphertext::from_bytes(&ctx, &lane) {
                        // The circuit restricts the sum to the released hours with one
                        // plaintext multiplication: a lane must leave it a level.
                        Ok(lane) if lane.level() < Level(1) => Ok(Err(format!(
                            "the analytics lane is at level {}, the group total needs 1",
                            lane.level().0
                        ))),
                        Ok(lane) => sum
                            .add(&Evaluator::new(&ctx, None, None), lane)
                            .map(Ok)
                            .map_err(|e| ReleaseError::Engine(format!("adding a lane: {e}"))),
                        Err(e) => Ok(Err(format!(
                            "the analytics lane is not a ciphertext of {parameter_set}: {e}"
                        ))),
                    };
                    (sum, added)
                })
                .await
                .map_err(|e| ReleaseError::Engine(format!("group totals task: {e}")))?;
                acc.sum = sum;
                added?.map(|()| (first, count, digest))
            }
            Err(reason) => Err(reason),
        };
        match checked {
            Ok((first, count, digest)) => {
                for p in &mut acc.presence[first..first + count] {
                    *p += 1;
                }
                acc.spans
                    .entry(meter.clone())
                    .or_default()
                    .push((first, count));
                acc.seen.insert((meter.clone(), sequence));
                acc.accepted.push((meter, sequence, digest));
            }
            Err(reason) => {
                tracing::info!(meter = %meter, sequence, %reason, "group-totals input refused");
                acc.refused.push(InputRefusal {
                    meter_id: meter,
                    sequence,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// The checks of the [module documentation](super) for one input but the lane's parse:
    /// `Ok` with its span and the SHA-256 of its statement, or the refusal reason.
    async fn check_input(
        &self,
        acc: &Accumulator,
        input: &GroupTotalsInput,
    ) -> Result<Result<(usize, usize, [u8; 32]), String>, ReleaseError> {
        let batch = &input.batch;
        let meter = batch.meter_id.as_str();
        if let Err(reason) = validate_meter_id(meter) {
            return Ok(Err(format!("invalid meter id: {reason}")));
        }
        if acc.seen.contains(&(meter.to_owned(), batch.sequence)) {
            return Ok(Err(format!(
                "batch {} of meter {meter} appears more than once",
                batch.sequence
            )));
        }
        let Ok(billing_digest) = <[u8; 32]>::try_from(input.billing_lane_blake3.as_slice()) else {
            return Ok(Err("billing_lane_blake3 must be 32 bytes".into()));
        };
        if !batch.billing_lane.is_empty() {
            return Ok(Err(
                "the billing lane is sent by its digest, not in full".into()
            ));
        }
        let statement = seer_proto::statements::batch_statement(batch, billing_digest);
        if batch.signature.is_empty() {
            return Ok(Err("the batch is not signed".into()));
        }
        {
            let mut conn = self.audit.pool().acquire().await?;
            match device_key(&mut conn, meter).await {
                Ok(key) => {
                    if let Err(error) = key.verify(&statement, &batch.signature) {
                        return Ok(Err(format!("{error} (meter {meter}'s enrolled key)")));
                    }
                }
                Err(
                    error @ (EnrolmentError::NotEnrolled { .. } | EnrolmentError::Revoked { .. }),
                ) => {
                    return Ok(Err(error.to_string()));
                }
                Err(EnrolmentError::Database(error)) => return Err(ReleaseError::Database(error)),
                Err(other) => return Err(ReleaseError::Engine(other.to_string())),
            }
        }
        match self.receipts.registration(meter).await? {
            None => {
                return Ok(Err(format!(
                    "meter {meter} has no registered billing group (no billing receipt yet)"
                )));
            }
            Some(bound) if bound.billing_group != acc.header.group => {
                return Ok(Err(format!(
                    "meter {meter} is registered in group {}, not the request's group {}",
                    bound.billing_group, acc.header.group
                )));
            }
            Some(_) => {}
        }
        if batch.billing_group != acc.header.group {
            return Ok(Err(format!(
                "the batch names group {}, not the request's group {}",
                batch.billing_group, acc.header.group
            )));
        }
        let (first, count) = match check_span(&acc.window, batch) {
            Ok(span) => span,
            Err(reason) => return Ok(Err(reason)),
        };
        if let Some(spans) = acc.spans.get(meter)
            && let Some((f, c)) = spans
                .iter()
                .find(|(f, c)| first < f + c && *f < first + count)
        {
            return Ok(Err(format!(
                "its span (slots {first} .. {}) overlaps the span {f} .. {} of another batch of \
                 meter {meter} in this request",
                first + count,
                f + c
            )));
        }
        let digest = InputDigest::sha256(&statement.encode());
        Ok(Ok((first, count, digest.0)))
    }

    /// Decides and records the request (steps 4–6 of the [module documentation](super)), as
    /// `caller` (already authorized as a utility).
    ///
    /// # Errors
    /// [`ReleaseError::Audit`] or [`ReleaseError::Database`] when the log or the database
    /// cannot be written (then nothing was released); [`ReleaseError::Engine`] when the sum
    /// cannot be decrypted.
    #[tracing::instrument(name = "release.group_totals", skip_all, fields(
        subject = caller.subject(), group = acc.header.group,
        window = %acc.window.statement.window_start, accepted = acc.accepted.len(),
        refused = acc.refused.len()))]
    pub async fn finish(
        &self,
        caller: &Caller,
        acc: Accumulator,
    ) -> Result<GroupTotalsDecision, ReleaseError> {
        let Accumulator {
            header,
            window,
            sum,
            presence,
            mut accepted,
            refused,
            ..
        } = acc;
        let group = header.group;
        let hour_starts = window.hour_starts();
        let mut before: Vec<Option<StoredHour>> = Vec::with_capacity(hour_starts.len());
        {
            let mut conn = self.audit.pool().acquire().await?;
            for start in &hour_starts {
                before.push(store::released(&mut conn, group, start).await?);
            }
        }
        let present_enough =
            group_totals::releasable_hours(&window.plan, &presence, window.slots_per_hour)
                .map_err(|e| ReleaseError::Engine(e.to_string()))?;
        let releasable: Vec<bool> = present_enough
            .iter()
            .zip(&before)
            .map(|(enough, done)| *enough && done.is_none())
            .collect();

        // Top-up, under encryption, and the one decryption.
        let mut decided: Vec<Option<group_totals::HourTotal>> = vec![None; hour_starts.len()];
        if releasable.iter().any(|r| *r) {
            let keys = Arc::clone(&self.keys);
            let parameter_set = self.parameter_set.clone();
            let plan = window.plan;
            let slots_per_hour = window.slots_per_hour;
            let (presence_for_task, releasable_for_task) = (presence.clone(), releasable.clone());
            let span = tracing::info_span!("group_totals.decrypt", lanes = sum.lanes());
            decided = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let mut rng = seer_core::dp::os_seeded_rng()
                        .map_err(|e| ReleaseError::Engine(format!("randomness: {e}")))?;
                    let mut top_up = group_totals::top_up(
                        &plan,
                        &presence_for_task,
                        &releasable_for_task,
                        slots_per_hour,
                        &mut rng,
                    )
                    .map_err(|e| ReleaseError::Engine(e.to_string()))?;
                    let set = keys
                        .get(&parameter_set)
                        .ok_or_else(|| ReleaseError::Engine("no key set".into()))?;
                    let evaluator = Evaluator::new(set.context(), None, None);
                    let total = outputs::group_total(
                        &evaluator,
                        sum,
                        &releasable_for_task,
                        slots_per_hour,
                        &top_up,
                    );
                    // The top-up is never kept: with it, the key authority's own view of the
                    // total would lose the noise it adds.
                    zeroize::Zeroize::zeroize(&mut top_up);
                    let total = total.map_err(ReleaseError::Engine)?;
                    let decrypted = set
                        .output_decryptor()
                        .decrypt(&total)
                        .map_err(|e| ReleaseError::Engine(format!("decrypting the total: {e}")))?;
                    group_totals::released_hours(
                        &decrypted,
                        &presence_for_task,
                        &releasable_for_task,
                        slots_per_hour,
                    )
                    .map_err(|e| ReleaseError::Engine(e.to_string()))
                })
            })
            .await
            .map_err(|e| ReleaseError::Engine(format!("group totals task: {e}")))??;
        }

        // Decisions: rows and audit entries in one transaction.
        accepted.sort();
        let mut hasher = sha2_input(&accepted);
        let window_start = window.statement.window_start.clone();
        let mut tx = self.audit.begin_append().await?;
        let mut hours = Vec::with_capacity(hour_starts.len());
        let mut fresh = Vec::new();
        for (h, start) in hour_starts.iter().enumerate() {
            let min_present = presence[h * window.slots_per_hour..(h + 1) * window.slots_per_hour]
                .iter()
                .copied()
                .min()
                .unwrap_or(0);
            // Released meanwhile by another request: answered from its row.
            if let Some(done) = store::released(tx.connection(), group, start).await? {
                hours.push(GroupHourOutcome {
                    start: start.clone(),
                    status: HourStatus::AlreadyReleased,
                    values: Some(done),
                    min_present,
                });
                continue;
            }
            match decided[h].take() {
                Some(total) => {
                    fresh.push(hours.len());
                    hours.push(GroupHourOutcome {
                        start: start.clone(),
                        status: HourStatus::Released,
                        values: Some(StoredHour {
                            hour_start: start.clone(),
                            total_wh: total.total,
                            interval_wh: if header.per_interval {
                                total.per_interval
                            } else {
                                Vec::new()
                            },
                            min_present: total.min_present,
                            epsilon: window.statement.epsilon,
                            sensitivity_wh: window.statement.sensitivity_wh,
                            audit_seq: 0,
                        }),
                        min_present,
                    });
                }
                None => hours.push(GroupHourOutcome {
                    start: start.clone(),
                    status: HourStatus::TooFewPresent,
                    values: None,
                    min_present,
                }),
            }
        }
        let floor = window.plan.presence_floor().max(group_totals::MIN_PRESENT);
        let decision = if fresh.is_empty() {
            Decision::refused(format!(
                "no hour released: {} already released, {} with an interval below {floor} \
                 meters present ({} inputs accepted, {} refused)",
                hours
                    .iter()
                    .filter(|h| h.status == HourStatus::AlreadyReleased)
                    .count(),
                hours
                    .iter()
                    .filter(|h| h.status == HourStatus::TooFewPresent)
                    .count(),
                accepted.len(),
                refused.len()
            ))
        } else {
            Decision::Granted
        };
        hasher.update(window_start.as_bytes());
        let entry = NewEntry::new(kind(GROUP_TOTALS_KIND)?, decision)
            .caller(caller)
            .period(scope(group, &window_start))
            .input(InputDigest(hasher.finalize().into()));
        let entry = tx.append(entry).await?;
        let now = Utc::now().timestamp_micros();
        for index in &fresh {
            if let Some(values) = hours[*index].values.as_mut() {
                values.audit_seq = entry.sequence;
                store::insert(tx.connection(), group, values, now).await?;
            }
        }
        for refusal in &refused {
            tx.append(
                NewEntry::new(
                    kind(GROUP_TOTALS_INPUT_KIND)?,
                    Decision::refused(refusal.reason.clone()),
                )
                .caller(caller)
                .meter(refusal.meter_id.clone())
                .period(scope(group, &window_start)),
            )
            .await?;
        }
        tx.commit()
            .instrument(tracing::debug_span!("group_totals.commit"))
            .await?;
        tracing::info!(
            released = fresh.len(),
            accepted = accepted.len(),
            refused = refused.len(),
            "group totals decided"
        );
        Ok(GroupTotalsDecision {
            group,
            window_start,
            hours,
            refused,
            accepted: u32::try_from(accepted.len()).unwrap_or(u32::MAX),
            audit_seq: entry.sequence,
            epsilon: window.statement.epsilon,
            noise_scale_wh: window.plan.full_noise().scale(),
        })
    }
}

/// The request's input digest: SHA-256 over the accepted inputs' (meter, sequence, statement
/// digest), sorted, then the window.
fn sha2_input(accepted: &[(String, u64, [u8; 32])]) -> sha2::Sha256 {
    let mut hasher = sha2::Sha256::new();
    for (meter, sequence, digest) in accepted {
        hasher.update(u32::try_from(meter.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(meter.as_bytes());
        hasher.update(sequence.to_be_bytes());
        hasher.update(digest);
    }
    hasher
}

fn kind(name: &str) -> Result<RequestKind, ReleaseError> {
    Ok(RequestKind::try_new(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NoisePlanStatement {
        NoisePlanStatement {
            group_size: 10,
            tolerated: 2,
            sensitivity_wh: 3_450,
            epsilon: 1.0,
            window_start: "2010-01-01T00:00:00+00:00".into(),
            interval_seconds: 900,
            window_slots: 96,
            first_slot: 0,
            slot_count: 0,
        }
    }

    #[test]
    fn headers_that_cannot_be_served_are_refused() {
        assert!(check_header(&plan(), 4_096).is_ok());
        // Local midnight at +05:30 (18:30 UTC) is a whole hour where the meters live.
        let india = NoisePlanStatement {
            window_start: "2010-01-01T00:00:00+05:30".into(),
            ..plan()
        };
        assert!(check_header(&india, 4_096).is_ok());
        let with = |f: &dyn Fn(&mut NoisePlanStatement)| {
            let mut p = plan();
            f(&mut p);
            check_header(&p, 4_096).expect_err("refused")
        };
        assert!(with(&|p| p.group_size = 0).contains("plan"));
        assert!(with(&|p| p.tolerated = 10).contains("plan"));
        assert!(with(&|p| p.epsilon = f64::NAN).contains("epsilon"));
        assert!(with(&|p| p.sensitivity_wh = 0).contains("plan"));
        assert!(with(&|p| p.sensitivity_wh = -5).contains("sensitivity_wh"));
        assert!(with(&|p| p.window_start = "yesterday".into()).contains("window_start"));
        assert!(
            with(&|p| p.window_start = "2010-01-01T00:30:00+00:00".into()).contains("whole hour")
        );
        assert!(with(&|p| p.interval_seconds = 700).contains("divide"));
        assert!(with(&|p| p.window_slots = 95).contains("whole hours"));
        assert!(with(&|p| p.window_slots = 32 * 96).contains("31 days"));
        assert!(
            check_header(&plan(), 64)
                .expect_err("slots")
                .contains("slots")
        );
    }

    #[test]
    fn spans_must_be_the_batch_s_and_inside_the_window() {
        let window = check_header(&plan(), 4_096).expect("window");
        let batch = |start: &str, end: &str, first: u32, count: u32| UploadBatch {
            start: start.into(),
            end: end.into(),
            noise_plan: Some(seer_proto::statements::noise_plan_wire(
                &NoisePlanStatement {
                    first_slot: first,
                    slot_count: count,
                    ..plan()
                },
            )),
            ..UploadBatch::default()
        };
        let ok = batch(
            "2010-01-01T06:00:00+00:00",
            "2010-01-01T12:00:00+00:00",
            24,
            24,
        );
        assert_eq!(check_span(&window, &ok), Ok((24, 24)));
        // The same instants written with another offset are the same span.
        let offset = batch(
            "2010-01-01T07:00:00+01:00",
            "2010-01-01T13:00:00+01:00",
            24,
            24,
        );
        assert_eq!(check_span(&window, &offset), Ok((24, 24)));
        for (b, what) in [
            (
                batch(
                    "2010-01-01T06:00:00+00:00",
                    "2010-01-01T12:00:00+00:00",
                    23,
                    24,
                ),
                "span",
            ),
            (
                batch(
                    "2010-01-01T06:00:00+00:00",
                    "2010-01-01T12:00:00+00:00",
                    24,
                    23,
                ),
                "span",
            ),
            (
                batch(
                    "2010-01-01T06:00:00+00:00",
                    "2010-01-02T06:00:00+00:00",
                    24,
                    96,
                ),
                "window",
            ),
            (
                batch(
                    "2010-01-01T06:00:00+00:00",
                    "2010-01-01T12:00:00+00:00",
                    24,
                    0,
                ),
                "window",
            ),
        ] {
            let reason = check_span(&window, &b).expect_err("refused");
            assert!(reason.contains(what), "{reason}");
        }
        let mut other = ok.clone();
        if let Some(p) = other.noise_plan.as_mut() {
            p.epsilon = 2.0;
        }
        assert!(
            check_span(&window, &other)
                .expect_err("plan")
                .contains("not the request's")
        );
        let mut none = ok;
        none.noise_plan = None;
        assert!(
            check_span(&window, &none)
                .expect_err("none")
                .contains("no noise plan")
        );
    }
}
