//! A meter's batch as the utility accepts it: the wire message [`UploadBatch`] checked field
//! by field into a [`Batch`] (parse, don't validate), and the batch's content digest.
//!
//! What is checked here needs no CKKS context: the meter id's syntax, the sequence, the
//! period and its consistency with the interval, the reading count, ε, the billing
//! position against the packing group's capacity, and the distributed-noise plan when the
//! batch carries one ([`BatchNoisePlan`]: sane parameters, a window of whole hours, and a span
//! that is exactly the batch's interval). The two lanes are checked as ciphertexts
//! separately ([`crate::lanes`]), off the async runtime.
//!
//! The plan is checked here, at ingest, rather than only by the key authority when it sums
//! a group's lanes: a batch whose plan the key authority would refuse can never count towards
//! a group total, so storing it would only hide a broken meter until the release.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, TimeZone as _, Timelike as _, Utc};
use seer_core::dp::{Epsilon, MAX_GROUP_SIZE, MAX_SENSITIVITY_WH, SharePlan};
use seer_core::units::Wh;
use seer_proto::v1::{NoisePlan, UploadBatch};

/// Longest meter id, in bytes.
pub const MAX_METER_ID_LEN: usize = seer_core::vocab::MAX_METER_ID_LEN;

/// The shortest reading interval a batch may claim: one minute (the UCI data's resolution,
/// and the resolution of the tariff's time-of-use bands). A batch over `[start, end)` holds at
/// most `(end - start) / 60 s` readings.
pub const MIN_READING_INTERVAL_SECONDS: i64 = 60;

/// Largest sequence number (sequences are stored as signed 64-bit integers).
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// Longest window a noise plan may describe: 31 days (a batch window is a day or a few; a
/// month is the longest a batch may span, as it lies within one billing period).
pub const MAX_NOISE_WINDOW_SECONDS: i64 = 31 * 86_400;

/// Why a batch (or one of its fields) is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The meter id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("meter id {meter_id:?} is invalid: {reason}")]
    InvalidMeterId {
        /// The id given (truncated to a printable length).
        meter_id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Sequences start at 1.
    #[error("sequence 0 is invalid: sequences start at 1")]
    ZeroSequence,
    /// A sequence beyond [`MAX_SEQUENCE`].
    #[error("sequence {sequence} exceeds the largest sequence {MAX_SEQUENCE}")]
    SequenceTooLarge {
        /// The sequence given.
        sequence: u64,
    },
    /// Another word of the shared vocabulary is refused by its parser (its message).
    #[error("{0}")]
    Vocabulary(String),
    /// A period that is not `YYYY-MM`.
    #[error("period {period:?} is invalid: expected YYYY-MM")]
    InvalidPeriod {
        /// The period given (truncated).
        period: String,
    },
    /// A timestamp that is not RFC 3339.
    #[error("{field} {value:?} is not an RFC 3339 timestamp: {reason}")]
    InvalidTimestamp {
        /// `start` or `end`.
        field: &'static str,
        /// The value given (truncated).
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// `start` is not before `end`.
    #[error("the interval is empty: start {start} is not before end {end}")]
    EmptyInterval {
        /// Start.
        start: DateTime<FixedOffset>,
        /// End.
        end: DateTime<FixedOffset>,
    },
    /// The interval does not lie within the period's month.
    #[error("the interval {start} .. {end} does not lie within period {period}")]
    OutsidePeriod {
        /// The period.
        period: Period,
        /// Start.
        start: DateTime<FixedOffset>,
        /// End.
        end: DateTime<FixedOffset>,
    },
    /// No readings, or more readings than the interval holds.
    #[error("{readings} readings do not fit the interval: expected 1 to {max}")]
    ReadingCount {
        /// The count given.
        readings: u32,
        /// The most the interval holds at one reading per minute.
        max: i64,
    },
    /// ε is negative, NaN or infinite.
    #[error("epsilon_spent {epsilon} is invalid: it must be finite and at least 0")]
    InvalidEpsilon {
        /// The value given.
        epsilon: f64,
    },
    /// The billing position lies outside the packing group.
    #[error("billing position {position} is outside the packing group of {capacity} homes")]
    BillingPosition {
        /// The position given.
        position: u32,
        /// Homes per group.
        capacity: usize,
    },
    /// A lane carries no bytes.
    #[error("the {lane} lane is empty")]
    EmptyLane {
        /// Which lane.
        lane: Lane,
    },
    /// The distributed-noise plan is not sane, or does not describe the batch's interval.
    #[error("noise_plan.{field} is invalid: {reason}")]
    InvalidNoisePlan {
        /// The plan's field at fault (`group_size`, `window_start`, `first_slot`, ...).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The two lanes of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Exact energy per tariff cell, for billing.
    Billing,
    /// Readings with local differential-privacy noise, for analytics.
    Analytics,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Billing => "billing",
            Lane::Analytics => "analytics",
        })
    }
}

