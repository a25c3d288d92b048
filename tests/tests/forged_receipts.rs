//! The forged-receipt attack suite: a misbehaving utility, across real processes over real
//! gRPC, holding everything a utility holds — its database (every stored batch with the
//! meter's signature and certificate), its own utility token, every request it ever received
//! and every token a meter sent it (a household token whose audience is the utility) — tries
//! to make the key authority release what no meter asked it to:
//!
//! - (a) a forged receipt for a stored lane (another sequence, "closing"): unsigned, with
//!   random bytes, or with a genuine signature the meter made over something else;
//! - (b) a genuine receipt replayed under another sequence or period, or altered (closing
//!   flipped, position moved);
//! - (c) another meter's lane under a fresh meter, enrolled or not;
//! - (d) the meter's utility-audience token presented to the key authority;
//! - (e) an analytics input relabelled to another lane or ε, at the utility (the key
//!   authority's side is `key-authority/tests/signed_receipts.rs`);
//! - (f) a batch altered on the way with a valid frame (checksum recomputed), then the real
//!   batch uploaded: the altered one refused and not stored, the real one stored.
//!
//! Every forgery fails with a clear status, nothing is released (the key authority refuses
//! the bill a forged closing receipt would have released), and each refusal at the key
//! authority is in its audit log. A genuine resend is still acknowledged as a duplicate.

use std::path::Path;

use meter_client::identity::DeviceIdentity;
use seer_auth::device::{AnalyticsReceiptStatement, BillingReceiptStatement};
use seer_ckks::{CkksContext, Encryptor, PublicKey};
use seer_core::circuits::billing;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1;
use seer_proto::v1::analytics_ingest_client::AnalyticsIngestClient;
use seer_proto::v1::ingest_client::IngestClient;
use seer_proto::v1::receipts_client::ReceiptsClient;
use seer_proto::v1::release_client::ReleaseClient;
use seer_tests::audit::{AuditRow, audit_entries, has_refusal};
use seer_tests::deployment::{Deployment, DeploymentOptions};
use tonic::Code;
use tonic::transport::Channel;

const METER: &str = "M-0007";
const FRESH: &str = "M-0999";
const STRANGER: &str = "M-0998";
const SOURCE: &str = "synthetic:11:7";
const PERIOD: &str = "2024-01";

fn request<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// A channel over mutual TLS with the test process's identity (the utility's certificate), or
/// the one [`seer_tls::with_client_identity`] set.
async fn channel(url: &str) -> Channel {
    seer_tls::endpoint(url)
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

/// A channel as `meter`: with its own certificate (the strongest attacker holds the meter's
/// TLS identity too, so that only the signatures stand in its way).
async fn channel_as_meter(url: &str, meter: &str) -> Channel {
    let files = seer_tests::pki::files(seer_tls::PartyKind::Meter, meter).expect("certificate");
    seer_tls::with_client_identity(&files, channel(url))
        .await
        .expect("the meter's identity")
}

/// One stored batch as the utility holds it.
struct Stored {
    sequence: u64,
    billing_lane: Vec<u8>,
    signature: Vec<u8>,
}

/// A stored batch's columns: sequence, billing lane, signature, meter certificate.
type BatchRow = (i64, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

async fn stored_batches(database: &Path, meter: &str) -> Vec<Stored> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(database)
                .read_only(true),
        )
        .await
        .expect("utility database");
    let rows: Vec<BatchRow> = sqlx::query_as(
        "SELECT sequence, billing_lane, signature, meter_certificate FROM batches \
         WHERE meter_id = $1 ORDER BY sequence",
    )
    .bind(meter)
    .fetch_all(&pool)
    .await
    .expect("batches");
    pool.close().await;
    rows.into_iter()
        .map(|(sequence, billing_lane, signature, certificate)| {
            // The utility keeps what it verified: the signature and the certificate.
            assert!(certificate.is_some_and(|c| !c.is_empty()));
            Stored {
                sequence: u64::try_from(sequence).expect("sequence"),
                billing_lane,
                signature: signature.expect("stored with its signature"),
            }
        })
        .collect()
}

