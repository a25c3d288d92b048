//! Release of registered computations' results, and the receipts that make it safe
//! (`seer.v1.Receipts`, `seer.v1.Release`; the policy is the header of `release.proto`).
//!
//! The key authority must never become a decryption oracle: it decrypts only the outputs of
//! computations it re-executes itself, on inputs it can vouch for, and never an input.
//!
//! - **Receipts** (served by [`ReceiptsService`], recorded by
//!   [`SignedReceipts`](crate::signed_receipts::SignedReceipts)): for every batch it builds, a
//!   meter records the BLAKE3 digest of the batch's billing lane, its packing group and
//!   position, and whether the batch closes the period, signed with its device key; each
//!   recorded receipt is a granted `receipt` audit entry.
//! - **Registry**: a meter's first receipt binds its (group, position) in
//!   `billing_positions`; a later receipt claiming another position is refused
//!   (`FAILED_PRECONDITION`), and so is a position already bound to another meter
//!   (`ALREADY_EXISTS`). The meter cannot move into a neighbour's block by changing its
//!   claims, and the lane check below binds what it encrypts to the same block.
//! - **Release** ([`BillReleaser::release_bills`], served by [`ReleaseService`]): the utility
//!   sends, for each home of one packing group, the billing lane of the home's last batch of a
//!   closed period, together with **its own evaluation of the billing circuit** over those
//!   lanes (both outputs: `ReleaseBillsRequest.cells` and `.result`, computed with the Galois
//!   keys the key authority publishes). Each input is checked, in this order (the first
//!   failing check is the refusal reason recorded in the audit log); nothing is decrypted:
//!   1. the meter id is valid and appears once in the request;
//!   2. the meter has a receipt in the period, and its receipt with the highest sequence in
//!      the period closes the period;
//!   3. the input's sequence is that receipt's, and the receipt is in the audit chain (a
//!      granted `receipt` entry for its meter and period whose digest is the SHA-256 of the
//!      statement rebuilt from the row: a row written or altered outside the key authority
//!      fails here);
//!   4. BLAKE3 of the lane is the receipt's digest (a raw reading ciphertext, an older batch or
//!      another meter's lane fails here);
//!   5. the receipt's group is the request's, its position lies in the
//!      [`BillingLayout`](seer_core::circuits::billing::BillingLayout), it is the meter's
//!      registered position, and no earlier accepted input of the request holds the same
//!      position;
//!   6. the bill for (meter, period) has not been released — when it has, under this very
//!      receipt and lane, and every input of the request is such a one, the request is a
//!      retry and the stored releases are returned (logged as `bill.retry`);
//!   7. the lane parses as a ciphertext of the billing parameter set with the levels the
//!      circuit needs.
//!
//!   **Any input refused: the whole request is refused** (the inputs that passed are
//!   `withheld`), so the utility's outputs are always compared with a re-execution over
//!   exactly the inputs it sent; the utility resubmits without the refused inputs. Otherwise
//!   the billing circuit ([`seer_core::circuits::billing`]) is re-executed over every lane at
//!   its meter's registered position, with the key authority's own Galois keys (the very
//!   object it publishes). The circuit multiplies each lane by the indicator of its home's
//!   cells before adding it (block isolation inside the circuit: a lane writing into a
//!   neighbour's block changes nothing). **Both outputs must serialize to exactly the
//!   utility's** (compared by BLAKE3); any difference means the utility did not evaluate the
//!   registered circuit on these lanes, and every input is refused with that reason (missing
//!   outputs likewise). Only then are the key authority's own outputs decrypted
//!   ([`crate::outputs`]: the decryptor takes nothing else). Validity is judged on the
//!   decrypted result: each home's cells must be non-negative whole Wh no greater than
//!   [`MAX_CELL_WH`], within [`CELL_TOLERANCE_WH`], and its bill, decoded to the paisa
//!   (snapped to the tariff's quantum, then rounded), must equal the plaintext tariff on those
//!   cells exactly ([`check_bill`]). Each granted bill is released with its cells rounded to
//!   whole Wh (the month's energy per slab and band, a final result); raw decryptions never
//!   leave. Finally, in **one** database transaction under the audit log's append lock,
//!   checks 2–3 and 6 are repeated (receipts and releases may have changed meanwhile), one
//!   audit entry per input is appended (granted, or refused with the reason) and each granted
//!   bill is recorded in `releases`. Only after that transaction commits does the answer
//!   leave; if it fails, the answer is `UNAVAILABLE` and nothing is released.
//!
//! Requests that fail before any input is looked at — no valid token, a role other than
//! `utility`, a malformed period, no inputs or more than a group holds — are refused with one
//! audit entry for the request, then answered with the matching gRPC error.
//!
//! # Storage
//!
//! In the audit log's database (same pool; schema in `migrations/key-authority/`):
//!
//! ```text
//! receipts(meter_id, sequence BIGINT, period, billing_digest TEXT hex, billing_group BIGINT,
//!          billing_position BIGINT, closes_period BIGINT 0/1, recorded_at_us BIGINT)
//!          PRIMARY KEY (meter_id, sequence)
//! billing_positions(meter_id PRIMARY KEY, billing_group BIGINT, billing_position BIGINT,
//!          first_sequence BIGINT, bound_at_us BIGINT)  UNIQUE (billing_group, billing_position)
//! releases(kind, meter_id, period, receipt_sequence BIGINT, amount BIGINT (paise for bills),
//!          audit_seq BIGINT, released_at_us BIGINT, cell_wh TEXT (whole Wh per cell,
//!          comma-separated))  PRIMARY KEY (kind, meter_id, period)
//! ```
//!
//! Recording a receipt takes the audit head's row lock first, like every release, so a
//! receipt and a release of the same (meter, period) never interleave: a receipt is refused
//! once the bill is released, and a release sees every receipt committed before it.
//!
//! The released amount and cells are kept in `releases` (linked to its audit entry by
//! `audit_seq`), not in the hashed audit entry: auditors learn who asked for what and what was
//! decided, not bills.

mod engine;
mod error;
mod policy;
pub(crate) mod service;
mod store;

pub use engine::{
    BillEngine, CELL_TOLERANCE_WH, GroupDecision, GroupLane, HomeBill, MAX_CELL_WH, UtilityOutputs,
    check_bill,
};
pub use error::ReleaseError;
pub use policy::{BillDecisions, BillInput, BillOutcome, BillReleaser, BillRequest};
pub use service::{
    RECEIPT_WRITERS, RELEASE_CALLERS, ReceiptsService, ReleaseService, billing_statement,
};
pub use store::{Period, Receipt, ReceiptStore, RecordOutcome, Registration, Released};
pub(crate) use store::{first_unbound_receipt, record_in};
