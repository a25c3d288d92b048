//! Key-authority bill releases per second for a full packing group.
//!
//! `cargo bench -p key-authority --bench release`
//!
//! One group of 1024 homes (BESCOM slabs, `N8192_L2_SEC128`), each with a closing lane at its
//! own position and a receipt, in a SQLite audit database in a temporary directory:
//! - `release/full_group`: `BillReleaser::release_bills` end to end — the receipt, registry and
//!   release checks (database reads per home), each lane decrypted and checked, the circuit
//!   re-executed and compared with the utility's result, the bills decrypted and cross-checked
//!   with the plaintext tariff, then 1024 audit entries and release rows in one transaction;
//! - `engine/decide_full_group`: the CPU part alone (`BillEngine::decide`);
//! - `utility/server_time_full_group/{uncompressed,zstd}`: the utility's server time for the
//!   group's bills — parse the 1024 closing lanes, evaluate the packed circuit, serialize the
//!   result (what `utility_server::billing::evaluate_lanes` does) — with the lanes as meters
//!   send them (uncompressed) and in SEAL's zstd form, measured in one run.
//!
//! Throughput is in homes (released bills) per second. Between iterations the release rows
//! are deleted (the audit log keeps growing, as in service), so each iteration releases the
//! same 1024 bills again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use key_authority::audit::AuditLog;
use key_authority::auth::device::DeviceKey;
use key_authority::auth::{Caller, Identity, JwtSigningKey};
use key_authority::enrolment::EnrolmentStore;
use key_authority::keys::{KeySetSpec, KeyStore};
use key_authority::release::{
    BillEngine, BillInput, BillReleaser, BillRequest, GroupLane, Period, Receipt, UtilityOutputs,
    billing_statement,
};
use key_authority::signed_receipts::SignedReceipts;
use seer_ckks::{Encryptor, PublicKey};
use seer_core::circuits::billing::PARAMETER_SET;
use seer_core::tariff::{CellEnergy, Tariff};
use seer_core::units::Wh;

const PERIOD: &str = "2007-01";

struct Setup {
    _dir: tempfile::TempDir,
    database_url: String,
    runtime: tokio::runtime::Runtime,
    engine: Arc<BillEngine>,
    releaser: BillReleaser,
    request: BillRequest,
    /// The same lanes in SEAL's zstd-compressed form.
    zstd_lanes: Vec<Vec<u8>>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let keys = Arc::new(
        KeyStore::open(
            &dir.path().join("keys"),
            &[KeySetSpec {
                parameter_set: PARAMETER_SET.id(),
                galois_steps: vec![1, 2],
            }],
        )
        .expect("keys"),
    );
    let tariff = Tariff::bescom();
    let engine = Arc::new(
        BillEngine::try_new(Arc::clone(&keys), &tariff, &PARAMETER_SET.id()).expect("engine"),
    );
    let set = keys.get(&PARAMETER_SET.id()).expect("set");
    let ctx = set.context();
    let encryptor = Encryptor::new(
        ctx,
        &PublicKey::from_bytes(ctx, set.public_key_bytes()).expect("pk"),
    )
    .expect("encryptor");
    let layout = engine.layout().clone();
    let database_url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let key = Arc::new(JwtSigningKey::generate().expect("signing key"));
    let audit = Arc::new(
        runtime
            .block_on(AuditLog::connect(&database_url, Arc::clone(&key)))
            .expect("audit log"),
    );
    // Receipts as meters record them: enrolled device keys, signed statements, one audit
    // entry each (releases require it).
    let enrolment = EnrolmentStore::new(Arc::clone(&audit), key);
    let receipts = SignedReceipts::new(Arc::clone(&audit));
    let period: Period = PERIOD.parse().expect("period");
    let started = Instant::now();
    let mut inputs = Vec::with_capacity(layout.capacity());
    let mut zstd_lanes = Vec::with_capacity(layout.capacity());
    for position in 0..layout.capacity() {
        let cells: Vec<Wh> = (0..4)
            .map(|c| Wh::try_new(((position * 7 + c * 13) % 40) as i64 * 2_500).expect("wh"))
            .collect();
        let cells = CellEnergy::try_from_cells(&tariff, cells).expect("cells");
        let ct = layout
            .encrypt_batch(&encryptor, position, &cells)
            .expect("encrypt");
        // As meters send it (`meter_client::batch`): uncompressed.
        let lane = ct.to_bytes_uncompressed(ctx).expect("serialize");
        zstd_lanes.push(ct.to_bytes(ctx).expect("serialize"));
        let meter_id = format!("M-{position:04}");
        let device = DeviceKey::generate().expect("device key");
        runtime
            .block_on(enrolment.enrol_device(&meter_id, &device))
            .expect("enrol");
        let receipt = Receipt {
            meter_id: meter_id.clone(),
            sequence: 1,
            period,
            billing_digest: *blake3::hash(&lane).as_bytes(),
            billing_group: 0,
            billing_position: u32::try_from(position).expect("position"),
            closes_period: true,
        };
        let statement = billing_statement(&receipt, &PARAMETER_SET.id());
        let household = Caller::new(
            format!("household:{meter_id}"),
            Identity::Household {
                meter_id: meter_id.clone(),
            },
        );
        runtime
            .block_on(receipts.record_billing(
                &household,
                &receipt,
                &statement,
                &device.sign(&statement),
            ))
            .expect("receipt");
        inputs.push(BillInput {
            meter_id,
            sequence: 1,
            billing_lane: lane,
        });
    }
    eprintln!(
        "setup: {} homes encrypted and receipted in {:.1} s",
        inputs.len(),
        started.elapsed().as_secs_f64()
    );
    // What the utility does for the group (its `evaluate_lanes`): parse every lane, evaluate,
    // serialize. Timed once, for the record.
    let started = Instant::now();
    let lanes: Vec<GroupLane> = inputs
        .iter()
        .enumerate()
        .map(|(position, i)| GroupLane {
            lane: engine.parse_lane(&i.billing_lane).expect("lane"),
            position,
        })
        .collect();
    let parsed = started.elapsed();
    let run = engine.evaluate(&lanes).expect("utility result");
    let total = started.elapsed();
    eprintln!(
        "the utility's circuit over the full group: {:.0} ms ({:.0} ms parsing the lanes), \
         {:.3} ms per home",
        total.as_secs_f64() * 1e3,
        parsed.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / inputs.len() as f64
    );
    Setup {
        _dir: dir,
        database_url,
        runtime,
        releaser: BillReleaser::new(audit, Arc::clone(&engine)),
        engine,
        request: BillRequest {
            period: PERIOD.to_owned(),
            billing_group: 0,
            inputs,
            result: run.bills.bytes().to_vec(),
            cells: run.cells.bytes().to_vec(),
        },
        zstd_lanes,
    }
}