fn receipt(sequence: u64, period: &str, lane: &[u8], closes: bool) -> v1::ReceiptRequest {
    v1::ReceiptRequest {
        meter_id: METER.into(),
        sequence,
        period: period.into(),
        billing_lane_blake3: blake3::hash(lane).as_bytes().to_vec(),
        billing_group: 0,
        billing_position: 7,
        closes_period: closes,
        signature: Vec::new(),
    }
}

/// The statement a meter signs for `receipt`.
fn statement(receipt: &v1::ReceiptRequest) -> BillingReceiptStatement {
    BillingReceiptStatement {
        meter_id: receipt.meter_id.clone(),
        sequence: receipt.sequence,
        period: receipt.period.clone(),
        params_id: billing::PARAMETER_SET.id(),
        billing_lane_blake3: receipt
            .billing_lane_blake3
            .as_slice()
            .try_into()
            .expect("32 bytes"),
        billing_group: receipt.billing_group,
        billing_position: receipt.billing_position,
        closes_period: receipt.closes_period,
    }
}

/// Records `receipt` at the key authority `uri` with `token`, over a connection with the
/// certificate of the party the token names (the strongest attacker holds both).
async fn record(
    uri: &str,
    receipt: v1::ReceiptRequest,
    token: &str,
) -> Result<bool, tonic::Status> {
    let files = seer_tests::pki::files_for_token(token).expect("certificate");
    seer_tls::with_client_identity(&files, async {
        ReceiptsClient::new(channel(uri).await)
            .with_seer_limits()
            .record(request(receipt, token))
            .await
            .map(|ack| ack.into_inner().duplicate)
    })
    .await
    .expect("the token's identity")
}

