//! Training with libtorch (`tch`, feature `tch`): Adam on absolute error, seeded, the epoch
//! kept by the validation slice, exported as a [`ForecastModel`].
//!
//! 1. The linear forecast is fitted by ridge regression (normal equations) on the training
//!    targets and frozen.
//! 2. The cell is trained on every training target position with the exact activations the
//!    circuit evaluates (`q(z) = a·z² + b·z + c` per unit, initialised at `σ(z) ≈ ½ + z/4`
//!    for the gates and `g(z) ≈ z` for the cell candidate), loss `|ŷ − y|`, Adam with a
//!    cosine-annealed learning rate, mini-batches in a seeded random order.
//! 3. After each epoch the validation MAE is measured; the weights of the best epoch are
//!    exported. The test period is only measured (for the metadata), never used to choose.
//!
//! Inputs and targets are separate series: with `--epsilon` the inputs are the analytics lane
//! (noisy) and the targets the true readings.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use tch::{Device, Kind, Tensor, nn};

use crate::data::Split;
use crate::error::ForecastError;
use crate::model::{
    Architecture, FORMAT_VERSION, ForecastModel, Gate, Gates, HISTORY, INPUT_NAMES, INPUTS,
    LinearForecast, Metrics, ModelMeta, Normalization, Quadratic, Readout, STEPS, default_lags,
    mae, step_inputs,
};

/// Training options.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam's initial learning rate (cosine-annealed to zero over the epochs).
    pub learning_rate: f64,
    /// Seed of initialisation and batch order.
    pub seed: u64,
    /// Hours between the newest input and the forecast hour (1 or up to 24).
    pub horizon: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Ridge penalty of the linear forecast.
    pub ridge_lambda: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 40,
            batch_size: 256,
            learning_rate: 3e-3,
            seed: 2010,
            horizon: 1,
            hidden: crate::model::HIDDEN,
            ridge_lambda: 1e-3,
        }
    }
}

/// What the model is trained on.
#[derive(Debug, Clone)]
pub struct TrainingData<'a> {
    /// Input series (the analytics lane, or the true readings for a clean model), kWh.
    pub inputs: &'a [f64],
    /// True readings, kWh, aligned with `inputs`.
    pub targets: &'a [f64],
    /// Target positions of training, validation and test.
    pub split: Split,
    /// First and last hour of each part, for the metadata: train, validation, test.
    pub labels: [[String; 2]; 3],
    /// The data set, for the metadata.
    pub data: String,
    /// ε per 15-minute reading of the inputs' noise, if any.
    pub epsilon: Option<f64>,
    /// The lane's clamp bound, Wh, if noised.
    pub sensitivity_wh: Option<i64>,
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss (absolute error, kWh).
    pub loss: f64,
    /// Validation MAE, kWh.
    pub validation_mae: f64,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Wall time.
    pub seconds: f64,
}

struct Params {
    w: Tensor,
    u: Tensor,
    b: Tensor,
    qa: Tensor,
    qb: Tensor,
    qc: Tensor,
    out: Tensor,
    ob: Tensor,
}

/// A model in training.
pub struct Trainer<'a> {
    data: TrainingData<'a>,
    options: TrainOptions,
    linear: LinearForecast,
    normalization: Normalization,
    _vs: nn::VarStore,
    params: Params,
    optimizer: nn::Optimizer,
    /// Normalised step inputs of every position `HISTORY..len`: `[P, STEPS, INPUTS]`.
    x: Tensor,
    /// The linear forecast of every position (the skip input), `[P]`.
    skip: Tensor,
    /// The true reading of every position, `[P]`.
    y: Tensor,
    rng: StdRng,
    epoch: usize,
}

fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>, ForecastError> {
    Ok(Vec::<f64>::try_from(
        &t.to_kind(Kind::Double).flatten(0, -1),
    )?)
}

