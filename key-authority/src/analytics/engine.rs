//! The analytics engine: the registry of computations the key authority accepts (each at its
//! parameter set: the deep `N32768` set for `anomaly` and `forecast`, `N4096` for `daily`),
//! the input checks (parsing only: nothing is decrypted but the key authority's own outputs,
//! see [`crate::outputs`]), the re-execution with meters isolated inside the circuit, the
//! comparison with the utility's result, and the checks on the decrypted result.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use seer_anomaly::AnomalyModel;
use seer_anomaly::release::{RegisteredAnomaly, SlotRelease};
use seer_ckks::{Ciphertext, CkksContext, Evaluator, GaloisKeys, ParameterSet, RelinKeys};
use seer_core::registered::{ComputationKind, RegisteredComputation};
use seer_daily::DailyModel;
use seer_daily::layout as daily_layout;
use seer_daily::release::DailyRelease;
use seer_forecast::ForecastModel;
use seer_forecast::release::RegisteredForecast;

pub use seer_core::registered::{
    EncryptedValue, MeterBlock, MeterPeriods, Refusal, SlotComputation, SlotPeriod,
};
pub use seer_core::{Lane, SlotBlock};

use super::AnalyticsSettings;
use crate::audit::RequestKind;
use crate::keys::{KeySet, KeyStore};
use crate::outputs::{self, AnalyticsOutput};

impl From<ComputationKind> for RequestKind {
    fn from(kind: ComputationKind) -> Self {
        match kind {
            ComputationKind::Anomaly => RequestKind::ANOMALY,
            ComputationKind::Forecast => RequestKind::FORECAST,
            ComputationKind::Daily => RequestKind::DAILY,
        }
    }
}

/// What leaves the key authority for one released period of one meter.
#[derive(Clone, Debug, PartialEq)]
pub enum Released {
    /// An anomaly day: score, flag, z-score, explanation.
    Anomaly(SlotRelease),
    /// A forecast hour, kWh (rounded to 0.001, never negative).
    Forecast {
        /// The forecast energy.
        kwh: f64,
    },
    /// A home-day of the daily lane: the next day's 24 hourly forecasts and the day's
    /// anomaly score, flag and explanation (each part only when the meter filled it).
    Daily(DailyReleased),
}

/// A home-day of the daily lane as it leaves the key authority.
#[derive(Clone, Debug, PartialEq)]
pub struct DailyReleased {
    /// What [`DailyModel::release`] derived from the meter's outputs.
    pub release: DailyRelease,
    /// Per item of the anomaly explanation, in order: the feature's output (its outlier
    /// score, its share of the day's score), rounded to [`seer_daily::release::QUANTUM`].
    pub explanation_scores: Vec<f64>,
}

impl Released {
    /// The released value stored with the release record: the score or the forecast kWh
    /// (`daily`: the anomaly score, 0 without the anomaly part).
    #[must_use]
    pub fn value(&self) -> f64 {
        match self {
            Released::Anomaly(r) => r.score,
            Released::Forecast { kwh } => *kwh,
            Released::Daily(r) => r.release.anomaly.as_ref().map_or(0.0, |a| a.score),
        }
    }

    /// Whether the period is flagged (anomaly and daily).
    #[must_use]
    pub fn flagged(&self) -> bool {
        match self {
            Released::Anomaly(r) => r.flagged,
            Released::Forecast { .. } => false,
            Released::Daily(r) => r.release.anomaly.as_ref().is_some_and(|a| a.flagged),
        }
    }
}

/// A registered computation as the key authority's release policy drives it: a
/// [`RegisteredComputation`] (the trait of `seer_core::registered`, which the utility's
/// evaluation uses too) whose releases are [`Released`]. Every such computation is one.
pub trait Computation: RegisteredComputation<Release = Released> {}

impl<T: RegisteredComputation<Release = Released> + ?Sized> Computation for T {}

