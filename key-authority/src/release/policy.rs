//! The release policy for bills (see the [module documentation](super)).

use std::collections::HashMap;
use std::sync::Arc;

use seer_ckks::Ciphertext;
use seer_core::tariff::Paise;
use tracing::Instrument as _;

use super::engine::{GroupLane, HomeBill, UtilityOutputs};
use super::store::{self, Period, ReceiptStore, Released};
use super::{BillEngine, ReleaseError};
use crate::audit::{AuditEntry, AuditLog, Decision, InputDigest, NewEntry, RequestKind};
use crate::auth::Caller;
use seer_core::MeterId;

/// One home's input: the billing lane of its last batch of the period.
#[derive(Clone, PartialEq, Eq)]
pub struct BillInput {
    /// The meter.
    pub meter_id: String,
    /// The sequence of the batch.
    pub sequence: u64,
    /// The batch's serialized billing-lane ciphertext.
    pub billing_lane: Vec<u8>,
}

impl std::fmt::Debug for BillInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillInput")
            .field("meter_id", &self.meter_id)
            .field("sequence", &self.sequence)
            .field("billing_lane_bytes", &self.billing_lane.len())
            .finish()
    }
}

/// A request for the bills of one packing group and period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillRequest {
    /// The period, as sent (validated by the releaser).
    pub period: String,
    /// The packing group.
    pub billing_group: u32,
    /// One input per home.
    pub inputs: Vec<BillInput>,
    /// The utility's serialized evaluation of the billing circuit over every input's lane:
    /// the bills output.
    pub result: Vec<u8>,
    /// The same evaluation's cells output.
    pub cells: Vec<u8>,
}

/// One home's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillOutcome {
    /// The meter, as the input named it.
    pub meter_id: String,
    /// The bill and its cells, or why it was refused (as written to the audit log).
    pub decision: Result<HomeBill, String>,
    /// The audit entry recording the decision (for a retried release, the entry that
    /// granted it first).
    pub audit_sequence: u64,
    /// True when the input passed every check but the request as a whole was refused because
    /// other inputs were: resubmitting without those may release it.
    pub withheld: bool,
    /// True when the bill was released before under this very receipt and lane: refused
    /// (mixed with new inputs, or released meanwhile by another request, possibly through
    /// another key authority of the pool), a lone retry returns the stored release; granted,
    /// this outcome is that stored release.
    pub already_released: bool,
}

/// The decisions on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillDecisions {
    /// One outcome per input, in order.
    pub outcomes: Vec<BillOutcome>,
    /// Whether every input was accepted and the utility's circuit result was byte-identical
    /// to the re-execution.
    pub result_verified: bool,
}

/// What the checks before the circuit found for one input.
enum Checked {
    /// Passed: the receipt's sequence and the lane at its registered position.
    Passed(u64, GroupLane),
    /// Released before under this very receipt and lane: a retry.
    AlreadyReleased(Released),
    /// Refused, with the reason.
    Refused(String),
}

/// The audit kind of a retried release: logged, and kept apart from the grants (one per
/// released (kind, meter, period)).
fn retry_kind() -> RequestKind {
    #[expect(clippy::expect_used, reason = "a constant, valid kind name")]
    RequestKind::try_new("bill.retry").expect("valid kind")
}

/// Applies the release policy for bills: checks, re-execution, decryption, audit, record.
#[derive(Debug, Clone)]
pub struct BillReleaser {
    audit: Arc<AuditLog>,
    receipts: ReceiptStore,
    engine: Arc<BillEngine>,
}

