//! `seer.v1.GroupTotals` over real gRPC, on a key authority built by `Application::build` on
//! port 0 with SQLite in a temporary directory. Meters are simulated as meter-client builds
//! its lanes (readings clamped to Δ at their window slots, each slot of the batch's span plus
//! one share of `SharePlan`, the plan signed with the batch by the meter's enrolled device
//! key). Checked against independent oracles: where every share is present and no top-up is
//! drawn, the released totals equal the plaintext sum of the lanes exactly; the released
//! totals' errors against the clamped readings follow the discrete Laplace distribution of
//! scale Δ/ε (Kolmogorov–Smirnov against its closed-form CDF), with meters missing in the
//! afternoons and the key authority's top-up; hours below the presence floor are withheld
//! and released later; a second release of an hour draws nothing new; forged, foreign,
//! duplicated, overlapping, unsigned and planless inputs are left out with their reasons, each
//! refusal audited; only the utility may ask; the audit chain verifies after all of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use key_authority::Application;
use key_authority::Settings;
use key_authority::audit::{AuditLog, ListQuery, RequestKind};
use key_authority::auth::device::{BillingReceiptStatement, DeviceKey, NoisePlanStatement};
use key_authority::auth::{AUDIENCE_KEY_AUTHORITY, Identity, Role, TokenIssuer, TokenRequest};
use key_authority::enrolment::EnrolmentStore;
use key_authority::keys::KeySetSpec;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use seer_ckks::{CkksContext, Encryptor, PublicKey};
use seer_core::circuits::billing;
use seer_core::dp::{Epsilon, SharePlan};
use seer_core::units::Wh;
use seer_proto::WithMessageLimits as _;
use seer_proto::statements::{batch_statement, noise_plan_wire};
use seer_proto::v1;
use seer_proto::v1::group_totals_client::GroupTotalsClient;
use seer_proto::v1::receipts_client::ReceiptsClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Meters in the group; each plan is sized for all of them (t = 0), so k = 8.
const GROUP: u32 = 8;
const DELTA_WH: i64 = 1_000;
const EPSILON: f64 = 1.0;

struct App {
    _dir: tempfile::TempDir,
    issuer: TokenIssuer,
    audit: Arc<AuditLog>,
    ctx: CkksContext,
    encryptor: Encryptor,
    receipts: ReceiptsClient<Channel>,
    totals: GroupTotalsClient<Channel>,
    enrolment: EnrolmentStore,
    devices: std::sync::Mutex<HashMap<String, Arc<DeviceKey>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.keys.dir = dir.path().join("keys");
    settings.keys.sets = vec![KeySetSpec {
        parameter_set: billing::PARAMETER_SET.id(),
        galois_steps: vec![1, 2],
    }];
    settings.auth.signing_key_file = dir.path().join("jwt.pem");
    settings.audit.database_url = format!("sqlite://{}", dir.path().join("ka.db").display());
    settings.audit.refusals.window_secs = 3600;
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
        _dir: dir,
        issuer,
        audit,
        ctx,
        encryptor,
        receipts: ReceiptsClient::new(channel.clone()).with_seer_limits(),
        totals: GroupTotalsClient::new(channel).with_seer_limits(),
        enrolment,
        devices: std::sync::Mutex::default(),
        _stop: stop,
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

fn plan(window_start: &str) -> NoisePlanStatement {
    NoisePlanStatement {
        group_size: GROUP,
        tolerated: 0,
        sensitivity_wh: DELTA_WH,
        epsilon: EPSILON,
        window_start: window_start.to_owned(),
        interval_seconds: 900,
        window_slots: 96,
        first_slot: 0,
        slot_count: 0,
    }
}

fn share_plan() -> SharePlan {
    SharePlan::try_new(
        GROUP,
        0,
        Wh::try_new(DELTA_WH).expect("wh"),
        Epsilon::try_new(EPSILON).expect("eps"),
    )
    .expect("plan")
}

fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339()
}

