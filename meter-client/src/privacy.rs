//! The household's privacy ledger: what each day's readings have cost, lane by lane, in
//! words a household can check (`meter-client privacy --state DIR`).
//!
//! The privacy accountants ([`PrivacyAccountant`]) refuse a release past a month's budget,
//! but keep only the current month's total. The ledger keeps, for every day and lane, how
//! many readings were noised and at which ε per reading; it is written in the transaction
//! that commits what was charged (a batch: [`StateStore::commit_batch`]; forecast-lane draws:
//! [`StateStore::commit_forecast_draws`]), so it never shows a charge that was not made nor
//! misses one that was. Days before this meter-client version kept a ledger are absent (the
//! accountants' monthly totals still include them).
//!
//! Each lane's day costs readings × ε under sequential composition:
//! - **analytics** (`meter-client run`): each reading is a term of exactly one released
//!   interval total of the home's noise group (its billing group), which carries at least one
//!   full discrete Laplace draw of scale Δ/ε and is ε-DP for the reading;
//! - **forecast** (`meter-client forecast` with an analytics-lane model): each reading is
//!   noised once on the meter per mechanism, and every later window reuses that draw.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use seer_core::dp::{Epsilon, PrivacyAccountant};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::queue::StateStore;

/// The lanes whose releases are charged on the meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyLane {
    /// The batches' analytics lane (distributed noise, released as group totals).
    Analytics,
    /// The forecast lane (local noise, each reading drawn once per mechanism).
    Forecast,
}

impl PrivacyLane {
    /// The lane's name in the state database and in the report.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Analytics => "analytics",
            Self::Forecast => "forecast",
        }
    }

    /// The lane named `name` ([`PrivacyLane::as_str`]).
    ///
    /// # Errors
    /// [`Error::CorruptState`] for any other name.
    pub fn try_from_name(name: &str) -> Result<Self, Error> {
        match name {
            "analytics" => Ok(Self::Analytics),
            "forecast" => Ok(Self::Forecast),
            other => Err(Error::CorruptState {
                reason: format!("privacy ledger lane {other:?}"),
            }),
        }
    }

    /// What a released reading of this lane costs, in one line.
    pub const fn explanation(self) -> &'static str {
        match self {
            Self::Analytics => {
                "the key authority releases only your billing group's hourly totals, each \
                 carrying at least one full discrete Laplace draw of scale Δ/ε: each of your \
                 readings is a term of exactly one released interval total, at ε per reading, \
                 so a day's readings compose to readings × ε"
            }
            Self::Forecast => {
                "each reading fed to a forecast is noised once on this meter at ε per reading \
                 and that draw is reused by every later window, so a day's readings compose to \
                 readings × ε"
            }
        }
    }
}

/// One row of the ledger: `readings` readings of `date` released on `lane` at
/// `epsilon_per_reading` each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LedgerEntry {
    /// The lane.
    pub lane: PrivacyLane,
    /// The readings' date (the meter's wall-clock date, as the readings' starts).
    pub date: NaiveDate,
    /// ε per reading.
    pub epsilon_per_reading: Epsilon,
    /// Readings released.
    pub readings: u64,
}

impl LedgerEntry {
    /// The entries of readings dated `dates` (one date per reading, any order) on `lane` at
    /// `epsilon` per reading: one per date, in date order.
    pub fn per_day(
        lane: PrivacyLane,
        epsilon: Epsilon,
        dates: impl IntoIterator<Item = NaiveDate>,
    ) -> Vec<Self> {
        let mut counts: BTreeMap<NaiveDate, u64> = BTreeMap::new();
        for date in dates {
            *counts.entry(date).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(date, readings)| Self {
                lane,
                date,
                epsilon_per_reading: epsilon,
                readings,
            })
            .collect()
    }

    /// The ε the entry's readings spent: readings × ε, rounded up as the accountant charges.
    pub fn epsilon(&self) -> f64 {
        PrivacyAccountant::charge_of(
            self.epsilon_per_reading,
            usize::try_from(self.readings).unwrap_or(usize::MAX),
        )
    }
}

