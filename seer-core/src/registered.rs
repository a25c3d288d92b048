//! Registered computations: the trait every computation the key authority accepts implements
//! (the utility evaluates the same code), its typed [`Refusal`], and the words its signature
//! uses ([`ComputationKind`], [`SlotPeriod`], [`MeterBlock`], [`MeterPeriods`],
//! [`EncryptedValue`]; [`SlotBlock`] and [`Lane`] from [`crate::vocab`]).
//!
//! A registered computation is one model at one CKKS parameter set. It states what a meter's
//! inputs must be (parameter set, count, levels, lane, block), evaluates the circuit over the
//! meters of a request with each meter isolated to its block inside the circuit, and derives
//! what leaves per meter from the decrypted outputs — or refuses the meter with a
//! [`Refusal`], whose text goes into the audit log and the response.
//!
//! What leaves ([`RegisteredComputation::Release`]) is the implementor's type: the key
//! authority releases anomaly days, forecast hours and daily home-days, whose types live in
//! `seer-anomaly`, `seer-forecast` and `seer-daily` (which depend on this crate).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use chrono::{NaiveDateTime, NaiveTime, TimeDelta, Timelike};
use seer_ckks::{Ciphertext, Evaluator, ParameterSet};

use crate::circuits::isolation::isolated_sums;
use crate::error::Error;
use crate::vocab::{Lane, SlotBlock, parse_day};

/// Why a registered computation refuses a meter (or a request). The `Display` texts are what
/// the audit log and the response carry; none names a decrypted value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The inputs' lane is not the lane the model was trained on.
    #[error("the inputs are on the {inputs} lane; the model reads the {model} lane")]
    WrongLane {
        /// The inputs' lane (`exact` / `analytics`).
        inputs: &'static str,
        /// The model's lane.
        model: &'static str,
    },
    /// A block too short to release anything after the computation's history.
    #[error("the block {block} is too short to release a period after its history of {history}")]
    BlockTooShort {
        /// The block.
        block: SlotBlock,
        /// Leading positions that are history only.
        history: usize,
    },
    /// A block of the wrong shape for the computation.
    #[error("{expected}, not {block}")]
    WrongBlock {
        /// The shape the computation takes, in words.
        expected: String,
        /// The block given.
        block: SlotBlock,
    },
    /// A receipt or a meter with the wrong number of input ciphertexts.
    #[error("a {kind} receipt lists {expected} input ciphertext{}, not {found}",
        if *expected == 1 { "" } else { "s" })]
    WrongInputCount {
        /// The computation's kind.
        kind: ComputationKind,
        /// Input ciphertexts per meter.
        expected: usize,
        /// Input ciphertexts given.
        found: usize,
    },
    /// An input that is not a ciphertext of the computation's parameter set.
    #[error("input {input} is not a ciphertext of {parameter_set}: {reason}")]
    WrongParameterSet {
        /// The input's index.
        input: usize,
        /// The computation's parameter set.
        parameter_set: String,
        /// Why the bytes do not parse.
        reason: String,
    },
    /// An input with fewer levels than the circuit needs.
    #[error("input {input} has {levels} levels; the computation needs {needed}")]
    TooFewLevels {
        /// The input's index.
        input: usize,
        /// Its levels.
        levels: u32,
        /// The circuit's depth.
        needed: u32,
    },
    /// More meters in one request than the computation takes.
    #[error("a {kind} request names 1 to {max} meters, not {found}")]
    TooManyMeters {
        /// The computation's kind.
        kind: ComputationKind,
        /// The most meters one request may name.
        max: usize,
        /// The meters named.
        found: usize,
    },
    /// Decrypted outputs that inputs an honest meter encrypts cannot produce (judged on the
    /// result, never on an input; the reason names no value).
    #[error("{reason}")]
    ImplausibleOutput {
        /// What is implausible.
        reason: String,
    },
    /// The homomorphic evaluation failed (e.g. the inputs cannot be combined).
    #[error("{reason}")]
    Evaluation {
        /// The failure.
        reason: String,
    },
}