/// Home `home`'s reading of slot `slot` on `day`: up to 1.5 kWh, some above Δ.
fn reading(home: u32, day: u32, slot: usize) -> i64 {
    let x = u64::from(home) * 7_919 + u64::from(day) * 104_729 + slot as u64 * 1_299_709;
    i64::try_from((x ^ (x >> 7)) % 1_500).expect("small")
}

/// One simulated batch: the meter's lane values (clamped readings plus shares) and the batch.
struct Batch {
    lane: Vec<i64>,
    wire: v1::UploadBatch,
    billing_digest: [u8; 32],
}

impl App {
    fn token(&self, identity: Identity) -> String {
        let mut request = TokenRequest::new(identity, Duration::from_secs(600));
        if request.identity.role() == Role::Household {
            request.audience = vec![AUDIENCE_KEY_AUTHORITY.to_owned()];
        }
        self.issuer.issue(&request).expect("issue").token
    }

    fn utility(&self) -> String {
        self.token(Identity::Utility)
    }

    async fn device(&self, meter: &str) -> Arc<DeviceKey> {
        if let Some(key) = self.devices.lock().expect("devices").get(meter) {
            return Arc::clone(key);
        }
        let key = DeviceKey::generate().expect("device key");
        self.enrolment
            .enrol_device(meter, &key)
            .await
            .expect("enrolled");
        let key = Arc::new(key);
        self.devices
            .lock()
            .expect("devices")
            .insert(meter.to_owned(), Arc::clone(&key));
        key
    }

    /// Registers `meter` at (group, position) with a signed billing receipt, as its first
    /// batch does.
    async fn register(&self, meter: &str, group: u32, position: u32) {
        let mut receipt = v1::ReceiptRequest {
            meter_id: meter.to_owned(),
            sequence: 1,
            period: "2010-01".into(),
            billing_lane_blake3: blake3::hash(meter.as_bytes()).as_bytes().to_vec(),
            billing_group: group,
            billing_position: position,
            closes_period: false,
            signature: Vec::new(),
        };
        let statement = BillingReceiptStatement {
            meter_id: receipt.meter_id.clone(),
            sequence: receipt.sequence,
            period: receipt.period.clone(),
            params_id: billing::PARAMETER_SET.id(),
            billing_lane_blake3: *blake3::hash(meter.as_bytes()).as_bytes(),
            billing_group: group,
            billing_position: position,
            closes_period: false,
        };
        receipt.signature = self.device(meter).await.sign(&statement).to_vec();
        let token = self.token(Identity::Household {
            meter_id: meter.to_owned(),
        });
        self.receipts
            .clone()
            .record(with_token(receipt, &token))
            .await
            .expect("receipt recorded");
    }

    /// `meter`'s batch `sequence` over slots `span` of `day`, built and signed as meter-client
    /// builds it.
    #[expect(clippy::too_many_arguments, reason = "a meter's batch, field by field")]
    async fn batch(
        &self,
        meter: &str,
        home: u32,
        group: u32,
        sequence: u64,
        day: NaiveDate,
        span: std::ops::Range<usize>,
        rng: &mut StdRng,
    ) -> Batch {
        let window = day.and_hms_opt(0, 0, 0).expect("midnight");
        let share = share_plan().share();
        let mut lane = vec![0_i64; self.ctx.slots()];
        for slot in span.clone() {
            lane[slot] = reading(home, day_number(day), slot).min(DELTA_WH) + share.sample(rng);
        }
        let values: Vec<f64> = lane.iter().map(|v| *v as f64).collect();
        let analytics_lane = self
            .encryptor
            .encrypt_values(&values)
            .expect("encrypt")
            .to_bytes(&self.ctx)
            .expect("serialize");
        let at = |slot: usize| window + TimeDelta::minutes(15 * slot as i64);
        let billing_digest = *blake3::hash(&sequence.to_be_bytes()).as_bytes();
        let mut wire = v1::UploadBatch {
            meter_id: meter.to_owned(),
            sequence,
            period: "2010-01".into(),
            start: rfc3339(at(span.start)),
            end: rfc3339(at(span.end)),
            readings: u32::try_from(span.len()).expect("small"),
            billing_lane: Vec::new(),
            billing_position: home,
            billing_group: group,
            analytics_lane,
            epsilon_spent: EPSILON * span.len() as f64,
            signature: Vec::new(),
            meter_certificate: Vec::new(),
            noise_plan: Some(noise_plan_wire(&NoisePlanStatement {
                first_slot: u32::try_from(span.start).expect("small"),
                slot_count: u32::try_from(span.len()).expect("small"),
                ..plan(&rfc3339(window))
            })),
        };
        self.sign(&mut wire, billing_digest).await;
        Batch {
            lane,
            wire,
            billing_digest,
        }
    }

