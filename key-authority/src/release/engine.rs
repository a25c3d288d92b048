//! The billing circuit as the key authority re-executes it: its own Galois keys (the very
//! object it publishes, so that the utility's evaluation serializes to the same bytes), its
//! own decryption, the billing module's decoding, and the checks on each decrypted closing
//! lane (see the [module documentation](super)).

use std::sync::Arc;

use seer_ckks::{Ciphertext, Evaluator, GaloisKeys, Level, ParameterSet};
use seer_core::circuits::billing::{BillingLayout, LEVELS_USED};
use seer_core::tariff::{CellEnergy, Paise, Tariff};
use seer_core::units::Wh;

use super::ReleaseError;
use crate::keys::KeyStore;

/// How far, in Wh, a decrypted slot of an honest closing lane may lie from its exact value (0
/// outside the meter's cells, a whole number of Wh in them).
///
/// A fresh encryption decrypts to within about 10⁻⁸ Wh of what was encrypted (measured by the
/// unit tests), so honest lanes pass with five orders of magnitude to spare. The bound is deliberately far tighter than
/// the ±0.5 Wh of plain rounding: a lane allowed to leave ε Wh in a neighbour's cells shifts
/// the neighbour's homomorphic bill by up to ε × the highest rate, and at 10⁻³ Wh that is
/// below half of the tariff's amount quantum (₹0.00005 for BESCOM), which the decoding snaps
/// away. Larger leaks are refused here; whatever remains could at worst make the neighbour's
/// cross-check ([`check_bill`]) refuse, never release a wrong bill.
pub const SLOT_TOLERANCE_WH: f64 = 1e-3;

/// The largest energy, in Wh, one tariff cell of one month may hold: 10 MWh, some 13 kW
/// around the clock for a month, beyond any domestic connection. Anything above is refused as
/// implausible (and keeps every released value far inside the circuit's exact range).
pub const MAX_CELL_WH: u64 = 10_000_000;

/// A bill the circuit and the checks on its lane agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeBill {
    /// The homomorphic bill, rounded to the paisa; equal to the plaintext tariff on
    /// [`cell_wh`](Self::cell_wh).
    pub amount: Paise,
    /// The month's energy per tariff cell, whole Wh, in the tariff's cell order.
    pub cell_wh: Vec<u64>,
}

/// One input of a group, as handed to [`BillEngine::decide`].
#[derive(Debug)]
pub struct GroupLane {
    /// The parsed closing lane.
    pub lane: Ciphertext,
    /// The meter's registered position in the group.
    pub position: usize,
}

/// What [`BillEngine::decide`] found for one group.
#[derive(Debug)]
pub struct GroupDecision {
    /// Per lane, in the order given: the bill, or why it is refused.
    pub homes: Vec<Result<HomeBill, String>>,
    /// Whether the utility's result was compared with the re-execution and found
    /// byte-identical (only possible when every input of the request was accepted).
    pub result_verified: bool,
}

/// Re-executes the billing circuit on accepted lanes and decrypts the bills.
pub struct BillEngine {
    keys: Arc<KeyStore>,
    parameter_set: String,
    layout: BillingLayout,
    evaluator: Evaluator,
}

impl std::fmt::Debug for BillEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillEngine")
            .field("parameter_set", &self.parameter_set)
            .field("tariff", &self.layout.tariff().name())
            .field("capacity", &self.layout.capacity())
            .finish_non_exhaustive()
    }
}

