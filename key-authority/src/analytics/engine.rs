//! The deep engine: the registry of computations the key authority accepts, the input checks
//! (parsing only: nothing is decrypted but the key authority's own outputs, see
//! [`crate::outputs`]), the re-execution with meters isolated inside the circuit, the
//! comparison with the utility's result, and the checks on the decrypted result.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use seer_anomaly::AnomalyModel;
use seer_anomaly::circuit::EncryptedValue;
use seer_anomaly::release::{RegisteredAnomaly, SlotRelease};
use seer_ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys, RelinKeys};
use seer_forecast::ForecastModel;
use seer_forecast::release::{ForecastLane, RegisteredForecast};

use super::AnalyticsSettings;
use super::store::InputLane;
use crate::audit::RequestKind;
use crate::keys::{KeySet, KeyStore};
use crate::outputs::{self, AnalyticsOutput};

/// The slots one meter wrote: `offset .. offset + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotBlock {
    /// First slot.
    pub offset: usize,
    /// Number of slots.
    pub count: usize,
}

impl SlotBlock {
    /// Whether two blocks share a slot.
    #[must_use]
    pub fn overlaps(&self, other: &SlotBlock) -> bool {
        self.offset < other.offset + other.count && other.offset < self.offset + self.count
    }

    /// The end (exclusive).
    #[must_use]
    pub fn end(&self) -> usize {
        self.offset + self.count
    }
}

/// How long one slot of a computation's block lasts, and how its periods are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPeriod {
    /// One slot per day (`anomaly`): periods `YYYY-MM-DD`.
    Day,
    /// One slot per hour (`forecast`): periods `YYYY-MM-DDTHH:00`.
    Hour,
}

impl SlotPeriod {
    /// The slot period of a request kind; `None` for a kind that is no analytics kind.
    #[must_use]
    pub fn of_kind(kind: &str) -> Option<Self> {
        match kind {
            k if k == RequestKind::ANOMALY.as_str() => Some(SlotPeriod::Day),
            k if k == RequestKind::FORECAST.as_str() => Some(SlotPeriod::Hour),
            _ => None,
        }
    }

    /// Parses the start of a period in its wire form.
    ///
    /// # Errors
    /// A description of the expected form.
    pub fn parse(self, text: &str) -> Result<NaiveDateTime, String> {
        match self {
            SlotPeriod::Day => text
                .parse::<NaiveDate>()
                .map(|d| d.and_time(chrono::NaiveTime::MIN))
                .map_err(|_| "a day is written YYYY-MM-DD".to_owned()),
            SlotPeriod::Hour => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
                .ok()
                .filter(|t| chrono::Timelike::minute(t) == 0)
                .ok_or_else(|| "an hour is written YYYY-MM-DDTHH:00".to_owned()),
        }
    }