/// At most this many characters of a refused value are echoed back in messages.
const ECHO_LIMIT: usize = 80;

fn echo(value: &str) -> String {
    value.chars().take(ECHO_LIMIT).collect()
}

/// A meter id ([`seer_core::MeterId`]: 1 to [`MAX_METER_ID_LEN`] bytes of ASCII letters,
/// digits, `-`, `_`, `.`, `:`, the rule the key authority applies to household tokens) and a
/// billing period ([`seer_core::Period`]: one calendar month, written `YYYY-MM`, years 1000 to
/// 9999): the one vocabulary of SEER.
pub use seer_core::{MeterId, Period};

impl From<seer_core::Error> for BatchError {
    /// A meter id or period refused by its one parser keeps the batch's own wording.
    fn from(error: seer_core::Error) -> Self {
        match error {
            seer_core::Error::InvalidMeterId { meter_id, reason } => {
                BatchError::InvalidMeterId { meter_id, reason }
            }
            seer_core::Error::InvalidPeriod { period } => BatchError::InvalidPeriod { period },
            other => BatchError::Vocabulary(other.to_string()),
        }
    }
}

/// The BLAKE3 digest of a batch's content (see [`Batch::digest`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest(blake3::Hash);

impl ContentDigest {
    /// Lowercase hex, as stored.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.0.to_hex().to_string()
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentDigest({})", self.0.to_hex())
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

/// A UTC instant in the one text form the store keeps window and hour starts in, whole
/// seconds with `Z` (`2007-01-01T18:30:00Z`): fixed width for years 1000 to 9999, so the text
/// order is the time order.
#[must_use]
pub fn utc_rfc3339(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A batch's distributed-noise plan (`seer.v1.NoisePlan`), checked on its own and against the
/// batch's interval (see [`BatchNoisePlan::try_new`]). It keeps the plan exactly as signed.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNoisePlan {
    wire: NoisePlan,
    window_start: DateTime<FixedOffset>,
    share: SharePlan,
}

impl BatchNoisePlan {
    /// Checks `plan` for a batch over `[start, end)`, in field order:
    /// - `group_size` in 1 ..= [`MAX_GROUP_SIZE`], `tolerated` below it;
    /// - `sensitivity_wh` in 1 ..= [`MAX_SENSITIVITY_WH`]; `epsilon` a valid [`Epsilon`]
    ///   (finite, positive, within its bounds);
    /// - `window_start` RFC 3339 at a whole hour (in the offset it states);
    /// - `interval_seconds` a divisor of 3600; `window_slots` at least 1, a window of whole
    ///   hours and at most [`MAX_NOISE_WINDOW_SECONDS`];
    /// - `slot_count` at least 1, the span `[first_slot, first_slot + slot_count)` inside the
    ///   window, and exactly the batch's interval: `first_slot = (start − window_start) /
    ///   interval` and `slot_count = (end − start) / interval`, both without remainder.
    ///
    /// # Errors
    /// [`BatchError::InvalidNoisePlan`] naming the first field at fault.
    pub fn try_new(
        plan: NoisePlan,
        start: DateTime<FixedOffset>,
        end: DateTime<FixedOffset>,
    ) -> Result<Self, BatchError> {
        let invalid =
            |field: &'static str, reason: String| BatchError::InvalidNoisePlan { field, reason };
        if !(1..=MAX_GROUP_SIZE).contains(&plan.group_size) {
            return Err(invalid(
                "group_size",
                format!("{} is outside 1 ..= {MAX_GROUP_SIZE}", plan.group_size),
            ));
        }
        if plan.tolerated >= plan.group_size {
            return Err(invalid(
                "tolerated",
                format!(
                    "{} of a group of {} leaves no meter to carry the noise",
                    plan.tolerated, plan.group_size
                ),
            ));
        }
        if !(1..=MAX_SENSITIVITY_WH).contains(&plan.sensitivity_wh) {
            return Err(invalid(
                "sensitivity_wh",
                format!(
                    "{} is outside 1 ..= {MAX_SENSITIVITY_WH}",
                    plan.sensitivity_wh
                ),
            ));
        }
        let epsilon = Epsilon::try_new(plan.epsilon)
            .map_err(|e| invalid("epsilon", format!("{}: {e}", plan.epsilon)))?;
        let window_start = DateTime::parse_from_rfc3339(&plan.window_start).map_err(|e| {
            invalid(
                "window_start",
                format!(
                    "{:?} is not an RFC 3339 timestamp: {e}",
                    echo(&plan.window_start)
                ),
            )
        })?;
        if plan.interval_seconds == 0 || 3600 % plan.interval_seconds != 0 {
            return Err(invalid(
                "interval_seconds",
                format!("{} does not divide an hour (3600 s)", plan.interval_seconds),
            ));
        }
        let interval = i64::from(plan.interval_seconds);
        let window_seconds = i64::from(plan.window_slots) * interval;
        if plan.window_slots == 0 {
            return Err(invalid("window_slots", "0: the window is empty".into()));
        }
        if window_seconds > MAX_NOISE_WINDOW_SECONDS {
            return Err(invalid(
                "window_slots",
                format!(
                    "{} slots of {interval} s are longer than 31 days",
                    plan.window_slots
                ),
            ));
        }
        if window_seconds % 3600 != 0 {
            return Err(invalid(
                "window_slots",
                format!(
                    "{} slots of {interval} s are not a whole number of hours",
                    plan.window_slots
                ),
            ));
        }
        if window_start.minute() != 0
            || window_start.second() != 0
            || window_start.nanosecond() != 0
        {
            return Err(invalid(
                "window_start",
                format!("{} is not at a whole hour", plan.window_start),
            ));
        }
        if plan.slot_count == 0 {
            return Err(invalid("slot_count", "0: the span is empty".into()));
        }
        if u64::from(plan.first_slot) + u64::from(plan.slot_count) > u64::from(plan.window_slots) {
            return Err(invalid(
                "slot_count",
                format!(
                    "the span {} + {} slots runs past the window of {} slots",
                    plan.first_slot, plan.slot_count, plan.window_slots
                ),
            ));
        }
        let interval_us = interval * 1_000_000;
        let offset_us = start.timestamp_micros() - window_start.timestamp_micros();
        if offset_us < 0
            || offset_us % interval_us != 0
            || offset_us / interval_us != i64::from(plan.first_slot)
        {
            return Err(invalid(
                "first_slot",
                format!(
                    "{} is not the batch's start {start} in {interval} s slots from the window's \
                     start {window_start}",
                    plan.first_slot
                ),
            ));
        }
        let span_us = end.timestamp_micros() - start.timestamp_micros();
        if span_us % interval_us != 0 || span_us / interval_us != i64::from(plan.slot_count) {
            return Err(invalid(
                "slot_count",
                format!(
                    "{} slots of {interval} s are not the batch's interval {start} .. {end}",
                    plan.slot_count
                ),
            ));
        }
        let sensitivity = Wh::try_new(plan.sensitivity_wh)
            .map_err(|e| invalid("sensitivity_wh", e.to_string()))?;
        let share = SharePlan::try_new(plan.group_size, plan.tolerated, sensitivity, epsilon)
            .map_err(|e| invalid("epsilon", e.to_string()))?;
        Ok(Self {
            wire: plan,
            window_start,
            share,
        })
    }

