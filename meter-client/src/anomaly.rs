//! The meter's side of encrypted anomaly detection: a home's days as 24 **hour planes**
//! encrypted at the home's slot block (one slot per day, zeros elsewhere, so that the utility
//! can add several homes' planes), on one of two lanes, and the input receipt recorded with
//! the key authority before the planes leave.
//!
//! - [`AnomalyLane::Exact`]: each hour's kWh clamped to the model's hour range (the model's
//!   normalizers assume it). No ε is spent; no DP guarantee (the key authority's release
//!   policy is the only protection).
//! - [`AnomalyLane::Analytics`]: each hour, in whole Wh, clamped to `0 ..= Δ` and noised with
//!   discrete Laplace noise of scale Δ/ε drawn from a CSPRNG (`seer_core::dp`), then clamped to
//!   the model's hour range (post-processing). ε is spent per hourly reading: 24·ε per day
//!   against a change of the whole day, recorded in the receipt; everything released from the
//!   lane is ε-DP by post-processing.

use chrono::NaiveDate;
use seer_ckks::{CkksContext, Encryptor, PublicKey};
use seer_core::dp::{Epsilon, LaplaceMechanism, os_seeded_rng};
use seer_core::units::Wh;
use seer_proto::v1::AnalyticsReceiptRequest;

pub use crate::analytics::record_receipt;
use crate::error::Error;

/// Hours per day.
pub const HOURS: usize = 24;

/// Which lane the meter encrypts for anomaly detection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnomalyLane {
    /// Exact hourly kWh, clamped to the model's range.
    Exact,
    /// Clamped and discrete-Laplace-noised hourly Wh.
    Analytics {
        /// ε per hourly reading.
        epsilon: Epsilon,
        /// The clamp bound Δ per hourly reading.
        sensitivity: Wh,
    },
}

impl AnomalyLane {
    /// `exact` or `analytics`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            AnomalyLane::Exact => "exact",
            AnomalyLane::Analytics { .. } => "analytics",
        }
    }
}

/// The lane's hour values of `days` and the ε spent (per reading, and in total).
#[derive(Clone, Debug, PartialEq)]
pub struct LaneDays {
    /// Per day, the 24 hour values the meter encrypts (kWh).
    pub days: Vec<[f64; HOURS]>,
    /// ε per reading (0 on the exact lane).
    pub epsilon_per_reading: f64,
    /// Readings noised per day (0 on the exact lane).
    pub readings_per_day: u32,
    /// Total ε spent on these days (readings × ε).
    pub epsilon_spent: f64,
}

/// Builds the lane's values of `days` (kWh per hour) for a model whose hours lie in
/// `hour_range`.
///
/// # Errors
/// [`Error::Core`] when the mechanism cannot be built or entropy is unavailable;
/// [`Error::InvalidSetting`] for a non-finite value.
pub fn lane_days(
    days: &[[f64; HOURS]],
    lane: AnomalyLane,
    hour_range: (f64, f64),
) -> Result<LaneDays, Error> {
    let (lo, hi) = hour_range;
    if days.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::InvalidSetting {
            setting: "readings",
            reason: "a value is not finite".into(),
        });
    }
    match lane {
        AnomalyLane::Exact => Ok(LaneDays {
            days: days.iter().map(|d| d.map(|v| v.clamp(lo, hi))).collect(),
            epsilon_per_reading: 0.0,
            readings_per_day: 0,
            epsilon_spent: 0.0,
        }),
        AnomalyLane::Analytics {
            epsilon,
            sensitivity,
        } => {
            let mechanism = LaplaceMechanism::try_new(sensitivity, epsilon)?;
            let mut rng = os_seeded_rng()?;
            let noisy = days
                .iter()
                .map(|d| {
                    d.map(|kwh| {
                        let wh = (kwh.max(0.0) * 1000.0).round() as i64;
                        let clamped = wh.min(sensitivity.get());
                        let noisy = clamped + mechanism.noise().sample(&mut rng);
                        // Post-processing: into the model's range.
                        (noisy as f64 / 1000.0).clamp(lo, hi)
                    })
                })
                .collect();
            let readings = days.len() * HOURS;
            Ok(LaneDays {
                days: noisy,
                epsilon_per_reading: epsilon.get(),
                readings_per_day: HOURS as u32,
                epsilon_spent: epsilon.get() * readings as f64,
            })
        }
    }
}

