//! The homomorphic tiered bill, packed many homes per ciphertext, beside its plaintext twin.
//!
//! # The computation
//!
//! Comparisons are expensive and inexact under CKKS, so the slab logic runs on the meter, in the
//! clear, on the meter's own data: a [`SlabAccumulator`](crate::tariff::SlabAccumulator)
//! splits each reading into (slab, time-of-use band) cells by the period's running total. What
//! is encrypted is a batch's whole Wh per cell (exact integers in the slots). The bill is then
//! linear in the encrypted values:
//!
//! ```text
//! bill(home) = Σ_cells rate[cell] × Σ_batches Wh[batch][cell]     (rates in ₹ per Wh)
//! ```
//!
//! # Layout: many homes per ciphertext
//!
//! A [`BillingLayout`] gives every home of a **packing group** its own block of
//! `block_width = cell_count.next_power_of_two()` consecutive slots; a group holds
//! `capacity = slots / block_width` homes (1024 homes for the BESCOM slabs at n = 8192: 4 cells,
//! 4 slots per home, 4096 slots). Home `i` of the deployment is position `i % capacity` of group
//! `i / capacity` ([`BillingLayout::locate`]). A meter encrypts each batch as a full slot vector
//! with its cells at its block ([`BillingLayout::encode_batch`]) and zeros elsewhere, so the
//! ciphertexts of all homes of a group add up. The server, per group and period
//! ([`BillingLayout::evaluate`], or incrementally with a [`GroupAccumulator`] as lanes arrive):
//!
//! 1. multiplies each lane by the 0/1 **indicator of its own home's cells**
//!    ([`BillingLayout::cell_mask`]: 1 on the cells of the block at the home's position, 0 on
//!    every other slot, its own padding included) and adds the products; one rescale for the
//!    whole group (one level). This is what keeps homes apart: whatever a lane holds outside
//!    its home's cells — a neighbour's block, padding, anything — is multiplied by zero inside
//!    the registered circuit, so no home can shift another's bill and nobody needs to look
//!    into a lane to check it. The sum is the **cells output** ([`BillOutputs::cells`]): each
//!    home's period Wh per cell at its block;
//! 2. multiplies the cells output by the plaintext rate vector — each cell's rate in ₹ per Wh,
//!    repeated in every block, zero in padding slots (one level);
//! 3. sums each block with `log2(block_width)` rotations ([`Evaluator::sum_slots`]), which puts
//!    each home's bill in its block's first slot (no level): the **bills output**
//!    ([`BillOutputs::bills`]). Its other slots hold sums of neighbouring homes' charged cells —
//!    functions of the cells output, which the key authority decrypts anyway — and are never
//!    released.
//!
//! The key authority decrypts these two outputs of its own re-execution, never a lane, and
//! applies the computation's **release rule** ([`BillingLayout::release_home`]): it judges each
//! home's validity on the decrypted cells ([`BillingLayout::decode_cells`]: whole,
//! non-negative, plausible Wh) and requires the plaintext tariff on them to give the bills
//! output's paisa ([`check_bill`]); what leaves is a [`HomeBill`], a refusal is a typed
//! [`Refusal`] that names no value.
//!
//! The rotations need Galois keys for [`BillingLayout::galois_steps`] only (1 and 2 for the
//! BESCOM slabs); no relinearization keys are needed.
//!
//! # Parameters: [`PARAMETER_SET`] = n = 8192, 2 levels, 128-bit security
//!
//! The circuit consumes exactly two levels (the cell indicators, the rates), which is what
//! `N8192_L2_SEC128` has, and it is the smallest 128-bit set with two levels: n = 16384 would
//! quadruple the cost of every operation and halve nothing. Its 4096 slots pack 1024 homes of
//! a 4-cell tariff per ciphertext. Results are worked in rupees, not paise: at level 0 a slot
//! must stay below about 2¹⁹ (the engine's `max_result_magnitude`, 60-bit `q0` with 40-bit
//! scale), and [`BillingLayout::max_bill_rupees`] keeps a factor 2 of headroom, so bills up to
//! ₹262,144 per home and period are representable (some 32,000 kWh a month at ₹8.20; no
//! domestic meter comes close). The meter refuses to encode a batch whose charge alone exceeds
//! it; a period total beyond it would wrap modulo `q0` and is caught as out of range on decoding
//! with high probability, not with certainty.
//!
//! # Precision and rounding
//!
//! Every exact bill is a whole multiple of the tariff's amount quantum
//! ([`Tariff::amount_quantum`]: ₹0.00005 for the BESCOM slabs, ₹0.00001 with 120 % and 80 %
//! bands). The CKKS error of this circuit is a few 10⁻⁷ rupee (measured up to ₹4·10⁻⁶ over a
//! full group of 31,744 batches; it comes from the fresh-encryption noise of every added ciphertext, which grows
//! with the square root of their number, and from the encoding precision of the rates at the
//! engine's 2⁴⁰ scale). Slots hold whole Wh rather than kWh: exact integers, and a smaller
//! share of fresh noise per rupee. That error is far below ₹0.005 and below half a quantum.
//! Decoding
//! ([`BillingLayout::decode_bills`]) therefore first snaps the decrypted value to the nearest
//! multiple of the quantum — which recovers the exact amount — and then rounds to the paisa
//! with the plaintext bill's rule (halves up, [`ExactAmount::round_to_paise`]). Decrypted bills
//! thus round to the same paisa as the plaintext bill even when the exact amount ends in half a
//! paisa, where a plain rounding of a noisy value could go either way.
//!
//! In the deployed system decryption and this decoding happen **at the key authority**, which
//! releases only the rounded paise (never the raw decrypted slots: CKKS decryptions leak
//! information about the secret key, Li–Micciancio 2021). The raw values
//! ([`BillingLayout::decode_raw`]) are for diagnostics and tests.
//!
//! # Cost
//!
//! The server touches each batch ciphertext once (an addition, about 55 µs at n = 8192 on the
//! development machine); steps 2–4 run once per group, shared by up to `capacity` homes. The
//! amortized server time per home-month is therefore dominated by the number of batch
//! ciphertexts a home sends per period; see `benches/billing.rs`
//! (31 daily batches per home: about 1.7 ms per home-month; one batch per home and period:
//! about 0.06 ms). SEER's meters therefore encrypt their period-to-date cells
//! ([`SlabAccumulator::period_cells`](crate::tariff::SlabAccumulator::period_cells)) at each
//! batch close, and the bill of a period is computed from each home's closing batch only
//! (one batch per home: the 0.06 ms case; never two batches of one home, which would be
//! counted twice). The circuit itself sums whatever batches it is given, so it also serves
//! per-batch lanes.
//!
//! # The plaintext twin
//!
//! [`plaintext_bill`] computes the same bill with exact integers from the same per-cell batches;
//! [`Tariff::bill`] computes it from the raw readings. The tests check the circuit against both.

