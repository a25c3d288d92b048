//! The domain ↔ wire mapping of SEER's shared vocabulary (`seer_core::vocab`,
//! `seer_core::registered`), in one place: meter ids, billing periods, days, lanes and the
//! slot blocks of analytics receipts. Programs read a message's fields through these
//! functions and fill them from domain values through the same module, so every field has
//! one parser and one text form.

use seer_core::registered::{ComputationKind, SlotPeriod};
use seer_core::{Lane, MeterId, Period, SlotBlock};

use crate::v1::AnalyticsReceiptRequest;

/// A meter id field.
///
/// # Errors
/// [`seer_core::Error::InvalidMeterId`].
pub fn meter_id(text: &str) -> Result<MeterId, seer_core::Error> {
    MeterId::try_new(text)
}

/// A billing period field (`YYYY-MM`).
///
/// # Errors
/// [`seer_core::Error::InvalidPeriod`].
pub fn period(text: &str) -> Result<Period, seer_core::Error> {
    text.parse()
}

/// A day field (`YYYY-MM-DD`).
///
/// # Errors
/// [`seer_core::Error::InvalidDay`].
pub fn day(text: &str) -> Result<chrono::NaiveDate, seer_core::Error> {
    seer_core::parse_day(text)
}

/// The wire fields of a lane: `(name, ε per reading, readings per day)` as receipts carry
/// them (`exact` at 0 and 0).
#[must_use]
pub fn lane_fields(lane: &Lane) -> (String, f64, u32) {
    (
        lane.as_str().to_owned(),
        lane.epsilon(),
        lane.readings_per_day(),
    )
}

/// The lane of an analytics receipt (`lane`, `epsilon`, `readings_per_day`).
///
/// # Errors
/// [`seer_core::Error::InvalidLane`].
pub fn receipt_lane(receipt: &AnalyticsReceiptRequest) -> Result<Lane, seer_core::Error> {
    Lane::try_new(&receipt.lane, receipt.epsilon, receipt.readings_per_day)
}

/// Sets an analytics receipt's lane fields from `lane`.
pub fn set_receipt_lane(receipt: &mut AnalyticsReceiptRequest, lane: &Lane) {
    let (name, epsilon, readings_per_day) = lane_fields(lane);
    receipt.lane = name;
    receipt.epsilon = epsilon;
    receipt.readings_per_day = readings_per_day;
}

/// The slot block of an analytics receipt (`slot_offset`, `slot_count`).
#[must_use]
pub fn receipt_block(receipt: &AnalyticsReceiptRequest) -> SlotBlock {
    SlotBlock::new(receipt.slot_offset as usize, receipt.slot_count as usize)
}

/// Sets an analytics receipt's block fields from `block`.
///
/// # Errors
/// [`seer_core::Error::InvalidSlotBlock`] when the block does not fit the 32-bit fields.
pub fn set_receipt_block(
    receipt: &mut AnalyticsReceiptRequest,
    block: &SlotBlock,
) -> Result<(), seer_core::Error> {
    let too_big = || seer_core::Error::InvalidSlotBlock {
        start: block.offset,
        end: block.end(),
        slots: u32::MAX as usize,
    };
    receipt.slot_offset = u32::try_from(block.offset).map_err(|_| too_big())?;
    receipt.slot_count = u32::try_from(block.count).map_err(|_| too_big())?;
    Ok(())
}

/// The computation kind of an analytics receipt or request (`anomaly`, `forecast`, `daily`).
///
/// # Errors
/// [`seer_core::Error::InvalidOption`] for any other name.
pub fn kind(text: &str) -> Result<ComputationKind, seer_core::Error> {
    text.parse()
}

/// The start of a receipt's first period, in its kind's form (`YYYY-MM-DD` or
/// `YYYY-MM-DDTHH:00`).
///
/// # Errors
/// [`seer_core::Error::InvalidDay`] / [`seer_core::Error::InvalidHour`].
pub fn first_period(
    slot_period: SlotPeriod,
    text: &str,
) -> Result<chrono::NaiveDateTime, seer_core::Error> {
    slot_period.parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_lane_and_block() {
        let mut receipt = AnalyticsReceiptRequest::default();
        let lane = Lane::try_new("analytics", 0.5, 96).expect("lane");
        set_receipt_lane(&mut receipt, &lane);
        assert_eq!(
            (
                receipt.lane.as_str(),
                receipt.epsilon,
                receipt.readings_per_day
            ),
            ("analytics", 0.5, 96)
        );
        assert_eq!(receipt_lane(&receipt).expect("lane"), lane);
        set_receipt_lane(&mut receipt, &Lane::Exact);
        assert_eq!(
            (
                receipt.lane.as_str(),
                receipt.epsilon,
                receipt.readings_per_day
            ),
            ("exact", 0.0, 0)
        );
        receipt.lane = "noisy".into();
        assert!(receipt_lane(&receipt).is_err());

        let block = SlotBlock::new(512, 512);
        set_receipt_block(&mut receipt, &block).expect("fits");
        assert_eq!((receipt.slot_offset, receipt.slot_count), (512, 512));
        assert_eq!(receipt_block(&receipt), block);
    }

    #[test]
    fn words_have_one_parser() {
        assert_eq!(period("2007-01").expect("period").to_string(), "2007-01");
        assert!(period("0999-01").is_err());
        assert_eq!(day("2010-12-31").expect("day").to_string(), "2010-12-31");
        assert!(day("2010-12-31T00:00").is_err());
        assert_eq!(meter_id("m-1").expect("id").as_str(), "m-1");
        assert!(meter_id("").is_err());
        assert_eq!(kind("daily").expect("kind"), ComputationKind::Daily);
        assert!(kind("bill").is_err());
        let hour = first_period(SlotPeriod::Hour, "2010-12-31T22:00").expect("hour");
        assert_eq!(SlotPeriod::Hour.format(hour), "2010-12-31T22:00");
    }
}
