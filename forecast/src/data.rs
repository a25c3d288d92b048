//! The UCI household as hourly (and quarter-hourly) series, the evaluation split and the
//! analytics lane's noise.
//!
//! Series are contiguous: element `i` is the energy (kWh) of the hour (quarter hour) starting
//! `i` intervals after `start`. The UCI copy fetched by `scripts/fetch-data.sh` has no gaps
//! (its missing minutes were filled), so after trimming the partial first and last hour the
//! hourly series from 2006-12-16 18:00 to 2010-11-26 20:00 is complete (34,587 hours); a gap
//! inside a series is an error rather than something silently filled.

use std::ops::Range;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use rand::CryptoRng;
use seer_core::data::{GapPolicy, Interval, LoadOptions, load_kwh_csv, load_uci};
use seer_core::dp::{DiscreteLaplace, Epsilon};
use seer_core::units::Wh;

use crate::error::ForecastError;
use crate::model::HISTORY;

/// A contiguous series of interval energies in kWh.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The start of element 0.
    pub start: NaiveDateTime,
    /// The interval of each element.
    pub interval: Interval,
    /// Energy per interval, kWh.
    pub kwh: Vec<f64>,
}

impl Series {
    /// The start of element `i`.
    pub fn time_of(&self, i: usize) -> NaiveDateTime {
        self.start + self.interval.as_time_delta() * i as i32
    }

    /// The index of the first element starting at or after midnight of `date` (clamped to
    /// `0 ..= len`).
    pub fn index_of_date(&self, date: NaiveDate) -> usize {
        let t = date.and_hms_opt(0, 0, 0).unwrap_or(self.start);
        if t <= self.start {
            return 0;
        }
        let step = self.interval.as_time_delta().num_seconds();
        let secs = (t - self.start).num_seconds();
        (((secs + step - 1) / step) as usize).min(self.kwh.len())
    }

    /// Hourly sums of a quarter-hour series that starts on the hour (a trailing partial
    /// hour is dropped).
    pub fn hourly(&self) -> Result<Series, ForecastError> {
        if self.interval == Interval::HOUR {
            return Ok(self.clone());
        }
        if self.interval != Interval::FIFTEEN_MINUTES || !Interval::HOUR.is_aligned(self.start) {
            return Err(ForecastError::InvalidSeries {
                reason: "hourly sums need a quarter-hour series starting on the hour".into(),
            });
        }
        Ok(Series {
            start: self.start,
            interval: Interval::HOUR,
            kwh: self.kwh.chunks_exact(4).map(|q| q.iter().sum()).collect(),
        })
    }

    /// The analytics lane of a quarter-hour series, as the meter builds it: each reading
    /// rounded to whole Wh, clamped to `0 ..= sensitivity` and noised with discrete Laplace
    /// noise of scale `sensitivity / ε` (see `seer_core::dp::LaplaceMechanism`).
    pub fn analytics_lane<R: CryptoRng + ?Sized>(
        &self,
        sensitivity: Wh,
        epsilon: Epsilon,
        rng: &mut R,
    ) -> Result<Series, ForecastError> {
        let noise = DiscreteLaplace::for_mechanism(sensitivity, epsilon)?;
        let kwh = self
            .kwh
            .iter()
            .map(|kwh| {
                let wh = ((kwh * 1000.0).round() as i64).clamp(0, sensitivity.get());
                (wh + noise.sample(rng)) as f64 / 1000.0
            })
            .collect();
        Ok(Series {
            kwh,
            ..self.clone()
        })
    }
}

fn contiguous(
    intervals: &[seer_core::data::IntervalEnergy],
    interval: Interval,
    source: &Path,
) -> Result<Series, ForecastError> {
    // Trim leading and trailing missing intervals; the first kept one must start on the hour.
    let mut first = intervals
        .iter()
        .position(|iv| iv.energy.is_some())
        .unwrap_or(intervals.len());
    while first < intervals.len()
        && !(Interval::HOUR.is_aligned(intervals[first].start) && intervals[first].energy.is_some())
    {
        first += 1;
    }
    let last = intervals
        .iter()
        .rposition(|iv| iv.energy.is_some())
        .map_or(first, |i| i + 1);
    let kept = intervals.get(first..last).unwrap_or(&[]);
    if kept.is_empty() {
        return Err(ForecastError::InvalidSeries {
            reason: format!("{}: no complete interval", source.display()),
        });
    }
    let mut kwh = Vec::with_capacity(kept.len());
    for iv in kept {
        match iv.energy {
            Some(e) => kwh.push(e.to_kwh().get()),
            None => {
                return Err(ForecastError::InvalidSeries {
                    reason: format!(
                        "{}: interval starting {} is incomplete (the forecaster needs a \
                         contiguous series)",
                        source.display(),
                        iv.start
                    ),
                });
            }
        }
    }
    Ok(Series {
        start: kept[0].start,
        interval,
        kwh,
    })
}

