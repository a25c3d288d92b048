//! The billing circuit as the key authority re-executes it: its own Galois keys, its own
//! decryption, the billing module's decoding.

use std::sync::Arc;

use seer_ckks::{Ciphertext, Evaluator, GaloisKeys, Level, ParameterSet};
use seer_core::circuits::billing::{BillingLayout, LEVELS_USED};
use seer_core::tariff::{Paise, Tariff};

use super::ReleaseError;
use crate::keys::KeyStore;

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

    /// Runs the circuit on `lanes` (one per home, at distinct `positions`), decrypts and
    /// decodes each home's bill to the paisa. Blocking and CPU-heavy: call it off the async
    /// runtime. Each home is decoded on its own, so a value out of the circuit's range refuses
    /// only that home (its `Err` is the reason).
    ///
    /// # Errors
    /// [`ReleaseError::Engine`] when the evaluation or the decryption fails as a whole.
    pub fn bills(
        &self,
        lanes: &[Ciphertext],
        positions: &[usize],
    ) -> Result<Vec<Result<Paise, String>>, ReleaseError> {
        let set = self
            .keys
            .get(&self.parameter_set)
            .ok_or_else(|| ReleaseError::Engine("no billing key set".into()))?;
        let result = self
            .layout
            .evaluate(&self.evaluator, lanes)
            .map_err(|e| ReleaseError::Engine(format!("evaluating the bills: {e}")))?;
        let slots = set
            .decryptor()
            .decrypt_values(&result)
            .map_err(|e| ReleaseError::Engine(format!("decrypting the bills: {e}")))?;
        let block = self.layout.block_width();
        Ok(positions
            .iter()
            .map(|&position| {
                // The home's value alone at position 0 of an otherwise empty vector.
                let mut alone = vec![0.0; slots.len()];
                alone[0] = slots.get(position * block).copied().unwrap_or(f64::NAN);
                self.layout
                    .decode_bills(&alone, 1)
                    .map_err(|e| format!("the decrypted bill is out of range: {e}"))
                    .and_then(|bills| {
                        bills
                            .first()
                            .copied()
                            .ok_or_else(|| "no bill decoded".to_owned())
                    })
            })
            .collect())
    }
}
