//! Block isolation inside a registered circuit: several meters' inputs summed into one
//! ciphertext, each multiplied first by the 0/1 indicator of the slots it may write, beside its
//! plaintext twin.
//!
//! Meters encrypt their values at their own block of slots (zeros elsewhere), so the inputs of
//! many meters add up into one ciphertext that a circuit evaluates slot-parallel. Nothing in a
//! ciphertext proves that a meter left the other slots at zero, and nobody may decrypt an input
//! to check: the key authority decrypts only the outputs of registered computations. So every
//! registered circuit that combines meters first multiplies each input by the indicator of its
//! meter's block (one plaintext multiplication per input, one rescale for the sum: one level).
//! Whatever a meter writes outside its block is multiplied by zero; it can change its own
//! results only. Both the utility and the key authority run this same code, so the key
//! authority's re-execution stays byte-identical to the utility's evaluation.
//!
//! The billing circuit ([`super::billing`]) masks each lane to its home's tariff cells with the
//! same accumulator; the deep analytics computations mask each meter's inputs to its slot
//! block when their depth leaves a level for it.

use std::ops::Range;

use seer_ckks::{Ciphertext, Evaluator};

use crate::error::Error;
use crate::vocab::SlotBlock;

/// The indicator vector of `range` in `slots` slots: 1 inside, 0 outside
/// ([`SlotBlock::indicator`]).
pub fn indicator(slots: usize, range: Range<usize>) -> Result<Vec<f64>, Error> {
    if range.is_empty() {
        return Err(Error::InvalidSlotBlock {
            start: range.start,
            end: range.end,
            slots,
        });
    }
    SlotBlock::from(range).indicator(slots)
}

/// Sums inputs, each multiplied by the indicator of its own block first; the products are
/// rescaled once, in [`finish`](Self::finish). All inputs must share a level (fresh meter
/// ciphertexts do).
#[derive(Debug)]
pub struct MaskedSum<'a> {
    evaluator: &'a Evaluator,
    sum: Option<Ciphertext>,
    inputs: usize,
}

impl<'a> MaskedSum<'a> {
    /// An empty sum.
    pub fn new(evaluator: &'a Evaluator) -> Self {
        Self {
            evaluator,
            sum: None,
            inputs: 0,
        }
    }

    /// Adds `input` restricted to `block` (its slots outside `block` multiplied by zero).
    pub fn add(&mut self, block: Range<usize>, input: &Ciphertext) -> Result<(), Error> {
        let slots = self.evaluator.context().slots();
        let masked = self
            .evaluator
            .multiply_plain_without_rescale(input, &indicator(slots, block)?)?;
        match &mut self.sum {
            Some(sum) => self.evaluator.add_assign(sum, &masked)?,
            None => self.sum = Some(masked),
        }
        self.inputs += 1;
        Ok(())
    }

    /// The number of inputs added.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The rescaled sum, one level below the inputs. Fails if nothing was added.
    pub fn finish(self) -> Result<Ciphertext, Error> {
        let sum = self.sum.ok_or_else(|| Error::BillingLayout {
            reason: "no input to sum".into(),
        })?;
        Ok(self.evaluator.rescale(&sum)?)
    }
}

/// How a registered computation over several meters keeps them apart inside the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Each meter's inputs are multiplied by its block's indicator before they are summed
    /// ([`MaskedSum`]): one level, so the inputs must hold one more level than the
    /// computation's depth. Any number of meters per evaluation.
    Masked,
    /// The inputs have no level to spare for the indicators: one meter per evaluation, so
    /// whatever it writes outside its block can touch only its own results.
    OneMeter,
}

impl Isolation {
    /// The isolation of a computation of `depth` levels over inputs at `input_level`.
    pub fn for_depth(depth: u32, input_level: u32) -> Self {
        if depth < input_level {
            Isolation::Masked
        } else {
            Isolation::OneMeter
        }
    }
}

