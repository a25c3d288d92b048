//! What the meter computes from its own history before it encrypts: the forecast inputs of
//! tomorrow's hours and the anomaly features of the day that ended, all **relative to the
//! home's own usual level**, so that one model serves homes of any size.
//!
//! Both read the home's usable days ([`crate::history`]) through one code path, used by the
//! meter ([`crate::model::DailyModel::prepare`]) and by training ([`crate::train`]) alike.
//!
//! **The usual level.** For a day `D`, the *context* is the usable days among the
//! [`crate::model::DailyModel::history_days`] days before a reference day: the forecast of
//! `D + 1` looks at `D − 27 ..= D` (the day that just ended included), the anomaly features of
//! `D` at `D − 28 ..= D − 1` (the judged day never sets its own yardstick). With fewer than
//! `min_history_days` usable days the part is not prepared. From the context: the usual
//! profile `U[h]` (mean energy of hour `h`) and the usual level `L` (mean hourly energy).
//!
//! **Forecast inputs** ([`ForecastInput`]) are energies in kWh (lags, profiles, the level), so
//! that the forecast `Σ_r W[r][c]·x[r][c]` scales with the home: a home twice as large with the
//! same habits gets twice the forecast. A lag day the meter lacks is replaced by the usual
//! profile `U` of that hour (no day is lost for a gap the model can bridge).
//!
//! **Anomaly features** ([`AnomalyInput`]) are ratios of the day to its usual (dimensionless;
//! a homogeneous function of degree 0 in the home's energies), binned into 16 bins whose edges
//! come from training quantiles.

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::history::DaySource;

/// What one forecast input row holds for target hour `c` of tomorrow `T = D + 1` (kWh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ForecastInput {
    /// The usual level `L` (mean hourly energy of the context): the bias, scaled to the home.
    Level,
    /// Hour `c` of day `T − days` (`1` = the day that ended, `7` = same weekday last week);
    /// the usual `U[c]` if that day is not usable.
    Lag {
        /// Days back from the target day (1 ..= 28).
        days: u32,
    },
    /// The mean of hours `c − 1, c, c + 1` of day `D` (clamped to the day), `U`-filled.
    LagNeighbourhood,
    /// The last hour of `D` (23:00), `U[23]` if `D` is not usable.
    LastHour,
    /// The mean hourly energy of `D`, `L` if `D` is not usable.
    DayMean,
    /// The mean hourly energy of hours 18–23 of `D`, the usual of those hours if unusable.
    EveningMean,
    /// The usual profile `U[c]` over the context.
    Profile,
    /// Hour `c` averaged over the context days of `T`'s weekday (`U[c]` if none).
    WeekdayProfile,
    /// Hour `c` averaged over the usable days among the last `days` days (`U[c]` if none).
    RecentProfile {
        /// Days back from `D` inclusive.
        days: u32,
    },
    /// `L` when `T` is a Saturday or Sunday, else 0.
    WeekendLevel,
    /// `U[c]` when `T` is a Saturday or Sunday, else 0.
    WeekendProfile,
}

/// A feature of the day that ended, as a ratio to the home's usual (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AnomalyInput {
    /// `Σ_{h∈H} y[h] / Σ_{h∈H} U[h]`: the hours' energy as a multiple of their usual.
    Energy,
    /// `max_{h∈H} y[h] / (U[h] + L)`, divided by the same quantity's mean over the context
    /// days: how far the day's most unusual hour stood above its usual, relative to how far
    /// it usually does.
    Peak,
    /// `Σ_{h,h+1∈H} |y[h+1] − y[h]|` over its mean on the context days: how much the load
    /// moved hour to hour (a frozen register does not move).
    Variation,
    /// The hours' share of the day's energy over their usual share.
    Share,
    /// The mean hour of `H` over the largest hour outside `H`, over its mean on the context
    /// days: energy moved into `H` from the day's heaviest hours.
    Contrast,
    /// `max_{h∈H} y[h] / U[h]` (with a small floor): the hour furthest above its own usual.
    HourRatio,
    /// `max_{h∈H} y[h]` over the mean of the same maximum on the context days.
    MaxHour,
}

