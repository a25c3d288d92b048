//! A meter's batch as the utility accepts it: the wire message [`UploadBatch`] checked field
//! by field into a [`Batch`] (parse, don't validate), and the batch's content digest.
//!
//! What is checked here needs no CKKS context: the meter id's syntax, the sequence, the
//! period and its consistency with the interval, the reading count, ε, and the billing
//! position against the packing group's capacity. The two lanes are checked as ciphertexts
//! separately ([`crate::lanes`]), off the async runtime.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone as _, Utc};
use seer_proto::v1::UploadBatch;

/// Longest meter id, in bytes.
pub const MAX_METER_ID_LEN: usize = 64;

/// The shortest reading interval a batch may claim: one minute (the UCI data's resolution,
/// and the resolution of the tariff's time-of-use bands). A batch over `[start, end)` holds at
/// most `(end - start) / 60 s` readings.
pub const MIN_READING_INTERVAL_SECONDS: i64 = 60;

/// Largest sequence number (sequences are stored as signed 64-bit integers).
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

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

/// A meter id: 1 to [`MAX_METER_ID_LEN`] bytes of ASCII letters, digits, `-`, `_`, `.`, `:`
/// (the rule the key authority applies to household tokens).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeterId(String);

impl MeterId {
    /// Checks and wraps a meter id.
    ///
    /// # Errors
    /// [`BatchError::InvalidMeterId`] when the id breaks the rule above.
    pub fn try_new(meter_id: impl Into<String>) -> Result<Self, BatchError> {
        let meter_id = meter_id.into();
        let invalid = |reason| BatchError::InvalidMeterId {
            meter_id: echo(&meter_id),
            reason,
        };
        if meter_id.is_empty() {
            return Err(invalid("empty"));
        }
        if meter_id.len() > MAX_METER_ID_LEN {
            return Err(invalid("longer than 64 bytes"));
        }
        if !meter_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(invalid(
                "only ASCII letters, digits, '-', '_', '.' and ':' are allowed",
            ));
        }
        Ok(Self(meter_id))
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for MeterId {
    type Err = BatchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_new(s)
    }
}

/// A billing period: one calendar month, written `YYYY-MM` (years 1000 to 9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// The period of `year` and `month` (1 to 12).
    ///
    /// # Errors
    /// [`BatchError::InvalidPeriod`] for a month outside 1..=12 or a year outside 1000..=9999.
    pub fn try_new(year: i32, month: u32) -> Result<Self, BatchError> {
        if (1000..=9999).contains(&year) && (1..=12).contains(&month) {
            Ok(Self { year, month })
        } else {
            Err(BatchError::InvalidPeriod {
                period: format!("{year}-{month:02}"),
            })
        }
    }

    /// The year.
    #[must_use]
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1 to 12.
    #[must_use]
    pub fn month(self) -> u32 {
        self.month
    }

    /// The first day of the period.
    #[must_use]
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .unwrap_or_else(|| unreachable!("a valid period has a first day"))
    }

    /// The first day after the period.
    #[must_use]
    pub fn end_day(self) -> NaiveDate {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        NaiveDate::from_ymd_opt(year, month, 1)
            .unwrap_or_else(|| unreachable!("the month after a valid period has a first day"))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = BatchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || BatchError::InvalidPeriod { period: echo(s) };
        let bytes = s.as_bytes();
        if bytes.len() != 7
            || bytes[4] != b'-'
            || !bytes[..4].iter().chain(&bytes[5..]).all(u8::is_ascii_digit)
        {
            return Err(invalid());
        }
        let year = s[..4].parse().map_err(|_| invalid())?;
        let month = s[5..].parse().map_err(|_| invalid())?;
        Self::try_new(year, month).map_err(|_| invalid())
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

/// A checked batch (see the [module documentation](self)); its lanes are still opaque bytes.
#[derive(Clone, PartialEq)]
pub struct Batch {
    meter_id: MeterId,
    sequence: u64,
    period: Period,
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
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
    /// end ≤ first day of the next month T00:00`, both in that offset.
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
        // -0.0 and 0.0 are the same privacy loss; store (and digest) one of them.
        let epsilon_spent = wire.epsilon_spent + 0.0;
        let mut batch = Self {
            meter_id,
            sequence,
            period,
            start,
            end,
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
