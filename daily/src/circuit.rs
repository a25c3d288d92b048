//! The encrypted `daily` computation, exactly as the utility evaluates it and the key
//! authority re-executes it (byte for byte: same inputs, same order, same operations).
//!
//! For each meter `m` (block `b_m`) and each row `r` whose weights are not all zero, the
//! meter's ciphertext is rotated left by `32·r` (row `r` of every block lands on row 0) and
//! multiplied by the plaintext that holds `W[r][·]` at row 0 of block `b_m` and **zero in every
//! other slot**; the products of all rows and meters are summed and rescaled once. So output
//! slot `(b_m, row 0, c)` is `Σ_r W[r][c]·x_m[r][c]`, every other slot decrypts to (nearly)
//! zero, and whatever a meter writes outside its own block is multiplied by zero: it can change
//! nothing but its own outputs. This is the block isolation of
//! `seer_core::circuits::isolation` folded into the weights, so it costs no level: the circuit
//! has depth 1 and runs at `N4096_L1` without relinearization keys.
//!
//! Cost per meter-day: at most 15 rotations and 16 plaintext products at n = 4096.
//! The plaintext twin is [`DailyModel::evaluate_plain`]; `tests/encrypted.rs` compares them.
//!
//! [`evaluate`] encodes each weight plaintext for each product. A [`PreparedCircuit`] (built
//! once per model and kept by the caller across requests) encodes each (row, block) plaintext
//! once, on the first ciphertext that needs it, and reuses it: its output is byte for byte
//! [`evaluate`]'s (`tests/prepared.rs`), so the utility and the key authority may use either.

use std::sync::OnceLock;

use seer_ckks::{Ciphertext, Encryptor, Evaluator, Level, Plaintext};

use crate::error::DailyError;
use crate::layout::{BLOCK, BLOCKS_PER_CIPHERTEXT, COLUMNS, ROWS, SLOTS, block_offset, row_step};
use crate::model::{DailyInput, DailyModel};

/// Levels the circuit consumes.
pub const DEPTH: u32 = 1;

/// The rotation steps of every row (what a key authority generates Galois keys for, so that
/// any daily model registers).
#[must_use]
pub fn all_galois_steps() -> Vec<i64> {
    (1..ROWS).map(row_step).collect()
}

/// The rows whose weights are not all zero (the others cost nothing).
#[must_use]
pub fn active_rows(model: &DailyModel) -> Vec<usize> {
    (0..ROWS)
        .filter(|r| (0..COLUMNS).any(|c| model.weight(*r, c) != 0.0))
        .collect()
}

/// The rotation steps `model` needs.
#[must_use]
pub fn galois_steps(model: &DailyModel) -> Vec<i64> {
    active_rows(model)
        .into_iter()
        .filter(|r| *r > 0)
        .map(row_step)
        .collect()
}

/// The meter's side: `input` encrypted at block `block` (zeros in every other slot).
///
/// # Errors
/// [`DailyError::InvalidInput`] for a block outside the ciphertext; CKKS errors.
pub fn encrypt(
    encryptor: &Encryptor,
    input: &DailyInput,
    block: usize,
) -> Result<Ciphertext, DailyError> {
    Ok(encryptor.encrypt_values(&place(input, block)?)?)
}

/// `input`'s values at block `block` of a full slot vector.
///
/// # Errors
/// [`DailyError::InvalidInput`] for a block outside the ciphertext.
pub fn place(input: &DailyInput, block: usize) -> Result<Vec<f64>, DailyError> {
    check_block(block)?;
    let mut values = vec![0.0; SLOTS];
    let offset = block_offset(block);
    values[offset..offset + BLOCK].copy_from_slice(input.values());
    Ok(values)
}

fn check_block(block: usize) -> Result<(), DailyError> {
    if block >= BLOCKS_PER_CIPHERTEXT {
        return Err(DailyError::InvalidInput {
            reason: format!(
                "block {block} is outside the ciphertext's {BLOCKS_PER_CIPHERTEXT} blocks"
            ),
        });
    }
    Ok(())
}

/// Evaluates `model` over the meters' ciphertexts, each with its block (distinct blocks,
/// ciphertexts of [`crate::PARAMETERS`] at the top level). One output ciphertext; blocking
/// and CPU-bound (run it off the async runtime).
///
/// # Errors
/// [`DailyError::InvalidInput`] for no meters, a repeated or out-of-range block, another
/// parameter set or a ciphertext without a level to spend; CKKS errors (a missing Galois key).
pub fn evaluate(
    model: &DailyModel,
    evaluator: &Evaluator,
    meters: &[(usize, &Ciphertext)],
) -> Result<Ciphertext, DailyError> {
    check_meters(evaluator, meters)?;
    let rows = active_rows(model);
    let mut acc: Option<Ciphertext> = None;
    for (block, ct) in meters {
        let offset = block_offset(*block);
        for &r in &rows {
            let product = rotated_row(evaluator, ct, r, |rotated| {
                evaluator.multiply_plain_without_rescale(rotated, &row_values(model, r, offset))
            })?;
            accumulate(evaluator, &mut acc, product)?;
        }
    }
    finish(evaluator, acc)
}