use seer_ckks::{
    Ciphertext, CkksContext, Encryptor, Evaluator, Level, ParameterSet, steps_for_sum,
};

use crate::circuits::isolation::{MaskedSum, indicator};
use crate::error::Error;
use crate::registered::Refusal;
use crate::tariff::{Bill, CellEnergy, ExactAmount, Paise, Tariff};
use crate::units::Wh;

/// The parameter set the billing circuit is designed for (see the
/// [module documentation](self#parameters-parameter_set--n--8192-2-levels-128-bit-security)).
pub const PARAMETER_SET: ParameterSet = ParameterSet::N8192_L2_SEC128;

/// The rescale levels the circuit consumes: one for the cell indicators, one for the rates.
pub const LEVELS_USED: u32 = 2;

/// How far, in Wh, a decrypted cell of an honest home may lie from a whole number of Wh.
///
/// A fresh encryption decrypts to within about 10⁻⁸ Wh of what was encrypted, and the cell
/// indicator adds an encoding error of the same order (measured by the tests), so honest
/// cells pass with orders of magnitude to spare; a cell that is not within this of a whole
/// number was not encrypted by an honest meter (or the key is wrong).
pub const CELL_TOLERANCE_WH: f64 = 1e-3;

/// The largest energy, in Wh, one tariff cell of one period may hold: 10 MWh, some 13 kW
/// around the clock for a month, beyond any domestic connection. A decrypted cell above it is
/// refused as implausible (and every released value stays far inside the circuit's exact
/// range).
pub const MAX_CELL_WH: u64 = 10_000_000;

