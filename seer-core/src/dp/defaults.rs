//! Default privacy parameters of the analytics lane: the clamp Δ from a household connection's
//! physical limit, and ε per reading from the accuracy a group's released hourly total needs.
//!
//! # Δ: the connection's limit
//!
//! A reading is clamped to `0 ..= Δ` before noise, and ε-DP protects any change of one reading
//! within that range. Δ is what a home can physically draw in one reading interval: a
//! single-phase 230 V supply with a 60 A main fuse delivers at most 230 × 60 = 13.8 kW, so a
//! 15-minute reading is at most 13.8 kW × ¼ h = **3,450 Wh** ([`DEFAULT_SENSITIVITY_WH`],
//! [`sensitivity_for`]).
//! A clamp at the physical limit never cuts a real reading (the UCI household's largest
//! complete quarter-hour is 2,142 Wh), so the clamp biases nothing and the guarantee covers
//! every reading the connection can produce.
//!
//! # ε: a 1,000-home group's hourly total within ±2 %
//!
//! With distributed shares ([`SharePlan`](crate::dp::SharePlan)) the group's released total of
//! one quarter-hour carries one discrete Laplace draw of scale b = Δ/ε, whatever the group's
//! size (and so does an ideal central curator); an hourly total sums four quarter-hours, so it
//! carries four independent draws: variance 4·2q/(1 − q)² with q = e^{−1/b}, about 8b², a
//! standard deviation of 2√2·b. The sum of four Laplace draws is not Gaussian (its excess
//! kurtosis is 3/4); its 95 % half-width, the h with P(|noise| ≤ h) = 0.95, is 2.013 standard
//! deviations ([`laplace_sum_half_width`], exact for the Laplace law of the same variance).
//!
//! The target: a 1,000-home group's hourly total within ±2 % of the group's load in 95 % of
//! hours, the load being 1,000 × the UCI household's mean hourly consumption
//! ([`UCI_MEAN_HOURLY_WH`], 1,089.36 Wh over its 34,587 complete hours), so h ≤ 2 % ×
//! 1,089.4 kWh = 21.79 kWh. At Δ = 3,450 Wh:
//!
//! | ε | b (Wh) | σ of the hourly total (kWh) | 95 % half-width (kWh) | % of 1,089.4 kWh |
//! |---|---|---|---|---|
//! | 0.85 | 4,059 | 11.48 | 23.11 | 2.12 % |
//! | 0.90 | 3,833 | 10.84 | 21.82 | 2.003 % |
//! | **0.95** | 3,632 | 10.27 | 20.67 | **1.90 %** |
//! | 1.00 | 3,450 | 9.76 | 19.64 | 1.80 % |
//!
//! so with exactly one draw per interval the smallest ε on a grid of 0.05 meeting the target
//! would be 0.95 (0.9 misses by 0.03 kWh). The meters' default plan tolerates 10 % of the
//! group absent or colluding ([`DEFAULT_TOLERATED_FRACTION`]), so with everyone present each
//! interval carries 1/0.9 of a draw (σ × 1.054): 0.95 then gives 2.003 %, and the default is
//! **ε = 1 per reading** ([`DEFAULT_EPSILON_PER_READING`]: 20.70 kWh, 1.90 %; 1.80 % when exactly
//! k are present). It is a mean-load target: at low-load hours (the 5th percentile of the
//! household's hourly load, [`UCI_P5_HOURLY_WH`] = 231.57 Wh) the same noise is about ±9 % of a
//! 1,000-home group's load (±2 % there would need ε ≈ 4.5), and a group of n homes scales the
//! relative error by 1,000/n. Local noise at every meter (the lane before shares) would need
//! ε = 27.8 for the same target, about √1,000 times more. The example `noise_tradeoff` prints
//! the whole trade-off and checks these figures with SEER's own samplers.
//!
//! The ε is per reading: a day of 96 readings composes to 96·ε = 96 against a change of all
//! of one home's readings of that day (see the [module documentation](crate::dp)).