    /// The plan exactly as the meter signed it.
    #[must_use]
    pub fn wire(&self) -> &NoisePlan {
        &self.wire
    }

    /// The start of the window (slot 0), in the offset the meter stated.
    #[must_use]
    pub fn window_start(&self) -> DateTime<FixedOffset> {
        self.window_start
    }

    /// The start of the window in UTC: what names the window in the store.
    #[must_use]
    pub fn window_start_utc(&self) -> DateTime<Utc> {
        self.window_start.with_timezone(&Utc)
    }

    /// The noise shares' plan (group size, tolerance, Δ, ε).
    #[must_use]
    pub fn share_plan(&self) -> &SharePlan {
        &self.share
    }
}

/// A checked batch (see the [module documentation](self)); its lanes are still opaque bytes.
#[derive(Clone, PartialEq)]
pub struct Batch {
    meter_id: MeterId,
    sequence: u64,
    period: Period,
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
    start_text: String,
    end_text: String,
    noise_plan: Option<BatchNoisePlan>,
    readings: u32,
    billing_group: u32,
    billing_position: u32,
    billing_lane: Vec<u8>,
    analytics_lane: Vec<u8>,
    epsilon_spent: f64,
    signature: Vec<u8>,
    meter_certificate: Vec<u8>,
    digest: ContentDigest,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("meter_id", &self.meter_id)
            .field("sequence", &self.sequence)
            .field("period", &self.period)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("readings", &self.readings)
            .field("billing_group", &self.billing_group)
            .field("billing_position", &self.billing_position)
            .field("billing_lane_bytes", &self.billing_lane.len())
            .field("analytics_lane_bytes", &self.analytics_lane.len())
            .field("epsilon_spent", &self.epsilon_spent)
            .field(
                "noise_plan",
                &self.noise_plan.as_ref().map(BatchNoisePlan::wire),
            )
            .field("digest", &self.digest)
            .finish()
    }
}

