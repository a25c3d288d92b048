//! Release of noise groups' totals (`seer.v1.GroupTotals`; the policy is the header of
//! `group_totals.proto`): the registered aggregate of distributed noise.
//!
//! Each meter of a noise group (its billing packing group) adds to every slot of its batch's
//! analytics lane its share of one discrete Laplace draw of scale Δ/ε
//! ([`seer_core::dp::SharePlan`]), at the slot of the interval in the batch's window, and signs
//! the plan with the batch. The utility streams a group's batches of one window, exactly as
//! the meters signed them; the key authority ([`GroupTotalsReleaser::release`]):
//!
//! 1. checks the header: a valid plan ([`SharePlan::try_new`]), a window starting on a whole
//!    hour, an interval dividing the hour, a window of whole hours within 31 days and within
//!    the billing parameter set's slots — otherwise the request is refused as a whole, with
//!    one audit entry;
//! 2. checks each input, in order, without decrypting it (the first failing check is its
//!    refusal; a refused input is left out, the rest go on, each refusal an audit entry):
//!    the meter id is valid; the meter is enrolled and not revoked and the batch's signature
//!    verifies against its enrolled device key over the statement rebuilt from the fields
//!    sent, the billing lane's digest sent and the analytics lane as sent
//!    ([`seer_proto::statements::batch_statement`]); the meter's registered billing group is
//!    the request's; the batch carries a plan equal to the header's (all of n, t, Δ, ε, window,
//!    interval and window length), its span lies in the window and agrees with the batch's
//!    start and end, and it overlaps no span of the same meter already accepted (so a batch
//!    counts once); the lane parses as a ciphertext of the billing parameter set with a level
//!    to spare;
//! 3. adds each accepted lane to a running sum ([`crate::outputs::LaneSum`]: the request's
//!    lanes are never all held at once) and counts, per slot, the meters whose spans cover it;
//! 4. decides per hour: an hour released before for the group is returned from its stored
//!    row (`ALREADY_RELEASED`, no new draw); an hour with an interval below
//!    [`SharePlan::presence_floor`] or [`MIN_PRESENT`] meters is withheld (`TOO_FEW_PRESENT`,
//!    releasable later when more batches arrive); the rest are released;
//! 5. draws its top-up for the released hours' slots (the shares of the meters missing below
//!    k = n − t, from the operating system's CSPRNG), restricts the sum to the released hours'
//!    slots (a 0/1 plaintext multiplication: withheld hours and slots past the window are zero
//!    in what is decrypted), adds the top-up **under encryption** and decrypts that one
//!    ciphertext through [`crate::outputs`] — so no value the key authority ever holds
//!    in the clear carries less than half a draw of noise, and what leaves carries at least one
//!    full draw per interval from parties outside any tolerated coalition; the top-up is never
//!    stored or logged;
//! 6. in **one** transaction under the audit log's append lock: re-checks that no hour was
//!    released meanwhile (one that was is answered from its row instead), inserts one
//!    `group_total_releases` row per released hour (its values, the fewest meters present,
//!    ε per reading and Δ: the privacy cost) and appends the request's audit entry (granted
//!    when an hour was released, refused with the reason otherwise) and one refused entry per
//!    refused input; only after the commit does the answer leave.
//!
//! # Privacy cost
//!
//! A home's reading is a term of exactly one released interval total, which carries at least
//! one discrete Laplace draw of scale Δ/ε: each release costs ε per reading (the hour's total
//! and its intervals are one release: the hour is their sum). A (group, hour) is released
//! once, so asking again costs nothing more; a meter's lane is in one group (its registered
//! one) and each of its batches counts once.
//!
//! # Storage (schema in `migrations/key-authority/`)
//!
//! ```text
//! group_total_releases(noise_group, hour_start (RFC 3339, UTC), total_wh, interval_wh (whole
//!     Wh per interval, comma-separated), min_present, epsilon, sensitivity_wh, audit_seq,
//!     released_at_us)  PRIMARY KEY (noise_group, hour_start)
//! ```

mod policy;
mod service;
mod store;

pub use policy::{
    GroupHourOutcome, GroupTotalsDecision, GroupTotalsHeader, GroupTotalsInput,
    GroupTotalsReleaser, HourStatus, InputRefusal,
};
pub use seer_core::circuits::group_totals::MIN_PRESENT;
pub use service::{GROUP_TOTALS_CALLERS, GroupTotalsService};
pub use store::StoredHour;

/// Audit request kind of a group-totals release.
pub const GROUP_TOTALS_KIND: &str = "group-totals";
/// Audit request kind of one input refused by a group-totals release.
pub const GROUP_TOTALS_INPUT_KIND: &str = "group-totals.input";

#[cfg(doc)]
use seer_core::dp::SharePlan;