/// Hours, kWh, one day.
pub(crate) type Hours = [f64; 24];

/// The usable days before a reference day and what they say is usual.
pub(crate) struct Context {
    /// `(days before the reference day, the day)`: 0 = the reference day itself.
    pub days: Vec<(u32, Hours)>,
    /// Mean of each hour over the context days.
    pub profile: Hours,
    /// Mean hourly energy.
    pub level: f64,
}

impl Context {
    /// The usable days among `last − (span − 1) ..= last`; `None` with fewer than `min`.
    pub fn gather(src: &impl DaySource, last: NaiveDate, span: u32, min: u32) -> Option<Self> {
        let mut days = Vec::with_capacity(span as usize);
        for back in 0..span {
            let day = last.checked_sub_days(Days::new(u64::from(back)))?;
            if let Some(h) = src.usable(day) {
                days.push((back, h));
            }
        }
        if days.len() < min.max(1) as usize {
            return None;
        }
        let n = days.len() as f64;
        let mut profile = [0.0; 24];
        for (_, h) in &days {
            for (p, v) in profile.iter_mut().zip(h) {
                *p += v;
            }
        }
        for p in &mut profile {
            *p /= n;
        }
        let level = profile.iter().sum::<f64>() / 24.0;
        Some(Self {
            days,
            profile,
            level,
        })
    }

    fn day(&self, back: u32) -> Option<&Hours> {
        self.days.iter().find(|(b, _)| *b == back).map(|(_, h)| h)
    }

    /// Mean of hour `c` over the context days `back` satisfies; `None` if none does.
    fn mean_where(&self, c: usize, keep: impl Fn(u32) -> bool) -> Option<f64> {
        let (sum, n) = self
            .days
            .iter()
            .filter(|(b, _)| keep(*b))
            .fold((0.0, 0usize), |(s, n), (_, h)| (s + h[c], n + 1));
        (n > 0).then(|| sum / n as f64)
    }
}