/// The shape methods of [`SlotComputation`] that a registered computation's wrapper takes
/// from the shared type (`seer_anomaly::release`, `seer_forecast::release`) the utility runs
/// too.
macro_rules! delegate_shape {
    () => {
        fn parameter_set(&self) -> ParameterSet {
            self.parameter_set
        }
        fn inputs_per_meter(&self) -> usize {
            self.registered.inputs_per_meter()
        }
        fn history(&self) -> usize {
            self.registered.history()
        }
        fn depth(&self) -> u32 {
            self.registered.depth()
        }
        fn galois_steps(&self) -> Vec<i64> {
            self.registered.galois_steps()
        }
    };
}

/// The `anomaly` computation: forest score and rolling z-score on 24 hour planes.
#[derive(Debug)]
pub struct AnomalyComputation {
    registered: RegisteredAnomaly,
    parameter_set: ParameterSet,
}

impl AnomalyComputation {
    /// The registered scorer, at the deep `parameter_set`.
    #[must_use]
    pub fn new(registered: RegisteredAnomaly, parameter_set: ParameterSet) -> Self {
        Self {
            registered,
            parameter_set,
        }
    }
}

impl SlotComputation for AnomalyComputation {
    type Release = Released;

    fn kind(&self) -> ComputationKind {
        ComputationKind::Anomaly
    }
    delegate_shape!();
    fn check_released(&self, released: &Released) -> Result<(), Refusal> {
        // Scores of honest days lie in (0, 1]; inputs far outside the model's hour range drive
        // the step polynomials off their domain and the score off that interval.
        match released {
            Released::Anomaly(r) if (-SCORE_SLACK..=1.0 + SCORE_SLACK).contains(&r.score) => Ok(()),
            _ => Err(Refusal::dishonest(
                "the decrypted score lies outside [0, 1]",
            )),
        }
    }
    fn flag_threshold(&self) -> Option<f64> {
        Some(self.registered.model().flag_threshold)
    }
    fn check_lane(&self, lane: &Lane) -> Result<(), Refusal> {
        Refusal::check_lane(lane, &self.registered.model().lane)
    }
    fn evaluate(
        &self,
        evaluator: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<EncryptedValue>, Refusal> {
        self.registered
            .evaluate(evaluator, inputs)
            .map_err(|e| Refusal::Evaluation {
                reason: e.to_string(),
            })
    }
    fn release_slot(&self, outputs: &[Vec<f64>], slot: usize, position: usize) -> Option<Released> {
        self.registered
            .release_slot(outputs, slot, position)
            .map(Released::Anomaly)
    }
}

/// The `forecast` computation: the quadratic-gate LSTM on each meter's hourly series.
#[derive(Debug)]
pub struct ForecastComputation {
    registered: RegisteredForecast,
    parameter_set: ParameterSet,
}

impl ForecastComputation {
    /// The registered forecaster, at the deep `parameter_set`.
    #[must_use]
    pub fn new(registered: RegisteredForecast, parameter_set: ParameterSet) -> Self {
        Self {
            registered,
            parameter_set,
        }
    }
}

impl SlotComputation for ForecastComputation {
    type Release = Released;

