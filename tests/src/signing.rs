//! Meters' signatures in the end-to-end tests: analytics receipts and upload headers signed
//! with a meter's enrolled device key, as `meter-client` signs them, for tests that build a
//! meter's inputs in-process (the deep analytics suites) or act as a rogue meter (which may
//! lie about itself, never sign for another).

use std::path::Path;

use anyhow::Context as _;
use meter_client::analytics::{receipt_statement, sign_receipt};
use seer_auth::device::AnalyticsReceiptStatement;
use seer_proto::v1::{AnalyticsInputHeader, AnalyticsReceiptRequest};

use crate::deployment::Deployment;

/// `receipt` (for its own meter) signed by that meter's device key, enrolled first when
/// needed; its model and group are kept as set.
///
/// # Errors
/// When enrolment fails or the receipt is malformed.
pub fn signed_receipt(
    deployment: &Deployment,
    mut receipt: AnalyticsReceiptRequest,
) -> anyhow::Result<AnalyticsReceiptRequest> {
    let identity = deployment.identity(&receipt.meter_id)?;
    let (model, group) = (receipt.model_blake3.clone(), receipt.group);
    sign_receipt(&identity, &mut receipt, &model, group).context("signing the receipt")?;
    Ok(receipt)
}

/// `header` of the upload of `inputs` signed by its meter's device key (enrolled first when
/// needed), with the meter's certificate: the lane, ε and readings per day are kept as set.
///
/// # Errors
/// When enrolment fails.
pub fn signed_header(
    deployment: &Deployment,
    mut header: AnalyticsInputHeader,
    inputs: &[Vec<u8>],
) -> anyhow::Result<AnalyticsInputHeader> {
    let identity = deployment.identity(&header.meter_id)?;
    let statement = AnalyticsReceiptStatement {
        kind: header.kind.clone(),
        meter_id: header.meter_id.clone(),
        input_id: header.input_id.clone(),
        model_blake3: header.model_blake3.clone(),
        slot_offset: header.slot_offset,
        slot_count: header.slot_count,
        first_period: header.first_period.clone(),
        group: header.group,
        input_blake3: inputs
            .iter()
            .map(|input| *blake3::hash(input).as_bytes())
            .collect(),
        lane: header.lane.clone(),
        epsilon: header.epsilon,
        readings_per_day: header.readings_per_day,
    };
    header.signature = identity.sign(&statement);
    header.meter_certificate = identity.certificate().to_bytes();
    Ok(header)
}

/// The statement of `receipt`, for checks against what was signed.
///
/// # Errors
/// When a digest is not 32 bytes.
pub fn statement_of(
    receipt: &AnalyticsReceiptRequest,
) -> anyhow::Result<AnalyticsReceiptStatement> {
    receipt_statement(receipt).context("the receipt's statement")
}

/// Enrols `meter` into `state` (a state directory of the meter's choosing).
///
/// # Errors
/// When enrolment fails.
pub fn enrol_into(deployment: &Deployment, meter: &str, state: &Path) -> anyhow::Result<()> {
    deployment.enrol_into(meter, state)
}