/// The sums, per input index `k < inputs_per_meter`, of the meters' `k`-th inputs
/// (`meters`: each meter's block and its inputs), isolated as [`Isolation::for_depth`] says
/// for a computation of `depth` levels: masked to the blocks, or the one meter's inputs as
/// they are. The utility and the key authority both evaluate through this function.
pub fn isolated_sums<'a>(
    evaluator: &Evaluator,
    inputs_per_meter: usize,
    depth: u32,
    meters: impl IntoIterator<Item = (Range<usize>, &'a [Ciphertext])>,
) -> Result<Vec<Ciphertext>, Error> {
    let meters: Vec<(Range<usize>, &[Ciphertext])> = meters.into_iter().collect();
    let Some(level) = meters
        .first()
        .and_then(|(_, inputs)| inputs.first())
        .map(|ct| ct.level().0)
    else {
        return Err(Error::Isolation {
            reason: "no inputs".into(),
        });
    };
    if let Some((block, inputs)) = meters
        .iter()
        .find(|(_, inputs)| inputs.len() != inputs_per_meter)
    {
        return Err(Error::Isolation {
            reason: format!(
                "the meter at block {}..{} has {} inputs, the computation takes {inputs_per_meter}",
                block.start,
                block.end,
                inputs.len()
            ),
        });
    }
    match Isolation::for_depth(depth, level) {
        Isolation::Masked => (0..inputs_per_meter)
            .map(|k| {
                let mut sum = MaskedSum::new(evaluator);
                for (block, inputs) in &meters {
                    sum.add(block.clone(), &inputs[k])?;
                }
                sum.finish()
            })
            .collect(),
        Isolation::OneMeter if meters.len() == 1 => {
            meters[0].1.iter().map(|ct| Ok(ct.try_clone()?)).collect()
        }
        Isolation::OneMeter => Err(Error::Isolation {
            reason: format!(
                "a computation of depth {depth} on inputs at level {level} has no level left to \
                 isolate meters in the circuit: one meter per evaluation, not {}",
                meters.len()
            ),
        }),
    }
}

/// The plaintext twin: the slot vectors summed, each restricted to its block.
pub fn plaintext_masked_sum(slots: usize, inputs: &[(Range<usize>, &[f64])]) -> Vec<f64> {
    let mut sum = vec![0.0; slots];
    for (block, values) in inputs {
        for slot in block.clone() {
            if let Some(v) = values.get(slot) {
                sum[slot] += v;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use seer_ckks::{CkksContext, Decryptor, Encryptor, KeyGenerator, Level, ParameterSet};

    #[test]
    fn masked_sum_equals_its_twin_and_drops_writes_outside_blocks() {
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("enc");
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("dec");
        let ev = Evaluator::new(&ctx, None, None);
        let slots = ctx.slots();
        // Meter a owns 0..10, meter b owns 10..30; a also writes into b's block and far away.
        let mut a = vec![0.0; slots];
        a[..10]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f64 + 0.5);
        a[12] = 1e4;
        a[4000] = -77.0;
        let mut b = vec![0.0; slots];
        b[10..30]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 100.0 - i as f64);
        let mut sum = MaskedSum::new(&ev);
        sum.add(0..10, &encryptor.encrypt_values(&a).expect("enc"))
            .expect("add");
        sum.add(10..30, &encryptor.encrypt_values(&b).expect("enc"))
            .expect("add");
        assert_eq!(sum.inputs(), 2);
        let out = sum.finish().expect("finish");
        assert_eq!(out.level(), Level(1));
        let got = decryptor.decrypt_values(&out).expect("decrypt");
        let want = plaintext_masked_sum(slots, &[(0..10, &a), (10..30, &b)]);
        assert_eq!(want[12], 98.0, "the twin drops a's write into b's block");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "largest error {worst}");
    }

    #[test]
    fn empty_or_outside_blocks_are_refused() {
        assert!(indicator(16, 0..0).is_err());
        assert!(indicator(16, 10..17).is_err());
        assert_eq!(indicator(4, 1..3).expect("mask"), [0.0, 1.0, 1.0, 0.0]);
        let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
        let ev = Evaluator::new(&ctx, None, None);
        assert!(MaskedSum::new(&ev).finish().is_err());
    }
}
