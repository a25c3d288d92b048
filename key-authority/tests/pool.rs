//! A key-authority pool: two key authorities (`Application::build` twice in this process,
//! each with its own anchor file) on one PostgreSQL database and one key directory, as two
//! processes on one host would run.
//!
//! - Both members started at once on an empty key directory (after `init-audit` for each, as
//!   a pool is set up) hold one key set and one JWT signing key, the files on disk.
//! - Appends from both at once (enrolment codes, receipts) stay one linear chain: it verifies,
//!   its sequences are contiguous, every append is there once; a member whose anchor lags the
//!   head (the other appended meanwhile) still starts; an anchor file can have one holder only.
//! - The same bill request sent to both members at once releases each home once: one granted
//!   `bill` entry per home, the other answer marked `already_released`, and a lone retry
//!   through either member returns the stored amount.
//!
//! PostgreSQL as in `audit.rs` (`SEER_TEST_POSTGRES_URL`, else 127.0.0.1:5432; skipped with a
//! note when none is available outside CI).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use key_authority::Application;
use key_authority::Settings;
use key_authority::audit::{AuditLog, Decision, ListQuery};
use key_authority::auth::device::{BillingReceiptStatement, DeviceKey};
use key_authority::auth::{AUDIENCE_KEY_AUTHORITY, Identity, Role, TokenIssuer, TokenRequest};
use key_authority::keys::KeySetSpec;
use seer_ckks::{Ciphertext, CkksContext, Encryptor, Evaluator, GaloisKeys, PublicKey};
use seer_core::circuits::billing::{self, BillingLayout};
use seer_core::tariff::{CellEnergy, SlabAccumulator};
use seer_core::units::Wh;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1;
use seer_proto::v1::receipts_client::ReceiptsClient;
use seer_proto::v1::release_client::ReleaseClient;
use seer_service::testing::{PostgresDatabase, postgres_admin_url};
use tonic::Request;
use tonic::transport::Channel;

const PERIOD: &str = "2007-01";

/// One running member.
struct Member {
    issuer: TokenIssuer,
    audit: Arc<AuditLog>,
    app_keys: Arc<key_authority::keys::KeyStore>,
    layout: BillingLayout,
    enrolment: key_authority::enrolment::EnrolmentStore,
    receipts: ReceiptsClient<Channel>,
    release: ReleaseClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Member {
    /// Stops serving and waits until the application (and its anchor lock) is dropped.
    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            stopped.await.expect("joined").expect("served");
        }
    }
}

/// The pool's shared pieces: the database, the key directory, one settings per member.
struct Pool {
    dir: tempfile::TempDir,
    _db: PostgresDatabase,
    url: String,
}

impl Pool {
    async fn new() -> Option<Self> {
        let admin_url = postgres_admin_url("pool").await?;
        let db = PostgresDatabase::create(&admin_url, "seer_ka_pool").await;
        Some(Self {
            dir: tempfile::tempdir().expect("tempdir"),
            url: db.url().to_owned(),
            _db: db,
        })
    }

    /// Member `name`'s settings: the shared key directory, JWT key and database; its own
    /// anchor file.
    fn settings(&self, name: &str) -> Settings {
        let dir = self.dir.path();
        let mut settings = Settings::default();
        settings.server.port = 0;
        settings.keys.dir = dir.join("keys");
        settings.keys.sets = vec![KeySetSpec {
            parameter_set: billing::PARAMETER_SET.id(),
            galois_steps: vec![1, 2],
        }];
        settings.auth.signing_key_file = dir.join("jwt.pem");
        settings.audit.database_url = self.url.clone();
        settings.audit.anchor_file = Some(dir.join(format!("anchor-{name}")));
        settings.audit.refusals.window_secs = 3600;
        settings
    }

    async fn start(&self, name: &str) -> anyhow::Result<Member> {
        let app = Application::build(self.settings(name)).await?;
        Ok(serve(app).await)
    }
}

async fn serve(app: Application) -> Member {
    let issuer = app.issuer().clone();
    let audit = Arc::clone(app.audit_log());
    let app_keys = Arc::clone(app.keys());
    let layout = app.bill_engine().layout().clone();
    let enrolment = app.enrolment();
    let address = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Member {
        issuer,
        audit,
        app_keys,
        layout,
        enrolment,
        receipts: ReceiptsClient::new(channel.clone()).with_seer_limits(),
        release: ReleaseClient::new(channel.clone()).with_seer_limits(),
        stop: Some(stop),
        stopped: Some(handle),
    }
}

