//! `meter-client run --daily-model`: the daily lane sent by the run itself, against an
//! in-test key authority (`Keys` with the billing and the daily key sets, `Enrolment.RenewToken`,
//! `Receipts`, `AnalyticsReceipts`) and an in-test utility server (`Ingest`,
//! `AnalyticsIngest`), both with fault knobs. The oracle of which days are sent is the model's
//! own preparation of each day's window read independently from the source
//! (`read_window` + `DailyModel::prepare`), and of what is sent the bytes kept in the state
//! directory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{NaiveDate, NaiveDateTime, TimeDelta, Timelike as _};
use common::*;
use meter_client::app::{RunReport, Settings};
use meter_client::daily::{DailyLane, DailyRunReport, read_window};
use meter_client::pins::KeyPin;
use meter_client::run_with_noise;
use meter_client::source::{self, SourceSpec};
use seer_auth::device::{DeviceKey, MeterCertificateBody, Statement as _};
use seer_ckks::{CkksContext, KeyGenerator};
use seer_core::circuits::billing::PARAMETER_SET;
use seer_daily::DailyError;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::analytics_ingest_server::{AnalyticsIngest, AnalyticsIngestServer};
use seer_proto::v1::analytics_input_chunk::Part;
use seer_proto::v1::analytics_receipts_server::{AnalyticsReceipts, AnalyticsReceiptsServer};
use seer_proto::v1::enrolment_server::{Enrolment, EnrolmentServer};
use seer_proto::v1::ingest_server::IngestServer;
use seer_proto::v1::keys_server::{Keys, KeysServer};
use seer_proto::v1::receipts_server::ReceiptsServer;
use seer_proto::v1::{
    AnalyticsInputAck, AnalyticsInputChunk, AnalyticsReceiptAck, AnalyticsReceiptRequest,
    EnrolRequest, EnrolResponse, GetKeyRequest, KeyChunk, KeySetInfo, ListKeySetsRequest,
    ListKeySetsResponse, RenewTokenRequest, RenewTokenResponse,
};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

const METER: &str = "meter-7";

/// The registered daily model.
fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daily/models/uci-daily.json")
}

/// The public key of the daily parameter set (one per test binary).
fn daily_public_key() -> &'static Vec<u8> {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let ctx = CkksContext::new(seer_daily::PARAMETERS).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        keygen.public_key().expect("public key").to_bytes(&ctx)
    })
}

// ---------------------------------------------------------------------------------------------
// Key authority: Keys (two key sets), Enrolment.RenewToken, AnalyticsReceipts
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct TwoKeys;

impl TwoKeys {
    fn sets() -> Vec<(String, Vec<u8>)> {
        vec![
            (PARAMETER_SET.id(), keys().public_key.clone()),
            (seer_daily::PARAMETERS.id(), daily_public_key().clone()),
        ]
    }
}

type ChunkStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<KeyChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Keys for TwoKeys {
    async fn list_key_sets(
        &self,
        _request: Request<ListKeySetsRequest>,
    ) -> Result<Response<ListKeySetsResponse>, Status> {
        Ok(Response::new(ListKeySetsResponse {
            key_sets: Self::sets()
                .into_iter()
                .map(|(id, pk)| KeySetInfo {
                    parameter_set_id: id,
                    galois_steps: vec![],
                    public_key_bytes: pk.len() as u64,
                    relin_keys_bytes: 0,
                    galois_keys_bytes: 0,
                    public_key_blake3: blake3::hash(&pk).to_hex().to_string(),
                })
                .collect(),
        }))
    }

    type GetKeyStream = ChunkStream;

    async fn get_key(
        &self,
        request: Request<GetKeyRequest>,
    ) -> Result<Response<Self::GetKeyStream>, Status> {
        let id = request.into_inner().parameter_set_id;
        let (_, pk) = Self::sets()
            .into_iter()
            .find(|(set, _)| *set == id)
            .ok_or_else(|| Status::not_found("no such key set"))?;
        let total = pk.len() as u64;
        let chunks: Vec<_> = pk
            .chunks(64 * 1024)
            .enumerate()
            .map(|(i, c)| {
                Ok(KeyChunk {
                    total_bytes: total,
                    offset: (i * 64 * 1024) as u64,
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// Renews every token as [`TOKEN`] (what the fake services accept).
#[derive(Clone)]
struct Renewals;

#[tonic::async_trait]
impl Enrolment for Renewals {
    async fn enrol(
        &self,
        _request: Request<EnrolRequest>,
    ) -> Result<Response<EnrolResponse>, Status> {
        Err(Status::unimplemented("the test meter is enrolled already"))
    }

    async fn renew_token(
        &self,
        request: Request<RenewTokenRequest>,
    ) -> Result<Response<RenewTokenResponse>, Status> {
        if request.get_ref().meter_id != METER {
            return Err(Status::permission_denied("unknown meter"));
        }
        Ok(Response::new(RenewTokenResponse {
            token: TOKEN.into(),
            expires_at: chrono::Utc::now().timestamp() + 3600,
        }))
    }
}

/// Analytics receipts by input id, with a knob that takes the service down.
#[derive(Default)]
struct AnalyticsReceiptState {
    recorded: BTreeMap<String, AnalyticsReceiptRequest>,
    calls: usize,
    unavailable: bool,
}

#[derive(Clone, Default)]
struct AnalyticsReceiptService {
    state: Arc<Mutex<AnalyticsReceiptState>>,
}

#[tonic::async_trait]
impl AnalyticsReceipts for AnalyticsReceiptService {
    async fn record(
        &self,
        request: Request<AnalyticsReceiptRequest>,
    ) -> Result<Response<AnalyticsReceiptAck>, Status> {
        let authorized = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        let receipt = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.calls += 1;
        if state.unavailable {
            return Err(Status::unavailable(
                "analytics receipts are down (injected)",
            ));
        }
        if !authorized {
            return Err(Status::unauthenticated("missing or wrong token"));
        }
        if receipt.kind != "daily" || receipt.signature.len() != 64 {
            return Err(Status::invalid_argument("not a signed daily receipt"));
        }
        let duplicate = match state.recorded.get(&receipt.input_id) {
            Some(stored) if *stored == receipt => true,
            Some(_) => return Err(Status::already_exists("a different receipt")),
            None => {
                state.recorded.insert(receipt.input_id.clone(), receipt);
                false
            }
        };
        Ok(Response::new(AnalyticsReceiptAck { duplicate }))
    }
}

// ---------------------------------------------------------------------------------------------
// Utility server: AnalyticsIngest
// ---------------------------------------------------------------------------------------------

/// Daily inputs by input id, every attempt's bytes, and a knob that refuses uploads.
#[derive(Default)]
struct InputState {
    stored: BTreeMap<String, Vec<u8>>,
    /// Every upload that arrived whole (refused ones included): input id and bytes.
    attempts: Vec<(String, Vec<u8>)>,
    refuse: bool,
}

#[derive(Clone, Default)]
struct InputIngest {
    state: Arc<Mutex<InputState>>,
}

#[tonic::async_trait]
impl AnalyticsIngest for InputIngest {
    async fn upload_input(
        &self,
        request: Request<Streaming<AnalyticsInputChunk>>,
    ) -> Result<Response<AnalyticsInputAck>, Status> {
        let authorized = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if !authorized {
            return Err(Status::unauthenticated("missing or wrong token"));
        }
        let mut inbound = request.into_inner();
        let mut header = None;
        let mut bytes = Vec::new();
        while let Some(chunk) = inbound.message().await? {
            match chunk.part {
                Some(Part::Header(h)) => header = Some(h),
                Some(Part::Data(d)) => bytes.extend_from_slice(&d.data),
                None => return Err(Status::invalid_argument("empty chunk")),
            }
        }
        let header = header.ok_or_else(|| Status::invalid_argument("no header"))?;
        let mut state = self.state.lock().unwrap();
        state
            .attempts
            .push((header.input_id.clone(), bytes.clone()));
        if state.refuse {
            return Err(Status::unavailable(
                "the utility is refusing uploads (injected)",
            ));
        }
        let duplicate = match state.stored.get(&header.input_id) {
            Some(stored) if *stored == bytes => true,
            Some(_) => return Err(Status::already_exists("different inputs")),
            None => {
                state.stored.insert(header.input_id.clone(), bytes.clone());
                false
            }
        };
        Ok(Response::new(AnalyticsInputAck {
            meter_id: header.meter_id,
            input_id: header.input_id,
            duplicate,
            bytes: bytes.len() as u64,
        }))
    }
}

/// Both parties, on free ports.
struct Deployment {
    key_authority: String,
    utility: String,
    batch_receipts: ReceiptService,
    batches: UtilityServer,
    daily_receipts: AnalyticsReceiptService,
    inputs: InputIngest,
}

async fn start() -> Deployment {
    let batch_receipts = ReceiptService::default();
    let daily_receipts = AnalyticsReceiptService::default();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let ka = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeysServer::new(TwoKeys).with_seer_limits())
            .add_service(EnrolmentServer::new(Renewals).with_seer_limits())
            .add_service(ReceiptsServer::new(batch_receipts.clone()).with_seer_limits())
            .add_service(AnalyticsReceiptsServer::new(daily_receipts.clone()).with_seer_limits())
            .serve_with_incoming(incoming),
    );
    let batches = UtilityServer::default();
    let inputs = InputIngest::default();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let utility = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(batches.clone()).with_seer_limits())
            .add_service(AnalyticsIngestServer::new(inputs.clone()).with_seer_limits())
            .serve_with_incoming(incoming),
    );
    Deployment {
        key_authority: format!("http://{ka}"),
        utility: format!("http://{utility}"),
        batch_receipts,
        batches,
        daily_receipts,
        inputs,
    }
}

// ---------------------------------------------------------------------------------------------
// The meter
// ---------------------------------------------------------------------------------------------

fn day(text: &str) -> NaiveDate {
    text.parse().expect("date")
}

/// A home with a base load, two daily peaks, a weekly rhythm and a drift.
fn kwh_at(t: NaiveDateTime) -> f64 {
    let d = (t.date() - day("2024-01-01")).num_days() as f64;
    let peak = match t.hour() {
        6..=8 => 0.15,
        18..=21 => 0.3,
        _ => 0.0,
    };
    0.05 + peak + 0.01 * (d % 7.0) + 0.0001 * d + 0.001 * f64::from(t.minute() / 15)
}

/// The source's first and last (exclusive) days: the run replays all of it, so that the first
/// weeks lack the history the model reads.
const FIRST: &str = "2024-01-20";
const UNTIL: &str = "2024-03-01";

fn write_csv(path: &Path) {
    let mut text = String::from("timestamp,kwh\n");
    let mut t = day(FIRST).and_hms_opt(0, 0, 0).unwrap();
    let end = day(UNTIL).and_hms_opt(0, 0, 0).unwrap();
    while t < end {
        text.push_str(&format!(
            "{},{:.6}\n",
            t.format("%Y-%m-%d %H:%M:%S"),
            kwh_at(t)
        ));
        t += TimeDelta::minutes(15);
    }
    std::fs::write(path, text).unwrap();
}

/// An enrolled meter's state directory: a device key and a certificate for it (the fakes do
/// not check the key authority's signature).
fn enrol(state: &Path) {
    std::fs::create_dir_all(state).unwrap();
    let (key, _) =
        DeviceKey::load_or_generate(&state.join(meter_client::identity::DEVICE_KEY_FILE)).unwrap();
    let mut certificate = MeterCertificateBody {
        meter_id: METER.into(),
        device_public_key: key.public_key().to_bytes(),
        issued_at: 1_700_000_000,
    }
    .encode();
    certificate.extend_from_slice(&[0; 64]);
    std::fs::write(
        state.join(meter_client::identity::CERTIFICATE_FILE),
        certificate,
    )
    .unwrap();
}

/// A meter with the daily model replaying the whole CSV in weekly batches.
fn meter(dir: &Path, d: &Deployment) -> Settings {
    let csv = dir.join("home.csv");
    if !csv.exists() {
        write_csv(&csv);
    }
    let state = dir.join("state");
    enrol(&state);
    let mut s = settings(
        &state,
        &d.key_authority,
        Some(&d.utility),
        day(FIRST),
        day(UNTIL),
    );
    s.source = SourceSpec::Csv(csv);
    s.batch_days = 7;
    s.daily_model = Some(model_path());
    s.public_key_pins.push(
        KeyPin::try_new(
            &seer_daily::PARAMETERS.id(),
            &blake3::hash(daily_public_key()).to_hex(),
        )
        .unwrap(),
    );
    s
}

/// The oracle: the days of the source the model prepares from its own window, and those it
/// cannot (too little history), read independently of the run.
fn sendable_days(settings: &Settings) -> (Vec<NaiveDate>, usize) {
    let lane = DailyLane::load(
        &model_path(),
        settings.home_index,
        meter_client::daily::DEFAULT_GROUP_SIZE,
    )
    .unwrap();
    let opened = source::open(&settings.source).unwrap();
    let (mut sendable, mut short) = (Vec::new(), 0);
    for d in day(FIRST).iter_days().take_while(|d| *d < day(UNTIL)) {
        let window = read_window(&opened, d).unwrap();
        match lane.model().prepare(&window.history, d) {
            Ok(_) => sendable.push(d),
            Err(DailyError::NotEnoughHistory { .. }) => short += 1,
            Err(e) => panic!("{d}: {e}"),
        }
    }
    (sendable, short)
}

async fn run(settings: &Settings, seed: u64) -> RunReport {
    let (observer, _) = collector();
    run_with_noise(settings.clone(), seeded_noise(seed), observer)
        .await
        .expect("the run succeeds")
}

fn daily(report: &RunReport) -> &DailyRunReport {
    report.daily.as_ref().expect("a daily report")
}

/// The batches all went: queued, acknowledged by the utility, their receipts recorded.
fn batches_went(report: &RunReport, d: &Deployment, expected: u64) {
    assert_eq!(report.queued, expected, "{report:?}");
    assert_eq!(report.still_queued, 0);
    assert_eq!(report.upload.map(|u| u.acknowledged), Some(expected));
    assert_eq!(
        d.batches.state.lock().unwrap().meters[METER].len() as u64,
        expected
    );
    assert_eq!(d.batch_receipts.recorded().len() as u64, expected);
}

/// Batches of days 1–7, 8–14, 15–21, 22–28 and the rest of each month over 2024-01-20 …
/// 02-29: 20–21, 22–28, 29–31 of January, then 1–7, 8–14, 15–21, 22–28, 29 of February.
const BATCHES: u64 = 3 + 5;

fn input_id(d: NaiveDate) -> String {
    format!("daily-{d}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_month_sends_each_sendable_day_once_and_a_second_run_nothing_new() {
    let d = start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = meter(dir.path(), &d);
    let (sendable, short) = sendable_days(&s);
    assert!(
        short > 0 && sendable.len() > 5,
        "the fixture has both kinds of days: {short} short, {} sendable",
        sendable.len()
    );

    let first = run(&s, 1).await;
    batches_went(&first, &d, BATCHES);
    let lane = daily(&first);
    eprintln!(
        "{} days sendable, {short} short of history; the run's daily lane: {lane:?}",
        sendable.len()
    );
    assert_eq!(lane.sent, sendable, "each sendable day, in order");
    assert_eq!(lane.skipped_too_little_history, short);
    assert_eq!((lane.resent, lane.already_sent), (0, 0));
    assert!(lane.pending.is_empty() && lane.error.is_none(), "{lane:?}");
    assert_eq!(lane.failures, 0);
    {
        let inputs = d.inputs.state.lock().unwrap();
        // Each day uploaded exactly once, with the bytes kept in the state directory.
        let ids: Vec<&String> = inputs.attempts.iter().map(|(id, _)| id).collect();
        let want: Vec<String> = sendable.iter().map(|d| input_id(*d)).collect();
        assert_eq!(ids, want.iter().collect::<Vec<_>>());
        for (d, (_, bytes)) in sendable.iter().zip(&inputs.attempts) {
            let kept = std::fs::read(
                s.state_dir
                    .join(meter_client::daily::INPUTS_DIR)
                    .join(format!("{d}.ct")),
            )
            .unwrap();
            assert_eq!(*bytes, kept, "{d}");
        }
        let receipts = d.daily_receipts.state.lock().unwrap();
        assert_eq!(receipts.calls, sendable.len());
        assert_eq!(
            receipts.recorded.keys().collect::<Vec<_>>(),
            want.iter().collect::<Vec<_>>()
        );
    }

    // A second run over the same source: nothing new on either lane.
    let second = run(&s, 2).await;
    assert_eq!(second.queued, 0);
    let lane = daily(&second);
    assert!(lane.sent.is_empty(), "{lane:?}");
    assert_eq!(lane.already_sent, sendable.len());
    assert_eq!(lane.skipped_too_little_history, short);
    assert!(lane.pending.is_empty() && lane.error.is_none());
    assert_eq!(
        d.inputs.state.lock().unwrap().attempts.len(),
        sendable.len(),
        "no upload"
    );
    assert_eq!(
        d.daily_receipts.state.lock().unwrap().calls,
        sendable.len(),
        "no receipt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_whose_upload_failed_is_resent_with_identical_bytes_by_the_next_run() {
    let d = start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = meter(dir.path(), &d);
    let (sendable, short) = sendable_days(&s);
    let first_day = sendable[0];
    d.inputs.state.lock().unwrap().refuse = true;

    // The utility refuses every daily upload: the batches go on, the first sendable day is
    // kept and retried as later days complete, and nothing is marked sent.
    let first = run(&s, 1).await;
    batches_went(&first, &d, BATCHES);
    let lane = daily(&first);
    assert!(lane.sent.is_empty(), "{lane:?}");
    assert_eq!(lane.pending, sendable, "every sendable day is pending");
    assert!(lane.failures >= 1);
    assert!(
        lane.error
            .as_ref()
            .is_some_and(|e| e.contains(&first_day.to_string())),
        "{lane:?}"
    );
    let refused: Vec<Vec<u8>> = {
        let inputs = d.inputs.state.lock().unwrap();
        assert!(inputs.stored.is_empty());
        assert!(
            inputs
                .attempts
                .iter()
                .all(|(id, _)| *id == input_id(first_day)),
            "only the first pending day is tried"
        );
        inputs.attempts.iter().map(|(_, b)| b.clone()).collect()
    };
    assert_eq!(refused.len() as u64, lane.failures as u64);
    assert!(
        refused.windows(2).all(|w| w[0] == w[1]),
        "every retry sends the same bytes"
    );
    let kept_dir = s.state_dir.join(meter_client::daily::INPUTS_DIR);
    let kept = std::fs::read(kept_dir.join(format!("{first_day}.ct"))).unwrap();
    assert_eq!(refused[0], kept);
    assert!(!kept_dir.join(format!("{first_day}.sent")).exists());

    // The next run: the kept day resent byte for byte (its receipt a duplicate), then the rest.
    d.inputs.state.lock().unwrap().refuse = false;
    let second = run(&s, 2).await;
    assert_eq!(second.queued, 0);
    let lane = daily(&second);
    assert_eq!(lane.sent, sendable);
    assert_eq!(lane.resent, 1, "{lane:?}");
    assert_eq!(lane.skipped_too_little_history, short);
    assert!(lane.pending.is_empty() && lane.error.is_none());
    let inputs = d.inputs.state.lock().unwrap();
    assert_eq!(inputs.stored[&input_id(first_day)], kept);
    assert_eq!(inputs.stored.len(), sendable.len());
    let sent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kept_dir.join(format!("{first_day}.sent"))).unwrap())
            .unwrap();
    assert_eq!(sent["resent"], true);
    assert_eq!(sent["receipt_duplicate"], true, "{sent}");
    assert_eq!(sent["upload_duplicate"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_lanes_failure_does_not_stop_the_batches() {
    let d = start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = meter(dir.path(), &d);
    let (sendable, _) = sendable_days(&s);
    d.daily_receipts.state.lock().unwrap().unavailable = true;

    let report = run(&s, 1).await;
    batches_went(&report, &d, BATCHES);
    let lane = daily(&report);
    assert!(lane.sent.is_empty());
    assert_eq!(lane.pending, sendable);
    assert!(lane.failures >= 1 && lane.error.is_some(), "{lane:?}");
    // The receipt comes first: nothing reached the utility.
    assert!(d.inputs.state.lock().unwrap().attempts.is_empty());

    // Once the key authority records again, the next run sends every pending day.
    d.daily_receipts.state.lock().unwrap().unavailable = false;
    let again = run(&s, 2).await;
    assert_eq!(daily(&again).sent, sendable);
    assert_eq!(
        daily(&again).resent,
        1,
        "the first day was kept before its receipt failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daily_lane_refuses_a_replay_into_another_month_before_any_call() {
    let d = start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = meter(dir.path(), &d);
    s.range = s.range.try_replay_as("2028-01".parse().unwrap()).unwrap();
    let (observer, _) = collector();
    let err = run_with_noise(s, seeded_noise(1), observer)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("--replay-as"), "{err}");
    assert_eq!(d.daily_receipts.state.lock().unwrap().calls, 0);
    assert!(d.batches.state.lock().unwrap().meters.is_empty());
}
