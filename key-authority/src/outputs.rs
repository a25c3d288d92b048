//! The only way to the decryptor: outputs of the key authority's own re-execution of a
//! registered circuit.
//!
//! The key authority decrypts results, never inputs (see `SECURITY.md`). This module makes that
//! a property of the types rather than of the callers' care:
//!
//! - a [`KeySet`](crate::keys::KeySet) hands out no decryptor, only an [`OutputDecryptor`],
//!   and [`OutputDecryptor::decrypt`] takes a [`Reexecuted`] — nothing else;
//! - a [`Reexecuted`] has private fields, and the functions below are its only constructors:
//!   each runs one registered circuit (the packed bill of `seer_core::circuits::billing`, a
//!   registered analytics computation over meters' inputs isolated to their blocks — by
//!   `isolated_sums` for `anomaly` and `forecast`, by the weights of `seer_daily::circuit` for
//!   `daily` — or a noise
//!   group's summed lanes plus the key authority's top-up, [`group_total`]) with the key
//!   authority's own evaluation keys and wraps the circuit's outputs.
//!
//! So no code path of the key authority — however a request is built, whatever the utility
//! sends as its "result" — can hand a meter's ciphertext to the decryptor: a utility's result
//! is only ever compared with a [`Reexecuted`] ([`Reexecuted::matches`]), byte for byte.

use seer_anomaly::circuit::EncryptedValue;
use seer_ckks::{Ciphertext, CkksContext, CkksError, Decryptor, Evaluator};
use seer_core::circuits::billing::{BillOutputs, BillingLayout};

use crate::analytics::{Computation, SlotBlock};

/// One output ciphertext of a registered circuit, computed by the key authority itself, with
/// its serialization (what the utility's evaluation of the same circuit must equal).
pub struct Reexecuted {
    ct: Ciphertext,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Reexecuted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reexecuted")
            .field("bytes", &self.bytes.len())
            .field("blake3", &blake3::hash(&self.bytes).to_hex().to_string())
            .finish()
    }
}

impl Reexecuted {
    fn wrap(ctx: &CkksContext, ct: Ciphertext) -> Result<Self, CkksError> {
        let bytes = ct.to_bytes(ctx)?;
        Ok(Self { ct, bytes })
    }

    /// The serialized output.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether `theirs` is byte-identical to this output (compared by BLAKE3).
    #[must_use]
    pub fn matches(&self, theirs: &[u8]) -> bool {
        blake3::hash(theirs) == blake3::hash(&self.bytes)
    }

    /// The BLAKE3 of the output, for refusal reasons and logs.
    #[must_use]
    pub fn blake3(&self) -> blake3::Hash {
        blake3::hash(&self.bytes)
    }
}

/// The billing circuit's two outputs, re-executed.
#[derive(Debug)]
pub struct BillRun {
    /// Each home's Wh per cell at its block.
    pub cells: Reexecuted,
    /// Each home's bill at its block's first slot.
    pub bills: Reexecuted,
}

/// Re-executes the packed billing circuit over `lanes`, each at its meter's registered
/// position (see `seer_core::circuits::billing`).
///
/// # Errors
/// A description of the failure.
pub fn bill(
    layout: &BillingLayout,
    evaluator: &Evaluator,
    lanes: impl IntoIterator<Item = (usize, impl std::ops::Deref<Target = Ciphertext>)>,
) -> Result<BillRun, String> {
    let ctx = evaluator.context();
    let held: Vec<(usize, _)> = lanes.into_iter().collect();
    let BillOutputs { cells, bills } = layout
        .evaluate(evaluator, held.iter().map(|(p, ct)| (*p, &**ct)))
        .map_err(|e| format!("evaluating the bills: {e}"))?;
    let wrap = |ct| Reexecuted::wrap(ctx, ct).map_err(|e| format!("serializing an output: {e}"));
    Ok(BillRun {
        cells: wrap(cells)?,
        bills: wrap(bills)?,
    })
}

/// The group-totals circuit (`seer_core::circuits::group_totals`) in the making: the running
/// homomorphic sum of a noise group's accepted lanes. Lanes enter only by addition, and the sum
/// leaves only through [`group_total`], with the key authority's top-up added, once at least
/// [`seer_core::circuits::group_totals::MIN_PRESENT`] lanes are in it.
pub struct LaneSum {
    sum: Option<Ciphertext>,
    lanes: usize,
}

impl std::fmt::Debug for LaneSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneSum")
            .field("lanes", &self.lanes)
            .finish()
    }
}

