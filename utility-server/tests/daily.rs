//! The daily lane at the utility: `daily` uploads over `seer.v1.AnalyticsIngest` to a server
//! built by `Application::build` on port 0 (a test [`Authenticator`] reads the caller from an
//! `x-test-principal` header), and the `daily` job against an in-process stand-in for the key
//! authority's `Keys` and `Analytics` services that re-executes the circuit and compares the
//! utility's result byte for byte, as the real one does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use seer_ckks::{
    Ciphertext, CkksContext, Encryptor, Evaluator, GaloisKeys, KeyGenerator, ParameterSet,
};
use seer_daily::DailyModel;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::analytics_ingest_client::AnalyticsIngestClient;
use seer_proto::v1::analytics_input_chunk::Part;
use seer_proto::v1::analytics_release_chunk::Part as ReleasePart;
use seer_proto::v1::analytics_server::{Analytics, AnalyticsServer};
use seer_proto::v1::keys_server::{Keys, KeysServer};
use seer_proto::v1::{
    AnalyticsInputAck, AnalyticsInputChunk, AnalyticsInputData, AnalyticsInputHeader,
    AnalyticsMeterRelease, AnalyticsReleaseChunk, AnalyticsReleaseResponse, DayRelease,
    ExplanationFeature, GetKeyRequest, GroupForecastRequest, GroupForecastResponse, HourForecast,
    KeyChunk, KeyKind, KeySetInfo, ListKeySetsRequest, ListKeySetsResponse,
};
use tokio::sync::oneshot;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use utility_server::analytics_ingest::daily_input_id;
use utility_server::auth::{Authenticator, Principal};
use utility_server::batch::MeterId;
use utility_server::daily::{self, DailyJob};
use utility_server::store::{AnalyticsInput, InputHeader, InputStatus};
use utility_server::{Application, Settings, Store};

// ---- keys and ciphertexts ----------------------------------------------------------------

/// The daily lane's key set, made once per test binary (the stand-in key authority's).
struct DailyKeys {
    ctx: CkksContext,
    encryptor: Encryptor,
    galois: Vec<u8>,
    public_key_blake3: String,
}

fn daily_keys() -> &'static DailyKeys {
    static KEYS: OnceLock<DailyKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ctx = CkksContext::new(seer_daily::PARAMETERS).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("key generator");
        let public = keygen.public_key().expect("public key");
        let encryptor = Encryptor::new(&ctx, &public).expect("encryptor");
        let galois = keygen
            .galois_keys(&seer_daily::circuit::all_galois_steps())
            .expect("Galois keys")
            .to_bytes(&ctx);
        DailyKeys {
            public_key_blake3: blake3::hash(&public.to_bytes(&ctx)).to_hex().to_string(),
            ctx,
            encryptor,
            galois,
        }
    })
}

/// A meter's daily ciphertext: `seed`-dependent values in block `block`, zeros elsewhere.
fn daily_ciphertext(block: usize, seed: u32) -> Vec<u8> {
    let keys = daily_keys();
    let mut values = vec![0.0; seer_daily::layout::SLOTS];
    let offset = block * seer_daily::layout::BLOCK;
    for (i, v) in values[offset..offset + seer_daily::layout::BLOCK]
        .iter_mut()
        .enumerate()
    {
        *v = f64::from((i as u32 + seed) % 7) * 0.1;
    }
    keys.encryptor
        .encrypt_values(&values)
        .expect("encrypt")
        .to_bytes(&keys.ctx)
        .expect("serialize")
}

/// A ciphertext of the billing set (n = 8192): another parameter set.
fn n8192_ciphertext() -> Vec<u8> {
    let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).expect("context");
    let keygen = KeyGenerator::new(&ctx).expect("key generator");
    let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("encryptor");
    encryptor
        .encrypt_values(&[1.0, 2.0])
        .expect("encrypt")
        .to_bytes(&ctx)
        .expect("serialize")
}

/// A daily ciphertext with its one level spent (rescaled once).
fn spent_ciphertext() -> Vec<u8> {
    let keys = daily_keys();
    let ev = Evaluator::new(&keys.ctx, None, None);
    let ct = Ciphertext::from_bytes(&keys.ctx, &daily_ciphertext(0, 1)).expect("parse");
    let product = ev
        .multiply_plain_without_rescale(&ct, &[1.0; 8])
        .expect("multiply");
    ev.rescale(&product)
        .expect("rescale")
        .to_bytes(&keys.ctx)
        .expect("serialize")
}

const MODEL_DIGEST: &str = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf";

