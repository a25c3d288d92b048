//! `seer.v1.Ingest` end to end: the utility server built by `Application::build` on port 0
//! with a fresh SQLite database, a real gRPC client over TCP, and real framed CKKS
//! ciphertexts made with a test key (the `secret-key` feature is enabled for tests only).
//!
//! The JWT interceptor is wired by the lead; here a test [`Authenticator`] reads the principal
//! from an `x-test-principal` header, so the server's handlers see exactly what they will see
//! behind the real one: a `Principal` in the request's extensions.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use seer_auth::device::{AuthorityPublicKey, DeviceKey, MeterCertificate, MeterCertificateBody};
use seer_ckks::{CkksContext, Encryptor, KeyGenerator, ParameterSet};
use seer_core::circuits::billing::{self, BillingLayout};
use seer_core::tariff::{CellEnergy, Tariff};
use seer_core::units::Wh;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::ingest_client::IngestClient;
use seer_proto::v1::ingest_server::Ingest as _;
use seer_proto::v1::{GetCursorRequest, NoisePlan, UploadAck, UploadBatch};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use utility_server::auth::{Authenticator, Principal};
use utility_server::batch::MeterId;
use utility_server::ingest::IngestService;
use utility_server::signatures::{MeterSignatures, batch_statement};
use utility_server::{Application, Settings, Store};

// ---- test keys and ciphertexts ---------------------------------------------------------

/// One key set per parameter set, generated once per test binary.
struct TestKeys {
    ctx: CkksContext,
    encryptor: Encryptor,
}

impl TestKeys {
    fn new(set: ParameterSet) -> Self {
        let ctx = CkksContext::new(set).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("key generator");
        let encryptor =
            Encryptor::new(&ctx, &keygen.public_key().expect("public key")).expect("encryptor");
        Self { ctx, encryptor }
    }

    fn encrypt(&self, values: &[f64]) -> Vec<u8> {
        self.encryptor
            .encrypt_values(values)
            .expect("encrypt")
            .to_bytes(&self.ctx)
            .expect("serialize")
    }
}

fn billing_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys::new(billing::PARAMETER_SET))
}

fn large_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys::new(ParameterSet::N16384_L7_SEC128))
}

/// n = 8192 like the configured set, but one level: same sizes, another id.
fn one_level_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let set = seer_ckks::ParameterSetBuilder::new(8192)
            .levels(1)
            .build()
            .expect("a one-level set");
        TestKeys::new(set)
    })
}

/// Lanes made once and reused (ingest treats them as opaque once they parse).
struct Lanes {
    billing: Vec<u8>,
    other_billing: Vec<u8>,
    analytics: Vec<u8>,
}

fn lanes() -> &'static Lanes {
    static LANES: OnceLock<Lanes> = OnceLock::new();
    LANES.get_or_init(|| {
        let keys = billing_keys();
        let tariff = Tariff::bescom();
        let layout = BillingLayout::try_new(&tariff, &keys.ctx).expect("layout");
        let cells = |wh: [i64; 4]| {
            CellEnergy::try_from_cells(
                &tariff,
                wh.iter().map(|w| Wh::try_new(*w).expect("wh")).collect(),
            )
            .expect("cells")
        };
        let billing_lane = |wh| {
            layout
                .encrypt_batch(&keys.encryptor, POSITION as usize, &cells(wh))
                .expect("encrypt the billing lane")
                .to_bytes(&keys.ctx)
                .expect("serialize")
        };
        let readings: Vec<f64> = (0..96).map(|i| f64::from(100 + i % 7)).collect();
        Lanes {
            billing: billing_lane([5_000, 1_200, 0, 0]),
            other_billing: billing_lane([5_000, 1_300, 0, 0]),
            analytics: keys.encrypt(&readings),
        }
    })
}

const METER: &str = "meter-0001";
const POSITION: u32 = 17;

/// Day `sequence` of January 2007 (local time +05:30), 96 quarter-hour readings.
fn batch(sequence: u64) -> UploadBatch {
    batch_of(METER, sequence)
}