/// The full slot vector of row `r`'s weights at row 0 of the block at `offset`, zero elsewhere.
fn row_values(model: &DailyModel, r: usize, offset: usize) -> Vec<f64> {
    let mut plain = vec![0.0; SLOTS];
    for c in 0..COLUMNS {
        plain[offset + c] = model.weight(r, c);
    }
    plain
}

/// `multiply(ct rotated left by row r's step)`, without a rotation for row 0.
fn rotated_row(
    evaluator: &Evaluator,
    ct: &Ciphertext,
    r: usize,
    multiply: impl FnOnce(&Ciphertext) -> Result<Ciphertext, seer_ckks::CkksError>,
) -> Result<Ciphertext, DailyError> {
    Ok(if r == 0 {
        multiply(ct)?
    } else {
        multiply(&evaluator.rotate(ct, row_step(r))?)?
    })
}

fn accumulate(
    evaluator: &Evaluator,
    acc: &mut Option<Ciphertext>,
    product: Ciphertext,
) -> Result<(), DailyError> {
    match acc.as_mut() {
        None => *acc = Some(product),
        Some(sum) => evaluator.add_assign(sum, &product)?,
    }
    Ok(())
}

fn finish(evaluator: &Evaluator, acc: Option<Ciphertext>) -> Result<Ciphertext, DailyError> {
    let sum = acc.ok_or_else(|| DailyError::InvalidInput {
        reason: "the model has no non-zero weight".to_owned(),
    })?;
    Ok(evaluator.rescale(&sum)?)
}

/// What [`evaluate`] checks of its evaluator and meters.
fn check_meters(evaluator: &Evaluator, meters: &[(usize, &Ciphertext)]) -> Result<(), DailyError> {
    let ctx = evaluator.context();
    if ctx.parameter_set() != crate::PARAMETERS {
        return Err(DailyError::InvalidInput {
            reason: format!(
                "the evaluator is at {}; the daily lane is at {}",
                ctx.parameter_set_id(),
                crate::PARAMETERS
            ),
        });
    }
    if meters.is_empty() {
        return Err(DailyError::InvalidInput {
            reason: "no meters".to_owned(),
        });
    }
    let mut seen = [false; BLOCKS_PER_CIPHERTEXT];
    for (k, (block, ct)) in meters.iter().enumerate() {
        check_block(*block)?;
        if std::mem::replace(&mut seen[*block], true) {
            return Err(DailyError::InvalidInput {
                reason: format!("block {block} is named twice (meter {k})"),
            });
        }
        if ct.level().0 < DEPTH {
            return Err(DailyError::InvalidInput {
                reason: format!(
                    "meter {k}'s ciphertext has {} levels; the circuit needs {DEPTH}",
                    ct.level().0
                ),
            });
        }
    }
    Ok(())
}

/// A model's `daily` circuit with its weight plaintexts encoded once per block and reused
/// across requests: [`evaluate`](Self::evaluate) gives byte for byte what the free
/// [`evaluate`](fn@evaluate) gives for the same model and meters, without encoding a
/// plaintext per product.
///
/// Each block's plaintexts (one per active row) are encoded on the first evaluation that has a
/// meter at that block, for a fresh ciphertext's level and scale ([`crate::PARAMETERS`]'s top
/// level and canonical scale: every meter's input). A ciphertext at another level or scale is
/// evaluated as [`evaluate`](fn@evaluate) does it (encoding per product), so the result never
/// depends on which request came first. `Send + Sync`: one instance serves every thread.
#[derive(Debug)]
pub struct PreparedCircuit {
    /// The active rows and their weights (row 0 of a block, `COLUMNS` values).
    rows: Vec<(usize, [f64; COLUMNS])>,
    /// Per block, the encoded plaintexts of `rows`, in order.
    blocks: [OnceLock<Vec<Plaintext>>; BLOCKS_PER_CIPHERTEXT],
}

impl PreparedCircuit {
    /// The circuit of `model` (nothing is encoded yet).
    #[must_use]
    pub fn new(model: &DailyModel) -> Self {
        let rows = active_rows(model)
            .into_iter()
            .map(|r| {
                let mut w = [0.0; COLUMNS];
                for (c, v) in w.iter_mut().enumerate() {
                    *v = model.weight(r, c);
                }
                (r, w)
            })
            .collect();
        Self {
            rows,
            blocks: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Whether this is `model`'s circuit (the same active rows with the same weights, bit for
    /// bit): the cache key of [`CircuitCache`].
    #[must_use]
    pub fn is_for(&self, model: &DailyModel) -> bool {
        let rows = active_rows(model);
        rows.len() == self.rows.len()
            && rows.iter().zip(&self.rows).all(|(r, (mine, w))| {
                r == mine
                    && w.iter()
                        .enumerate()
                        .all(|(c, v)| v.to_bits() == model.weight(*r, c).to_bits())
            })
    }

    /// Blocks whose plaintexts are encoded so far.
    #[must_use]
    pub fn encoded_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.get().is_some()).count()
    }

