//! `seer.v1.Receipts` and `seer.v1.Release` over real gRPC, on a key authority built by
//! `Application::build` on port 0 with SQLite in a temporary directory: bills released from
//! real billing lanes equal the plaintext tariff to the paisa and come with the month's cells
//! as the meter's own accumulator counted them, the utility's circuit result (evaluated here
//! as the utility does, with the Galois keys fetched over `seer.v1.Keys`) must be
//! byte-identical to the key authority's re-execution, lanes writing outside their block change
//! nothing but their own bill (the circuit masks them; nothing decrypts a lane) and
//! implausible cells are refused on the decrypted result, the position registry binds each meter to
//! its first receipt's position, every refusal is refused and logged with its reason, nothing
//! is released while the audit log cannot be written, and the audit chain verifies after all
//! of it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use chrono::{NaiveDate, NaiveDateTime};
use key_authority::Application;
use key_authority::Settings;
use key_authority::audit::{AuditEntry, AuditLog, Decision, ListQuery, ProblemKind};
use key_authority::auth::device::{BillingReceiptStatement, DeviceKey};
use key_authority::auth::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, Identity, Role, TokenIssuer, TokenRequest,
};
use key_authority::enrolment::EnrolmentStore;
use key_authority::keys::KeySetSpec;
use key_authority::release::ReceiptStore;
use seer_ckks::{Ciphertext, CkksContext, Encryptor, Evaluator, GaloisKeys, PublicKey};
use seer_core::circuits::billing::{self, BillingLayout};
use seer_core::tariff::{CellEnergy, Paise, SlabAccumulator, Tariff};
use seer_core::units::Wh;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1;
use seer_proto::v1::keys_client::KeysClient;
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
    /// The utility's evaluator: the Galois keys as fetched over `seer.v1.Keys`.
    evaluator: Evaluator,
    receipts: ReceiptsClient<Channel>,
    release: ReleaseClient<Channel>,
    /// Each meter's position, as the utility knows it from the meter's batches.
    positions: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The meter registry, and each meter's device key (enrolled on first use).
    enrolment: EnrolmentStore,
    devices: std::sync::Mutex<std::collections::HashMap<String, Arc<DeviceKey>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Enrols a fresh device key for `meter` as an operator and the meter do: a one-time code,
/// then the enrolment with a proof of possession.
async fn enrol_device(enrolment: &EnrolmentStore, meter: &str) -> DeviceKey {
    let key = DeviceKey::generate().expect("device key");
    enrolment.enrol_device(meter, &key).await.expect("enrolled");
    key
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
    // Refusals counted before their body is read are written when their window closes: not
    // during these tests, so that the entries they expect are the only ones.
    settings.audit.refusals.window_secs = 3600;
    settings
}

async fn spawn_app() -> App {
    spawn_app_on(None).await
}

/// A key authority whose audit database is `database_url` (SQLite in the temporary directory
/// when `None`).
async fn spawn_app_on(database_url: Option<String>) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(dir.path(), vec![1, 2]);
    if let Some(url) = database_url {
        settings.audit.database_url = url;
    }
    let app = Application::build(settings).await.expect("build");
    let issuer = app.issuer().clone();
    let audit = Arc::clone(app.audit_log());
    let enrolment = app.enrolment();
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
    let galois = fetch_galois_keys(&channel, &ctx).await;
    App {
        dir,
        issuer,
        audit,
        evaluator: Evaluator::new(&ctx, None, Some(galois)),
        ctx,
        encryptor,
        layout,
        receipts: ReceiptsClient::new(channel.clone()).with_seer_limits(),
        release: ReleaseClient::new(channel).with_seer_limits(),
        positions: std::sync::Mutex::default(),
        enrolment,
        devices: std::sync::Mutex::default(),
        _stop: stop,
    }
}

/// The Galois keys of the billing parameter set, as the utility fetches them: streamed in
/// chunks over `seer.v1.Keys`, then parsed (frame, parameter-set id, checksum).
async fn fetch_galois_keys(channel: &Channel, ctx: &CkksContext) -> GaloisKeys {
    let mut keys = KeysClient::new(channel.clone()).with_seer_limits();
    let mut stream = keys
        .get_key(v1::GetKeyRequest {
            parameter_set_id: ctx.parameter_set_id().to_owned(),
            kind: v1::KeyKind::Galois as i32,
        })
        .await
        .expect("get key")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        assert_eq!(chunk.offset as usize, bytes.len());
        bytes.extend_from_slice(&chunk.data);
    }
    GaloisKeys::from_bytes(ctx, &bytes).expect("galois keys")
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
        app.place(meter, position);
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
            signature: Vec::new(),
        }
    }
}