/// Day `sequence` of January 2007 of meter `meter`.
fn batch_of(meter: &str, sequence: u64) -> UploadBatch {
    let lanes = lanes();
    let day = (sequence - 1) % 31 + 1;
    let next = if day == 31 {
        "2007-02-01".to_owned()
    } else {
        format!("2007-01-{:02}", day + 1)
    };
    UploadBatch {
        meter_id: meter.into(),
        sequence,
        period: "2007-01".into(),
        start: format!("2007-01-{day:02}T00:00:00+05:30"),
        end: format!("{next}T00:00:00+05:30"),
        readings: 96,
        billing_lane: lanes.billing.clone(),
        billing_position: POSITION,
        billing_group: 0,
        analytics_lane: lanes.analytics.clone(),
        epsilon_spent: 0.5,
        ..UploadBatch::default()
    }
}

// ---- the server --------------------------------------------------------------------------

/// Reads `x-test-principal: household:METER | utility | auditor | admin`.
struct HeaderAuthenticator;

impl Authenticator for HeaderAuthenticator {
    fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Principal>, Status> {
        let Some(value) = metadata.get("x-test-principal") else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| Status::unauthenticated("bad test principal"))?;
        Ok(Some(match value.split_once(':') {
            Some(("household", meter)) => Principal::Household {
                meter_id: MeterId::try_new(meter)
                    .map_err(|_| Status::unauthenticated("bad test meter"))?,
            },
            _ => match value {
                "utility" => Principal::Utility,
                "auditor" => Principal::Auditor,
                "admin" => Principal::Admin,
                _ => return Err(Status::unauthenticated("unknown test principal")),
            },
        }))
    }
}

/// How a test server is secured: mutual TLS (the server's files, the meter's client files)
/// and meters' signatures checked at ingest (the signer of the test meter's batches).
#[derive(Default)]
struct Security {
    tls: Option<(seer_tls::TlsFiles, seer_tls::TlsFiles)>,
    signer: Option<MeterSigner>,
}

/// The test meter's enrolled device key and the key authority's key that certified it.
struct MeterSigner {
    authority: seer_auth::JwtSigningKey,
    device: DeviceKey,
    certificate: Vec<u8>,
}

impl MeterSigner {
    fn new(meter: &str) -> Self {
        let authority = seer_auth::JwtSigningKey::generate().expect("authority key");
        let device = DeviceKey::generate().expect("device key");
        let certificate = MeterCertificate::issue(
            &authority,
            MeterCertificateBody {
                meter_id: meter.to_owned(),
                device_public_key: device.public_key().to_bytes(),
                issued_at: 0,
            },
        )
        .to_bytes();
        Self {
            authority,
            device,
            certificate,
        }
    }

    /// What the utility checks batches with.
    fn checker(&self) -> MeterSignatures {
        MeterSignatures::new(AuthorityPublicKey::new(self.authority.verifying_key()))
    }

    /// Signs `batch` as the meter does: its statement over the fields and the lanes' BLAKE3.
    fn sign(&self, batch: &mut UploadBatch) {
        batch.signature = self.device.sign(&batch_statement(batch)).to_vec();
        batch.meter_certificate.clone_from(&self.certificate);
    }
}

struct TestApp {
    address: String,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    async fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/db/seer.db", dir.path().display());
        Self::spawn_on(url, dir).await
    }

    async fn spawn_on(database_url: String, dir: tempfile::TempDir) -> Self {
        Self::spawn_with(database_url, dir, Security::default()).await
    }

    /// A server on `database_url` with `security`'s mutual TLS and meter signatures.
    async fn spawn_with(database_url: String, dir: tempfile::TempDir, security: Security) -> Self {
        // Key generation and encryption happen before the server starts.
        let _ = lanes();
        let mut settings = Settings::default();
        settings.server.port = 0;
        settings.database.url = database_url;
        settings.server.tls = security.tls.as_ref().map(|(server, _)| server.clone());
        let mut app = Application::build(settings)
            .await
            .expect("build the application")
            .with_authenticator(Arc::new(HeaderAuthenticator));
        if let Some(signer) = &security.signer {
            app = app.with_meter_signatures(signer.checker());
        }
        let address = match &security.tls {
            Some(_) => format!("https://localhost:{}", app.local_addr().port()),
            None => format!("http://{}", app.local_addr()),
        };
        let store = app.store().clone();
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            store,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    async fn client(&self) -> IngestClient<Channel> {
        IngestClient::connect(self.address.clone())
            .await
            .expect("connect")
            .with_seer_limits()
    }

    /// A client presenting `files` as its certificate.
    async fn tls_client(&self, files: &seer_tls::TlsFiles) -> IngestClient<Channel> {
        let channel = files
            .endpoint(&self.address)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect over mutual TLS");
        IngestClient::new(channel).with_seer_limits()
    }

    async fn last(&self) -> u64 {
        self.store
            .last_sequence(&MeterId::try_new(METER).expect("meter"))
            .await
            .expect("cursor")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server");
        }
    }
}