impl Default for LaneSum {
    fn default() -> Self {
        Self::new()
    }
}

impl LaneSum {
    /// An empty sum.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            sum: None,
            lanes: 0,
        }
    }

    /// Adds one lane.
    ///
    /// # Errors
    /// When the lane does not share the sum's parameter set and level.
    pub fn add(&mut self, evaluator: &Evaluator, lane: Ciphertext) -> Result<(), CkksError> {
        match self.sum.as_mut() {
            None => self.sum = Some(lane),
            Some(sum) => evaluator.add_assign(sum, &lane)?,
        }
        self.lanes += 1;
        Ok(())
    }

    /// Lanes in the sum.
    #[must_use]
    pub const fn lanes(&self) -> usize {
        self.lanes
    }
}

/// The group-totals circuit's output: the sum of `lanes`, restricted to the slots of the
/// `releasable` hours (of `slots_per_hour` slots each), plus `top_up` (whole Wh per slot)
/// added under encryption — what the key authority decrypts, and the only thing. A withheld
/// hour's slots are zero in it, so no slot with fewer meters than the floor is ever decrypted.
///
/// # Errors
/// A description of the failure; a sum of fewer than
/// [`MIN_PRESENT`](seer_core::circuits::group_totals::MIN_PRESENT) lanes is refused.
pub fn group_total(
    evaluator: &Evaluator,
    lanes: LaneSum,
    releasable: &[bool],
    slots_per_hour: usize,
    top_up: &[i64],
) -> Result<Reexecuted, String> {
    let minimum = seer_core::circuits::group_totals::MIN_PRESENT as usize;
    let Some(sum) = lanes.sum.filter(|_| lanes.lanes >= minimum) else {
        return Err(format!(
            "a group total sums at least {minimum} lanes, not {}",
            lanes.lanes
        ));
    };
    let total = seer_core::circuits::group_totals::released_total(
        evaluator,
        &sum,
        releasable,
        slots_per_hour,
        top_up,
    )
    .map_err(|e| format!("restricting to the released hours and adding the top-up: {e}"))?;
    Reexecuted::wrap(evaluator.context(), total).map_err(|e| format!("serializing the total: {e}"))
}

/// One output of a deep computation: a ciphertext, or a public constant (a value the circuit
/// knows in the clear, e.g. a z-score's undefined first days).
#[derive(Debug)]
pub enum AnalyticsOutput {
    /// An encrypted output.
    Encrypted(Reexecuted),
    /// A public value, the same in every slot.
    Public(f64),
}

/// Re-executes `computation` over the meters' inputs (`meters[m]`: the block and the
/// `inputs_per_meter` ciphertexts of meter `m`, in request order), each meter isolated to its
/// block inside the circuit ([`Computation::evaluate_meters`]: the isolated sums of
/// `seer_core::circuits::isolation` for the per-slot kinds, the block-masked weights of
/// `seer_daily::circuit` for `daily`). The utility's job runs the same steps.
///
/// # Errors
/// A description of the failure (an evaluation error, or several meters for a computation
/// that allows one).
pub fn analytics(
    computation: &dyn Computation,
    evaluator: &Evaluator,
    meters: &[(SlotBlock, &[Ciphertext])],
) -> Result<Vec<AnalyticsOutput>, String> {
    let ctx = evaluator.context();
    computation
        .evaluate_meters(evaluator, meters)?
        .into_iter()
        .map(|out| match out {
            EncryptedValue::Encrypted(ct) => Reexecuted::wrap(ctx, ct)
                .map(AnalyticsOutput::Encrypted)
                .map_err(|e| format!("serializing an output: {e}")),
            EncryptedValue::Public(v) => Ok(AnalyticsOutput::Public(v)),
        })
        .collect()
}

/// Decrypts [`Reexecuted`] outputs, and nothing else (see the [module docs](self)).
pub struct OutputDecryptor<'a> {
    decryptor: &'a Decryptor,
}

impl std::fmt::Debug for OutputDecryptor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputDecryptor")
    }
}

impl<'a> OutputDecryptor<'a> {
    /// Wraps the key set's decryptor; only [`KeySet`](crate::keys::KeySet) holds one.
    pub(crate) fn new(decryptor: &'a Decryptor) -> Self {
        Self { decryptor }
    }

    /// The slot values of one output of the key authority's own re-execution.
    ///
    /// # Errors
    /// When SEAL fails to decrypt or decode.
    pub fn decrypt(&self, output: &Reexecuted) -> Result<Vec<f64>, CkksError> {
        self.decryptor.decrypt_values(&output.ct)
    }
}