use crate::data::Interval;
use crate::dp::{DiscreteLaplace, Epsilon, MAX_SENSITIVITY_WH};
use crate::error::Error;
use crate::units::Wh;

/// The household supply's voltage: single phase, 230 V.
pub const HOUSEHOLD_SUPPLY_VOLTS: u32 = 230;

/// The household supply's main fuse: 60 A.
pub const HOUSEHOLD_SUPPLY_AMPS: u32 = 60;

/// The most a household connection draws: 230 V × 60 A = 13,800 W.
pub const HOUSEHOLD_MAX_POWER_W: u32 = HOUSEHOLD_SUPPLY_VOLTS * HOUSEHOLD_SUPPLY_AMPS;

/// The meters' reading interval: 15 minutes.
pub const READING_INTERVAL: Interval = Interval::FIFTEEN_MINUTES;

/// Readings per hour at [`READING_INTERVAL`]: an hourly total sums 4 readings per home.
pub const READINGS_PER_HOUR: u32 = 4;

/// The default clamp Δ per 15-minute reading: 13.8 kW for a quarter of an hour, 3,450 Wh
/// (`sensitivity_for(230, 60, Interval::FIFTEEN_MINUTES)`).
pub const DEFAULT_SENSITIVITY_WH: i64 = 3_450;

/// The group size the default ε is chosen for: 1,000 homes.
pub const TARGET_GROUP_SIZE: u32 = 1_000;

/// The target relative error of the group's hourly total: ±2 % of its mean load.
pub const TARGET_RELATIVE_ERROR: f64 = 0.02;

/// How often the hourly total must be within the target: 95 % of hours.
pub const TARGET_CONFIDENCE: f64 = 0.95;

/// The grid ε is chosen on: multiples of 0.05.
pub const EPSILON_GRID_STEP: f64 = 0.05;

/// The UCI household's mean hourly consumption, Wh: the mean of its 34,587 complete hours
/// (2006-12-16 to 2010-11-26), measured by `cargo run --release -p seer-core --example
/// noise_tradeoff`.
pub const UCI_MEAN_HOURLY_WH: f64 = 1_089.36;

/// The 5th percentile of the UCI household's complete hours' consumption, Wh (low-load
/// hours), measured as [`UCI_MEAN_HOURLY_WH`].
pub const UCI_P5_HOURLY_WH: f64 = 231.57;

/// The fraction of a noise group the meters' default plan tolerates absent or colluding:
/// t = ⌊n/10⌋. With every meter present the group's total then carries n/(n − t) ≈ 1/0.9 of a
/// draw per interval (σ × 1.054).
pub const DEFAULT_TOLERATED_FRACTION: f64 = 0.1;

/// The variance of a released interval total under the default plan with every meter present,
/// in full draws: n/(n − t) = 1/(1 − [`DEFAULT_TOLERATED_FRACTION`]).
pub const DEFAULT_PLAN_DRAWS: f64 = 1.0 / (1.0 - DEFAULT_TOLERATED_FRACTION);

/// The default ε per 15-minute reading: 1, the smallest multiple of 0.05 at which a 1,000-home
/// group's released hourly total under the meters' default plan (10 % tolerated, everyone
/// present: four quarter-hours of [`DEFAULT_PLAN_DRAWS`] draws of scale
/// [`DEFAULT_SENSITIVITY_WH`]/ε) is within ±2 % of the group's mean load, 1,089.4 kWh, in 95 %
/// of hours: 95 % half-width 20.70 kWh = 1.90 % (ε = 0.95 gives 2.003 %; with exactly one draw
/// per interval 0.95 would do, at 1.90 %). See the [module documentation](self).
pub const DEFAULT_EPSILON_PER_READING: f64 = 1.0;

