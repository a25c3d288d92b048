//! The labelled anomaly injector.
//!
//! Four kinds, each applied to one whole day of hourly (24) or sub-hourly (e.g. 96
//! quarter-hour) energies:
//!
//! - [`AnomalyKind::Spike`]: 1–3 consecutive hours multiplied by a factor in 4–8;
//! - [`AnomalyKind::Theft`]: the whole day scaled by a factor in 0.2–0.4 (a bypassed meter);
//! - [`AnomalyKind::Stuck`]: from an hour in 00:00–06:00 to the end of the day, every slot repeats
//!   the reading of that slot (a frozen register);
//! - [`AnomalyKind::LoadShift`]: the three heaviest hours outside 01:00–05:00 give everything above
//!   the day's lightest hour to 01:00–05:00, spread evenly (the total is kept).
//!
//! [`inject`] picks `round(rate · days)` distinct days with a seeded RNG and gives the kinds
//! out in turn over a shuffled order, so each kind gets a quarter of them (±1).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// A kind of injected anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// 1–3 hour spikes ×4–8.
    Spike,
    /// Whole-day theft scaled to 0.2–0.4.
    Theft,
    /// A stuck meter repeating one value.
    Stuck,
    /// Heavy load moved to 01:00–05:00.
    LoadShift,
}

impl AnomalyKind {
    /// Every kind.
    pub const ALL: [AnomalyKind; 4] = [Self::Spike, Self::Theft, Self::Stuck, Self::LoadShift];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spike => "spike",
            Self::Theft => "theft",
            Self::Stuck => "stuck",
            Self::LoadShift => "load_shift",
        }
    }
}

/// Applies one anomaly of `kind` to a day of `24·k` slot energies.
pub fn inject_day(slots: &mut [f64], kind: AnomalyKind, rng: &mut StdRng) {
    let per_hour = (slots.len() / 24).max(1);
    let hours = slots.len() / per_hour;
    let hour_energy = |s: &[f64], h: usize| s[h * per_hour..(h + 1) * per_hour].iter().sum::<f64>();
    match kind {
        AnomalyKind::Spike => {
            let len = rng.random_range(1..=3usize);
            let start = rng.random_range(0..=hours - len);
            let factor = rng.random_range(4.0..=8.0);
            for v in &mut slots[start * per_hour..(start + len) * per_hour] {
                *v *= factor;
            }
        }
        AnomalyKind::Theft => {
            let factor = rng.random_range(0.2..=0.4);
            for v in slots.iter_mut() {
                *v *= factor;
            }
        }
        AnomalyKind::Stuck => {
            let start = rng.random_range(0..=6usize) * per_hour;
            let value = slots[start];
            for v in &mut slots[start..] {
                *v = value;
            }
        }
        AnomalyKind::LoadShift => {
            let night = 1..5usize;
            let floor = (0..hours)
                .map(|h| hour_energy(slots, h))
                .fold(f64::INFINITY, f64::min);
            let mut heavy: Vec<usize> = (0..hours).filter(|h| !night.contains(h)).collect();
            heavy.sort_by(|a, b| hour_energy(slots, *b).total_cmp(&hour_energy(slots, *a)));
            let mut moved = 0.0;
            for &h in heavy.iter().take(3) {
                let e = hour_energy(slots, h);
                if e <= floor || e <= 0.0 {
                    continue;
                }
                // Scale the hour's slots down to the floor, keeping their shape.
                let keep = floor / e;
                for v in &mut slots[h * per_hour..(h + 1) * per_hour] {
                    moved += *v * (1.0 - keep);
                    *v *= keep;
                }
            }
            let per_slot = moved / (night.len() * per_hour) as f64;
            for v in &mut slots[night.start * per_hour..night.end * per_hour] {
                *v += per_slot;
            }
        }
    }
}

