//! Test helpers: a cached key pair, an in-memory key authority (`seer.v1.Keys` and
//! `seer.v1.Receipts`, with fault injection), an in-memory utility server (`seer.v1.Ingest`)
//! with the documented semantics and fault injection, and settings for runs.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::NaiveDate;
use meter_client::Event;
use meter_client::app::Settings;
use meter_client::batch::{PrivacySettings, SealedBatch};
use meter_client::queue::StateStore;
use meter_client::source::{DateRange, SourceSpec};
use meter_client::upload::Backoff;
use prost::Message as _;
use seer_ckks::{Ciphertext, CkksContext, Decryptor, KeyGenerator, SecretKey};
use seer_core::circuits::billing::PARAMETER_SET;
use seer_core::dp::{AnalyticsNoise, Epsilon, LaplaceMechanism, NoiseRng};
use seer_core::tariff::Tariff;
use seer_core::units::Wh;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::ingest_server::{Ingest, IngestServer};
use seer_proto::v1::keys_server::{Keys, KeysServer};
use seer_proto::v1::receipts_server::{Receipts, ReceiptsServer};
use seer_proto::v1::{
    Cursor, GetCursorRequest, GetKeyRequest, KeyChunk, KeySetInfo, ListKeySetsRequest,
    ListKeySetsResponse, ReceiptAck, ReceiptRequest, UploadAck, UploadBatch,
};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// The token the tests' meters send.
pub const TOKEN: &str = "test-household-token";

/// A key pair under the billing parameter set.
pub struct TestKeys {
    pub ctx: CkksContext,
    pub public_key: Vec<u8>,
    secret: SecretKey,
}

impl TestKeys {
    pub fn generate() -> Self {
        let ctx = CkksContext::new(PARAMETER_SET).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        let public_key = keygen.public_key().expect("pk").to_bytes(&ctx);
        Self {
            secret: keygen.secret_key().expect("sk"),
            ctx,
            public_key,
        }
    }

    pub fn decrypt(&self, bytes: &[u8]) -> Vec<f64> {
        let ct = Ciphertext::from_bytes(&self.ctx, bytes).expect("valid ciphertext");
        Decryptor::new(&self.ctx, &self.secret)
            .expect("decryptor")
            .decrypt_values(&ct)
            .expect("decrypts")
    }
}

/// The key pair shared by a test binary (key generation is the slow part).
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(TestKeys::generate)
}

// ---------------------------------------------------------------------------------------------
// Key authority
// ---------------------------------------------------------------------------------------------

/// Serves one public key (swappable) in 64 KiB chunks.
#[derive(Clone)]
pub struct KeyAuthority {
    pub public_key: Arc<Mutex<Vec<u8>>>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<KeyChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Keys for KeyAuthority {
    async fn list_key_sets(
        &self,
        _request: Request<ListKeySetsRequest>,
    ) -> Result<Response<ListKeySetsResponse>, Status> {
        let pk = self.public_key.lock().unwrap().clone();
        Ok(Response::new(ListKeySetsResponse {
            key_sets: vec![KeySetInfo {
                parameter_set_id: PARAMETER_SET.id(),
                galois_steps: vec![],
                public_key_bytes: pk.len() as u64,
                relin_keys_bytes: 0,
                galois_keys_bytes: 0,
                public_key_blake3: blake3::hash(&pk).to_hex().to_string(),
            }],
        }))
    }

    type GetKeyStream = ChunkStream;

    async fn get_key(
        &self,
        request: Request<GetKeyRequest>,
    ) -> Result<Response<Self::GetKeyStream>, Status> {
        if request.get_ref().parameter_set_id != PARAMETER_SET.id() {
            return Err(Status::not_found("no such key set"));
        }
        let pk = self.public_key.lock().unwrap().clone();
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

/// The in-memory receipts of the key authority and their fault knobs.
#[derive(Default)]
pub struct ReceiptState {
    /// Recorded receipts by (meter, sequence).
    pub recorded: HashMap<(String, u64), ReceiptRequest>,
    /// Every `Record` call's request, in arrival order (refused ones included).
    pub calls: Vec<ReceiptRequest>,
    /// `authorization` header of every call.
    pub auth_seen: Vec<Option<String>>,
    /// Fault: refuse every call with UNAVAILABLE, recording nothing.
    pub unavailable: bool,
    /// Fault: record, then answer UNAVAILABLE (the ack is lost).
    pub lose_acks: bool,
}

/// `seer.v1.Receipts` as documented: idempotent on an identical receipt, ALREADY_EXISTS on a
/// different one under a recorded (meter, sequence).
#[derive(Clone, Default)]
pub struct ReceiptService {
    pub state: Arc<Mutex<ReceiptState>>,
}

impl ReceiptService {
    /// The receipts recorded for the test meter, by sequence.
    pub fn recorded(&self) -> Vec<ReceiptRequest> {
        let state = self.state.lock().unwrap();
        let mut list: Vec<_> = state
            .recorded
            .values()
            .filter(|r| r.meter_id == "meter-7")
            .cloned()
            .collect();
        list.sort_by_key(|r| r.sequence);
        list
    }
}

#[tonic::async_trait]
impl Receipts for ReceiptService {
    async fn record(
        &self,
        request: Request<ReceiptRequest>,
    ) -> Result<Response<ReceiptAck>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let receipt = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.auth_seen.push(auth.clone());
        state.calls.push(receipt.clone());
        if state.unavailable {
            return Err(Status::unavailable("receipts are down (injected)"));
        }
        if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("missing or wrong token"));
        }
        if receipt.billing_lane_blake3.len() != 32 || receipt.sequence == 0 {
            return Err(Status::invalid_argument("malformed receipt"));
        }
        let key = (receipt.meter_id.clone(), receipt.sequence);
        let duplicate = match state.recorded.get(&key) {
            Some(stored) if *stored == receipt => true,
            Some(_) => {
                return Err(Status::already_exists(format!(
                    "sequence {} is recorded with a different receipt",
                    receipt.sequence
                )));
            }
            None => {
                state.recorded.insert(key, receipt);
                false
            }
        };
        if state.lose_acks {
            return Err(Status::unavailable("ack lost (injected)"));
        }
        Ok(Response::new(ReceiptAck { duplicate }))
    }
}