impl Batch {
    /// Checks an [`UploadBatch`]; `billing_capacity` is the number of homes per billing
    /// packing group ([`seer_core::circuits::billing::BillingLayout::capacity`]).
    ///
    /// The period must name the calendar month that contains the whole interval, as seen in
    /// the UTC offset the meter gave for `start` (its local time): `period-01T00:00 ≤ start <
    /// end ≤ first day of the next month T00:00`, both in that offset. A noise plan, when
    /// present, is checked last ([`BatchNoisePlan::try_new`]); a batch without one is accepted
    /// (meters built before plans existed).
    ///
    /// # Errors
    /// The first [`BatchError`] found, in field order.
    pub fn try_from_wire(wire: UploadBatch, billing_capacity: usize) -> Result<Self, BatchError> {
        let meter_id = MeterId::try_new(wire.meter_id)?;
        let sequence = check_sequence(wire.sequence)?;
        let period: Period = wire.period.parse()?;
        let start = parse_timestamp("start", &wire.start)?;
        let end = parse_timestamp("end", &wire.end)?;
        if start >= end {
            return Err(BatchError::EmptyInterval { start, end });
        }
        let offset = *start.offset();
        let local_midnight = |day: NaiveDate| {
            offset
                .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
                .single()
        };
        let (Some(period_start), Some(period_end)) = (
            local_midnight(period.first_day()),
            local_midnight(period.end_day()),
        ) else {
            return Err(BatchError::OutsidePeriod { period, start, end });
        };
        if start < period_start || end > period_end {
            return Err(BatchError::OutsidePeriod { period, start, end });
        }
        let max = (end - start).num_seconds() / MIN_READING_INTERVAL_SECONDS;
        if wire.readings == 0 || i64::from(wire.readings) > max {
            return Err(BatchError::ReadingCount {
                readings: wire.readings,
                max,
            });
        }
        if !(wire.epsilon_spent.is_finite() && wire.epsilon_spent >= 0.0) {
            return Err(BatchError::InvalidEpsilon {
                epsilon: wire.epsilon_spent,
            });
        }
        if usize::try_from(wire.billing_position).map_or(true, |p| p >= billing_capacity) {
            return Err(BatchError::BillingPosition {
                position: wire.billing_position,
                capacity: billing_capacity,
            });
        }
        if wire.billing_lane.is_empty() {
            return Err(BatchError::EmptyLane {
                lane: Lane::Billing,
            });
        }
        if wire.analytics_lane.is_empty() {
            return Err(BatchError::EmptyLane {
                lane: Lane::Analytics,
            });
        }
        let noise_plan = wire
            .noise_plan
            .map(|plan| BatchNoisePlan::try_new(plan, start, end))
            .transpose()?;
        // -0.0 and 0.0 are the same privacy loss; store (and digest) one of them.
        let epsilon_spent = wire.epsilon_spent + 0.0;
        let mut batch = Self {
            meter_id,
            sequence,
            period,
            start,
            end,
            start_text: wire.start,
            end_text: wire.end,
            noise_plan,
            readings: wire.readings,
            billing_group: wire.billing_group,
            billing_position: wire.billing_position,
            billing_lane: wire.billing_lane,
            analytics_lane: wire.analytics_lane,
            epsilon_spent,
            signature: wire.signature,
            meter_certificate: wire.meter_certificate,
            digest: ContentDigest(blake3::Hash::from_bytes([0; 32])),
        };
        batch.digest = batch.compute_digest();
        Ok(batch)
    }

