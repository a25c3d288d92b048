//! Per-meter privacy budgets under sequential composition.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::dp::Epsilon;
use crate::error::Error;

/// The length of a budget period: a calendar day or a calendar month, in the meter's local
/// time (the same wall-clock dates as its readings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// One calendar day.
    Day,
    /// One calendar month (the billing period).
    Month,
}

impl BudgetPeriod {
    /// The first day of the period containing `date`.
    pub fn start_of(self, date: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => date,
            // Day 1 exists in every month chrono can represent.
            Self::Month => date.with_day(1).unwrap_or(date),
        }
    }
}

/// The relative rounding slack allowed over a budget: 2⁻⁴⁰ (see [`PrivacyAccountant`]).
pub const BUDGET_SLACK: f64 = 1.0 / (1_u64 << 40) as f64;

/// The largest spend a budget admits: `budget · (1 + BUDGET_SLACK)`.
fn ceiling(budget: Epsilon) -> f64 {
    budget.get() + budget.get() * BUDGET_SLACK
}

/// One meter's privacy budget: how much ε its released readings have spent in the current
/// period, out of a budget per period.
///
/// # Composition
///
/// Spending is sequential composition: releasing the outputs of mechanisms that are ε₁-, ε₂-,
/// …-DP about the same data is (ε₁ + ε₂ + …)-DP, so the accountant adds the ε of every release
/// and refuses ([`Error::BudgetExhausted`]) a release that would take the sum past the budget.
/// Sums are rounded **upwards** (each addition is exact or moved to the next `f64` above), so
/// the recorded spend is never below the exact sum of the charges' binary values.
///
/// Decimal configurations rarely add up exactly in binary: 96 × 0.05 (the binary 0.05 is
/// 0.050000000000000002776…) is 4.8000000000000002665…, just above the binary 4.8. So that a
/// budget of 4.8 admits 96 readings at 0.05, a charge is refused only when the spend would
/// exceed the budget by more than a relative [`BUDGET_SLACK`] of 2⁻⁴⁰ (about 9 × 10⁻¹³): the
/// guarantee per period is budget · (1 + 2⁻⁴⁰), e.g. 4.8 + 4.4 × 10⁻¹², rather than exactly the
/// budget.
///
/// The budget is per period: when the meter moves into a new day or month
/// ([`PrivacyAccountant::advance_to`]), the spend restarts at zero. Everything released about
/// one period is then (budget)-DP, but releases about different periods compose too: k periods
/// together are at most (k · budget)-DP. The accountant bounds the loss per period, not over a
/// meter's lifetime.
///
/// # Persistence
///
/// The state serialises (serde) to `{meter, period, budget, period_start, spent}` and is
/// validated when read back: unknown fields, a spend that is negative, not finite or above the
/// budget (plus its slack), and a period start that does not begin a period are refused. Persist it **before**
/// sending what was charged: a crash between charging and persisting would otherwise forget a
/// spend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AccountantState", into = "AccountantState")]
pub struct PrivacyAccountant {
    meter: String,
    period: BudgetPeriod,
    budget: Epsilon,
    period_start: NaiveDate,
    spent: f64,
}

/// The serialised form of [`PrivacyAccountant`], validated on the way in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountantState {
    meter: String,
    period: BudgetPeriod,
    budget: Epsilon,
    period_start: NaiveDate,
    spent: f64,
}

impl TryFrom<AccountantState> for PrivacyAccountant {
    type Error = Error;
    fn try_from(state: AccountantState) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidPrivacyState {
            meter: state.meter.clone(),
            reason,
        };
        if !state.spent.is_finite() || state.spent < 0.0 {
            return Err(invalid(format!(
                "spent epsilon {} is not a non-negative number",
                state.spent
            )));
        }
        if state.spent > ceiling(state.budget) {
            return Err(invalid(format!(
                "spent epsilon {} is above the budget {}",
                state.spent, state.budget
            )));
        }
        if state.period.start_of(state.period_start) != state.period_start {
            return Err(invalid(format!(
                "period start {} does not begin a {:?} period",
                state.period_start, state.period
            )));
        }
        Ok(Self {
            meter: state.meter,
            period: state.period,
            budget: state.budget,
            period_start: state.period_start,
            // -0.0 → +0.0
            spent: state.spent + 0.0,
        })
    }
}

impl From<PrivacyAccountant> for AccountantState {
    fn from(a: PrivacyAccountant) -> Self {
        Self {
            meter: a.meter,
            period: a.period,
            budget: a.budget,
            period_start: a.period_start,
            spent: a.spent,
        }
    }
}

impl PrivacyAccountant {
    /// A fresh accountant for `meter` with `budget` per `period`, in the period containing
    /// `today`, nothing spent.
    pub fn new(
        meter: impl Into<String>,
        period: BudgetPeriod,
        budget: Epsilon,
        today: NaiveDate,
    ) -> Self {
        Self {
            meter: meter.into(),
            period,
            budget,
            period_start: period.start_of(today),
            spent: 0.0,
        }
    }