/// A home's encrypted hour planes and what its receipt records.
#[derive(Clone)]
pub struct EncryptedDays {
    /// The 24 serialized hour-plane ciphertexts, in hour order.
    pub planes: Vec<Vec<u8>>,
    /// BLAKE3 of each.
    pub digests: Vec<[u8; 32]>,
    /// First slot of the block.
    pub slot_offset: usize,
    /// Days in the block.
    pub slot_count: usize,
}

impl std::fmt::Debug for EncryptedDays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedDays")
            .field("planes", &self.planes.len())
            .field("slot_offset", &self.slot_offset)
            .field("slot_count", &self.slot_count)
            .finish_non_exhaustive()
    }
}

/// Encrypts `days` as 24 hour planes at slots `slot_offset ..` (zeros elsewhere). Blocking
/// and CPU-heavy (24 encryptions at the parameter set's top level).
///
/// # Errors
/// [`Error::InvalidSetting`] when the block does not fit; [`Error::Ckks`] on engine errors.
pub fn encrypt_days(
    ctx: &CkksContext,
    public_key: &PublicKey,
    days: &[[f64; HOURS]],
    slot_offset: usize,
) -> Result<EncryptedDays, Error> {
    if days.is_empty() || slot_offset + days.len() > ctx.slots() {
        return Err(Error::InvalidSetting {
            setting: "slot block",
            reason: format!(
                "{} days at slot {slot_offset} do not fit {} slots",
                days.len(),
                ctx.slots()
            ),
        });
    }
    let encryptor = Encryptor::new(ctx, public_key)?;
    let mut planes = Vec::with_capacity(HOURS);
    for h in 0..HOURS {
        let mut values = vec![0.0; slot_offset + days.len()];
        for (i, d) in days.iter().enumerate() {
            values[slot_offset + i] = d[h];
        }
        planes.push(encryptor.encrypt_values(&values)?.to_bytes(ctx)?);
    }
    let digests = planes.iter().map(|p| *blake3::hash(p).as_bytes()).collect();
    Ok(EncryptedDays {
        planes,
        digests,
        slot_offset,
        slot_count: days.len(),
    })
}

/// The receipt of `encrypted` for the `anomaly` kind.
#[must_use]
pub fn receipt(
    meter_id: &str,
    input_id: &str,
    first_day: NaiveDate,
    encrypted: &EncryptedDays,
    lane: &LaneDays,
) -> AnalyticsReceiptRequest {
    AnalyticsReceiptRequest {
        kind: "anomaly".into(),
        meter_id: meter_id.to_owned(),
        input_id: input_id.to_owned(),
        slot_offset: encrypted.slot_offset as u32,
        slot_count: encrypted.slot_count as u32,
        first_period: first_day.to_string(),
        input_blake3: encrypted.digests.iter().map(|d| d.to_vec()).collect(),
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

    #[test]
    fn exact_lane_clamps_and_spends_nothing() {
        let days = vec![[7.5; HOURS], [-1.0; HOURS]];
        let lane = lane_days(&days, AnomalyLane::Exact, (0.0, 6.0)).unwrap();
        assert_eq!(lane.days[0], [6.0; HOURS]);
        assert_eq!(lane.days[1], [0.0; HOURS]);
        assert_eq!(lane.epsilon_spent, 0.0);
    }

    #[test]
    fn analytics_lane_noises_within_range_and_records_epsilon() {
        let days = vec![[1.0; HOURS]; 50];
        let lane = lane_days(
            &days,
            AnomalyLane::Analytics {
                epsilon: Epsilon::try_new(1.0).unwrap(),
                sensitivity: Wh::try_new(2000).unwrap(),
            },
            (0.0, 6.0),
        )
        .unwrap();
        assert_eq!(lane.readings_per_day, 24);
        assert!((lane.epsilon_spent - 50.0 * 24.0).abs() < 1e-9);
        let values: Vec<f64> = lane.days.iter().flatten().copied().collect();
        assert!(values.iter().all(|v| (0.0..=6.0).contains(v)));
        // Noise of scale 2 kWh: the values are not all the true 1 kWh.
        assert!(values.iter().filter(|v| (**v - 1.0).abs() > 1e-9).count() > values.len() / 2);
        // And centred near it (mean of clamped noise stays within a loose band).
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((0.5..2.5).contains(&mean), "{mean}");
    }
}