/// The UCI minute data as a contiguous quarter-hour series starting on the hour.
pub fn load_uci_quarters(path: impl AsRef<Path>) -> Result<Series, ForecastError> {
    let path = path.as_ref();
    quarters_of(&load_uci(path, &LoadOptions::default())?.series, path)
}

/// A loaded series on a contiguous quarter-hour grid starting on the hour, whole hours only.
fn quarters_of(
    series: &seer_core::data::EnergySeries,
    path: &Path,
) -> Result<Series, ForecastError> {
    let q = series.resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)?;
    let mut series = contiguous(q.intervals(), Interval::FIFTEEN_MINUTES, path)?;
    series.kwh.truncate(series.kwh.len() / 4 * 4);
    Ok(series)
}

/// A `timestamp,kwh` file (any interval dividing 15 minutes) resampled to a contiguous
/// quarter-hour series starting on the hour: the readings the analytics lane noises.
/// Malformed lines are reported with their line numbers.
pub fn load_quarters_csv(path: impl AsRef<Path>) -> Result<Series, ForecastError> {
    let path = path.as_ref();
    quarters_of(&load_kwh_csv(path, &LoadOptions::default())?.series, path)
}

/// A `timestamp,kwh` file resampled to a contiguous hourly series.
pub fn load_hourly_csv(path: impl AsRef<Path>) -> Result<Series, ForecastError> {
    let path = path.as_ref();
    let loaded = load_kwh_csv(path, &LoadOptions::default())?;
    let h = loaded
        .series
        .resample(Interval::HOUR, GapPolicy::COMPLETE_ONLY)?;
    contiguous(h.intervals(), Interval::HOUR, path)
}

/// Writes an hourly series as a `timestamp,kwh` file (no offset, seven decimals: exact to the
/// joule's neighbourhood).
pub fn hourly_csv(series: &Series) -> String {
    let mut out = String::from("timestamp,kwh\n");
    for (i, v) in series.kwh.iter().enumerate() {
        out.push_str(&format!(
            "{},{v:.7}\n",
            series.time_of(i).format("%Y-%m-%dT%H:%M:%S")
        ));
    }
    out
}

/// Target positions (indices of forecast hours) of the evaluation split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training targets: from the first position with full history to the validation slice.
    pub train: Range<usize>,
    /// The validation slice (epoch choice; never the test set).
    pub validation: Range<usize>,
    /// Test targets.
    pub test: Range<usize>,
}

impl Split {
    /// Training and validation together: the whole training period.
    pub fn training_period(&self) -> Range<usize> {
        self.train.start..self.validation.end
    }
}

/// The split used throughout: train 2006-12 … 2009-09, validation 2009-10 … 2009-12, test 2010
/// (to the end of the data, 2010-11-26).
pub const VALIDATION_FROM: (i32, u32, u32) = (2009, 10, 1);
/// First day of the test period.
pub const TEST_FROM: (i32, u32, u32) = (2010, 1, 1);

/// The split of an hourly UCI series at [`VALIDATION_FROM`] and [`TEST_FROM`].
pub fn uci_split(series: &Series) -> Result<Split, ForecastError> {
    let day = |(y, m, d): (i32, u32, u32)| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
    let v = series.index_of_date(day(VALIDATION_FROM));
    let t = series.index_of_date(day(TEST_FROM));
    if !(HISTORY < v && v < t && t < series.kwh.len()) {
        return Err(ForecastError::InvalidSeries {
            reason: format!(
                "the series ({} hours from {}) does not cover the training, validation and test periods",
                series.kwh.len(),
                series.start
            ),
        });
    }
    Ok(Split {
        train: HISTORY..v,
        validation: v..t,
        test: t..series.kwh.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("seer-forecast-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn quarter_csv_resamples_and_reports_bad_lines() {
        // Five-minute readings of 0.1 kWh for two hours, starting on the hour.
        let mut text = String::from("timestamp,kwh\n");
        for m in (0..120).step_by(5) {
            text += &format!("2010-01-01T{:02}:{:02}:00,0.1\n", m / 60, m % 60);
        }
        let q = load_quarters_csv(write("ok.csv", &text)).expect("series");
        assert_eq!(q.interval, Interval::FIFTEEN_MINUTES);
        assert_eq!(q.kwh.len(), 8);
        assert!(q.kwh.iter().all(|v| (v - 0.3).abs() < 1e-12), "{:?}", q.kwh);
        assert_eq!(q.hourly().expect("hourly").kwh.len(), 2);

        let bad = text.replacen(",0.1\n", ",lots\n", 3);
        let err = load_quarters_csv(write("bad.csv", &bad))
            .expect_err("a malformed value")
            .to_string();
        assert!(err.contains("bad.csv") && err.contains(":2"), "{err}");
    }
}
