//! `seer.v1.Receipts` and `seer.v1.Release` over real gRPC, on a key authority built by
//! `Application::build` on port 0 with SQLite in a temporary directory: bills released from
//! real billing lanes equal the plaintext tariff to the paisa, every refusal is refused and
//! logged with its reason, nothing is released while the audit log cannot be written, and the
//! audit chain verifies after all of it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use chrono::{NaiveDate, NaiveDateTime};
use key_authority::Application;
use key_authority::Settings;
use key_authority::audit::{AuditEntry, AuditLog, Decision, ListQuery};
use key_authority::auth::{AUDIENCE_UTILITY_SERVER, Identity, Role, TokenIssuer, TokenRequest};
use key_authority::keys::KeySetSpec;
use seer_ckks::{CkksContext, Encryptor, PublicKey};
use seer_core::circuits::billing::{self, BillingLayout};
use seer_core::tariff::{CellEnergy, Paise, SlabAccumulator, Tariff};
use seer_core::units::Wh;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1;
use seer_proto::v1::receipts_client::ReceiptsClient;
use seer_proto::v1::release_client::ReleaseClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

const PERIOD: &str = "2007-01";

struct App {
    dir: tempfile::TempDir,
    issuer: TokenIssuer,
    audit: Arc<AuditLog>,
    ctx: CkksContext,
    encryptor: Encryptor,
    layout: BillingLayout,
    receipts: ReceiptsClient<Channel>,
    release: ReleaseClient<Channel>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn settings(dir: &std::path::Path, galois_steps: Vec<i64>) -> Settings {
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.keys.dir = dir.join("keys");
    settings.keys.sets = vec![KeySetSpec {
        parameter_set: billing::PARAMETER_SET.id(),
        galois_steps,
    }];
    settings.auth.signing_key_file = dir.join("jwt.pem");
    settings.audit.database_url = format!("sqlite://{}", dir.join("ka.db").display());
    settings
}

async fn spawn_app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = Application::build(settings(dir.path(), vec![1, 2]))
        .await
        .expect("build");
    let issuer = app.issuer().clone();
    let audit = Arc::clone(app.audit_log());
    let set = app
        .keys()
        .get(&billing::PARAMETER_SET.id())
        .expect("billing key set");
    let ctx = set.context().clone();
    let public_key = PublicKey::from_bytes(&ctx, set.public_key_bytes()).expect("public key");
    let encryptor = Encryptor::new(&ctx, &public_key).expect("encryptor");
    let layout = app.bill_engine().layout().clone();
    let address = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    App {
        dir,
        issuer,
        audit,
        ctx,
        encryptor,
        layout,
        receipts: ReceiptsClient::new(channel.clone()).with_seer_limits(),
        release: ReleaseClient::new(channel).with_seer_limits(),
        _stop: stop,
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

/// One home's meter side: its readings of January 2007, cut into three batches (days 1-10,
/// 11-20, 21-31); each batch's lane holds the period-to-date cells.
struct Home {
    meter: String,
    position: u32,
    readings: Vec<(NaiveDateTime, Wh)>,
    /// Per batch: (sequence, lane bytes, period-to-date cells).
    batches: Vec<(u64, Vec<u8>, CellEnergy)>,
}

impl Home {
    fn new(app: &App, meter: &str, position: u32, base_wh: i64) -> Self {
        let tariff = app.layout.tariff();
        let start = NaiveDate::from_ymd_opt(2007, 1, 1)
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("time");
        let readings: Vec<(NaiveDateTime, Wh)> = (0..31 * 24)
            .map(|hour: i64| {
                (
                    start + chrono::Duration::hours(hour),
                    Wh::try_new(base_wh + (hour * 37) % 113).expect("wh"),
                )
            })
            .collect();
        let mut acc = SlabAccumulator::new(tariff);
        let mut batches = Vec::new();
        for (sequence, days) in [(1_u64, 0..10), (2, 10..20), (3, 20..31)] {
            for (at, wh) in &readings[days.start * 24..days.end * 24] {
                acc.push(*at, *wh).expect("push");
            }
            let _ = acc.take_batch();
            let cells = acc.period_cells().clone();
            let lane = app.lane(position, &cells);
            batches.push((sequence, lane, cells));
        }
        Self {
            meter: meter.to_owned(),
            position,
            readings,
            batches,
        }
    }

    fn plaintext_bill(&self, tariff: &Tariff) -> Paise {
        tariff
            .bill(self.readings.iter().copied())
            .expect("bill")
            .total()
    }

    fn closing(&self) -> &(u64, Vec<u8>, CellEnergy) {
        self.batches.last().expect("batches")
    }

    fn input(&self, index: usize) -> v1::BillInput {
        v1::BillInput {
            meter_id: self.meter.clone(),
            sequence: self.batches[index].0,
            billing_lane: self.batches[index].1.clone(),
        }
    }

    fn receipt(&self, index: usize) -> v1::ReceiptRequest {
        let (sequence, lane, _) = &self.batches[index];
        v1::ReceiptRequest {
            meter_id: self.meter.clone(),
            sequence: *sequence,
            period: PERIOD.to_owned(),
            billing_lane_blake3: blake3::hash(lane).as_bytes().to_vec(),
            billing_group: 0,
            billing_position: self.position,
            closes_period: index + 1 == self.batches.len(),
        }
    }
}

impl App {
    fn token(&self, identity: Identity) -> String {
        self.issuer
            .issue(&TokenRequest::new(identity, Duration::from_secs(600)))
            .expect("issue")
            .token
    }

    fn household(&self, meter: &str) -> String {
        self.token(Identity::Household {
            meter_id: meter.to_owned(),
        })
    }

    fn lane(&self, position: u32, cells: &CellEnergy) -> Vec<u8> {
        self.layout
            .encrypt_batch(&self.encryptor, position as usize, cells)
            .expect("encrypt")
            .to_bytes(&self.ctx)
            .expect("serialize")
    }

    async fn record(
        &self,
        receipt: v1::ReceiptRequest,
        token: &str,
    ) -> Result<bool, tonic::Status> {
        self.receipts
            .clone()
            .record(with_token(receipt, Some(token)))
            .await
            .map(|ack| ack.into_inner().duplicate)
    }

    async fn record_all(&self, home: &Home) {
        let token = self.household(&home.meter);
        for index in 0..home.batches.len() {
            assert!(
                !self
                    .record(home.receipt(index), &token)
                    .await
                    .expect("recorded")
            );
        }
    }

    async fn release(
        &self,
        inputs: Vec<v1::BillInput>,
        token: Option<&str>,
    ) -> Result<Vec<v1::BillRelease>, tonic::Status> {
        self.release
            .clone()
            .release_bills(with_token(
                v1::ReleaseBillsRequest {
                    period: PERIOD.to_owned(),
                    billing_group: 0,
                    inputs,
                },
                token,
            ))
            .await
            .map(|response| response.into_inner().bills)
    }

    async fn entry(&self, sequence: u64) -> AuditEntry {
        let page = self
            .audit
            .list(&ListQuery {
                after_sequence: sequence - 1,
                limit: 1,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        page.entries.into_iter().next().expect("entry")
    }

    async fn last_entry(&self) -> AuditEntry {
        let head = self.audit.head().await.expect("head");
        self.entry(head.sequence).await
    }

    /// Releases one input as the utility; asserts it is refused with a reason containing
    /// `expected`, logged with that reason.
    async fn assert_refused(&self, input: v1::BillInput, expected: &str) {
        let token = self.token(Identity::Utility);
        let meter = input.meter_id.clone();
        let bills = self
            .release(vec![input], Some(&token))
            .await
            .expect("answered");
        assert_eq!(bills.len(), 1);
        let bill = &bills[0];
        assert!(!bill.granted, "{meter}: {bill:?}");
        assert_eq!(bill.amount_paise, 0);
        assert!(
            bill.refusal.contains(expected),
            "{meter}: {:?} does not contain {expected:?}",
            bill.refusal
        );
        let entry = self.entry(bill.audit_sequence).await;
        assert_eq!(entry.decision, Decision::refused(bill.refusal.clone()));
        assert_eq!(entry.meter_id.as_deref(), Some(meter.as_str()));
        assert_eq!(entry.period.as_deref(), Some(PERIOD));
        assert_eq!(entry.kind.as_str(), "bill");
        assert!(entry.input_digest.is_some());
        let caller = entry.caller.expect("caller");
        assert_eq!(caller.role, Role::Utility);
    }

    /// Asserts that a request is answered `code` and that the last audit entry refuses it with
    /// a reason containing `expected`.
    async fn assert_request_refused(
        &self,
        token: Option<&str>,
        inputs: Vec<v1::BillInput>,
        code: Code,
        expected: &str,
        role: Option<Role>,
    ) {
        let before = self.audit.head().await.expect("head").sequence;
        let status = self.release(inputs, token).await.expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
        let entry = self.last_entry().await;
        assert_eq!(
            entry.sequence,
            before + 1,
            "exactly one entry per refused request"
        );
        let reason = entry.decision.reason().expect("refused").to_owned();
        assert!(
            reason.contains(expected),
            "{reason:?} does not contain {expected:?}"
        );
        assert_eq!(entry.caller.map(|c| c.role), role);
        assert_eq!(entry.period.as_deref(), Some(PERIOD));
    }

    async fn releases_count(&self) -> i64 {
        let pool = raw_pool(&self.dir).await;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM releases")
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        count
    }
}

async fn raw_pool(dir: &tempfile::TempDir) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&format!("sqlite://{}", dir.path().join("ka.db").display()))
        .await
        .expect("raw pool")
}

/// An `alg: none` token with otherwise plausible utility claims.
fn alg_none_token() -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = format!(
        r#"{{"iss":"seer-key-authority","sub":"utility","aud":["seer-key-authority"],"exp":{},"nbf":{},"iat":{},"jti":"x","role":"utility"}}"#,
        now + 600,
        now - 1,
        now - 1
    );
    format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_equal_the_plaintext_tariff_and_every_refusal_is_logged() {
    let app = spawn_app().await;
    let tariff = app.layout.tariff().clone();
    // Three homes on either side of the slab boundaries (about 65, 100 and 170 kWh a month).
    let homes = [
        Home::new(&app, "M-1", 0, 30),
        Home::new(&app, "M-2", 1, 80),
        Home::new(&app, "M-3", 2, 175),
    ];
    for home in &homes {
        app.record_all(home).await;
    }
    let utility = app.token(Identity::Utility);

    // --- Receipts policy.
    let m1 = app.household("M-1");
    assert!(
        app.record(homes[0].receipt(2), &m1)
            .await
            .expect("idempotent")
    );
    let mut different = homes[0].receipt(2);
    different.billing_lane_blake3 = vec![7; 32];
    assert_eq!(
        app.record(different, &m1)
            .await
            .expect_err("conflict")
            .code(),
        Code::AlreadyExists
    );
    let mut other_meter = homes[1].receipt(0);
    other_meter.sequence = 9;
    assert_eq!(
        app.record(other_meter.clone(), &m1)
            .await
            .expect_err("other meter")
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        app.record(other_meter, &utility)
            .await
            .expect_err("utility")
            .code(),
        Code::PermissionDenied
    );
    for (field, broken) in [
        (
            "digest",
            v1::ReceiptRequest {
                billing_lane_blake3: vec![1; 31],
                ..homes[0].receipt(0)
            },
        ),
        (
            "period",
            v1::ReceiptRequest {
                period: "2007-13".into(),
                ..homes[0].receipt(0)
            },
        ),
        (
            "sequence",
            v1::ReceiptRequest {
                sequence: 0,
                ..homes[0].receipt(0)
            },
        ),
        (
            "position",
            v1::ReceiptRequest {
                billing_position: 1_000_000,
                ..homes[0].receipt(0)
            },
        ),
    ] {
        let status = app.record(broken, &m1).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    }
    let status = app
        .receipts
        .clone()
        .record(with_token(homes[0].receipt(0), None))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    // --- Refusals of single inputs, each logged with its reason.
    // A raw reading ciphertext (an analytics-style vector of hourly Wh) as a bill input.
    let raw: Vec<f64> = homes[0]
        .readings
        .iter()
        .map(|(_, wh)| wh.get() as f64)
        .collect();
    let raw_lane = app
        .encryptor
        .encrypt_values(&raw)
        .expect("encrypt")
        .to_bytes(&app.ctx)
        .expect("bytes");
    app.assert_refused(
        v1::BillInput {
            billing_lane: raw_lane.clone(),
            ..homes[0].input(2)
        },
        "BLAKE3 differs",
    )
    .await;
    // The same raw ciphertext under a sequence of its own.
    app.assert_refused(
        v1::BillInput {
            sequence: 77,
            billing_lane: raw_lane,
            ..homes[0].input(2)
        },
        "not the meter's closing batch",
    )
    .await;
    // An older, non-closing batch.
    app.assert_refused(homes[1].input(1), "not the meter's closing batch")
        .await;
    // The older batch's lane under the closing sequence.
    app.assert_refused(
        v1::BillInput {
            sequence: 3,
            ..homes[1].input(1)
        },
        "BLAKE3 differs",
    )
    .await;
    // A lane whose digest differs from the receipt: the same cells, encrypted again.
    let reencrypted = app.lane(homes[2].position, &homes[2].closing().2);
    app.assert_refused(
        v1::BillInput {
            billing_lane: reencrypted,
            ..homes[2].input(2)
        },
        "BLAKE3 differs",
    )
    .await;
    // Another meter's lane under M-2's receipt.
    app.assert_refused(
        v1::BillInput {
            meter_id: "M-2".into(),
            ..homes[0].input(2)
        },
        "BLAKE3 differs",
    )
    .await;
    // An open period: M-4 recorded only a non-closing batch; M-5 recorded nothing.
    let m4 = Home::new(&app, "M-4", 3, 50);
    assert!(
        !app.record(m4.receipt(0), &app.household("M-4"))
            .await
            .expect("recorded")
    );
    app.assert_refused(m4.input(0), "is open for meter M-4")
        .await;
    let m5 = Home::new(&app, "M-5", 4, 50);
    app.assert_refused(m5.input(2), "no receipt of meter M-5")
        .await;
    // A receipt for another packing group than the request's.
    let m6 = Home::new(&app, "M-6", 5, 50);
    let m6_token = app.household("M-6");
    for index in 0..3 {
        let receipt = v1::ReceiptRequest {
            billing_group: 1,
            ..m6.receipt(index)
        };
        app.record(receipt, &m6_token).await.expect("recorded");
    }
    app.assert_refused(m6.input(2), "not the request's group 0")
        .await;

    // --- Requests refused as a whole, each logged once before the answer.
    let inputs = || homes.iter().map(|home| home.input(2)).collect::<Vec<_>>();
    app.assert_request_refused(
        None,
        inputs(),
        Code::Unauthenticated,
        "unauthenticated",
        None,
    )
    .await;
    let expired = app
        .issuer
        .issue_at(
            &TokenRequest::new(Identity::Utility, Duration::from_secs(60)),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .expect("issue")
        .token;
    app.assert_request_refused(
        Some(&expired),
        inputs(),
        Code::Unauthenticated,
        "unauthenticated",
        None,
    )
    .await;
    let mut wrong_audience = TokenRequest::new(Identity::Utility, Duration::from_secs(600));
    wrong_audience.audience = vec![AUDIENCE_UTILITY_SERVER.to_owned()];
    let wrong_audience = app.issuer.issue(&wrong_audience).expect("issue").token;
    app.assert_request_refused(
        Some(&wrong_audience),
        inputs(),
        Code::Unauthenticated,
        "unauthenticated",
        None,
    )
    .await;
    app.assert_request_refused(
        Some(&alg_none_token()),
        inputs(),
        Code::Unauthenticated,
        "unauthenticated",
        None,
    )
    .await;
    app.assert_request_refused(
        Some(&m1),
        inputs(),
        Code::PermissionDenied,
        "role household",
        Some(Role::Household),
    )
    .await;
    app.assert_request_refused(
        Some(&utility),
        Vec::new(),
        Code::InvalidArgument,
        "1 to 1024 homes",
        Some(Role::Utility),
    )
    .await;
    assert_eq!(
        app.releases_count().await,
        0,
        "no refusal released anything"
    );

    // --- The release: each home's bill equals the plaintext bill of its readings.
    let bills = app
        .release(inputs(), Some(&utility))
        .await
        .expect("released");
    assert_eq!(bills.len(), homes.len());
    for (home, bill) in homes.iter().zip(&bills) {
        assert_eq!(bill.meter_id, home.meter);
        assert!(bill.granted, "{bill:?}");
        assert_eq!(
            bill.amount_paise,
            home.plaintext_bill(&tariff).get(),
            "{}",
            home.meter
        );
        let entry = app.entry(bill.audit_sequence).await;
        assert_eq!(entry.decision, Decision::Granted);
        assert_eq!(entry.meter_id.as_deref(), Some(home.meter.as_str()));
        assert_eq!(entry.caller.expect("caller").role, Role::Utility);
    }
    assert!(
        bills
            .windows(2)
            .all(|w| w[1].audit_sequence == w[0].audit_sequence + 1)
    );
    assert_eq!(app.releases_count().await, 3);

    // A second release of the same bill, alone and in a group.
    app.assert_refused(homes[0].input(2), "already released")
        .await;
    let again = app
        .release(inputs(), Some(&utility))
        .await
        .expect("answered");
    assert!(
        again
            .iter()
            .all(|b| !b.granted && b.refusal.contains("already released"))
    );
    // No receipt can be added to a released period.
    let late = v1::ReceiptRequest {
        sequence: 4,
        ..homes[0].receipt(2)
    };
    assert_eq!(
        app.record(late, &m1).await.expect_err("released").code(),
        Code::FailedPrecondition
    );
    assert_eq!(app.releases_count().await, 3);

    let report = app.audit.verify(None).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_audit_log_unwritable_nothing_is_released() {
    let app = spawn_app().await;
    let home = Home::new(&app, "M-1", 0, 40);
    app.record_all(&home).await;
    let utility = app.token(Identity::Utility);

    let pool = raw_pool(&app.dir).await;
    sqlx::query(
        "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_entries \
         BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    let status = app
        .release(vec![home.input(2)], Some(&utility))
        .await
        .expect_err("no answer without the log");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // An unauthenticated request cannot be logged either: no answer but UNAVAILABLE.
    let status = app
        .release(vec![home.input(2)], None)
        .await
        .expect_err("no answer without the log");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(app.releases_count().await, 0);

    // Once the log is writable again, the bill was never released and is released now.
    sqlx::query("DROP TRIGGER audit_unwritable")
        .execute(&pool)
        .await
        .expect("drop trigger");
    pool.close().await;
    let bills = app
        .release(vec![home.input(2)], Some(&utility))
        .await
        .expect("released");
    assert!(bills[0].granted, "{bills:?}");
    assert_eq!(
        bills[0].amount_paise,
        home.plaintext_bill(app.layout.tariff()).get()
    );
    assert_eq!(
        bills[0].audit_sequence, 1,
        "the failed attempts left no entry"
    );

    // With the pool closed, nothing at all is answered.
    app.audit.close().await;
    let status = app
        .release(vec![home.input(2)], Some(&utility))
        .await
        .expect_err("closed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn startup_fails_when_the_key_set_lacks_the_billing_rotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = Application::build(settings(dir.path(), vec![4]))
        .await
        .expect_err("missing steps");
    let message = format!("{error:#}");
    assert!(
        message.contains("lacks Galois keys for the rotation steps [1, 2]"),
        "{message}"
    );
}
