//! Properties of resampling and calendar splitting on random series with random gaps.

mod common;

use chrono::{NaiveDateTime, TimeDelta};
use proptest::prelude::*;
use seer_core::data::{EnergySeries, GapPolicy, Interval, Reading, Resampled};
use seer_core::units::Joules;

/// Up to 100 kW for a minute.
const MAX_MINUTE_JOULES: i64 = 6_000_000;

/// Minute readings from a random start; `None` entries are gaps.
fn minute_series(start_minute: i64, energies: &[Option<i64>]) -> EnergySeries {
    let start = common::at("2007-01-30 00:00") + TimeDelta::minutes(start_minute);
    let readings = energies
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            e.map(|e| Reading {
                start: start + TimeDelta::minutes(i as i64),
                energy: Joules::try_new(e).expect("in range"),
            })
        })
        .collect();
    EnergySeries::try_new(Interval::MINUTE, None, readings).expect("valid series")
}

fn energies(max_len: usize, gap_weight: u32) -> impl Strategy<Value = Vec<Option<i64>>> {
    proptest::collection::vec(
        prop_oneof![
            gap_weight => Just(None),
            100 - gap_weight => (0..=MAX_MINUTE_JOULES).prop_map(Some),
        ],
        0..max_len,
    )
}

fn targets() -> impl Strategy<Value = Interval> {
    prop_oneof![
        Just(Interval::FIFTEEN_MINUTES),
        Just(Interval::HOUR),
        Just(Interval::try_from_minutes(5).expect("5 min")),
        Just(Interval::DAY),
    ]
}

/// The exact sum of the readings in `from .. from + interval`.
fn sum_in(series: &EnergySeries, from: NaiveDateTime, interval: Interval) -> (i64, u32) {
    let inside: Vec<_> = series
        .readings()
        .iter()
        .filter(|r| r.start >= from && r.start < from + interval.as_time_delta())
        .collect();
    (
        inside.iter().map(|r| r.energy.get()).sum(),
        inside.len() as u32,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every interval's measured energy and count are the exact sums of the readings inside it,
    /// complete intervals report exactly that, and no reading is lost or counted twice.
    #[test]
    fn complete_intervals_conserve_energy(
        start in 0i64..2_880,
        energies in energies(3_000, 5),
        target in targets(),
    ) {
        let series = minute_series(start, &energies);
        let r = series.resample(target, GapPolicy::COMPLETE_ONLY).expect("resample");
        let mut all = 0i64;
        for (k, i) in r.intervals().iter().enumerate() {
            let (sum, count) = sum_in(&series, i.start, target);
            prop_assert_eq!(i.measured.get(), sum);
            prop_assert_eq!(i.observed, count);
            prop_assert_eq!(i.expected, target.as_secs() / 60);
            prop_assert!(target.is_aligned(i.start));
            if k > 0 {
                prop_assert_eq!(i.start, r.intervals()[k - 1].start + target.as_time_delta());
            }
            if i.is_complete() {
                prop_assert_eq!(i.energy, Some(i.measured));
            } else {
                prop_assert_eq!(i.energy, None);
            }
            all += i.measured.get();
        }
        prop_assert_eq!(all, series.total().get());
        let complete: i64 = r.intervals().iter().filter(|i| i.is_complete()).map(|i| i.measured.get()).sum();
        prop_assert_eq!(r.total().get(), complete);
    }

    /// Without gaps and with whole intervals, resampling conserves the total exactly.
    #[test]
    fn gap_free_whole_days_conserve_the_total(
        start_day in 0i64..30,
        days in 1usize..3,
        seed in proptest::collection::vec(0..=MAX_MINUTE_JOULES, 1..64),
        target in targets(),
    ) {
        let energies: Vec<Option<i64>> =
            (0..days * 1_440).map(|i| Some(seed[i % seed.len()])).collect();
        let series = minute_series(start_day * 1_440, &energies);
        let r = series.resample(target, GapPolicy::COMPLETE_ONLY).expect("resample");
        prop_assert_eq!(r.missing_count(), 0);
        prop_assert_eq!(r.total(), series.total());
        prop_assert_eq!(r.intervals().len() as u32, days as u32 * target.per_day());
    }

    /// Minute → 15 min → 1 h equals minute → 1 h wherever all four quarters were complete.
    #[test]
    fn two_steps_equal_one_step(start in 0i64..240, energies in energies(1_000, 2)) {
        let series = minute_series(start, &energies);
        let direct = series.resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY).expect("resample");
        let quarters = series
            .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
            .expect("resample")
            .to_series();
        let stepped = quarters.resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY).expect("resample");
        for s in stepped.intervals().iter().filter(|i| i.is_complete()) {
            let d = direct.intervals().iter().find(|d| d.start == s.start);
            prop_assert_eq!(d.and_then(|d| d.energy), s.energy);
        }
        for d in direct.intervals().iter().filter(|i| i.is_complete()) {
            let s = stepped.intervals().iter().find(|s| s.start == d.start);
            prop_assert_eq!(s.and_then(|s| s.energy), d.energy);
        }
    }

    /// Estimates only for coverage at or above the threshold, scaled to the nearest joule.
    #[test]
    fn estimates_scale_what_was_measured(
        start in 0i64..240,
        energies in energies(1_000, 20),
        threshold in 0.05f64..=1.0,
    ) {
        let series = minute_series(start, &energies);
        let policy = GapPolicy::try_scale_up(threshold).expect("policy");
        let r: Resampled = series.resample(Interval::FIFTEEN_MINUTES, policy).expect("resample");
        for i in r.intervals() {
            match i.energy {
                Some(e) if !i.is_complete() => {
                    prop_assert!(i.coverage() >= threshold);
                    prop_assert!(e >= i.measured);
                    let lhs = i128::from(e.get()) * i128::from(i.observed);
                    let rhs = i128::from(i.measured.get()) * i128::from(i.expected);
                    prop_assert!((lhs - rhs).abs() * 2 <= i128::from(i.observed));
                }
                Some(e) => prop_assert_eq!(e, i.measured),
                None => prop_assert!(i.observed == 0 || i.coverage() < threshold),
            }
        }
    }

    /// Days and months partition the series: every reading in exactly one, totals add up.
    #[test]
    fn days_and_months_partition_the_series(start in 0i64..60_000, energies in energies(5_000, 10)) {
        let series = minute_series(start, &energies);
        let days: Vec<_> = series.days().collect();
        let months: Vec<_> = series.months().collect();
        let day_total: i64 = days.iter().map(|(_, v)| v.total().get()).sum();
        let month_total: i64 = months.iter().map(|(_, v)| v.total().get()).sum();
        prop_assert_eq!(day_total, series.total().get());
        prop_assert_eq!(month_total, series.total().get());
        prop_assert_eq!(days.iter().map(|(_, v)| v.len()).sum::<usize>(), series.len());
        for (date, view) in &days {
            prop_assert_eq!(view.expected_len(), 1_440);
            prop_assert!(view.readings().iter().all(|r| r.start.date() == *date));
        }
        for (month, view) in &months {
            prop_assert_eq!(view.expected_len(), u64::from(month.num_days()) * 1_440);
            prop_assert!(view.readings().iter().all(|r| month.contains(r.start)));
        }
        for pair in days.windows(2) {
            prop_assert_eq!(pair[0].0.succ_opt(), Some(pair[1].0));
        }
    }
}