    /// The BLAKE3 digest of everything the batch says, in a fixed, length-prefixed encoding
    /// (the instants as UTC microseconds plus the stated offset, ε by its bits). Two uploads
    /// of one (meter, sequence) are the same batch exactly when their digests are equal.
    fn compute_digest(&self) -> ContentDigest {
        let mut hasher = blake3::Hasher::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(b"seer.v1.UploadBatch content digest, version 1");
        field(self.meter_id.as_str().as_bytes());
        field(&self.sequence.to_le_bytes());
        field(self.period.to_string().as_bytes());
        field(&self.start_micros().to_le_bytes());
        field(&self.end_micros().to_le_bytes());
        field(&self.utc_offset_seconds().to_le_bytes());
        field(&self.readings.to_le_bytes());
        field(&self.billing_group.to_le_bytes());
        field(&self.billing_position.to_le_bytes());
        field(&self.billing_lane);
        field(&self.analytics_lane);
        field(&self.epsilon_spent.to_bits().to_le_bytes());
        // Appended only when present: a batch without a plan digests as it always did, so
        // the resend of a batch stored before plans existed is still a duplicate.
        if let Some(plan) = &self.noise_plan {
            let plan = plan.wire();
            field(b"noise_plan");
            field(&plan.group_size.to_le_bytes());
            field(&plan.tolerated.to_le_bytes());
            field(&plan.sensitivity_wh.to_le_bytes());
            field(&plan.epsilon.to_bits().to_le_bytes());
            field(plan.window_start.as_bytes());
            field(&plan.interval_seconds.to_le_bytes());
            field(&plan.window_slots.to_le_bytes());
            field(&plan.first_slot.to_le_bytes());
            field(&plan.slot_count.to_le_bytes());
        }
        ContentDigest(hasher.finalize())
    }

    /// The meter.
    #[must_use]
    pub fn meter_id(&self) -> &MeterId {
        &self.meter_id
    }

    /// The sequence (≥ 1).
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The billing period.
    #[must_use]
    pub fn period(&self) -> Period {
        self.period
    }

    /// Start of the first reading.
    #[must_use]
    pub fn start(&self) -> DateTime<FixedOffset> {
        self.start
    }

    /// End (exclusive) of the last reading.
    #[must_use]
    pub fn end(&self) -> DateTime<FixedOffset> {
        self.end
    }

    /// `start` exactly as the meter sent it (its signature covers this text).
    #[must_use]
    pub fn start_as_sent(&self) -> &str {
        &self.start_text
    }

    /// `end` exactly as the meter sent it.
    #[must_use]
    pub fn end_as_sent(&self) -> &str {
        &self.end_text
    }

    /// The distributed-noise plan, when the meter sent one.
    #[must_use]
    pub fn noise_plan(&self) -> Option<&BatchNoisePlan> {
        self.noise_plan.as_ref()
    }

    /// Start as microseconds since the Unix epoch.
    #[must_use]
    pub fn start_micros(&self) -> i64 {
        self.start.timestamp_micros()
    }

    /// End as microseconds since the Unix epoch.
    #[must_use]
    pub fn end_micros(&self) -> i64 {
        self.end.timestamp_micros()
    }

    /// The UTC offset the meter stated for `start`, in seconds east of UTC.
    #[must_use]
    pub fn utc_offset_seconds(&self) -> i32 {
        self.start.offset().local_minus_utc()
    }

    /// Number of readings.
    #[must_use]
    pub fn readings(&self) -> u32 {
        self.readings
    }

    /// The billing packing group.
    #[must_use]
    pub fn billing_group(&self) -> u32 {
        self.billing_group
    }

    /// The position of the meter's block in its group.
    #[must_use]
    pub fn billing_position(&self) -> u32 {
        self.billing_position
    }

    /// The billing lane's serialized ciphertext.
    #[must_use]
    pub fn billing_lane(&self) -> &[u8] {
        &self.billing_lane
    }

    /// The analytics lane's serialized ciphertext.
    #[must_use]
    pub fn analytics_lane(&self) -> &[u8] {
        &self.analytics_lane
    }

    /// ε spent on the analytics lane.
    #[must_use]
    pub fn epsilon_spent(&self) -> f64 {
        self.epsilon_spent
    }