impl BillEngine {
    /// The engine for `tariff` over the key set of `parameter_set`.
    ///
    /// # Errors
    /// [`ReleaseError::Config`] when the parameter set is unknown, has no key set in the store,
    /// cannot hold the billing layout, or when the key set's Galois keys lack a step of the
    /// layout's (the message names the steps to add to `keys.sets`).
    pub fn try_new(
        keys: Arc<KeyStore>,
        tariff: &Tariff,
        parameter_set: &str,
    ) -> Result<Self, ReleaseError> {
        let id = ParameterSet::try_from_id(parameter_set)
            .map_err(|e| ReleaseError::Config(format!("billing parameter set: {e}")))?
            .id();
        let set = keys.get(&id).ok_or_else(|| {
            ReleaseError::Config(format!(
                "no key set for the billing parameter set {id}: add it to keys.sets"
            ))
        })?;
        let ctx = set.context();
        let layout = BillingLayout::try_new(tariff, ctx)
            .map_err(|e| ReleaseError::Config(format!("billing layout: {e}")))?;
        let slots = i64::try_from(layout.slots()).unwrap_or(i64::MAX);
        let missing: Vec<i64> = layout
            .galois_steps()
            .into_iter()
            .filter(|step| {
                let normalized = step.rem_euclid(slots);
                !set.galois_steps()
                    .iter()
                    .any(|have| i64::from(*have) == normalized)
            })
            .collect();
        if !missing.is_empty() {
            return Err(ReleaseError::Config(format!(
                "the key set {id} lacks Galois keys for the rotation steps {missing:?} that the \
                 billing circuit needs (block width {}): add them to keys.sets[].galois_steps",
                layout.block_width()
            )));
        }
        let galois_bytes = set
            .galois_keys_bytes()
            .ok_or_else(|| ReleaseError::Config(format!("the key set {id} has no Galois keys")))?;
        let galois = GaloisKeys::from_bytes(ctx, galois_bytes)
            .map_err(|e| ReleaseError::Config(format!("galois keys of {id}: {e}")))?;
        let evaluator = Evaluator::new(ctx, None, Some(galois));
        Ok(Self {
            parameter_set: id,
            layout,
            evaluator,
            keys,
        })
    }

    /// The layout (tariff, capacity, positions).
    #[must_use]
    pub fn layout(&self) -> &BillingLayout {
        &self.layout
    }

    /// The billing parameter-set id.
    #[must_use]
    pub fn parameter_set(&self) -> &str {
        &self.parameter_set
    }

    /// Parses one billing lane (size, frame, checksum and parameter set checked before SEAL),
    /// and checks that it has the levels the circuit consumes.
    ///
    /// # Errors
    /// The refusal reason, in words.
    pub fn parse_lane(&self, lane: &[u8]) -> Result<Ciphertext, String> {
        let set = self
            .keys
            .get(&self.parameter_set)
            .ok_or("no billing key set")?;
        let ct = Ciphertext::from_bytes(set.context(), lane).map_err(|e| {
            format!(
                "the billing lane is not a ciphertext of {}: {e}",
                self.parameter_set
            )
        })?;
        if ct.level() < Level(LEVELS_USED) {
            return Err(format!(
                "the billing lane is at level {}, the billing circuit needs {LEVELS_USED}",
                ct.level().0
            ));
        }
        Ok(ct)
    }

    /// Runs the circuit on `lanes` (in any order) with the key authority's evaluation keys and
    /// serializes the result: what the utility must have sent for the same lanes. Blocking.
    ///
    /// # Errors
    /// [`ReleaseError::Engine`] when the evaluation or the serialization fails.
    pub fn evaluate<'a, I>(&self, lanes: I) -> Result<(Ciphertext, Vec<u8>), ReleaseError>
    where
        I: IntoIterator<Item = &'a Ciphertext>,
    {
        let result = self
            .layout
            .evaluate(&self.evaluator, lanes)
            .map_err(|e| ReleaseError::Engine(format!("evaluating the bills: {e}")))?;
        let set = self
            .keys
            .get(&self.parameter_set)
            .ok_or_else(|| ReleaseError::Engine("no billing key set".into()))?;
        let bytes = result
            .to_bytes(set.context())
            .map_err(|e| ReleaseError::Engine(format!("serializing the bills: {e}")))?;
        Ok((result, bytes))
    }