/// `meter-client privacy`: the state's privacy ledger and budgets, as one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReport {
    /// The meter, once it has run.
    pub meter_id: Option<String>,
    /// The lanes: the analytics lane always, the forecast lane once it has charged anything.
    pub lanes: Vec<LaneReport>,
}

/// One lane's charges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaneReport {
    /// `analytics` or `forecast`.
    pub lane: PrivacyLane,
    /// ε per reading of the lane's latest charge (`None` before any).
    pub epsilon_per_reading: Option<f64>,
    /// What a released reading costs, in one line.
    pub explanation: String,
    /// Per day and ε per reading (one entry per day unless ε changed that day), by date.
    pub days: Vec<DayReport>,
    /// The latest month's budget and spend.
    pub month: Option<MonthReport>,
}

/// One day's readings on a lane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayReport {
    /// The readings' date.
    pub date: NaiveDate,
    /// Readings released.
    pub readings: u64,
    /// ε per reading.
    pub epsilon_per_reading: f64,
    /// ε spent: readings × ε per reading.
    pub epsilon: f64,
}

/// A month's budget on a lane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonthReport {
    /// The month's first day.
    pub start: NaiveDate,
    /// The ε budget of the month.
    pub budget: f64,
    /// The ε spent in it.
    pub spent: f64,
    /// The ε left (never negative).
    pub remaining: f64,
}

impl MonthReport {
    fn of(a: &PrivacyAccountant) -> Self {
        Self {
            start: a.period_start(),
            budget: a.budget().get(),
            spent: a.spent(),
            remaining: a.remaining(),
        }
    }
}

/// The privacy report of the state in `store`.
///
/// # Errors
/// A database error or an inconsistent stored state.
pub async fn report(store: &StateStore) -> Result<PrivacyReport, Error> {
    let summary = store.summary().await?;
    let ledger = store.privacy_ledger().await?;
    let forecast_months = store.forecast_accountants().await?;
    let lane = |lane: PrivacyLane, month: Option<&PrivacyAccountant>| {
        let days: Vec<DayReport> = ledger
            .iter()
            .filter(|e| e.lane == lane)
            .map(|e| DayReport {
                date: e.date,
                readings: e.readings,
                epsilon_per_reading: e.epsilon_per_reading.get(),
                epsilon: e.epsilon(),
            })
            .collect();
        LaneReport {
            lane,
            epsilon_per_reading: days.last().map(|d| d.epsilon_per_reading),
            explanation: lane.explanation().to_owned(),
            days,
            month: month.map(MonthReport::of),
        }
    };
    let mut lanes = vec![lane(PrivacyLane::Analytics, summary.accountant.as_ref())];
    let forecast = lane(PrivacyLane::Forecast, forecast_months.values().next_back());
    if !forecast.days.is_empty() || forecast.month.is_some() {
        lanes.push(forecast);
    }
    Ok(PrivacyReport {
        meter_id: summary.identity.map(|i| i.meter_id),
        lanes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, d).expect("date")
    }

    #[test]
    fn entries_count_readings_per_day_and_cost_readings_times_epsilon() {
        let eps = Epsilon::try_new(0.05).expect("ε");
        let dates = [date(2), date(1), date(2), date(2)];
        let entries = LedgerEntry::per_day(PrivacyLane::Analytics, eps, dates);
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.date, e.readings))
                .collect::<Vec<_>>(),
            vec![(date(1), 1), (date(2), 3)]
        );
        assert!((entries[1].epsilon() - 3.0 * 0.05).abs() < 1e-12);
        assert!(entries[1].epsilon() >= 3.0 * 0.05);
        for lane in [PrivacyLane::Analytics, PrivacyLane::Forecast] {
            assert_eq!(PrivacyLane::try_from_name(lane.as_str()).ok(), Some(lane));
        }
        assert!(PrivacyLane::try_from_name("billing").is_err());
    }
}