fn as_principal<T>(message: T, principal: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "x-test-principal",
        principal.parse().expect("ascii header value"),
    );
    request
}

fn household() -> String {
    format!("household:{METER}")
}

/// Uploads `batches` on one stream as `principal`; returns the acks received and the status
/// that ended the stream, if any.
async fn upload_as(
    client: &mut IngestClient<Channel>,
    principal: &str,
    batches: Vec<UploadBatch>,
) -> (Vec<UploadAck>, Option<Status>) {
    let request = as_principal(tokio_stream::iter(batches), principal);
    let mut acks = Vec::new();
    let mut stream = match client.upload(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (acks, Some(status)),
    };
    loop {
        match stream.message().await {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) => return (acks, None),
            Err(status) => return (acks, Some(status)),
        }
    }
}

async fn upload(
    client: &mut IngestClient<Channel>,
    batches: Vec<UploadBatch>,
) -> (Vec<UploadAck>, Option<Status>) {
    upload_as(client, &household(), batches).await
}

fn assert_status(status: Option<Status>, code: Code, mentions: &[&str]) {
    let status = status.expect("the stream ends with an error");
    assert_eq!(status.code(), code, "{status:?}");
    for word in mentions {
        assert!(
            status.message().contains(word),
            "{:?} should mention {word:?}",
            status.message()
        );
    }
}