impl<'a> Trainer<'a> {
    /// Fits the linear forecast, builds the inputs and initialises the cell.
    pub fn new(data: TrainingData<'a>, options: TrainOptions) -> Result<Self, ForecastError> {
        let invalid = |reason: String| Err(ForecastError::InvalidTraining { reason });
        if data.inputs.len() != data.targets.len() {
            return invalid("inputs and targets differ in length".into());
        }
        let split = &data.split;
        if split.train.start < HISTORY
            || split.train.is_empty()
            || split.validation.is_empty()
            || split.test.end > data.inputs.len()
        {
            return invalid(format!("split {split:?} does not fit the series"));
        }
        if options.epochs == 0 || options.batch_size == 0 || options.hidden == 0 {
            return invalid("epochs, batch size and hidden units must be positive".into());
        }
        let h = options.horizon;
        let linear = LinearForecast::fit_to(
            data.inputs,
            data.targets,
            &default_lags(h),
            split.train.clone(),
            options.ridge_lambda,
        )?;
        let train_inputs = &data.inputs[split.train.clone()];
        let n = train_inputs.len() as f64;
        let mean = train_inputs.iter().sum::<f64>() / n;
        let std = (train_inputs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let normalization = Normalization { mean, std };

        let positions = HISTORY..data.inputs.len();
        let mut xs = Vec::with_capacity(positions.len() * STEPS * INPUTS);
        let mut skip = Vec::with_capacity(positions.len());
        for p in positions.clone() {
            let x = step_inputs(&linear, h, data.inputs, p).ok_or_else(|| {
                ForecastError::InvalidTraining {
                    reason: format!("no inputs for position {p}"),
                }
            })?;
            xs.extend(x.iter().flatten().map(|v| (v - mean) / std));
            skip.push(x[STEPS - 1][INPUTS - 1]);
        }
        let count = positions.len() as i64;
        let x = Tensor::from_slice(&xs).reshape([count, STEPS as i64, INPUTS as i64]);
        let skip = Tensor::from_slice(&skip);
        let y = Tensor::from_slice(&data.targets[positions]);

        let mut rng = StdRng::seed_from_u64(options.seed);
        let hd = options.hidden;
        let mut vs = nn::VarStore::new(Device::Cpu);
        vs.set_kind(Kind::Double);
        let root = vs.root();
        let var = |name: &str, values: Vec<f64>, dims: &[i64]| {
            root.var_copy(name, &Tensor::from_slice(&values).reshape(dims))
        };
        let g4 = (4 * hd) as i64;
        // Gates ≈ σ(z) ≈ ½ + z/4 (input, forget, output) and g ≈ z (cell candidate), a = 0.
        let lin_init: Vec<f64> = (0..4 * hd)
            .map(|r| if r / hd == 2 { 1.0 } else { 0.25 })
            .collect();
        let const_init: Vec<f64> = (0..4 * hd)
            .map(|r| if r / hd == 2 { 0.0 } else { 0.5 })
            .collect();
        let params = Params {
            w: var(
                "w",
                normal(&mut rng, 4 * hd * INPUTS, 0.3),
                &[g4, INPUTS as i64],
            ),
            u: var(
                "u",
                normal(&mut rng, 4 * hd * hd, 0.3 / (hd as f64).sqrt()),
                &[g4, hd as i64],
            ),
            b: var("b", vec![0.0; 4 * hd], &[g4]),
            qa: var("qa", vec![0.0; 4 * hd], &[g4]),
            qb: var("qb", lin_init, &[g4]),
            qc: var("qc", const_init, &[g4]),
            out: var("out", vec![0.0; hd], &[hd as i64]),
            ob: var("ob", vec![0.0], &[1]),
        };
        let optimizer =
            nn::OptimizerConfig::build(nn::Adam::default(), &vs, options.learning_rate)?;
        Ok(Self {
            data,
            options,
            linear,
            normalization,
            _vs: vs,
            params,
            optimizer,
            x,
            skip,
            y,
            rng,
            epoch: 0,
        })
    }

    /// The network's forecasts (kWh) for rows `rows` of the position table.
    fn forward(&self, rows: &Tensor) -> Tensor {
        let p = &self.params;
        let x = self.x.index_select(0, rows);
        let batch = x.size()[0];
        let hd = self.options.hidden as i64;
        let mut h = Tensor::zeros([batch, hd], (Kind::Double, Device::Cpu));
        let mut c = Tensor::zeros([batch, hd], (Kind::Double, Device::Cpu));
        for k in 0..STEPS as i64 {
            let xk = x.select(1, k);
            let z = xk.matmul(&p.w.tr()) + h.matmul(&p.u.tr()) + &p.b;
            let g = &p.qa * &z * &z + &p.qb * &z + &p.qc;
            let gates = g.chunk(4, 1);
            c = &gates[1] * &c + &gates[0] * &gates[2];
            h = &gates[3] * &c;
        }
        let net = h.matmul(&p.out) + &p.ob;
        self.skip.index_select(0, rows) + net * self.normalization.std
    }

    fn rows(&self, positions: &[usize]) -> Tensor {
        let rows: Vec<i64> = positions.iter().map(|p| (p - HISTORY) as i64).collect();
        Tensor::from_slice(&rows)
    }

    /// tch's forecasts of the given positions with the current weights.
    pub fn predict(&self, positions: &[usize]) -> Result<Vec<f64>, ForecastError> {
        if let Some(p) = positions
            .iter()
            .find(|p| **p < HISTORY || **p >= self.data.inputs.len())
        {
            return Err(ForecastError::InvalidTraining {
                reason: format!("position {p} has no training inputs"),
            });
        }
        let out = tch::no_grad(|| self.forward(&self.rows(positions)));
        to_vec(&out)
    }

    fn mae_torch(&self, positions: std::ops::Range<usize>) -> Result<f64, ForecastError> {
        let list: Vec<usize> = positions.collect();
        let rows = self.rows(&list);
        let err = tch::no_grad(|| {
            (self.forward(&rows) - self.y.index_select(0, &rows))
                .abs()
                .mean(Kind::Double)
        });
        Ok(err.double_value(&[]))
    }

    /// Runs one epoch over the training targets in a seeded random order.
    pub fn epoch(&mut self) -> Result<EpochStats, ForecastError> {
        let t0 = Instant::now();
        let epochs = self.options.epochs as f64;
        let lr = self.options.learning_rate
            * 0.5
            * (1.0 + (std::f64::consts::PI * self.epoch as f64 / epochs).cos());
        self.optimizer.set_lr(lr);
        let mut order: Vec<usize> = self.data.split.train.clone().collect();
        order.shuffle(&mut self.rng);
        let mut total = 0.0;
        for batch in order.chunks(self.options.batch_size) {
            let rows = self.rows(batch);
            let loss = (self.forward(&rows) - self.y.index_select(0, &rows))
                .abs()
                .mean(Kind::Double);
            self.optimizer.backward_step(&loss);
            total += loss.double_value(&[]) * batch.len() as f64;
        }
        self.epoch += 1;
        Ok(EpochStats {
            epoch: self.epoch,
            loss: total / order.len() as f64,
            validation_mae: self.mae_torch(self.data.split.validation.clone())?,
            learning_rate: lr,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// The current weights as a model (metadata from the options; metrics measured with the
    /// plain-Rust forward pass).
    pub fn export(&self, best_epoch: usize) -> Result<ForecastModel, ForecastError> {
        let p = &self.params;
        let hd = self.options.hidden;
        let (w, u, b) = (to_vec(&p.w)?, to_vec(&p.u)?, to_vec(&p.b)?);
        let (qa, qb, qc) = (to_vec(&p.qa)?, to_vec(&p.qb)?, to_vec(&p.qc)?);
        let gate = |g: usize| -> Gate {
            let rows = g * hd..(g + 1) * hd;
            Gate {
                w: rows
                    .clone()
                    .map(|r| std::array::from_fn(|i| w[r * INPUTS + i]))
                    .collect(),
                u: rows
                    .clone()
                    .map(|r| u[r * hd..(r + 1) * hd].to_vec())
                    .collect(),
                bias: b[rows.clone()].to_vec(),
                activation: rows
                    .map(|r| Quadratic {
                        a: qa[r],
                        b: qb[r],
                        c: qc[r],
                    })
                    .collect(),
            }
        };
        let data = &self.data;
        let o = &self.options;
        let mut model = ForecastModel {
            format_version: FORMAT_VERSION,
            architecture: Architecture {
                cell: "LSTM with learned quadratic gates: c = f·c + i·g, h = o·c".into(),
                steps: STEPS,
                hidden: hd,
                horizon: o.horizon,
                inputs: INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
                activation: "per gate unit q(z) = a·z² + b·z + c (exact under encryption)".into(),
                output: "linear forecast + std · (read-out of the last hidden state)".into(),
                circuit_depth: ForecastModel::circuit_depth(),
                parameter_set: crate::circuit::PARAMETER_SET.id(),
            },
            normalization: self.normalization,
            linear: self.linear.clone(),
            gates: Gates {
                input: gate(0),
                forget: gate(1),
                cell: gate(2),
                output: gate(3),
            },
            readout: Readout {
                weights: to_vec(&p.out)?,
                bias: to_vec(&p.ob)?[0],
            },
            meta: ModelMeta {
                data: data.data.clone(),
                train: data.labels[0].clone(),
                validation: data.labels[1].clone(),
                test: data.labels[2].clone(),
                epsilon: data.epsilon,
                sensitivity_wh: data.sensitivity_wh,
                seed: o.seed,
                epochs: o.epochs,
                best_epoch,
                batch_size: o.batch_size,
                learning_rate: o.learning_rate,
                loss: "mean absolute error (kWh)".into(),
                trainer: format!("seer-forecast {} (tch 0.26)", env!("CARGO_PKG_VERSION")),
                metrics: Metrics {
                    train_mae: 0.0,
                    validation_mae: 0.0,
                    test_mae: 0.0,
                    test_linear_mae: 0.0,
                },
            },
        };
        model.validate()?;
        let split = &data.split;
        let f = |p: usize| model.forecast_at(data.inputs, p).unwrap_or(f64::NAN);
        let metrics = Metrics {
            train_mae: mae(f, data.targets, split.train.clone()),
            validation_mae: mae(f, data.targets, split.validation.clone()),
            test_mae: mae(f, data.targets, split.test.clone()),
            test_linear_mae: mae(
                |p| self.linear.at(data.inputs, p),
                data.targets,
                split.test.clone(),
            ),
        };
        model.meta.metrics = metrics;
        Ok(model)
    }
}

/// Trains for `options.epochs` epochs and returns the model of the epoch with the lowest
/// validation MAE; `progress` sees every epoch.
pub fn train(
    data: TrainingData<'_>,
    options: TrainOptions,
    mut progress: impl FnMut(&EpochStats),
) -> Result<ForecastModel, ForecastError> {
    let epochs = options.epochs;
    let mut trainer = Trainer::new(data, options)?;
    let mut best: Option<(f64, ForecastModel)> = None;
    for _ in 0..epochs {
        let stats = trainer.epoch()?;
        progress(&stats);
        if best.as_ref().is_none_or(|(v, _)| stats.validation_mae < *v) {
            best = Some((stats.validation_mae, trainer.export(stats.epoch)?));
        }
    }
    best.map(|(_, m)| m)
        .ok_or_else(|| ForecastError::InvalidTraining {
            reason: "no epoch ran".into(),
        })
}