    fn kind(&self) -> ComputationKind {
        ComputationKind::Forecast
    }
    delegate_shape!();
    fn check_released(&self, released: &Released) -> Result<(), Refusal> {
        // Forecasts of honest series stay within the training inputs' range (mean ± 12 σ);
        // allow as much again beyond it before calling the inputs implausible.
        let (lo, hi) = self.registered.input_range();
        match released {
            Released::Forecast { kwh } if *kwh <= hi + (hi - lo) => Ok(()),
            _ => Err(Refusal::dishonest(
                "the decrypted forecast lies far outside the model's range",
            )),
        }
    }
    fn flag_threshold(&self) -> Option<f64> {
        None
    }
    fn check_lane(&self, lane: &Lane) -> Result<(), Refusal> {
        Refusal::check_lane(lane, &self.registered.lane())
    }
    fn released_positions(&self, lane: &Lane, count: usize) -> Range<usize> {
        self.registered.released_positions(*lane, count)
    }
    fn evaluate(
        &self,
        evaluator: &Evaluator,
        inputs: &[Ciphertext],
    ) -> Result<Vec<EncryptedValue>, Refusal> {
        self.registered
            .evaluate(evaluator, inputs)
            .map(|ct| vec![EncryptedValue::Encrypted(ct)])
            .map_err(|e| Refusal::Evaluation {
                reason: e.to_string(),
            })
    }
    fn release_slot(&self, outputs: &[Vec<f64>], slot: usize, position: usize) -> Option<Released> {
        if position < self.registered.history() {
            return None;
        }
        let value = outputs.first()?.get(slot)?;
        self.registered
            .release_value(*value)
            .map(|kwh| Released::Forecast { kwh })
    }
}

/// Whether a `daily` receipt's block and inputs have the daily lane's shape: one input, one
/// whole block of [`daily_layout::BLOCK`] slots at a block boundary of the `N4096`
/// ciphertext ([`daily_layout::block_index`]).
///
/// # Errors
/// [`Refusal::WrongInputCount`] / [`Refusal::WrongBlock`], naming the expected shape.
pub fn check_daily_block(block: &SlotBlock, inputs: usize) -> Result<(), Refusal> {
    if inputs != 1 {
        return Err(Refusal::WrongInputCount {
            kind: ComputationKind::Daily,
            expected: 1,
            found: inputs,
        });
    }
    if daily_layout::block_index(block).is_none() {
        return Err(Refusal::WrongBlock {
            expected: format!(
                "a daily block is {} slots at a multiple of {} below {}",
                daily_layout::BLOCK,
                daily_layout::BLOCK,
                daily_layout::SLOTS,
            ),
            block: *block,
        });
    }
    Ok(())
}

/// The `daily` computation (`seer_daily::circuit`): one block of 16 × 32 slots per meter-day
/// in an `N4096_L1` ciphertext, up to [`daily_layout::BLOCKS_PER_CIPHERTEXT`] meters per
/// ciphertext, block isolation folded into the circuit's weights (so no `isolated_sums`), one
/// release per meter: the next day's hourly forecasts and the day's anomaly score, flag and
/// explanation ([`DailyModel::release`]).
#[derive(Debug)]
pub struct DailyComputation {
    model: DailyModel,
    /// The model's weight plaintexts, encoded once per block and reused by every request.
    prepared: seer_daily::circuit::PreparedCircuit,
}

impl DailyComputation {
    /// The registered daily model.
    #[must_use]
    pub fn new(model: DailyModel) -> Self {
        let prepared = seer_daily::circuit::PreparedCircuit::new(&model);
        Self { model, prepared }
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &DailyModel {
        &self.model
    }
}

impl RegisteredComputation for DailyComputation {
    type Release = Released;