    async fn sign(&self, wire: &mut v1::UploadBatch, billing_digest: [u8; 32]) {
        let key = self.device(&wire.meter_id).await;
        wire.signature = key.sign(&batch_statement(wire, billing_digest)).to_vec();
    }

    async fn release(
        &self,
        group: u32,
        window_start: &str,
        inputs: Vec<(v1::UploadBatch, [u8; 32])>,
        token: &str,
    ) -> Result<v1::GroupTotalsResponse, tonic::Status> {
        let mut messages = vec![v1::GroupTotalsRequest {
            item: Some(v1::group_totals_request::Item::Header(
                v1::GroupTotalsHeader {
                    group,
                    plan: Some(noise_plan_wire(&plan(window_start))),
                    per_interval: true,
                },
            )),
        }];
        messages.extend(
            inputs
                .into_iter()
                .map(|(batch, digest)| v1::GroupTotalsRequest {
                    item: Some(v1::group_totals_request::Item::Input(
                        v1::GroupTotalsInput {
                            batch: Some(batch),
                            billing_lane_blake3: digest.to_vec(),
                        },
                    )),
                }),
        );
        self.totals
            .clone()
            .release(with_token(tokio_stream::iter(messages), token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn entries(&self, kind: &str) -> Vec<key_authority::audit::AuditEntry> {
        self.audit
            .list(&ListQuery {
                kind: Some(RequestKind::try_new(kind).expect("kind")),
                limit: 1_000,
                ..ListQuery::default()
            })
            .await
            .expect("list")
            .entries
    }
}

fn day_number(day: NaiveDate) -> u32 {
    u32::try_from((day - NaiveDate::from_ymd_opt(2010, 1, 1).expect("date")).num_days())
        .expect("after 2010-01-01")
}

fn meter(home: u32) -> String {
    format!("M-{home:04}")
}

#[tokio::test]
async fn group_totals_carry_one_draw_per_interval_and_each_hour_is_released_once() {
    let app = spawn_app().await;
    for home in 0..GROUP {
        app.register(&meter(home), 0, home).await;
    }
    let utility = app.utility();
    let mut rng = StdRng::seed_from_u64(16);
    let days = 10;
    let mut errors = Vec::new();
    let mut exact_hours = 0;
    for d in 0..days {
        let day = NaiveDate::from_ymd_opt(2010, 1, 1 + d).expect("day");
        let window = rfc3339(day.and_hms_opt(0, 0, 0).expect("midnight"));
        // Homes 0-4 send the whole day; homes 5-7 only the morning, home 7 in two batches:
        // 8 = k present until noon (no top-up), 5 in the afternoon (the key authority adds
        // the 3 missing shares).
        let mut batches = Vec::new();
        for home in 0..GROUP {
            let sequence = u64::from(d) * 10 + 2;
            // (first slot, end) of each batch.
            let spans: &[(usize, usize)] = match home {
                0..=4 => &[(0, 96)],
                5 | 6 => &[(0, 48)],
                _ => &[(0, 20), (20, 48)],
            };
            for (i, (first, end)) in spans.iter().copied().enumerate() {
                batches.push(
                    app.batch(
                        &meter(home),
                        home,
                        0,
                        sequence + i as u64,
                        day,
                        first..end,
                        &mut rng,
                    )
                    .await,
                );
            }
        }
        let inputs = batches
            .iter()
            .map(|b| (b.wire.clone(), b.billing_digest))
            .collect();
        let answer = app
            .release(0, &window, inputs, &utility)
            .await
            .expect("release");
        assert!(answer.refused.is_empty(), "{:?}", answer.refused);
        assert_eq!(answer.accepted, 9);
        assert_eq!(answer.hours.len(), 24);
        // The plaintext twin of the lanes' sum (what the key authority decrypts, less its
        // top-up) and the truth: the clamped readings of the homes present.
        let mut twin = [0_i64; 96];
        for b in &batches {
            for (t, v) in twin.iter_mut().zip(&b.lane) {
                *t += v;
            }
        }
        for (h, hour) in answer.hours.iter().enumerate() {
            assert_eq!(hour.status(), v1::GroupHourStatus::Released, "hour {h}");
            assert_eq!(hour.interval_wh.len(), 4);
            assert_eq!(hour.total_wh, hour.interval_wh.iter().sum::<i64>());
            assert_eq!(hour.min_present, if h < 12 { 8 } else { 5 });
            assert!((hour.epsilon - EPSILON).abs() < 1e-12);
            assert!((hour.noise_scale_wh - 1_000.0).abs() < 1e-9);
            for (q, released) in hour.interval_wh.iter().enumerate() {
                let slot = 4 * h + q;
                let present: Vec<u32> = if h < 12 {
                    (0..GROUP).collect()
                } else {
                    (0..5).collect()
                };
                let truth: i64 = present
                    .iter()
                    .map(|home| reading(*home, d, slot).min(DELTA_WH))
                    .sum();
                errors.push(released - truth);
                if h < 12 {
                    // Every share present: no top-up, so the release is the twin exactly.
                    assert_eq!(*released, twin[slot], "day {d} slot {slot}");
                }
            }
            if h < 12 {
                exact_hours += 1;
            }
        }
    }
    assert_eq!(exact_hours, 12 * days);
    // 960 interval totals, each carrying one discrete Laplace draw of scale Δ/ε = 1,000 Wh:
    // the KS distance stays below its 0.1 % critical value, 1.95/√n.
    let n = errors.len() as f64;
    let mut afternoon: Vec<i64> = errors
        .chunks(96)
        .flat_map(|day| day[48..].to_vec())
        .collect();
    let full = *share_plan().full_noise();
    let d_all = full.ks_distance(&mut errors.clone());
    let d_afternoon = full.ks_distance(&mut afternoon);
    eprintln!(
        "KS: all {d_all:.4} (n {n}), afternoons with the top-up {d_afternoon:.4} (n {})",
        afternoon.len()
    );
    assert!(d_all < 1.95 / n.sqrt(), "KS {d_all}");
    assert!(
        d_afternoon < 1.95 / (afternoon.len() as f64).sqrt(),
        "KS {d_afternoon}"
    );
    // The negative control: without the key authority's top-up the afternoons would carry
    // 5/8 of a draw, which the same test rejects.
    let thin = share_plan().shares(5).expect("shares");
    let mut thin_errors: Vec<i64> = (0..afternoon.len())
        .map(|_| thin.sample(&mut rng))
        .collect();
    let d_thin = full.ks_distance(&mut thin_errors);
    assert!(d_thin > 1.95 / (afternoon.len() as f64).sqrt(), "{d_thin}");

    // A second release of the first day: every hour answered from its row, nothing drawn.
    let day = NaiveDate::from_ymd_opt(2010, 1, 1).expect("day");
    let window = rfc3339(day.and_hms_opt(0, 0, 0).expect("midnight"));
    let mut again = Vec::new();
    for home in 0..5 {
        let b = app
            .batch(&meter(home), home, 0, 2, day, 0..96, &mut rng)
            .await;
        again.push((b.wire, b.billing_digest));
    }
    let first = app.entries("group-totals").await;
    let repeat = app
        .release(0, &window, again, &utility)
        .await
        .expect("release");
    for (h, hour) in repeat.hours.iter().enumerate() {
        assert_eq!(
            hour.status(),
            v1::GroupHourStatus::AlreadyReleased,
            "hour {h}"
        );
    }
    let stored: Vec<i64> = repeat.hours.iter().map(|h| h.total_wh).collect();
    let released_first: Vec<i64> = errors[..96]
        .chunks(4)
        .enumerate()
        .map(|(h, e)| {
            let present: Vec<u32> = if h < 12 {
                (0..GROUP).collect()
            } else {
                (0..5).collect()
            };
            e.iter().sum::<i64>()
                + (0..4)
                    .map(|q| {
                        present
                            .iter()
                            .map(|home| reading(*home, 0, 4 * h + q).min(DELTA_WH))
                            .sum::<i64>()
                    })
                    .sum::<i64>()
        })
        .collect();
    assert_eq!(stored, released_first, "the stored values, not a new draw");
    let entries = app.entries("group-totals").await;
    assert_eq!(entries.len(), first.len() + 1);
    let last = entries.last().expect("entry");
    assert!(
        last.decision
            .reason()
            .is_some_and(|r| r.contains("no hour released: 24 already released")),
        "{:?}",
        last.decision
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.decision.reason().is_none())
            .count(),
        days as usize
    );
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
}

#[tokio::test]
async fn hours_below_the_floor_are_withheld_and_released_when_more_meters_arrive() {
    let app = spawn_app().await;
    for home in 0..GROUP {
        app.register(&meter(home), 0, home).await;
    }
    let utility = app.utility();
    let mut rng = StdRng::seed_from_u64(7);
    let day = NaiveDate::from_ymd_opt(2010, 1, 5).expect("day");
    let window = rfc3339(day.and_hms_opt(0, 0, 0).expect("midnight"));
    // Three meters: below the floor of ⌈8/2⌉ = 4. Nothing is released or stored.
    let mut first = Vec::new();
    for home in 0..3 {
        let b = app
            .batch(&meter(home), home, 0, 2, day, 0..96, &mut rng)
            .await;
        first.push((b.wire, b.billing_digest));
    }
    let answer = app
        .release(0, &window, first.clone(), &utility)
        .await
        .expect("release");
    assert!(
        answer
            .hours
            .iter()
            .all(|h| h.status() == v1::GroupHourStatus::TooFewPresent && h.total_wh == 0)
    );
    let refused = app.entries("group-totals").await;
    assert!(
        refused[0]
            .decision
            .reason()
            .is_some_and(|r| r.contains("24 with an interval below 4 meters present"))
    );
    // A fourth meter covering the morning only: the morning is released, the afternoon not.
    let mut more = first;
    let b = app.batch(&meter(3), 3, 0, 2, day, 0..48, &mut rng).await;
    more.push((b.wire, b.billing_digest));
    let answer = app
        .release(0, &window, more.clone(), &utility)
        .await
        .expect("release");
    for (h, hour) in answer.hours.iter().enumerate() {
        let want = if h < 12 {
            v1::GroupHourStatus::Released
        } else {
            v1::GroupHourStatus::TooFewPresent
        };
        assert_eq!(hour.status(), want, "hour {h}");
    }
    // The fourth meter's afternoon arrives: only the afternoon is new.
    let b = app.batch(&meter(3), 3, 0, 3, day, 48..96, &mut rng).await;
    more.push((b.wire, b.billing_digest));
    let answer = app
        .release(0, &window, more, &utility)
        .await
        .expect("release");
    for (h, hour) in answer.hours.iter().enumerate() {
        let want = if h < 12 {
            v1::GroupHourStatus::AlreadyReleased
        } else {
            v1::GroupHourStatus::Released
        };
        assert_eq!(hour.status(), want, "hour {h}");
    }
    assert!(app.audit.verify(None).await.expect("verify").is_intact());

    // Rows written or deleted outside the key authority are named by verification.
    let pool = sqlx::AnyPool::connect(&format!(
        "sqlite://{}",
        app._dir.path().join("ka.db").display()
    ))
    .await
    .expect("pool");
    let refused_seq = i64::try_from(refused[0].sequence).expect("seq");
    let forged = format!(
        "INSERT INTO group_total_releases (noise_group, hour_start, total_wh, interval_wh, \
         min_present, epsilon, sensitivity_wh, audit_seq, released_at_us) VALUES \
         (0, '2010-02-01T00:00:00Z', 5, '', 8, 1.0, 1000, {refused_seq}, 0)"
    );
    sqlx::query(sqlx::AssertSqlSafe(forged))
        .execute(&pool)
        .await
        .expect("insert");
    let report = app.audit.verify(None).await.expect("verify");
    let problem = report.problem.expect("a forged row").to_string();
    assert!(problem.contains("group_total_releases"), "{problem}");
}

#[tokio::test]
async fn forged_foreign_and_repeated_inputs_are_left_out_and_audited() {
    let app = spawn_app().await;
    for home in 0..GROUP {
        app.register(&meter(home), 0, home).await;
    }
    // A meter of another group, and one enrolled but never registered.
    app.register("M-0900", 1, 0).await;
    app.device("M-0901").await;
    let utility = app.utility();
    let mut rng = StdRng::seed_from_u64(9);
    let day = NaiveDate::from_ymd_opt(2010, 1, 9).expect("day");
    let window = rfc3339(day.and_hms_opt(0, 0, 0).expect("midnight"));
    let mut inputs = Vec::new();
    for home in 0..5 {
        let b = app
            .batch(&meter(home), home, 0, 2, day, 0..96, &mut rng)
            .await;
        inputs.push((b.wire, b.billing_digest));
    }
    let honest = inputs.clone();
    let mut forged = Vec::new();
    // The utility raises a meter's ε after it signed (fewer noise per share elsewhere).
    let mut b = app.batch(&meter(5), 5, 0, 2, day, 0..96, &mut rng).await;
    if let Some(p) = b.wire.noise_plan.as_mut() {
        p.epsilon = 4.0;
    }
    forged.push(((b.wire, b.billing_digest), "signature"));
    // Meter 6's lane replaced by meter 0's (the utility holds both).
    let mut b = app.batch(&meter(6), 6, 0, 2, day, 0..96, &mut rng).await;
    b.wire.analytics_lane = honest[0].0.analytics_lane.clone();
    forged.push(((b.wire, b.billing_digest), "signature"));
    // Another billing-lane digest than the one signed.
    let b = app.batch(&meter(7), 7, 0, 2, day, 0..96, &mut rng).await;
    forged.push(((b.wire, [9; 32]), "signature"));
    // A meter that signed another plan than the group's.
    let mut b = app.batch(&meter(7), 7, 0, 3, day, 0..96, &mut rng).await;
    if let Some(p) = b.wire.noise_plan.as_mut() {
        p.group_size = 4;
    }
    app.sign(&mut b.wire, b.billing_digest).await;
    forged.push(((b.wire, b.billing_digest), "not the request's"));
    // The same batch twice, and an overlapping second batch of meter 0.
    forged.push((honest[1].clone(), "more than once"));
    let b = app.batch(&meter(0), 0, 0, 5, day, 90..96, &mut rng).await;
    forged.push(((b.wire, b.billing_digest), "overlaps"));
    // A meter of group 1, and a meter without a registered group.
    let b = app.batch("M-0900", 0, 0, 2, day, 0..96, &mut rng).await;
    forged.push(((b.wire, b.billing_digest), "registered in group 1"));
    let b = app.batch("M-0901", 1, 0, 2, day, 0..96, &mut rng).await;
    forged.push(((b.wire, b.billing_digest), "no registered billing group"));
    // Unsigned; a batch without a plan (signed as such); a signed lane that is no ciphertext;
    // the billing lane sent in full.
    let mut b = app.batch(&meter(2), 2, 0, 7, day, 0..96, &mut rng).await;
    b.wire.signature.clear();
    forged.push(((b.wire, b.billing_digest), "not signed"));
    let mut b = app.batch(&meter(3), 3, 0, 7, day, 0..96, &mut rng).await;
    b.wire.noise_plan = None;
    app.sign(&mut b.wire, b.billing_digest).await;
    forged.push(((b.wire, b.billing_digest), "no noise plan"));
    let mut b = app.batch(&meter(5), 5, 0, 8, day, 0..96, &mut rng).await;
    b.wire.analytics_lane = vec![0x5E; 4_000];
    app.sign(&mut b.wire, b.billing_digest).await;
    forged.push(((b.wire, b.billing_digest), "not a ciphertext"));
    let mut b = app.batch(&meter(1), 1, 0, 9, day, 0..96, &mut rng).await;
    b.wire.billing_lane = vec![1, 2, 3];
    forged.push(((b.wire, b.billing_digest), "by its digest"));

    // A lane switched down to the last level (the circuit's restriction needs one).
    let mut b = app.batch(&meter(6), 6, 0, 11, day, 0..96, &mut rng).await;
    let lane = seer_ckks::Ciphertext::from_bytes(&app.ctx, &b.wire.analytics_lane).expect("lane");
    let low = seer_ckks::Evaluator::new(&app.ctx, None, None)
        .mod_switch_to(&lane, seer_ckks::Level(0))
        .expect("mod switch");
    b.wire.analytics_lane = low.to_bytes(&app.ctx).expect("serialize");
    app.sign(&mut b.wire, b.billing_digest).await;
    forged.push(((b.wire, b.billing_digest), "at level 0"));

    let mut all = inputs;
    all.extend(forged.iter().map(|(input, _)| input.clone()));
    let answer = app
        .release(0, &window, all, &utility)
        .await
        .expect("release");
    assert_eq!(answer.accepted, 5, "{:?}", answer.refused);
    assert_eq!(answer.refused.len(), forged.len());
    for (refusal, (_, expected)) in answer.refused.iter().zip(&forged) {
        assert!(
            refusal.reason.contains(expected),
            "{}: {} (expected {expected})",
            refusal.meter_id,
            refusal.reason
        );
    }
    // Released from the five honest meters alone (≥ the floor of 4).
    assert!(
        answer
            .hours
            .iter()
            .all(|h| h.status() == v1::GroupHourStatus::Released && h.min_present == 5)
    );
    let input_refusals = app.entries("group-totals.input").await;
    assert_eq!(input_refusals.len(), forged.len());

    // Only the utility may ask; a household's token is refused before anything is read.
    let household = app.token(Identity::Household { meter_id: meter(0) });
    let refused = app
        .release(0, &window, honest.clone(), &household)
        .await
        .expect_err("household");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // A header that cannot be served is refused as a whole, and logged.
    let before = app.entries("group-totals").await.len();
    let bad = app
        .release(0, "2010-01-09T00:30:00+00:00", honest, &utility)
        .await
        .expect_err("half hour");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("whole hour"), "{}", bad.message());
    assert_eq!(app.entries("group-totals").await.len(), before + 1);
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
}