fn bench(c: &mut Criterion) {
    let setup = setup();
    let homes = setup.request.inputs.len();
    let caller = Caller::new("bench-utility", Identity::Utility);
    let raw = setup.runtime.block_on(async {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&setup.database_url)
            .await
            .expect("raw pool")
    });

    let mut group = c.benchmark_group("release");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(homes as u64));
    group.bench_function("full_group", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                setup.runtime.block_on(async {
                    sqlx::query("DELETE FROM releases")
                        .execute(&raw)
                        .await
                        .expect("reset releases");
                });
                let started = Instant::now();
                let decisions = setup
                    .runtime
                    .block_on(setup.releaser.release_bills(&caller, setup.request.clone()))
                    .expect("release");
                total += started.elapsed();
                assert!(decisions.result_verified);
                assert!(decisions.outcomes.iter().all(|o| o.decision.is_ok()));
            }
            total
        });
    });
    group.finish();

    let lanes: Vec<GroupLane> = setup
        .request
        .inputs
        .iter()
        .enumerate()
        .map(|(position, input)| GroupLane {
            lane: setup.engine.parse_lane(&input.billing_lane).expect("lane"),
            position,
        })
        .collect();
    let mut group = c.benchmark_group("engine");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(homes as u64));
    group.bench_function("decide_full_group", |b| {
        b.iter(|| {
            let decision = setup
                .engine
                .decide(
                    &lanes,
                    UtilityOutputs {
                        cells: &setup.request.cells,
                        bills: &setup.request.result,
                    },
                )
                .expect("decide");
            assert!(decision.result_verified);
        });
    });
    group.finish();

    let mut group = c.benchmark_group("utility");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(homes as u64));
    let uncompressed: Vec<&[u8]> = setup
        .request
        .inputs
        .iter()
        .map(|i| i.billing_lane.as_slice())
        .collect();
    let zstd: Vec<&[u8]> = setup.zstd_lanes.iter().map(Vec::as_slice).collect();
    for (name, lanes) in [("uncompressed", &uncompressed), ("zstd", &zstd)] {
        group.bench_function(format!("server_time_full_group/{name}"), |b| {
            b.iter(|| {
                let parsed: Vec<GroupLane> = lanes
                    .iter()
                    .enumerate()
                    .map(|(position, bytes)| GroupLane {
                        lane: setup.engine.parse_lane(bytes).expect("lane"),
                        position,
                    })
                    .collect();
                // Evaluates and serializes both outputs.
                setup.engine.evaluate(&parsed).expect("evaluate")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
