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

use seer_ckks::{Ciphertext, Encryptor, Evaluator};

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
    let rows = active_rows(model);
    let mut acc: Option<Ciphertext> = None;
    for (block, ct) in meters {
        let offset = block_offset(*block);
        for &r in &rows {
            let mut plain = vec![0.0; SLOTS];
            for c in 0..COLUMNS {
                plain[offset + c] = model.weight(r, c);
            }
            let product = if r == 0 {
                evaluator.multiply_plain_without_rescale(ct, &plain)?
            } else {
                let rotated = evaluator.rotate(ct, row_step(r))?;
                evaluator.multiply_plain_without_rescale(&rotated, &plain)?
            };
            match acc.as_mut() {
                None => acc = Some(product),
                Some(sum) => evaluator.add_assign(sum, &product)?,
            }
        }
    }
    let sum = acc.ok_or_else(|| DailyError::InvalidInput {
        reason: "the model has no non-zero weight".to_owned(),
    })?;
    Ok(evaluator.rescale(&sum)?)
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