    fn kind(&self) -> ComputationKind {
        ComputationKind::Daily
    }
    fn parameter_set(&self) -> ParameterSet {
        seer_daily::PARAMETERS
    }
    fn inputs_per_meter(&self) -> usize {
        1
    }
    fn depth(&self) -> u32 {
        seer_daily::circuit::DEPTH
    }
    fn galois_steps(&self) -> Vec<i64> {
        seer_daily::circuit::galois_steps(&self.model)
    }
    fn max_meters(&self) -> usize {
        daily_layout::BLOCKS_PER_CIPHERTEXT
    }
    fn flag_threshold(&self) -> Option<f64> {
        Some(self.model.flag_threshold())
    }
    fn check_lane(&self, lane: &Lane) -> Result<(), Refusal> {
        // The model's bins and weights are fitted to exact hourly energy.
        Refusal::check_lane(lane, &Lane::Exact)
    }
    fn check_block(&self, block: &SlotBlock) -> Result<(), Refusal> {
        check_daily_block(block, 1)
    }
    /// One period: the day the meter prepared (its anomaly features are of that day, its
    /// forecast of the next).
    fn periods(&self, _lane: &Lane, meter: &MeterBlock, slot_period: SlotPeriod) -> MeterPeriods {
        MeterPeriods {
            periods: vec![slot_period.label(meter.first_period, 0)],
            released: 0..1,
        }
    }
    /// `seer_daily::circuit::evaluate` over the meters in request order, each at the block of
    /// its receipt (through the prepared circuit: the same bytes, the weights encoded once):
    /// isolation is in the circuit's weights.
    fn evaluate_meters(
        &self,
        evaluator: &Evaluator,
        meters: &[(SlotBlock, &[Ciphertext])],
    ) -> Result<Vec<EncryptedValue>, Refusal> {
        let inputs = meters
            .iter()
            .map(|(block, inputs)| match inputs {
                [ct] => Ok((block.offset / daily_layout::BLOCK, ct)),
                _ => Err(Refusal::WrongInputCount {
                    kind: ComputationKind::Daily,
                    expected: 1,
                    found: inputs.len(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.prepared
            .evaluate(evaluator, &inputs)
            .map(|ct| vec![EncryptedValue::Encrypted(ct)])
            .map_err(|e| Refusal::Evaluation {
                reason: e.to_string(),
            })
    }
    /// The meter's 32 outputs ([`seer_daily::circuit::block_outputs`]) through
    /// [`DailyModel::release`]; its refusal (a presence code other than 0–3, values outside
    /// the model's range) refuses the meter.
    fn release_meter(
        &self,
        outputs: &[Vec<f64>],
        meter: &MeterBlock,
    ) -> Result<Vec<(usize, Released)>, Refusal> {
        let decrypted = outputs.first().ok_or_else(|| Refusal::Evaluation {
            reason: "the daily computation has one output".to_owned(),
        })?;
        let values =
            seer_daily::circuit::block_outputs(decrypted, meter.block.offset / daily_layout::BLOCK)
                .map_err(|e| Refusal::Evaluation {
                    reason: e.to_string(),
                })?;
        let release = self.model.release(meter.first_period.date(), &values)?;
        let features = &self.model.anomaly.features;
        let explanation_scores = release
            .anomaly
            .iter()
            .flat_map(|a| &a.explanation)
            .map(|item| {
                features
                    .iter()
                    .position(|f| f.name == item.feature)
                    .and_then(|f| values.get(daily_layout::ANOMALY_COLUMNS.start + f))
                    .map(|v| seer_daily::release::round_to(*v, seer_daily::release::QUANTUM))
                    .ok_or_else(|| Refusal::ImplausibleOutput {
                        reason: format!(
                            "the explanation names an unknown feature {:?}",
                            item.feature
                        ),
                    })
            })
            .collect::<Result<Vec<f64>, Refusal>>()?;
        Ok(vec![(
            0,
            Released::Daily(DailyReleased {
                release,
                explanation_scores,
            }),
        )])
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
    /// Per accepted meter, in order: `(index into its periods, release)` per period with a
    /// value (the policy keeps those in the computation's released range,
    /// [`MeterPeriods::released`]), or the refusal reason.
    pub meters: Vec<Result<Vec<(usize, Released)>, String>>,
}

/// The analytics engine: one evaluator per parameter set it serves (the daily lane's `N4096`
/// set always, the deep `N32768` set when [`AnalyticsSettings::enabled`]), and the registry
/// of computations.
pub struct DeepEngine {
    keys: Arc<KeyStore>,
    /// By parameter-set id.
    evaluators: BTreeMap<String, Evaluator>,
    /// The kinds served (receipts accepted), with their parameter-set ids.
    kinds: BTreeMap<String, String>,
    registry: BTreeMap<(String, String), Arc<dyn Computation>>,
}

impl fmt::Debug for DeepEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeepEngine")
            .field("kinds", &self.kinds)
            .field("registered", &self.registry.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DeepEngine {
    /// Builds the engine over `keys`: the daily lane's key set always (its models registered
    /// from [`AnalyticsSettings::daily_models`]), the deep key set and its anomaly and forecast
    /// models when analytics is enabled. Blocking (parses the evaluation keys and the models).
    ///
    /// A daily model file that is missing while `daily_models` is the default is skipped with
    /// a warning (the default path is relative to the working directory, like every default
    /// path of the key authority); a configured one that is missing fails the start.
    ///
    /// # Errors
    /// When a key set is missing, a model file is unreadable or invalid, or a model needs
    /// rotation steps or levels the key set lacks.
    pub fn try_new(keys: Arc<KeyStore>, settings: &AnalyticsSettings) -> Result<Self, String> {
        let mut engine = Self {
            keys: Arc::clone(&keys),
            evaluators: BTreeMap::new(),
            kinds: BTreeMap::new(),
            registry: BTreeMap::new(),
        };
        let daily = seer_daily::PARAMETERS.id();
        engine.add_evaluator(&daily)?;
        engine
            .kinds
            .insert(RequestKind::DAILY.as_str().to_owned(), daily);
        let default_daily = settings.daily_models == AnalyticsSettings::default().daily_models;
        for path in &settings.daily_models {
            if default_daily && !path.exists() {
                tracing::warn!(
                    model = %path.display(),
                    "the default daily model is not in the working directory: no daily model \
                     registered (set analytics.daily_models)"
                );
                continue;
            }
            let (bytes, text) = read_model("daily", path)?;
            let model = DailyModel::from_json(&text)
                .map_err(|e| format!("the daily model {}: {e}", path.display()))?;
            let digest = blake3::hash(&bytes).to_hex().to_string();
            engine.register(&digest, Arc::new(DailyComputation::new(model)))?;
            tracing::info!(model = %path.display(), blake3 = %digest, "daily model registered");
        }
        if !settings.enabled {
            return Ok(engine);
        }
        let deep = ParameterSet::try_from_id(&settings.parameter_set)
            .map_err(|e| format!("analytics.parameter_set: {e}"))?;
        engine.add_evaluator(&settings.parameter_set)?;
        for kind in [RequestKind::ANOMALY, RequestKind::FORECAST] {
            engine
                .kinds
                .insert(kind.as_str().to_owned(), settings.parameter_set.clone());
        }
        for path in &settings.anomaly_models {
            let (bytes, text) = read_model("anomaly", path)?;
            let invalid = |e: seer_anomaly::AnomalyError| {
                format!("the anomaly model {}: {e}", path.display())
            };
            let model = AnomalyModel::from_json(&text).map_err(invalid)?;
            let computation =
                RegisteredAnomaly::try_new(model, settings.zscore_window).map_err(invalid)?;
            let digest = blake3::hash(&bytes).to_hex().to_string();
            engine.register(
                &digest,
                Arc::new(AnomalyComputation::new(computation, deep)),
            )?;
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
            engine.register(
                &digest,
                Arc::new(ForecastComputation::new(computation, deep)),
            )?;
            tracing::info!(model = %path.display(), blake3 = %digest, "forecast model registered");
        }
        Ok(engine)
    }

    /// Builds the evaluator of the key set of `parameter_set` (its relinearization keys and
    /// Galois keys).
    fn add_evaluator(&mut self, parameter_set: &str) -> Result<(), String> {
        let set = self
            .keys
            .get(parameter_set)
            .ok_or_else(|| format!("no key set for the analytics parameter set {parameter_set}"))?;
        let ctx = set.context();
        let relin = RelinKeys::from_bytes(ctx, set.relin_keys_bytes())
            .map_err(|e| format!("the relinearization keys of {parameter_set}: {e}"))?;
        let galois = match set.galois_keys_bytes() {
            Some(bytes) => Some(
                GaloisKeys::from_bytes(ctx, bytes)
                    .map_err(|e| format!("the Galois keys of {parameter_set}: {e}"))?,
            ),
            None => None,
        };
        self.evaluators.insert(
            parameter_set.to_owned(),
            Evaluator::new(ctx, Some(relin), galois),
        );
        Ok(())
    }

    /// Registers `computation` under the model digest `model_blake3` (hex).
    ///
    /// # Errors
    /// When the engine holds no key set for the computation's parameter set, or the key set
    /// lacks a rotation step or the levels the computation needs.
    pub fn register(
        &mut self,
        model_blake3: &str,
        computation: Arc<dyn Computation>,
    ) -> Result<(), String> {
        let parameter_set = computation.parameter_set().id();
        let evaluator = self.evaluators.get(&parameter_set).ok_or_else(|| {
            format!(
                "the {} computation runs at {parameter_set}, for which the analytics engine \
                 holds no key set",
                computation.kind()
            )
        })?;
        let ctx = evaluator.context();
        let slots = ctx.slots();
        if computation.depth() > ctx.top_level().0 {
            return Err(format!(
                "the {} computation needs {} levels; {parameter_set} has {}",
                computation.kind(),
                computation.depth(),
                ctx.top_level().0
            ));
        }
        let galois = evaluator.galois_keys();
        if let Some(step) = computation
            .galois_steps()
            .into_iter()
            .find(|s| !galois.is_some_and(|g| g.supports(*s, slots)))
        {
            return Err(format!(
                "the {} computation needs the rotation step {step}, which the key set of \
                 {parameter_set} lacks (analytics.galois_steps for the deep set)",
                computation.kind()
            ));
        }
        self.kinds
            .entry(computation.kind().as_str().to_owned())
            .or_insert(parameter_set);
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

    /// The kinds whose receipts the engine accepts, with the slots of their ciphertexts:
    /// `daily` always, `anomaly` and `forecast` when the deep set is enabled.
    #[must_use]
    pub fn kind_slots(&self) -> BTreeMap<String, usize> {
        self.kinds
            .iter()
            .filter_map(|(kind, set)| {
                Some((kind.clone(), self.evaluators.get(set)?.context().slots()))
            })
            .collect()
    }

    /// The largest serialized ciphertext of any parameter set the engine serves (the bound on
    /// streamed ciphertexts).
    #[must_use]
    pub fn max_ciphertext_bytes(&self) -> usize {
        self.evaluators
            .values()
            .map(|e| Ciphertext::max_serialized_len(e.context()))
            .max()
            .unwrap_or(0)
    }

    fn evaluator(&self, computation: &dyn Computation) -> Result<&Evaluator, String> {
        let id = computation.parameter_set().id();
        self.evaluators
            .get(&id)
            .ok_or_else(|| format!("no evaluator for {id}"))
    }

    fn key_set(&self, computation: &dyn Computation) -> Result<&KeySet, String> {
        let id = computation.parameter_set().id();
        self.keys
            .get(&id)
            .ok_or_else(|| format!("no key set for {id}"))
    }

    /// The context of `computation`'s parameter set.
    ///
    /// # Errors
    /// When the engine does not serve it (never for a registered computation).
    pub fn context(&self, computation: &dyn Computation) -> Result<&CkksContext, String> {
        Ok(self.evaluator(computation)?.context())
    }

    /// Parses one meter's inputs: each a ciphertext of the computation's parameter set with
    /// the levels the computation needs. Nothing is decrypted. Blocking.
    ///
    /// # Errors
    /// The refusal reason.
    pub fn check_inputs(&self, computation: &dyn Computation, inputs: &[Vec<u8>]) -> MeterCheck {
        let ctx = self.context(computation)?;
        let parameter_set = computation.parameter_set();
        let mut parsed = Vec::with_capacity(inputs.len());
        for (k, bytes) in inputs.iter().enumerate() {
            let ct = Ciphertext::from_bytes(ctx, bytes).map_err(|e| {
                Refusal::WrongParameterSet {
                    input: k,
                    parameter_set: parameter_set.to_string(),
                    reason: e.to_string(),
                }
                .to_string()
            })?;
            if ct.level().0 < computation.depth() {
                return Err(Refusal::TooFewLevels {
                    input: k,
                    levels: ct.level().0,
                    needed: computation.depth(),
                }
                .to_string());
            }
            parsed.push(ct);
        }
        Ok(parsed)
    }

    /// Re-executes `computation` over the meters' inputs, each isolated to its block inside
    /// the circuit ([`outputs::analytics`]), requires every encrypted output to be
    /// byte-identical to the utility's, decrypts its own outputs and derives each meter's
    /// releases ([`Computation::release_meter`]), refusing a meter whose released values are
    /// implausible. Blocking and CPU-heavy.
    ///
    /// # Errors
    /// When the evaluation or decryption fails.
    pub fn decide(
        &self,
        computation: &dyn Computation,
        meters: &[(Vec<Ciphertext>, MeterBlock)],
        utility_result: &[Vec<u8>],
    ) -> Result<EngineDecision, String> {
        let evaluator = self.evaluator(computation)?;
        let inputs: Vec<(SlotBlock, &[Ciphertext])> = meters
            .iter()
            .map(|(cts, meter)| (meter.block, cts.as_slice()))
            .collect();
        let outputs = outputs::analytics(computation, evaluator, &inputs)?;
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
        let slots = evaluator.context().slots();
        let decryptor = self.key_set(computation)?.output_decryptor();
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
            .map(|(_, meter)| {
                computation
                    .release_meter(&decrypted, meter)
                    .map_err(|refusal| refusal.to_string())
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
    use chrono::NaiveDate;
    use seer_ckks::{Encryptor, PublicKey};

    /// A one-input computation (`2·x`), cheap at n = 8192, to exercise the engine's checks.
    #[derive(Debug)]
    struct Double;

    impl SlotComputation for Double {
        type Release = Released;

        fn kind(&self) -> ComputationKind {
            ComputationKind::Anomaly
        }
        fn parameter_set(&self) -> ParameterSet {
            ParameterSet::N8192_L2_SEC128
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
        fn check_released(&self, released: &Released) -> Result<(), Refusal> {
            if (0.0..=100.0).contains(&released.value()) {
                Ok(())
            } else {
                Err(Refusal::ImplausibleOutput {
                    reason: "implausible".into(),
                })
            }
        }
        fn flag_threshold(&self) -> Option<f64> {
            Some(10.0)
        }
        fn check_lane(&self, lane: &Lane) -> Result<(), Refusal> {
            Refusal::check_lane(lane, &Lane::Exact)
        }
        fn evaluate(
            &self,
            evaluator: &Evaluator,
            inputs: &[Ciphertext],
        ) -> Result<Vec<EncryptedValue>, Refusal> {
            Ok(vec![EncryptedValue::Encrypted(
                evaluator
                    .multiply_scalar(&inputs[0], 2.0)
                    .map_err(|e| Refusal::Evaluation {
                        reason: e.to_string(),
                    })?,
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

    /// A meter's block starting on an arbitrary day.
    fn at(offset: usize, count: usize) -> MeterBlock {
        MeterBlock {
            block: SlotBlock { offset, count },
            first_period: NaiveDate::from_ymd_opt(2010, 1, 1)
                .unwrap()
                .and_time(chrono::NaiveTime::MIN),
        }
    }

    fn engine(dir: &std::path::Path) -> DeepEngine {
        let id = ParameterSet::N8192_L2_SEC128.id();
        let keys = KeyStore::open(
            dir,
            &[
                KeySetSpec {
                    parameter_set: id.clone(),
                    galois_steps: Vec::new(),
                },
                KeySetSpec {
                    parameter_set: seer_daily::PARAMETERS.id(),
                    galois_steps: seer_daily::circuit::all_galois_steps(),
                },
            ],
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
                daily_models: Vec::new(),
                daily_release_home_forecasts: true,
                zscore_window: 8,
            },
        )
        .unwrap();
        engine.register("d0", Arc::new(Double)).unwrap();
        engine
    }

    fn encrypt(engine: &DeepEngine, values: &[f64]) -> Vec<u8> {
        let set = engine
            .keys
            .get(&ParameterSet::N8192_L2_SEC128.id())
            .unwrap();
        let ctx = set.context();
        let pk = PublicKey::from_bytes(ctx, set.public_key_bytes()).unwrap();
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
        meters: &[(Vec<Ciphertext>, MeterBlock)],
    ) -> Vec<Vec<u8>> {
        let ev = engine.evaluator(computation).unwrap();
        let inputs: Vec<(SlotBlock, &[Ciphertext])> = meters
            .iter()
            .map(|(cts, m)| (m.block, cts.as_slice()))
            .collect();
        computation
            .evaluate_meters(ev, &inputs)
            .unwrap()
            .into_iter()
            .filter_map(|out| match out {
                EncryptedValue::Encrypted(ct) => Some(ct.to_bytes(ev.context()).unwrap()),
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
        let (a, b) = (at(0, 3), at(3, 3));
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
        let (a, b) = (at(0, 3), at(3, 2));
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