/// Starts a key authority serving `public_key` and receipts; returns its URL, the swappable
/// key and the receipts service.
pub async fn start_key_authority_with_receipts(
    public_key: Vec<u8>,
) -> (String, Arc<Mutex<Vec<u8>>>, ReceiptService) {
    let service = KeyAuthority {
        public_key: Arc::new(Mutex::new(public_key)),
    };
    let key = Arc::clone(&service.public_key);
    let receipts = ReceiptService::default();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeysServer::new(service).with_seer_limits())
            .add_service(ReceiptsServer::new(receipts.clone()).with_seer_limits())
            .serve_with_incoming(incoming),
    );
    (format!("http://{addr}"), key, receipts)
}

/// Starts a key authority serving `public_key` (and receipts); returns its URL and the
/// swappable key.
pub async fn start_key_authority(public_key: Vec<u8>) -> (String, Arc<Mutex<Vec<u8>>>) {
    let (url, key, _) = start_key_authority_with_receipts(public_key).await;
    (url, key)
}

// ---------------------------------------------------------------------------------------------
// Utility server
// ---------------------------------------------------------------------------------------------

/// A stored batch: its digest (over the encoded message) and the message.
#[derive(Clone)]
pub struct Stored {
    pub digest: blake3::Hash,
    pub batch: UploadBatch,
}

/// The in-memory ingest state and its fault knobs.
#[derive(Default)]
pub struct IngestState {
    /// Per meter, batch `i` has sequence `i + 1`.
    pub meters: HashMap<String, Vec<Stored>>,
    /// `authorization` header of every call.
    pub auth_seen: Vec<Option<String>>,
    /// Upload calls opened.
    pub uploads: u32,
    /// Fault: in the next upload call, after storing this many batches, end the stream with
    /// UNAVAILABLE before acknowledging the last one stored (then the knob clears).
    pub drop_after: Option<usize>,
    /// Fault: GetCursor reports this much less than stored (a lagging cursor).
    pub cursor_lag: u64,
    /// Fault: GetCursor reports this much more than stored (a lying cursor).
    pub cursor_lead: u64,
}

/// The documented semantics of `seer.v1.Ingest` over [`IngestState`].
#[derive(Clone, Default)]
pub struct UtilityServer {
    pub state: Arc<Mutex<IngestState>>,
}

fn digest(batch: &UploadBatch) -> blake3::Hash {
    blake3::hash(&batch.encode_to_vec())
}