impl Refusal {
    /// An [`ImplausibleOutput`](Refusal::ImplausibleOutput) refusal whose reason says what
    /// lies where and adds that the inputs are not what an honest meter encrypts.
    #[must_use]
    pub fn dishonest(what: &str) -> Self {
        Refusal::ImplausibleOutput {
            reason: format!("{what}: the inputs are not what an honest meter encrypts"),
        }
    }

    /// The [`WrongLane`](Refusal::WrongLane) refusal when `inputs` is not `model`'s lane (by
    /// name).
    ///
    /// # Errors
    /// The refusal, naming both lanes.
    pub fn check_lane(inputs: &Lane, model: &Lane) -> Result<(), Refusal> {
        if inputs.same_name(model) {
            Ok(())
        } else {
            Err(Refusal::WrongLane {
                inputs: inputs.as_str(),
                model: model.as_str(),
            })
        }
    }
}

impl From<Refusal> for String {
    /// The refusal's text, as the audit log and the response carry it.
    fn from(refusal: Refusal) -> Self {
        refusal.to_string()
    }
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal::Evaluation {
            reason: error.to_string(),
        }
    }
}

/// The kinds of registered computation (the request kinds of the key authority's analytics
/// releases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComputationKind {
    /// Anomaly scores of days (forest and rolling z-score, the deep set).
    Anomaly,
    /// Forecasts of hours (the LSTM, the deep set).
    Forecast,
    /// The daily lane: a home-day's next-day forecast and anomaly score (`N4096`).
    Daily,
}

impl ComputationKind {
    /// Every kind.
    pub const ALL: [ComputationKind; 3] = [Self::Anomaly, Self::Forecast, Self::Daily];

    /// `anomaly`, `forecast` or `daily`: the name on the wire, in the audit log and in the
    /// databases.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Anomaly => "anomaly",
            Self::Forecast => "forecast",
            Self::Daily => "daily",
        }
    }

    /// How long one slot (or block) of the kind stands for.
    #[must_use]
    pub const fn slot_period(self) -> SlotPeriod {
        match self {
            Self::Anomaly | Self::Daily => SlotPeriod::Day,
            Self::Forecast => SlotPeriod::Hour,
        }
    }
}

impl fmt::Display for ComputationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ComputationKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::InvalidOption {
                option: "kind",
                reason: format!(
                    "{:?} is not an analytics kind (anomaly, forecast or daily)",
                    s.chars().take(32).collect::<String>()
                ),
            })
    }
}

/// How long one slot of a computation's block lasts, and how its periods are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPeriod {
    /// One slot per day (`anomaly`), or one day per block (`daily`): periods `YYYY-MM-DD`.
    Day,
    /// One slot per hour (`forecast`): periods `YYYY-MM-DDTHH:00`.
    Hour,
}

impl SlotPeriod {
    /// The slot period of a request kind's name; `None` for a name that is no analytics kind.
    #[must_use]
    pub fn of_kind(kind: &str) -> Option<Self> {
        kind.parse::<ComputationKind>()
            .ok()
            .map(ComputationKind::slot_period)
    }

    /// Parses the start of a period in its wire form.
    ///
    /// # Errors
    /// [`Error::InvalidDay`] / [`Error::InvalidHour`], naming the expected form.
    pub fn parse(self, text: &str) -> Result<NaiveDateTime, Error> {
        match self {
            SlotPeriod::Day => parse_day(text).map(|d| d.and_time(NaiveTime::MIN)),
            SlotPeriod::Hour => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
                .ok()
                .filter(|t| t.minute() == 0 && text.len() == 16)
                .ok_or_else(|| Error::InvalidHour {
                    hour: text.chars().take(32).collect(),
                }),
        }
    }

    /// The wire form of the period starting at `start`.
    #[must_use]
    pub fn format(self, start: NaiveDateTime) -> String {
        match self {
            SlotPeriod::Day => start.date().format("%Y-%m-%d").to_string(),
            SlotPeriod::Hour => start.format("%Y-%m-%dT%H:00").to_string(),
        }
    }