// ---- the utility server ------------------------------------------------------------------

/// Reads `x-test-principal: household:METER | utility`.
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
            _ if value == "utility" => Principal::Utility,
            _ => return Err(Status::unauthenticated("unknown test principal")),
        }))
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
        let mut settings = Settings::default();
        settings.server.port = 0;
        settings.database.url = format!("sqlite://{}/seer.db", dir.path().display());
        let app = Application::build(settings)
            .await
            .expect("build the application")
            .with_authenticator(Arc::new(HeaderAuthenticator));
        let address = format!("http://{}", app.local_addr());
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

    async fn client(&self) -> AnalyticsIngestClient<Channel> {
        AnalyticsIngestClient::connect(self.address.clone())
            .await
            .expect("connect")
            .with_seer_limits()
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

fn daily_header(meter: &str, day: &str, block: u32) -> AnalyticsInputHeader {
    AnalyticsInputHeader {
        kind: "daily".into(),
        meter_id: meter.into(),
        input_id: format!("daily-{day}"),
        model_blake3: MODEL_DIGEST.into(),
        slot_offset: block * 512,
        slot_count: 512,
        first_period: day.into(),
        group: 0,
        inputs: 1,
        lane: "exact".into(),
        ..AnalyticsInputHeader::default()
    }
}

/// Uploads `ciphertext` under `header` as `principal` (none: unauthenticated), in 64 kB
/// chunks; `announced` overrides the total size the chunks announce.
async fn upload(
    client: &mut AnalyticsIngestClient<Channel>,
    principal: Option<&str>,
    header: AnalyticsInputHeader,
    ciphertext: &[u8],
    announced: Option<u64>,
) -> Result<AnalyticsInputAck, Status> {
    let total = announced.unwrap_or(ciphertext.len() as u64);
    let mut messages = vec![AnalyticsInputChunk {
        part: Some(Part::Header(header)),
    }];
    for (i, chunk) in ciphertext.chunks(64 << 10).enumerate() {
        messages.push(AnalyticsInputChunk {
            part: Some(Part::Data(AnalyticsInputData {
                index: 0,
                total_bytes: total,
                offset: (i * (64 << 10)) as u64,
                data: chunk.to_vec(),
            })),
        });
    }
    let mut request = Request::new(tokio_stream::iter(messages));
    if let Some(principal) = principal {
        request.metadata_mut().insert(
            "x-test-principal",
            principal.parse().expect("ascii header value"),
        );
    }
    client.upload_input(request).await.map(Response::into_inner)
}

fn assert_refused(result: Result<AnalyticsInputAck, Status>, code: Code, mentions: &[&str]) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    for word in mentions {
        assert!(
            status.message().contains(word),
            "{:?} should mention {word:?}",
            status.message()
        );
    }
}

