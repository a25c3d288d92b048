//! The group-totals phase of `seer run`: which windows to release, and how the released hourly
//! totals compare with their plaintext twins.
//!
//! Each meter's analytics lane carries its readings clamped to Δ plus its share of one
//! discrete Laplace draw of scale b = Δ/ε per interval for its noise group (its billing group):
//! the group's summed lane of a window carries at least one full draw per interval. The key
//! authority releases a group's hourly totals of a window (`utility-server group-totals`), or
//! withholds an hour when one of its intervals had fewer meters present than the plan's floor.
//! The launcher knows every home's whole-Wh readings ([`Home::energy`]), so the plaintext twin of
//! a released hour is the sum of the group's readings in it, each clamped to Δ
//! ([`Home::hourly_clamped_wh`]); their difference is the noise, and [`summarize`] compares
//! its spread with the one the plan predicts ([`expected_hour_variance`]).
//!
//! Windows are the meters' calendar grid ([`window_of`]): with `batch_days` N, days 1..=N,
//! N+1..=2N, … of the period, the last cut at the month's end. The launcher names them
//! itself rather than asking the utility for its pending windows (`--pending`), which lists
//! only windows that have ended by the wall clock: a replayed past month has, a synthetic
//! future one would not.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use chrono::{DateTime, FixedOffset, Utc};
use meter_client::batch::window_of;
use meter_client::upload::wire_time;
use seer_core::circuits::group_totals::MIN_PRESENT;
use seer_core::data::Period;
use seer_core::dp::{Epsilon, SharePlan};
use seer_core::units::Wh;
use serde::Deserialize;

use crate::plan::Home;
use crate::report::GroupTotalsSummary;

/// The starts of the period's batch windows in the meters' wire format (RFC 3339 in the
/// readings' UTC offset), in order.
///
/// # Errors
/// When a window cannot be cut (a date outside the calendar).
pub fn windows(period: Period, batch_days: u32, offset: FixedOffset) -> Result<Vec<String>> {
    let mut starts = Vec::new();
    let mut t = period.start();
    while t < period.end() {
        let (start, end) =
            window_of(t, batch_days).with_context(|| format!("the batch window of {t}"))?;
        starts.push(wire_time(start, offset));
        t = end;
    }
    Ok(starts)
}

/// The part of `utility-server group-totals`'s report (one window) the launcher reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct WindowReport {
    /// The window's start, UTC.
    pub window_start: String,
    /// The plan the request named; `None` when no batch of the window carried one.
    pub plan: Option<WindowPlan>,
    /// Every hour of the answer, in order.
    #[serde(default)]
    pub hours: Vec<WindowHour>,
    /// The inputs the key authority left out of the sum.
    #[serde(default)]
    pub refused: Vec<InputRefusal>,
    /// Hours the utility could not record as answered.
    #[serde(default)]
    pub conflicts: Vec<HourConflict>,
}

/// A window's noise plan, as the report shows it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct WindowPlan {
    /// Meters in the noise group (n).
    pub group_size: u32,
    /// Meters that may be absent or collude (t).
    pub tolerated: u32,
    /// The clamp Δ, Wh per reading.
    pub sensitivity_wh: i64,
    /// ε per reading.
    pub epsilon: f64,
    /// Seconds per reading interval.
    pub interval_seconds: u32,
}

/// One hour of a window's answer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct WindowHour {
    /// Its start, UTC.
    pub hour_start: String,
    /// `released`, `already_released`, `too_few_present` or `unknown`.
    pub status: String,
    /// The noised total, Wh (released hours only).
    pub total_wh: Option<i64>,
    /// The fewest meters present in an interval of the hour.
    #[serde(default)]
    pub min_present: u32,
    /// The scale Δ/ε of each interval's draw, Wh.
    #[serde(default)]
    pub noise_scale_wh: f64,
}

/// An input the key authority refused.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct InputRefusal {
    /// The meter.
    pub meter_id: String,
    /// The batch's sequence.
    pub sequence: u64,
    /// The key authority's reason.
    pub reason: String,
}

/// An hour the utility could not record.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HourConflict {
    /// The hour's start.
    pub hour_start: String,
    /// What is wrong.
    pub reason: String,
}