impl BillReleaser {
    /// A releaser over `audit`'s database with `engine`.
    #[must_use]
    pub fn new(audit: Arc<AuditLog>, engine: Arc<BillEngine>) -> Self {
        Self {
            receipts: ReceiptStore::new(&audit),
            audit,
            engine,
        }
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &Arc<BillEngine> {
        &self.engine
    }

    /// Records the refusal of a whole request before any input was considered (no valid
    /// token, a role that may not release, a malformed request): one audit entry.
    ///
    /// # Errors
    /// [`ReleaseError::Audit`] when the log cannot be written.
    pub async fn refuse_request(
        &self,
        caller: Option<&Caller>,
        request: &BillRequest,
        reason: &str,
    ) -> Result<AuditEntry, ReleaseError> {
        let scope = format!(
            "request for group {} with {} inputs",
            request.billing_group,
            request.inputs.len()
        );
        let mut entry = NewEntry::request_refused(RequestKind::BILL, reason, &scope, caller)
            .period(request.period.clone());
        if let [input] = request.inputs.as_slice() {
            entry = entry
                .meter(input.meter_id.clone())
                .input(InputDigest::sha256(&input.billing_lane));
        }
        Ok(self.audit.append(entry).await?)
    }

    /// Releases the bills `request` asks for, as `caller` (already authorized as a utility).
    /// Returns one outcome per input, in order, once every decision is durably in the audit
    /// log and every granted bill is recorded as released, and whether the utility's circuit
    /// result was verified.
    ///
    /// # Errors
    /// [`ReleaseError::InvalidArgument`] for a malformed request (refusal logged first);
    /// [`ReleaseError::Audit`] or [`ReleaseError::Database`] when the log or the database
    /// cannot be written: then nothing was released.
    #[tracing::instrument(name = "release.bills", skip_all, fields(
        subject = caller.subject(), period = %request.period, group = request.billing_group,
        inputs = request.inputs.len()))]
    pub async fn release_bills(
        &self,
        caller: &Caller,
        request: BillRequest,
    ) -> Result<BillDecisions, ReleaseError> {
        let capacity = self.engine.layout().capacity();
        let period = match request.period.parse::<Period>().map_err(ReleaseError::from) {
            Err(error) => {
                self.refuse_request(Some(caller), &request, &error.to_string())
                    .await?;
                return Err(error);
            }
            Ok(_) if request.inputs.is_empty() || request.inputs.len() > capacity => {
                let error = ReleaseError::InvalidArgument(format!(
                    "a request bills 1 to {capacity} homes of one group, not {}",
                    request.inputs.len()
                ));
                self.refuse_request(Some(caller), &request, &error.to_string())
                    .await?;
                return Err(error);
            }
            Ok(period) => period,
        };

        // Checks 1-7, before the circuit; nothing is decrypted here.
        let mut checked = Vec::with_capacity(request.inputs.len());
        let mut meters: HashMap<&str, usize> = HashMap::new();
        let mut positions: HashMap<usize, &str> = HashMap::new();
        for input in &request.inputs {
            checked.push(
                self.check_input(&request, &period, input, &mut meters, &mut positions)
                    .await?,
            );
        }

        // Some inputs released before, others not: a concurrent request (possibly through
        // another key authority of the pool) may have released the others since they were
        // checked. Look again, so that a request racing its twin is answered as a retry.
        if checked
            .iter()
            .any(|c| matches!(c, Checked::AlreadyReleased(_)))
        {
            for (input, c) in request.inputs.iter().zip(checked.iter_mut()) {
                if let Checked::Passed(sequence, _) = c
                    && let Some(done) = self
                        .receipts
                        .released(&RequestKind::BILL, &input.meter_id, &period)
                        .await?
                    && done.receipt_sequence == *sequence
                {
                    *c = Checked::AlreadyReleased(done);
                }
            }
        }

        // A retry of a request whose answer was lost: every input was released before under
        // the same receipt and lane. The stored releases are returned, each retry logged.
        if checked
            .iter()
            .all(|c| matches!(c, Checked::AlreadyReleased(_)))
        {
            return self.answer_retry(caller, &request, checked).await;
        }

        // Any input refused (or already released amid new ones): the whole request is
        // refused, so that the utility's outputs — over every input it sent — are always
        // compared with a re-execution over the same inputs. The utility resubmits without
        // the refused inputs.
        let mut refusals: Vec<Option<String>> = vec![None; request.inputs.len()];
        let mut withheld = vec![false; request.inputs.len()];
        let mut already = vec![false; request.inputs.len()];
        let refused_meters: Vec<&str> = request
            .inputs
            .iter()
            .zip(&checked)
            .filter(|(_, c)| !matches!(c, Checked::Passed(..)))
            .map(|(input, _)| input.meter_id.as_str())
            .collect();
        let mut granted: HashMap<usize, (u64, HomeBill)> = HashMap::new();
        let mut result_verified = false;
        if refused_meters.is_empty() {
            let engine = Arc::clone(&self.engine);
            let (sequences, lanes): (Vec<u64>, Vec<GroupLane>) = checked
                .into_iter()
                .filter_map(|c| match c {
                    Checked::Passed(sequence, lane) => Some((sequence, lane)),
                    _ => None,
                })
                .unzip();
            let (bills, cells) = (request.result.clone(), request.cells.clone());
            let span = tracing::info_span!("release.circuit", homes = lanes.len());
            let decided = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    engine.decide(
                        &lanes,
                        UtilityOutputs {
                            cells: &cells,
                            bills: &bills,
                        },
                    )
                })
            })
            .await
            .map_err(|e| ReleaseError::Engine(format!("billing task: {e}")))?;
            match decided {
                Ok(decision) => {
                    result_verified = decision.result_verified;
                    for (index, (sequence, home)) in
                        sequences.into_iter().zip(decision.homes).enumerate()
                    {
                        match home {
                            Ok(bill) => {
                                granted.insert(index, (sequence, bill));
                            }
                            Err(reason) => refusals[index] = Some(reason),
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "billing circuit failed");
                    refusals.fill(Some("the billing circuit failed on this group".into()));
                }
            }
        } else {
            let named = refused_meters.join(", ");
            for (index, c) in checked.into_iter().enumerate() {
                refusals[index] = Some(match c {
                    Checked::Refused(reason) => reason,
                    Checked::AlreadyReleased(done) => {
                        already[index] = true;
                        format!(
                            "the bill of meter {} for {period} was already released (audit entry \
                         {}); ask for it alone to have the stored release returned",
                            request.inputs[index].meter_id, done.audit_sequence
                        )
                    }
                    Checked::Passed(..) => {
                        withheld[index] = true;
                        format!(
                            "withheld: the request holds refused inputs (meters {named}), so \
                             nothing of it is evaluated or released; resubmit without them"
                        )
                    }
                });
            }
        }

        // Decisions: audit entries and release records in one transaction.
        let mut tx = self.audit.begin_append().await?;
        let mut outcomes = Vec::with_capacity(request.inputs.len());
        for (index, input) in request.inputs.iter().enumerate() {
            let mut decision = match (&refusals[index], granted.remove(&index)) {
                (Some(reason), _) => Err(reason.clone()),
                (None, Some(bill)) => Ok(bill),
                (None, None) => Err("no bill was computed for this input".into()),
            };
            // Receipts and releases may have changed since the checks: re-check under the lock.
            if let Ok((receipt_sequence, _)) = &decision {
                let receipt_sequence = *receipt_sequence;
                if let Some(done) = store::released(
                    tx.connection(),
                    &RequestKind::BILL,
                    &input.meter_id,
                    &period,
                )
                .await?
                {
                    // Released meanwhile (by a concurrent request, possibly through another
                    // key authority of the pool): this request's checks ran before it.
                    already[index] = done.receipt_sequence == receipt_sequence;
                    decision = Err(format!(
                        "the bill of meter {} for {period} was already released (audit entry {})",
                        input.meter_id, done.audit_sequence
                    ));
                } else {
                    let last =
                        store::last_receipt(tx.connection(), &input.meter_id, &period).await?;
                    if last.as_ref().map(|r| r.sequence) != Some(receipt_sequence) {
                        decision = Err(format!(
                            "receipt {receipt_sequence} is no longer the meter's last of {period}"
                        ));
                    }
                }
            }
            let entry = NewEntry::new(
                RequestKind::BILL,
                match &decision {
                    Ok(_) => Decision::Granted,
                    Err(reason) => Decision::refused(reason.clone()),
                },
            )
            .caller(caller)
            .meter(input.meter_id.clone())
            .period(request.period.clone())
            .input(InputDigest::sha256(&input.billing_lane));
            let entry = tx.append(entry).await?;
            if let Ok((receipt_sequence, bill)) = &decision {
                store::insert_release(
                    tx.connection(),
                    &RequestKind::BILL,
                    &input.meter_id,
                    &period,
                    &Released {
                        receipt_sequence: *receipt_sequence,
                        amount: bill.amount.get(),
                        audit_sequence: entry.sequence,
                        cell_wh: bill.cell_wh.clone(),
                    },
                )
                .await?;
            }
            outcomes.push(BillOutcome {
                meter_id: input.meter_id.clone(),
                decision: decision.map(|(_, bill)| bill),
                audit_sequence: entry.sequence,
                withheld: withheld[index],
                already_released: already[index],
            });
        }
        tx.commit()
            .instrument(tracing::debug_span!("release.commit"))
            .await?;
        let granted = outcomes.iter().filter(|o| o.decision.is_ok()).count();
        tracing::info!(
            granted,
            refused = outcomes.len() - granted,
            result_verified,
            "bills decided"
        );
        Ok(BillDecisions {
            outcomes,
            result_verified,
        })
    }

    /// Checks 1-7 of the [module documentation](super) for one input.
    async fn check_input<'r>(
        &self,
        request: &BillRequest,
        period: &Period,
        input: &'r BillInput,
        meters: &mut HashMap<&'r str, usize>,
        positions: &mut HashMap<usize, &'r str>,
    ) -> Result<Checked, ReleaseError> {
        Ok(
            match self
                .check_input_inner(request, period, input, meters, positions)
                .await?
            {
                Ok((sequence, position, lane)) => {
                    Checked::Passed(sequence, GroupLane { lane, position })
                }
                Err(Err(done)) => Checked::AlreadyReleased(done),
                Err(Ok(reason)) => Checked::Refused(reason),
            },
        )
    }

    /// Answers a retried request (see [`release_bills`](Self::release_bills)): each input's
    /// stored release, one `bill.retry` audit entry per input, nothing decrypted.
    async fn answer_retry(
        &self,
        caller: &Caller,
        request: &BillRequest,
        checked: Vec<Checked>,
    ) -> Result<BillDecisions, ReleaseError> {
        let mut tx = self.audit.begin_append().await?;
        let mut outcomes = Vec::with_capacity(checked.len());
        for (input, c) in request.inputs.iter().zip(checked) {
            let Checked::AlreadyReleased(done) = c else {
                return Err(ReleaseError::Engine("a retry holds a new input".into()));
            };
            let entry = NewEntry::new(retry_kind(), Decision::Granted)
                .caller(caller)
                .meter(input.meter_id.clone())
                .period(request.period.clone())
                .input(InputDigest::sha256(&input.billing_lane));
            tx.append(entry).await?;
            outcomes.push(BillOutcome {
                meter_id: input.meter_id.clone(),
                decision: Ok(HomeBill {
                    amount: Paise::new(done.amount),
                    cell_wh: done.cell_wh.clone(),
                }),
                audit_sequence: done.audit_sequence,
                withheld: false,
                already_released: true,
            });
        }
        tx.commit().await?;
        tracing::info!(
            homes = outcomes.len(),
            "retried bills answered from the releases"
        );
        Ok(BillDecisions {
            outcomes,
            result_verified: true,
        })
    }

    /// The checks of [`check_input`](Self::check_input): `Ok` with the receipt's sequence,
    /// the position and the parsed lane; `Err(Err(release))` when this very receipt and lane
    /// were released before; `Err(Ok(reason))` for a refusal.
    async fn check_input_inner<'r>(
        &self,
        request: &BillRequest,
        period: &Period,
        input: &'r BillInput,
        meters: &mut HashMap<&'r str, usize>,
        positions: &mut HashMap<usize, &'r str>,
    ) -> Result<Result<(u64, usize, Ciphertext), Result<String, Released>>, ReleaseError> {
        let meter = input.meter_id.as_str();
        if let Err(reason) = MeterId::check(meter) {
            return Ok(Err(Ok(format!("invalid meter id: {reason}"))));
        }
        if meters.insert(meter, meters.len()).is_some() {
            return Ok(Err(Ok(format!(
                "meter {meter} appears more than once in the request"
            ))));
        }
        let Some(receipt) = self.receipts.last_receipt(meter, period).await? else {
            return Ok(Err(Ok(format!(
                "no receipt of meter {meter} in {period}: the period is not closed"
            ))));
        };
        if !receipt.closes_period {
            return Ok(Err(Ok(format!(
                "the period {period} is open for meter {meter}: its last receipt (sequence {}) \
                 does not close it",
                receipt.sequence
            ))));
        }
        if input.sequence != receipt.sequence {
            return Ok(Err(Ok(format!(
                "sequence {} is not the meter's closing batch of {period} (sequence {})",
                input.sequence, receipt.sequence
            ))));
        }
        // The row must be the receipt the chain recorded (the meter signed it and the key
        // authority logged it), not one written into the database by someone else.
        if !self
            .receipts
            .in_chain(&receipt, self.engine.parameter_set())
            .await?
        {
            return Ok(Err(Ok(format!(
                "the receipt of meter {meter} (sequence {}, {period}) is not in the audit \
                 chain: it was written or altered outside the key authority",
                receipt.sequence
            ))));
        }
        if *blake3::hash(&input.billing_lane).as_bytes() != receipt.billing_digest {
            return Ok(Err(Ok(format!(
                "the billing lane does not match the receipt of sequence {} (BLAKE3 differs)",
                receipt.sequence
            ))));
        }
        if receipt.billing_group != request.billing_group {
            return Ok(Err(Ok(format!(
                "the receipt places the meter in group {}, not the request's group {}",
                receipt.billing_group, request.billing_group
            ))));
        }
        let position = receipt.billing_position as usize;
        let capacity = self.engine.layout().capacity();
        if position >= capacity {
            return Ok(Err(Ok(format!(
                "the receipt's position {position} lies outside the layout's {capacity} homes"
            ))));
        }
        match self.receipts.registration(meter).await? {
            None => {
                return Ok(Err(Ok(format!(
                    "meter {meter} has no registered billing position"
                ))));
            }
            Some(bound)
                if (bound.billing_group, bound.billing_position)
                    != (receipt.billing_group, receipt.billing_position) =>
            {
                return Ok(Err(Ok(format!(
                    "the receipt places the meter at group {} position {}, but it is \
                     registered at group {} position {}",
                    receipt.billing_group,
                    receipt.billing_position,
                    bound.billing_group,
                    bound.billing_position
                ))));
            }
            Some(_) => {}
        }
        if let Some(other) = positions.get(&position) {
            return Ok(Err(Ok(format!(
                "position {position} is already taken by meter {other} in this request"
            ))));
        }
        if let Some(done) = self
            .receipts
            .released(&RequestKind::BILL, meter, period)
            .await?
        {
            // Checks 2-4 passed: this is the closing receipt and its very lane. A release of
            // it, recorded with its values, is returned again (a retry). A release known only
            // from the audit chain (its row is gone) is refused: nothing is released twice.
            if done.receipt_sequence == receipt.sequence {
                return Ok(Err(Err(done)));
            }
            return Ok(Err(Ok(format!(
                "the bill of meter {meter} for {period} was already released (audit entry {})",
                done.audit_sequence
            ))));
        }
        let lane = match self.engine.parse_lane(&input.billing_lane) {
            Ok(lane) => lane,
            Err(reason) => return Ok(Err(Ok(reason))),
        };
        positions.insert(position, meter);
        Ok(Ok((receipt.sequence, position, lane)))
    }
}