// ---- ingest ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_uploads_are_stored_once_and_checked() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let me = Some("household:meter-7");
    let ct = daily_ciphertext(3, 1);
    assert!(
        (50_000..=140_000).contains(&ct.len()),
        "a fresh N4096_L1 ciphertext takes at most about 131 kB, not {}",
        ct.len()
    );
    let header = daily_header("meter-7", "2024-03-12", 3);

    let ack = upload(&mut client, me, header.clone(), &ct, None)
        .await
        .expect("stored");
    assert!(!ack.duplicate);
    assert_eq!(ack.bytes, ct.len() as u64);
    assert_eq!(ack.input_id, "daily-2024-03-12");
    let again = upload(&mut client, me, header.clone(), &ct, None)
        .await
        .expect("a resend");
    assert!(again.duplicate, "an identical resend is a duplicate");
    assert_refused(
        upload(
            &mut client,
            me,
            header.clone(),
            &daily_ciphertext(3, 2),
            None,
        )
        .await,
        Code::AlreadyExists,
        &["already stored different daily inputs"],
    );
    let stored = app
        .store
        .analytics_inputs("daily", MODEL_DIGEST, None)
        .await
        .expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].header.slot_offset, 1536);
    assert_eq!(stored[0].status, InputStatus::Pending);
    assert_eq!(
        app.store
            .analytics_input_ciphertexts(&stored[0].header)
            .await
            .expect("ciphertexts"),
        vec![ct.clone()]
    );

    // Another parameter set, a spent level, a wrong block or day, an oversized announcement.
    let next = |block| daily_header("meter-7", "2024-03-13", block);
    assert_refused(
        upload(&mut client, me, next(0), &n8192_ciphertext(), None).await,
        Code::InvalidArgument,
        &["1 to "],
    );
    let small_n8192 = n8192_ciphertext();
    assert_refused(
        upload(
            &mut client,
            me,
            next(0),
            &small_n8192[..ct.len().min(small_n8192.len())],
            None,
        )
        .await,
        Code::InvalidArgument,
        &["not a ciphertext of ckks1-n4096"],
    );
    assert_refused(
        upload(&mut client, me, next(0), &spent_ciphertext(), None).await,
        Code::InvalidArgument,
        &["levels left", "needs 1"],
    );
    let mut h = next(0);
    h.slot_count = 256;
    assert_refused(
        upload(&mut client, me, h, &ct, None).await,
        Code::InvalidArgument,
        &["fills one block"],
    );
    let mut h = next(0);
    h.slot_offset = 100;
    assert_refused(
        upload(&mut client, me, h, &ct, None).await,
        Code::InvalidArgument,
        &["fills one block"],
    );
    assert_refused(
        upload(&mut client, me, next(4), &ct, None).await,
        Code::InvalidArgument,
        &["exceeds the 2048 slots"],
    );
    let mut h = next(0);
    h.input_id = "daily-2024-03-12".into();
    assert_refused(
        upload(&mut client, me, h, &ct, None).await,
        Code::InvalidArgument,
        &["daily-2024-03-13"],
    );
    assert_refused(
        upload(&mut client, me, next(0), &ct[..1000], Some(1 << 20)).await,
        Code::InvalidArgument,
        &["of 1048576 bytes", "accepted"],
    );

    // Callers: nobody, another meter, the utility.
    assert_refused(
        upload(&mut client, None, next(0), &ct, None).await,
        Code::Unauthenticated,
        &[],
    );
    assert_refused(
        upload(&mut client, Some("household:meter-8"), next(0), &ct, None).await,
        Code::PermissionDenied,
        &["may not upload"],
    );
    assert_refused(
        upload(&mut client, Some("utility"), next(0), &ct, None).await,
        Code::PermissionDenied,
        &["may not"],
    );
    let all = app
        .store
        .analytics_inputs("daily", MODEL_DIGEST, None)
        .await
        .expect("list");
    assert_eq!(all.len(), 1, "nothing refused was stored");
    app.stop().await;
}

// ---- the job against a stand-in key authority --------------------------------------------

/// The stand-in key authority: serves the daily key set and releases like the real one,
/// re-executing the circuit with its own evaluator and refusing `refuse`'s meters.
#[derive(Clone)]
struct FakeAuthority {
    model: Arc<DailyModel>,
    evaluator: Arc<Evaluator>,
    refuse: Arc<BTreeSet<String>>,
    key_fetches: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Per (group, forecast day), the released homes' hours in thousandths (the group from
    /// the meter id, `m<block>-g<group>`, as the real one reads it from the receipt).
    homes: Arc<Mutex<HomesByGroupDay>>,
    /// Released group totals: (homes, hours in thousandths, audit sequence).
    totals: Arc<Mutex<BTreeMap<GroupDay, ReleasedTotal>>>,
    group_requests: Arc<AtomicUsize>,
}

impl FakeAuthority {
    fn new(model: DailyModel, evaluator: Evaluator, refuse: &[&str]) -> Self {
        Self {
            model: Arc::new(model),
            evaluator: Arc::new(evaluator),
            refuse: Arc::new(refuse.iter().map(|m| (*m).to_owned()).collect()),
            key_fetches: Arc::default(),
            requests: Arc::default(),
            homes: Arc::default(),
            totals: Arc::default(),
            group_requests: Arc::default(),
        }
    }
}

/// (group, forecast day).
type GroupDay = (u32, String);
/// A released total: (homes, hours in thousandths, audit sequence).
type ReleasedTotal = (u32, Vec<i64>, u64);
/// Per group-day, each released home's hours in thousandths.
type HomesByGroupDay = BTreeMap<GroupDay, BTreeMap<String, Vec<i64>>>;

/// The group a stand-in meter id names (`m<block>-g<group>`).
fn group_of(meter: &str) -> u32 {
    meter
        .rsplit_once("-g")
        .and_then(|(_, g)| g.parse().ok())
        .expect("a meter id m<block>-g<group>")
}

type KeyStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<KeyChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Keys for FakeAuthority {
    type GetKeyStream = KeyStream;

    async fn list_key_sets(
        &self,
        _: Request<ListKeySetsRequest>,
    ) -> Result<Response<ListKeySetsResponse>, Status> {
        let keys = daily_keys();
        Ok(Response::new(ListKeySetsResponse {
            key_sets: vec![KeySetInfo {
                parameter_set_id: keys.ctx.parameter_set_id().to_owned(),
                galois_keys_bytes: keys.galois.len() as u64,
                public_key_blake3: keys.public_key_blake3.clone(),
                ..KeySetInfo::default()
            }],
        }))
    }

    async fn get_key(
        &self,
        request: Request<GetKeyRequest>,
    ) -> Result<Response<Self::GetKeyStream>, Status> {
        if request.get_ref().kind != KeyKind::Galois as i32 {
            return Err(Status::not_found("only Galois keys here"));
        }
        self.key_fetches.fetch_add(1, Ordering::SeqCst);
        let bytes = &daily_keys().galois;
        let chunks: Vec<Result<KeyChunk, Status>> = bytes
            .chunks(1 << 20)
            .enumerate()
            .map(|(i, c)| {
                Ok(KeyChunk {
                    total_bytes: bytes.len() as u64,
                    offset: (i << 20) as u64,
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

#[tonic::async_trait]
impl Analytics for FakeAuthority {
    async fn release(
        &self,
        request: Request<Streaming<AnalyticsReleaseChunk>>,
    ) -> Result<Response<AnalyticsReleaseResponse>, Status> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut stream = request.into_inner();
        let mut header = None;
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        let mut result = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk?.part {
                Some(ReleasePart::Header(h)) => header = Some(h),
                Some(ReleasePart::Input(c)) => {
                    let m = c.meter_index as usize;
                    if inputs.len() <= m {
                        inputs.resize(m + 1, Vec::new());
                    }
                    inputs[m].extend_from_slice(&c.data);
                }
                Some(ReleasePart::Result(c)) => result.extend_from_slice(&c.data),
                None => {}
            }
        }
        let header = header.ok_or_else(|| Status::invalid_argument("no header"))?;
        assert_eq!(header.kind, "daily");
        assert_eq!(header.result_count, 1);
        assert!(header.meters.len() <= 4);
        let ctx = self.evaluator.context();
        let parsed: Vec<Ciphertext> = inputs
            .iter()
            .map(|b| Ciphertext::from_bytes(ctx, b).expect("input"))
            .collect();
        // Blocks from the inputs themselves: the slot whose block is non-zero is not known
        // without decrypting, so the stand-in reads them from the meter ids (`m<block>-…`).
        let blocks: Vec<usize> = header
            .meters
            .iter()
            .map(|m| usize::from(m.meter_id.as_bytes()[1] - b'0'))
            .collect();
        let refs: Vec<(usize, &Ciphertext)> = blocks.iter().copied().zip(&parsed).collect();
        let ours = seer_daily::circuit::evaluate(&self.model, &self.evaluator, &refs)
            .expect("re-execute")
            .to_bytes(ctx)
            .expect("serialize");
        let verified = blake3::hash(&ours) == blake3::hash(&result);
        let refused: Vec<bool> = header
            .meters
            .iter()
            .map(|m| self.refuse.contains(&m.meter_id))
            .collect();
        let any_refused = refused.iter().any(|r| *r);
        let meters = header
            .meters
            .iter()
            .zip(&refused)
            .enumerate()
            .map(|(k, (m, refused))| {
                let day = m.input_id.trim_start_matches("daily-").to_owned();
                let next = day
                    .parse::<chrono::NaiveDate>()
                    .expect("an input day")
                    .succ_opt()
                    .expect("a next day")
                    .to_string();
                let granted = verified && !any_refused;
                let hours: Vec<f64> = (0..24).map(|h| 0.1 + f64::from(h) * 0.01).collect();
                if granted {
                    self.homes
                        .lock()
                        .expect("homes")
                        .entry((group_of(&m.meter_id), next.clone()))
                        .or_default()
                        .insert(
                            m.meter_id.clone(),
                            hours.iter().map(|v| (v * 1000.0).round() as i64).collect(),
                        );
                }
                AnalyticsMeterRelease {
                    meter_id: m.meter_id.clone(),
                    granted,
                    refusal: if *refused {
                        "no receipt for this input".into()
                    } else if !verified {
                        "the result differs from the re-execution".into()
                    } else {
                        String::new()
                    },
                    withheld: any_refused && !refused,
                    audit_sequence: 100 + k as u64,
                    lane: "exact".into(),
                    forecasts: if granted {
                        hours
                            .iter()
                            .enumerate()
                            .map(|(h, kwh)| HourForecast {
                                hour: format!("{next}T{h:02}:00"),
                                kwh: *kwh,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    days: if granted {
                        vec![DayRelease {
                            day: day.clone(),
                            score: 0.25,
                            flagged: k == 0,
                            explanation: if k == 0 {
                                vec![ExplanationFeature {
                                    name: "night_load".into(),
                                    excess: 0.2,
                                    text: "01:00–05:00 used 2.5–3.1× its usual energy".into(),
                                    usual_low: 2.5,
                                    usual_high: f64::INFINITY,
                                    hours: vec![1, 2, 3, 4],
                                }]
                            } else {
                                Vec::new()
                            },
                            ..DayRelease::default()
                        }]
                    } else {
                        Vec::new()
                    },
                    ..AnalyticsMeterRelease::default()
                }
            })
            .collect();
        Ok(Response::new(AnalyticsReleaseResponse {
            meters,
            result_verified: verified,
            flag_threshold: 0.2,
        }))
    }

    /// Like the real one: the released homes of (group, day), at least three, summed
    /// exactly, released once.
    async fn release_group_forecast(
        &self,
        request: Request<GroupForecastRequest>,
    ) -> Result<Response<GroupForecastResponse>, Status> {
        self.group_requests.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let key = (request.group, request.day.clone());
        let labels = |values: &[i64]| -> Vec<HourForecast> {
            values
                .iter()
                .enumerate()
                .map(|(h, v)| HourForecast {
                    hour: format!("{}T{h:02}:00", request.day),
                    kwh: *v as f64 / 1000.0,
                })
                .collect()
        };
        if let Some((homes, values, seq)) = self.totals.lock().expect("totals").get(&key) {
            return Ok(Response::new(GroupForecastResponse {
                granted: true,
                already_released: true,
                homes: *homes,
                hours: labels(values),
                audit_sequence: *seq,
                ..GroupForecastResponse::default()
            }));
        }
        let homes = self
            .homes
            .lock()
            .expect("homes")
            .get(&key)
            .cloned()
            .unwrap_or_default();
        if homes.len() < 3 {
            return Ok(Response::new(GroupForecastResponse {
                refusal: format!("{} home(s); at least 3", homes.len()),
                homes: homes.len() as u32,
                audit_sequence: 500,
                ..GroupForecastResponse::default()
            }));
        }
        let mut total = vec![0_i64; 24];
        for values in homes.values() {
            for (t, v) in total.iter_mut().zip(values) {
                *t += v;
            }
        }
        let seq = 600 + self.totals.lock().expect("totals").len() as u64;
        self.totals
            .lock()
            .expect("totals")
            .insert(key, (homes.len() as u32, total.clone(), seq));
        Ok(Response::new(GroupForecastResponse {
            granted: true,
            homes: homes.len() as u32,
            hours: labels(&total),
            audit_sequence: seq,
            ..GroupForecastResponse::default()
        }))
    }
}

/// The model the job runs: the repository's model file (trained by `seer-daily`, committed).
fn model_file() -> std::path::PathBuf {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../daily/models/uci-daily.json");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

async fn spawn_authority(authority: FakeAuthority) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeysServer::new(authority.clone()))
            .add_service(AnalyticsServer::new(authority))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    (address, stop)
}

fn stored_header(meter: &str, day: &str, group: u32, digest: &str) -> InputHeader {
    let block: u32 = u32::from(meter.as_bytes()[1] - b'0');
    InputHeader {
        kind: "daily".into(),
        meter_id: meter.into(),
        input_id: daily_input_id(day.parse().expect("day")),
        model_blake3: digest.into(),
        slot_offset: block * 512,
        slot_count: 512,
        first_period: day.into(),
        group,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_job_releases_retries_without_refused_meters_and_caches_the_keys() {
    let model_path = model_file();
    let model_bytes = std::fs::read(&model_path).expect("model");
    let digest = blake3::hash(&model_bytes).to_hex().to_string();
    let model = DailyModel::from_json(std::str::from_utf8(&model_bytes).expect("utf-8"))
        .expect("the model parses");
    let keys = daily_keys();
    let galois = GaloisKeys::from_bytes(&keys.ctx, &keys.galois).expect("galois");
    let authority = FakeAuthority::new(
        model,
        Evaluator::new(&keys.ctx, None, Some(galois)),
        &["m2-g0"],
    );
    let (address, stop) = spawn_authority(authority.clone()).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::connect(&format!("sqlite://{}/seer.db", dir.path().display()))
        .await
        .expect("store");
    // Group 0 complete on day 1 (m2-g0 refused), group 1 with two meters on day 1 and
    // group 0 again on day 2 with one meter.
    let inputs = [
        ("m0-g0", "2024-03-12", 0),
        ("m1-g0", "2024-03-12", 0),
        ("m2-g0", "2024-03-12", 0),
        ("m3-g0", "2024-03-12", 0),
        ("m0-g1", "2024-03-12", 1),
        ("m1-g1", "2024-03-12", 1),
        ("m0-g0", "2024-03-13", 0),
    ];
    for (k, (meter, day, group)) in inputs.iter().enumerate() {
        let header = stored_header(meter, day, *group, &digest);
        let block = header.slot_offset as usize / 512;
        store
            .insert_analytics_input(&AnalyticsInput {
                header,
                ciphertexts: vec![daily_ciphertext(block, k as u32)],
            })
            .await
            .expect("store an input");
    }
    let job = DailyJob {
        model_path: model_path.clone(),
        key_authority: format!("http://{address}"),
        token: "test-token".into(),
        day: None,
        group: None,
        key_cache: dir.path().join("key-cache"),
    };
    let report = daily::run_pending(&store, &job).await.expect("the run");
    eprintln!(
        "daily run: {}",
        serde_json::to_string_pretty(&report).expect("json")
    );
    assert_eq!(report.inputs, 7);
    assert_eq!(report.released, 6, "{report:?}");
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].meter_id, "m2-g0");
    assert_eq!(report.refused[0].reason, "no receipt for this input");
    assert_eq!(report.retries, 1, "the withheld meters are asked for again");
    assert!(
        report.all_verified,
        "the utility's result is the re-execution's"
    );
    assert_eq!(report.forecast_hours_stored, 6 * 24);
    assert_eq!(report.anomaly_days_stored, 6);
    assert_eq!(report.keys.bytes_fetched, keys.galois.len() as u64);
    assert_eq!(report.keys.bytes_cached, 0);
    assert!(report.evaluate_ms_per_home_day_median > 0.0);
    assert_eq!(authority.key_fetches.load(Ordering::SeqCst), 1);
    let cache_file = report.keys.cache_file.clone().expect("cached");
    assert_eq!(
        cache_file.file_stem().and_then(|s| s.to_str()),
        Some(blake3::hash(&keys.galois).to_hex().as_str())
    );

    let decided = store
        .analytics_inputs("daily", &digest, None)
        .await
        .expect("list");
    for input in &decided {
        match (&input.status, input.header.meter_id.as_str()) {
            (InputStatus::Refused { reason, .. }, "m2-g0") => {
                assert_eq!(reason, "no receipt for this input");
            }
            (InputStatus::Released { .. }, _) => {}
            (other, meter) => panic!("{meter}: {other:?}"),
        }
    }
    let results = daily::results(&store, Some("2024-03-12".parse().expect("day")), None)
        .await
        .expect("results");
    assert_eq!(results.forecasts.len(), 5 * 24);
    assert_eq!(results.anomalies.len(), 5);
    // Group 0 has three released homes on day 1, group 1 two.
    let first_hour: Vec<(u32, u64, i64)> = results
        .home_forecast_sums
        .iter()
        .filter(|t| t.stored.hour.ends_with("T00:00"))
        .map(|t| (t.stored.group, t.stored.homes, t.stored.kwh_milli))
        .collect();
    assert_eq!(first_hour, vec![(0, 3, 300), (1, 2, 200)]);
    // The released group totals: group 0 of day 1 (three homes) once its inputs were all
    // decided; group 1 (two homes) and group 0 of day 2 (one home) refused.
    assert_eq!(report.group_forecasts_released, 1, "{report:?}");
    let refused_groups: Vec<(u32, &str, u32)> = report
        .group_forecasts_refused
        .iter()
        .map(|r| (r.group, r.input_day.as_str(), r.homes))
        .collect();
    assert_eq!(
        refused_groups,
        vec![(0, "2024-03-13", 1), (1, "2024-03-12", 2)]
    );
    assert_eq!(authority.group_requests.load(Ordering::SeqCst), 3);
    assert_eq!(results.group_forecasts.len(), 24);
    for (h, row) in results.group_forecasts.iter().enumerate() {
        assert_eq!(row.stored.group, 0);
        assert_eq!(row.stored.hour, format!("2024-03-13T{h:02}:00"));
        assert_eq!(row.stored.homes, 3);
        assert_eq!(row.stored.input_day, "2024-03-12");
        // The hand sum of the three released homes' hours (0.1 + 0.01 h kWh each).
        assert_eq!(row.stored.kwh_milli, 3 * (100 + 10 * h as i64));
        // And the sum of the per-home rows the utility stored.
        let homes: i64 = results
            .forecasts
            .iter()
            .filter(|f| f.stored.group == 0 && f.stored.hour == row.stored.hour)
            .map(|f| f.stored.kwh_milli)
            .sum();
        assert_eq!(row.stored.kwh_milli, homes);
        assert!((row.kwh - row.stored.kwh_milli as f64 / 1000.0).abs() < 1e-12);
    }
    let flagged: Vec<_> = results.anomalies.iter().filter(|a| a.flagged).collect();
    assert!(!flagged.is_empty());
    let explanation = flagged[0].explanation.as_ref().expect("explained");
    assert_eq!(
        explanation.features[0].usual_high, None,
        "an open upper end"
    );

    // A second run finds nothing pending; with a new input it loads the keys from the cache.
    let header = stored_header("m1-g0", "2024-03-13", 0, &digest);
    store
        .insert_analytics_input(&AnalyticsInput {
            header,
            ciphertexts: vec![daily_ciphertext(1, 99)],
        })
        .await
        .expect("store an input");
    let again = daily::run_pending(&store, &job)
        .await
        .expect("the second run");
    assert_eq!((again.inputs, again.released), (1, 1));
    // Group 0 of day 2 now has two homes: still refused.
    assert_eq!(again.group_forecasts_released, 0);
    assert_eq!(again.group_forecasts_refused.len(), 1);
    assert_eq!(again.group_forecasts_refused[0].homes, 2);
    assert_eq!(again.keys.bytes_fetched, 0);
    assert_eq!(again.keys.bytes_cached, keys.galois.len() as u64);
    assert_eq!(
        authority.key_fetches.load(Ordering::SeqCst),
        1,
        "no refetch"
    );

    // A damaged cache file is discarded and the keys fetched again.
    std::fs::write(&cache_file, b"not the keys").expect("damage the cache");
    store
        .insert_analytics_input(&AnalyticsInput {
            header: stored_header("m3-g0", "2024-03-13", 0, &digest),
            ciphertexts: vec![daily_ciphertext(3, 7)],
        })
        .await
        .expect("store an input");
    let third = daily::run_pending(&store, &job)
        .await
        .expect("the third run");
    assert_eq!(third.keys.bytes_fetched, keys.galois.len() as u64);
    assert_eq!(authority.key_fetches.load(Ordering::SeqCst), 2);
    // The third home of group 0 on day 2: its total is released and stored.
    assert_eq!(third.group_forecasts_released, 1, "{third:?}");
    let day2 = daily::results(&store, Some("2024-03-13".parse().expect("day")), None)
        .await
        .expect("results");
    assert_eq!(day2.group_forecasts.len(), 24);
    assert!(day2.group_forecasts.iter().all(|r| r.stored.homes == 3));
    assert_eq!(authority.group_requests.load(Ordering::SeqCst), 5);

    // A rerun with nothing pending asks for nothing, group totals included.
    let idle = daily::run_pending(&store, &job).await.expect("an idle run");
    assert_eq!((idle.inputs, idle.requests, idle.released), (0, 0, 0));
    assert_eq!(idle.group_forecasts_released, 0);
    assert!(idle.group_forecasts_refused.is_empty());
    assert_eq!(authority.group_requests.load(Ordering::SeqCst), 5);
    let day1 = daily::results(&store, Some("2024-03-12".parse().expect("day")), None)
        .await
        .expect("results");
    assert_eq!(
        day1.group_forecasts, results.group_forecasts,
        "never revised"
    );
    let _ = stop.send(());
}

/// The daily lane through the job table: `schedule_daily` makes one job per (day, group) with
/// pending inputs, a worker (`run_worker`, stopping when idle) runs each through
/// `daily::run_pending` for its (day, group) only — starting at a key authority that is down and
/// moving on to the next — and every input ends decided, each group-day's forecasts stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_release_each_scheduled_group_day_once() {
    use utility_server::jobs::{self, WorkerConfig, WorkerModel};
    use utility_server::store::JobState;

    let model_path = model_file();
    let model_bytes = std::fs::read(&model_path).expect("model");
    let digest = blake3::hash(&model_bytes).to_hex().to_string();
    let model = DailyModel::from_json(std::str::from_utf8(&model_bytes).expect("utf-8"))
        .expect("the model parses");
    let keys = daily_keys();
    let galois = GaloisKeys::from_bytes(&keys.ctx, &keys.galois).expect("galois");
    let authority = FakeAuthority::new(model, Evaluator::new(&keys.ctx, None, Some(galois)), &[]);
    let (address, stop) = spawn_authority(authority.clone()).await;
    // A key authority that is down: a port nobody listens on.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };

    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::connect(&format!("sqlite://{}/seer.db", dir.path().display()))
        .await
        .expect("store");
    let inputs = [
        ("m0-g0", "2024-03-12", 0),
        ("m1-g0", "2024-03-12", 0),
        ("m2-g0", "2024-03-12", 0),
        ("m0-g1", "2024-03-12", 1),
        ("m1-g1", "2024-03-12", 1),
        ("m0-g0", "2024-03-13", 0),
    ];
    for (k, (meter, day, group)) in inputs.iter().enumerate() {
        let header = stored_header(meter, day, *group, &digest);
        let block = header.slot_offset as usize / 512;
        store
            .insert_analytics_input(&AnalyticsInput {
                header,
                ciphertexts: vec![daily_ciphertext(block, k as u32)],
            })
            .await
            .expect("store an input");
    }

    let scheduled = jobs::schedule_daily(&store, &digest, None, 3)
        .await
        .expect("schedule");
    let mut created = scheduled.created.clone();
    created.sort();
    assert_eq!(
        created,
        [
            format!("daily/2024-03-12/0/{digest}"),
            format!("daily/2024-03-12/1/{digest}"),
            format!("daily/2024-03-13/0/{digest}"),
        ]
    );
    // Only one day asked for: its jobs exist already.
    let again = jobs::schedule_daily(&store, &digest, "2024-03-12".parse().ok(), 3)
        .await
        .expect("schedule");
    assert_eq!((again.created.len(), again.existing), (0, 2));

    let lanes = utility_server::lanes::LaneValidator::new(
        seer_core::circuits::billing::PARAMETER_SET,
        seer_core::circuits::billing::PARAMETER_SET,
        &seer_core::tariff::Tariff::bescom(),
    )
    .expect("lanes");
    let config = WorkerConfig {
        name: "test-worker".into(),
        // The key authority that is down sits where the first job's first attempt starts, so
        // the worker has to move on to the other.
        key_authorities: if jobs::first_key_authority(&created[0], 1, 2) == 0 {
            vec![format!("http://{down}"), format!("http://{address}")]
        } else {
            vec![format!("http://{address}"), format!("http://{down}")]
        },
        token: "test-token".into(),
        lease: std::time::Duration::from_secs(30),
        poll: std::time::Duration::from_millis(50),
        exit_when_idle: true,
        max_backoff: std::time::Duration::from_secs(1),
        daily_models: vec![WorkerModel::load(model_path.clone()).expect("model")],
        key_cache: dir.path().join("key-cache"),
    };
    let attempts = Mutex::new(Vec::new());
    let report = jobs::run_worker(&store, &lanes, &config, std::future::pending(), |a| {
        attempts.lock().expect("lock").push(a.clone());
    })
    .await
    .expect("the worker");
    assert_eq!((report.done, report.failed), (3, 0), "{report:?}");
    for attempt in attempts.lock().expect("lock").iter() {
        assert_eq!(attempt.outcome, "done");
        // Each job released only its own (day, group).
        let expected = if attempt.job.contains("2024-03-12/0") {
            3
        } else if attempt.job.contains("2024-03-12/1") {
            2
        } else {
            1
        };
        assert_eq!(attempt.detail["inputs"], expected, "{attempt:?}");
        assert_eq!(attempt.detail["released"], expected, "{attempt:?}");
        assert_eq!(
            attempt.detail["key_authority"],
            format!("http://{address}"),
            "the worker moved on from the key authority that is down"
        );
    }
    let counts = store.job_counts().await.expect("counts");
    assert_eq!(counts[&JobState::Done], 3);
    let pending = store
        .analytics_inputs("daily", &digest, Some("pending"))
        .await
        .expect("list");
    assert!(pending.is_empty(), "every input decided");
    let results = daily::results(&store, None, None).await.expect("results");
    assert_eq!(results.forecasts.len(), 6 * 24);
    assert_eq!(results.anomalies.len(), 6);
    // Nothing pending: scheduling again creates and reopens nothing.
    let after = jobs::schedule_daily(&store, &digest, None, 3)
        .await
        .expect("schedule");
    assert!(after.created.is_empty() && after.reopened.is_empty());
    let _ = stop.send(());
}
