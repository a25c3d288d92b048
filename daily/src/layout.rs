//! The daily block: [`ROWS`] × [`COLUMNS`] slots per meter per day, row-major, at
//! `block × BLOCK` in an `N4096_L1` ciphertext ([`BLOCKS_PER_CIPHERTEXT`] meters per
//! ciphertext).
//!
//! Output `c` of a block (written by the circuit at the block's row 0, column `c`) is
//! `Σ_r W[r][c] · x[r][c]`: the dot product of column `c` of the meter's input with column `c`
//! of the model's weights.
//!
//! | columns | input `x[r][c]` | output |
//! |---|---|---|
//! | 0–23 ([`FORECAST_COLUMNS`]) | feature `r` of tomorrow's hour `c` (lags of that hour, the usual level, a 1 for the bias) | tomorrow's hour `c`, kWh |
//! | 24–30 ([`ANOMALY_COLUMNS`]) | one-hot: 1 in the row of the bin the day's feature `c − 24` falls in | the feature's outlier score |
//! | 31 ([`PRESENCE_COLUMN`]) | row 0: 1 when the forecast part is present; row 1: 1 when the anomaly part is | `1·forecast + 2·anomaly`: which parts the meter filled |

use std::ops::Range;

use seer_core::SlotBlock;

/// Rows of a block (inputs per output).
pub const ROWS: usize = 16;
/// Columns of a block (outputs per meter-day).
pub const COLUMNS: usize = 32;
/// Slots of one meter's block.
pub const BLOCK: usize = ROWS * COLUMNS;
/// Slots of an `N4096` ciphertext.
pub const SLOTS: usize = 2048;
/// Meters per ciphertext.
pub const BLOCKS_PER_CIPHERTEXT: usize = SLOTS / BLOCK;
/// The forecast columns: one per hour of the next day.
pub const FORECAST_COLUMNS: Range<usize> = 0..24;
/// The anomaly columns: one per feature.
pub const ANOMALY_COLUMNS: Range<usize> = 24..31;
/// Largest number of anomaly features.
pub const MAX_ANOMALY_FEATURES: usize = 7;
/// The presence column.
pub const PRESENCE_COLUMN: usize = 31;

/// Index of `(row, column)` inside a block.
#[must_use]
pub const fn slot(row: usize, column: usize) -> usize {
    row * COLUMNS + column
}

/// First slot of block `block`.
#[must_use]
pub const fn block_offset(block: usize) -> usize {
    block * BLOCK
}

/// The slots of block `block` ([`BLOCK`] of them from [`block_offset`]).
#[must_use]
pub const fn slot_block(block: usize) -> SlotBlock {
    SlotBlock::new(block_offset(block), BLOCK)
}

/// The daily block that `block` is, if any: [`BLOCK`] slots starting at a multiple of
/// [`BLOCK`] below [`SLOTS`]; its index.
#[must_use]
pub const fn block_index(block: &SlotBlock) -> Option<usize> {
    if block.count == BLOCK && block.offset.is_multiple_of(BLOCK) && block.offset < SLOTS {
        Some(block.offset / BLOCK)
    } else {
        None
    }
}

/// The rotation (left, in slots) that brings row `row` of every block to its row 0.
#[must_use]
pub const fn row_step(row: usize) -> i64 {
    (row * COLUMNS) as i64
}

/// Which parts a presence output (column [`PRESENCE_COLUMN`], decrypted) says the meter filled:
/// `(forecast, anomaly)`; `None` when the value is not within 0.25 of 0, 1, 2 or 3.
#[must_use]
pub fn decode_presence(value: f64) -> Option<(bool, bool)> {
    let code = value.round();
    if (value - code).abs() > 0.25 || !(0.0..=3.0).contains(&code) {
        return None;
    }
    let code = code as u8;
    Some((code & 1 == 1, code & 2 == 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_blocks_are_whole_aligned_blocks() {
        for b in 0..BLOCKS_PER_CIPHERTEXT {
            assert_eq!(block_index(&slot_block(b)), Some(b));
        }
        for bad in [
            SlotBlock::new(0, BLOCK - 1),
            SlotBlock::new(1, BLOCK),
            SlotBlock::new(SLOTS, BLOCK),
            SlotBlock::new(0, 2 * BLOCK),
        ] {
            assert_eq!(block_index(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_block_fits_the_ciphertext() {
        assert_eq!(BLOCK, 512);
        assert_eq!(BLOCKS_PER_CIPHERTEXT, 4);
        assert_eq!(slot(ROWS - 1, COLUMNS - 1), BLOCK - 1);
        assert_eq!(ANOMALY_COLUMNS.len(), MAX_ANOMALY_FEATURES);
        const { assert!(ANOMALY_COLUMNS.end == PRESENCE_COLUMN) };
        assert_eq!(row_step(1), 32);
    }

    #[test]
    fn presence_codes() {
        assert_eq!(decode_presence(0.0), Some((false, false)));
        assert_eq!(decode_presence(1.0000003), Some((true, false)));
        assert_eq!(decode_presence(2.0), Some((false, true)));
        assert_eq!(decode_presence(2.999), Some((true, true)));
        assert_eq!(decode_presence(1.5), None);
        assert_eq!(decode_presence(4.0), None);
        assert_eq!(decode_presence(-1.0), None);
    }
}
