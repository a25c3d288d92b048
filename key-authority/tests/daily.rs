//! The `daily` kind over real gRPC, on a key authority built by `Application::build` on port 0
//! with SQLite in a temporary directory and the shipped daily model registered: meters enrol,
//! prepare their day from a synthetic history (`DailyModel::prepare`), encrypt their block at
//! `N4096_L1` under the public key fetched over `seer.v1.Keys`, and record signed receipts;
//! this test then acts as the utility (Galois keys fetched over `seer.v1.Keys`,
//! `seer_daily::circuit::evaluate`, one result ciphertext) and streams the release.
//!
//! Released forecasts and scores equal the plaintext twin (`evaluate_plain` → `release`, an
//! oracle independent of CKKS); an altered result, an input that is not its receipt's, a day
//! asked twice, five meters, a repeated block, an `N8192` ciphertext, a meter writing into
//! another's block and a household token get nothing (or, for the rogue meter, change nothing
//! of the other meter's release). An ignored test (`-- --ignored`) measures the key
//! authority's CPU per home-day of a four-meter release.
//!
//! The group forecast (`Analytics.ReleaseGroupForecast`): a group's total equals the sum of its
//! homes' plaintext twins (and exactly the sum of their released hours), is refused below three
//! homes (audited, releasable later), is released once (a second request gets the stored values
//! and adds no grant), counts only homes whose signed receipt names the group (not one the
//! utility packed into the same request), refuses a household token, leaves alone when
//! `analytics.daily_release_home_forecasts` is off; forged rows are not counted and are named
//! by audit verification; also on PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use key_authority::Application;
use key_authority::Settings;
use key_authority::analytics::analytics_statement;
use key_authority::audit::{AuditLog, Decision, ListQuery};
use key_authority::auth::device::DeviceKey;
use key_authority::auth::{AUDIENCE_KEY_AUTHORITY, Identity, Role, TokenIssuer, TokenRequest};
use key_authority::enrolment::EnrolmentStore;
use key_authority::keys::KeySetSpec;
use seer_ckks::{
    Ciphertext, CkksContext, Encryptor, Evaluator, GaloisKeys, ParameterSet, PublicKey,
};
use seer_daily::history::HomeHistory;
use seer_daily::layout::{BLOCK, SLOTS};
use seer_daily::model::DailyInput;
use seer_daily::release::DailyRelease;
use seer_daily::{DailyModel, circuit};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1;
use seer_proto::v1::analytics_client::AnalyticsClient;
use seer_proto::v1::analytics_receipts_client::AnalyticsReceiptsClient;
use seer_proto::v1::analytics_release_chunk::Part;
use seer_proto::v1::keys_client::KeysClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// The shipped daily model, as the key authority registers it.
fn model_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../daily/models/uci-daily.json")
}

struct App {
    _dir: tempfile::TempDir,
    issuer: TokenIssuer,
    audit: Arc<AuditLog>,
    ctx: CkksContext,
    /// The meters' encryptor: the public key as fetched over `seer.v1.Keys`.
    encryptor: Encryptor,
    /// The utility's evaluator: the Galois keys as fetched over `seer.v1.Keys`.
    evaluator: Evaluator,
    model: DailyModel,
    model_blake3: String,
    receipts: AnalyticsReceiptsClient<Channel>,
    release: AnalyticsClient<Channel>,
    enrolment: EnrolmentStore,
    devices: std::sync::Mutex<std::collections::HashMap<String, Arc<DeviceKey>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.keys.dir = dir.join("keys");
    settings.keys.sets = vec![KeySetSpec {
        parameter_set: seer_core::circuits::billing::PARAMETER_SET.id(),
        galois_steps: vec![1, 2],
    }];
    settings.auth.signing_key_file = dir.join("jwt.pem");
    settings.audit.database_url = format!("sqlite://{}", dir.join("ka.db").display());
    settings.audit.refusals.window_secs = 3600;
    settings.analytics.daily_models = vec![model_path()];
    settings
}

/// One public object of the daily key set, streamed in chunks over `seer.v1.Keys`.
async fn fetch_key(channel: &Channel, kind: v1::KeyKind) -> Vec<u8> {
    let mut keys = KeysClient::new(channel.clone()).with_seer_limits();
    let mut stream = keys
        .get_key(v1::GetKeyRequest {
            parameter_set_id: seer_daily::PARAMETERS.id(),
            kind: kind as i32,
        })
        .await
        .expect("get key")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        assert_eq!(chunk.offset as usize, bytes.len());
        bytes.extend_from_slice(&chunk.data);
    }
    bytes
}

async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with `configure` applied to the settings first.
async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(dir.path());
    configure(&mut settings);
    let app = Application::build(settings).await.expect("build");
    let issuer = app.issuer().clone();
    let audit = Arc::clone(app.audit_log());
    let enrolment = app.enrolment();
    let model_bytes = std::fs::read(model_path()).expect("the shipped daily model");
    let model_blake3 = blake3::hash(&model_bytes).to_hex().to_string();
    assert_eq!(
        app.analytics_engine().registered("daily"),
        vec![model_blake3.clone()]
    );
    let model =
        DailyModel::from_json(std::str::from_utf8(&model_bytes).expect("utf-8")).expect("model");
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
    let ctx = CkksContext::new(seer_daily::PARAMETERS).expect("context");
    let public_key =
        PublicKey::from_bytes(&ctx, &fetch_key(&channel, v1::KeyKind::Public).await).expect("pk");
    let galois = GaloisKeys::from_bytes(&ctx, &fetch_key(&channel, v1::KeyKind::Galois).await)
        .expect("galois keys");
    App {
        _dir: dir,
        issuer,
        audit,
        encryptor: Encryptor::new(&ctx, &public_key).expect("encryptor"),
        evaluator: Evaluator::new(&ctx, None, Some(galois)),
        ctx,
        model,
        model_blake3,
        receipts: AnalyticsReceiptsClient::new(channel.clone()).with_seer_limits(),
        release: AnalyticsClient::new(channel).with_seer_limits(),
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

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2008, 3, d).expect("date")
}

