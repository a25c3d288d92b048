//! The meter's side of encrypted load forecasting: the home's hourly series as **one
//! ciphertext** at the home's slot block (one slot per hour, zeros elsewhere, so that the
//! utility can add several homes' series), on one of two lanes, and the input receipt recorded
//! with the key authority before the ciphertext leaves. The block reserves the model's horizon
//! after the series (zero slots), where the forecasts past the series' end appear.
//!
//! - [`ForecastLane::Exact`]: each hour's kWh clamped to the model's input range. No ε is
//!   spent; no DP guarantee. The key authority then releases only the forecasts past the
//!   series' end.
//! - [`ForecastLane::Analytics`]: each 15-minute reading, in whole Wh, clamped to `0 ..= Δ`
//!   and noised with discrete Laplace noise of scale Δ/ε from a CSPRNG — exactly the lane the
//!   ε models were trained on (`seer_forecast::data::Series::analytics_lane`) — summed per
//!   hour and clamped to the model's input range (post-processing). ε is spent per reading
//!   (96 per day), recorded in the receipt; the backtest is released too.

use chrono::NaiveDateTime;
use seer_ckks::{CkksContext, Encryptor, PublicKey};
use seer_core::data::Interval;
use seer_core::dp::{Epsilon, NoisyWh, os_seeded_rng};
use seer_core::units::Wh;
use seer_forecast::data::Series;
use seer_proto::v1::AnalyticsReceiptRequest;

pub use crate::analytics::record_receipt;
use crate::error::Error;

/// Which lane the meter encrypts for forecasting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ForecastLane {
    /// Exact hourly kWh, clamped to the model's input range.
    Exact,
    /// Clamped, discrete-Laplace-noised 15-minute Wh, summed per hour.
    Analytics {
        /// ε per 15-minute reading.
        epsilon: Epsilon,
        /// The clamp bound Δ per 15-minute reading.
        sensitivity: Wh,
    },
}

/// The lane's hourly values and the ε spent.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneSeries {
    /// The start of the first hour.
    pub start: NaiveDateTime,
    /// kWh per hour, as encrypted.
    pub hours: Vec<f64>,
    /// ε per reading (0 on the exact lane).
    pub epsilon_per_reading: f64,
    /// Readings noised per day (0 on the exact lane).
    pub readings_per_day: u32,
    /// ε spent building the series: readings noised × ε (by [`lane_series`], every reading;
    /// by [`analytics_series`], the readings drawn for this window, earlier draws being
    /// reused).
    pub epsilon_spent: f64,
}

/// Builds the lane of a contiguous 15-minute series starting on the hour (hourly input is
/// accepted on the exact lane) for a model whose inputs lie in `input_range`.
///
/// # Errors
/// [`Error::InvalidSetting`] for a series of the wrong interval or with a non-finite value;
/// [`Error::Core`] when the mechanism cannot be built or entropy is unavailable.
pub fn lane_series(
    series: &Series,
    lane: ForecastLane,
    input_range: (f64, f64),
) -> Result<LaneSeries, Error> {
    let invalid = |reason: String| Error::InvalidSetting {
        setting: "readings",
        reason,
    };
    if series.kwh.iter().any(|v| !v.is_finite()) {
        return Err(invalid("a value is not finite".into()));
    }
    let (lo, hi) = input_range;
    let (hourly, per_reading, readings_per_day, readings) = match lane {
        ForecastLane::Exact => (series.hourly(), 0.0, 0, 0),
        ForecastLane::Analytics {
            epsilon,
            sensitivity,
        } => {
            if series.interval != Interval::FIFTEEN_MINUTES {
                return Err(invalid(
                    "the analytics lane noises 15-minute readings; the series has another \
                     interval"
                        .into(),
                ));
            }
            let mut rng = os_seeded_rng()?;
            let noisy = series
                .analytics_lane(sensitivity, epsilon, &mut rng)
                .map_err(|e| invalid(e.to_string()))?;
            (noisy.hourly(), epsilon.get(), 96, series.kwh.len() / 4 * 4)
        }
    };
    let hourly = hourly.map_err(|e| invalid(e.to_string()))?;
    Ok(LaneSeries {
        start: hourly.start,
        hours: hourly.kwh.iter().map(|v| v.clamp(lo, hi)).collect(),
        epsilon_per_reading: per_reading,
        readings_per_day,
        epsilon_spent: per_reading * readings as f64,
    })
}

/// The analytics lane's hourly values from the noisy 15-minute readings of a window starting
/// on the hour (as [`ForecastNoise`](crate::forecast_lane::ForecastNoise) keeps them): each
/// hour the sum of its four readings in kWh, clamped to the model's `input_range`
/// (post-processing). `epsilon_charged` is what building the window cost.
///
/// # Errors
/// [`Error::InvalidSetting`] for a window that does not start on the hour or is not whole
/// hours.
pub fn analytics_series(
    start: NaiveDateTime,
    noisy: &[NoisyWh],
    epsilon: Epsilon,
    epsilon_charged: f64,
    input_range: (f64, f64),
) -> Result<LaneSeries, Error> {
    if !Interval::HOUR.is_aligned(start) || noisy.is_empty() || !noisy.len().is_multiple_of(4) {
        return Err(Error::InvalidSetting {
            setting: "readings",
            reason: format!(
                "the analytics lane sums whole hours of 15-minute readings: {} readings from \
                 {start}",
                noisy.len()
            ),
        });
    }
    let (lo, hi) = input_range;
    let hours = noisy
        .chunks_exact(4)
        .map(|h| {
            let kwh: f64 = h.iter().map(|w| w.get() as f64 / 1000.0).sum();
            kwh.clamp(lo, hi)
        })
        .collect();
    Ok(LaneSeries {
        start,
        hours,
        epsilon_per_reading: epsilon.get(),
        readings_per_day: 96,
        epsilon_spent: epsilon_charged,
    })
}