/// The canonical statement a meter signs for `receipt`.
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
            .unwrap_or([0; 32]),
        billing_group: receipt.billing_group,
        billing_position: receipt.billing_position,
        closes_period: receipt.closes_period,
    }
}

impl App {
    fn token(&self, identity: Identity) -> String {
        let mut request = TokenRequest::new(identity, Duration::from_secs(600));
        if request.identity.role() == Role::Household {
            // Household tokens name one audience: this key authority.
            request.audience = vec![AUDIENCE_KEY_AUTHORITY.to_owned()];
        }
        self.issuer.issue(&request).expect("issue").token
    }

    /// `meter`'s device key, enrolled on first use.
    async fn device(&self, meter: &str) -> Arc<DeviceKey> {
        if let Some(key) = self.devices.lock().expect("devices").get(meter) {
            return Arc::clone(key);
        }
        let key = Arc::new(enrol_device(&self.enrolment, meter).await);
        self.devices
            .lock()
            .expect("devices")
            .insert(meter.to_owned(), Arc::clone(&key));
        key
    }

    /// `receipt` signed by its meter's enrolled device key, as meter-client signs it.
    async fn signed(&self, mut receipt: v1::ReceiptRequest) -> v1::ReceiptRequest {
        let key = self.device(&receipt.meter_id).await;
        receipt.signature = key.sign(&statement(&receipt)).to_vec();
        receipt
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

    /// Records `receipt` signed by its meter (unless it carries a signature already).
    async fn record(
        &self,
        receipt: v1::ReceiptRequest,
        token: &str,
    ) -> Result<bool, tonic::Status> {
        let receipt = if receipt.signature.is_empty() {
            self.signed(receipt).await
        } else {
            receipt
        };
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

    /// Records where the utility believes `meter`'s block is.
    fn place(&self, meter: &str, position: u32) {
        self.positions
            .lock()
            .expect("positions")
            .insert(meter.to_owned(), position);
    }

    fn position(&self, meter: &str) -> u32 {
        self.positions
            .lock()
            .expect("positions")
            .get(meter)
            .copied()
            .unwrap_or(0)
    }

    /// The honest utility's circuit outputs `(cells, bills)` over `lanes` (position and lane
    /// bytes, in the order given), or nothing when a lane is not a billing ciphertext.
    fn utility_result<'a>(
        &self,
        lanes: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> (Vec<u8>, Vec<u8>) {
        let parsed: Option<Vec<(usize, Ciphertext)>> = lanes
            .into_iter()
            .map(|(p, lane)| {
                Ciphertext::from_bytes(&self.ctx, lane)
                    .ok()
                    .map(|ct| (p as usize, ct))
            })
            .collect();
        parsed
            .and_then(|lanes| {
                self.layout
                    .evaluate(&self.evaluator, lanes.iter().map(|(p, ct)| (*p, ct)))
                    .ok()
            })
            .and_then(|out| {
                Some((
                    out.cells.to_bytes(&self.ctx).ok()?,
                    out.bills.to_bytes(&self.ctx).ok()?,
                ))
            })
            .unwrap_or_default()
    }

    /// Asks for the bills of `inputs` with the honest utility's outputs over their lanes.
    async fn release(
        &self,
        inputs: Vec<v1::BillInput>,
        token: Option<&str>,
    ) -> Result<Vec<v1::BillRelease>, tonic::Status> {
        let result = self.utility_result(
            inputs
                .iter()
                .map(|i| (self.position(&i.meter_id), i.billing_lane.as_slice())),
        );
        self.release_with(inputs, result, token)
            .await
            .map(|response| response.bills)
    }

    /// Asks for the bills of `inputs` with the given circuit outputs `(cells, bills)`.
    async fn release_with(
        &self,
        inputs: Vec<v1::BillInput>,
        outputs: (Vec<u8>, Vec<u8>),
        token: Option<&str>,
    ) -> Result<v1::ReleaseBillsResponse, tonic::Status> {
        self.release_in_group(0, inputs, outputs, token).await
    }

    async fn release_in_group(
        &self,
        billing_group: u32,
        inputs: Vec<v1::BillInput>,
        (cells, result): (Vec<u8>, Vec<u8>),
        token: Option<&str>,
    ) -> Result<v1::ReleaseBillsResponse, tonic::Status> {
        self.release
            .clone()
            .release_bills(with_token(
                v1::ReleaseBillsRequest {
                    period: PERIOD.to_owned(),
                    billing_group,
                    inputs,
                    result,
                    cells,
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
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

    /// Asserts that a request is refused by the gate in front of the server, before its body
    /// is read: without a valid token it is counted, not written (no entry until its window
    /// closes); a caller whose role may not ask gets its own entry naming the caller and the
    /// gate's class, and no period (the body was never read).
    async fn assert_refused_unread(
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
        let after = self.audit.head().await.expect("head").sequence;
        let Some(role) = role else {
            assert_eq!(
                after, before,
                "an unauthenticated refusal is counted, not written"
            );
            return;
        };
        assert_eq!(after, before + 1, "exactly one entry per refused request");
        let entry = self.last_entry().await;
        let reason = entry.decision.reason().expect("refused").to_owned();
        assert!(
            reason.contains(expected) && reason.contains("permission_denied.role"),
            "{reason:?} does not contain {expected:?}"
        );
        assert_eq!(entry.caller.map(|c| c.role), Some(role));
        assert_eq!(entry.kind, key_authority::audit::RequestKind::BILL);
        assert_eq!(entry.period, None);
    }

    /// Asserts that every bill of `bills` is refused with a reason containing `expected`,
    /// logged with that reason.
    async fn assert_all_refused(&self, bills: &[v1::BillRelease], expected: &str) {
        for bill in bills {
            assert!(!bill.granted, "{bill:?}");
            assert!(bill.cell_wh.is_empty(), "{bill:?}");
            assert!(
                bill.refusal.contains(expected),
                "{:?} does not contain {expected:?}",
                bill.refusal
            );
            let entry = self.entry(bill.audit_sequence).await;
            assert_eq!(entry.decision, Decision::refused(bill.refusal.clone()));
            assert_eq!(entry.meter_id.as_deref(), Some(bill.meter_id.as_str()));
        }
    }

    async fn execute(&self, sql: &str) {
        let pool = raw_pool(&self.dir).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .expect("sql");
        pool.close().await;
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

    // --- Requests refused as a whole before their body is read: without a valid token only
    // counted (in the window's aggregate), a role that may not ask logged once by the gate.
    let inputs = || homes.iter().map(|home| home.input(2)).collect::<Vec<_>>();
    app.assert_refused_unread(
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
    app.assert_refused_unread(
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
    app.assert_refused_unread(
        Some(&wrong_audience),
        inputs(),
        Code::Unauthenticated,
        "unauthenticated",
        None,
    )
    .await;
    app.assert_refused_unread(
        Some(&alg_none_token()),
        inputs(),
        Code::Unauthenticated,
        "unauthenticated",
        None,
    )
    .await;
    app.assert_refused_unread(
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

    // --- The release: each home's bill equals the plaintext bill of its readings, and its
    // cells the meter's own period-to-date cells. The utility evaluated the circuit over the
    // lanes in the reverse order: additions are exact, so the result is the same bytes.
    let result = app.utility_result(
        homes
            .iter()
            .rev()
            .map(|h| (h.position, h.closing().1.as_slice())),
    );
    let response = app
        .release_with(inputs(), result, Some(&utility))
        .await
        .expect("released");
    assert!(response.result_verified, "{response:?}");
    let bills = response.bills;
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
        let oracle = tariff
            .bill(home.readings.iter().copied())
            .expect("bill")
            .cells()
            .cells()
            .iter()
            .map(|wh| u64::try_from(wh.get()).expect("non-negative"))
            .collect::<Vec<_>>();
        assert_eq!(bill.cell_wh, oracle, "{}", home.meter);
        assert_eq!(oracle.len(), tariff.cell_count());
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
    let stored = ReceiptStore::new(&app.audit)
        .released(
            &key_authority::audit::RequestKind::BILL,
            "M-3",
            &PERIOD
                .parse::<key_authority::release::Period>()
                .expect("period"),
        )
        .await
        .expect("read")
        .expect("released");
    assert_eq!(stored.amount, bills[2].amount_paise);
    assert_eq!(stored.cell_wh, bills[2].cell_wh);

    // The same request again (an answer lost on the way): the stored releases come back,
    // nothing is decrypted or released anew, and each retry is logged as `bill.retry`.
    let before = app.audit.head().await.expect("head").sequence;
    let again = app
        .release(inputs(), Some(&utility))
        .await
        .expect("answered");
    assert!(bills.iter().all(|b| !b.already_released));
    let retried: Vec<v1::BillRelease> = bills
        .iter()
        .map(|b| v1::BillRelease {
            already_released: true,
            ..b.clone()
        })
        .collect();
    assert_eq!(
        again, retried,
        "a retry returns the very releases, marked as released before"
    );
    let retry = app.last_entry().await;
    assert_eq!(retry.sequence, before + 3);
    assert_eq!(retry.kind.as_str(), "bill.retry");
    assert_eq!(retry.meter_id.as_deref(), Some("M-3"));
    // A released bill mixed with a new input is no retry: the whole request is refused.
    let m7 = Home::new(&app, "M-7", 6, 40);
    app.record_all(&m7).await;
    let mixed = app
        .release(vec![homes[0].input(2), m7.input(2)], Some(&utility))
        .await
        .expect("answered");
    assert!(mixed[0].refusal.contains("already released"), "{mixed:?}");
    assert!(
        !mixed[0].granted && mixed[0].already_released && !mixed[0].withheld,
        "{mixed:?}"
    );
    assert!(
        !mixed[1].granted && mixed[1].withheld && !mixed[1].already_released,
        "{mixed:?}"
    );
    assert!(mixed[1].refusal.contains("withheld"), "{mixed:?}");
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
    // The enrolment and the receipts are entries already.
    let before = app
        .audit
        .verify(None)
        .await
        .expect("verify")
        .entries_checked;

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
    // An unauthenticated request is refused before its body is read and only counted: its
    // aggregate is written once the log is writable again (nothing is released either way).
    let status = app
        .release(vec![home.input(2)], None)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
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
        bills[0].audit_sequence,
        before + 1,
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

/// The slot vector of a lane whose cells sit at `position`, with `extra` (slot, Wh) writes.
fn crafted_slots(app: &App, position: u32, cells: &CellEnergy, extra: &[(usize, f64)]) -> Vec<f64> {
    let mut slots = app
        .layout
        .encode_batch(position as usize, cells)
        .expect("encode");
    for &(slot, wh) in extra {
        slots[slot] += wh;
    }
    slots
}

impl App {
    fn encrypt_slots(&self, slots: &[f64]) -> Vec<u8> {
        self.encryptor
            .encrypt_values(slots)
            .expect("encrypt")
            .to_bytes(&self.ctx)
            .expect("serialize")
    }

    /// Records a one-batch, closing month for `meter` at `position` whose lane is `lane`;
    /// returns its input.
    async fn closing_lane(&self, meter: &str, position: u32, lane: Vec<u8>) -> v1::BillInput {
        let receipt = v1::ReceiptRequest {
            meter_id: meter.to_owned(),
            sequence: 1,
            period: PERIOD.to_owned(),
            billing_lane_blake3: blake3::hash(&lane).as_bytes().to_vec(),
            billing_group: 0,
            billing_position: position,
            closes_period: true,
            signature: Vec::new(),
        };
        assert!(
            !self
                .record(receipt, &self.household(meter))
                .await
                .expect("recorded")
        );
        self.place(meter, position);
        v1::BillInput {
            meter_id: meter.to_owned(),
            sequence: 1,
            billing_lane: lane,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_utilitys_result_must_be_the_key_authoritys_to_the_bit() {
    let app = spawn_app().await;
    let tariff = app.layout.tariff().clone();
    let homes = [
        Home::new(&app, "M-1", 0, 60),
        Home::new(&app, "M-2", 7, 140),
    ];
    for home in &homes {
        app.record_all(home).await;
    }
    let utility = app.token(Identity::Utility);
    let inputs = || homes.iter().map(|home| home.input(2)).collect::<Vec<_>>();
    let at = |h: &Home| (h.position, h.closing().1.clone());
    let lanes: Vec<(u32, Vec<u8>)> = homes.iter().map(at).collect();
    let honest = app.utility_result(lanes.iter().map(|(p, l)| (*p, l.as_slice())));
    assert!(!honest.0.is_empty() && !honest.1.is_empty());

    // One bit flipped anywhere in either output: every input refused, and logged so.
    for (output, bit) in [
        (1, 0),
        (1, honest.1.len() * 4),
        (1, honest.1.len() * 8 - 1),
        (0, 7),
    ] {
        let mut altered = honest.clone();
        let bytes = if output == 0 {
            &mut altered.0
        } else {
            &mut altered.1
        };
        bytes[bit / 8] ^= 1 << (bit % 8);
        let response = app
            .release_with(inputs(), altered, Some(&utility))
            .await
            .expect("answered");
        assert!(!response.result_verified);
        assert_eq!(response.bills.len(), 2);
        app.assert_all_refused(
            &response.bills,
            "differs from the key authority's re-execution",
        )
        .await;
    }
    // Well-formed outputs of another computation: the circuit over one lane only, the same
    // lane twice, a lane at another position, or a raw lane sent as the "result".
    let one = app.utility_result([(homes[0].position, homes[0].closing().1.as_slice())]);
    let twice = app.utility_result([
        (homes[0].position, homes[0].closing().1.as_slice()),
        (homes[0].position, homes[0].closing().1.as_slice()),
        (homes[1].position, homes[1].closing().1.as_slice()),
    ]);
    let moved = app.utility_result([
        (homes[0].position + 1, homes[0].closing().1.as_slice()),
        (homes[1].position, homes[1].closing().1.as_slice()),
    ]);
    let raw = (homes[0].closing().1.clone(), homes[1].closing().1.clone());
    for other in [one, twice, moved, raw] {
        let response = app
            .release_with(inputs(), other, Some(&utility))
            .await
            .expect("answered");
        app.assert_all_refused(
            &response.bills,
            "differs from the key authority's re-execution",
        )
        .await;
    }
    // No result at all.
    let response = app
        .release_with(inputs(), (Vec::new(), Vec::new()), Some(&utility))
        .await
        .expect("answered");
    app.assert_all_refused(&response.bills, "lacks the circuit's outputs")
        .await;
    assert_eq!(app.releases_count().await, 0, "nothing was released");

    // The honest result: released, verified, to the paisa.
    let response = app
        .release_with(inputs(), honest, Some(&utility))
        .await
        .expect("released");
    assert!(response.result_verified);
    for (home, bill) in homes.iter().zip(&response.bills) {
        assert!(bill.granted, "{bill:?}");
        assert_eq!(bill.amount_paise, home.plaintext_bill(&tariff).get());
        let (_, _, cells) = home.closing();
        let cells: Vec<u64> = cells.cells().iter().map(|w| w.get() as u64).collect();
        assert_eq!(bill.cell_wh, cells);
    }
    let report = app.audit.verify(None).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_writing_outside_their_cells_change_no_other_bill() {
    let app = spawn_app().await;
    let tariff = app.layout.tariff().clone();
    let block = app.layout.block_width();
    // An honest home at position 0 and another at position 5.
    let honest = Home::new(&app, "M-H", 0, 90);
    app.record_all(&honest).await;
    let far = Home::new(&app, "M-F", 5, 20);
    app.record_all(&far).await;
    let cells = honest.closing().2.clone();

    let small = CellEnergy::try_from_cells(
        &tariff,
        [30_000, 0, 0, 0]
            .into_iter()
            .map(|wh| Wh::try_new(wh).expect("wh"))
            .collect(),
    )
    .expect("cells");
    // Position 1: its own cells, plus 5 kWh pushed into its neighbour's first slab.
    let into_neighbour = app
        .closing_lane(
            "M-X",
            1,
            app.encrypt_slots(&crafted_slots(&app, 1, &small, &[(0, 5_000.0)])),
        )
        .await;
    // Position 2: its own cells, plus 1 Wh in a slot no home uses yet.
    let far_away = app
        .closing_lane(
            "M-Y",
            2,
            app.encrypt_slots(&crafted_slots(&app, 2, &small, &[(900 * block + 1, 1.0)])),
        )
        .await;
    // Position 3 by its receipt, its cells encoded at position 4's block.
    let elsewhere = app
        .closing_lane(
            "M-Z",
            3,
            app.encrypt_slots(&crafted_slots(&app, 4, &small, &[])),
        )
        .await;
    // Fractional, negative and implausible cells in its own block.
    let fractional = app
        .closing_lane(
            "M-F1",
            6,
            app.encrypt_slots(&crafted_slots(&app, 6, &small, &[(6 * block + 1, 0.25)])),
        )
        .await;
    let negative = app
        .closing_lane(
            "M-F2",
            8,
            app.encrypt_slots(&crafted_slots(&app, 8, &small, &[(8 * block + 2, -40.0)])),
        )
        .await;
    let huge = app
        .closing_lane(
            "M-F3",
            9,
            app.encrypt_slots(&crafted_slots(&app, 9, &small, &[(9 * block + 3, 2.0e7)])),
        )
        .await;

    // The utility sends every lane and its honest outputs over all of them. Nothing is
    // decrypted to check the lanes: the circuit masks each lane to its home's cells, and
    // validity is judged on the decrypted result.
    let inputs = vec![
        honest.input(2),
        into_neighbour,
        far_away,
        elsewhere,
        fractional,
        negative,
        huge,
        far.input(2),
    ];
    let utility = app.token(Identity::Utility);
    let response = app
        .release(inputs.clone(), Some(&utility))
        .await
        .expect("answered");
    let bills = response;
    for (bill, expected) in bills[4..7].iter().zip([
        "cell 1 of home position 6 is not a whole number of Wh",
        "cell 2 of home position 8 is negative",
        "cell 3 of home position 9 exceeds 10000000 Wh",
    ]) {
        app.assert_all_refused(std::slice::from_ref(bill), expected)
            .await;
        assert!(
            !bill.refusal.contains("0.25") && !bill.refusal.contains("-40"),
            "{bill:?}"
        );
    }

    // The neighbours are billed exactly their plaintext bills, not the bill the 5 kWh pushed
    // into M-H's block would have made.
    assert!(bills[0].granted, "{:?}", bills[0]);
    assert_eq!(bills[0].amount_paise, honest.plaintext_bill(&tariff).get());
    let mut inflated = cells.cells().to_vec();
    inflated[0] = Wh::try_new(inflated[0].get() + 5_000).expect("wh");
    let inflated = tariff
        .bill_cells(&CellEnergy::try_from_cells(&tariff, inflated).expect("cells"))
        .expect("bill")
        .total();
    assert_ne!(bills[0].amount_paise, inflated.get());
    assert_eq!(
        bills[0].cell_wh,
        cells
            .cells()
            .iter()
            .map(|w| w.get() as u64)
            .collect::<Vec<_>>()
    );
    assert!(bills[7].granted, "{:?}", bills[7]);
    assert_eq!(bills[7].amount_paise, far.plaintext_bill(&tariff).get());
    // The lanes that wrote outside their cells are billed for their own cells only: the
    // pushes into a neighbour's block and into an unused block count for nobody, and M-Z,
    // whose cells sit in another block than its receipt's, is billed nothing.
    let small_bill = tariff.bill_cells(&small).expect("bill").total().get();
    let small_cells: Vec<u64> = small.cells().iter().map(|w| w.get() as u64).collect();
    for bill in &bills[1..3] {
        assert!(bill.granted, "{bill:?}");
        assert_eq!(bill.amount_paise, small_bill, "{bill:?}");
        assert_eq!(bill.cell_wh, small_cells, "{bill:?}");
    }
    assert!(bills[3].granted, "{:?}", bills[3]);
    assert_eq!(bills[3].amount_paise, 0);
    assert_eq!(bills[3].cell_wh, vec![0; tariff.cell_count()]);
    assert_eq!(app.releases_count().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_receipt_binds_a_meters_billing_position() {
    let app = spawn_app().await;
    let store = ReceiptStore::new(&app.audit);
    let m1 = Home::new(&app, "M-1", 4, 50);
    let m1_token = app.household("M-1");
    assert!(!app.record(m1.receipt(0), &m1_token).await.expect("binds"));
    let bound = store
        .registration("M-1")
        .await
        .expect("read")
        .expect("bound");
    assert_eq!(
        (
            bound.billing_group,
            bound.billing_position,
            bound.first_sequence
        ),
        (0, 4, 1)
    );

    // A later receipt claiming another position, or another group, is refused.
    for (group, position) in [(0, 5), (1, 4)] {
        let moved = v1::ReceiptRequest {
            billing_group: group,
            billing_position: position,
            ..m1.receipt(1)
        };
        let status = app.record(moved, &m1_token).await.expect_err("moved");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status
                .message()
                .contains("registered at billing group 0 position 4"),
            "{status:?}"
        );
    }
    // The bound position is kept; resending the first receipt is still a duplicate.
    assert!(app.record(m1.receipt(1), &m1_token).await.is_ok());
    assert!(
        app.record(m1.receipt(0), &m1_token)
            .await
            .expect("duplicate")
    );

    // Another meter claiming M-1's position is refused; the same position in another group
    // is free.
    let m2 = Home::new(&app, "M-2", 4, 50);
    let m2_token = app.household("M-2");
    let status = app
        .record(m2.receipt(0), &m2_token)
        .await
        .expect_err("taken");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains("already bound to meter M-1"),
        "{status:?}"
    );
    assert_eq!(store.registration("M-2").await.expect("read"), None);
    let other_group = v1::ReceiptRequest {
        billing_group: 3,
        ..m2.receipt(0)
    };
    assert!(!app.record(other_group, &m2_token).await.expect("free"));

    // Release checks the registry: a binding changed behind the receipts' back, or missing.
    app.record(m1.receipt(2), &m1_token).await.expect("closing");
    app.execute("UPDATE billing_positions SET billing_position = 9 WHERE meter_id = 'M-1'")
        .await;
    app.assert_refused(m1.input(2), "registered at group 0 position 9")
        .await;
    app.execute("DELETE FROM billing_positions WHERE meter_id = 'M-1'")
        .await;
    app.assert_refused(m1.input(2), "no registered billing position")
        .await;
    app.execute(
        "INSERT INTO billing_positions (meter_id, billing_group, billing_position, \
         first_sequence, bound_at_us) VALUES ('M-1', 0, 4, 1, 0)",
    )
    .await;
    let bills = app
        .release(vec![m1.input(2)], Some(&app.token(Identity::Utility)))
        .await
        .expect("released");
    assert!(bills[0].granted, "{bills:?}");
    assert_eq!(
        bills[0].amount_paise,
        m1.plaintext_bill(app.layout.tariff()).get()
    );
}

/// The registry and the released cells on PostgreSQL (the SQL above runs on SQLite): binding,
/// both refusals, and a release whose cells read back from `releases`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_positions_bind_and_bills_release_with_their_cells() {
    let Some(admin_url) = seer_service::testing::postgres_admin_url("release").await else {
        return;
    };
    let database =
        seer_service::testing::PostgresDatabase::create(&admin_url, "seer_ka_release").await;
    let app = spawn_app_on(Some(database.url().to_owned())).await;
    let tariff = app.layout.tariff().clone();
    let home = Home::new(&app, "M-1", 2, 70);
    app.record_all(&home).await;
    let token = app.household("M-1");
    let moved = v1::ReceiptRequest {
        sequence: 9,
        billing_position: 3,
        ..home.receipt(0)
    };
    assert_eq!(
        app.record(moved, &token).await.expect_err("moved").code(),
        Code::FailedPrecondition
    );
    let squatter = Home::new(&app, "M-2", 2, 70);
    assert_eq!(
        app.record(squatter.receipt(0), &app.household("M-2"))
            .await
            .expect_err("taken")
            .code(),
        Code::AlreadyExists
    );
    let store = ReceiptStore::new(&app.audit);
    assert_eq!(
        store
            .registration("M-1")
            .await
            .expect("read")
            .map(|r| (r.billing_group, r.billing_position)),
        Some((0, 2))
    );
    let response = app
        .release_with(
            vec![home.input(2)],
            app.utility_result([(home.position, home.closing().1.as_slice())]),
            Some(&app.token(Identity::Utility)),
        )
        .await
        .expect("released");
    assert!(response.result_verified);
    let bill = &response.bills[0];
    assert!(bill.granted, "{bill:?}");
    assert_eq!(bill.amount_paise, home.plaintext_bill(&tariff).get());
    let released = store
        .released(
            &key_authority::audit::RequestKind::BILL,
            "M-1",
            &PERIOD
                .parse::<key_authority::release::Period>()
                .expect("period"),
        )
        .await
        .expect("read")
        .expect("released");
    assert_eq!(released.cell_wh, bill.cell_wh);
    assert_eq!(
        released.cell_wh,
        home.closing()
            .2
            .cells()
            .iter()
            .map(|w| w.get() as u64)
            .collect::<Vec<_>>()
    );
    app.audit.close().await;
}

/// Receipts are bound to the audit chain: a receipt row written into the key authority's
/// database by anyone but the key authority (an insider with the database, a doctored backup)
/// has no granted `receipt` entry whose digest is its statement's, and no bill is released
/// from it. Tried: M-1's closing receipt copied under a meter that never recorded anything,
/// with a matching position registration, in another group at M-1's position (without the
/// chain check this released M-1's consumption as M-9's bill: no signature is re-checked at
/// release); and a home's real closing receipt altered in place. Each refused and logged; the
/// untouched home is still released to the paisa.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_rows_written_outside_the_key_authority_release_nothing() {
    let app = spawn_app().await;
    let tariff = app.layout.tariff().clone();
    let homes = [
        Home::new(&app, "M-1", 0, 60),
        Home::new(&app, "M-2", 7, 140),
    ];
    for home in &homes {
        app.record_all(home).await;
    }
    let utility = app.token(Identity::Utility);

    // M-9 never recorded anything: M-1's closing row and registration, copied into group 1.
    app.execute(
        "INSERT INTO receipts (meter_id, sequence, period, billing_digest, billing_group, \
         billing_position, closes_period, recorded_at_us, signature) \
         SELECT 'M-9', sequence, period, billing_digest, 1, billing_position, \
         closes_period, recorded_at_us, signature FROM receipts \
         WHERE meter_id = 'M-1' AND closes_period = 1; \
         INSERT INTO billing_positions (meter_id, billing_group, billing_position, \
         first_sequence, bound_at_us) \
         SELECT 'M-9', 1, billing_position, first_sequence, bound_at_us \
         FROM billing_positions WHERE meter_id = 'M-1'",
    )
    .await;
    let forged = v1::BillInput {
        meter_id: "M-9".into(),
        ..homes[0].input(2)
    };
    let result = app.utility_result([(homes[0].position, homes[0].closing().1.as_slice())]);
    let response = app
        .release_in_group(1, vec![forged], result, Some(&utility))
        .await
        .expect("answered");
    app.assert_all_refused(&response.bills, "is not in the audit chain")
        .await;

    // M-2's real closing receipt, altered in place (its position moved by one).
    app.execute(
        "UPDATE receipts SET billing_position = billing_position + 1 \
         WHERE meter_id = 'M-2' AND closes_period = 1",
    )
    .await;
    let result = app.utility_result([(homes[1].position, homes[1].closing().1.as_slice())]);
    let response = app
        .release_with(vec![homes[1].input(2)], result, Some(&utility))
        .await
        .expect("answered");
    app.assert_all_refused(&response.bills, "is not in the audit chain")
        .await;
    assert_eq!(app.releases_count().await, 0, "nothing was released");

    // M-1, untouched, is released to the paisa.
    let result = app.utility_result([(homes[0].position, homes[0].closing().1.as_slice())]);
    let response = app
        .release_with(vec![homes[0].input(2)], result, Some(&utility))
        .await
        .expect("released");
    assert!(response.bills[0].granted, "{:?}", response.bills[0]);
    assert_eq!(
        response.bills[0].amount_paise,
        homes[0].plaintext_bill(&tariff).get()
    );

    // The auditor's verification names the first row the chain did not record (M-2's altered
    // receipt sorts before M-9's copy), and releases stop until an operator acts.
    let report = app.audit.verify(None).await.expect("verify");
    match report.problem.as_ref().map(|p| &p.kind) {
        Some(ProblemKind::ReceiptNotInChain {
            table, meter_id, ..
        }) => {
            assert_eq!(table, "receipts");
            assert_eq!(meter_id, "M-2");
        }
        other => panic!("expected an unbound receipt, got {other:?}"),
    }
    assert!(app.audit.halted().is_some(), "releases stop");
    // Restored (the operator deletes the copy and moves the position back): intact again.
    app.execute(
        "DELETE FROM receipts WHERE meter_id = 'M-9'; \
         UPDATE receipts SET billing_position = billing_position - 1 \
         WHERE meter_id = 'M-2' AND closes_period = 1",
    )
    .await;
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
}