/// The clamp Δ for a connection of `volts` × `amps` read every `interval`: the most energy
/// it can deliver in one reading, in whole Wh rounded up.
///
/// # Errors
/// [`Error::InvalidOption`] when the result is 0 Wh or above [`MAX_SENSITIVITY_WH`].
pub fn sensitivity_for(volts: u32, amps: u32, interval: Interval) -> Result<Wh, Error> {
    // At most (2³² − 1)² × 86,400 J: well inside u128.
    let joules = u128::from(volts) * u128::from(amps) * u128::from(interval.as_secs());
    let wh = joules.div_ceil(3_600);
    match i64::try_from(wh) {
        Ok(wh @ 1..=MAX_SENSITIVITY_WH) => Wh::try_new(wh),
        _ => Err(Error::InvalidOption {
            option: "sensitivity",
            reason: format!(
                "{volts} V × {amps} A over {interval} is {wh} Wh, outside 1 ..= \
                 {MAX_SENSITIVITY_WH} Wh"
            ),
        }),
    }
}

/// P(|S| > y) for S the sum of `draws` independent Laplace variables of scale 1.
///
/// S is the difference of two Gamma(`draws`, 1) variables, and for x > 0 its density is a
/// mixture of Gamma densities: f(x) = Σ_{k<m} c_k · x^{m−1−k} e^{−x} / (m−1−k)! with
/// c_k = C(m−1+k, k) / 2^{m+k} (m = `draws`; the c_k sum to ½). So
/// P(S > y) = Σ_k c_k · P(Poisson(y) < m − k), computed in O(m) in the log domain.
fn laplace_sum_tail(draws: u32, y: f64) -> f64 {
    if draws == 0 {
        return 0.0;
    }
    if y <= 0.0 {
        return 1.0;
    }
    let m = draws as usize;
    let ln_y = y.ln();
    // cdf[j] = P(Poisson(y) < j).
    let mut cdf = Vec::with_capacity(m + 1);
    cdf.push(0.0);
    let mut ln_factorial = 0.0;
    let mut acc = 0.0;
    for i in 0..m {
        if i > 0 {
            ln_factorial += (i as f64).ln();
        }
        acc += (i as f64).mul_add(ln_y, -y - ln_factorial).exp();
        cdf.push(acc.min(1.0));
    }
    let mut ln_c = -(m as f64) * std::f64::consts::LN_2;
    let mut tail = 0.0;
    for k in 0..m {
        tail += ln_c.exp() * cdf[m - k];
        ln_c += ((m + k) as f64 / (k + 1) as f64).ln() - std::f64::consts::LN_2;
    }
    (2.0 * tail).min(1.0)
}