    /// The period `position` slots after the one starting at `first`.
    #[must_use]
    pub fn label(self, first: NaiveDateTime, position: usize) -> String {
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        let step = match self {
            SlotPeriod::Day => TimeDelta::try_days(position),
            SlotPeriod::Hour => TimeDelta::try_hours(position),
        };
        step.and_then(|d| first.checked_add_signed(d))
            .map_or_else(|| "(out of range)".to_owned(), |t| self.format(t))
    }
}

/// A per-slot output that is either encrypted or, when the model makes it the same for every
/// slot (a feature split on only at roots whose children are leaves, say), a public constant.
#[derive(Debug)]
pub enum EncryptedValue {
    /// The same value in every slot, known from the model alone.
    Public(f64),
    /// A ciphertext (the value is its decryption).
    Encrypted(Ciphertext),
}

/// One meter's block in a request, as its receipt states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterBlock {
    /// The slots the meter wrote.
    pub block: SlotBlock,
    /// The start of the block's first period (the receipt's `first_period`).
    pub first_period: NaiveDateTime,
}

/// The periods a meter's block stands for, and which of them may leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterPeriods {
    /// Every period of the block, in wire form, in order.
    pub periods: Vec<String>,
    /// The indices into `periods` that may leave (the others are history).
    pub released: Range<usize>,
}

/// A registered computation: what a meter's inputs must be (parameter set, count, levels,
/// lane, block), how the circuit is evaluated over the meters of a request (isolated inside
/// the circuit), and what leaves per meter from the decrypted outputs.
///
/// Kinds with one released value per slot (`anomaly`, `forecast`) implement the narrower
/// [`SlotComputation`] and get this trait from it; `daily` (one release per meter-day from a
/// 512-slot block) implements it directly.
pub trait RegisteredComputation: Send + Sync + fmt::Debug {
    /// What leaves for one period of one meter.
    type Release;

    /// The kind.
    fn kind(&self) -> ComputationKind;
    /// The CKKS parameter set its inputs and outputs are at.
    fn parameter_set(&self) -> ParameterSet;
    /// Input ciphertexts per meter.
    fn inputs_per_meter(&self) -> usize;
    /// Levels the inputs must have.
    fn depth(&self) -> u32;
    /// Rotation steps it needs.
    fn galois_steps(&self) -> Vec<i64>;
    /// Most meters one request may name (the caller applies its own limit too); by default
    /// no limit of the computation's own.
    fn max_meters(&self) -> usize {
        usize::MAX
    }
    /// The flag threshold of the model (released with the response), for kinds that flag.
    fn flag_threshold(&self) -> Option<f64>;
    /// Whether inputs recorded on `lane` may be released through this computation: the lane
    /// the model was trained for and whose privacy cost its release states (an analytics-lane
    /// model must never release scores of exact readings).
    ///
    /// # Errors
    /// [`Refusal::WrongLane`] when the lane is not the model's.
    fn check_lane(&self, lane: &Lane) -> Result<(), Refusal>;
    /// Whether a receipt's block has the shape this computation takes (beyond fitting the
    /// slots, which the caller checks). By default any block.
    ///
    /// # Errors
    /// The refusal.
    fn check_block(&self, block: &SlotBlock) -> Result<(), Refusal> {
        let _ = block;
        Ok(())
    }
    /// The periods of a meter's block on `lane`, and which of them may leave.
    fn periods(&self, lane: &Lane, meter: &MeterBlock, slot_period: SlotPeriod) -> MeterPeriods;
    /// Evaluates the computation over the meters' inputs (`meters[m]`: the block and the
    /// [`inputs_per_meter`](Self::inputs_per_meter) ciphertexts of meter `m`, in request
    /// order), each meter isolated to its block inside the circuit. The utility and the key
    /// authority run the same code, so their results are byte-identical.
    ///
    /// # Errors
    /// [`Refusal::Evaluation`] (or a shape refusal) when the evaluation fails.
    fn evaluate_meters(
        &self,
        evaluator: &Evaluator,
        meters: &[(SlotBlock, &[Ciphertext])],
    ) -> Result<Vec<EncryptedValue>, Refusal>;
    /// What leaves for one meter from the decrypted outputs (one vector of slots per output,
    /// in order): `(index into its periods, release)` per period with a value.
    ///
    /// # Errors
    /// [`Refusal::ImplausibleOutput`] when the values are implausible for inputs an honest
    /// meter encrypts.
    fn release_meter(
        &self,
        outputs: &[Vec<f64>],
        meter: &MeterBlock,
    ) -> Result<Vec<(usize, Self::Release)>, Refusal>;
}

