//! Release of registered computations' results, and the receipts that make it safe
//! (`seer.v1.Receipts`, `seer.v1.Release`; the policy is the header of `release.proto`).
//!
//! The key authority must never become a decryption oracle: it decrypts only the outputs of
//! computations it re-executes itself, on inputs it can vouch for.
//!
//! - **Receipts** ([`ReceiptStore::record`], served by [`ReceiptsService`]): for every batch it
//!   builds, a meter records the BLAKE3 digest of the batch's billing lane, its packing group
//!   and position, and whether the batch closes the period, under its household token.
//! - **Release** ([`BillReleaser::release_bills`], served by [`ReleaseService`]): the utility
//!   sends, for each home of one packing group, the billing lane of the home's last batch of a
//!   closed period. Each input is checked, in this order (the first failing check is the
//!   refusal reason recorded in the audit log):
//!   1. the meter id is valid and appears once in the request;
//!   2. the meter has a receipt in the period, and its receipt with the highest sequence in
//!      the period closes the period;
//!   3. the input's sequence is that receipt's;
//!   4. BLAKE3 of the lane is the receipt's digest (a raw reading ciphertext, an older batch or
//!      another meter's lane fails here);
//!   5. the receipt's group is the request's, its position lies in the
//!      [`BillingLayout`](seer_core::circuits::billing::BillingLayout) and
//!      no earlier accepted input of the request holds the same position;
//!   6. the bill for (meter, period) has not been released;
//!   7. the lane parses as a ciphertext of the billing parameter set with the levels the
//!      circuit needs.
//!
//!   The billing circuit ([`seer_core::circuits::billing`]) then runs on the accepted lanes
//!   only, with the key authority's own Galois keys, off the async runtime; the result is
//!   decrypted and each home's bill decoded to the paisa (snapped to the tariff's quantum,
//!   then rounded). Finally, in **one** database transaction under the audit log's append lock,
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
//! releases(kind, meter_id, period, receipt_sequence BIGINT, amount BIGINT (paise for bills),
//!          audit_seq BIGINT, released_at_us BIGINT)  PRIMARY KEY (kind, meter_id, period)
//! ```
//!
//! Recording a receipt takes the audit head's row lock first, like every release, so a
//! receipt and a release of the same (meter, period) never interleave: a receipt is refused
//! once the bill is released, and a release sees every receipt committed before it.
//!
//! The released amount is kept in `releases` (linked to its audit entry by `audit_seq`), not in
//! the hashed audit entry: auditors learn who asked for what and what was decided, not bills.

mod engine;
mod error;
mod policy;
mod service;
mod store;

pub use engine::BillEngine;
pub use error::ReleaseError;
pub use policy::{BillInput, BillOutcome, BillReleaser, BillRequest};
pub use service::{RECEIPT_WRITERS, RELEASE_CALLERS, ReceiptsService, ReleaseService};
pub use store::{Period, Receipt, ReceiptStore, RecordOutcome, Released};