fn ack(sequence: u64, duplicate: bool, last: u64) -> UploadAck {
    UploadAck {
        meter_id: METER.into(),
        sequence,
        duplicate,
        last,
    }
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_in_order_and_the_cursor_follows() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let (acks, status) = upload(&mut client, (1..=5).map(batch).collect()).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(acks, (1..=5).map(|s| ack(s, false, s)).collect::<Vec<_>>());
    assert_eq!(app.last().await, 5);

    for principal in [household(), "utility".to_owned(), "admin".to_owned()] {
        let cursor = client
            .get_cursor(as_principal(
                GetCursorRequest {
                    meter_id: METER.into(),
                },
                &principal,
            ))
            .await
            .expect("cursor")
            .into_inner();
        assert_eq!((cursor.meter_id.as_str(), cursor.last), (METER, 5));
    }
    let stranger = client
        .get_cursor(as_principal(
            GetCursorRequest {
                meter_id: METER.into(),
            },
            "household:meter-0002",
        ))
        .await
        .expect_err("another household");
    assert_eq!(stranger.code(), Code::PermissionDenied);
    let auditor = client
        .get_cursor(as_principal(
            GetCursorRequest {
                meter_id: METER.into(),
            },
            "auditor",
        ))
        .await
        .expect_err("auditor");
    assert_eq!(auditor.code(), Code::PermissionDenied);
    let anonymous = client
        .get_cursor(GetCursorRequest {
            meter_id: METER.into(),
        })
        .await
        .expect_err("no principal");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let bad = client
        .get_cursor(as_principal(
            GetCursorRequest {
                meter_id: "no spaces".into(),
            },
            "utility",
        ))
        .await
        .expect_err("bad meter id");
    assert_eq!(bad.code(), Code::InvalidArgument);

    let summary = utility_server::usage_summary(
        &app.store,
        &MeterId::try_new(METER).expect("meter"),
        "2007-01".parse().expect("period"),
    )
    .await
    .expect("summary");
    assert_eq!((summary.batches, summary.readings), (5, 5 * 96));
    assert!((summary.epsilon_spent - 2.5).abs() < 1e-12);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_a_dropped_link_is_acknowledged_as_a_duplicate() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let (acks, status) = upload(&mut client, (1..=3).map(batch).collect()).await;
    assert!(status.is_none() && acks.len() == 3, "{status:?}");
    // The meter did not see the acks of 2 and 3: it resends them, then goes on.
    let (acks, status) = upload(&mut client, (2..=4).map(batch).collect()).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(acks, [ack(2, true, 3), ack(3, true, 3), ack(4, false, 4)]);
    assert_eq!(app.last().await, 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_gaps_end_the_stream_after_what_was_stored() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    upload(&mut client, (1..=2).map(batch).collect()).await;

    let mut changed = batch(2);
    changed.billing_lane = lanes().other_billing.clone();
    let (acks, status) = upload(&mut client, vec![changed]).await;
    assert!(acks.is_empty());
    assert_status(
        status,
        Code::AlreadyExists,
        &[METER, "batch 2", "different content"],
    );

    // 3 is stored and acknowledged, then 5 skips 4.
    let (acks, status) = upload(&mut client, vec![batch(3), batch(5), batch(6)]).await;
    assert_eq!(acks, [ack(3, false, 3)]);
    assert_status(
        status,
        Code::FailedPrecondition,
        &[METER, "batch 5", "next sequence must be 4"],
    );
    assert_eq!(app.last().await, 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_ciphertexts_are_invalid_arguments_and_store_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let original = batch(1);
    // A byte in the middle of SEAL's payload, one in the frame header, the last checksum
    // byte, and a truncation.
    let mut corruptions: Vec<(&str, UploadBatch)> = Vec::new();
    for (lane, index) in [
        ("billing", original.billing_lane.len() / 2),
        ("billing", 5),
        ("analytics", original.analytics_lane.len() - 1),
    ] {
        let mut bad = original.clone();
        let bytes = if lane == "billing" {
            &mut bad.billing_lane
        } else {
            &mut bad.analytics_lane
        };
        bytes[index] ^= 0x40;
        corruptions.push((lane, bad));
    }
    let mut truncated = original.clone();
    truncated.analytics_lane.truncate(1000);
    corruptions.push(("analytics", truncated));
    let mut not_a_ciphertext = original.clone();
    not_a_ciphertext.billing_lane = b"these are not the bytes you are looking for".to_vec();
    corruptions.push(("billing", not_a_ciphertext));

    for (lane, bad) in corruptions {
        let (acks, status) = upload(&mut client, vec![bad]).await;
        assert!(acks.is_empty());
        assert_status(
            status,
            Code::InvalidArgument,
            &[METER, "batch 1", &format!("{lane} lane")],
        );
        assert_eq!(app.last().await, 0, "nothing stored");
    }
    // The intact batch is stored afterwards.
    let (acks, _) = upload(&mut client, vec![original]).await;
    assert_eq!(acks, [ack(1, false, 1)]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_of_another_parameter_set_are_refused() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let mut wrong = batch(1);
    wrong.analytics_lane = one_level_keys().encrypt(&[1.0, 2.0, 3.0]);
    let (_, status) = upload(&mut client, vec![wrong]).await;
    assert_status(
        status,
        Code::InvalidArgument,
        &[
            "batch 1",
            "analytics lane",
            "made for parameter set ckks1-n8192-q60-s40x1-p60",
            "expected ckks1-n8192-q60-s40x2-p60",
        ],
    );
    // A larger set's ciphertext is refused by the size limit before anything else.
    let mut large = batch(1);
    large.billing_lane = large_keys().encrypt(&[1.0, 2.0, 3.0]);
    let (_, status) = upload(&mut client, vec![large]).await;
    assert_status(
        status,
        Code::InvalidArgument,
        &["batch 1", "billing lane", "exceeds the limit"],
    );
    // Lanes swapped: each parses, but the billing lane must be a billing-lane ciphertext of
    // the right level; a fresh analytics ciphertext is one, so the layout cannot tell. What
    // the server can tell is a ciphertext below the billing circuit's levels.
    let keys = billing_keys();
    let evaluator = seer_ckks::Evaluator::new(&keys.ctx, None, None);
    let low = keys
        .encryptor
        .encrypt_values(&[1.0])
        .and_then(|ct| evaluator.mod_switch_to(&ct, seer_ckks::Level(1)))
        .and_then(|ct| ct.to_bytes(&keys.ctx))
        .expect("a level-1 ciphertext");
    let mut low_level = batch(1);
    low_level.billing_lane = low;
    let (_, status) = upload(&mut client, vec![low_level]).await;
    assert_status(
        status,
        Code::InvalidArgument,
        &["batch 1", "billing lane is at level 1"],
    );
    assert_eq!(app.last().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fields_name_the_sequence_and_the_problem() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let cases: Vec<(UploadBatch, &str)> = vec![
        (
            UploadBatch {
                period: "2007-02".into(),
                ..batch(1)
            },
            "does not lie within period 2007-02",
        ),
        (
            UploadBatch {
                readings: 5000,
                ..batch(1)
            },
            "5000 readings",
        ),
        (
            UploadBatch {
                epsilon_spent: -1.0,
                ..batch(1)
            },
            "epsilon_spent",
        ),
        (
            UploadBatch {
                billing_position: 1024,
                ..batch(1)
            },
            "billing position 1024",
        ),
        (
            UploadBatch {
                sequence: 0,
                ..batch(1)
            },
            "sequence 0",
        ),
    ];
    for (bad, expected) in cases {
        let sequence = bad.sequence;
        let (_, status) = upload(&mut client, vec![bad]).await;
        assert_status(
            status,
            Code::InvalidArgument,
            &[METER, &format!("batch {sequence}"), expected],
        );
    }
    assert_eq!(app.last().await, 0);
    app.stop().await;
}

/// The distributed-noise plan of day `sequence`'s batch: the day's window (midnight +05:30),
/// all 96 quarter-hours.
fn day_plan(sequence: u64) -> NoisePlan {
    let day = (sequence - 1) % 31 + 1;
    NoisePlan {
        group_size: 500,
        tolerated: 50,
        sensitivity_wh: 3_450,
        epsilon: 0.5,
        window_start: format!("2007-01-{day:02}T00:00:00+05:30"),
        interval_seconds: 900,
        window_slots: 96,
        first_slot: 0,
        slot_count: 96,
    }
}

/// Signed batches with insane plans are refused naming the plan's field, and nothing is
/// stored; a sane plan is stored with its batch and read back as the meter signed it; a batch
/// without a plan is still accepted; a plan added after signing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_plans_are_checked_at_ingest_and_stored_as_signed() {
    let signer = MeterSigner::new(METER);
    let planned = |sequence: u64, edit: &dyn Fn(&mut NoisePlan)| {
        let mut plan = day_plan(sequence);
        edit(&mut plan);
        let mut wire = UploadBatch {
            noise_plan: Some(plan),
            ..batch(sequence)
        };
        signer.sign(&mut wire);
        wire
    };
    let refusals: Vec<(UploadBatch, &str)> = vec![
        (planned(1, &|p| p.group_size = 0), "noise_plan.group_size"),
        (planned(1, &|p| p.tolerated = 500), "noise_plan.tolerated"),
        (
            planned(1, &|p| p.sensitivity_wh = 0),
            "noise_plan.sensitivity_wh",
        ),
        (planned(1, &|p| p.epsilon = f64::NAN), "noise_plan.epsilon"),
        (
            planned(1, &|p| p.window_start = "midnight".into()),
            "noise_plan.window_start",
        ),
        (
            planned(1, &|p| p.interval_seconds = 7),
            "noise_plan.interval_seconds",
        ),
        (
            planned(1, &|p| p.window_slots = 40 * 96),
            "noise_plan.window_slots",
        ),
        (
            planned(1, &|p| p.window_start = "2007-01-01T00:15:00+05:30".into()),
            "whole hour",
        ),
        (planned(1, &|p| p.slot_count = 95), "noise_plan.slot_count"),
        (
            planned(1, &|p| {
                p.window_slots = 192;
                p.first_slot = 96;
            }),
            "noise_plan.first_slot",
        ),
    ];
    let accepted = planned(1, &|_| {});
    let mut without_plan = batch(2);
    signer.sign(&mut without_plan);
    // Signed without a plan, the plan added afterwards: the signature covers the plan.
    let mut added_plan = batch(3);
    signer.sign(&mut added_plan);
    added_plan.noise_plan = Some(day_plan(3));

    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/db/seer.db", dir.path().display());
    let security = Security {
        tls: None,
        signer: Some(signer),
    };
    let app = TestApp::spawn_with(url, dir, security).await;
    let mut client = app.client().await;
    for (bad, expected) in refusals {
        let (acks, status) = upload(&mut client, vec![bad]).await;
        assert!(acks.is_empty());
        assert_status(status, Code::InvalidArgument, &[METER, "batch 1", expected]);
        assert_eq!(app.last().await, 0, "nothing stored");
    }
    let (acks, status) = upload(
        &mut client,
        vec![accepted.clone(), without_plan, added_plan],
    )
    .await;
    assert_eq!(acks, [ack(1, false, 1), ack(2, false, 2)]);
    assert_status(status, Code::PermissionDenied, &[METER, "batch 3"]);
    assert_eq!(app.last().await, 2);

    // The job's reads: the window's one plan, and the batch exactly as the meter signed it.
    let window = chrono::DateTime::parse_from_rfc3339("2007-01-01T00:00:00+05:30")
        .expect("window")
        .with_timezone(&chrono::Utc);
    let plans = app.store.window_plans(0, window).await.expect("plans");
    assert_eq!(plans.len(), 1);
    assert_eq!((plans[0].batches, plans[0].meters), (1, 1));
    let stored = app
        .store
        .window_batches(0, window, None, 10)
        .await
        .expect("the window's batches");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].billing_lane_blake3,
        *blake3::hash(&accepted.billing_lane).as_bytes()
    );
    assert_eq!(
        stored[0].batch,
        UploadBatch {
            billing_lane: Vec::new(),
            ..accepted
        }
    );
    // Day 2's batch has no plan: its window is empty.
    let day_two = window + chrono::TimeDelta::days(1);
    assert!(
        app.store
            .window_plans(0, day_two)
            .await
            .expect("plans")
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_may_upload_only_for_their_own_meter() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let (_, status) = upload_as(&mut client, "household:meter-0002", vec![batch(1)]).await;
    assert_status(
        status,
        Code::PermissionDenied,
        &["meter-0002", "may not upload", METER],
    );
    // Staff roles are refused at the gate, from the token alone, before the body is read.
    for staff in ["utility", "admin", "auditor"] {
        let (_, status) = upload_as(&mut client, staff, vec![batch(1)]).await;
        assert_status(
            status,
            Code::PermissionDenied,
            &[&format!("role {staff} may not call this"), "household"],
        );
    }
    // No principal at all: refused before the stream is read.
    let status = client
        .upload(tokio_stream::iter(vec![batch(1)]))
        .await
        .expect_err("unauthenticated");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(app.last().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_by_the_message_limit() {
    let app = TestApp::spawn().await;
    // A client that lets itself send more than the limit, so that the server is the one that
    // refuses.
    let mut client = IngestClient::connect(app.address.clone())
        .await
        .expect("connect")
        .max_encoding_message_size(usize::MAX);
    let mut huge = batch(1);
    huge.analytics_lane = vec![0x5A; seer_proto::MAX_MESSAGE_SIZE + 1];
    let (acks, status) = upload(&mut client, vec![huge]).await;
    assert!(acks.is_empty());
    let status = status.expect("refused");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(status.message().contains("too large"), "{status:?}");
    assert_eq!(app.last().await, 0);
    // The server goes on serving.
    let mut client = app.client().await;
    let (acks, status) = upload(&mut client, vec![batch(1)]).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(acks, [ack(1, false, 1)]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_ingest_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let app = TestApp::spawn().await;
    let channel = tonic::transport::Endpoint::from_shared(app.address.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let response = health
        .check(HealthCheckRequest {
            service: "seer.v1.Ingest".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    app.stop().await;
}

/// The handlers read the principal from the request's extensions, whoever put it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reads_the_principal_from_request_extensions() {
    let app = TestApp::spawn().await;
    let lanes = utility_server::lanes::LaneValidator::new(
        billing::PARAMETER_SET,
        billing::PARAMETER_SET,
        &Tariff::bescom(),
    )
    .expect("lanes");
    let service = IngestService::new(app.store.clone(), lanes);
    let request = |principal: Option<Principal>| {
        let mut request = Request::new(GetCursorRequest {
            meter_id: METER.into(),
        });
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        request
    };
    let own = Principal::Household {
        meter_id: MeterId::try_new(METER).expect("meter"),
    };
    let other = Principal::Household {
        meter_id: MeterId::try_new("meter-0002").expect("meter"),
    };
    assert_eq!(
        service
            .get_cursor(request(Some(own)))
            .await
            .expect("own meter")
            .into_inner()
            .last,
        0
    );
    let denied = service
        .get_cursor(request(Some(other)))
        .await
        .expect_err("other meter");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = service
        .get_cursor(request(None))
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

/// Ingest throughput on one stream: parse both lanes, store, acknowledge. By default SQLite
/// (`synchronous = FULL`) in a fresh file; `SEER_INGEST_DATABASE_URL` names another, empty
/// database (e.g. a fresh PostgreSQL database). `SEER_INGEST_BATCHES` sets the count (default
/// 60); the rate goes to stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rate() {
    let count: u64 = std::env::var("SEER_INGEST_BATCHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    let database = std::env::var("SEER_INGEST_DATABASE_URL").ok();
    let pki_dir = tempfile::tempdir().expect("directory");
    let pki = seer_tls::LocalPki::open_or_create(pki_dir.path(), "ingest-rate").expect("pki");
    let tls = |meter: &str| {
        Some((
            pki.utility().expect("server certificate"),
            pki.client(seer_tls::PartyKind::Meter, meter)
                .expect("meter certificate"),
        ))
    };
    // Before the trust issue (plaintext, unsigned), with signatures, and as deployed (mutual
    // TLS and signatures): one run, the same batches, a fresh database each (one meter per
    // configuration, so that one PostgreSQL database serves all three).
    let configurations = [
        ("h2c, unsigned", "rate-1", Security::default()),
        (
            "h2c, signed",
            "rate-2",
            Security {
                tls: None,
                signer: Some(MeterSigner::new("rate-2")),
            },
        ),
        (
            "mTLS, signed",
            "rate-3",
            Security {
                tls: tls("rate-3"),
                signer: Some(MeterSigner::new("rate-3")),
            },
        ),
    ];
    // A warm-up run first (not measured): the first server of a process pays for lazily
    // initialised state (allocator arenas, the page cache of a fresh directory), which would
    // otherwise count against whichever configuration comes first.
    {
        let dir = tempfile::tempdir().expect("directory");
        let url = format!("sqlite://{}/db/seer.db", dir.path().display());
        let app = TestApp::spawn_with(url, dir, Security::default()).await;
        let mut client = app.client().await;
        let warm: Vec<UploadBatch> = (1..=count.min(50))
            .map(|n| batch_of("warm-up", n))
            .collect();
        let (_, status) = upload_as(&mut client, "household:warm-up", warm).await;
        assert!(status.is_none(), "warm-up: {status:?}");
        app.stop().await;
    }
    for (name, meter, security) in configurations {
        let dir = tempfile::tempdir().expect("directory");
        let url = database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/db/seer.db", dir.path().display()));
        let mut batches: Vec<UploadBatch> = (1..=count).map(|n| batch_of(meter, n)).collect();
        // The meter's cost: signing each batch as it is built.
        let signing = security.signer.as_ref().map(|signer| {
            let started = Instant::now();
            for b in &mut batches {
                signer.sign(b);
            }
            started.elapsed()
        });
        // The utility's cost of the check alone (certificate, statement, signature).
        let checking = security.signer.as_ref().map(|signer| {
            let checker = signer.checker();
            let started = Instant::now();
            for b in &batches {
                checker.check_batch(b).expect("a signed batch verifies");
            }
            started.elapsed()
        });
        let client_files = security.tls.as_ref().map(|(_, client)| client.clone());
        let app = TestApp::spawn_with(url, dir, security).await;
        let meter_id = MeterId::try_new(meter).expect("meter");
        assert_eq!(
            app.store.last_sequence(&meter_id).await.expect("cursor"),
            0,
            "{name}: a PostgreSQL database for this test must be fresh"
        );
        let backend = format!("{:?}", app.store.backend());
        let mut client = match &client_files {
            Some(files) => app.tls_client(files).await,
            None => app.client().await,
        };
        let bytes: usize = batches
            .iter()
            .map(|b| b.billing_lane.len() + b.analytics_lane.len())
            .sum();
        let started = Instant::now();
        let (acks, status) = upload_as(&mut client, &format!("household:{meter}"), batches).await;
        let elapsed = started.elapsed();
        assert!(status.is_none(), "{name}: {status:?}");
        assert_eq!(acks.len() as u64, count, "{name}");
        assert_eq!(
            app.store.last_sequence(&meter_id).await.expect("cursor"),
            count,
            "{name}"
        );
        let per_batch = |d: Option<std::time::Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.3} ms", d.as_secs_f64() * 1000.0 / count as f64),
            )
        };
        eprintln!(
            "ingest [{name}]: {count} batches ({:.1} KB of lanes each) in {:.3} s: {:.1} batches/s \
             on {backend}; per batch: meter signs {}, utility checks {}",
            bytes as f64 / count as f64 / 1000.0,
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64(),
            per_batch(signing),
            per_batch(checking),
        );
        app.stop().await;
    }
}