/// The half-width h with P(|S| ≤ h) = `confidence` for S the sum of `draws` independent
/// Laplace variables of variance `variance_per_draw` each (scale √(variance/2)).
///
/// For discrete Laplace draws pass [`DiscreteLaplace::variance`]: at the scales of the
/// analytics lane (b ≥ 1,000 Wh) the discrete law and the Laplace law of the same variance
/// have the same quantiles to within a Wh. Four draws give 2.013 standard deviations, one
/// draw ln(20)/√2 = 2.118, many draws tend to the Gaussian's 1.960.
#[must_use]
pub fn laplace_sum_half_width(draws: u32, variance_per_draw: f64, confidence: f64) -> f64 {
    let valid = variance_per_draw > 0.0
        && variance_per_draw.is_finite()
        && confidence > 0.0
        && confidence < 1.0;
    if draws == 0 || !valid {
        return 0.0;
    }
    let alpha = 1.0 - confidence;
    let scale = (variance_per_draw / 2.0).sqrt();
    let mut hi = 4.0 * (2.0 * f64::from(draws)).sqrt() + 8.0;
    while laplace_sum_tail(draws, hi) > alpha {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if laplace_sum_tail(draws, mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-12 * hi {
            break;
        }
    }
    0.5 * (lo + hi) * scale
}

/// The 95 % half-width (Wh) of the noise in a group's released hourly total when each of the
/// hour's [`READINGS_PER_HOUR`] quarter-hour totals carries `draws_per_reading` full discrete
/// Laplace draws of scale Δ/ε: 1 with distributed shares of exactly k meters or a central
/// curator, [`DEFAULT_PLAN_DRAWS`] under the default plan with everyone present, n with local
/// noise at each of n meters. A whole number of draws is a sum of that many Laplace draws per
/// quarter-hour; a fractional one is taken as one Laplace draw of that variance per
/// quarter-hour (a Pólya difference of shape r ≈ 1 is that close to a discrete Laplace one).
///
/// # Errors
/// [`Error::InvalidOption`] for a sensitivity the sampler refuses.
pub fn hourly_half_width(
    sensitivity: Wh,
    epsilon: Epsilon,
    draws_per_reading: f64,
) -> Result<f64, Error> {
    let full = DiscreteLaplace::for_mechanism(sensitivity, epsilon)?;
    let whole = draws_per_reading.round();
    Ok(
        if (draws_per_reading - whole).abs() < 1e-12
            && whole >= 1.0
            && whole <= f64::from(u32::MAX / 4)
        {
            laplace_sum_half_width(
                READINGS_PER_HOUR * whole as u32,
                full.variance(),
                TARGET_CONFIDENCE,
            )
        } else {
            laplace_sum_half_width(
                READINGS_PER_HOUR,
                full.variance() * draws_per_reading,
                TARGET_CONFIDENCE,
            )
        },
    )
}

/// The smallest ε on the grid of [`EPSILON_GRID_STEP`] (up to `max_epsilon`) at which a
/// group's released hourly total with `draws_per_reading` draws per quarter-hour (see
/// [`hourly_half_width`]) is within `relative_error` × `group_load_wh` in
/// [`TARGET_CONFIDENCE`] of hours; `None` if no grid point up to `max_epsilon` is.
///
/// # Errors
/// [`Error::InvalidOption`] for a sensitivity the sampler refuses.
pub fn smallest_grid_epsilon(
    sensitivity: Wh,
    group_load_wh: f64,
    relative_error: f64,
    draws_per_reading: f64,
    max_epsilon: f64,
) -> Result<Option<f64>, Error> {
    let steps = (max_epsilon / EPSILON_GRID_STEP).round() as u32;
    for step in 1..=steps {
        // Rounded to two decimals so that the grid's points are the literals 0.05, 0.1, ….
        let epsilon = (f64::from(step) * EPSILON_GRID_STEP * 100.0).round() / 100.0;
        let half_width =
            hourly_half_width(sensitivity, Epsilon::try_new(epsilon)?, draws_per_reading)?;
        if half_width <= relative_error * group_load_wh {
            return Ok(Some(epsilon));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wh(v: i64) -> Wh {
        Wh::try_new(v).expect("wh")
    }

    #[test]
    fn sensitivity_is_the_connection_limit_rounded_up() {
        let d = sensitivity_for(
            HOUSEHOLD_SUPPLY_VOLTS,
            HOUSEHOLD_SUPPLY_AMPS,
            READING_INTERVAL,
        )
        .expect("sensitivity");
        assert_eq!(d.get(), DEFAULT_SENSITIVITY_WH);
        assert_eq!(HOUSEHOLD_MAX_POWER_W, 13_800);
        assert_eq!(READING_INTERVAL.as_secs() * READINGS_PER_HOUR, 3_600);
        // 63 A: 3,622.5 Wh, rounded up.
        assert_eq!(
            sensitivity_for(230, 63, Interval::FIFTEEN_MINUTES)
                .expect("63 A")
                .get(),
            3_623
        );
        // 240 V × 100 A for an hour: 24 kWh exactly.
        assert_eq!(
            sensitivity_for(240, 100, Interval::HOUR)
                .expect("hour")
                .get(),
            24_000
        );
        // 1 V × 1 A for a second is 1/3600 Wh: rounded up to 1.
        assert_eq!(
            sensitivity_for(1, 1, Interval::SECOND).expect("tiny").get(),
            1
        );
        assert!(sensitivity_for(0, 60, Interval::FIFTEEN_MINUTES).is_err());
        assert!(sensitivity_for(u32::MAX, u32::MAX, Interval::DAY).is_err());
    }

    /// P(|S| > y) for the sum of four Laplace(1) draws, written out: 2e^{−y}(c₀Q₄ + c₁Q₃ +
    /// c₂Q₂ + c₃Q₁) with c = (1/16, 1/8, 5/32, 5/32) and Q_j = Σ_{i<j} y^i/i!.
    fn four_draw_tail(y: f64) -> f64 {
        let q1 = 1.0;
        let q2 = q1 + y;
        let q3 = q2 + y * y / 2.0;
        let q4 = q3 + y * y * y / 6.0;
        2.0 * (-y).exp() * (q4 / 16.0 + q3 / 8.0 + 5.0 * q2 / 32.0 + 5.0 * q1 / 32.0)
    }

    #[test]
    fn half_width_matches_known_laws() {
        // One draw: P(|L| > x) = e^{−x/b}, so h = b·ln 20 (variance 2b²).
        let h1 = laplace_sum_half_width(1, 2.0, 0.95);
        assert!((h1 - 20_f64.ln()).abs() < 1e-9, "{h1}");
        // Two draws: P(|S| > y) = e^{−y}(2 + y)/2.
        let h2 = laplace_sum_half_width(2, 2.0, 0.95);
        assert!(
            ((-h2).exp() * (2.0 + h2) / 2.0 - 0.05).abs() < 1e-12,
            "{h2}"
        );
        // Four draws: the written-out tail.
        let h4 = laplace_sum_half_width(4, 2.0, 0.95);
        assert!((four_draw_tail(h4) - 0.05).abs() < 1e-12, "{h4}");
        let z4 = h4 / 8_f64.sqrt();
        assert!((z4 - 2.0126).abs() < 1e-4, "{z4}");
        // Many draws: the Gaussian's 1.959964 standard deviations (excess kurtosis 3/m).
        let m = 40_000;
        let z = laplace_sum_half_width(m, 2.0, 0.95) / (2.0 * f64::from(m)).sqrt();
        assert!((z - 1.959_964).abs() < 1e-3, "{z}");
    }

    #[test]
    fn half_width_matches_convolved_discrete_laplace() {
        // Four discrete Laplace draws of scale 20, convolved exactly from the pmf.
        let full = DiscreteLaplace::try_from_rational_scale(20, 1).expect("dl");
        let bound = 600_i64;
        let one: Vec<f64> = (-bound..=bound).map(|k| full.pmf(k)).collect();
        let mut sum = one.clone();
        for _ in 1..4 {
            let mut next = vec![0.0; sum.len() + one.len() - 1];
            for (i, a) in sum.iter().enumerate() {
                for (j, b) in one.iter().enumerate() {
                    next[i + j] += a * b;
                }
            }
            sum = next;
        }
        let centre = (sum.len() / 2) as i64;
        let mut inside = sum[centre as usize];
        let mut h = 0_i64;
        while inside < 0.95 {
            h += 1;
            inside += sum[(centre + h) as usize] + sum[(centre - h) as usize];
        }
        let continuous = laplace_sum_half_width(4, full.variance(), 0.95);
        assert!((continuous - h as f64).abs() <= 1.0, "{continuous} vs {h}");
    }

    #[test]
    fn default_epsilon_meets_the_target_and_is_the_smallest_on_the_grid() {
        let delta = DEFAULT_SENSITIVITY_WH as f64;
        let target = TARGET_RELATIVE_ERROR * f64::from(TARGET_GROUP_SIZE) * UCI_MEAN_HOURLY_WH;
        // Independently: the discrete Laplace variance 2q/(1 − q)² of scale Δ/ε, four draws an
        // hour, and the written-out four-draw tail at the target.
        let tail_at_target = |eps: f64, draws: f64| {
            let b = delta / eps;
            let q = (-1.0 / b).exp();
            let variance = draws * 4.0 * 2.0 * q / ((1.0 - q) * (1.0 - q));
            let sigma = variance.sqrt();
            assert!((sigma / (8_f64.sqrt() * b * draws.sqrt()) - 1.0).abs() < 1e-6);
            four_draw_tail(target / (sigma / 8_f64.sqrt()))
        };
        // Exactly one draw per interval: 0.95 is the smallest on the grid.
        assert!(tail_at_target(0.95, 1.0) <= 1.0 - TARGET_CONFIDENCE);
        assert!(tail_at_target(0.9, 1.0) > 1.0 - TARGET_CONFIDENCE);
        // The default plan, everyone present: 1/0.9 of a draw; the default is the smallest.
        assert!(tail_at_target(DEFAULT_EPSILON_PER_READING, DEFAULT_PLAN_DRAWS) <= 0.05);
        assert!(
            tail_at_target(
                DEFAULT_EPSILON_PER_READING - EPSILON_GRID_STEP,
                DEFAULT_PLAN_DRAWS
            ) > 1.0 - TARGET_CONFIDENCE
        );
        // The library's search agrees.
        let search = |draws: f64| {
            smallest_grid_epsilon(
                wh(DEFAULT_SENSITIVITY_WH),
                f64::from(TARGET_GROUP_SIZE) * UCI_MEAN_HOURLY_WH,
                TARGET_RELATIVE_ERROR,
                draws,
                4.0,
            )
            .expect("search")
        };
        assert_eq!(
            search(DEFAULT_PLAN_DRAWS),
            Some(DEFAULT_EPSILON_PER_READING)
        );
        assert_eq!(search(1.0), Some(0.95));
        // The documented figures: one draw, 20.67 kWh = 1.90 % at ε = 0.95 and 21.82 kWh =
        // 2.003 % at 0.9; the default plan at ε = 1, 20.70 kWh = 1.90 %.
        let load = 1_000.0 * UCI_MEAN_HOURLY_WH;
        let d = wh(DEFAULT_SENSITIVITY_WH);
        let at = |e: f64, draws: f64| {
            hourly_half_width(d, Epsilon::try_new(e).expect("eps"), draws).expect("h")
        };
        let h = at(0.95, 1.0);
        assert!((h / 1_000.0 - 20.67).abs() < 0.005, "{h}");
        assert!((h / load - 0.0190).abs() < 5e-5, "{}", h / load);
        assert!((at(0.9, 1.0) / 1_000.0 - 21.82).abs() < 0.005);
        let default = at(DEFAULT_EPSILON_PER_READING, DEFAULT_PLAN_DRAWS);
        assert!((default / 1_000.0 - 20.70).abs() < 0.01, "{default}");
        assert!(at(0.95, DEFAULT_PLAN_DRAWS) > TARGET_RELATIVE_ERROR * load);
        // Low-load hours: about ±9 % of 1,000 × the 5th-percentile hour.
        let low = default / (1_000.0 * UCI_P5_HOURLY_WH);
        assert!((low - 0.0894).abs() < 2e-3, "{low}");
    }

    #[test]
    fn local_noise_needs_root_n_times_the_epsilon() {
        // n local draws per reading at √n·ε have the variance of one draw at ε; the half-width
        // is then the Gaussian's 1.960 σ instead of the four-draw sum's 2.013 σ.
        let d = wh(DEFAULT_SENSITIVITY_WH);
        let eps = Epsilon::try_new(DEFAULT_EPSILON_PER_READING).expect("eps");
        let central = hourly_half_width(d, eps, 1.0).expect("central");
        let scaled = Epsilon::try_new(DEFAULT_EPSILON_PER_READING * 1_000_f64.sqrt()).expect("e");
        let local = hourly_half_width(d, scaled, 1_000.0).expect("local");
        let ratio = local / central;
        assert!((ratio - 1.959_964 / 2.0126).abs() < 1e-3, "{ratio}");
        // The documented ε = 27.8 for the 1,000-home target with local noise: 27.75 misses.
        let target = TARGET_RELATIVE_ERROR * f64::from(TARGET_GROUP_SIZE) * UCI_MEAN_HOURLY_WH;
        let at = |e: f64| {
            hourly_half_width(
                d,
                Epsilon::try_new(e).expect("eps"),
                f64::from(TARGET_GROUP_SIZE),
            )
            .expect("local")
        };
        assert!(at(27.8) <= target, "{}", at(27.8));
        assert!(at(27.75) > target, "{}", at(27.75));
    }
}