    /// The charge of `times` ε-DP releases under sequential composition, as
    /// [`try_spend_repeated`](Self::try_spend_repeated) charges it: `times · ε`, rounded up
    /// (e.g. a day's readings on a meter's privacy ledger).
    pub fn charge_of(epsilon: Epsilon, times: usize) -> f64 {
        mul_up(epsilon.get(), times)
    }

    /// The meter this budget belongs to.
    pub fn meter(&self) -> &str {
        &self.meter
    }

    /// The length of a budget period.
    pub const fn period(&self) -> BudgetPeriod {
        self.period
    }

    /// The budget per period.
    pub const fn budget(&self) -> Epsilon {
        self.budget
    }

    /// The first day of the current period.
    pub const fn period_start(&self) -> NaiveDate {
        self.period_start
    }

    /// The ε spent in the current period (an upper bound on the exact sum of the charges).
    pub const fn spent(&self) -> f64 {
        self.spent
    }

    /// The ε left in the current period: `budget − spent`, rounded down, never negative (the
    /// rounding slack is not counted as left).
    pub fn remaining(&self) -> f64 {
        let left = self.budget.get() - self.spent;
        // Round down: if the subtraction rounded up, step to the next f64 below.
        let left = if left + self.spent > self.budget.get() {
            left.next_down()
        } else {
            left
        };
        left.max(0.0)
    }

    /// Moves to the period containing `date`; the spend restarts at zero when that is a new
    /// period. Returns whether a new period began.
    ///
    /// # Errors
    ///
    /// [`Error::PeriodRegression`] if `date` lies before the current period: a closed period's
    /// spend is forgotten, so charging it again could overrun its budget.
    pub fn advance_to(&mut self, date: NaiveDate) -> Result<bool, Error> {
        let start = self.period.start_of(date);
        if start < self.period_start {
            return Err(Error::PeriodRegression {
                meter: self.meter.clone(),
                current: self.period_start,
                requested: date,
            });
        }
        if start == self.period_start {
            return Ok(false);
        }
        tracing::debug!(
            meter = %self.meter,
            closed = %self.period_start,
            closed_spent = self.spent,
            opened = %start,
            "privacy budget period rolled over"
        );
        self.period_start = start;
        self.spent = 0.0;
        Ok(true)
    }

    /// Charges one ε-DP release to the current period.
    ///
    /// Returns the new spend. Nothing is charged on error.
    ///
    /// # Errors
    ///
    /// [`Error::BudgetExhausted`] if the spend would go past the budget (beyond its rounding
    /// slack).
    pub fn try_spend(&mut self, epsilon: Epsilon) -> Result<f64, Error> {
        self.try_spend_repeated(epsilon, 1)
    }

    /// Charges `times` ε-DP releases (e.g. one batch of noisy readings) to the current period:
    /// `times · ε`, rounded up, all or nothing. Charging zero times is a no-op.
    ///
    /// Returns the new spend.
    ///
    /// # Errors
    ///
    /// [`Error::BudgetExhausted`] if the spend would go past the budget; nothing is charged.
    pub fn try_spend_repeated(&mut self, epsilon: Epsilon, times: usize) -> Result<f64, Error> {
        let requested = Self::charge_of(epsilon, times);
        let total = add_up(self.spent, requested);
        if total > ceiling(self.budget) {
            tracing::warn!(
                meter = %self.meter,
                period_start = %self.period_start,
                spent = self.spent,
                requested,
                budget = self.budget.get(),
                "privacy budget exhausted, release refused"
            );
            return Err(Error::BudgetExhausted {
                meter: self.meter.clone(),
                period_start: self.period_start,
                spent: self.spent,
                requested,
                budget: self.budget.get(),
            });
        }
        self.spent = total;
        Ok(total)
    }

    /// [`advance_to`](Self::advance_to) `date`, then
    /// [`try_spend_repeated`](Self::try_spend_repeated); on error the accountant is unchanged.
    pub fn try_spend_at(
        &mut self,
        date: NaiveDate,
        epsilon: Epsilon,
        times: usize,
    ) -> Result<f64, Error> {
        let mut next = self.clone();
        next.advance_to(date)?;
        let spent = next.try_spend_repeated(epsilon, times)?;
        *self = next;
        Ok(spent)
    }
}

/// `a + b` for non-negative finite `a`, `b`, rounded up to the next `f64` when inexact.
pub(crate) fn add_up(a: f64, b: f64) -> f64 {
    let sum = a + b;
    if !sum.is_finite() {
        return sum;
    }
    // TwoSum (Knuth): `err` is the exact rounding error a + b − sum.
    let b_virtual = sum - a;
    let a_virtual = sum - b_virtual;
    let err = (a - a_virtual) + (b - b_virtual);
    if err > 0.0 { sum.next_up() } else { sum }
}