fn is_weekend(day: NaiveDate) -> bool {
    matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The forecast inputs `x[r][c]` for the day after `day` (context ending on `day`), rows in
/// the order of `rows`.
pub(crate) fn forecast_inputs(
    rows: &[ForecastInput],
    src: &impl DaySource,
    day: NaiveDate,
    span: u32,
    min: u32,
) -> Option<Vec<Hours>> {
    let ctx = Context::gather(src, day, span, min)?;
    let target = day.succ_opt()?;
    let weekend = is_weekend(target);
    let yesterday = ctx.day(0);
    let u = &ctx.profile;
    Some(
        rows.iter()
            .map(|row| {
                let mut x = [0.0; 24];
                for (c, xc) in x.iter_mut().enumerate() {
                    *xc = match *row {
                        ForecastInput::Level => ctx.level,
                        ForecastInput::Lag { days } => match days.checked_sub(1) {
                            Some(back) => ctx.day(back).map_or(u[c], |h| h[c]),
                            None => u[c],
                        },
                        ForecastInput::LagNeighbourhood => {
                            let (lo, hi) = (c.saturating_sub(1), (c + 1).min(23));
                            let h = yesterday.unwrap_or(u);
                            h[lo..=hi].iter().sum::<f64>() / (hi - lo + 1) as f64
                        }
                        ForecastInput::LastHour => yesterday.map_or(u[23], |h| h[23]),
                        ForecastInput::DayMean => {
                            yesterday.map_or(ctx.level, |h| h.iter().sum::<f64>() / 24.0)
                        }
                        ForecastInput::EveningMean => {
                            yesterday.unwrap_or(u)[18..24].iter().sum::<f64>() / 6.0
                        }
                        ForecastInput::Profile => u[c],
                        ForecastInput::WeekdayProfile => {
                            // T − 7k is `7k − 1` days before `day`.
                            ctx.mean_where(c, |b| b % 7 == 6).unwrap_or(u[c])
                        }
                        ForecastInput::RecentProfile { days } => {
                            ctx.mean_where(c, |b| b < days).unwrap_or(u[c])
                        }
                        ForecastInput::WeekendLevel => {
                            if weekend {
                                ctx.level
                            } else {
                                0.0
                            }
                        }
                        ForecastInput::WeekendProfile => {
                            if weekend {
                                u[c]
                            } else {
                                0.0
                            }
                        }
                    };
                }
                x
            })
            .collect(),
    )
}

/// Ratios with a floor so that an idle home's 0/0 reads as "as usual".
const FLOOR_KWH: f64 = 1e-3;

fn ratio(num: f64, den: f64, hours: usize) -> f64 {
    let floor = FLOOR_KWH * hours.max(1) as f64;
    (num + floor) / (den + floor)
}

/// One feature's raw statistic of one day given what is usual (before dividing by its usual).
fn peak_stat(day: &Hours, hours: &[u32], u: &Hours, level: f64) -> f64 {
    hours
        .iter()
        .map(|&h| day[h as usize] / (u[h as usize] + level + FLOOR_KWH))
        .fold(0.0, f64::max)
}

fn variation_stat(day: &Hours, hours: &[u32]) -> f64 {
    hours
        .windows(2)
        .filter(|w| w[1] == w[0] + 1)
        .map(|w| (day[w[1] as usize] - day[w[0] as usize]).abs())
        .sum()
}

fn contrast_stat(day: &Hours, hours: &[u32]) -> f64 {
    let inside = hours.iter().map(|&h| day[h as usize]).sum::<f64>() / hours.len().max(1) as f64;
    let outside = (0..24u32)
        .filter(|h| !hours.contains(h))
        .map(|h| day[h as usize])
        .fold(0.0, f64::max);
    (inside + FLOOR_KWH) / (outside + FLOOR_KWH)
}

fn max_stat(day: &Hours, hours: &[u32]) -> f64 {
    hours.iter().map(|&h| day[h as usize]).fold(0.0, f64::max)
}

/// The anomaly features of `day` (context: the days before it), in the order of `features`.
pub(crate) fn anomaly_values(
    features: &[(AnomalyInput, &[u32])],
    src: &impl DaySource,
    day: NaiveDate,
    span: u32,
    min: u32,
) -> Option<Vec<f64>> {
    let y = src.usable(day)?;
    let ctx = Context::gather(src, day.pred_opt()?, span, min)?;
    let u = &ctx.profile;
    let n = ctx.days.len() as f64;
    Some(
        features
            .iter()
            .map(|&(kind, hours)| {
                let sum = |d: &Hours| hours.iter().map(|&h| d[h as usize]).sum::<f64>();
                match kind {
                    AnomalyInput::Energy => ratio(sum(&y), sum(u), hours.len()),
                    AnomalyInput::Peak => {
                        let usual = ctx
                            .days
                            .iter()
                            .map(|(_, d)| peak_stat(d, hours, u, ctx.level))
                            .sum::<f64>()
                            / n;
                        ratio(peak_stat(&y, hours, u, ctx.level), usual, 1)
                    }
                    AnomalyInput::Variation => {
                        let usual = ctx
                            .days
                            .iter()
                            .map(|(_, d)| variation_stat(d, hours))
                            .sum::<f64>()
                            / n;
                        ratio(variation_stat(&y, hours), usual, hours.len())
                    }
                    AnomalyInput::Contrast => {
                        let usual = ctx
                            .days
                            .iter()
                            .map(|(_, d)| contrast_stat(d, hours))
                            .sum::<f64>()
                            / n;
                        contrast_stat(&y, hours) / usual
                    }
                    AnomalyInput::HourRatio => hours
                        .iter()
                        .map(|&h| ratio(y[h as usize], u[h as usize], 1))
                        .fold(0.0, f64::max),
                    AnomalyInput::MaxHour => {
                        let usual = ctx
                            .days
                            .iter()
                            .map(|(_, d)| max_stat(d, hours))
                            .sum::<f64>()
                            / n;
                        ratio(max_stat(&y, hours), usual, 1)
                    }
                    AnomalyInput::Share => {
                        let total = y.iter().sum::<f64>();
                        let usual_total = u.iter().sum::<f64>();
                        let share = ratio(sum(&y), total, hours.len());
                        let usual_share = ratio(sum(u), usual_total, hours.len());
                        share / usual_share
                    }
                }
            })
            .collect(),
    )
}