/// Two members started the way a pool is set up: `init-audit` for each (at once: the JWT
/// signing key is generated once), then both started at once on the empty key directory.
async fn start_pool() -> Option<(Pool, Member, Member)> {
    let pool = Pool::new().await?;
    let (sa, sb) = (pool.settings("a"), pool.settings("b"));
    let (ia, ib) = tokio::join!(
        key_authority::startup::init_audit(&sa),
        key_authority::startup::init_audit(&sb)
    );
    assert_eq!((ia.expect("init a"), ib.expect("init b")), (0, 0));
    let (a, b) = tokio::join!(pool.start("a"), pool.start("b"));
    Some((pool, a.expect("member a"), b.expect("member b")))
}

fn token(issuer: &TokenIssuer, identity: Identity) -> String {
    let mut request = TokenRequest::new(identity, Duration::from_secs(600));
    if request.identity.role() == Role::Household {
        request.audience = vec![AUDIENCE_KEY_AUTHORITY.to_owned()];
    }
    issuer.issue(&request).expect("issue").token
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// Every entry of the log, in order.
async fn all_entries(audit: &AuditLog) -> Vec<key_authority::audit::AuditEntry> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = audit
            .list(&ListQuery {
                after_sequence: after,
                limit: 1000,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        entries.extend(page.entries);
        match page.next_after_sequence {
            Some(next) => after = next,
            None => return entries,
        }
    }
}

async fn assert_verifies(audit: &AuditLog) {
    let report = audit.verify(None).await.expect("verify");
    assert!(report.problem.is_none(), "{:?}", report.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_started_at_once_on_an_empty_key_dir_hold_one_key_set() {
    let Some((pool, a, b)) = start_pool().await else {
        return;
    };
    let id = billing::PARAMETER_SET.id();
    let (ka, kb) = (
        a.app_keys.get(&id).expect("a's set"),
        b.app_keys.get(&id).expect("b's set"),
    );
    let on_disk = std::fs::read(pool.dir.path().join("keys").join(&id).join("public.key"))
        .expect("public key file");
    assert_eq!(ka.public_key_bytes().as_slice(), on_disk.as_slice());
    assert_eq!(kb.public_key_bytes().as_slice(), on_disk.as_slice());
    // What one member encrypts for, the other's secret key decrypts: one secret key. (The
    // key store checks each public key against its secret key at load.)
    assert_eq!(a.audit.verifying_key(), b.audit.verifying_key());
    // A token issued by one member is accepted by the other.
    let utility = token(&a.issuer, Identity::Utility);
    let answer = b
        .release
        .clone()
        .release_bills(with_token(
            v1::ReleaseBillsRequest {
                period: "not-a-period".into(),
                ..v1::ReleaseBillsRequest::default()
            },
            &utility,
        ))
        .await
        .expect_err("refused");
    assert_eq!(answer.code(), tonic::Code::InvalidArgument, "{answer}");
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_from_both_members_at_once_stay_one_chain() {
    let Some((pool, a, b)) = start_pool().await else {
        return;
    };
    // A second holder of a member's anchor file is refused.
    let Err(refused) = pool.start("a").await else {
        panic!("a second holder of anchor-a started");
    };
    assert!(
        format!("{refused:#}").contains("in use by another key-authority process"),
        "{refused:#}"
    );

    const PER_MEMBER: usize = 40;
    let mut tasks = Vec::new();
    for (name, member) in [("a", &a), ("b", &b)] {
        for i in 0..PER_MEMBER {
            let enrolment = member.enrolment.clone();
            tasks.push(tokio::spawn(async move {
                enrolment
                    .issue_code(&format!("meter-{name}-{i}"), Duration::from_secs(600))
                    .await
                    .expect("code issued");
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    let entries = all_entries(&a.audit).await;
    assert_eq!(entries.len(), 2 * PER_MEMBER);
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(entry.sequence, index as u64 + 1, "contiguous sequences");
        if index > 0 {
            assert_eq!(
                entry.previous_hash,
                entries[index - 1].entry_hash,
                "no fork"
            );
        }
    }
    let mut meters: Vec<String> = entries
        .iter()
        .map(|e| e.meter_id.clone().expect("meter"))
        .collect();
    meters.sort();
    meters.dedup();
    assert_eq!(meters.len(), 2 * PER_MEMBER, "every append once");
    assert_verifies(&a.audit).await;
    assert_verifies(&b.audit).await;

    // Member b stops; a appends on; b's anchor is now behind the head, and b still starts.
    let b_anchor = b.audit.anchored().expect("anchored").sequence;
    b.shut_down().await;
    for i in 0..3 {
        a.enrolment
            .issue_code(&format!("late-{i}"), Duration::from_secs(600))
            .await
            .expect("code");
    }
    let head = a.audit.head().await.expect("head").sequence;
    assert!(b_anchor < head);
    let b = pool.start("b").await.expect("b restarts behind the head");
    b.enrolment
        .issue_code("after-restart", Duration::from_secs(600))
        .await
        .expect("b appends");
    assert_eq!(b.audit.anchored().expect("anchored").sequence, head + 1);
    assert_verifies(&b.audit).await;
    a.shut_down().await;
    b.shut_down().await;
}

// ---------------------------------------------------------------------------------------------
// Bills through both members

/// The meter side of one home: January 2007 in three batches; per batch (sequence, lane,
/// cells).
struct Home {
    meter: String,
    position: u32,
    batches: Vec<(u64, Vec<u8>, CellEnergy)>,
}

struct Billing {
    ctx: CkksContext,
    encryptor: Encryptor,
    evaluator: Evaluator,
    layout: BillingLayout,
}

impl Billing {
    fn new(app: &Member) -> Self {
        let set = app
            .app_keys
            .get(&billing::PARAMETER_SET.id())
            .expect("billing key set");
        let ctx = set.context().clone();
        let public_key = PublicKey::from_bytes(&ctx, set.public_key_bytes()).expect("pk");
        let galois = GaloisKeys::from_bytes(&ctx, set.galois_keys_bytes().expect("galois"))
            .expect("galois keys");
        Self {
            encryptor: Encryptor::new(&ctx, &public_key).expect("encryptor"),
            evaluator: Evaluator::new(&ctx, None, Some(galois)),
            ctx,
            layout: app.layout.clone(),
        }
    }

    fn home(&self, meter: &str, position: u32, base_wh: i64) -> Home {
        let start = chrono::NaiveDate::from_ymd_opt(2007, 1, 1)
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("time");
        let readings: Vec<(chrono::NaiveDateTime, Wh)> = (0..31 * 24)
            .map(|hour: i64| {
                (
                    start + chrono::Duration::hours(hour),
                    Wh::try_new(base_wh + (hour * 37) % 113).expect("wh"),
                )
            })
            .collect();
        let mut acc = SlabAccumulator::new(self.layout.tariff());
        let mut batches = Vec::new();
        for (sequence, days) in [(1_u64, 0..10), (2, 10..20), (3, 20..31)] {
            for (at, wh) in &readings[days.start * 24..days.end * 24] {
                acc.push(*at, *wh).expect("push");
            }
            let _ = acc.take_batch();
            let cells = acc.period_cells().clone();
            let lane = self
                .layout
                .encrypt_batch(&self.encryptor, position as usize, &cells)
                .expect("encrypt")
                .to_bytes(&self.ctx)
                .expect("serialize");
            batches.push((sequence, lane, cells));
        }
        Home {
            meter: meter.to_owned(),
            position,
            batches,
        }
    }

    /// The honest utility's outputs `(cells, bills)` over the homes' closing lanes.
    fn result(&self, homes: &[&Home]) -> (Vec<u8>, Vec<u8>) {
        let lanes: Vec<(usize, Ciphertext)> = homes
            .iter()
            .map(|h| {
                let lane = &h.batches.last().expect("batches").1;
                (
                    h.position as usize,
                    Ciphertext::from_bytes(&self.ctx, lane).expect("lane"),
                )
            })
            .collect();
        let out = self
            .layout
            .evaluate(&self.evaluator, lanes.iter().map(|(p, ct)| (*p, ct)))
            .expect("evaluate");
        (
            out.cells.to_bytes(&self.ctx).expect("cells"),
            out.bills.to_bytes(&self.ctx).expect("bills"),
        )
    }
}

fn receipt(home: &Home, index: usize) -> v1::ReceiptRequest {
    let (sequence, lane, _) = &home.batches[index];
    v1::ReceiptRequest {
        meter_id: home.meter.clone(),
        sequence: *sequence,
        period: PERIOD.to_owned(),
        billing_lane_blake3: blake3::hash(lane).as_bytes().to_vec(),
        billing_group: 0,
        billing_position: home.position,
        closes_period: index + 1 == home.batches.len(),
        signature: Vec::new(),
    }
}

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

/// Enrols `home`'s meter through `enrol_at` and records its receipts, alternating members.
async fn record_home(home: &Home, members: [&Member; 2]) {
    let device = DeviceKey::generate().expect("device key");
    members[0]
        .enrolment
        .enrol_device(&home.meter, &device)
        .await
        .expect("enrolled");
    for index in 0..home.batches.len() {
        let member = members[index % 2];
        let household = token(
            &member.issuer,
            Identity::Household {
                meter_id: home.meter.clone(),
            },
        );
        let mut r = receipt(home, index);
        r.signature = device.sign(&statement(&r)).to_vec();
        let ack = member
            .receipts
            .clone()
            .record(with_token(r, &household))
            .await
            .expect("recorded");
        assert!(!ack.into_inner().duplicate);
    }
}

fn bill_request(homes: &[&Home], (cells, result): (Vec<u8>, Vec<u8>)) -> v1::ReleaseBillsRequest {
    v1::ReleaseBillsRequest {
        period: PERIOD.to_owned(),
        billing_group: 0,
        inputs: homes
            .iter()
            .map(|h| {
                let (sequence, lane, _) = h.batches.last().expect("batches");
                v1::BillInput {
                    meter_id: h.meter.clone(),
                    sequence: *sequence,
                    billing_lane: lane.clone(),
                }
            })
            .collect(),
        result,
        cells,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_bill_request_through_both_members_is_released_once() {
    let Some((_pool, a, b)) = start_pool().await else {
        return;
    };
    let billing = Billing::new(&a);
    let homes: Vec<Home> = (0..3)
        .map(|i| billing.home(&format!("home-{i}"), i, 150 + 40 * i64::from(i)))
        .collect();
    let refs: Vec<&Home> = homes.iter().collect();
    for (i, home) in homes.iter().enumerate() {
        let members = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
        record_home(home, members).await;
    }
    let request = bill_request(&refs, billing.result(&refs));
    let (ta, tb) = (
        token(&a.issuer, Identity::Utility),
        token(&b.issuer, Identity::Utility),
    );
    let (mut ca, mut cb) = (a.release.clone(), b.release.clone());
    let (ra, rb) = tokio::join!(
        ca.release_bills(with_token(request.clone(), &ta)),
        cb.release_bills(with_token(request.clone(), &tb)),
    );
    let (ra, rb) = (
        ra.expect("a answers").into_inner(),
        rb.expect("b answers").into_inner(),
    );

    // Exactly one granted `bill` entry per home, whichever member granted it.
    let entries = all_entries(&a.audit).await;
    let mut granted: HashMap<String, Vec<u64>> = HashMap::new();
    for e in entries
        .iter()
        .filter(|e| e.kind.as_str() == "bill" && e.decision == Decision::Granted)
    {
        granted
            .entry(e.meter_id.clone().expect("meter"))
            .or_default()
            .push(e.sequence);
    }
    assert_eq!(granted.len(), homes.len());
    assert!(granted.values().all(|s| s.len() == 1), "{granted:?}");

    // One answer released the bills fresh; the other says they were released before: refused
    // (it was checked before the first committed) or answered from the stored releases (it
    // was checked after). Either way it carries `already_released`.
    let fresh_first = ra.bills.iter().all(|r| r.granted && !r.already_released);
    let (fresh, other) = if fresh_first { (&ra, &rb) } else { (&rb, &ra) };
    assert!(
        fresh.bills.iter().all(|r| r.granted && !r.already_released),
        "{fresh:?}"
    );
    assert!(other.bills.iter().all(|r| r.already_released), "{other:?}");
    let amounts: HashMap<&str, (i64, u64)> = fresh
        .bills
        .iter()
        .map(|r| (r.meter_id.as_str(), (r.amount_paise, r.audit_sequence)))
        .collect();
    for r in &fresh.bills {
        assert!(r.amount_paise > 0);
        assert_eq!(granted[&r.meter_id], vec![r.audit_sequence]);
    }
    for r in other.bills.iter().filter(|r| r.granted) {
        assert_eq!(
            (r.amount_paise, r.audit_sequence),
            amounts[r.meter_id.as_str()]
        );
    }

    // A lone retry of each home, through either member, returns the stored release.
    for (i, home) in refs.iter().enumerate() {
        let (member, t) = if i % 2 == 0 { (&a, &ta) } else { (&b, &tb) };
        let lone = bill_request(&[home], billing.result(&[home]));
        let answer = member
            .release
            .clone()
            .release_bills(with_token(lone, t))
            .await
            .expect("answered")
            .into_inner();
        let r = &answer.bills[0];
        assert!(r.granted && r.already_released, "{r:?}");
        assert_eq!(
            (r.amount_paise, r.audit_sequence),
            amounts[home.meter.as_str()]
        );
    }
    let entries = all_entries(&a.audit).await;
    let grants = entries
        .iter()
        .filter(|e| e.kind.as_str() == "bill" && e.decision == Decision::Granted)
        .count();
    assert_eq!(grants, homes.len(), "retries grant nothing new");
    assert_verifies(&a.audit).await;
    assert_verifies(&b.audit).await;
    a.shut_down().await;
    b.shut_down().await;
}
