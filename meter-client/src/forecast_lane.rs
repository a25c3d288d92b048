//! The forecast lane's noise, drawn **once per reading** and charged to a monthly budget.
//!
//! A model trained at an ε forecasts from the analytics lane: each 15-minute reading clamped to
//! `0 ..= Δ` plus discrete Laplace noise of scale Δ/ε. Streamed forecasting sends one window a
//! day, and consecutive windows overlap (a day-ahead window holds the 7 days before the day and
//! the day itself), so a reading travels in up to 8 windows. Noising every window afresh would
//! release 8 independent ε-DP views of the same reading: by sequential composition, 8ε.
//! Instead the meter keeps every draw in its state database (`forecast_lane_draws`, per
//! mechanism) and builds each window from the stored draws, drawing only for readings that
//! have none. Everything a later window releases about a reading is then post-processing of
//! its one draw, and the lane costs ε per reading in total.
//!
//! Each new draw is charged, before it is stored, to the [`PrivacyAccountant`] of its
//! reading's calendar month (`forecast_lane_budget`); the draws and the charges are committed
//! in one transaction, and a charge past the month's budget refuses the whole window (nothing
//! drawn, nothing stored). The default budget, ε × 2976 (a month of 15-minute readings), admits
//! exactly one draw per reading for one model; a household that also feeds a model trained at
//! another ε (a second mechanism, noised independently) must raise it, and sees the refusal
//! otherwise. Each day's new draws are also written to the meter's privacy ledger
//! ([`crate::privacy`]) in the same transaction. This budget is the forecast lane's own: the
//! batch analytics lane
//! (`meter-client run`) draws separately at its own ε under its own accountant, so a reading
//! fed to both lanes is (ε_batch + ε_forecast)-DP.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use rand::CryptoRng;
use seer_core::dp::{BudgetPeriod, Epsilon, LaplaceMechanism, NoisyWh, PrivacyAccountant};
use seer_core::units::Wh;

use crate::cli::MAX_READINGS_PER_MONTH;
use crate::error::Error;
use crate::privacy::{LedgerEntry, PrivacyLane};
use crate::queue::StateStore;

/// A meter's forecast-lane mechanism and its monthly budget.
#[derive(Clone, Debug)]
pub struct ForecastNoise {
    meter_id: String,
    mechanism: LaplaceMechanism,
    monthly_budget: Epsilon,
}

/// One window's analytics-lane readings and what they cost.
#[derive(Clone, Debug, PartialEq)]
pub struct NoisedWindow {
    /// The noisy readings, in the window's order.
    pub noisy: Vec<NoisyWh>,
    /// Readings drawn now (charged now).
    pub drawn: usize,
    /// Readings whose stored draw was reused (charged when first drawn).
    pub reused: usize,
    /// The ε charged now: `drawn · ε`, rounded up.
    pub epsilon_charged: f64,
}

impl ForecastNoise {
    /// The mechanism of Δ = `sensitivity` and `epsilon` per reading for `meter_id`, with
    /// `monthly_budget` per calendar month (default: ε × 2976, one draw per reading).
    ///
    /// # Errors
    /// [`Error::Core`] for an invalid sensitivity or budget.
    pub fn new(
        meter_id: impl Into<String>,
        sensitivity: Wh,
        epsilon: Epsilon,
        monthly_budget: Option<Epsilon>,
    ) -> Result<Self, Error> {
        let monthly_budget = match monthly_budget {
            Some(b) => b,
            None => Epsilon::try_new(epsilon.get() * MAX_READINGS_PER_MONTH as f64)?,
        };
        Ok(Self {
            meter_id: meter_id.into(),
            mechanism: LaplaceMechanism::try_new(sensitivity, epsilon)?,
            monthly_budget,
        })
    }

    /// The mechanism's name in the state database: draws of different mechanisms are kept
    /// apart (they are independent releases, each charged).
    pub fn mechanism_id(&self) -> String {
        format!(
            "discrete-laplace;epsilon={};sensitivity_wh={}",
            self.mechanism.epsilon().get(),
            self.mechanism.sensitivity().get()
        )
    }

    /// The per-reading ε.
    pub const fn epsilon(&self) -> Epsilon {
        self.mechanism.epsilon()
    }

    /// The month's accountant under this budget: the stored one (its spend kept, its budget
    /// replaced by this one), or a fresh one.
    fn accountant(
        &self,
        month: NaiveDate,
        stored: Option<&PrivacyAccountant>,
    ) -> Result<PrivacyAccountant, Error> {
        let fresh = PrivacyAccountant::new(
            &self.meter_id,
            BudgetPeriod::Month,
            self.monthly_budget,
            month,
        );
        match stored {
            None => Ok(fresh),
            Some(s) if s.budget() == self.monthly_budget => Ok(s.clone()),
            Some(s) if s.spent() == 0.0 => Ok(fresh),
            Some(s) => {
                let mut resumed = fresh;
                resumed
                    .try_spend(Epsilon::try_new(s.spent())?)
                    .map_err(|_| Error::InvalidSetting {
                        setting: "monthly budget",
                        reason: format!(
                            "the forecast lane has already spent ε {} in the month from \
                             {month}, more than the budget {}: raise --monthly-budget to at \
                             least the spend",
                            s.spent(),
                            self.monthly_budget
                        ),
                    })?;
                Ok(resumed)
            }
        }
    }