    /// Decides one group (see the [module documentation](super)): decrypts and checks each
    /// lane ([`check_lane_slots`]); when `all_inputs_accepted` and every lane passes, requires
    /// the re-execution over all of them to serialize to exactly `utility_result` (else every
    /// lane is refused); otherwise re-executes over the lanes that pass; then decrypts the
    /// result, decodes each home's bill to the paisa and cross-checks it with the plaintext
    /// tariff on the home's cells ([`check_bill`]). Blocking and CPU-heavy: call it off the
    /// async runtime.
    ///
    /// # Errors
    /// [`ReleaseError::Engine`] when the evaluation or a decryption fails as a whole.
    pub fn decide(
        &self,
        lanes: &[GroupLane],
        all_inputs_accepted: bool,
        utility_result: &[u8],
    ) -> Result<GroupDecision, ReleaseError> {
        let set = self
            .keys
            .get(&self.parameter_set)
            .ok_or_else(|| ReleaseError::Engine("no billing key set".into()))?;
        let decryptor = set.decryptor();

        // Each lane on its own: its cells, and nothing outside them.
        let mut homes: Vec<Result<Vec<u64>, String>> = Vec::with_capacity(lanes.len());
        for lane in lanes {
            let slots = decryptor
                .decrypt_values(&lane.lane)
                .map_err(|e| ReleaseError::Engine(format!("decrypting a billing lane: {e}")))?;
            homes.push(check_lane_slots(&self.layout, &slots, lane.position));
        }
        let passing: Vec<usize> = (0..lanes.len()).filter(|&i| homes[i].is_ok()).collect();
        if passing.is_empty() {
            return Ok(GroupDecision {
                homes: homes
                    .into_iter()
                    .map(|home| Err(home.err().unwrap_or_default()))
                    .collect(),
                result_verified: false,
            });
        }

        // The circuit, over the passing lanes; compared with the utility's when it had to be
        // computed over the same lanes.
        let (result, bytes) = self.evaluate(passing.iter().map(|&i| &lanes[i].lane))?;
        let mut result_verified = false;
        if all_inputs_accepted && passing.len() == lanes.len() {
            let refusal = if utility_result.is_empty() {
                Some(
                    "the request carries no circuit result: the utility must evaluate the \
                     billing circuit over the lanes it sends"
                        .to_owned(),
                )
            } else {
                let theirs = blake3::hash(utility_result);
                let ours = blake3::hash(&bytes);
                (theirs != ours).then(|| {
                    format!(
                        "the utility's circuit result (BLAKE3 {theirs}) differs from the key \
                         authority's re-execution over the same lanes (BLAKE3 {ours}): \
                         nothing of this group is released"
                    )
                })
            };
            if let Some(reason) = refusal {
                tracing::warn!(%reason, "utility circuit result refused");
                return Ok(GroupDecision {
                    homes: lanes.iter().map(|_| Err(reason.clone())).collect(),
                    result_verified: false,
                });
            }
            result_verified = true;
        }

        let slots = decryptor
            .decrypt_values(&result)
            .map_err(|e| ReleaseError::Engine(format!("decrypting the bills: {e}")))?;
        let block = self.layout.block_width();
        let decided = lanes
            .iter()
            .zip(homes)
            .map(|(lane, cells)| {
                let cells = cells?;
                // The home's value alone at position 0 of an otherwise empty vector.
                let mut alone = vec![0.0; slots.len()];
                alone[0] = slots
                    .get(lane.position * block)
                    .copied()
                    .unwrap_or(f64::NAN);
                let amount = self
                    .layout
                    .decode_bills(&alone, 1)
                    .map_err(|e| format!("the decrypted bill is out of range: {e}"))?
                    .first()
                    .copied()
                    .ok_or_else(|| "no bill decoded".to_owned())?;
                check_bill(self.layout.tariff(), &cells, amount)?;
                Ok(HomeBill {
                    amount,
                    cell_wh: cells,
                })
            })
            .collect();
        Ok(GroupDecision {
            homes: decided,
            result_verified,
        })
    }
}

/// Checks the decrypted slots of one closing lane of the home at `position`: every slot
/// outside the home's cells (other homes' blocks, and the padding of its own block) within
/// [`SLOT_TOLERANCE_WH`] of 0, and each cell within it of a non-negative whole number of Wh
/// not above [`MAX_CELL_WH`]. Returns the cells rounded to whole Wh.
///
/// # Errors
/// The refusal reason. It names slots and cells, never a decrypted value.
pub fn check_lane_slots(
    layout: &BillingLayout,
    slots: &[f64],
    position: usize,
) -> Result<Vec<u64>, String> {
    if slots.len() != layout.slots() {
        return Err(format!(
            "the lane decrypts to {} slots, the layout has {}",
            slots.len(),
            layout.slots()
        ));
    }
    if position >= layout.capacity() {
        return Err(format!(
            "position {position} lies outside the layout's {} homes",
            layout.capacity()
        ));
    }
    let block = layout.block_width();
    let cells = layout.tariff().cell_count();
    let base = position * block;
    let own = base..base + cells;
    let outside = slots
        .iter()
        .enumerate()
        .find(|(i, v)| !own.contains(i) && (v.is_nan() || v.abs() > SLOT_TOLERANCE_WH));
    if let Some((slot, _)) = outside {
        let (owner, offset) = (slot / block, slot % block);
        return Err(if owner == position {
            format!(
                "the lane writes outside its block's cells (padding slot {offset} of its own \
                 block, position {position}, is not zero)"
            )
        } else {
            format!(
                "the lane writes outside its block (position {position}): slot {slot}, in \
                 the block of position {owner}, is not zero"
            )
        });
    }
    slots[own]
        .iter()
        .enumerate()
        .map(|(cell, &value)| {
            let whole = value.round();
            if !value.is_finite() || (value - whole).abs() > SLOT_TOLERANCE_WH {
                Err(format!(
                    "cell {cell} of the lane is not a whole number of Wh"
                ))
            } else if whole < 0.0 {
                Err(format!("cell {cell} of the lane is negative"))
            } else if whole > MAX_CELL_WH as f64 {
                Err(format!(
                    "cell {cell} of the lane exceeds {MAX_CELL_WH} Wh, beyond any domestic \
                     month"
                ))
            } else {
                // A whole number in 0..=MAX_CELL_WH: exact as an integer.
                Ok(whole as u64)
            }
        })
        .collect()
}