fn refused(result: Result<bool, tonic::Status>, code: Code, what: &str) -> String {
    match result {
        Err(status) if status.code() == code => status.message().to_owned(),
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

fn refusals(audit: &[AuditRow], kind: &str) -> usize {
    audit
        .iter()
        .filter(|(k, _, decision, _)| k == kind && decision == "refused")
        .count()
}

#[test]
fn a_utility_holding_everything_it_received_cannot_forge_a_receipt() {
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let runtime = seer_tests::runtime().expect("runtime");
    // The meter uploads January 1-21 (three weekly batches; none closes the month), signed.
    deployment
        .meter(METER, SOURCE)
        .args(["--from", "2024-01-01", "--until", "2024-01-22"])
        .run()
        .expect("the meter runs");
    let utility_db = deployment.utility_sqlite_file().expect("SQLite utility");
    let audit_db = deployment.dir().join("ka/audit.db");

    runtime.block_on(async {
        let stored = stored_batches(&utility_db, METER).await;
        assert_eq!(stored.len(), 3, "three weekly batches stored");
        let ka = channel(&deployment.authority().uri()).await;
        let receipts = deployment.authority().uri();
        // What the utility holds: the token the meter sent it (audience: the utility), and —
        // the strongest case, as if it had one — a household token for the key authority.
        let to_utility = deployment
            .household_token(METER, "seer-utility-server")
            .expect("utility-audience token");
        let to_ka = deployment
            .household_token(METER, "seer-key-authority")
            .expect("key-authority-audience token");
        let utility = deployment.token("utility", None).expect("utility token");
        let before = audit_entries(&audit_db).await.expect("audit");
        let receipts_granted = |audit: &[AuditRow]| {
            audit
                .iter()
                .filter(|(k, m, d, _)| {
                    k == "receipt" && d == "granted" && m.as_deref() == Some(METER)
                })
                .count()
        };
        assert_eq!(
            receipts_granted(&before),
            3,
            "each recorded receipt is an audit entry"
        );

        // (a) A forged closing receipt for a stored lane, under the next sequence.
        let week2 = &stored[1];
        let forged = receipt(4, PERIOD, &week2.billing_lane, true);
        let message = refused(
            record(&receipts, forged.clone(), &to_ka).await,
            Code::PermissionDenied,
            "an unsigned forged receipt",
        );
        assert!(message.contains("not signed"), "{message}");
        let random = v1::ReceiptRequest {
            signature: vec![0x5a; 64],
            ..forged.clone()
        };
        refused(
            record(&receipts, random, &to_ka).await,
            Code::PermissionDenied,
            "a receipt with a random signature",
        );
        // The meter's genuine batch signature (the utility stores it) over another statement.
        let borrowed = v1::ReceiptRequest {
            signature: week2.signature.clone(),
            ..forged.clone()
        };
        let message = refused(
            record(&receipts, borrowed, &to_ka).await,
            Code::PermissionDenied,
            "a receipt signed with the batch's signature",
        );
        assert!(message.contains("signature"), "{message}");

        // (b) A genuine receipt (as a relay would capture it: the meter's own signature),
        // replayed: identical, it is a duplicate; under another sequence or period, or with
        // closing flipped or the position moved, it is refused.
        let identity =
            DeviceIdentity::load(&deployment.dir().join(format!("meter-{METER}")), METER)
                .expect("the meter's identity");
        let mut genuine = receipt(week2.sequence, PERIOD, &week2.billing_lane, false);
        genuine.signature = identity.sign(&statement(&genuine));
        assert!(
            record(&receipts, genuine.clone(), &to_ka)
                .await
                .expect("an identical resend"),
            "a genuine resend is a duplicate"
        );
        for (what, altered) in [
            (
                "another sequence",
                v1::ReceiptRequest {
                    sequence: 4,
                    ..genuine.clone()
                },
            ),
            (
                "another period",
                v1::ReceiptRequest {
                    period: "2024-02".into(),
                    sequence: 4,
                    ..genuine.clone()
                },
            ),
            (
                "closing flipped",
                v1::ReceiptRequest {
                    closes_period: true,
                    sequence: 4,
                    ..genuine.clone()
                },
            ),
            (
                "position moved",
                v1::ReceiptRequest {
                    billing_position: 8,
                    sequence: 4,
                    ..genuine.clone()
                },
            ),
        ] {
            let message = refused(
                record(&receipts, altered, &to_ka).await,
                Code::PermissionDenied,
                what,
            );
            assert!(message.contains("signature"), "{what}: {message}");
        }

        // (c) Another meter's lane under a fresh meter: never enrolled, or enrolled (the
        // utility holds no device key of it; the meter's own signatures are not its).
        for fresh in [FRESH, STRANGER] {
            if fresh == STRANGER {
                deployment.enrol(STRANGER).expect("enrolled");
            }
            let token = deployment
                .household_token(fresh, "seer-key-authority")
                .expect("token");
            let under_fresh = v1::ReceiptRequest {
                meter_id: fresh.into(),
                sequence: 1,
                billing_position: 9,
                signature: week2.signature.clone(),
                ..receipt(1, PERIOD, &stored[2].billing_lane, true)
            };
            let message = refused(
                record(&receipts, under_fresh.clone(), &token).await,
                Code::PermissionDenied,
                "another meter's lane under a fresh meter",
            );
            if fresh == FRESH {
                assert!(message.contains("not enrolled"), "{message}");
            }
            let unsigned = v1::ReceiptRequest {
                signature: Vec::new(),
                ..under_fresh
            };
            refused(
                record(&receipts, unsigned, &token).await,
                Code::PermissionDenied,
                "an unsigned receipt for a fresh meter",
            );
        }

        // (d) The token the meter sent to the utility, presented to the key authority, even
        // with a genuinely signed receipt: refused (wrong audience), and logged.
        let mut signed_forgery = receipt(4, PERIOD, &week2.billing_lane, true);
        signed_forgery.signature = identity.sign(&statement(&signed_forgery));
        refused(
            record(&receipts, signed_forgery, &to_utility).await,
            Code::Unauthenticated,
            "a utility-audience household token at the key authority",
        );

        // Nothing was recorded, so nothing a forgery names can be released: the bill of the
        // stored lane under the forged closing receipt is refused whole.
        let mut release = ReleaseClient::new(ka.clone()).with_seer_limits();
        let answer = release
            .release_bills(request(
                v1::ReleaseBillsRequest {
                    period: PERIOD.into(),
                    billing_group: 0,
                    inputs: vec![v1::BillInput {
                        meter_id: METER.into(),
                        sequence: 4,
                        billing_lane: week2.billing_lane.clone(),
                    }],
                    result: Vec::new(),
                    cells: Vec::new(),
                },
                &utility,
            ))
            .await
            .expect("answered")
            .into_inner();
        assert!(answer.bills.iter().all(|bill| !bill.granted), "{answer:?}");

        let audit = audit_entries(&audit_db).await.expect("audit");
        assert_eq!(
            receipts_granted(&audit),
            3,
            "no forged receipt was recorded"
        );
        assert_eq!(
            audit
                .iter()
                .filter(|(k, _, d, _)| k == "bill" && d == "granted")
                .count(),
            0,
            "nothing released"
        );
        // Every refusal of a signed-receipt check is its own entry: (a) 3, (b) 4, (c) 4. (d) is
        // refused at the gate before its body is read (a token the key authority does not
        // accept) and, like every unauthenticated call, counted in a `refusals.aggregate`
        // entry (tests/tests/bounded_work.rs).
        assert!(
            refusals(&audit, "receipt") >= refusals(&before, "receipt") + 11,
            "{audit:?}"
        );
        assert!(has_refusal(&audit, "receipt", Some(METER), "not signed"));
        assert!(has_refusal(&audit, "receipt", Some(FRESH), "not enrolled"));
        assert!(has_refusal(&audit, "receipt", Some(STRANGER), "signature"));

        // (e) An input relabelled at the utility: the meter signed an exact-lane receipt; the
        // header says "analytics", or another ε: refused before anything is parsed or stored.
        // The genuine header passes the signature and only then meets the ciphertext check.
        let junk = vec![0_u8; 64];
        let mut exact = AnalyticsReceiptStatement {
            kind: "forecast".into(),
            meter_id: METER.into(),
            input_id: "2024-01-15@relabel".into(),
            model_blake3: "ab".repeat(32),
            slot_offset: 0,
            slot_count: 24,
            first_period: "2024-01-15T00:00".into(),
            group: 0,
            input_blake3: vec![*blake3::hash(&junk).as_bytes()],
            lane: "exact".into(),
            epsilon: 0.0,
            readings_per_day: 0,
        };
        let signature = identity.sign(&exact);
        let header = |s: &AnalyticsReceiptStatement| v1::AnalyticsInputHeader {
            kind: s.kind.clone(),
            meter_id: s.meter_id.clone(),
            input_id: s.input_id.clone(),
            model_blake3: s.model_blake3.clone(),
            slot_offset: s.slot_offset,
            slot_count: s.slot_count,
            first_period: s.first_period.clone(),
            group: s.group,
            inputs: 1,
            lane: s.lane.clone(),
            epsilon: s.epsilon,
            readings_per_day: s.readings_per_day,
            signature: signature.clone(),
            meter_certificate: identity.certificate().to_bytes(),
        };
        let utility_channel = channel_as_meter(&deployment.utility().uri(), METER).await;
        let upload_input = |h: v1::AnalyticsInputHeader| {
            let mut client = AnalyticsIngestClient::new(utility_channel.clone()).with_seer_limits();
            let chunks = vec![
                v1::AnalyticsInputChunk {
                    part: Some(v1::analytics_input_chunk::Part::Header(h)),
                },
                v1::AnalyticsInputChunk {
                    part: Some(v1::analytics_input_chunk::Part::Data(
                        v1::AnalyticsInputData {
                            index: 0,
                            total_bytes: junk.len() as u64,
                            offset: 0,
                            data: junk.clone(),
                        },
                    )),
                },
            ];
            let token = to_utility.clone();
            async move {
                client
                    .upload_input(request(tokio_stream::iter(chunks), &token))
                    .await
                    .map(|_| ())
            }
        };
        let genuine_header = upload_input(header(&exact)).await.expect_err("junk input");
        assert_eq!(
            genuine_header.code(),
            Code::InvalidArgument,
            "{genuine_header:?}"
        );
        exact.lane = "analytics".into();
        exact.epsilon = 0.5;
        exact.readings_per_day = 96;
        let relabelled = upload_input(header(&exact)).await.expect_err("relabelled");
        assert_eq!(relabelled.code(), Code::PermissionDenied, "{relabelled:?}");
        exact.lane = "exact".into();
        exact.epsilon = 0.0;
        exact.readings_per_day = 0;
        exact.slot_offset = 24;
        let moved = upload_input(header(&exact)).await.expect_err("moved block");
        assert_eq!(moved.code(), Code::PermissionDenied, "{moved:?}");
    });

    // (f) The meter's next batch, altered on the way: the relay replaces the billing lane by
    // a valid ciphertext (a fresh frame, checksum and all, under the published public key)
    // and forwards it with the meter's signature and certificate. Refused, nothing stored;
    // then the meter uploads the real batch, which is stored.
    let offline = deployment
        .meter(METER, SOURCE)
        .args(["--from", "2024-01-01", "--until", "2024-01-29"])
        .offline();
    offline.run().expect("the meter queues week 4");
    runtime.block_on(async {
        let state = deployment.dir().join(format!("meter-{METER}"));
        let identity = DeviceIdentity::load(&state, METER).expect("identity");
        let store = meter_client::queue::StateStore::open(&state)
            .await
            .expect("the meter's state");
        let batch = store.batch(4).await.expect("read").expect("batch 4 queued");
        let signatures = store
            .signatures(4)
            .await
            .expect("read")
            .expect("signed when built");
        store.close().await;
        let genuine = meter_client::upload::to_signed_wire(&identity, &batch, &signatures);
        let ctx = CkksContext::new(billing::PARAMETER_SET).expect("context");
        let key_bytes = meter_client::grpc::fetch_public_key(
            &deployment.authority().uri(),
            None,
            ctx.parameter_set_id(),
        )
        .await
        .expect("public key");
        let public_key = PublicKey::from_bytes(&ctx, &key_bytes).expect("public key");
        let forged_lane = Encryptor::new(&ctx, &public_key)
            .expect("encryptor")
            .encrypt_values(&[1.0e6; 16])
            .expect("encrypt")
            .to_bytes_uncompressed(&ctx)
            .expect("serialize");
        let altered = v1::UploadBatch {
            billing_lane: forged_lane,
            ..genuine.clone()
        };
        let to_utility = deployment
            .household_token(METER, "seer-utility-server")
            .expect("token");
        let mut ingest =
            IngestClient::new(channel_as_meter(&deployment.utility().uri(), METER).await)
                .with_seer_limits();
        let status = match ingest
            .upload(request(tokio_stream::iter(vec![altered]), &to_utility))
            .await
        {
            Err(status) => status,
            Ok(response) => response
                .into_inner()
                .message()
                .await
                .expect_err("the altered batch is refused"),
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("signature"), "{status:?}");
        assert_eq!(
            deployment.cursor(METER, &to_utility).await.expect("cursor"),
            3,
            "nothing stored"
        );
    });
    deployment
        .meter(METER, SOURCE)
        .args(["--from", "2024-01-01", "--until", "2024-01-29"])
        .run()
        .expect("the meter uploads the real batch");
    runtime.block_on(async {
        let stored = stored_batches(&utility_db, METER).await;
        assert_eq!(stored.len(), 4, "the real batch is stored");
    });
}
