//! Receipts against an in-test key authority with the documented `seer.v1.Receipts` semantics
//! (idempotent on an identical receipt, ALREADY_EXISTS on a different digest, injected
//! outages and lost acks) beside the in-test utility server: every batch's receipt with the
//! billing lane's digest and the closing flag, in order; a batch leaves the queue only when both
//! the upload and the receipt are acknowledged; a crash between the two; an outage; a conflict.

mod common;

use std::time::Duration;

use common::*;
use meter_client::queue::StateStore;
use meter_client::{Error, Event, run_with_noise};
use seer_core::circuits::billing::BillingLayout;
use seer_core::tariff::Tariff;
use seer_proto::v1::{ReceiptRequest, UploadBatch};

/// The utility server's batches for the test meter, as sent.
fn stored(server: &UtilityServer) -> Vec<UploadBatch> {
    server
        .state
        .lock()
        .unwrap()
        .meters
        .get("meter-7")
        .map(|l| l.iter().map(|s| s.batch.clone()).collect())
        .unwrap_or_default()
}

/// Checks `receipts` against the batches the utility server holds: one per batch, with the
/// BLAKE3 of the lane bytes the utility received (computed here), the batch's period, group
/// and position, and `closes_period` exactly on the batches ending at their month's end.
fn check_receipts_match(receipts: &[ReceiptRequest], batches: &[UploadBatch]) {
    assert_eq!(receipts.len(), batches.len());
    let layout = BillingLayout::try_new(&Tariff::bescom(), &keys().ctx).unwrap();
    let home = layout.locate(5);
    for (r, b) in receipts.iter().zip(batches) {
        assert_eq!(r.meter_id, "meter-7");
        assert_eq!(r.sequence, b.sequence);
        assert_eq!(
            r.billing_lane_blake3,
            blake3::hash(&b.billing_lane).as_bytes().to_vec(),
            "batch {}: the receipt's digest is the lane's",
            b.sequence
        );
        assert_eq!(r.period, b.period);
        assert_eq!(r.billing_group as usize, home.group);
        assert_eq!(r.billing_position as usize, home.position);
        assert_eq!(
            (r.billing_group, r.billing_position),
            (b.billing_group, b.billing_position)
        );
        // The batch ends at the first instant of a month (batches never span two months).
        let closes = b.end.ends_with("-01T00:00:00+00:00");
        assert_eq!(
            r.closes_period, closes,
            "batch {} ends {}",
            b.sequence, b.end
        );
    }
}

