//! Upload against an in-test utility server with the documented `seer.v1.Ingest` semantics:
//! ordering, the token, crashes between commit and send and between send and ack, a
//! connection dropped mid-stream, lagging and lying cursors, foreign content, and public-key
//! pinning.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use meter_client::queue::StateStore;
use meter_client::upload::to_wire;
use meter_client::{Error, run_with_noise};

/// The server's batches for the test meter, as sent.
fn stored(server: &UtilityServer) -> Vec<seer_proto::v1::UploadBatch> {
    server
        .state
        .lock()
        .unwrap()
        .meters
        .get("meter-7")
        .map(|l| l.iter().map(|s| s.batch.clone()).collect())
        .unwrap_or_default()
}

async fn epsilon_spent(dir: &std::path::Path) -> f64 {
    let store = StateStore::open(dir).await.unwrap();
    let s = store.summary().await.unwrap();
    store.close().await;
    s.accountant.map_or(0.0, |a| a.spent())
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_in_order_with_the_token_once_the_server_comes_up() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    // A free port with nothing listening yet: the client retries until the server starts.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}");
    let s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 2, 25),
        date(2024, 3, 3),
    );
    let (observer, events) = collector();
    let run = tokio::spawn(run_with_noise(s, seeded_noise(1), observer));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, server) = start_utility_on(addr).await;
    let report = run.await.unwrap().unwrap();

    assert_eq!(report.queued, 7);
    assert_eq!(report.still_queued, 0);
    let upload = report.upload.unwrap();
    assert_eq!(upload.acknowledged, 7);
    assert_eq!(upload.duplicates, 0);
    let got = stored(&server);
    assert_eq!(
        got.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(got[4].period, "2024-02");
    assert_eq!(got[5].period, "2024-03");
    assert_eq!(got[0].start, "2024-02-25T00:00:00+00:00");
    assert_eq!(got[0].readings, 96);
    let state = server.state.lock().unwrap();
    assert!(!state.auth_seen.is_empty());
    assert!(
        state
            .auth_seen
            .iter()
            .all(|a| a.as_deref() == Some("Bearer test-household-token"))
    );
    drop(state);
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, meter_client::Event::Acknowledged { sequence: 7, .. }))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_commit_and_send_resends_the_same_bytes_without_new_charges() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, _) = collector();
    // "Crash" after committing: build and queue, never send.
    let offline = settings(dir.path(), &ka, None, date(2024, 6, 1), date(2024, 6, 5));
    run_with_noise(offline, seeded_noise(1), observer.clone())
        .await
        .unwrap();
    let queued = queued_batches(dir.path()).await;
    assert_eq!(queued.len(), 4);
    let spent = epsilon_spent(dir.path()).await;

    // Restart, online, with a different noise seed: nothing is rebuilt.
    let (url, server) = start_utility().await;
    let online = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 6, 1),
        date(2024, 6, 5),
    );
    let report = run_with_noise(online, seeded_noise(99), observer)
        .await
        .unwrap();
    assert_eq!(report.queued, 0);
    assert_eq!(report.upload.unwrap().acknowledged, 4);
    let sent = stored(&server);
    let expected: Vec<_> = queued.iter().map(|b| to_wire("meter-7", b)).collect();
    assert_eq!(sent, expected, "identical bytes, identical sequences");
    assert_eq!(epsilon_spent(dir.path()).await, spent, "no second charge");
    assert!(queued_batches(dir.path()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_send_and_ack_resumes_from_the_cursor() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = start_utility().await;
    let (observer, _) = collector();
    // The server stores batch 3 and the link dies before its ack; the meter gives up at once
    // (as if it had crashed): batches 3.. stay queued.
    server.state.lock().unwrap().drop_after = Some(3);
    let mut s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 7, 1),
        date(2024, 7, 7),
    );
    s.max_attempts = 1;
    let err = run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RetriesExhausted { .. }), "{err}");
    let queued = queued_batches(dir.path()).await;
    let queued_seqs: Vec<u64> = queued.iter().map(|b| b.sequence).collect();
    assert_eq!(
        queued_seqs,
        vec![3, 4, 5, 6],
        "only acked batches left the queue"
    );
    let spent = epsilon_spent(dir.path()).await;

    // Restart: the cursor says 3, so batch 3 is dropped locally, 4..6 are sent.
    s.max_attempts = 5;
    let report = run_with_noise(s, seeded_noise(2), observer).await.unwrap();
    assert_eq!(report.queued, 0);
    let upload = report.upload.unwrap();
    assert_eq!(upload.skipped_by_cursor, 1);
    assert_eq!(upload.acknowledged, 3);
    let sent = stored(&server);
    assert_eq!(
        sent.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>(),
        "each sequence stored exactly once"
    );
    for b in &queued {
        assert_eq!(sent[(b.sequence - 1) as usize], to_wire("meter-7", b));
    }
    assert_eq!(epsilon_spent(dir.path()).await, spent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_mid_stream_is_resumed() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = start_utility().await;
    server.state.lock().unwrap().drop_after = Some(2);
    let (observer, events) = collector();
    let s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 8, 1),
        date(2024, 8, 6),
    );
    let report = run_with_noise(s, seeded_noise(1), observer).await.unwrap();
    let upload = report.upload.unwrap();
    assert!(upload.reconnects >= 1);
    assert_eq!(upload.skipped_by_cursor, 1);
    assert_eq!(report.still_queued, 0);
    assert_eq!(
        stored(&server)
            .iter()
            .map(|b| b.sequence)
            .collect::<Vec<_>>(),
        (1..=5).collect::<Vec<_>>()
    );
    assert!(server.state.lock().unwrap().uploads >= 2);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, meter_client::Event::Reconnecting { .. }))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_cursor_gets_duplicate_acks_and_foreign_content_is_refused() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let (url, server) = start_utility().await;
    let (observer, _) = collector();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 9, 1),
        date(2024, 9, 3),
    );
    run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap();

    // Another state directory under the same meter id (different ciphertexts for 1 and 2),
    // behind a cursor that lags by two: the server refuses the different content.
    let copy = tempfile::tempdir().unwrap();
    let offline = settings(copy.path(), &ka, None, date(2024, 9, 1), date(2024, 9, 3));
    run_with_noise(offline, seeded_noise(1), observer.clone())
        .await
        .unwrap();
    server.state.lock().unwrap().cursor_lag = 2;
    let online = settings(
        copy.path(),
        &ka,
        Some(&url),
        date(2024, 9, 1),
        date(2024, 9, 3),
    );
    let err = run_with_noise(online, seeded_noise(1), observer.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rpc {
                code: tonic::Code::AlreadyExists,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        queued_batches(copy.path()).await.len(),
        2,
        "nothing removed"
    );

    // Duplicates: a meter resends batches the server already holds with identical content
    // (its cursor lags by two): both are acknowledged as duplicates and leave the queue. (A
    // deployment of its own: the key authority above holds the first meter's receipts, which
    // differ from this one's.)
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let replay = tempfile::tempdir().unwrap();
    let offline = settings(replay.path(), &ka, None, date(2024, 9, 1), date(2024, 9, 3));
    run_with_noise(offline, seeded_noise(1), observer.clone())
        .await
        .unwrap();
    let replayed = queued_batches(replay.path()).await;
    let (dup_url, dup_server) = start_utility().await;
    {
        let mut state = dup_server.state.lock().unwrap();
        let list = replayed
            .iter()
            .map(|b| {
                let wire = to_wire("meter-7", b);
                Stored {
                    digest: blake3::hash(&prost::Message::encode_to_vec(&wire)),
                    batch: wire,
                }
            })
            .collect();
        state.meters.insert("meter-7".into(), list);
        state.cursor_lag = 2;
    }
    let online = settings(
        replay.path(),
        &ka,
        Some(&dup_url),
        date(2024, 9, 1),
        date(2024, 9, 3),
    );
    let report = run_with_noise(online, seeded_noise(1), observer)
        .await
        .unwrap();
    let upload = report.upload.unwrap();
    assert_eq!(upload.acknowledged, 2);
    assert_eq!(upload.duplicates, 2);
    assert_eq!(report.still_queued, 0);
    assert_eq!(dup_server.state.lock().unwrap().meters["meter-7"].len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_ahead_of_the_meter_or_a_gap_is_never_papered_over() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let (url, server) = start_utility().await;
    let (observer, _) = collector();
    let dir = tempfile::tempdir().unwrap();
    // A server claiming sequences this meter never built.
    server.state.lock().unwrap().cursor_lead = 5;
    let s = settings(
        dir.path(),
        &ka,
        Some(&url),
        date(2024, 10, 1),
        date(2024, 10, 3),
    );
    let err = run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CursorMismatch { .. }), "{err}");
    assert_eq!(queued_batches(dir.path()).await.len(), 2, "nothing removed");

    // A cursor one ahead: the meter drops batch 1 as stored and sends 2, which the server
    // refuses as a gap; the meter retries, then gives up with the gap as the reason.
    server.state.lock().unwrap().cursor_lead = 1;
    let err = run_with_noise(s, seeded_noise(1), observer)
        .await
        .unwrap_err();
    match err {
        Error::RetriesExhausted { last, .. } => assert!(
            matches!(
                *last,
                Error::Rpc {
                    code: tonic::Code::FailedPrecondition,
                    ..
                }
            ),
            "{last}"
        ),
        other => panic!("{other}"),
    }
    assert!(stored(&server).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_public_key_is_refused() {
    let (ka, key) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, events) = collector();
    let s = settings(dir.path(), &ka, None, date(2024, 11, 1), date(2024, 11, 2));
    let r = run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap();
    assert!(r.key_pinned_now);
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        meter_client::Event::KeyPinned {
            first_use: true,
            ..
        }
    )));

    // The key authority now serves another key, which the configuration also accepts (a
    // rotation window): the key recorded in the state still refuses it.
    let rotated = TestKeys::generate().public_key;
    *key.lock().unwrap() = rotated.clone();
    let mut later = s;
    later.public_key_pins.push(pin_of(&rotated));
    later.range.until = Some(date(2024, 11, 3));
    let err = run_with_noise(later, seeded_noise(1), observer)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PublicKeyChanged { .. }), "{err}");
    assert!(err.to_string().contains("fresh --state"), "{err}");
    assert_eq!(
        queued_batches(dir.path()).await.len(),
        1,
        "nothing encrypted under the new key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_other_than_the_configured_fingerprint_is_refused_on_first_use() {
    // The key authority (or whoever answers in its place) serves a key the configuration does
    // not pin: the meter refuses it before anything is encrypted or recorded, even on its
    // very first run.
    let (ka, _key) = start_key_authority(TestKeys::generate().public_key).await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, _events) = collector();
    let s = settings(dir.path(), &ka, None, date(2024, 11, 1), date(2024, 11, 2));
    let err = run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PublicKeyPinMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("key-authority fingerprints"),
        "the error says what to do: {err}"
    );
    assert!(queued_batches(dir.path()).await.is_empty());

    // Without any pin for the parameter set the meter refuses too (no trust on first use).
    let mut unpinned = s;
    unpinned.public_key_pins.clear();
    let err = run_with_noise(unpinned, seeded_noise(1), observer)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PublicKeyNotPinned { .. }), "{err}");
    assert!(err.to_string().contains("--public-key-pin"), "{err}");
    assert!(queued_batches(dir.path()).await.is_empty());
}