/// A home's encrypted series and what its receipt records.
#[derive(Clone)]
pub struct EncryptedSeries {
    /// The serialized ciphertext.
    pub input: Vec<u8>,
    /// Its BLAKE3.
    pub digest: [u8; 32],
    /// First slot of the block.
    pub slot_offset: usize,
    /// Hours in the block: the series and the reserved horizon.
    pub slot_count: usize,
}

impl std::fmt::Debug for EncryptedSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedSeries")
            .field("bytes", &self.input.len())
            .field("slot_offset", &self.slot_offset)
            .field("slot_count", &self.slot_count)
            .finish_non_exhaustive()
    }
}

/// Encrypts `hours` at slots `slot_offset ..` and reserves `horizon` zero slots after them
/// (zeros elsewhere). Blocking (one encryption at the parameter set's top level).
///
/// # Errors
/// [`Error::InvalidSetting`] when the block does not fit; [`Error::Ckks`] on engine errors.
pub fn encrypt_series(
    ctx: &CkksContext,
    public_key: &PublicKey,
    hours: &[f64],
    slot_offset: usize,
    horizon: usize,
) -> Result<EncryptedSeries, Error> {
    let count = hours.len() + horizon;
    if hours.is_empty() || slot_offset + count > ctx.slots() {
        return Err(Error::InvalidSetting {
            setting: "slot block",
            reason: format!(
                "{} hours and a horizon of {horizon} at slot {slot_offset} do not fit {} slots",
                hours.len(),
                ctx.slots()
            ),
        });
    }
    let mut values = vec![0.0; slot_offset + hours.len()];
    values[slot_offset..].copy_from_slice(hours);
    let input = Encryptor::new(ctx, public_key)?
        .encrypt_values(&values)?
        .to_bytes(ctx)?;
    Ok(EncryptedSeries {
        digest: *blake3::hash(&input).as_bytes(),
        input,
        slot_offset,
        slot_count: count,
    })
}

/// The receipt of `encrypted` for the `forecast` kind.
#[must_use]
pub fn receipt(
    meter_id: &str,
    input_id: &str,
    encrypted: &EncryptedSeries,
    lane: &LaneSeries,
) -> AnalyticsReceiptRequest {
    AnalyticsReceiptRequest {
        kind: "forecast".into(),
        meter_id: meter_id.to_owned(),
        input_id: input_id.to_owned(),
        slot_offset: encrypted.slot_offset as u32,
        slot_count: encrypted.slot_count as u32,
        first_period: lane.start.format("%Y-%m-%dT%H:00").to_string(),
        input_blake3: vec![encrypted.digest.to_vec()],
        lane: if lane.readings_per_day == 0 {
            "exact".into()
        } else {
            "analytics".into()
        },
        epsilon: lane.epsilon_per_reading,
        readings_per_day: lane.readings_per_day,
        ..AnalyticsReceiptRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quarters(values: &[f64]) -> Series {
        Series {
            start: "2010-01-01T00:00:00".parse().expect("time"),
            interval: Interval::FIFTEEN_MINUTES,
            kwh: values.to_vec(),
        }
    }

    #[test]
    fn exact_lane_sums_hours_and_clamps() {
        let s = quarters(&[0.25, 0.25, 0.5, 0.5, 4.0, 4.0, 4.0, 4.0]);
        let lane = lane_series(&s, ForecastLane::Exact, (0.0, 12.0)).expect("lane");
        assert_eq!(lane.hours, vec![1.5, 12.0]);
        assert_eq!(lane.epsilon_spent, 0.0);
        let r = receipt(
            "m1",
            "u1",
            &EncryptedSeries {
                input: Vec::new(),
                digest: [7; 32],
                slot_offset: 3,
                slot_count: 3,
            },
            &lane,
        );
        assert_eq!(r.first_period, "2010-01-01T00:00");
        assert_eq!(r.lane, "exact");
    }

    #[test]
    fn analytics_lane_spends_epsilon_per_reading() {
        let s = quarters(&[0.1; 96 * 2]);
        let lane = lane_series(
            &s,
            ForecastLane::Analytics {
                epsilon: Epsilon::try_new(1.0).expect("ε"),
                sensitivity: Wh::try_new(2500).expect("Δ"),
            },
            (-80.0, 80.0),
        )
        .expect("lane");
        assert_eq!(lane.hours.len(), 48);
        assert_eq!(lane.readings_per_day, 96);
        assert_eq!(lane.epsilon_spent, 192.0);
        // Noise of scale 2.5 kWh per reading: the hours are no longer all 0.4 kWh.
        assert!(lane.hours.iter().any(|h| (h - 0.4).abs() > 1e-9));
        assert!(lane.hours.iter().all(|h| (-80.0..=80.0).contains(h)));
        let hourly = Series {
            interval: Interval::HOUR,
            ..quarters(&[1.0; 4])
        };
        assert!(
            lane_series(
                &hourly,
                ForecastLane::Analytics {
                    epsilon: Epsilon::try_new(1.0).expect("ε"),
                    sensitivity: Wh::try_new(2500).expect("Δ"),
                },
                (-80.0, 80.0)
            )
            .is_err()
        );
    }
}