/// Checks that the plaintext tariff on the decrypted `cells` (exact integer arithmetic) gives
/// `homomorphic`, the bill the circuit produced for the same home.
///
/// # Errors
/// The refusal reason (without the amounts).
pub fn check_bill(tariff: &Tariff, cells: &[u64], homomorphic: Paise) -> Result<(), String> {
    let wh = cells
        .iter()
        .map(|&c| i64::try_from(c).ok().and_then(|c| Wh::try_new(c).ok()))
        .collect::<Option<Vec<Wh>>>()
        .ok_or("a cell is out of range")?;
    let plaintext = CellEnergy::try_from_cells(tariff, wh)
        .and_then(|cells| tariff.bill_cells(&cells))
        .map_err(|e| format!("the decrypted cells do not fit the tariff: {e}"))?
        .total();
    if plaintext == homomorphic {
        Ok(())
    } else {
        Err(
            "the homomorphic bill differs from the plaintext tariff on the lane's decrypted \
             cells"
                .to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seer_ckks::{CkksContext, ParameterSet};

    fn layout(tariff: &Tariff) -> BillingLayout {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
        BillingLayout::try_new(tariff, &ctx).expect("layout")
    }

    fn slots_with(layout: &BillingLayout, position: usize, cells: &[f64]) -> Vec<f64> {
        let mut slots = vec![0.0; layout.slots()];
        let base = position * layout.block_width();
        slots[base..base + cells.len()].copy_from_slice(cells);
        slots
    }

    #[test]
    fn honest_slots_give_their_rounded_cells() {
        let layout = layout(&Tariff::bescom());
        let mut slots = slots_with(&layout, 5, &[50_000.0000004, 12_345.9999996, 0.0, 7.0]);
        // Noise of the size a fresh encryption leaves everywhere else.
        for (i, v) in slots.iter_mut().enumerate() {
            *v += if i % 2 == 0 { 3e-7 } else { -3e-7 };
        }
        assert_eq!(
            check_lane_slots(&layout, &slots, 5),
            Ok(vec![50_000, 12_346, 0, 7])
        );
    }

    /// Real fresh encryptions decrypt far inside the tolerance: the margin the checks rely on.
    #[test]
    fn fresh_lanes_decrypt_a_hundred_times_inside_the_tolerance() {
        use seer_ckks::{Decryptor, Encryptor, KeyGenerator};
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
        let layout = BillingLayout::try_new(&Tariff::bescom(), &ctx).expect("layout");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("enc");
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("dec");
        let mut worst: f64 = 0.0;
        for (position, cells) in [
            (0, [50_000.0, 50_000.0, 100_000.0, 9_999_999.0]),
            (1023, [0.0, 0.0, 0.0, 0.0]),
            (517, [12_345.0, 0.0, 0.0, 0.0]),
        ] {
            let slots = slots_with(&layout, position, &cells);
            let ct = encryptor.encrypt_values(&slots).expect("encrypt");
            let back = decryptor.decrypt_values(&ct).expect("decrypt");
            worst = back
                .iter()
                .zip(&slots)
                .map(|(b, s)| (b - s).abs())
                .fold(worst, f64::max);
            let expected: Vec<u64> = cells.iter().map(|&c| c as u64).collect();
            assert_eq!(check_lane_slots(&layout, &back, position), Ok(expected));
        }
        eprintln!("largest decryption error of a fresh lane: {worst:e} Wh");
        assert!(worst < SLOT_TOLERANCE_WH / 100.0, "{worst}");
    }

    #[test]
    fn writes_outside_the_block_are_refused_naming_no_value() {
        let layout = layout(&Tariff::bescom());
        let mut slots = slots_with(&layout, 5, &[100.0, 0.0, 0.0, 0.0]);
        // Into the neighbour's first cell.
        slots[6 * 4] = 250.0;
        let reason = check_lane_slots(&layout, &slots, 5).expect_err("outside");
        assert!(reason.contains("writes outside its block"), "{reason}");
        assert!(reason.contains("position 6"), "{reason}");
        assert!(!reason.contains("250"), "{reason}");
        // Far away, and just above the tolerance.
        let mut slots = slots_with(&layout, 5, &[100.0, 0.0, 0.0, 0.0]);
        slots[4000] = -2.0 * SLOT_TOLERANCE_WH;
        assert!(
            check_lane_slots(&layout, &slots, 5)
                .expect_err("outside")
                .contains("writes outside its block")
        );
        // The same slots are fine for the home whose block they are.
        let slots = slots_with(&layout, 6, &[250.0, 0.0, 0.0, 0.0]);
        assert_eq!(check_lane_slots(&layout, &slots, 6), Ok(vec![250, 0, 0, 0]));
        assert!(check_lane_slots(&layout, &slots, 5).is_err());
    }

    #[test]
    fn padding_slots_of_the_own_block_must_be_zero() {
        // Three slabs: a block of four slots, the last one padding.
        let tariff = three_slabs();
        let layout = layout(&tariff);
        assert_eq!(layout.block_width(), 4);
        let mut slots = slots_with(&layout, 2, &[1.0, 2.0, 3.0]);
        assert_eq!(check_lane_slots(&layout, &slots, 2), Ok(vec![1, 2, 3]));
        slots[2 * 4 + 3] = 10.0;
        let reason = check_lane_slots(&layout, &slots, 2).expect_err("padding");
        assert!(reason.contains("outside its block's cells"), "{reason}");
    }

    #[test]
    fn cells_must_be_non_negative_whole_and_plausible() {
        let layout = layout(&Tariff::bescom());
        for (cells, expected) in [
            ([100.5, 0.0, 0.0, 0.0], "not a whole number"),
            ([100.01, 0.0, 0.0, 0.0], "not a whole number"),
            ([0.0, -3.0, 0.0, 0.0], "negative"),
            ([0.0, 0.0, f64::NAN, 0.0], "not a whole number"),
            (
                [0.0, 0.0, 0.0, (MAX_CELL_WH + 1) as f64],
                "exceeds 10000000 Wh",
            ),
        ] {
            let slots = slots_with(&layout, 0, &cells);
            let reason = check_lane_slots(&layout, &slots, 0).expect_err(expected);
            assert!(reason.contains(expected), "{cells:?}: {reason}");
        }
        let slots = slots_with(&layout, 0, &[0.0, 0.0, 0.0, MAX_CELL_WH as f64]);
        assert_eq!(
            check_lane_slots(&layout, &slots, 0),
            Ok(vec![0, 0, 0, MAX_CELL_WH])
        );
    }

    #[test]
    fn the_bill_check_is_the_plaintext_tariff_to_the_paisa() {
        let tariff = Tariff::bescom();
        // 50 kWh at 4.15 + 50 at 5.60 + 12.345 at 7.15 = 207.50 + 280.00 + 88.26675.
        let cells = [50_000, 50_000, 12_345, 0];
        let exact = Paise::new(20_750 + 28_000 + 8_827);
        assert_eq!(check_bill(&tariff, &cells, exact), Ok(()));
        for wrong in [exact.get() - 1, exact.get() + 1, 0] {
            let reason = check_bill(&tariff, &cells, Paise::new(wrong)).expect_err("differs");
            assert!(
                reason.contains("differs from the plaintext tariff"),
                "{reason}"
            );
        }
        assert!(check_bill(&tariff, &cells[..3], exact).is_err());
    }

    fn three_slabs() -> Tariff {
        use seer_core::tariff::{SlabConfig, TariffConfig};
        let slab = |up_to_kwh, rate_paise| SlabConfig {
            up_to_kwh,
            rate_paise,
        };
        Tariff::try_new(TariffConfig {
            name: "three slabs".into(),
            slabs: vec![
                slab(Some(50.0), 400),
                slab(Some(100.0), 500),
                slab(None, 600),
            ],
            bands: Vec::new(),
        })
        .expect("valid tariff")
    }
}