/// A home's synthetic hourly history, 1 Feb 2008 to the end of `last`: a morning and an
/// evening peak scaled by `scale`, a weekly rhythm and a deterministic wobble; `surge` adds a
/// night-time load on the last day (an anomaly to explain).
fn history(scale: f64, last: NaiveDate, surge: bool) -> HomeHistory {
    let mut history = HomeHistory::new();
    let start = NaiveDate::from_ymd_opt(2008, 2, 1).expect("date");
    let mut date = start;
    let mut k = 0_u64;
    while date <= last {
        for h in 0..24_u32 {
            let at: NaiveDateTime = date.and_hms_opt(h, 0, 0).expect("time");
            let peak = match h {
                7..=9 => 0.9,
                18..=22 => 1.4,
                0..=5 => 0.2,
                _ => 0.45,
            };
            let weekly = if chrono::Datelike::weekday(&date).num_days_from_monday() >= 5 {
                1.2
            } else {
                1.0
            };
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let wobble = 0.9 + 0.2 * ((k >> 33) as f64 / (1_u64 << 31) as f64);
            let mut kwh = scale * peak * weekly * wobble;
            if surge && date == last && h <= 5 {
                kwh += 3.0 * scale;
            }
            history.add(at, 60, kwh).expect("reading");
        }
        date = date.succ_opt().expect("next day");
    }
    history
}

/// One meter-day as the meter prepares it.
struct MeterDay {
    meter: String,
    day: NaiveDate,
    block: usize,
    input: DailyInput,
    ciphertext: Vec<u8>,
    /// The evaluation group the meter signs in its receipt.
    group: u32,
}

