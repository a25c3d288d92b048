//! The statements meters sign, rebuilt from the messages that carry them: one mapping, used by
//! the meter that signs, the utility that checks on ingest and the key authority that checks
//! again before it sums a lane into a group total.

use seer_auth::device::{BatchStatement, NoisePlanStatement};

use crate::v1::{NoisePlan, UploadBatch};

/// The batch statement of `wire` with its billing lane given by `billing_lane_blake3` (the
/// utility hashes the lane it received; the key authority is sent the digest instead of the
/// lane) and its analytics lane hashed as sent.
#[must_use]
pub fn batch_statement(wire: &UploadBatch, billing_lane_blake3: [u8; 32]) -> BatchStatement {
    BatchStatement {
        meter_id: wire.meter_id.clone(),
        sequence: wire.sequence,
        period: wire.period.clone(),
        start: wire.start.clone(),
        end: wire.end.clone(),
        readings: wire.readings,
        billing_lane_blake3,
        analytics_lane_blake3: *blake3::hash(&wire.analytics_lane).as_bytes(),
        billing_group: wire.billing_group,
        billing_position: wire.billing_position,
        epsilon_spent: wire.epsilon_spent,
        noise: wire.noise_plan.as_ref().map(noise_plan_statement),
    }
}

/// The signed form of a wire noise plan.
#[must_use]
pub fn noise_plan_statement(plan: &NoisePlan) -> NoisePlanStatement {
    NoisePlanStatement {
        group_size: plan.group_size,
        tolerated: plan.tolerated,
        sensitivity_wh: plan.sensitivity_wh,
        epsilon: plan.epsilon,
        window_start: plan.window_start.clone(),
        interval_seconds: plan.interval_seconds,
        window_slots: plan.window_slots,
        first_slot: plan.first_slot,
        slot_count: plan.slot_count,
    }
}

/// The wire form of a signed noise plan.
#[must_use]
pub fn noise_plan_wire(plan: &NoisePlanStatement) -> NoisePlan {
    NoisePlan {
        group_size: plan.group_size,
        tolerated: plan.tolerated,
        sensitivity_wh: plan.sensitivity_wh,
        epsilon: plan.epsilon,
        window_start: plan.window_start.clone(),
        interval_seconds: plan.interval_seconds,
        window_slots: plan.window_slots,
        first_slot: plan.first_slot,
        slot_count: plan.slot_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_and_are_part_of_the_statement() {
        let plan = NoisePlan {
            group_size: 1_000,
            tolerated: 100,
            sensitivity_wh: 3_450,
            epsilon: 0.5,
            window_start: "2010-01-01T00:00:00+00:00".into(),
            interval_seconds: 900,
            window_slots: 96,
            first_slot: 4,
            slot_count: 92,
        };
        assert_eq!(noise_plan_wire(&noise_plan_statement(&plan)), plan);
        let mut wire = UploadBatch {
            meter_id: "M-1".into(),
            analytics_lane: vec![1, 2, 3],
            ..UploadBatch::default()
        };
        let without = batch_statement(&wire, [7; 32]);
        assert_eq!(without.noise, None);
        assert_eq!(without.billing_lane_blake3, [7; 32]);
        assert_eq!(
            without.analytics_lane_blake3,
            *blake3::hash(&[1, 2, 3]).as_bytes()
        );
        wire.noise_plan = Some(plan.clone());
        assert_eq!(
            batch_statement(&wire, [7; 32]).noise,
            Some(noise_plan_statement(&plan))
        );
    }
}