    /// The wire form of the period starting at `start`.
    #[must_use]
    pub fn format(self, start: NaiveDateTime) -> String {
        match self {
            SlotPeriod::Day => start.date().to_string(),
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

/// What leaves the key authority for one slot.
#[derive(Clone, Debug, PartialEq)]
pub enum Released {
    /// An anomaly day: score, flag, z-score, explanation.
    Anomaly(SlotRelease),
    /// A forecast hour, kWh (rounded to 0.001, never negative).
    Forecast {
        /// The forecast energy.
        kwh: f64,
    },
}

impl Released {
    /// The released value stored with the release record: the score or the forecast kWh.
    #[must_use]
    pub fn value(&self) -> f64 {
        match self {
            Released::Anomaly(r) => r.score,
            Released::Forecast { kwh } => *kwh,
        }
    }

    /// Whether the period is flagged (anomaly only).
    #[must_use]
    pub fn flagged(&self) -> bool {
        matches!(self, Released::Anomaly(r) if r.flagged)
    }
}

/// A registered deep computation: `anomaly` ([`AnomalyComputation`], one slot per day, 24
/// hour planes per meter) and `forecast` ([`ForecastComputation`], one slot per hour, the
/// hourly series as one input).
pub trait Computation: Send + Sync + fmt::Debug {
    /// The request kind (`anomaly`, `forecast`).
    fn kind(&self) -> RequestKind;
    /// Input ciphertexts per meter.
    fn inputs_per_meter(&self) -> usize;
    /// Leading positions of a block that are history only (never released).
    fn history(&self) -> usize;
    /// Levels the inputs must have.
    fn depth(&self) -> u32;
    /// Rotation steps it needs.
    fn galois_steps(&self) -> Vec<i64>;
    /// Whether a released value is plausible for inputs an honest meter encrypts (validity is
    /// judged on the decrypted result, never on an input): `Err` with the reason, which names
    /// no value.
    ///
    /// # Errors
    /// The reason, for an implausible value.
    fn check_released(&self, released: &Released) -> Result<(), String>;
    /// The flag threshold of the model (released with the response), for kinds that flag.
    fn flag_threshold(&self) -> Option<f64>;
    /// Whether inputs recorded on `lane` may be released through this computation: the lane
    /// the model was trained for and whose privacy cost its release states (an analytics-lane
    /// model must never release scores of exact readings). `Err` holds the refusal reason.
    ///
    /// # Errors
    /// The reason, when the lane is not the model's.
    fn check_lane(&self, lane: &InputLane) -> Result<(), String>;
    /// The positions of a block of `count` slots on `lane` whose values may leave; by default
    /// every position after the history.
    fn released_positions(&self, lane: &InputLane, count: usize) -> Range<usize> {
        let _ = lane;
        self.history().min(count)..count
    }
    /// Evaluates the computation on the (summed) inputs; the utility runs the same code.
    ///
    /// # Errors
    /// A description of the failure.
    fn evaluate(
        &self,
        evaluator: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<EncryptedValue>, String>;
    /// What leaves for slot `slot`, the `position`-th of its block, from the decrypted
    /// outputs; `None` for history positions.
    fn release_slot(&self, outputs: &[Vec<f64>], slot: usize, position: usize) -> Option<Released>;
}

/// `Err` naming both lanes when the inputs' lane is not the model's.
fn same_lane(inputs: &InputLane, model: &str) -> Result<(), String> {
    if inputs.as_str() == model {
        Ok(())
    } else {
        Err(format!(
            "the inputs are on the {} lane; the model reads the {model} lane",
            inputs.as_str()
        ))
    }
}

/// The shape methods of [`Computation`] that a registered computation's wrapper takes from
/// the shared type (`seer_anomaly::release`, `seer_forecast::release`) the utility runs too.
macro_rules! delegate_shape {
    () => {
        fn inputs_per_meter(&self) -> usize {
            self.0.inputs_per_meter()
        }
        fn history(&self) -> usize {
            self.0.history()
        }
        fn depth(&self) -> u32 {
            self.0.depth()
        }
        fn galois_steps(&self) -> Vec<i64> {
            self.0.galois_steps()
        }
    };
}

/// The `anomaly` computation: forest score and rolling z-score on 24 hour planes.
#[derive(Debug)]
pub struct AnomalyComputation(pub RegisteredAnomaly);

impl Computation for AnomalyComputation {
    fn kind(&self) -> RequestKind {
        RequestKind::ANOMALY
    }
    delegate_shape!();
    fn check_released(&self, released: &Released) -> Result<(), String> {
        // Scores of honest days lie in (0, 1]; inputs far outside the model's hour range drive
        // the step polynomials off their domain and the score off that interval.
        match released {
            Released::Anomaly(r) if (-SCORE_SLACK..=1.0 + SCORE_SLACK).contains(&r.score) => Ok(()),
            _ => Err(
                "the decrypted score lies outside [0, 1]: the inputs are not what an \
                 honest meter encrypts"
                    .into(),
            ),
        }
    }
    fn flag_threshold(&self) -> Option<f64> {
        Some(self.0.model().flag_threshold)
    }
    fn check_lane(&self, lane: &InputLane) -> Result<(), String> {
        same_lane(
            lane,
            match self.0.model().lane {
                seer_anomaly::model::Lane::Exact => "exact",
                seer_anomaly::model::Lane::Analytics { .. } => "analytics",
            },
        )
    }
    fn evaluate(
        &self,
        evaluator: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<EncryptedValue>, String> {
        self.0
            .evaluate(evaluator, inputs)
            .map_err(|e| e.to_string())
    }
    fn release_slot(&self, outputs: &[Vec<f64>], slot: usize, position: usize) -> Option<Released> {
        self.0
            .release_slot(outputs, slot, position)
            .map(Released::Anomaly)
    }
}

/// The `forecast` computation: the quadratic-gate LSTM on each meter's hourly series.
#[derive(Debug)]
pub struct ForecastComputation(pub RegisteredForecast);

impl Computation for ForecastComputation {
    fn kind(&self) -> RequestKind {
        RequestKind::FORECAST
    }
    delegate_shape!();
    fn check_released(&self, released: &Released) -> Result<(), String> {
        // Forecasts of honest series stay within the training inputs' range (mean ± 12 σ);
        // allow as much again beyond it before calling the inputs implausible.
        let (lo, hi) = self.0.input_range();
        match released {
            Released::Forecast { kwh } if *kwh <= hi + (hi - lo) => Ok(()),
            _ => Err(
                "the decrypted forecast lies far outside the model's range: the inputs \
                 are not what an honest meter encrypts"
                    .into(),
            ),
        }
    }
    fn flag_threshold(&self) -> Option<f64> {
        None
    }
    fn check_lane(&self, lane: &InputLane) -> Result<(), String> {
        same_lane(lane, self.0.lane().as_str())
    }
    fn released_positions(&self, lane: &InputLane, count: usize) -> Range<usize> {
        let lane = match lane {
            InputLane::Exact => ForecastLane::Exact,
            InputLane::Analytics { epsilon, .. } => ForecastLane::Analytics { epsilon: *epsilon },
        };
        self.0.released_positions(lane, count)
    }
    fn evaluate(
        &self,
        evaluator: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<EncryptedValue>, String> {
        self.0
            .evaluate(evaluator, inputs)
            .map(|ct| vec![EncryptedValue::Encrypted(ct)])
            .map_err(|e| e.to_string())
    }
    fn release_slot(&self, outputs: &[Vec<f64>], slot: usize, position: usize) -> Option<Released> {
        if position < self.0.history() {
            return None;
        }
        let value = outputs.first()?.get(slot)?;
        self.0
            .release_value(*value)
            .map(|kwh| Released::Forecast { kwh })
    }
}

/// Reads a model file: its bytes (the registry key is their BLAKE3) and text.
fn read_model(kind: &str, path: &Path) -> Result<(Vec<u8>, String), String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("reading the {kind} model {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| format!("the {kind} model {} is not UTF-8", path.display()))?;
    Ok((bytes, text))
}

/// One meter's input checks: parsed ciphertexts, or the refusal reason.
pub type MeterCheck = Result<Vec<Ciphertext>, String>;

/// Slack on the anomaly score's interval [0, 1] (the smooth step's approximation error).
const SCORE_SLACK: f64 = 0.05;

/// What the engine decided for the accepted meters of one request.
#[derive(Debug)]
pub struct EngineDecision {
    /// Whether the utility's result was byte-identical to the re-execution.
    pub result_verified: bool,
    /// Per accepted meter, in order: `(position in block, release)` per slot with a value
    /// (the policy keeps those in the computation's released positions), or the refusal
    /// reason.
    pub meters: Vec<Result<Vec<(usize, Released)>, String>>,
}

/// The deep key set's evaluator and decryptor, and the registry of computations.
pub struct DeepEngine {
    keys: Arc<KeyStore>,
    parameter_set: String,
    evaluator: Evaluator,
    registry: BTreeMap<(String, String), Arc<dyn Computation>>,
}

impl fmt::Debug for DeepEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeepEngine")
            .field("parameter_set", &self.parameter_set)
            .field("registered", &self.registry.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DeepEngine {
    /// Builds the engine over the deep key set of `keys` and registers the configured models.
    /// Blocking (parses the evaluation keys and the models).
    ///
    /// # Errors
    /// When the key set is missing, a model file is unreadable or invalid, or a model needs
    /// rotation steps or levels the key set lacks.
    pub fn try_new(keys: Arc<KeyStore>, settings: &AnalyticsSettings) -> Result<Self, String> {
        let set = keys.get(&settings.parameter_set).ok_or_else(|| {
            format!(
                "no key set for the deep parameter set {}",
                settings.parameter_set
            )
        })?;
        let ctx = set.context();
        let relin = RelinKeys::from_bytes(ctx, set.relin_keys_bytes())
            .map_err(|e| format!("the deep relinearization keys: {e}"))?;
        let galois = match set.galois_keys_bytes() {
            Some(bytes) => Some(
                GaloisKeys::from_bytes(ctx, bytes)
                    .map_err(|e| format!("the deep Galois keys: {e}"))?,
            ),
            None => None,
        };
        let evaluator = Evaluator::new(ctx, Some(relin), galois);
        let mut engine = Self {
            parameter_set: settings.parameter_set.clone(),
            evaluator,
            registry: BTreeMap::new(),
            keys: Arc::clone(&keys),
        };
        for path in &settings.anomaly_models {
            let (bytes, text) = read_model("anomaly", path)?;
            let invalid = |e: seer_anomaly::AnomalyError| {
                format!("the anomaly model {}: {e}", path.display())
            };
            let model = AnomalyModel::from_json(&text).map_err(invalid)?;
            let computation =
                RegisteredAnomaly::try_new(model, settings.zscore_window).map_err(invalid)?;
            let digest = blake3::hash(&bytes).to_hex().to_string();
            engine.register(&digest, Arc::new(AnomalyComputation(computation)))?;
            tracing::info!(model = %path.display(), blake3 = %digest, "anomaly model registered");
        }
        for path in &settings.forecast_models {
            let (bytes, text) = read_model("forecast", path)?;
            let invalid = |e: seer_forecast::ForecastError| {
                format!("the forecast model {}: {e}", path.display())
            };
            let model = ForecastModel::from_json(&text).map_err(invalid)?;
            let computation = RegisteredForecast::try_new(model).map_err(invalid)?;
            let digest = blake3::hash(&bytes).to_hex().to_string();
            engine.register(&digest, Arc::new(ForecastComputation(computation)))?;
            tracing::info!(model = %path.display(), blake3 = %digest, "forecast model registered");
        }
        Ok(engine)
    }

    /// Registers `computation` under the model digest `model_blake3` (hex).
    ///
    /// # Errors
    /// When the key set lacks a rotation step or the levels the computation needs.
    pub fn register(
        &mut self,
        model_blake3: &str,
        computation: Arc<dyn Computation>,
    ) -> Result<(), String> {
        let ctx = self.context();
        let slots = ctx.slots();
        if computation.depth() > ctx.top_level().0 {
            return Err(format!(
                "the {} computation needs {} levels; {} has {}",
                computation.kind(),
                computation.depth(),
                self.parameter_set,
                ctx.top_level().0
            ));
        }
        let galois = self.evaluator.galois_keys();
        if let Some(step) = computation
            .galois_steps()
            .into_iter()
            .find(|s| !galois.is_some_and(|g| g.supports(*s, slots)))
        {
            return Err(format!(
                "the {} computation needs the rotation step {step}, which the deep key set \
                 (analytics.galois_steps) lacks",
                computation.kind()
            ));
        }
        self.registry.insert(
            (
                computation.kind().as_str().to_owned(),
                model_blake3.to_owned(),
            ),
            computation,
        );
        Ok(())
    }

    /// The registered computation of `kind` for the model with digest `model_blake3`.
    #[must_use]
    pub fn computation(&self, kind: &str, model_blake3: &str) -> Option<Arc<dyn Computation>> {
        self.registry
            .get(&(kind.to_owned(), model_blake3.to_owned()))
            .cloned()
    }

    /// Digests of the registered models of `kind`.
    #[must_use]
    pub fn registered(&self, kind: &str) -> Vec<String> {
        self.registry
            .keys()
            .filter(|(k, _)| k == kind)
            .map(|(_, d)| d.clone())
            .collect()
    }

    fn key_set(&self) -> &KeySet {
        #[expect(
            clippy::expect_used,
            reason = "try_new checked that the key set exists and the store is immutable"
        )]
        self.keys
            .get(&self.parameter_set)
            .expect("the deep key set exists")
    }

    /// The deep parameter set's context.
    #[must_use]
    pub fn context(&self) -> &CkksContext {
        self.key_set().context()
    }

    /// Slots per ciphertext.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.context().slots()
    }

    /// Parses one meter's inputs: each a ciphertext of the deep parameter set with the levels
    /// the computation needs. Nothing is decrypted. Blocking.
    ///
    /// # Errors
    /// The refusal reason.
    pub fn check_inputs(&self, computation: &dyn Computation, inputs: &[Vec<u8>]) -> MeterCheck {
        let ctx = self.context();
        let mut parsed = Vec::with_capacity(inputs.len());
        for (k, bytes) in inputs.iter().enumerate() {
            let ct = Ciphertext::from_bytes(ctx, bytes).map_err(|e| {
                format!(
                    "input {k} is not a ciphertext of {}: {e}",
                    self.parameter_set
                )
            })?;
            if ct.level().0 < computation.depth() {
                return Err(format!(
                    "input {k} has {} levels; the computation needs {}",
                    ct.level().0,
                    computation.depth()
                ));
            }
            parsed.push(ct);
        }
        Ok(parsed)
    }

    /// Re-executes `computation` over the meters' inputs, each isolated to its block inside
    /// the circuit ([`outputs::analytics`]), requires every encrypted output to be
    /// byte-identical to the utility's, decrypts its own outputs and derives each meter's
    /// releases, refusing a meter whose released values are implausible
    /// ([`Computation::check_released`]). Blocking and CPU-heavy.
    ///
    /// # Errors
    /// When the evaluation or decryption fails.
    pub fn decide(
        &self,
        computation: &dyn Computation,
        meters: &[(Vec<Ciphertext>, SlotBlock)],
        utility_result: &[Vec<u8>],
    ) -> Result<EngineDecision, String> {
        let inputs: Vec<(SlotBlock, &[Ciphertext])> = meters
            .iter()
            .map(|(cts, block)| (*block, cts.as_slice()))
            .collect();
        let outputs = outputs::analytics(computation, &self.evaluator, &inputs)?;
        let own: Vec<&outputs::Reexecuted> = outputs
            .iter()
            .filter_map(|out| match out {
                AnalyticsOutput::Encrypted(ct) => Some(ct),
                AnalyticsOutput::Public(_) => None,
            })
            .collect();
        let mismatch = if own.len() == utility_result.len() {
            own.iter()
                .zip(utility_result)
                .position(|(ours, theirs)| !ours.matches(theirs))
                .map(|first| {
                    format!(
                        "the utility's result differs from the key authority's re-execution \
                         (output {first}: BLAKE3 differs)"
                    )
                })
        } else {
            Some(format!(
                "the utility sent {} result ciphertexts; the computation has {}",
                utility_result.len(),
                own.len()
            ))
        };
        if let Some(reason) = mismatch {
            return Ok(EngineDecision {
                result_verified: false,
                meters: meters.iter().map(|_| Err(reason.clone())).collect(),
            });
        }
        let slots = self.context().slots();
        let decryptor = self.key_set().output_decryptor();
        let mut decrypted = Vec::with_capacity(outputs.len());
        for out in &outputs {
            decrypted.push(match out {
                AnalyticsOutput::Public(v) => vec![*v; slots],
                AnalyticsOutput::Encrypted(ct) => {
                    decryptor.decrypt(ct).map_err(|e| e.to_string())?
                }
            });
        }
        let meters = meters
            .iter()
            .map(|(_, block)| {
                let released: Vec<(usize, Released)> = (0..block.count)
                    .filter_map(|position| {
                        computation
                            .release_slot(&decrypted, block.offset + position, position)
                            .map(|r| (position, r))
                    })
                    .collect();
                for (_, r) in &released {
                    computation.check_released(r)?;
                }
                Ok(released)
            })
            .collect();
        Ok(EngineDecision {
            result_verified: true,
            meters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeySetSpec;
    use seer_ckks::{Encryptor, ParameterSet, PublicKey};

    /// A one-input computation (`2·x`), cheap at n = 8192, to exercise the engine's checks.
    #[derive(Debug)]
    struct Double;

    impl Computation for Double {
        fn kind(&self) -> RequestKind {
            RequestKind::ANOMALY
        }
        fn inputs_per_meter(&self) -> usize {
            1
        }
        fn history(&self) -> usize {
            1
        }
        fn depth(&self) -> u32 {
            1
        }
        fn galois_steps(&self) -> Vec<i64> {
            Vec::new()
        }
        fn check_released(&self, released: &Released) -> Result<(), String> {
            if (0.0..=100.0).contains(&released.value()) {
                Ok(())
            } else {
                Err("implausible".into())
            }
        }
        fn flag_threshold(&self) -> Option<f64> {
            Some(10.0)
        }
        fn check_lane(&self, lane: &InputLane) -> Result<(), String> {
            match lane {
                InputLane::Exact => Ok(()),
                InputLane::Analytics { .. } => Err("exact lane only".into()),
            }
        }
        fn evaluate(
            &self,
            evaluator: &Evaluator,
            inputs: &[Ciphertext],
        ) -> Result<Vec<EncryptedValue>, String> {
            Ok(vec![EncryptedValue::Encrypted(
                evaluator
                    .multiply_scalar(&inputs[0], 2.0)
                    .map_err(|e| e.to_string())?,
            )])
        }
        fn release_slot(
            &self,
            outputs: &[Vec<f64>],
            slot: usize,
            position: usize,
        ) -> Option<Released> {
            (position >= 1).then(|| {
                Released::Anomaly(SlotRelease {
                    score: seer_anomaly::release::round_to(outputs[0][slot], 0.001),
                    flagged: outputs[0][slot] >= 10.0,
                    zscore: None,
                    explanation: Vec::new(),
                    explanation_hours: Vec::new(),
                })
            })
        }
    }

    fn engine(dir: &std::path::Path) -> DeepEngine {
        let id = ParameterSet::N8192_L2_SEC128.id();
        let keys = KeyStore::open(
            dir,
            &[KeySetSpec {
                parameter_set: id.clone(),
                galois_steps: Vec::new(),
            }],
        )
        .unwrap();
        let mut engine = DeepEngine::try_new(
            Arc::new(keys),
            &AnalyticsSettings {
                enabled: true,
                parameter_set: id,
                galois_steps: Vec::new(),
                anomaly_models: Vec::new(),
                forecast_models: Vec::new(),
                zscore_window: 8,
            },
        )
        .unwrap();
        engine.register("d0", Arc::new(Double)).unwrap();
        engine
    }

    fn encrypt(engine: &DeepEngine, values: &[f64]) -> Vec<u8> {
        let ctx = engine.context();
        let pk = PublicKey::from_bytes(ctx, engine.key_set().public_key_bytes()).unwrap();
        Encryptor::new(ctx, &pk)
            .unwrap()
            .encrypt_values(values)
            .unwrap()
            .to_bytes(ctx)
            .unwrap()
    }

    /// The utility's evaluation, as its job computes it: the same isolation, the same
    /// computation, serialized.
    fn utility_result(
        engine: &DeepEngine,
        computation: &dyn Computation,
        meters: &[(Vec<Ciphertext>, SlotBlock)],
    ) -> Vec<Vec<u8>> {
        let ev = &engine.evaluator;
        let sums = seer_core::circuits::isolation::isolated_sums(
            ev,
            computation.inputs_per_meter(),
            computation.depth(),
            meters
                .iter()
                .map(|(cts, b)| (b.offset..b.end(), cts.as_slice())),
        )
        .unwrap();
        computation
            .evaluate(ev, &sums)
            .unwrap()
            .into_iter()
            .filter_map(|out| match out {
                EncryptedValue::Encrypted(ct) => Some(ct.to_bytes(engine.context()).unwrap()),
                EncryptedValue::Public(_) => None,
            })
            .collect()
    }

    #[test]
    fn inputs_are_parsed_never_decrypted() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let double = engine.computation("anomaly", "d0").unwrap();
        assert!(engine.computation("anomaly", "other").is_none());
        let good = encrypt(&engine, &[0.0, 0.0, 1.0, 2.0, 3.0]);
        assert!(engine.check_inputs(double.as_ref(), &[good]).is_ok());
        let garbage = engine.check_inputs(double.as_ref(), &[vec![1, 2, 3]]);
        assert!(garbage.unwrap_err().contains("is not a ciphertext"));
    }

    #[test]
    fn a_meter_writing_outside_its_block_changes_only_its_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let double = engine.computation("anomaly", "d0").unwrap();
        let (a, b) = (
            SlotBlock {
                offset: 0,
                count: 3,
            },
            SlotBlock {
                offset: 3,
                count: 3,
            },
        );
        // Meter a writes 40 into slot 4 (meter b's block) and 1000 far away.
        let mut rogue = vec![0.0; 100];
        rogue[..3].copy_from_slice(&[1.0, 2.0, 3.0]);
        rogue[4] = 40.0;
        rogue[90] = 1000.0;
        let ia = engine
            .check_inputs(double.as_ref(), &[encrypt(&engine, &rogue)])
            .unwrap();
        let ib = engine
            .check_inputs(
                double.as_ref(),
                &[encrypt(&engine, &[0.0, 0.0, 0.0, 4.0, 6.5, 1.0])],
            )
            .unwrap();
        let meters = vec![(ia, a), (ib, b)];
        let honest = utility_result(&engine, double.as_ref(), &meters);
        let decision = engine.decide(double.as_ref(), &meters, &honest).unwrap();
        assert!(decision.result_verified);
        // Plaintext oracle: 2·x at positions ≥ 1 of each block, rounded; b's slot 4 is its own
        // 6.5, untouched by a's 40.
        let values = |m: usize| {
            decision.meters[m]
                .as_ref()
                .unwrap()
                .iter()
                .map(|(p, r)| (*p, r.value()))
                .collect::<Vec<_>>()
        };
        assert_eq!(values(0), vec![(1, 4.0), (2, 6.0)]);
        assert_eq!(values(1), vec![(1, 13.0), (2, 2.0)]);
    }

    #[test]
    fn only_a_byte_identical_result_is_released_and_judged_on_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let double = engine.computation("anomaly", "d0").unwrap();
        let (a, b) = (
            SlotBlock {
                offset: 0,
                count: 3,
            },
            SlotBlock {
                offset: 3,
                count: 2,
            },
        );
        let ia = engine
            .check_inputs(double.as_ref(), &[encrypt(&engine, &[1.0, 2.0, 3.0])])
            .unwrap();
        // Meter b encrypts an implausible 500 (its doubled value leaves the plausible range).
        let ib = engine
            .check_inputs(
                double.as_ref(),
                &[encrypt(&engine, &[0.0, 0.0, 0.0, 4.0, 500.0])],
            )
            .unwrap();
        let meters = vec![(ia, a), (ib, b)];
        let honest = utility_result(&engine, double.as_ref(), &meters);
        let decision = engine.decide(double.as_ref(), &meters, &honest).unwrap();
        assert!(decision.result_verified);
        assert_eq!(decision.meters[0].as_ref().unwrap().len(), 2);
        assert_eq!(decision.meters[1].as_ref().unwrap_err(), "implausible");

        let mut altered = honest.clone();
        let last = altered[0].len() - 1;
        altered[0][last] ^= 1;
        let decision = engine.decide(double.as_ref(), &meters, &altered).unwrap();
        assert!(!decision.result_verified);
        for m in &decision.meters {
            assert!(m.as_ref().unwrap_err().contains("BLAKE3 differs"));
        }
        let missing = engine.decide(double.as_ref(), &meters, &[]).unwrap();
        assert!(!missing.result_verified);
        assert!(missing.meters.iter().all(Result::is_err));
        // A raw input sent as the "result" is only compared, never decrypted.
        let raw_input = vec![encrypt(&engine, &[1.0, 2.0, 3.0])];
        let decision = engine.decide(double.as_ref(), &meters, &raw_input).unwrap();
        assert!(decision.meters.iter().all(Result::is_err));
    }
}