impl App {
    fn token(&self, identity: Identity) -> String {
        let mut request = TokenRequest::new(identity, Duration::from_secs(600));
        if request.identity.role() == Role::Household {
            request.audience = vec![AUDIENCE_KEY_AUTHORITY.to_owned()];
        }
        self.issuer.issue(&request).expect("issue").token
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

    /// The meter's side for `day`: prepare, encrypt at `block`.
    fn prepare(&self, meter: &str, scale: f64, day: NaiveDate, block: usize) -> MeterDay {
        let input = self
            .model
            .prepare(&history(scale, day, false), day)
            .expect("prepared");
        self.meter_day(meter, day, block, input)
    }

    fn meter_day(&self, meter: &str, day: NaiveDate, block: usize, input: DailyInput) -> MeterDay {
        let ciphertext = circuit::encrypt(&self.encryptor, &input, block)
            .expect("encrypt")
            .to_bytes(&self.ctx)
            .expect("serialize");
        MeterDay {
            meter: meter.to_owned(),
            day,
            block,
            input,
            ciphertext,
            group: 0,
        }
    }

    fn receipt(&self, m: &MeterDay) -> v1::AnalyticsReceiptRequest {
        v1::AnalyticsReceiptRequest {
            kind: "daily".into(),
            meter_id: m.meter.clone(),
            input_id: m.day.to_string(),
            slot_offset: (m.block * BLOCK) as u32,
            slot_count: BLOCK as u32,
            first_period: m.day.to_string(),
            input_blake3: vec![blake3::hash(&m.ciphertext).as_bytes().to_vec()],
            lane: "exact".into(),
            epsilon: 0.0,
            readings_per_day: 0,
            model_blake3: self.model_blake3.clone(),
            group: m.group,
            signature: Vec::new(),
        }
    }

    /// Records `receipt`, signed by its meter's enrolled device key, with its household token.
    async fn record(&self, mut receipt: v1::AnalyticsReceiptRequest) -> Result<(), tonic::Status> {
        let key = self.device(&receipt.meter_id).await;
        let digests = receipt
            .input_blake3
            .iter()
            .map(|d| <[u8; 32]>::try_from(d.as_slice()).expect("32 bytes"))
            .collect();
        receipt.signature = key.sign(&analytics_statement(&receipt, digests)).to_vec();
        let token = self.token(Identity::Household {
            meter_id: receipt.meter_id.clone(),
        });
        self.receipts
            .clone()
            .record(with_token(receipt, &token))
            .await
            .map(|_| ())
    }

    /// The honest utility's result over `meters` (request order).
    fn evaluate(&self, meters: &[&MeterDay]) -> Vec<u8> {
        let cts: Vec<(usize, Ciphertext)> = meters
            .iter()
            .map(|m| {
                (
                    m.block,
                    Ciphertext::from_bytes(&self.ctx, &m.ciphertext).expect("ciphertext"),
                )
            })
            .collect();
        let refs: Vec<(usize, &Ciphertext)> = cts.iter().map(|(b, ct)| (*b, ct)).collect();
        circuit::evaluate(&self.model, &self.evaluator, &refs)
            .expect("evaluate")
            .to_bytes(&self.ctx)
            .expect("serialize")
    }

    /// Streams a release request: the header, each meter's input, the results.
    async fn ask(
        &self,
        meters: &[(&str, String, &[u8])],
        results: &[Vec<u8>],
        token: &str,
    ) -> Result<v1::AnalyticsReleaseResponse, tonic::Status> {
        let mut messages = vec![v1::AnalyticsReleaseChunk {
            part: Some(Part::Header(v1::AnalyticsReleaseHeader {
                kind: "daily".into(),
                model_blake3: self.model_blake3.clone(),
                meters: meters
                    .iter()
                    .map(|(meter, input_id, _)| v1::AnalyticsMeterInput {
                        meter_id: (*meter).to_owned(),
                        input_id: input_id.clone(),
                    })
                    .collect(),
                result_count: results.len() as u32,
            })),
        }];
        let chunk = |index: u32, meter_index: u32, bytes: &[u8]| v1::CiphertextChunk {
            meter_index,
            index,
            total_bytes: bytes.len() as u64,
            offset: 0,
            data: bytes.to_vec(),
        };
        for (m, (_, _, bytes)) in meters.iter().enumerate() {
            messages.push(v1::AnalyticsReleaseChunk {
                part: Some(Part::Input(chunk(0, m as u32, bytes))),
            });
        }
        for (k, bytes) in results.iter().enumerate() {
            messages.push(v1::AnalyticsReleaseChunk {
                part: Some(Part::Result(chunk(k as u32, 0, bytes))),
            });
        }
        self.release
            .clone()
            .release(with_token(tokio_stream::iter(messages), token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Records every meter's receipt, evaluates as the utility and asks for the release.
    async fn release_days(&self, meters: &[&MeterDay]) -> v1::AnalyticsReleaseResponse {
        for m in meters {
            self.record(self.receipt(m))
                .await
                .expect("receipt recorded");
        }
        let result = self.evaluate(meters);
        self.ask(
            &request_of(meters),
            &[result],
            &self.token(Identity::Utility),
        )
        .await
        .expect("answered")
    }

    /// The plaintext twin: what the model releases for `m`'s input without encryption.
    fn oracle(&self, m: &MeterDay) -> DailyRelease {
        self.model
            .release(m.day, &self.model.evaluate_plain(&m.input))
            .expect("the plaintext twin releases")
    }

    async fn granted_entries(&self, kind: &str) -> Vec<(String, Option<String>)> {
        self.audit
            .list(&ListQuery {
                limit: 1000,
                ..ListQuery::default()
            })
            .await
            .expect("list")
            .entries
            .into_iter()
            .filter(|e| e.kind.as_str() == kind && e.decision == Decision::Granted)
            .map(|e| (e.meter_id.unwrap_or_default(), e.period))
            .collect()
    }
}

fn request_of<'a>(meters: &[&'a MeterDay]) -> Vec<(&'a str, String, &'a [u8])> {
    meters
        .iter()
        .map(|m| (m.meter.as_str(), m.day.to_string(), m.ciphertext.as_slice()))
        .collect()
}

/// `released` (one meter's outcome) equals the plaintext twin's release of `m`, to the
/// rounding quantum (CKKS noise may move a value across a rounding boundary).
fn assert_matches_oracle(app: &App, m: &MeterDay, released: &v1::AnalyticsMeterRelease) {
    let oracle = app.oracle(m);
    assert!(released.granted, "{}: {}", m.meter, released.refusal);
    assert_eq!(released.meter_id, m.meter);
    assert_eq!(released.lane, "exact");
    let tolerance = seer_daily::release::QUANTUM + 1e-9;
    match &oracle.forecast {
        Some(forecast) => {
            assert_eq!(released.forecasts.len(), 24);
            let next = m.day.succ_opt().expect("next day");
            for (h, (got, want)) in released.forecasts.iter().zip(forecast).enumerate() {
                assert_eq!(got.hour, format!("{next}T{h:02}:00"));
                assert!(
                    (got.kwh - want).abs() <= tolerance,
                    "{} hour {h}: released {} kWh, plaintext {want}",
                    m.meter,
                    got.kwh
                );
            }
        }
        None => assert!(released.forecasts.is_empty()),
    }
    match &oracle.anomaly {
        Some(anomaly) => {
            assert_eq!(released.days.len(), 1);
            let d = &released.days[0];
            assert_eq!(d.day, m.day.to_string());
            assert!(!d.has_zscore);
            assert!(
                (d.score - anomaly.score).abs() <= tolerance,
                "{}: released score {}, plaintext {}",
                m.meter,
                d.score,
                anomaly.score
            );
            assert_eq!(d.flagged, anomaly.flagged);
            let names: Vec<&str> = d.explanation.iter().map(|f| f.name.as_str()).collect();
            let want: Vec<&str> = anomaly
                .explanation
                .iter()
                .map(|f| f.feature.as_str())
                .collect();
            assert_eq!(names, want);
            for (got, item) in d.explanation.iter().zip(&anomaly.explanation) {
                assert_eq!(got.text, item.text);
                assert_eq!(got.hours, item.hours);
                for h in &got.hours {
                    assert!(d.explanation_hours.contains(h));
                }
            }
        }
        None => assert!(released.days.is_empty()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_homes_are_released_as_their_plaintext_twin_says_once_per_day() {
    let app = spawn_app().await;
    let d = day(20);
    let meters: Vec<MeterDay> = (0..4)
        .map(|b| app.prepare(&format!("meter-{b}"), 0.3 + 0.2 * b as f64, d, b))
        .collect();
    // Request order need not be block order.
    let order: Vec<&MeterDay> = [2, 0, 3, 1].iter().map(|i| &meters[*i]).collect();
    let response = app.release_days(&order).await;
    assert!(response.result_verified);
    assert_eq!(response.flag_threshold, app.model.flag_threshold());
    assert_eq!(response.meters.len(), 4);
    for (m, released) in order.iter().zip(&response.meters) {
        assert_matches_oracle(&app, m, released);
    }
    let granted = app.granted_entries("daily").await;
    assert_eq!(granted.len(), 4);
    assert!(
        granted
            .iter()
            .all(|(_, period)| period.as_deref() == Some(&format!("{d}..{d}")))
    );

    // The same request again (same meters, days, input ids, ciphertexts and model; a fresh
    // honest result), as a utility worker that lost the first answer sends it: an exact
    // retry, answered with the stored release bit for bit and the entry that granted it,
    // logged as `daily.retry`; nothing is granted twice.
    let again = app.evaluate(&order);
    let retried = app
        .ask(&request_of(&order), &[again], &app.token(Identity::Utility))
        .await
        .expect("answered");
    assert_eq!(retried.meters, response.meters);
    assert!(retried.result_verified);
    assert_eq!(app.granted_entries("daily").await.len(), 4);
    let retries = app.granted_entries("daily.retry").await;
    assert_eq!(retries.len(), 4);
    // Retried again, mixed with a meter of a new day: the retried meter is answered from its
    // copy, the new one withheld (nothing evaluated), to be resubmitted alone.
    let fresh = app.prepare("meter-1", 0.5, day(21), 1);
    app.record(app.receipt(&fresh)).await.expect("recorded");
    let mixed: Vec<&MeterDay> = vec![&meters[0], &fresh];
    let result = app.evaluate(&mixed);
    let answer = app
        .ask(
            &request_of(&mixed),
            &[result],
            &app.token(Identity::Utility),
        )
        .await
        .expect("answered");
    assert_eq!(answer.meters[0], response.meters[1]);
    assert!(!answer.meters[1].granted && answer.meters[1].withheld);
    let alone = app.release_days(&[&fresh]).await;
    assert!(alone.meters[0].granted, "{}", alone.meters[0].refusal);
    assert_matches_oracle(&app, &fresh, &alone.meters[0]);
    // Even under a new input id (a second upload of the same day).
    let mut second = app.prepare("meter-0", 0.3, d, 0);
    second.ciphertext = app
        .meter_day("meter-0", d, 0, second.input.clone())
        .ciphertext;
    let mut receipt = app.receipt(&second);
    receipt.input_id = format!("{d}-again");
    app.record(receipt).await.expect("recorded");
    let result = app.evaluate(&[&second]);
    let response = app
        .ask(
            &[("meter-0", format!("{d}-again"), &second.ciphertext)],
            &[result],
            &app.token(Identity::Utility),
        )
        .await
        .expect("answered");
    assert!(!response.meters[0].granted);
    assert!(response.meters[0].refusal.contains("already released"));
    assert_eq!(app.granted_entries("daily").await.len(), 5);
    assert_eq!(app.granted_entries("daily.retry").await.len(), 5);
    assert!(
        app.audit
            .verify(None)
            .await
            .expect("verify")
            .problem
            .is_none()
    );

    // A copy moved onto another entry (by someone with database access) answers no retry,
    // and `Verify` names it.
    let db = app.database().await;
    sqlx::query("UPDATE daily_release_copies SET audit_seq = 1 WHERE meter_id = 'meter-3'")
        .execute(&db)
        .await
        .expect("moved");
    let m3 = [&meters[3]];
    let result = app.evaluate(&m3);
    let answer = app
        .ask(&request_of(&m3), &[result], &app.token(Identity::Utility))
        .await
        .expect("answered");
    assert!(!answer.meters[0].granted);
    assert!(answer.meters[0].refusal.contains("already released"));
    let problem = app.audit.verify(None).await.expect("verify").problem;
    assert!(
        matches!(
            problem.as_ref().map(|p| &p.kind),
            Some(key_authority::audit::ProblemKind::ReleaseNotInChain { table, .. })
                if table == "daily_release_copies"
        ),
        "{problem:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_result_or_an_input_that_is_not_its_receipt_releases_nothing() {
    let app = spawn_app().await;
    let d = day(21);
    let a = app.prepare("meter-a", 0.5, d, 0);
    let b = app.prepare("meter-b", 0.7, d, 1);
    for m in [&a, &b] {
        app.record(app.receipt(m)).await.expect("recorded");
    }
    let utility = app.token(Identity::Utility);
    // One bit of the result flipped.
    let mut altered = app.evaluate(&[&a, &b]);
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let response = app
        .ask(&request_of(&[&a, &b]), &[altered], &utility)
        .await
        .expect("answered");
    assert!(!response.result_verified);
    for released in &response.meters {
        assert!(!released.granted);
        assert!(
            released.refusal.contains("BLAKE3 differs"),
            "{}",
            released.refusal
        );
    }
    // No result, or two: refused.
    let response = app
        .ask(&request_of(&[&a, &b]), &[], &utility)
        .await
        .expect("answered");
    assert!(response.meters.iter().all(|m| !m.granted));
    // Meter a's input re-encrypted (same values, other bytes): not its receipt.
    let other = app.meter_day("meter-a", d, 0, a.input.clone());
    assert_ne!(other.ciphertext, a.ciphertext);
    let result = app.evaluate(&[&other, &b]);
    let response = app
        .ask(&request_of(&[&other, &b]), &[result], &utility)
        .await
        .expect("answered");
    assert!(!response.meters[0].granted);
    assert!(
        response.meters[0]
            .refusal
            .contains("does not match the receipt"),
        "{}",
        response.meters[0].refusal
    );
    assert!(!response.meters[1].granted);
    assert!(response.meters[1].withheld);
    // The honest request is still released: nothing was spent by the refusals.
    let result = app.evaluate(&[&a, &b]);
    let response = app
        .ask(&request_of(&[&a, &b]), &[result], &utility)
        .await
        .expect("answered");
    assert_matches_oracle(&app, &a, &response.meters[0]);
    assert_matches_oracle(&app, &b, &response.meters[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_meters_a_repeated_block_or_an_n8192_input_are_refused() {
    let app = spawn_app().await;
    let d = day(22);
    let utility = app.token(Identity::Utility);
    // Five meters: more than the blocks of one ciphertext.
    let five: Vec<MeterDay> = (0..5)
        .map(|k| app.prepare(&format!("five-{k}"), 0.4, d, k % 4))
        .collect();
    for m in &five {
        app.record(app.receipt(m)).await.expect("recorded");
    }
    let refs: Vec<&MeterDay> = five.iter().collect();
    let status = app
        .ask(&request_of(&refs), &[app.evaluate(&refs[..4])], &utility)
        .await
        .expect_err("five meters");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("1 to 4 meters"), "{status:?}");

    // Two meters at block 1 (the utility's circuit would refuse them too: the request is
    // refused before any evaluation).
    let x = app.prepare("block-x", 0.4, d, 1);
    let y = app.prepare("block-y", 0.6, d, 1);
    for m in [&x, &y] {
        app.record(app.receipt(m)).await.expect("recorded");
    }
    let result = app.evaluate(&[&x]);
    let response = app
        .ask(&request_of(&[&x, &y]), &[result], &utility)
        .await
        .expect("answered");
    assert!(response.meters[0].withheld);
    assert!(
        response.meters[1].refusal.contains("overlaps"),
        "{}",
        response.meters[1].refusal
    );

    // A receipt at a block that is no daily block is refused when recorded.
    let mut odd = app.receipt(&x);
    odd.input_id = "odd".into();
    odd.slot_offset = 100;
    let status = app.record(odd).await.expect_err("odd block");
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut wrong_lane = app.receipt(&x);
    wrong_lane.input_id = "noisy".into();
    wrong_lane.lane = "analytics".into();
    wrong_lane.epsilon = 1.0;
    wrong_lane.readings_per_day = 96;
    let status = app.record(wrong_lane).await.expect_err("analytics lane");
    assert_eq!(status.code(), Code::InvalidArgument);

    // An N8192 ciphertext, recorded by its meter as its daily input. A fresh one is larger
    // than any N4096 ciphertext: the stream is refused as it arrives.
    let big_ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
    let big_key = seer_ckks::KeyGenerator::new(&big_ctx)
        .and_then(|k| k.public_key())
        .expect("a public key");
    let fresh = Encryptor::new(&big_ctx, &big_key)
        .and_then(|e| e.encrypt_values(&[1.0; 8]))
        .expect("n8192 ciphertext");
    let mut wrong_set = app.prepare("meter-big", 0.4, d, 2);
    wrong_set.ciphertext = fresh.to_bytes(&big_ctx).expect("serialize");
    app.record(app.receipt(&wrong_set))
        .await
        .expect("the receipt only states a digest");
    let status = app
        .ask(&request_of(&[&wrong_set]), &[app.evaluate(&[&x])], &utility)
        .await
        .expect_err("too large for the daily lane");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Switched down to level 1 it fits the bound: parsed (nothing decrypted), refused.
    let low = Evaluator::new(&big_ctx, None, None)
        .mod_switch_to(&fresh, seer_ckks::Level(1))
        .and_then(|ct| ct.to_bytes(&big_ctx))
        .expect("level 1");
    let mut wrong_set = app.prepare("meter-big", 0.4, d, 2);
    wrong_set.ciphertext = low;
    let mut receipt = app.receipt(&wrong_set);
    receipt.input_id = format!("{d}-low");
    app.record(receipt).await.expect("recorded");
    let response = app
        .ask(
            &[("meter-big", format!("{d}-low"), &wrong_set.ciphertext)],
            &[app.evaluate(&[&x])],
            &utility,
        )
        .await
        .expect("answered");
    assert!(!response.meters[0].granted);
    assert!(
        response.meters[0]
            .refusal
            .contains("is not a ciphertext of"),
        "{}",
        response.meters[0].refusal
    );
    assert!(app.granted_entries("daily").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_writing_into_another_block_changes_nothing_of_that_meters_release() {
    let app = spawn_app().await;
    let d = day(23);
    let honest = app.prepare("honest", 0.6, d, 1);
    let rogue_day = app.prepare("rogue", 0.4, d, 0);
    // The rogue meter writes its own block at 0 and large values all over block 1.
    let mut values = circuit::place(&rogue_day.input, 0).expect("placed");
    for (k, v) in values[BLOCK..2 * BLOCK].iter_mut().enumerate() {
        *v = 50.0 + (k % 7) as f64;
    }
    assert_eq!(values.len(), SLOTS);
    let rogue = MeterDay {
        ciphertext: app
            .encryptor
            .encrypt_values(&values)
            .and_then(|ct| ct.to_bytes(&app.ctx))
            .expect("rogue ciphertext"),
        ..rogue_day
    };
    let response = app.release_days(&[&rogue, &honest]).await;
    assert!(response.result_verified);
    // Both release what their own blocks say.
    assert_matches_oracle(&app, &rogue, &response.meters[0]);
    assert_matches_oracle(&app, &honest, &response.meters[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_utility_may_ask() {
    let app = spawn_app().await;
    let d = day(24);
    let m = app.prepare("meter-h", 0.5, d, 0);
    app.record(app.receipt(&m)).await.expect("recorded");
    let result = app.evaluate(&[&m]);
    let household = app.token(Identity::Household {
        meter_id: "meter-h".into(),
    });
    let status = app
        .ask(
            &request_of(&[&m]),
            std::slice::from_ref(&result),
            &household,
        )
        .await
        .expect_err("a household token");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = app
        .ask(&request_of(&[&m]), &[result], "not-a-token")
        .await
        .expect_err("no valid token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(app.granted_entries("daily").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_key_authority_holds_the_daily_key_set_and_starts_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.keys.dir = dir.path().join("keys");
    settings.auth.signing_key_file = dir.path().join("jwt.pem");
    settings.audit.database_url = format!("sqlite://{}", dir.path().join("ka.db").display());
    // The default model path is relative to the working directory (`key-authority/` here,
    // where it is absent): skipped with a warning, the start goes on.
    assert_eq!(
        settings.analytics.daily_models,
        vec![std::path::PathBuf::from("daily/models/uci-daily.json")]
    );
    let started = Instant::now();
    let app = Application::build(settings.clone()).await.expect("build");
    let first = started.elapsed();
    let set = app
        .keys()
        .get(&seer_daily::PARAMETERS.id())
        .expect("the daily key set");
    let steps: Vec<i64> = set.galois_steps().iter().map(|s| i64::from(*s)).collect();
    assert_eq!(steps, circuit::all_galois_steps());
    assert!(
        app.keys()
            .get(&ParameterSet::N32768_L19_SEC128.id())
            .is_none()
    );
    assert!(app.analytics_engine().kind_slots().contains_key("daily"));
    drop(app);
    // Loaded, not generated, on the next start.
    let started = Instant::now();
    let app = Application::build(settings).await.expect("rebuild");
    let second = started.elapsed();
    drop(app);
    eprintln!("default key authority start: first {first:?} (keys generated), then {second:?}");
    assert!(first < Duration::from_secs(30), "{first:?}");

    // A configured model file that is missing fails the start.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut missing = self::settings(dir.path());
    missing.analytics.daily_models = vec![dir.path().join("no-such-model.json")];
    let error = Application::build(missing)
        .await
        .expect_err("missing model");
    assert!(
        format!("{error:#}").contains("no-such-model.json"),
        "{error:#}"
    );
}

/// CPU time of this process so far (every thread, including those that ran the key
/// authority's handler and its blocking task), from `/proc/self/task/*/schedstat`.
fn process_cpu() -> Duration {
    let mut total = 0_u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

/// A measurement (ignored by default): the key authority's CPU per home-day for releases of four meters
/// (checks, re-execution, decryption, audit), median of several requests. While a request is
/// in flight this process runs nothing but the key authority (the client awaits the answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md: run with --ignored --nocapture"]
async fn cpu_per_home_day_of_a_four_meter_release() {
    let app = spawn_app().await;
    let utility = app.token(Identity::Utility);
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for d in 1..=9 {
        let meters: Vec<MeterDay> = (0..4)
            .map(|b| app.prepare(&format!("bench-{b}"), 0.3 + 0.1 * b as f64, day(d), b))
            .collect();
        let refs: Vec<&MeterDay> = meters.iter().collect();
        for m in &refs {
            app.record(app.receipt(m)).await.expect("recorded");
        }
        let result = app.evaluate(&refs);
        let request = request_of(&refs);
        let (cpu0, wall0) = (process_cpu(), Instant::now());
        let response = app
            .ask(&request, &[result], &utility)
            .await
            .expect("answered");
        cpu.push(process_cpu() - cpu0);
        wall.push(wall0.elapsed());
        assert!(response.meters.iter().all(|m| m.granted));
    }
    cpu.sort();
    wall.sort();
    let (cpu, wall) = (cpu[cpu.len() / 2], wall[wall.len() / 2]);
    eprintln!(
        "daily release of 4 meters, median of 9: key authority CPU {cpu:?} per request, \
         {:?} per home-day; wall {wall:?}",
        cpu / 4
    );
}

// ---- the group forecast aggregate (`Analytics.ReleaseGroupForecast`) ----------------------

impl App {
    /// Asks for `group`'s forecast total of `day` (the forecast's day) under the shipped model.
    async fn ask_group(
        &self,
        group: u32,
        day: NaiveDate,
        token: &str,
    ) -> Result<v1::GroupForecastResponse, tonic::Status> {
        self.ask_group_raw(group, &day.to_string(), &self.model_blake3, token)
            .await
    }

    async fn ask_group_raw(
        &self,
        group: u32,
        day: &str,
        model_blake3: &str,
        token: &str,
    ) -> Result<v1::GroupForecastResponse, tonic::Status> {
        self.release
            .clone()
            .release_group_forecast(with_token(
                v1::GroupForecastRequest {
                    group,
                    day: day.to_owned(),
                    model_blake3: model_blake3.to_owned(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The audit entries of `kind`, as (decision granted?, period, reason).
    async fn entries_of(&self, kind: &str) -> Vec<(bool, Option<String>, Option<String>)> {
        self.audit
            .list(&ListQuery {
                limit: 1000,
                ..ListQuery::default()
            })
            .await
            .expect("list")
            .entries
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .map(|e| {
                (
                    e.decision == Decision::Granted,
                    e.period,
                    e.decision.reason().map(str::to_owned),
                )
            })
            .collect()
    }

    /// A pool on the key authority's database (as an intruder with database access has).
    async fn database(&self) -> sqlx::AnyPool {
        sqlx::AnyPool::connect(&format!(
            "sqlite://{}",
            self._dir.path().join("ka.db").display()
        ))
        .await
        .expect("pool")
    }
}

/// `m` prepared in evaluation group `group`.
fn in_group(mut m: MeterDay, group: u32) -> MeterDay {
    m.group = group;
    m
}

/// Thousandths of kWh of a released value.
fn milli(kwh: f64) -> i64 {
    (kwh * 1000.0).round() as i64
}

/// The per-home released hours of a response, per meter, in thousandths.
fn released_milli(response: &v1::AnalyticsReleaseResponse) -> Vec<(String, Vec<i64>)> {
    response
        .meters
        .iter()
        .map(|m| {
            (
                m.meter_id.clone(),
                m.forecasts.iter().map(|f| milli(f.kwh)).collect(),
            )
        })
        .collect()
}

/// A granted group total equals the sum of the homes' plaintext twins (within one quantum per
/// home and hour: CKKS may move a home's value across a rounding boundary) and, exactly, the
/// sum of the hours released per home (`per_home`, when they left).
fn assert_total(
    response: &v1::GroupForecastResponse,
    app: &App,
    homes: &[&MeterDay],
    per_home: Option<&[Vec<i64>]>,
    day: NaiveDate,
) {
    assert!(response.granted, "{}", response.refusal);
    assert_eq!(response.homes as usize, homes.len());
    assert_eq!(response.hours.len(), 24);
    let twins: Vec<DailyRelease> = homes.iter().map(|m| app.oracle(m)).collect();
    let twin = key_authority::analytics::group_forecast_twin(&twins).expect("the twin releases");
    for (h, hour) in response.hours.iter().enumerate() {
        assert_eq!(hour.hour, format!("{day}T{h:02}:00"));
        let got = milli(hour.kwh);
        assert!(
            (hour.kwh * 1000.0 - got as f64).abs() < 1e-6,
            "a whole number of thousandths: {}",
            hour.kwh
        );
        assert!(
            (got - twin[h]).abs() <= homes.len() as i64,
            "hour {h}: released {got} milli-kWh, plaintext twins {}",
            twin[h]
        );
        if let Some(per_home) = per_home {
            let sum: i64 = per_home.iter().map(|v| v[h]).sum();
            assert_eq!(got, sum, "hour {h}: the exact sum of the released homes");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_forecast_is_its_homes_twins_summed_and_released_once() {
    let app = spawn_app().await;
    let d = day(25);
    let next = d.succ_opt().expect("next day");
    let utility = app.token(Identity::Utility);
    // Group 5: three homes; a home of group 6 packed into the same request by the utility.
    let g5: Vec<MeterDay> = (0..3)
        .map(|b| {
            in_group(
                app.prepare(&format!("g5-{b}"), 0.3 + 0.2 * b as f64, d, b),
                5,
            )
        })
        .collect();
    let g6 = in_group(app.prepare("g6-0", 0.8, d, 3), 6);
    let request: Vec<&MeterDay> = g5.iter().chain([&g6]).collect();
    let response = app.release_days(&request).await;
    assert!(response.meters.iter().all(|m| m.granted));
    let per_home = released_milli(&response);
    for (_, hours) in &per_home {
        assert_eq!(hours.len(), 24);
    }
    let homes: Vec<&MeterDay> = g5.iter().collect();
    let g5_hours: Vec<Vec<i64>> = per_home[..3].iter().map(|(_, h)| h.clone()).collect();

    let first = app.ask_group(5, next, &utility).await.expect("answered");
    assert!(!first.already_released);
    // The group-6 home is not counted in group 5 although the utility packed it there.
    assert_total(&first, &app, &homes, Some(&g5_hours), next);
    assert!(first.audit_sequence > 0);

    // Asked again: the same values, from the stored release; no second grant.
    let again = app.ask_group(5, next, &utility).await.expect("answered");
    assert!(again.granted && again.already_released);
    assert_eq!(again.hours, first.hours);
    assert_eq!(
        (again.homes, again.audit_sequence),
        (3, first.audit_sequence)
    );
    let entries = app.entries_of("daily-group-forecast").await;
    let granted: Vec<_> = entries.iter().filter(|e| e.0).collect();
    assert_eq!(granted.len(), 1, "{entries:?}");
    assert_eq!(
        granted[0].1.as_deref(),
        Some(format!("group 5 day {next} model {}", app.model_blake3).as_str())
    );

    // Group 6 has one home: refused, audited, nothing stored.
    let alone = app.ask_group(6, next, &utility).await.expect("answered");
    assert!(!alone.granted && !alone.already_released);
    assert_eq!(alone.homes, 1);
    assert!(alone.hours.is_empty());
    assert!(alone.refusal.contains("at least 3"), "{}", alone.refusal);
    // The input day is not the forecast's day: nothing there.
    let wrong_day = app.ask_group(5, d, &utility).await.expect("answered");
    assert!(!wrong_day.granted);
    assert_eq!(wrong_day.homes, 0);

    // Group 7: two homes refused; a third released later makes it releasable.
    let g7: Vec<MeterDay> = (0..3)
        .map(|b| {
            in_group(
                app.prepare(&format!("g7-{b}"), 0.4 + 0.1 * b as f64, d, b),
                7,
            )
        })
        .collect();
    app.release_days(&[&g7[0], &g7[1]]).await;
    let two = app.ask_group(7, next, &utility).await.expect("answered");
    assert!(!two.granted);
    assert_eq!(two.homes, 2);
    let refusals = app.entries_of("daily-group-forecast").await;
    assert!(
        refusals.iter().any(|(granted, period, reason)| !granted
            && period.as_deref().is_some_and(|p| p.starts_with("group 7 "))
            && reason.as_deref().is_some_and(|r| r.contains("2 home(s)"))),
        "{refusals:?}"
    );
    let third = app.release_days(&[&g7[2]]).await;
    assert!(third.meters[0].granted);
    let three = app.ask_group(7, next, &utility).await.expect("answered");
    assert_total(&three, &app, &g7.iter().collect::<Vec<_>>(), None, next);

    // A household token, no token, a malformed day or digest, an unregistered model.
    let household = app.token(Identity::Household {
        meter_id: "g5-0".into(),
    });
    let status = app
        .ask_group(5, next, &household)
        .await
        .expect_err("a household token");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = app
        .ask_group(5, next, "not-a-token")
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = app
        .ask_group_raw(5, "2008-3-26", &app.model_blake3, &utility)
        .await
        .expect_err("a malformed day");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = app
        .ask_group_raw(5, &next.to_string(), "00ff", &utility)
        .await
        .expect_err("a malformed digest");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = app
        .ask_group_raw(5, &next.to_string(), &"0".repeat(64), &utility)
        .await
        .expect_err("an unregistered model");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let entries = app.entries_of("daily-group-forecast").await;
    assert_eq!(entries.iter().filter(|e| e.0).count(), 2, "{entries:?}");
    // Refusals: group 6, the input day, group 7 with two homes, the household token (refused
    // and logged by the gate under this kind before the handler runs), the malformed day and
    // digest and the unregistered model. (The token-less call is counted in the gate's
    // aggregated refusals of unauthenticated callers.)
    assert_eq!(entries.iter().filter(|e| !e.0).count(), 7, "{entries:?}");
    assert!(
        entries.iter().any(|(granted, _, reason)| !granted
            && reason
                .as_deref()
                .is_some_and(|r| r.contains("role household may not call this"))),
        "{entries:?}"
    );
    assert!(app.audit.verify(None).await.expect("verify").is_intact());

    // Home forecasts written into the database outside the key authority are not counted.
    let pool = app.database().await;
    for k in 0..3 {
        let forged = format!(
            "INSERT INTO daily_group_forecasts (meter_id, day, eval_group, model_blake3, \
             hours_milli, audit_seq, recorded_at_us) VALUES ('forged-{k}', '{next}', 9, '{}', \
             '{}', {}, 0)",
            app.model_blake3,
            vec!["500"; 24].join(","),
            first.audit_sequence
        );
        sqlx::query(sqlx::AssertSqlSafe(forged))
            .execute(&pool)
            .await
            .expect("insert");
    }
    let forged = app.ask_group(9, next, &utility).await.expect("answered");
    assert!(!forged.granted);
    assert_eq!(forged.homes, 0, "no forged home counts");

    // A release row written outside the key authority is named by verification, and so are
    // the forged home rows.
    let refused_seq = alone.audit_sequence;
    let row = format!(
        "INSERT INTO daily_group_forecast_releases (eval_group, day, model_blake3, homes, \
         hours_milli, audit_seq, released_at_us) VALUES (6, '{next}', '{}', 3, '{}', \
         {refused_seq}, 0)",
        app.model_blake3,
        vec!["1"; 24].join(",")
    );
    sqlx::query(sqlx::AssertSqlSafe(row))
        .execute(&pool)
        .await
        .expect("insert");
    let problem = app
        .audit
        .verify(None)
        .await
        .expect("verify")
        .problem
        .expect("a forged release row")
        .to_string();
    assert!(
        problem.contains("daily_group_forecast_releases"),
        "{problem}"
    );
    sqlx::query("DELETE FROM daily_group_forecast_releases WHERE eval_group = 6")
        .execute(&pool)
        .await
        .expect("delete");
    let problem = app
        .audit
        .verify(None)
        .await
        .expect("verify")
        .problem
        .expect("forged home rows")
        .to_string();
    assert!(problem.contains("daily_group_forecasts"), "{problem}");
    assert!(problem.contains("forged-"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_home_forecasts_only_the_group_total_leaves() {
    let app = spawn_app_with(|s| s.analytics.daily_release_home_forecasts = false).await;
    let d = day(26);
    let next = d.succ_opt().expect("next day");
    let utility = app.token(Identity::Utility);
    let homes: Vec<MeterDay> = (0..3)
        .map(|b| {
            in_group(
                app.prepare(&format!("quiet-{b}"), 0.35 + 0.15 * b as f64, d, b),
                2,
            )
        })
        .collect();
    let refs: Vec<&MeterDay> = homes.iter().collect();
    let response = app.release_days(&refs).await;
    for (m, released) in refs.iter().zip(&response.meters) {
        assert!(released.granted, "{}", released.refusal);
        assert!(released.forecasts.is_empty(), "no home's forecast leaves");
        // The anomaly part still does, as the twin says.
        let anomaly = app.oracle(m).anomaly.expect("an anomaly part");
        assert_eq!(released.days.len(), 1);
        assert!((released.days[0].score - anomaly.score).abs() <= 0.001 + 1e-9);
    }
    let total = app.ask_group(2, next, &utility).await.expect("answered");
    assert!(!total.already_released);
    assert_total(&total, &app, &refs, None, next);
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
}

/// The group forecast on PostgreSQL (the key authority's other backend): stored, summed,
/// released once, verified. Skipped, with a note, when no PostgreSQL is reachable (see
/// `seer_service::testing::postgres_admin_url`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_forecast_on_postgres() {
    let Some(admin_url) = seer_service::testing::postgres_admin_url("daily").await else {
        return;
    };
    let database =
        seer_service::testing::PostgresDatabase::create(&admin_url, "seer_ka_daily").await;
    let url = database.url().to_owned();
    let app = spawn_app_with(move |s| s.audit.database_url = url).await;
    let d = day(27);
    let next = d.succ_opt().expect("next day");
    let utility = app.token(Identity::Utility);
    let homes: Vec<MeterDay> = (0..4)
        .map(|b| {
            in_group(
                app.prepare(&format!("pg-{b}"), 0.3 + 0.1 * b as f64, d, b),
                b as u32 / 3,
            )
        })
        .collect();
    let refs: Vec<&MeterDay> = homes.iter().collect();
    let response = app.release_days(&refs).await;
    assert!(response.meters.iter().all(|m| m.granted));
    let per_home: Vec<Vec<i64>> = released_milli(&response)[..3]
        .iter()
        .map(|(_, h)| h.clone())
        .collect();
    let first = app.ask_group(0, next, &utility).await.expect("answered");
    assert_total(&first, &app, &refs[..3], Some(&per_home), next);
    let again = app.ask_group(0, next, &utility).await.expect("answered");
    assert!(again.already_released);
    assert_eq!(again.hours, first.hours);
    let alone = app.ask_group(1, next, &utility).await.expect("answered");
    assert!(!alone.granted);
    assert_eq!(alone.homes, 1);
    let entries = app.entries_of("daily-group-forecast").await;
    assert_eq!(entries.iter().filter(|e| e.0).count(), 1, "{entries:?}");
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
    drop(app);
    drop(database);
}