/// The two outputs of the billing circuit for one group (see the
/// [module documentation](self#layout-many-homes-per-ciphertext)).
#[derive(Debug)]
pub struct BillOutputs {
    /// Each home's Wh per tariff cell at its block (level `LEVELS_USED − 1`), nothing else.
    pub cells: Ciphertext,
    /// Each home's bill in rupees at its block's first slot (level `LEVELS_USED − 2`).
    pub bills: Ciphertext,
}

/// Where a home's block lies: its packing group and its position in that group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HomeSlot {
    /// The packing group (one ciphertext per group and period).
    pub group: usize,
    /// The position within the group, `0 .. capacity`.
    pub position: usize,
}

/// The slot layout of the billing circuit for one tariff and one CKKS parameter set.
///
/// See the [module documentation](self#layout-many-homes-per-ciphertext).
#[derive(Clone, Debug)]
pub struct BillingLayout {
    tariff: Tariff,
    parameter_set_id: String,
    slots: usize,
    block_width: usize,
    capacity: usize,
    max_bill_rupees: f64,
    quantum: ExactAmount,
    rates: Vec<f64>,
}

impl BillingLayout {
    /// The layout of `tariff` in `ctx`'s slots. Fails if the context has fewer than
    /// [`LEVELS_USED`] levels, if a block does not fit the slots, or if every rate is zero (the
    /// product with an all-zero plaintext would be a transparent ciphertext).
    pub fn try_new(tariff: &Tariff, ctx: &CkksContext) -> Result<Self, Error> {
        let params = ctx.parameter_set();
        if params.levels() < LEVELS_USED {
            return Err(Error::BillingLayout {
                reason: format!(
                    "parameter set {} has {} levels, the billing circuit needs {LEVELS_USED}",
                    ctx.parameter_set_id(),
                    params.levels()
                ),
            });
        }
        let slots = ctx.slots();
        let cells = tariff.cell_count();
        let block_width = cells.next_power_of_two();
        if block_width > slots {
            return Err(Error::BillingLayout {
                reason: format!("{cells} tariff cells do not fit {slots} slots"),
            });
        }
        let quantum = tariff.amount_quantum();
        if quantum == ExactAmount::ZERO {
            return Err(Error::InvalidTariff {
                location: "slabs".into(),
                reason: "every rate is zero: there is nothing to bill".into(),
            });
        }
        let capacity = slots / block_width;
        let rates = (0..slots)
            .map(|s| {
                let cell = s % block_width;
                if cell < cells {
                    tariff.cell_units_per_wh(cell) as f64 / ExactAmount::UNITS_PER_RUPEE as f64
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            tariff: tariff.clone(),
            parameter_set_id: ctx.parameter_set_id().to_owned(),
            slots,
            block_width,
            capacity,
            max_bill_rupees: params.max_result_magnitude() / 2.0,
            quantum,
            rates,
        })
    }

    /// The tariff.
    pub fn tariff(&self) -> &Tariff {
        &self.tariff
    }

    /// The id of the parameter set the layout was built for.
    pub fn parameter_set_id(&self) -> &str {
        &self.parameter_set_id
    }

    /// Slots per ciphertext.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slots per home: the tariff's cell count rounded up to a power of two.
    pub fn block_width(&self) -> usize {
        self.block_width
    }

    /// Homes per packing group (per ciphertext).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest bill, in rupees, the circuit represents with headroom (half the level-0
    /// range).
    pub fn max_bill_rupees(&self) -> f64 {
        self.max_bill_rupees
    }

    /// The group and position of the `home`-th home of a deployment (homes numbered from 0).
    pub fn locate(&self, home: usize) -> HomeSlot {
        HomeSlot {
            group: home / self.capacity,
            position: home % self.capacity,
        }
    }

    /// The number of packing groups (ciphertexts per period) `homes` homes need.
    pub fn groups_for(&self, homes: usize) -> usize {
        homes.div_ceil(self.capacity)
    }

    /// The rotation steps the server needs Galois keys for (`1, 2, 4, …, block_width / 2`) —
    /// and no others.
    pub fn galois_steps(&self) -> Vec<i64> {
        steps_for_sum(self.block_width)
            .into_iter()
            .map(i64::from)
            .collect()
    }

    /// The plaintext rate vector: each cell's rate in ₹ per Wh at its slot in every block,
    /// zero in padding slots.
    pub fn rate_vector(&self) -> &[f64] {
        &self.rates
    }

    /// The slots of the cells of the home at `position` (its block's first
    /// `cell_count` slots; the block's padding excluded).
    pub fn cell_range(&self, position: usize) -> Result<std::ops::Range<usize>, Error> {
        if position >= self.capacity {
            return Err(Error::HomeOutsideGroup {
                position,
                capacity: self.capacity,
            });
        }
        let base = position * self.block_width;
        Ok(base..base + self.tariff.cell_count())
    }

    /// The indicator of the cells of the home at `position`: 1 on its block's cell slots, 0
    /// on every other slot (other blocks, and its own block's padding). Each lane is
    /// multiplied by its home's indicator inside the circuit.
    pub fn cell_mask(&self, position: usize) -> Result<Vec<f64>, Error> {
        indicator(self.slots, self.cell_range(position)?)
    }

    /// Decoding at the key authority: the cells of the home at `position` from the decrypted
    /// cells output, as whole Wh — each within [`CELL_TOLERANCE_WH`] of a whole number, not
    /// negative, not above [`MAX_CELL_WH`]. The error names the cell and the problem, never a
    /// value.
    pub fn decode_cells(&self, slots: &[f64], position: usize) -> Result<Vec<u64>, Error> {
        if slots.len() != self.slots {
            return Err(Error::BillingLayout {
                reason: format!(
                    "{} decrypted slots for a layout of {}",
                    slots.len(),
                    self.slots
                ),
            });
        }
        slots[self.cell_range(position)?]
            .iter()
            .enumerate()
            .map(|(cell, &value)| {
                let whole = value.round();
                let problem = if !value.is_finite() || (value - whole).abs() > CELL_TOLERANCE_WH {
                    Some("is not a whole number of Wh")
                } else if whole < 0.0 {
                    Some("is negative")
                } else if whole > MAX_CELL_WH as f64 {
                    Some("exceeds 10000000 Wh, beyond any domestic period")
                } else {
                    None
                };
                match problem {
                    Some(problem) => Err(Error::ImplausibleCell {
                        position,
                        cell,
                        problem,
                    }),
                    // A whole number in 0..=MAX_CELL_WH: exact as an integer.
                    None => Ok(whole as u64),
                }
            })
            .collect()
    }

    /// The meter side: the slot vector (length [`slots`](Self::slots)) for one batch of the
    /// home at `position` in its group — its cells in whole Wh at its block, zeros elsewhere.
    pub fn encode_batch(&self, position: usize, cells: &CellEnergy) -> Result<Vec<f64>, Error> {
        if position >= self.capacity {
            return Err(Error::HomeOutsideGroup {
                position,
                capacity: self.capacity,
            });
        }
        self.tariff.check_shape(cells)?;
        let charge = self.tariff.bill_cells(cells)?.amount().to_rupees();
        if charge > self.max_bill_rupees {
            return Err(Error::BillOutOfRange {
                position,
                value: charge,
                limit: self.max_bill_rupees,
            });
        }
        let mut slots = vec![0.0; self.slots];
        let base = position * self.block_width;
        for (i, wh) in cells.cells().iter().enumerate() {
            // Whole Wh, exact in an f64 (below 2^53).
            slots[base + i] = wh.get() as f64;
        }
        Ok(slots)
    }

    /// The meter side: encodes ([`encode_batch`](Self::encode_batch)) and encrypts one batch
    /// with the published public key.
    pub fn encrypt_batch(
        &self,
        encryptor: &Encryptor,
        position: usize,
        cells: &CellEnergy,
    ) -> Result<Ciphertext, Error> {
        Ok(encryptor.encrypt_values(&self.encode_batch(position, cells)?)?)
    }

    /// The server side: the outputs of one packing group for one period, from every lane
    /// ciphertext of every home of the group in that period, each with its home's position (in
    /// any order). See [`BillOutputs`].
    pub fn evaluate<'a, I>(&self, evaluator: &Evaluator, lanes: I) -> Result<BillOutputs, Error>
    where
        I: IntoIterator<Item = (usize, &'a Ciphertext)>,
    {
        let mut acc = GroupAccumulator::new(self, evaluator)?;
        for (position, ct) in lanes {
            acc.add(position, ct)?;
        }
        acc.finish()
    }

    /// Decoding at the key authority: each of the first `homes` homes' bill rounded to the
    /// paisa (snapped to the tariff's amount quantum first; see the
    /// [module documentation](self#precision-and-rounding)).
    pub fn decode_bills(&self, slots: &[f64], homes: usize) -> Result<Vec<Paise>, Error> {
        Ok(self
            .decode_raw(slots, homes)?
            .into_iter()
            .map(|raw| self.snap_to_paise(raw))
            .collect())
    }

    /// The bill of the home at `position` from the decrypted bills output, rounded to the
    /// paisa as [`decode_bills`](Self::decode_bills) does.
    pub fn decode_bill_at(&self, slots: &[f64], position: usize) -> Result<Paise, Error> {
        Ok(self.snap_to_paise(self.decode_raw_at(slots, position)?))
    }

    /// A raw bill (already checked to lie in `-0.005 ..= max_bill_rupees()`) snapped to the
    /// tariff's amount quantum, then rounded to the paisa.
    fn snap_to_paise(&self, raw: f64) -> Paise {
        let q = self.quantum.units();
        let k = (raw * ExactAmount::UNITS_PER_RUPEE as f64 / q as f64).round();
        // raw is bounded, so k fits an i128.
        let k = (k as i128).max(0);
        ExactAmount::from_units(k * q).round_to_paise()
    }

    /// The first `homes` homes' raw decrypted bills in rupees, checked to be finite and within
    /// `-0.005 ..= max_bill_rupees()` (anything else means a wrong key, a corrupted or foreign
    /// ciphertext, or a bill beyond the circuit's range).
    pub fn decode_raw(&self, slots: &[f64], homes: usize) -> Result<Vec<f64>, Error> {
        if homes > self.capacity {
            return Err(Error::HomeOutsideGroup {
                position: homes - 1,
                capacity: self.capacity,
            });
        }
        (0..homes)
            .map(|position| self.decode_raw_at(slots, position))
            .collect()
    }

    /// The raw decrypted bill of the home at `position`, checked as in
    /// [`decode_raw`](Self::decode_raw).
    fn decode_raw_at(&self, slots: &[f64], position: usize) -> Result<f64, Error> {
        if slots.len() != self.slots {
            return Err(Error::BillingLayout {
                reason: format!(
                    "{} decrypted slots for a layout of {}",
                    slots.len(),
                    self.slots
                ),
            });
        }
        if position >= self.capacity {
            return Err(Error::HomeOutsideGroup {
                position,
                capacity: self.capacity,
            });
        }
        let value = slots[position * self.block_width];
        if value.is_finite() && (-0.005..=self.max_bill_rupees).contains(&value) {
            Ok(value)
        } else {
            Err(Error::BillOutOfRange {
                position,
                value,
                limit: self.max_bill_rupees,
            })
        }
    }
}

/// The server side, incrementally: masks and adds a group's lane ciphertexts as they arrive,
/// then [`finish`](Self::finish)es the bills at the close of the period.
#[derive(Debug)]
pub struct GroupAccumulator<'a> {
    layout: &'a BillingLayout,
    evaluator: &'a Evaluator,
    sum: MaskedSum<'a>,
}

impl<'a> GroupAccumulator<'a> {
    /// An empty accumulator; fails if the evaluator's parameter set is not the layout's.
    pub fn new(layout: &'a BillingLayout, evaluator: &'a Evaluator) -> Result<Self, Error> {
        let id = evaluator.context().parameter_set_id();
        if id != layout.parameter_set_id {
            return Err(Error::BillingLayout {
                reason: format!(
                    "evaluator for parameter set {id}, layout for {}",
                    layout.parameter_set_id
                ),
            });
        }
        Ok(Self {
            layout,
            evaluator,
            sum: MaskedSum::new(evaluator),
        })
    }