/// `x · n` for non-negative finite `x`, rounded up to the next `f64` when inexact.
pub(crate) fn mul_up(x: f64, n: usize) -> f64 {
    // usize → f64 is exact below 2^53; larger batches cannot exist in memory anyway, and
    // rounding n up keeps the result an upper bound.
    let nf = n as f64;
    let nf = if (nf as u128) < n as u128 {
        nf.next_up()
    } else {
        nf
    };
    let product = x * nf;
    if !product.is_finite() {
        return product;
    }
    // fma gives the exact error x·n − product.
    let err = x.mul_add(nf, -product);
    if err > 0.0 {
        product.next_up()
    } else {
        product
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn eps(v: f64) -> Epsilon {
        Epsilon::try_new(v).expect("valid")
    }

    #[test]
    fn rounding_is_upwards() {
        // The exact sum of 0.1 and 0.2 (binary values) lies below 0.1 + 0.2 as rounded to
        // nearest, so no bump is needed.
        assert_eq!(add_up(0.1, 0.2), 0.1 + 0.2);
        // 1 + 2^-60 is inexact: rounding to nearest gives 1, upwards gives next_up(1).
        assert_eq!(add_up(1.0, 2f64.powi(-60)), 1f64.next_up());
        assert_eq!(add_up(1.0, 0.5), 1.5);
        // 0.1 · 10 rounds to nearest 1.0, below the exact product of 0.1's binary value.
        assert_eq!(0.1 * 10.0, 1.0);
        assert_eq!(mul_up(0.1, 10), 1f64.next_up());
        // 0.1 · 3 rounds to nearest above the exact product: no bump.
        assert_eq!(mul_up(0.1, 3), 0.1 * 3.0);
        assert_eq!(mul_up(0.5, 4), 2.0);
        assert_eq!(mul_up(0.5, 0), 0.0);
    }

    #[test]
    fn many_small_charges_never_undercount() {
        let mut a = PrivacyAccountant::new("m", BudgetPeriod::Day, eps(1.0), date(2024, 1, 1));
        for _ in 0..10 {
            a.try_spend(eps(0.1)).expect("within budget and slack");
        }
        // Ten binary 0.1s (0.1000000000000000055…) sum to just above 1: recorded as such, and
        // admitted only thanks to the slack.
        assert!(a.spent() > 1.0);
        assert!(a.spent() <= 1.0 + BUDGET_SLACK);
        assert_eq!(a.remaining(), 0.0);
        assert!(a.try_spend(Epsilon::MIN).is_err());
    }

    #[test]
    fn decimal_budgets_admit_their_decimal_charges() {
        let mut a = PrivacyAccountant::new("m", BudgetPeriod::Day, eps(4.8), date(2024, 1, 1));
        // 96 × 0.05 in binary is above the binary 4.8.
        assert!(mul_up(0.05, 96) > 4.8);
        a.try_spend_repeated(eps(0.05), 96)
            .expect("a day of readings fits");
        assert!(a.try_spend(eps(0.05)).is_err());
        let mut b = PrivacyAccountant::new("m", BudgetPeriod::Day, eps(4.8), date(2024, 1, 1));
        for _ in 0..96 {
            b.try_spend(eps(0.05)).expect("one at a time fits too");
        }
    }

    #[test]
    fn remaining_rounds_down() {
        let mut a = PrivacyAccountant::new("m", BudgetPeriod::Month, eps(1.0), date(2024, 1, 9));
        a.try_spend(eps(0.3)).expect("fits");
        assert!(a.remaining() + a.spent() <= 1.0);
        assert_eq!(a.period_start(), date(2024, 1, 1));
    }

    #[test]
    fn month_rollover_resets_and_regression_is_refused() {
        let mut a = PrivacyAccountant::new("m", BudgetPeriod::Month, eps(2.0), date(2024, 2, 29));
        a.try_spend(eps(1.5)).expect("fits");
        assert!(!a.advance_to(date(2024, 2, 1)).expect("same month"));
        assert_eq!(a.spent(), 1.5);
        assert!(a.advance_to(date(2024, 3, 1)).expect("next month"));
        assert_eq!(a.spent(), 0.0);
        assert!(matches!(
            a.advance_to(date(2024, 2, 29)),
            Err(Error::PeriodRegression { .. })
        ));
        // try_spend_at is atomic: a refused charge in a new period does not advance.
        let before = a.clone();
        assert!(a.try_spend_at(date(2024, 4, 2), eps(3.0), 1).is_err());
        assert_eq!(a, before);
        assert_eq!(
            a.try_spend_at(date(2024, 4, 2), eps(0.5), 2).ok(),
            Some(1.0)
        );
        assert_eq!(a.period_start(), date(2024, 4, 1));
    }
}
