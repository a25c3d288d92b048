//! The error of a group's released hourly total under three ways of adding noise, simulated
//! with SEER's own samplers:
//!
//! - **distributed** (DREAM shares, [`SharePlan`]): each of n meters adds a Pólya share to
//!   each quarter-hour; the group's sum carries one discrete Laplace draw of scale Δ/ε;
//! - **local** (the analytics lane before distributed noise): each meter adds a full draw, so
//!   the sum carries n of them;
//! - **central** (an ideal trusted curator): one draw added to the exact sum.
//!
//! An hourly total sums four quarter-hours, so it carries four draws of each kind. Every
//! meter's readings are clamped to Δ first in all three. Printed per (n, ε): the RMS error and
//! the 95th percentile of |error| in kWh, and that percentile relative to the group's mean
//! hourly load (n × `--mean-hourly-kwh`, by default the UCI household's).
//!
//! ```sh
//! cargo run --release -p seer-core --example dp_group_error -- --rounds 400
//! ```
//!
//! Then it searches the smallest ε (on a grid of 0.05) at which a 1,000-home group's hourly
//! total is within ±2 % of its load in 95 % of hours, with distributed shares.

use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_core::dp::{Epsilon, SharePlan};
use seer_core::units::Wh;

/// The UCI household's mean hourly consumption, 2006-12 to 2010-11 (kWh): its 2,049,280
/// minute readings of global active power average 1.0916 kW.
const UCI_MEAN_HOURLY_KWH: f64 = 1.0916;

/// The default clamp: a 15-minute reading at the largest single-phase domestic connection,
/// 63 A at 230 V (14.49 kW): 3,623 Wh.
const SENSITIVITY_WH: i64 = 3_623;

struct Options {
    rounds: usize,
    mean_hourly_kwh: f64,
    sensitivity_wh: i64,
    tolerated_percent: u32,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        rounds: 400,
        mean_hourly_kwh: UCI_MEAN_HOURLY_KWH,
        sensitivity_wh: SENSITIVITY_WH,
        tolerated_percent: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--rounds" => o.rounds = value.parse().map_err(|e| bad(&e))?,
            "--mean-hourly-kwh" => o.mean_hourly_kwh = value.parse().map_err(|e| bad(&e))?,
            "--sensitivity-wh" => o.sensitivity_wh = value.parse().map_err(|e| bad(&e))?,
            "--tolerated-percent" => o.tolerated_percent = value.parse().map_err(|e| bad(&e))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--rounds, --mean-hourly-kwh, --sensitivity-wh, \
                     --tolerated-percent)"
                ));
            }
        }
    }
    Ok(o)
}

/// RMS and 95th percentile of |error| (Wh).
fn summary(mut errors: Vec<f64>) -> (f64, f64) {
    let rms = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
    errors.iter_mut().for_each(|e| *e = e.abs());
    errors.sort_by(f64::total_cmp);
    let p95 = errors[((errors.len() as f64 * 0.95).ceil() as usize).min(errors.len()) - 1];
    (rms, p95)
}

/// Simulated hourly-total errors (Wh) of `rounds` hours for a group of `n` meters.
fn errors(plan: &SharePlan, n: u32, rounds: usize, rng: &mut StdRng) -> [Vec<f64>; 3] {
    let share = plan.share();
    let full = plan.full_noise();
    let mut out = [
        Vec::with_capacity(rounds),
        Vec::with_capacity(rounds),
        Vec::with_capacity(rounds),
    ];
    for _ in 0..rounds {
        let (mut distributed, mut local, mut central) = (0_i64, 0_i64, 0_i64);
        for _quarter in 0..4 {
            for _ in 0..n {
                distributed += share.sample(rng);
                local += full.sample(rng);
            }
            central += full.sample(rng);
        }
        out[0].push(distributed as f64);
        out[1].push(local as f64);
        out[2].push(central as f64);
    }
    out
}

fn main() -> Result<(), String> {
    let o = options()?;
    let delta = Wh::try_new(o.sensitivity_wh).map_err(|e| e.to_string())?;
    let mut rng = StdRng::seed_from_u64(2011);
    println!(
        "hourly group totals, Δ = {} Wh per 15-minute reading, {} simulated hours each, \
         shares sized for {} % absent or colluding; errors in kWh (95th percentile of |error| \
         and its share of the group's mean load of n × {:.4} kWh)",
        o.sensitivity_wh, o.rounds, o.tolerated_percent, o.mean_hourly_kwh
    );
    println!(
        "| n | ε | distributed RMS | distributed p95 | local RMS | local p95 | central RMS | central p95 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [10_u32, 100, 1_000, 10_000] {
        for eps in [0.1, 0.5, 1.0, 2.0] {
            let tolerated = n * o.tolerated_percent / 100;
            let epsilon = Epsilon::try_new(eps).map_err(|e| e.to_string())?;
            let plan =
                SharePlan::try_new(n, tolerated, delta, epsilon).map_err(|e| e.to_string())?;
            // Local noise at 10,000 meters is 40,000 exact draws an hour: fewer rounds there.
            let rounds = if n >= 10_000 { o.rounds / 4 } else { o.rounds }.max(40);
            let [d, l, c] = errors(&plan, n, rounds, &mut rng);
            let load = f64::from(n) * o.mean_hourly_kwh * 1000.0;
            let cell = |(rms, p95): (f64, f64)| {
                (
                    format!("{:.2}", rms / 1000.0),
                    format!("{:.2} ({:.2} %)", p95 / 1000.0, 100.0 * p95 / load),
                )
            };
            let (d, l, c) = (cell(summary(d)), cell(summary(l)), cell(summary(c)));
            println!(
                "| {n} | {eps} | {} | {} | {} | {} | {} | {} |",
                d.0, d.1, l.0, l.1, c.0, c.1
            );
            eprintln!("dp_group_error: n = {n}, ε = {eps} done");
        }
    }
    // The default ε: the smallest on a 0.05 grid meeting ±2 % in 95 % of hours at 1,000 homes.
    let n = 1_000;
    let load = f64::from(n) * o.mean_hourly_kwh * 1000.0;
    let rounds = o.rounds.max(2_000);
    for step in 1..=200 {
        let eps = f64::from(step) * 0.05;
        let epsilon = Epsilon::try_new(eps).map_err(|e| e.to_string())?;
        let plan = SharePlan::try_new(n, n / 10, delta, epsilon).map_err(|e| e.to_string())?;
        // Four full draws an hour (the honest meters' shares sum to at least one draw each
        // quarter-hour; exactly one when the tolerated number is absent).
        let full = plan.full_noise();
        let hour: Vec<f64> = (0..rounds)
            .map(|_| (0..4).map(|_| full.sample(&mut rng)).sum::<i64>() as f64)
            .collect();
        let (_, p95) = summary(hour);
        if p95 <= 0.02 * load {
            println!(
                "default ε: {eps:.2} per reading — a 1,000-home group's hourly total within \
                 ±2 % ({:.1} kWh) in 95 % of {rounds} simulated hours (p95 {:.1} kWh)",
                0.02 * load / 1000.0,
                p95 / 1000.0
            );
            return Ok(());
        }
    }
    println!("no ε up to 10 meets ±2 % at 1,000 homes");
    Ok(())
}