/// A registered computation with one released value per slot of a meter's block (`anomaly`:
/// a day per slot; `forecast`: an hour per slot), evaluated on the meters' isolated sums
/// ([`isolated_sums`]). Every `SlotComputation` is a [`RegisteredComputation`].
pub trait SlotComputation: Send + Sync + fmt::Debug {
    /// What leaves for one slot.
    type Release;

    /// The kind.
    fn kind(&self) -> ComputationKind;
    /// The CKKS parameter set.
    fn parameter_set(&self) -> ParameterSet;
    /// Input ciphertexts per meter.
    fn inputs_per_meter(&self) -> usize;
    /// Leading positions of a block that are history only (never released).
    fn history(&self) -> usize;
    /// Levels the inputs must have.
    fn depth(&self) -> u32;
    /// Rotation steps it needs.
    fn galois_steps(&self) -> Vec<i64>;
    /// Whether a released value is plausible for inputs an honest meter encrypts.
    ///
    /// # Errors
    /// [`Refusal::ImplausibleOutput`], naming no value.
    fn check_released(&self, released: &Self::Release) -> Result<(), Refusal>;
    /// The flag threshold of the model, for kinds that flag.
    fn flag_threshold(&self) -> Option<f64>;
    /// See [`RegisteredComputation::check_lane`].
    ///
    /// # Errors
    /// [`Refusal::WrongLane`] when the lane is not the model's.
    fn check_lane(&self, lane: &Lane) -> Result<(), Refusal>;
    /// The positions of a block of `count` slots on `lane` whose values may leave; by default
    /// every position after the history.
    fn released_positions(&self, lane: &Lane, count: usize) -> Range<usize> {
        let _ = lane;
        self.history().min(count)..count
    }
    /// Evaluates the computation on the (isolated, summed) inputs.
    ///
    /// # Errors
    /// [`Refusal::Evaluation`] when the evaluation fails.
    fn evaluate(
        &self,
        evaluator: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<EncryptedValue>, Refusal>;
    /// What leaves for slot `slot`, the `position`-th of its block, from the decrypted
    /// outputs; `None` for history positions.
    fn release_slot(
        &self,
        outputs: &[Vec<f64>],
        slot: usize,
        position: usize,
    ) -> Option<Self::Release>;
}

impl<T: SlotComputation> RegisteredComputation for T {
    type Release = T::Release;