    /// Adds one lane ciphertext of the home at `position`, multiplied by that home's cell
    /// indicator ([`BillingLayout::cell_mask`]; the products are rescaled once, in
    /// [`finish`](Self::finish)).
    pub fn add(&mut self, position: usize, batch: &Ciphertext) -> Result<(), Error> {
        let cells = self.layout.cell_range(position)?;
        if batch.level() < Level(LEVELS_USED) {
            return Err(seer_ckks::CkksError::LevelExhausted {
                needed: LEVELS_USED,
                available: batch.level().0,
            }
            .into());
        }
        if batch.level() > Level(LEVELS_USED) {
            // Larger parameter sets: drop to the levels the circuit needs (cheaper, exact).
            let lower = self.evaluator.mod_switch_to(batch, Level(LEVELS_USED))?;
            self.sum.add(cells, &lower)
        } else {
            self.sum.add(cells, batch)
        }
    }

    /// The number of lanes added.
    pub fn batches(&self) -> usize {
        self.sum.inputs()
    }

    /// The outputs: the rescaled sum of the masked lanes (cells), charged and summed per block
    /// (bills); see the [module documentation](self#layout-many-homes-per-ciphertext). Fails
    /// if no lane was added.
    pub fn finish(self) -> Result<BillOutputs, Error> {
        if self.sum.inputs() == 0 {
            return Err(Error::BillingLayout {
                reason: "no lane ciphertexts to bill".into(),
            });
        }
        let ev = self.evaluator;
        let cells = self.sum.finish()?;
        let charged = ev.multiply_plain(&cells, &self.layout.rates)?;
        let bills = ev.sum_slots(&charged, self.layout.block_width)?;
        Ok(BillOutputs { cells, bills })
    }
}

/// What the billing computation releases for one home: the bill its two outputs agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeBill {
    /// The homomorphic bill, rounded to the paisa; equal to the plaintext tariff on
    /// [`cell_wh`](Self::cell_wh).
    pub amount: Paise,
    /// The period's energy per tariff cell, whole Wh, in the tariff's cell order.
    pub cell_wh: Vec<u64>,
}