/// Injects anomalies into `round(rate · days.len())` of the days (those at indices `>= from`
/// only), returning each day's label.
pub fn inject(
    days: &mut [Vec<f64>],
    from: usize,
    rate: f64,
    seed: u64,
) -> Vec<Option<AnomalyKind>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut labels = vec![None; days.len()];
    let eligible = days.len().saturating_sub(from);
    let count = ((rate.clamp(0.0, 1.0) * eligible as f64).round() as usize).min(eligible);
    let mut chosen: Vec<usize> = rand::seq::index::sample(&mut rng, eligible, count)
        .into_iter()
        .map(|i| i + from)
        .collect();
    chosen.sort_unstable();
    let mut order: Vec<usize> = (0..chosen.len()).collect();
    order.shuffle(&mut rng);
    for (n, &pos) in order.iter().enumerate() {
        let day = chosen[pos];
        let kind = AnomalyKind::ALL[n % AnomalyKind::ALL.len()];
        inject_day(&mut days[day], kind, &mut rng);
        labels[day] = Some(kind);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(per_hour: usize) -> Vec<f64> {
        (0..24 * per_hour)
            .map(|i| 0.2 + (i / per_hour) as f64 * 0.05)
            .collect()
    }

    #[test]
    fn each_kind_does_what_it_says() {
        let mut rng = StdRng::seed_from_u64(11);
        for per_hour in [1, 4] {
            let base = day(per_hour);
            let total: f64 = base.iter().sum();

            let mut d = base.clone();
            inject_day(&mut d, AnomalyKind::Spike, &mut rng);
            let changed: Vec<usize> = (0..d.len()).filter(|&i| d[i] != base[i]).collect();
            assert!(!changed.is_empty() && changed.len() <= 3 * per_hour);
            for &i in &changed {
                let f = d[i] / base[i];
                assert!((4.0..=8.0).contains(&f), "factor {f}");
            }
            assert!(changed.windows(2).all(|w| w[1] == w[0] + 1), "consecutive");

            let mut d = base.clone();
            inject_day(&mut d, AnomalyKind::Theft, &mut rng);
            let f = d.iter().sum::<f64>() / total;
            assert!((0.2..=0.4).contains(&f));
            assert!(d.iter().zip(&base).all(|(a, b)| (a / b - f).abs() < 1e-9));

            let mut d = base.clone();
            inject_day(&mut d, AnomalyKind::Stuck, &mut rng);
            let last = *d.last().unwrap();
            let start = d.iter().position(|v| *v == last).unwrap();
            assert!(start <= 6 * per_hour);
            assert!(d[start..].iter().all(|v| *v == last));
            assert_eq!(d[..start], base[..start]);

            let mut d = base.clone();
            inject_day(&mut d, AnomalyKind::LoadShift, &mut rng);
            assert!((d.iter().sum::<f64>() - total).abs() < 1e-9, "total kept");
            let night = |s: &[f64]| s[per_hour..5 * per_hour].iter().sum::<f64>();
            assert!(night(&d) > night(&base) + 0.5);
        }
    }

    #[test]
    fn inject_is_seeded_balanced_and_labelled() {
        let days: Vec<Vec<f64>> = (0..100).map(|_| day(1)).collect();
        let mut a = days.clone();
        let labels = inject(&mut a, 10, 0.2, 5);
        let mut b = days.clone();
        assert_eq!(labels, inject(&mut b, 10, 0.2, 5));
        assert_eq!(a, b);
        assert!(labels[..10].iter().all(Option::is_none));
        assert_eq!(labels.iter().flatten().count(), 18);
        for kind in AnomalyKind::ALL {
            let n = labels.iter().filter(|l| **l == Some(kind)).count();
            assert!((4..=5).contains(&n), "{kind:?}: {n}");
        }
        for (i, l) in labels.iter().enumerate() {
            assert_eq!(l.is_some(), a[i] != days[i], "day {i}");
        }
    }
}