impl WindowPlan {
    /// The share plan, when its values are valid ones.
    fn share_plan(&self) -> Option<SharePlan> {
        SharePlan::try_new(
            self.group_size,
            self.tolerated,
            Wh::try_new(self.sensitivity_wh).ok()?,
            Epsilon::try_new(self.epsilon).ok()?,
        )
        .ok()
    }

    /// The fewest meters that must be present in each interval of an hour for the key
    /// authority to release it: max(⌈(n − t)/2⌉, [`MIN_PRESENT`]).
    pub fn presence_floor(&self) -> Option<u32> {
        Some(self.share_plan()?.presence_floor().max(MIN_PRESENT))
    }
}

/// The variance, Wh², of the noise in one released hour when all n meters of the group are
/// present: each of the hour's 3600/interval intervals carries n/(n − t) independent full
/// draws of discrete Laplace noise of scale b = Δ/ε (shares sized so that the n − t honest
/// meters alone carry one draw), each of variance ≈ 2b², so the hour's standard deviation is
///
/// σ = 2·√2·b·√(n/(n − t))  for 15-minute readings,
///
/// computed here exactly with the discrete distribution's variance
/// ([`SharePlan::released_variance`], from `DiscreteLaplace::variance`). Fewer present meters
/// give less noise, down to one draw per interval (the key authority's top-up). `None` for an
/// invalid plan.
pub fn expected_hour_variance(plan: &WindowPlan) -> Option<f64> {
    let share = plan.share_plan()?;
    let intervals = 3600.0 / f64::from(plan.interval_seconds.max(1));
    Some(intervals * share.released_variance(plan.group_size))
}

/// The group-totals summary of billing group `group`: its `homes` (those of this run in it),
/// the key authority's answers for each of its windows, and the released hours against the
/// plaintext hourly sums of the homes' readings clamped to the plan's Δ.
pub fn summarize(group: u64, homes: &[&Home], windows: &[WindowReport]) -> GroupTotalsSummary {
    let first_plan = windows.iter().find_map(|w| w.plan.as_ref());
    let mut summary = GroupTotalsSummary {
        group,
        homes: homes.len(),
        windows: windows.len(),
        group_size: first_plan.map(|p| p.group_size),
        tolerated: first_plan.map(|p| p.tolerated),
        sensitivity_wh: first_plan.map(|p| p.sensitivity_wh),
        epsilon: first_plan.map(|p| p.epsilon),
        presence_floor: first_plan.and_then(WindowPlan::presence_floor),
        ..GroupTotalsSummary::default()
    };
    // The plaintext hourly sums, per clamp (one in practice: every window has the run's plan).
    let mut plaintext: BTreeMap<i64, BTreeMap<DateTime<Utc>, i64>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut loads = Vec::new();
    let mut variances = Vec::new();
    for window in windows {
        summary
            .refused_inputs
            .extend(window.refused.iter().map(|r| {
                format!(
                    "{} batch {} (window {}): {}",
                    r.meter_id, r.sequence, window.window_start, r.reason
                )
            }));
        summary.conflicts.extend(
            window
                .conflicts
                .iter()
                .map(|c| format!("{}: {}", c.hour_start, c.reason)),
        );
        for hour in &window.hours {
            summary.hours += 1;
            summary.most_present = summary.most_present.max(hour.min_present);
            if hour.status == "too_few_present" {
                summary.withheld += 1;
                continue;
            }
            let (Some(total), Some(plan)) = (hour.total_wh, window.plan.as_ref()) else {
                // An unknown status: the utility's report lists it as a conflict.
                continue;
            };
            summary.released += 1;
            if summary.noise_scale_wh.is_none() && hour.noise_scale_wh > 0.0 {
                summary.noise_scale_wh = Some(hour.noise_scale_wh);
            }
            let Ok(start) = DateTime::parse_from_rfc3339(&hour.hour_start) else {
                summary.conflicts.push(format!(
                    "{}: the hour's start is not RFC 3339: not compared",
                    hour.hour_start
                ));
                continue;
            };
            let sums = plaintext.entry(plan.sensitivity_wh).or_insert_with(|| {
                hourly_sums(homes, Wh::try_new(plan.sensitivity_wh).unwrap_or(Wh::ZERO))
            });
            let load = sums.get(&start.with_timezone(&Utc)).copied().unwrap_or(0);
            errors.push((total - load) as f64);
            loads.push(load as f64);
            if let Some(v) = expected_hour_variance(plan) {
                variances.push(v);
            }
        }
    }
    summary.mean_error_kwh = mean(&errors).map(|e| e / 1000.0);
    summary.rms_error_kwh =
        mean(&errors.iter().map(|e| e * e).collect::<Vec<_>>()).map(|m| m.sqrt() / 1000.0);
    summary.expected_sigma_kwh = mean(&variances).map(|v| v.sqrt() / 1000.0);
    summary.mean_hourly_load_kwh = mean(&loads).map(|l| l / 1000.0);
    summary
}