impl BillingLayout {
    /// The billing computation's release rule for the home at `position`, from the decrypted
    /// cells and bills outputs (every slot of each): its cells must be plausible whole Wh
    /// ([`decode_cells`](Self::decode_cells)), its bill must lie within the circuit's range
    /// ([`decode_bill_at`](Self::decode_bill_at)), and the plaintext tariff on its cells must
    /// give that bill to the paisa ([`check_bill`]).
    ///
    /// # Errors
    /// [`Refusal::ImplausibleOutput`] with the reason (no amount named).
    pub fn release_home(
        &self,
        cells: &[f64],
        bills: &[f64],
        position: usize,
    ) -> Result<HomeBill, Refusal> {
        let cell_wh =
            self.decode_cells(cells, position)
                .map_err(|e| Refusal::ImplausibleOutput {
                    reason: format!("the decrypted result is implausible: {e}"),
                })?;
        let amount =
            self.decode_bill_at(bills, position)
                .map_err(|_| Refusal::ImplausibleOutput {
                    reason: "the decrypted bill lies outside the circuit's range".to_owned(),
                })?;
        check_bill(self.tariff(), &cell_wh, amount)?;
        Ok(HomeBill { amount, cell_wh })
    }
}

/// Checks that the plaintext tariff on the decrypted `cells` (exact integer arithmetic) gives
/// `homomorphic`, the bill the circuit's bills output holds for the same home: the last step
/// of [`BillingLayout::release_home`].
///
/// # Errors
/// [`Refusal::ImplausibleOutput`] (without the amounts).
pub fn check_bill(tariff: &Tariff, cells: &[u64], homomorphic: Paise) -> Result<(), Refusal> {
    let implausible = |reason: String| Refusal::ImplausibleOutput { reason };
    let wh = cells
        .iter()
        .map(|&c| i64::try_from(c).ok().and_then(|c| Wh::try_new(c).ok()))
        .collect::<Option<Vec<Wh>>>()
        .ok_or_else(|| implausible("a cell is out of range".to_owned()))?;
    let plaintext = CellEnergy::try_from_cells(tariff, wh)
        .and_then(|cells| tariff.bill_cells(&cells))
        .map_err(|e| implausible(format!("the decrypted cells do not fit the tariff: {e}")))?
        .total();
    if plaintext == homomorphic {
        Ok(())
    } else {
        Err(implausible(
            "the homomorphic bill differs from the plaintext tariff on the home's decrypted \
             cells"
                .to_owned(),
        ))
    }
}