    fn values(&self, weights: &[f64; COLUMNS], offset: usize) -> Vec<f64> {
        let mut plain = vec![0.0; SLOTS];
        plain[offset..offset + COLUMNS].copy_from_slice(weights);
        plain
    }

    /// Block `block`'s plaintexts for ciphertexts like `like` (a fresh one), encoded now if
    /// no evaluation encoded them yet.
    fn operands(
        &self,
        evaluator: &Evaluator,
        block: usize,
        like: &Ciphertext,
    ) -> Result<&[Plaintext], DailyError> {
        let cell = &self.blocks[block];
        if let Some(done) = cell.get() {
            return Ok(done);
        }
        let offset = block_offset(block);
        let encoded = self
            .rows
            .iter()
            .map(|(_, w)| evaluator.encode_operand(&self.values(w, offset), like))
            .collect::<Result<Vec<_>, _>>()?;
        // Another thread may have set it meanwhile: both encoded the same plaintexts.
        Ok(cell.get_or_init(|| encoded))
    }

    /// Evaluates the circuit over the meters' ciphertexts, each with its block: the same
    /// checks, operations and order as [`evaluate`](fn@evaluate), hence the same output bytes.
    /// Blocking and CPU-bound.
    ///
    /// # Errors
    /// As [`evaluate`](fn@evaluate).
    pub fn evaluate(
        &self,
        evaluator: &Evaluator,
        meters: &[(usize, &Ciphertext)],
    ) -> Result<Ciphertext, DailyError> {
        check_meters(evaluator, meters)?;
        let ctx = evaluator.context();
        let fresh = (ctx.top_level(), ctx.canonical_scale(ctx.top_level())?);
        let mut acc: Option<Ciphertext> = None;
        for (block, ct) in meters {
            let offset = block_offset(*block);
            if is_like(ct, fresh)? {
                let operands = self.operands(evaluator, *block, ct)?;
                for ((r, _), p) in self.rows.iter().zip(operands) {
                    let product = rotated_row(evaluator, ct, *r, |rotated| {
                        evaluator.multiply_plaintext_without_rescale(rotated, p)
                    })?;
                    accumulate(evaluator, &mut acc, product)?;
                }
            } else {
                for (r, w) in &self.rows {
                    let product = rotated_row(evaluator, ct, *r, |rotated| {
                        evaluator.multiply_plain_without_rescale(rotated, &self.values(w, offset))
                    })?;
                    accumulate(evaluator, &mut acc, product)?;
                }
            }
        }
        finish(evaluator, acc)
    }
}

/// Whether `ct` has exactly the level and scale `fresh`.
fn is_like(ct: &Ciphertext, fresh: (Level, f64)) -> Result<bool, DailyError> {
    Ok(ct.level() == fresh.0 && ct.scale()?.to_bits() == fresh.1.to_bits())
}

/// A caller's cache of one [`PreparedCircuit`], for code that is handed a `&DailyModel` per
/// call (the utility's job evaluates one registered model per run): [`get`](Self::get) returns
/// the prepared circuit of the model, preparing it again only when the model changes. `const`
/// constructible (a `static`), `Send + Sync`.
#[derive(Debug, Default)]
pub struct CircuitCache {
    slot: std::sync::Mutex<Option<std::sync::Arc<PreparedCircuit>>>,
}

impl CircuitCache {
    /// An empty cache.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slot: std::sync::Mutex::new(None),
        }
    }

    /// The prepared circuit of `model` (kept for the next call).
    pub fn get(&self, model: &DailyModel) -> std::sync::Arc<PreparedCircuit> {
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_ref() {
            Some(prepared) if prepared.is_for(model) => std::sync::Arc::clone(prepared),
            _ => {
                let prepared = std::sync::Arc::new(PreparedCircuit::new(model));
                *slot = Some(std::sync::Arc::clone(&prepared));
                prepared
            }
        }
    }
}

/// The [`COLUMNS`] outputs of block `block` (its row 0) from a decrypted output.
///
/// # Errors
/// [`DailyError::InvalidInput`] for a block outside the ciphertext or a short vector.
pub fn block_outputs(decrypted: &[f64], block: usize) -> Result<[f64; COLUMNS], DailyError> {
    check_block(block)?;
    let offset = block_offset(block);
    let row = decrypted
        .get(offset..offset + COLUMNS)
        .ok_or_else(|| DailyError::InvalidInput {
            reason: format!("{} decrypted values; expected {SLOTS}", decrypted.len()),
        })?;
    let mut out = [0.0; COLUMNS];
    out.copy_from_slice(row);
    Ok(out)
}