/// The homes' readings clamped to `sensitivity`, summed per hour over the homes.
fn hourly_sums(homes: &[&Home], sensitivity: Wh) -> BTreeMap<DateTime<Utc>, i64> {
    let mut sums = BTreeMap::new();
    for home in homes {
        for (hour, wh) in home.hourly_clamped_wh(sensitivity) {
            *sums.entry(hour).or_insert(0) += wh;
        }
    }
    sums
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use meter_client::source::{DateRange, MonthShift, SourceSpec};
    use seer_core::tariff::Tariff;

    use super::*;
    use crate::plan::HomeSource;

    fn at(day: u32, hour: u32, minute: u32) -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(2010, 1, day)
            .and_then(|d| d.and_hms_opt(hour, minute, 0))
            .expect("a time")
    }

    fn home(index: u64, energy: Vec<(chrono::NaiveDateTime, i64)>) -> Home {
        let energy: Vec<_> = energy
            .into_iter()
            .map(|(t, wh)| (t, Wh::try_new(wh).expect("wh")))
            .collect();
        let tariff = Tariff::bescom();
        Home {
            index,
            meter_id: crate::plan::meter_id(index),
            source: HomeSource::Synthetic {
                seed: 1,
                home: index as u32,
            },
            spec: SourceSpec::Synthetic {
                seed: 1,
                home: index as u32,
            },
            range: DateRange {
                from: None,
                until: None,
                shift: MonthShift::NONE,
            },
            replay_as: None,
            readings: energy.len(),
            skipped_intervals: 0,
            plaintext: tariff.bill(energy.iter().copied()).expect("a bill"),
            energy,
            utc_offset: FixedOffset::east_opt(0).expect("UTC"),
        }
    }

    fn plan() -> WindowPlan {
        WindowPlan {
            group_size: 4,
            tolerated: 0,
            sensitivity_wh: 3_450,
            epsilon: 1.0,
            interval_seconds: 900,
        }
    }

    fn hour(start: &str, status: &str, total_wh: Option<i64>, min_present: u32) -> WindowHour {
        WindowHour {
            hour_start: start.into(),
            status: status.into(),
            total_wh,
            min_present,
            noise_scale_wh: 3_450.0,
        }
    }

    #[test]
    fn windows_follow_the_meters_grid() {
        let january = Period::try_new(2010, 1).expect("month");
        let utc = FixedOffset::east_opt(0).expect("UTC");
        let weeks = windows(january, 7, utc).expect("windows");
        let days: Vec<&str> = weeks.iter().map(|w| &w[8..10]).collect();
        assert_eq!(days, ["01", "08", "15", "22", "29"]);
        assert_eq!(weeks[0], "2010-01-01T00:00:00+00:00");
        assert_eq!(windows(january, 31, utc).expect("windows").len(), 1);
        assert_eq!(windows(january, 1, utc).expect("windows").len(), 31);
        let ist = FixedOffset::east_opt(19_800).expect("+05:30");
        assert_eq!(
            windows(january, 10, ist).expect("windows"),
            [
                "2010-01-01T00:00:00+05:30",
                "2010-01-11T00:00:00+05:30",
                "2010-01-21T00:00:00+05:30",
                "2010-01-31T00:00:00+05:30"
            ]
        );
    }

    #[test]
    fn the_expected_noise_is_two_root_two_b_for_a_full_group() {
        let b: f64 = 3_450.0;
        let sigma = expected_hour_variance(&plan()).expect("valid").sqrt();
        let approx = 2.0 * 2.0_f64.sqrt() * b;
        assert!(
            (sigma - approx).abs() / approx < 1e-3,
            "{sigma} vs {approx}"
        );
        // Shares sized for n − t meters: all n present carry n/(n − t) draws.
        let tolerant = WindowPlan {
            group_size: 20,
            tolerated: 2,
            ..plan()
        };
        let sigma = expected_hour_variance(&tolerant).expect("valid").sqrt();
        let approx = approx * (20.0_f64 / 18.0).sqrt();
        assert!(
            (sigma - approx).abs() / approx < 1e-3,
            "{sigma} vs {approx}"
        );
        assert_eq!(plan().presence_floor(), Some(3));
        assert_eq!(tolerant.presence_floor(), Some(9));
    }

    #[test]
    fn released_hours_are_compared_with_clamped_plaintext_sums() {
        // Two homes; one reading above Δ is clamped; the 01:00 hour is withheld.
        let a = home(0, vec![(at(1, 0, 0), 100), (at(1, 0, 15), 5_000)]);
        let b = home(1, vec![(at(1, 0, 30), 50), (at(1, 1, 0), 7)]);
        let window = WindowReport {
            window_start: "2010-01-01T00:00:00Z".into(),
            plan: Some(plan()),
            hours: vec![
                // Plaintext 100 + 3450 + 50 = 3600 Wh.
                hour("2010-01-01T00:00:00Z", "released", Some(4_600), 4),
                hour("2010-01-01T01:00:00Z", "too_few_present", None, 2),
                // No reading: plaintext 0.
                hour("2010-01-01T02:00:00Z", "already_released", Some(-1_000), 4),
            ],
            refused: vec![InputRefusal {
                meter_id: "M-0001".into(),
                sequence: 2,
                reason: "a reason".into(),
            }],
            conflicts: Vec::new(),
        };
        let s = summarize(0, &[&a, &b], &[window]);
        assert_eq!((s.hours, s.released, s.withheld), (3, 2, 1));
        assert_eq!((s.group_size, s.presence_floor), (Some(4), Some(3)));
        assert_eq!(s.most_present, 4);
        // Errors +1000 and −1000 Wh.
        assert!(s.mean_error_kwh.is_some_and(|e| e.abs() < 1e-12), "{s:?}");
        assert!(s.rms_error_kwh.is_some_and(|e| (e - 1.0).abs() < 1e-12));
        assert!(
            s.mean_hourly_load_kwh
                .is_some_and(|l| (l - 1.8).abs() < 1e-12)
        );
        assert!(
            s.expected_sigma_kwh
                .is_some_and(|v| (v - 9.758).abs() < 0.01)
        );
        assert_eq!(s.refused_inputs.len(), 1);
    }

    #[test]
    fn a_window_withheld_throughout_has_nothing_to_compare() {
        let a = home(0, vec![(at(1, 0, 0), 100)]);
        let window = WindowReport {
            window_start: "2010-01-01T00:00:00Z".into(),
            plan: Some(WindowPlan {
                group_size: 2,
                ..plan()
            }),
            hours: vec![hour("2010-01-01T00:00:00Z", "too_few_present", None, 2)],
            ..WindowReport::default()
        };
        let s = summarize(0, &[&a], &[window]);
        assert_eq!((s.released, s.withheld), (0, 1));
        assert_eq!(s.mean_error_kwh, None);
        assert_eq!(s.mean_hourly_load_kwh, None);
    }

    #[test]
    fn the_utility_report_parses() {
        let json = r#"{"group":0,"window_start":"2010-01-01T00:00:00Z",
            "plan":{"group_size":4,"tolerated":0,"sensitivity_wh":3450,"epsilon":1.0,
              "window_start":"2010-01-01T00:00:00+00:00","interval_seconds":900,
              "window_slots":672,"batches":4,"meters":4},
            "plans_seen":1,"inputs_sent":4,"accepted":4,"refused":[],
            "hours":[{"hour_start":"2010-01-01T00:00:00Z","status":"released","total_wh":12,
              "interval_wh":[1,2,3,6],"min_present":4,"epsilon":1.0,"noise_scale_wh":3450.0}],
            "released":1,"already_released":0,"withheld":0,"conflicts":[],"audit_seq":9,
            "release_ms":1.5}"#;
        let report: WindowReport = serde_json::from_str(json).expect("parses");
        assert_eq!(report.plan.expect("a plan").group_size, 4);
        assert_eq!(report.hours[0].total_wh, Some(12));
        let empty: WindowReport = serde_json::from_str(
            r#"{"group":0,"window_start":"2010-01-01T00:00:00Z","plan":null,"hours":[]}"#,
        )
        .expect("parses");
        assert!(empty.plan.is_none());
    }
}
