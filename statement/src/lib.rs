//! `seer-statement`: one home's monthly electricity statement as a PDF.
//!
//! A [`Statement`] holds what a household may see about one month: its released bill (energy
//! per tariff cell, the amount), its daily usage, and the privacy facts (ε spent, what was
//! released from its data and when). [`render_pdf`] lays it out on A4 pages — header, usage by
//! slab, amount, a bar chart of daily kWh drawn with PDF vector operations, the privacy
//! facts — usually one page, a second when the release list is long.
//!
//! Every word and number is a real PDF text object in the standard Helvetica fonts (nothing
//! embedded), so `pdftotext` or any PDF reader extracts it; each amount and kWh figure is one
//! text run. WinAnsi, the standard fonts' encoding, has no rupee sign, so amounts are printed
//! `Rs. 1,23,456.78` (Indian digit grouping) and ε is printed `epsilon`.
//!
//! The crate knows nothing of the servers: the household dashboard and the utility build a
//! `Statement` from the bills and audit facts they hold and call [`render_pdf`].

mod render;
mod text;

use chrono::{DateTime, Utc};
use seer_core::tariff::{ExactAmount, Tariff};
use seer_core::{MeterId, Period};

pub use render::render_pdf;
pub use text::{format_amount, format_kwh};

/// Everything one home's statement for one month shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// The home's meter.
    pub meter_id: MeterId,
    /// The billing month.
    pub period: Period,
    /// The name of the tariff the bill was computed under.
    pub tariff_name: String,
    /// The month's energy per tariff cell (slab, and time-of-use band where the tariff has
    /// bands), in the tariff's cell order, as released.
    pub slabs: Vec<SlabLine>,
    /// The released amount of the bill, in paise.
    pub total_paise: i64,
    /// Daily usage for the chart: `(YYYY-MM-DD, kWh)`, days of [`period`](Self::period) in
    /// the order to draw them; at most 31. Empty draws "no daily readings".
    pub daily_kwh: Vec<(String, f64)>,
    /// What was spent from the home's privacy budget and released from its data.
    pub privacy: PrivacyFacts,
    /// When the statement was produced.
    pub issued_at: DateTime<Utc>,
}

/// One row of the usage table: a tariff cell's energy and, where the caller prices it, its
/// charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlabLine {
    /// The cell's label, e.g. `0-50 kWh` or `50-100 kWh peak`.
    pub label: String,
    /// The month's energy in the cell, whole Wh (as released bills carry it); printed as kWh
    /// with three decimals.
    pub wh: u64,
    /// The cell's charge in paise (`None` prints `-`). Each cell is rounded to the paisa on
    /// its own; the bill itself is rounded once, so the cells may differ from
    /// [`Statement::total_paise`] by a few paise, and the statement says so when they do.
    pub amount_paise: Option<i64>,
}

impl SlabLine {
    /// Rows for `cells` — `(label, Wh)` in `tariff`'s cell order — each priced at its cell's
    /// rate (`Wh × rate × band percent`, rounded to the nearest paisa, halves up).
    ///
    /// # Errors
    /// [`StatementError::CellCount`] when `cells` does not have one entry per tariff cell.
    pub fn priced(
        tariff: &Tariff,
        cells: impl IntoIterator<Item = (String, u64)>,
    ) -> Result<Vec<Self>, StatementError> {
        let cells: Vec<(String, u64)> = cells.into_iter().collect();
        if cells.len() != tariff.cell_count() {
            return Err(StatementError::CellCount {
                expected: tariff.cell_count(),
                got: cells.len(),
            });
        }
        Ok(cells
            .into_iter()
            .enumerate()
            .map(|(cell, (label, wh))| {
                let units = i128::from(wh).saturating_mul(tariff.cell_units_per_wh(cell));
                Self {
                    label,
                    wh,
                    amount_paise: Some(ExactAmount::from_units(units).round_to_paise().get()),
                }
            })
            .collect())
    }

    /// [`SlabLine::priced`], or the cells unpriced when they do not fit `tariff` (a bill
    /// released under another tariff): a statement still states the released Wh and amount.
    #[must_use]
    pub fn priced_or_unpriced(
        tariff: &Tariff,
        cells: impl IntoIterator<Item = (String, u64)>,
    ) -> Vec<Self> {
        let cells: Vec<(String, u64)> = cells.into_iter().collect();
        Self::priced(tariff, cells.clone()).unwrap_or_else(|_| {
            cells
                .into_iter()
                .map(|(label, wh)| Self {
                    label,
                    wh,
                    amount_paise: None,
                })
                .collect()
        })
    }
}

/// The privacy side of the month: the ε the home's analytics lane spent and what the key
/// authority released from its data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrivacyFacts {
    /// ε spent in the month (0 when the home sent no noised readings).
    pub epsilon_spent: f64,
    /// The month's ε budget, when one is configured.
    pub epsilon_budget: Option<f64>,
    /// The releases from the home's data, in the order to list them.
    pub releases: Vec<ReleaseFact>,
}

/// One release from the home's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseFact {
    /// What was released, e.g. `bill 2026-11` or `group total (feeder-7)`.
    pub what: String,
    /// When the key authority granted it.
    pub when: DateTime<Utc>,
}

/// Why a statement could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// A day's usage is negative, NaN or infinite.
    #[error("daily usage of {day} is not a finite, non-negative number of kWh: {kwh}")]
    InvalidUsage {
        /// The day.
        day: String,
        /// The value given.
        kwh: f64,
    },
    /// A day is not written `YYYY-MM-DD`.
    #[error("daily usage day {day:?} is not a date written YYYY-MM-DD")]
    InvalidDay {
        /// The text given (at most 32 characters of it).
        day: String,
    },
    /// A day lies outside the statement's month.
    #[error("daily usage day {day} is outside the period {period}")]
    DayOutsidePeriod {
        /// The day.
        day: String,
        /// The statement's month.
        period: Period,
    },
    /// More daily values than a month has days.
    #[error("{days} daily values given; a month has at most {max}")]
    TooManyDays {
        /// How many were given.
        days: usize,
        /// The limit.
        max: usize,
    },
    /// ε spent or the budget is negative, NaN or infinite.
    #[error("privacy budget figure {value} is not a finite, non-negative number")]
    InvalidEpsilon {
        /// The value given.
        value: f64,
    },
    /// The cells given do not match the tariff's cells.
    #[error("{got} tariff cells given; the tariff has {expected}")]
    CellCount {
        /// The tariff's cell count.
        expected: usize,
        /// How many were given.
        got: usize,
    },
}
