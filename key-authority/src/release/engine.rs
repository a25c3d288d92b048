//! The billing circuit as the key authority re-executes it: its own Galois keys (the very
//! object it publishes, so that the utility's evaluation serializes to the same bytes), the
//! byte-for-byte comparison with the utility's outputs, the decryption of its own outputs
//! (never of a lane: see [`crate::outputs`]), and the checks on what they decrypt to (see the
//! [module documentation](super)).

use std::sync::Arc;

use seer_ckks::{Ciphertext, Evaluator, GaloisKeys, Level, ParameterSet};
use seer_core::circuits::billing::{BillingLayout, LEVELS_USED};
use seer_core::tariff::Tariff;

pub use seer_core::circuits::billing::{CELL_TOLERANCE_WH, HomeBill, MAX_CELL_WH, check_bill};

use super::ReleaseError;
use crate::keys::KeyStore;
use crate::outputs::{self, BillRun};

/// One input of a group, as handed to [`BillEngine::decide`].
#[derive(Debug)]
pub struct GroupLane {
    /// The parsed closing lane.
    pub lane: Ciphertext,
    /// The meter's registered position in the group.
    pub position: usize,
}

/// The utility's serialized evaluation of the billing circuit over a request's lanes.
#[derive(Clone, Copy, Debug)]
pub struct UtilityOutputs<'a> {
    /// The cells output.
    pub cells: &'a [u8],
    /// The bills output.
    pub bills: &'a [u8],
}

/// What [`BillEngine::decide`] found for one group.
#[derive(Debug)]
pub struct GroupDecision {
    /// Per lane, in the order given: the bill, or why it is refused.
    pub homes: Vec<Result<HomeBill, String>>,
    /// Whether the utility's outputs were byte-identical to the re-execution (false only when
    /// every home is refused for that reason).
    pub result_verified: bool,
}

/// Re-executes the billing circuit on a request's lanes and decrypts its own outputs.
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
    /// and checks that it has the levels the circuit consumes. Nothing is decrypted.
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

    /// Runs the circuit on `lanes` with the key authority's evaluation keys: the outputs the
    /// utility must have sent for the same lanes. Blocking.
    ///
    /// # Errors
    /// [`ReleaseError::Engine`] when the evaluation or the serialization fails.
    pub fn evaluate(&self, lanes: &[GroupLane]) -> Result<BillRun, ReleaseError> {
        outputs::bill(
            &self.layout,
            &self.evaluator,
            lanes.iter().map(|l| (l.position, &l.lane)),
        )
        .map_err(ReleaseError::Engine)
    }

    /// Decides one group whose every input passed the checks before the circuit (see the
    /// [module documentation](super)): re-executes the circuit over all `lanes` and requires
    /// both of its outputs to serialize to exactly the utility's (otherwise every lane is
    /// refused); decrypts its own outputs; refuses a home whose decrypted cells are no
    /// plausible whole Wh ([`BillingLayout::decode_cells`]) or whose bill is out of range or
    /// differs from the plaintext tariff on its cells ([`check_bill`]). Blocking and
    /// CPU-heavy: call it off the async runtime.
    ///
    /// # Errors
    /// [`ReleaseError::Engine`] when the evaluation or a decryption fails as a whole.
    pub fn decide(
        &self,
        lanes: &[GroupLane],
        utility: UtilityOutputs<'_>,
    ) -> Result<GroupDecision, ReleaseError> {
        let refuse_all = |reason: String| {
            tracing::warn!(%reason, "utility circuit result refused");
            Ok(GroupDecision {
                homes: lanes.iter().map(|_| Err(reason.clone())).collect(),
                result_verified: false,
            })
        };
        if utility.cells.is_empty() || utility.bills.is_empty() {
            return refuse_all(
                "the request lacks the circuit's outputs: the utility must evaluate the \
                 billing circuit over the lanes it sends and send both outputs"
                    .to_owned(),
            );
        }
        let run = self.evaluate(lanes)?;
        for (name, ours, theirs) in [
            ("cells", &run.cells, utility.cells),
            ("bills", &run.bills, utility.bills),
        ] {
            if !ours.matches(theirs) {
                return refuse_all(format!(
                    "the utility's {name} output (BLAKE3 {}) differs from the key authority's \
                     re-execution over the same lanes (BLAKE3 {}): nothing of this group is \
                     released",
                    blake3::hash(theirs),
                    ours.blake3()
                ));
            }
        }
        let set = self
            .keys
            .get(&self.parameter_set)
            .ok_or_else(|| ReleaseError::Engine("no billing key set".into()))?;
        let decryptor = set.output_decryptor();
        let cells = decryptor
            .decrypt(&run.cells)
            .map_err(|e| ReleaseError::Engine(format!("decrypting the cells output: {e}")))?;
        let bills = decryptor
            .decrypt(&run.bills)
            .map_err(|e| ReleaseError::Engine(format!("decrypting the bills output: {e}")))?;
        // The billing computation's release rule (`seer_core::circuits::billing`, beside the
        // circuit and its plaintext twin).
        let homes = lanes
            .iter()
            .map(|lane| {
                self.layout
                    .release_home(&cells, &bills, lane.position)
                    .map_err(String::from)
            })
            .collect();
        Ok(GroupDecision {
            homes,
            result_verified: true,
        })
    }
}