    /// The lane of `readings` (15-minute, consecutive or not, in order): the stored draw of
    /// each reading that has one, a new draw (charged to its month, stored with the charge in
    /// one transaction, before anything is returned) for each that has none.
    ///
    /// # Errors
    /// [`Error::Core`] with `BudgetExhausted` when a month's budget cannot pay for the new
    /// draws (nothing is drawn or stored then); a database error.
    pub async fn noised_window<R: CryptoRng + ?Sized>(
        &self,
        store: &StateStore,
        readings: &[(NaiveDateTime, Wh)],
        rng: &mut R,
    ) -> Result<NoisedWindow, Error> {
        let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
            return Ok(NoisedWindow {
                noisy: Vec::new(),
                drawn: 0,
                reused: 0,
                epsilon_charged: 0.0,
            });
        };
        let id = self.mechanism_id();
        let until = last.0 + chrono::TimeDelta::seconds(1);
        let mut draws = store.forecast_draws(&id, first.0, until).await?;
        let reused = readings
            .iter()
            .filter(|(t, _)| draws.contains_key(t))
            .count();

        // The readings without a draw, by month.
        let mut missing: BTreeMap<NaiveDate, Vec<(NaiveDateTime, Wh)>> = BTreeMap::new();
        for &(t, wh) in readings.iter().filter(|(t, _)| !draws.contains_key(t)) {
            missing
                .entry(BudgetPeriod::Month.start_of(t.date()))
                .or_default()
                .push((t, wh));
        }
        let stored = if missing.is_empty() {
            BTreeMap::new()
        } else {
            store.forecast_accountants().await?
        };
        let (mut new_draws, mut charged) = (Vec::new(), Vec::new());
        let mut epsilon_charged = 0.0;
        for (month, group) in &missing {
            let mut accountant = self.accountant(*month, stored.get(month))?;
            let wh: Vec<Wh> = group.iter().map(|(_, wh)| *wh).collect();
            let lane = self
                .mechanism
                .analytics_lane(&wh, *month, &mut accountant, rng)?;
            epsilon_charged += lane.epsilon_spent();
            for ((t, _), noisy) in group.iter().zip(lane.into_readings()) {
                new_draws.push((*t, noisy));
            }
            charged.push(accountant);
        }
        let drawn = new_draws.len();
        if drawn > 0 {
            let ledger = LedgerEntry::per_day(
                PrivacyLane::Forecast,
                self.epsilon(),
                new_draws.iter().map(|(t, _)| t.date()),
            );
            store
                .commit_forecast_draws(&id, &new_draws, &charged, &ledger)
                .await?;
            draws.extend(new_draws);
        }
        let noisy = readings
            .iter()
            .map(|(t, _)| {
                draws.get(t).copied().ok_or_else(|| Error::CorruptState {
                    reason: format!("no forecast-lane draw for {t}"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(NoisedWindow {
            noisy,
            drawn,
            reused,
            epsilon_charged,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    fn quarters(from: &str, n: usize, wh: i64) -> Vec<(NaiveDateTime, Wh)> {
        let start: NaiveDateTime = from.parse().expect("time");
        (0..n)
            .map(|i| {
                (
                    start + TimeDelta::minutes(15 * i as i64),
                    Wh::try_new(wh).expect("wh"),
                )
            })
            .collect()
    }

    fn noise(budget: Option<f64>) -> ForecastNoise {
        ForecastNoise::new(
            "meter-1",
            Wh::try_new(2_500).expect("Δ"),
            Epsilon::try_new(1.0).expect("ε"),
            budget.map(|b| Epsilon::try_new(b).expect("budget")),
        )
        .expect("noise")
    }

    #[tokio::test]
    async fn overlapping_windows_reuse_each_draw_and_pay_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).await.expect("store");
        let mut rng = StdRng::seed_from_u64(7);
        let n = noise(None);
        // Day-ahead windows of two consecutive days: 8 days each, 7 in common.
        let a = quarters("2010-01-01T00:00:00", 8 * 96, 300);
        let b = quarters("2010-01-02T00:00:00", 8 * 96, 300);
        let first = n.noised_window(&store, &a, &mut rng).await.expect("a");
        assert_eq!((first.drawn, first.reused), (8 * 96, 0));
        assert_eq!(first.epsilon_charged, 768.0);
        // Noise of scale 2500 Wh: the 768 draws are not all the reading itself.
        assert!(first.noisy.iter().any(|w| w.get() != 300));
        let second = n.noised_window(&store, &b, &mut rng).await.expect("b");
        assert_eq!((second.drawn, second.reused), (96, 7 * 96));
        assert_eq!(second.epsilon_charged, 96.0);
        assert_eq!(second.noisy[..7 * 96], first.noisy[96..]);
        // The month was charged each reading once: 9 days of readings at ε = 1.
        let spent = store.forecast_accountants().await.expect("accountants");
        let jan = NaiveDate::from_ymd_opt(2010, 1, 1).expect("date");
        assert_eq!(spent[&jan].spent(), 9.0 * 96.0);
        // The same window again draws nothing.
        let again = n.noised_window(&store, &b, &mut rng).await.expect("again");
        assert_eq!((again.drawn, again.epsilon_charged), (0, 0.0));
        assert_eq!(again.noisy, second.noisy);
        store.close().await;
    }

    #[tokio::test]
    async fn draws_are_charged_to_their_month_and_a_refused_window_stores_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = StdRng::seed_from_u64(8);
        // Two days across a month boundary: 96 readings in January, 96 in February.
        let window = quarters("2010-01-31T00:00:00", 2 * 96, 100);
        {
            let store = StateStore::open(dir.path()).await.expect("store");
            // A budget of 150 per month: the January day fits (96), so does February's.
            let n = noise(Some(150.0));
            let w = n.noised_window(&store, &window, &mut rng).await.expect("w");
            assert_eq!(w.drawn, 192);
            let spent = store.forecast_accountants().await.expect("accountants");
            let spent: Vec<f64> = spent.values().map(PrivacyAccountant::spent).collect();
            assert_eq!(spent, vec![96.0, 96.0]);
            // February's next day would take its month to 192 > 150: refused, nothing stored.
            let next = quarters("2010-02-02T00:00:00", 96, 100);
            let err = n.noised_window(&store, &next, &mut rng).await;
            assert!(
                matches!(
                    err,
                    Err(Error::Core(seer_core::Error::BudgetExhausted { .. }))
                ),
                "{err:?}"
            );
            let feb2 = "2010-02-02T00:00:00".parse().expect("time");
            let feb3 = "2010-02-03T00:00:00".parse().expect("time");
            let stored = store
                .forecast_draws(&n.mechanism_id(), feb2, feb3)
                .await
                .expect("draws");
            assert!(stored.is_empty());
            // A budget below what a month already spent is refused with what to do.
            let low = noise(Some(50.0));
            let err = low.noised_window(&store, &next, &mut rng).await;
            assert!(
                matches!(&err, Err(Error::InvalidSetting { reason, .. }) if reason.contains("raise --monthly-budget")),
                "{err:?}"
            );
            store.close().await;
        }
        // Reopened with a larger budget: the stored spend carries over, the draws are reused.
        let store = StateStore::open(dir.path()).await.expect("reopen");
        let n = noise(Some(300.0));
        let w = n
            .noised_window(&store, &window, &mut rng)
            .await
            .expect("reused");
        assert_eq!((w.drawn, w.reused), (0, 192));
        let next = quarters("2010-02-02T00:00:00", 96, 100);
        let w = n
            .noised_window(&store, &next, &mut rng)
            .await
            .expect("next");
        assert_eq!(w.drawn, 96);
        let spent = store.forecast_accountants().await.expect("accountants");
        let feb = NaiveDate::from_ymd_opt(2010, 2, 1).expect("date");
        assert_eq!(spent[&feb].spent(), 192.0);
        assert_eq!(spent[&feb].budget().get(), 300.0);
        store.close().await;
    }

    #[tokio::test]
    async fn mechanisms_draw_independently_under_one_monthly_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).await.expect("store");
        let mut rng = StdRng::seed_from_u64(9);
        let day = quarters("2010-03-01T00:00:00", 96, 200);
        let budget = Some(Epsilon::try_new(600.0).expect("budget"));
        let eps1 = ForecastNoise::new(
            "meter-1",
            Wh::try_new(2_500).expect("Δ"),
            Epsilon::try_new(1.0).expect("ε"),
            budget,
        )
        .expect("ε 1");
        let eps5 = ForecastNoise::new(
            "meter-1",
            Wh::try_new(2_500).expect("Δ"),
            Epsilon::try_new(5.0).expect("ε"),
            budget,
        )
        .expect("ε 5");
        assert_ne!(eps1.mechanism_id(), eps5.mechanism_id());
        let a = eps1
            .noised_window(&store, &day, &mut rng)
            .await
            .expect("ε 1");
        let b = eps5
            .noised_window(&store, &day, &mut rng)
            .await
            .expect("ε 5");
        assert_eq!((a.drawn, b.drawn), (96, 96));
        assert_ne!(a.noisy, b.noisy);
        let spent = store.forecast_accountants().await.expect("accountants");
        let mar = NaiveDate::from_ymd_opt(2010, 3, 1).expect("date");
        // 96 · 1 + 96 · 5, both mechanisms in the month's one account.
        assert_eq!(spent[&mar].spent(), 576.0);
        store.close().await;
    }
}