/// The plaintext twin of the circuit for one home: adds the home's batches cell by cell and
/// charges the sum with exact integer arithmetic ([`Tariff::bill_cells`]).
pub fn plaintext_bill<'a, I>(tariff: &Tariff, batches: I) -> Result<Bill, Error>
where
    I: IntoIterator<Item = &'a CellEnergy>,
{
    let mut total = CellEnergy::zeros(tariff);
    for batch in batches {
        total.try_add(batch)?;
    }
    tariff.bill_cells(&total)
}

#[cfg(test)]
mod release_tests {
    use super::*;

    #[test]
    fn the_bill_check_is_the_plaintext_tariff_to_the_paisa() {
        let tariff = Tariff::bescom();
        // 50 kWh at 4.15 + 50 at 5.60 + 12.345 at 7.15 = 207.50 + 280.00 + 88.26675.
        let cells = [50_000, 50_000, 12_345, 0];
        let exact = Paise::new(20_750 + 28_000 + 8_827);
        assert_eq!(check_bill(&tariff, &cells, exact), Ok(()));
        for wrong in [exact.get() - 1, exact.get() + 1, 0] {
            let reason = check_bill(&tariff, &cells, Paise::new(wrong))
                .expect_err("differs")
                .to_string();
            assert!(
                reason.contains("differs from the plaintext tariff"),
                "{reason}"
            );
            assert!(
                !reason.contains(&wrong.to_string()),
                "names no amount: {reason}"
            );
        }
        assert!(check_bill(&tariff, &cells[..3], exact).is_err());
    }