async fn summary(dir: &std::path::Path) -> meter_client::queue::StateSummary {
    let store = StateStore::open(dir).await.unwrap();
    let s = store.summary().await.unwrap();
    store.close().await;
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn every_batch_gets_a_receipt_with_its_lane_digest_and_closing_flag_in_order() {
    let (ka, _, receipts) = start_key_authority_with_receipts(keys().public_key.clone()).await;
    let (url, server) = start_utility().await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, events) = collector();
    // February 27th to March 2nd: the third batch (February 29th) closes February.
    let s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 2, 27),
        date(2024, 3, 3),
    );
    let report = run_with_noise(s, seeded_noise(1), observer).await.unwrap();
    assert_eq!(report.queued, 5);
    assert_eq!(report.still_queued, 0);
    let r = report.receipts.unwrap();
    assert_eq!((r.recorded, r.duplicates), (5, 0));
    assert_eq!(report.upload.unwrap().acknowledged, 5);

    let batches = stored(&server);
    let recorded = receipts.recorded();
    check_receipts_match(&recorded, &batches);
    assert_eq!(
        recorded.iter().map(|r| r.closes_period).collect::<Vec<_>>(),
        vec![false, false, true, false, false]
    );
    assert_eq!(batches[2].end, "2024-03-01T00:00:00+00:00");
    {
        let state = receipts.state.lock().unwrap();
        // In order, once each, with the household token.
        assert_eq!(
            state.calls.iter().map(|c| c.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert!(
            state
                .auth_seen
                .iter()
                .all(|a| a.as_deref() == Some("Bearer test-household-token"))
        );
    }
    let recorded_events: Vec<u64> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::ReceiptRecorded { sequence, .. } => Some(*sequence),
            _ => None,
        })
        .collect();
    assert_eq!(recorded_events, vec![1, 2, 3, 4, 5]);
    let s = summary(dir.path()).await;
    assert_eq!((s.queued, s.receipts_pending, s.acked_through), (0, 0, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_upload_ack_but_before_the_receipt_ack_records_it_on_restart() {
    let (ka, _, receipts) = start_key_authority_with_receipts(keys().public_key.clone()).await;
    let (url, server) = start_utility().await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, _) = collector();
    // The key authority records receipt 1 but its ack is lost, and the meter gives up at once
    // (as if it had crashed); the utility server acknowledges every batch meanwhile.
    receipts.state.lock().unwrap().lose_acks = true;
    let mut s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 4, 29),
        date(2024, 5, 2),
    );
    s.max_attempts = 1;
    let err = run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap_err();
    match &err {
        Error::RetriesExhausted { last, .. } => assert!(
            matches!(
                **last,
                Error::Rpc {
                    method: "Receipts.Record",
                    code: tonic::Code::Unavailable,
                    ..
                }
            ),
            "{last}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(stored(&server).len(), 3, "every batch uploaded and acked");
    let queued = queued_batches(dir.path()).await;
    assert_eq!(
        queued.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "no batch leaves the queue without its receipt's ack"
    );
    let sm = summary(dir.path()).await;
    assert_eq!((sm.acked_through, sm.receipts_pending), (3, 3));
    assert_eq!(receipts.recorded().len(), 1);

    // Restart: the receipts are recorded (the first as a duplicate: the same digest), nothing
    // is rebuilt or uploaded again, and the queue empties.
    receipts.state.lock().unwrap().lose_acks = false;
    s.max_attempts = 5;
    let report = run_with_noise(s, seeded_noise(2), observer).await.unwrap();
    assert_eq!(report.queued, 0);
    let upload = report.upload.unwrap();
    assert_eq!((upload.acknowledged, upload.skipped_by_cursor), (0, 0));
    let r = report.receipts.unwrap();
    assert_eq!((r.recorded, r.duplicates), (3, 1));
    assert_eq!(report.still_queued, 0);
    assert!(queued_batches(dir.path()).await.is_empty());

    let batches = stored(&server);
    assert_eq!(batches.len(), 3);
    check_receipts_match(&receipts.recorded(), &batches);
    // April 30th closes April.
    assert!(receipts.recorded()[1].closes_period);
    // Every resend of a receipt is identical to the first.
    let state = receipts.state.lock().unwrap();
    for seq in 1..=3 {
        let calls: Vec<_> = state.calls.iter().filter(|c| c.sequence == seq).collect();
        assert!(!calls.is_empty());
        assert!(
            calls.iter().all(|c| *c == calls[0]),
            "receipt {seq} changed"
        );
    }
    assert_eq!(state.calls.iter().filter(|c| c.sequence == 1).count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_receipt_service_is_down_batches_stay_queued_and_the_client_retries() {
    let (ka, _, receipts) = start_key_authority_with_receipts(keys().public_key.clone()).await;
    let (url, server) = start_utility().await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, events) = collector();
    receipts.state.lock().unwrap().unavailable = true;
    let mut s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 6, 1),
        date(2024, 6, 4),
    );
    // A short outage budget first: the client retries, gives up, keeps everything queued.
    s.max_attempts = 3;
    let err = run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap_err();
    match &err {
        Error::RetriesExhausted { attempts: 3, last } => {
            assert!(last.to_string().contains("Receipts.Record"), "{last}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        receipts.state.lock().unwrap().calls.len(),
        3,
        "three attempts"
    );
    assert!(receipts.recorded().is_empty());
    assert_eq!(stored(&server).len(), 3);
    assert_eq!(queued_batches(dir.path()).await.len(), 3);

    // A longer budget: the service comes back during the run, and the client succeeds.
    s.max_attempts = 1_000;
    let run = tokio::spawn(run_with_noise(s, seeded_noise(2), observer));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receipts.state.lock().unwrap().calls.len() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "no retries seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(receipts.recorded().is_empty());
    receipts.state.lock().unwrap().unavailable = false;
    let report = run.await.unwrap().unwrap();
    let r = report.receipts.unwrap();
    assert_eq!((r.recorded, r.duplicates), (3, 0));
    assert!(r.reconnects >= 3, "{}", r.reconnects);
    assert_eq!(report.still_queued, 0);
    check_receipts_match(&receipts.recorded(), &stored(&server));
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        Event::Reconnecting { error, .. } if error.contains("Receipts.Record")
    )));
    assert!(queued_batches(dir.path()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_different_receipt_under_a_recorded_sequence_is_fatal_and_named() {
    let (ka, _, receipts) = start_key_authority_with_receipts(keys().public_key.clone()).await;
    let (url, server) = start_utility().await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, _) = collector();
    // The key authority already holds another digest under sequence 2 of this meter.
    let foreign = ReceiptRequest {
        meter_id: "meter-7".into(),
        sequence: 2,
        period: "2024-07".into(),
        billing_lane_blake3: vec![0; 32],
        billing_group: 0,
        billing_position: 5,
        closes_period: false,
        signature: Vec::new(),
    };
    receipts
        .state
        .lock()
        .unwrap()
        .recorded
        .insert(("meter-7".into(), 2), foreign.clone());
    let s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 7, 1),
        date(2024, 7, 4),
    );
    for _ in 0..2 {
        // A rerun meets the same refusal: nothing is papered over.
        let err = run_with_noise(s.clone(), seeded_noise(1), observer.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ReceiptConflict { sequence: 2, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("batch 2") && text.contains("meter-7"),
            "{text}"
        );
        assert_eq!(
            queued_batches(dir.path())
                .await
                .iter()
                .map(|b| b.sequence)
                .collect::<Vec<_>>(),
            vec![2, 3],
            "batch 1 is done; 2 and 3 stay queued"
        );
    }
    let recorded = receipts.recorded();
    assert_eq!(
        recorded.len(),
        2,
        "receipt 3 is not recorded past the conflict"
    );
    assert_eq!(
        recorded[1], foreign,
        "the key authority's record is untouched"
    );
    let state = receipts.state.lock().unwrap();
    assert!(state.calls.iter().all(|c| c.sequence <= 2), "in order");
    drop(state);
    assert_eq!(stored(&server).len(), 3);
}