impl UtilityServer {
    fn record_auth<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ok = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
        self.state.lock().unwrap().auth_seen.push(auth);
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong token"))
        }
    }

    /// One batch: the ack, or the status ending the stream. `Err(None)` drops the stream
    /// after storing (fault injection).
    fn ingest(&self, batch: UploadBatch, stored_in_call: &mut usize) -> Result<UploadAck, Status> {
        let mut state = self.state.lock().unwrap();
        let drop_after = state.drop_after;
        let list = state.meters.entry(batch.meter_id.clone()).or_default();
        let last = list.len() as u64;
        let d = digest(&batch);
        if batch.sequence == 0 {
            return Err(Status::invalid_argument("sequence 0"));
        }
        if batch.sequence <= last {
            let stored = &list[(batch.sequence - 1) as usize];
            if stored.digest == d {
                return Ok(UploadAck {
                    meter_id: batch.meter_id,
                    sequence: batch.sequence,
                    duplicate: true,
                    last,
                });
            }
            return Err(Status::already_exists(format!(
                "sequence {} is stored with different content",
                batch.sequence
            )));
        }
        if batch.sequence > last + 1 {
            return Err(Status::failed_precondition(format!(
                "gap: expected sequence {}",
                last + 1
            )));
        }
        let meter_id = batch.meter_id.clone();
        let sequence = batch.sequence;
        list.push(Stored { digest: d, batch });
        *stored_in_call += 1;
        if drop_after == Some(*stored_in_call) {
            state.drop_after = None;
            return Err(Status::unavailable("connection dropped (injected)"));
        }
        Ok(UploadAck {
            meter_id,
            sequence,
            duplicate: false,
            last: sequence,
        })
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<UploadAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for UtilityServer {
    type UploadStream = AckStream;

    async fn upload(
        &self,
        request: Request<Streaming<UploadBatch>>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        self.record_auth(&request)?;
        self.state.lock().unwrap().uploads += 1;
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut stored_in_call = 0;
            while let Ok(Some(batch)) = inbound.message().await {
                match this.ingest(batch, &mut stored_in_call) {
                    Ok(ack) => {
                        if tx.send(Ok(ack)).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_cursor(
        &self,
        request: Request<GetCursorRequest>,
    ) -> Result<Response<Cursor>, Status> {
        self.record_auth(&request)?;
        let meter_id = request.into_inner().meter_id;
        let state = self.state.lock().unwrap();
        let last = state.meters.get(&meter_id).map_or(0, |l| l.len() as u64);
        Ok(Response::new(Cursor {
            meter_id,
            last: (last + state.cursor_lead).saturating_sub(state.cursor_lag),
        }))
    }
}

/// Starts the utility server on `addr` (port 0 for any).
pub async fn start_utility_on(addr: SocketAddr) -> (String, UtilityServer) {
    let service = UtilityServer::default();
    let incoming = TcpIncoming::bind(addr).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(service.clone()).with_seer_limits())
            .serve_with_incoming(incoming),
    );
    (format!("http://{addr}"), service)
}

/// Starts the utility server on a free port.
pub async fn start_utility() -> (String, UtilityServer) {
    start_utility_on("127.0.0.1:0".parse().unwrap()).await
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

pub const EPSILON: f64 = 0.05;

/// The clamp Δ of the tests' meters (the meter's default).
pub const SENSITIVITY_WH: i64 = meter_client::batch::DEFAULT_SENSITIVITY_WH;

/// The tests' privacy settings: ε = 0.05, Δ = 3450 Wh, a month of readings' budget, and the
/// default noise group (a full billing group, a tenth of it tolerated).
pub fn privacy() -> PrivacySettings {
    PrivacySettings {
        epsilon: Epsilon::try_new(EPSILON).unwrap(),
        sensitivity: Wh::try_new(SENSITIVITY_WH).unwrap(),
        monthly_budget: Epsilon::try_new(EPSILON * 2976.0).unwrap(),
        noise_group_size: None,
        noise_tolerated: None,
    }
}

/// Noise from a fixed seed.
pub fn seeded_noise(seed: u64) -> AnalyticsNoise {
    use rand::SeedableRng as _;
    let p = privacy();
    AnalyticsNoise::with_rng(
        LaplaceMechanism::try_new(p.sensitivity, p.epsilon).unwrap(),
        NoiseRng::seed_from_u64(seed),
    )
}

/// Settings for a synthetic home over `[from, until)`.
pub fn settings(
    state: &Path,
    key_authority: &str,
    utility: Option<&str>,
    from: NaiveDate,
    until: NaiveDate,
) -> Settings {
    Settings {
        meter_id: "meter-7".into(),
        source: SourceSpec::Synthetic { seed: 11, home: 5 },
        range: DateRange {
            from: Some(from),
            until: Some(until),
            ..DateRange::default()
        },
        home_index: 5,
        utility_url: utility.map(str::to_owned),
        key_authority_url: key_authority.to_owned(),
        public_key_pins: vec![pin_of(&keys().public_key)],
        token: Some(meter_client::grpc::BearerToken::try_new(TOKEN).unwrap()),
        state_dir: state.to_path_buf(),
        privacy: privacy(),
        batch_days: 1,
        tariff: Tariff::bescom(),
        replay_speed: None,
        max_queued: 64,
        upload_window: 4,
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        max_attempts: 5,
        daily_model: None,
    }
}

/// The configured fingerprint of the billing public key object `public_key`.
pub fn pin_of(public_key: &[u8]) -> meter_client::pins::KeyPin {
    meter_client::pins::KeyPin::try_new(
        keys().ctx.parameter_set_id(),
        &blake3::hash(public_key).to_hex(),
    )
    .expect("valid pin")
}

/// An observer collecting events.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

pub fn collector() -> (Observer, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (
        Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone())),
        events,
    )
}

/// The batches in the outbox of `state`, in sequence order.
pub async fn queued_batches(state: &Path) -> Vec<SealedBatch> {
    let store = StateStore::open(state).await.unwrap();
    let mut out = Vec::new();
    for seq in store.queued_sequences().await.unwrap() {
        out.push(store.batch(seq).await.unwrap().unwrap());
    }
    store.close().await;
    out
}