    #[test]
    fn the_release_rule_reads_a_home_at_its_position_and_refuses_implausible_slots() {
        let ctx = CkksContext::new(PARAMETER_SET).expect("context");
        let tariff = Tariff::bescom();
        let layout = BillingLayout::try_new(&tariff, &ctx).expect("layout");
        let width = layout.block_width();
        let position = 3;
        let cells_wh = [50_000u64, 50_000, 12_345, 0];
        let mut cells = vec![0.0; layout.slots()];
        for (i, c) in cells_wh.iter().enumerate() {
            // Decrypted slots carry CKKS error: well below half a Wh.
            cells[position * width + i] = *c as f64 + 1e-4;
        }
        let exact = Paise::new(20_750 + 28_000 + 8_827);
        let mut bills = vec![0.0; layout.slots()];
        // The bills output in rupees: the exact amount ₹575.76675 (the quantum recovers it).
        bills[position * width] = 575.766_75 + 1e-7;
        let released = layout
            .release_home(&cells, &bills, position)
            .expect("released");
        assert_eq!(released.cell_wh, cells_wh.to_vec());
        assert_eq!(released.amount, exact);
        // The next home's block holds nothing: a home without consumption, billed zero.
        assert_eq!(
            layout.release_home(&cells, &bills, position + 1),
            Ok(HomeBill {
                amount: Paise::new(0),
                cell_wh: vec![0; cells_wh.len()],
            })
        );
        // A bill the tariff on the cells does not give is refused.
        let mut wrong = bills.clone();
        wrong[position * width] += 0.05;
        assert!(matches!(
            layout.release_home(&cells, &wrong, position),
            Err(Refusal::ImplausibleOutput { .. })
        ));
        // A cell that is no whole Wh is refused.
        let mut fractional = cells.clone();
        fractional[position * width] += 0.4;
        assert!(layout.release_home(&fractional, &bills, position).is_err());
    }
}