    /// The meter's signature over the batch statement, as received (empty when unsigned:
    /// accepted only by a utility that does not check signatures).
    #[must_use]
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The key authority's certificate of the meter's device key, as received.
    #[must_use]
    pub fn meter_certificate(&self) -> &[u8] {
        &self.meter_certificate
    }

    /// The content digest.
    #[must_use]
    pub fn digest(&self) -> ContentDigest {
        self.digest
    }
}

fn check_sequence(sequence: u64) -> Result<u64, BatchError> {
    match sequence {
        0 => Err(BatchError::ZeroSequence),
        s if s > MAX_SEQUENCE => Err(BatchError::SequenceTooLarge { sequence }),
        s => Ok(s),
    }
}

fn parse_timestamp(field: &'static str, value: &str) -> Result<DateTime<FixedOffset>, BatchError> {
    DateTime::parse_from_rfc3339(value).map_err(|e| BatchError::InvalidTimestamp {
        field,
        value: echo(value),
        reason: e.to_string(),
    })
}

/// Microseconds since the Unix epoch as a UTC instant (for values read back from storage).
pub(crate) fn utc_from_micros(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> UploadBatch {
        UploadBatch {
            meter_id: "meter-1".into(),
            sequence: 1,
            period: "2007-01".into(),
            start: "2007-01-01T00:00:00+05:30".into(),
            end: "2007-01-02T00:00:00+05:30".into(),
            readings: 96,
            billing_lane: vec![1, 2, 3],
            billing_position: 3,
            billing_group: 0,
            analytics_lane: vec![4, 5],
            epsilon_spent: 0.5,
            ..UploadBatch::default()
        }
    }

    /// An edit of the well-formed wire batch.
    type Edit = Box<dyn Fn(&mut UploadBatch)>;

    fn check(edit: impl FnOnce(&mut UploadBatch)) -> Result<Batch, BatchError> {
        let mut w = wire();
        edit(&mut w);
        Batch::try_from_wire(w, 1024)
    }

    #[test]
    fn accepts_a_well_formed_batch() {
        let batch = check(|_| {}).expect("valid");
        assert_eq!(batch.meter_id().as_str(), "meter-1");
        assert_eq!(batch.period().to_string(), "2007-01");
        assert_eq!(batch.utc_offset_seconds(), 19_800);
        assert_eq!(batch.digest(), check(|_| {}).expect("valid").digest());
    }

    #[test]
    fn the_digest_covers_every_field() {
        let base = check(|_| {}).expect("valid").digest();
        let edits: Vec<Edit> = vec![
            Box::new(|w| w.meter_id = "meter-2".into()),
            Box::new(|w| w.sequence = 2),
            Box::new(|w| w.start = "2007-01-01T00:15:00+05:30".into()),
            Box::new(|w| w.end = "2007-01-01T23:00:00+05:30".into()),
            Box::new(|w| w.readings = 95),
            Box::new(|w| w.billing_group = 1),
            Box::new(|w| w.billing_position = 4),
            Box::new(|w| w.billing_lane = vec![1, 2, 4]),
            Box::new(|w| w.analytics_lane = vec![4, 5, 6]),
            Box::new(|w| w.epsilon_spent = 0.25),
            // The same instants in another offset: a different statement of local time.
            Box::new(|w| {
                w.start = "2007-01-01T00:30:00+06:00".into();
                w.end = "2007-01-02T00:30:00+06:00".into();
            }),
        ];
        for edit in edits {
            assert_ne!(check(edit).expect("valid").digest(), base);
        }
        // Moving bytes between the lanes changes the digest (length prefixes).
        let moved = check(|w| {
            w.billing_lane = vec![1, 2];
            w.analytics_lane = vec![3, 4, 5];
        })
        .expect("valid");
        assert_ne!(moved.digest(), base);
    }

    #[test]
    fn refuses_each_malformed_field() {
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|w| w.meter_id = String::new()), "meter id"),
            (Box::new(|w| w.meter_id = "a b".into()), "meter id"),
            (Box::new(|w| w.meter_id = "m".repeat(65)), "longer than 64"),
            (Box::new(|w| w.sequence = 0), "sequence 0"),
            (Box::new(|w| w.sequence = u64::MAX), "exceeds"),
            (Box::new(|w| w.period = "2007-13".into()), "period"),
            (Box::new(|w| w.period = "2007-1".into()), "period"),
            (Box::new(|w| w.period = "+207-01".into()), "period"),
            (Box::new(|w| w.start = "yesterday".into()), "start"),
            (Box::new(|w| w.end = "2007-01-02 00:00".into()), "end"),
            (
                Box::new(|w| w.end = "2007-01-01T00:00:00+05:30".into()),
                "empty",
            ),
            (Box::new(|w| w.period = "2007-02".into()), "within period"),
            (
                Box::new(|w| w.end = "2007-02-01T00:00:01+05:30".into()),
                "within period",
            ),
            (Box::new(|w| w.readings = 0), "readings"),
            (Box::new(|w| w.readings = 1441), "readings"),
            (Box::new(|w| w.epsilon_spent = -0.1), "epsilon"),
            (Box::new(|w| w.epsilon_spent = f64::NAN), "epsilon"),
            (Box::new(|w| w.epsilon_spent = f64::INFINITY), "epsilon"),
            (Box::new(|w| w.billing_position = 1024), "position 1024"),
            (Box::new(|w| w.billing_lane.clear()), "billing lane"),
            (Box::new(|w| w.analytics_lane.clear()), "analytics lane"),
        ];
        for (edit, expected) in cases {
            let error = check(edit).expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }

    fn plan() -> NoisePlan {
        NoisePlan {
            group_size: 1_000,
            tolerated: 100,
            sensitivity_wh: 3_450,
            epsilon: 0.5,
            window_start: "2007-01-01T00:00:00+05:30".into(),
            interval_seconds: 900,
            window_slots: 96,
            first_slot: 0,
            slot_count: 96,
        }
    }

    /// An edit of the well-formed plan.
    type PlanEdit = Box<dyn Fn(&mut NoisePlan)>;

    fn check_plan(edit: impl FnOnce(&mut NoisePlan)) -> Result<Batch, BatchError> {
        let mut p = plan();
        edit(&mut p);
        check(|w| w.noise_plan = Some(p))
    }

    #[test]
    fn accepts_a_plan_that_describes_the_batch() {
        let batch = check_plan(|_| {}).expect("valid");
        let kept = batch.noise_plan().expect("the plan is kept");
        assert_eq!(kept.wire(), &plan());
        assert_eq!(utc_rfc3339(kept.window_start_utc()), "2006-12-31T18:30:00Z");
        assert_eq!(kept.share_plan().honest_floor(), 900);
        assert_eq!(batch.start_as_sent(), "2007-01-01T00:00:00+05:30");
        // A later batch of a longer window, hourly slots: slots 6 .. 6 + 18 of 48.
        check(|w| {
            w.start = "2007-01-01T06:00:00+05:30".into();
            w.readings = 18;
            w.noise_plan = Some(NoisePlan {
                interval_seconds: 3600,
                window_slots: 48,
                first_slot: 6,
                slot_count: 18,
                ..plan()
            });
        })
        .expect("a span inside a two-day window");
        // The same window in another offset is the same instant; its whole hours are those of
        // the offset it states.
        check_plan(|p| p.window_start = "2006-12-31T23:00:00+04:30".into()).expect("same window");
        let error = check_plan(|p| p.window_start = "2006-12-31T18:30:00Z".into())
            .expect_err("18:30 is not a whole hour");
        assert!(error.to_string().contains("whole hour"), "{error}");
        // Older meters send no plan.
        assert!(check(|_| {}).expect("valid").noise_plan().is_none());
    }

    #[test]
    fn the_digest_covers_the_plan_and_is_unchanged_without_one() {
        let without = check(|_| {}).expect("valid").digest();
        let with = check_plan(|_| {}).expect("valid").digest();
        assert_ne!(with, without);
        let edits: Vec<PlanEdit> = vec![
            Box::new(|p| p.group_size = 1_001),
            Box::new(|p| p.tolerated = 101),
            Box::new(|p| p.sensitivity_wh = 3_451),
            Box::new(|p| p.epsilon = 0.25),
            Box::new(|p| p.window_start = "2006-12-31T23:00:00+04:30".into()),
        ];
        for edit in edits {
            assert_ne!(check_plan(edit).expect("valid").digest(), with);
        }
        // The digest of a batch without a plan is the one stored before plans existed.
        assert_eq!(
            without.to_hex(),
            check(|w| w.noise_plan = None)
                .expect("valid")
                .digest()
                .to_hex()
        );
    }

    #[test]
    fn refuses_each_insane_plan() {
        let cases: Vec<(PlanEdit, &str)> = vec![
            (Box::new(|p| p.group_size = 0), "noise_plan.group_size"),
            (
                Box::new(|p| p.group_size = 10_000_001),
                "noise_plan.group_size",
            ),
            (Box::new(|p| p.tolerated = 1_000), "noise_plan.tolerated"),
            (Box::new(|p| p.tolerated = 5_000), "noise_plan.tolerated"),
            (
                Box::new(|p| p.sensitivity_wh = 0),
                "noise_plan.sensitivity_wh",
            ),
            (
                Box::new(|p| p.sensitivity_wh = -1),
                "noise_plan.sensitivity_wh",
            ),
            (
                Box::new(|p| p.sensitivity_wh = MAX_SENSITIVITY_WH + 1),
                "noise_plan.sensitivity_wh",
            ),
            (Box::new(|p| p.epsilon = 0.0), "noise_plan.epsilon"),
            (Box::new(|p| p.epsilon = -0.5), "noise_plan.epsilon"),
            (Box::new(|p| p.epsilon = f64::NAN), "noise_plan.epsilon"),
            (
                Box::new(|p| p.epsilon = f64::INFINITY),
                "noise_plan.epsilon",
            ),
            (
                Box::new(|p| p.window_start = "2007-01-01 00:00".into()),
                "noise_plan.window_start",
            ),
            (
                Box::new(|p| p.interval_seconds = 0),
                "noise_plan.interval_seconds",
            ),
            (
                Box::new(|p| p.interval_seconds = 7),
                "noise_plan.interval_seconds",
            ),
            (
                Box::new(|p| p.interval_seconds = 7200),
                "noise_plan.interval_seconds",
            ),
            (Box::new(|p| p.window_slots = 0), "noise_plan.window_slots"),
            (
                Box::new(|p| p.window_slots = 31 * 96 + 4),
                "longer than 31 days",
            ),
            (Box::new(|p| p.window_slots = 97), "whole number of hours"),
            (
                Box::new(|p| p.window_start = "2007-01-01T00:30:00+06:00".into()),
                "whole hour",
            ),
            (Box::new(|p| p.slot_count = 0), "noise_plan.slot_count"),
            (
                Box::new(|p| {
                    p.first_slot = 1;
                    p.slot_count = 96;
                }),
                "runs past the window",
            ),
            (
                Box::new(|p| p.first_slot = u32::MAX),
                "runs past the window",
            ),
            // The span must be the batch's interval, exactly.
            (
                Box::new(|p| {
                    p.window_slots = 192;
                    p.first_slot = 1;
                }),
                "noise_plan.first_slot",
            ),
            (
                Box::new(|p| p.window_start = "2007-01-01T01:00:00+05:30".into()),
                "noise_plan.first_slot",
            ),
            (
                Box::new(|p| {
                    p.window_slots = 192;
                    p.slot_count = 95;
                }),
                "noise_plan.slot_count",
            ),
            (
                Box::new(|p| {
                    p.interval_seconds = 3600;
                    p.window_slots = 24;
                    p.slot_count = 24;
                    p.window_start = "2007-01-01T00:00:00+05:00".into();
                }),
                "noise_plan.first_slot",
            ),
        ];
        for (edit, expected) in cases {
            let error = check_plan(edit).expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
        // A batch that does not start on the plan's slot grid.
        let error = check(|w| {
            w.start = "2007-01-01T00:05:00+05:30".into();
            w.noise_plan = Some(plan());
        })
        .expect_err("off the grid")
        .to_string();
        assert!(error.contains("noise_plan.first_slot"), "{error}");
        // Nor end on it.
        let error = check(|w| {
            w.end = "2007-01-01T23:50:00+05:30".into();
            w.noise_plan = Some(NoisePlan {
                slot_count: 95,
                ..plan()
            });
        })
        .expect_err("off the grid")
        .to_string();
        assert!(error.contains("noise_plan.slot_count"), "{error}");
    }

    #[test]
    fn a_whole_month_in_local_time_is_one_period() {
        check(|w| {
            w.start = "2007-01-01T00:00:00+05:30".into();
            w.end = "2007-02-01T00:00:00+05:30".into();
            w.readings = 31 * 96;
        })
        .expect("the whole month");
        let december = check(|w| {
            w.period = "2007-12".into();
            w.start = "2007-12-31T00:00:00Z".into();
            w.end = "2008-01-01T00:00:00Z".into();
        })
        .expect("december ends at the new year");
        assert_eq!(december.period().end_day().to_string(), "2008-01-01");
    }
}