    fn kind(&self) -> ComputationKind {
        SlotComputation::kind(self)
    }
    fn parameter_set(&self) -> ParameterSet {
        SlotComputation::parameter_set(self)
    }
    fn inputs_per_meter(&self) -> usize {
        SlotComputation::inputs_per_meter(self)
    }
    fn depth(&self) -> u32 {
        SlotComputation::depth(self)
    }
    fn galois_steps(&self) -> Vec<i64> {
        SlotComputation::galois_steps(self)
    }
    fn flag_threshold(&self) -> Option<f64> {
        SlotComputation::flag_threshold(self)
    }
    fn check_lane(&self, lane: &Lane) -> Result<(), Refusal> {
        SlotComputation::check_lane(self, lane)
    }
    fn check_block(&self, block: &SlotBlock) -> Result<(), Refusal> {
        let history = self.history();
        if block.count <= history {
            return Err(Refusal::BlockTooShort {
                block: *block,
                history,
            });
        }
        Ok(())
    }
    fn periods(&self, lane: &Lane, meter: &MeterBlock, slot_period: SlotPeriod) -> MeterPeriods {
        let count = meter.block.count;
        MeterPeriods {
            periods: (0..count)
                .map(|p| slot_period.label(meter.first_period, p))
                .collect(),
            released: self.released_positions(lane, count),
        }
    }
    /// Each meter's inputs isolated to its block and summed ([`isolated_sums`]), then the
    /// computation.
    fn evaluate_meters(
        &self,
        evaluator: &Evaluator,
        meters: &[(SlotBlock, &[Ciphertext])],
    ) -> Result<Vec<EncryptedValue>, Refusal> {
        let sums = isolated_sums(
            evaluator,
            SlotComputation::inputs_per_meter(self),
            SlotComputation::depth(self),
            meters
                .iter()
                .map(|(block, inputs)| (block.range(), *inputs)),
        )?;
        self.evaluate(evaluator, &sums)
    }
    /// Every slot of the block with a value; each must be plausible.
    fn release_meter(
        &self,
        outputs: &[Vec<f64>],
        meter: &MeterBlock,
    ) -> Result<Vec<(usize, Self::Release)>, Refusal> {
        let block = meter.block;
        let released: Vec<(usize, Self::Release)> = (0..block.count)
            .filter_map(|position| {
                self.release_slot(outputs, block.offset + position, position)
                    .map(|r| (position, r))
            })
            .collect();
        for (_, r) in &released {
            self.check_released(r)?;
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn kinds_and_slot_periods() {
        for kind in ComputationKind::ALL {
            assert_eq!(kind.as_str().parse::<ComputationKind>().ok(), Some(kind));
        }
        assert_eq!(SlotPeriod::of_kind("anomaly"), Some(SlotPeriod::Day));
        assert_eq!(SlotPeriod::of_kind("forecast"), Some(SlotPeriod::Hour));
        assert_eq!(SlotPeriod::of_kind("daily"), Some(SlotPeriod::Day));
        assert_eq!(SlotPeriod::of_kind("bill"), None);
        let day = SlotPeriod::Day.parse("2010-12-31").unwrap();
        assert_eq!(SlotPeriod::Day.label(day, 1), "2011-01-01");
        assert!(SlotPeriod::Day.parse("2010-12-31T00:00").is_err());
        let hour = SlotPeriod::Hour.parse("2010-12-31T22:00").unwrap();
        assert_eq!(SlotPeriod::Hour.format(hour), "2010-12-31T22:00");
        assert_eq!(SlotPeriod::Hour.label(hour, 3), "2011-01-01T01:00");
        for bad in [
            "2010-12-31T22:30",
            "2010-12-31",
            "2010-12-31T22:00:00",
            "2010-12-31T2:00",
        ] {
            assert!(SlotPeriod::Hour.parse(bad).is_err(), "{bad:?}");
        }
        let start = NaiveDate::from_ymd_opt(2010, 1, 1)
            .unwrap()
            .and_time(NaiveTime::MIN);
        assert_eq!(SlotPeriod::Day.label(start, usize::MAX), "(out of range)");
    }

    #[test]
    fn refusal_texts() {
        assert_eq!(
            Refusal::check_lane(&Lane::analytics(1.0), &Lane::Exact)
                .unwrap_err()
                .to_string(),
            "the inputs are on the analytics lane; the model reads the exact lane"
        );
        assert!(Refusal::check_lane(&Lane::analytics(1.0), &Lane::analytics(5.0)).is_ok());
        assert_eq!(
            Refusal::BlockTooShort {
                block: SlotBlock::new(3, 2),
                history: 2
            }
            .to_string(),
            "the block 3..5 is too short to release a period after its history of 2"
        );
        assert_eq!(
            Refusal::WrongInputCount {
                kind: ComputationKind::Daily,
                expected: 1,
                found: 2
            }
            .to_string(),
            "a daily receipt lists 1 input ciphertext, not 2"
        );
        assert_eq!(
            Refusal::dishonest("the decrypted score lies outside [0, 1]").to_string(),
            "the decrypted score lies outside [0, 1]: the inputs are not what an honest meter \
             encrypts"
        );
    }
}
