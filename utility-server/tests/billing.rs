//! The billing job end to end, in one process: a real key authority (`Application::build` on
//! port 0, SQLite audit log, its own keys), meters' lanes and receipts made as `meter-client`
//! makes them (the tariff's `SlabAccumulator`, the billing layout, the published public key),
//! batches stored in the utility's store, and `billing::bill_group` over real gRPC: it fetches
//! the Galois keys, evaluates the packed circuit, and the key authority verifies its result bit
//! for bit before releasing. Checked against the plaintext tariff on the same readings: every
//! bill to the paisa, every slab to the Wh, a lane writing outside its block changing nothing
//! of its neighbour's (the circuit masks it), a refused home taken out and the rest asked for
//! again, a second run answered from the key authority's releases.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use key_authority::auth::device::{BillingReceiptStatement, DeviceKey};
use key_authority::auth::{AUDIENCE_KEY_AUTHORITY, Identity, Role, TokenIssuer, TokenRequest};
use key_authority::enrolment::EnrolmentStore;
use key_authority::keys::KeySetSpec;
use seer_ckks::{CkksContext, Encryptor, PublicKey};
use seer_core::circuits::billing::{self, BillingLayout};
use seer_core::tariff::{CellEnergy, SlabAccumulator, Tariff};
use seer_core::units::Wh;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::UploadBatch;
use seer_proto::v1::receipts_client::ReceiptsClient;
use tonic::transport::Channel;
use utility_server::batch::Batch;
use utility_server::billing::{JobError, bill_group, cell_labels};
use utility_server::lanes::LaneValidator;
use utility_server::store::Store;

const PERIOD: &str = "2007-01";

struct Deployment {
    _dir: tempfile::TempDir,
    ka_url: String,
    issuer: TokenIssuer,
    galois_bytes: u64,
    ctx: CkksContext,
    encryptor: Encryptor,
    layout: BillingLayout,
    lanes: LaneValidator,
    receipts: ReceiptsClient<Channel>,
    store: Store,
    enrolment: EnrolmentStore,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Enrols a fresh device key for `meter` (a one-time code, then the enrolment with a proof
/// of possession), as `meter-client enrol` does.
async fn enrol_device(enrolment: &EnrolmentStore, meter: &str) -> DeviceKey {
    let key = DeviceKey::generate().expect("device key");
    enrolment.enrol_device(meter, &key).await.expect("enrolled");
    key
}

async fn deploy(galois_steps: Vec<i64>) -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = key_authority::Settings::default();
    settings.server.port = 0;
    settings.keys.dir = dir.path().join("keys");
    settings.keys.sets = vec![KeySetSpec {
        parameter_set: billing::PARAMETER_SET.id(),
        galois_steps,
    }];
    settings.auth.signing_key_file = dir.path().join("jwt.pem");
    settings.audit.database_url = format!("sqlite://{}", dir.path().join("ka.db").display());
    let app = key_authority::Application::build(settings)
        .await
        .expect("key authority");
    let issuer = app.issuer().clone();
    let enrolment = app.enrolment();
    let set = app
        .keys()
        .get(&billing::PARAMETER_SET.id())
        .expect("billing key set");
    let galois_bytes = set.galois_keys_bytes().map_or(0, |g| g.len() as u64);
    let ctx = set.context().clone();
    let public_key = PublicKey::from_bytes(&ctx, set.public_key_bytes()).expect("public key");
    let encryptor = Encryptor::new(&ctx, &public_key).expect("encryptor");
    let address = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let ka_url = format!("http://{address}");
    let channel = Channel::from_shared(ka_url.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let lanes = LaneValidator::new(
        billing::PARAMETER_SET,
        billing::PARAMETER_SET,
        &Tariff::bescom(),
    )
    .expect("lanes");
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("utility.db").display()
    ))
    .await
    .expect("store");
    Deployment {
        _dir: dir,
        ka_url,
        issuer,
        galois_bytes,
        layout: lanes.layout().clone(),
        ctx,
        encryptor,
        lanes,
        receipts: ReceiptsClient::new(channel).with_seer_limits(),
        store,
        enrolment,
        _stop: stop,
    }
}

impl Deployment {
    fn token(&self, identity: Identity) -> String {
        let mut request = TokenRequest::new(identity, Duration::from_secs(600));
        if request.identity.role() == Role::Household {
            // Household tokens name one audience: here, the key authority.
            request.audience = vec![AUDIENCE_KEY_AUTHORITY.to_owned()];
        }
        self.issuer.issue(&request).expect("issue").token
    }

    /// One meter's month, as meter-client sends it: three batches (days 1-10, 11-20, 21-31)
    /// whose lanes hold the period-to-date cells at the meter's block, each recorded with the
    /// key authority and stored by the utility. `tamper` adds (slot, Wh) to the closing lane.
    /// Returns the plaintext oracle's cells of the whole month.
    async fn meter_month(
        &self,
        meter: &str,
        position: u32,
        base_wh: i64,
        tamper: &[(usize, f64)],
    ) -> CellEnergy {
        self.meter_month_storing(meter, position, base_wh, tamper, false)
            .await
    }

    /// [`meter_month`](Self::meter_month); with `swap_closing_lane`, the utility stores a
    /// fresh encryption of the same closing cells instead of the lane the receipt names (its
    /// digest then differs from the receipt's).
    async fn meter_month_storing(
        &self,
        meter: &str,
        position: u32,
        base_wh: i64,
        tamper: &[(usize, f64)],
        swap_closing_lane: bool,
    ) -> CellEnergy {
        let tariff = self.layout.tariff();
        let start = NaiveDate::from_ymd_opt(2007, 1, 1)
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("time");
        let readings: Vec<(NaiveDateTime, Wh)> = (0..31 * 24)
            .map(|hour: i64| {
                (
                    start + chrono::Duration::hours(hour),
                    Wh::try_new(base_wh + (hour * 53) % 97).expect("wh"),
                )
            })
            .collect();
        let household = self.token(Identity::Household {
            meter_id: meter.to_owned(),
        });
        let device = enrol_device(&self.enrolment, meter).await;
        let mut acc = SlabAccumulator::new(tariff);
        for (sequence, days) in [(1_u64, 0..10), (2, 10..20), (3, 20..31)] {
            for (at, wh) in &readings[days.start * 24..days.end * 24] {
                acc.push(*at, *wh).expect("push");
            }
            let _ = acc.take_batch();
            let mut slots = self
                .layout
                .encode_batch(position as usize, acc.period_cells())
                .expect("encode");
            let closes = sequence == 3;
            if closes {
                for &(slot, wh) in tamper {
                    slots[slot] += wh;
                }
            }
            let lane = self
                .encryptor
                .encrypt_values(&slots)
                .expect("encrypt")
                .to_bytes(&self.ctx)
                .expect("serialize");
            let statement = BillingReceiptStatement {
                meter_id: meter.to_owned(),
                sequence,
                period: PERIOD.to_owned(),
                params_id: billing::PARAMETER_SET.id(),
                billing_lane_blake3: *blake3::hash(&lane).as_bytes(),
                billing_group: 0,
                billing_position: position,
                closes_period: closes,
            };
            let mut receipt = tonic::Request::new(seer_proto::v1::ReceiptRequest {
                meter_id: meter.to_owned(),
                sequence,
                period: PERIOD.to_owned(),
                billing_lane_blake3: blake3::hash(&lane).as_bytes().to_vec(),
                billing_group: 0,
                billing_position: position,
                closes_period: closes,
                signature: device.sign(&statement).to_vec(),
            });
            receipt.metadata_mut().insert(
                "authorization",
                format!("Bearer {household}").parse().expect("ascii"),
            );
            self.receipts
                .clone()
                .record(receipt)
                .await
                .expect("receipt");
            let lane = if closes && swap_closing_lane {
                self.encryptor
                    .encrypt_values(&slots)
                    .expect("encrypt")
                    .to_bytes(&self.ctx)
                    .expect("serialize")
            } else {
                lane
            };
            let wire = UploadBatch {
                meter_id: meter.to_owned(),
                sequence,
                period: PERIOD.to_owned(),
                start: format!("2007-01-{:02}T00:00:00+05:30", days.start + 1),
                end: if closes {
                    "2007-02-01T00:00:00+05:30".to_owned()
                } else {
                    format!("2007-01-{:02}T00:00:00+05:30", days.end + 1)
                },
                readings: u32::try_from((days.end - days.start) * 24).expect("count"),
                billing_lane: lane,
                billing_position: position,
                billing_group: 0,
                analytics_lane: b"not used here".to_vec(),
                epsilon_spent: 0.0,
                ..UploadBatch::default()
            };
            let batch = Batch::try_from_wire(wire, self.layout.capacity()).expect("batch");
            self.store.insert_batch(&batch).await.expect("stored");
        }
        tariff
            .bill(readings.iter().copied())
            .expect("plaintext bill")
            .cells()
            .clone()
    }

    async fn bill(&self, token: &str) -> Result<utility_server::billing::BillingReport, JobError> {
        bill_group(
            &self.store,
            &self.lanes,
            &self.ka_url,
            token,
            PERIOD.parse().expect("period"),
            0,
        )
        .await
    }
}

fn wh_list(cells: &CellEnergy) -> Vec<u64> {
    cells
        .cells()
        .iter()
        .map(|w| u64::try_from(w.get()).expect("non-negative"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_utility_computes_the_bills_and_the_key_authority_verifies_and_releases_them() {
    // More rotations than the circuit's 1 and 2 (the key authority's default key set has the
    // sums of 128 slots): the utility fetches the one published object all the same.
    let deployment = deploy(vec![1, 2, 4, 8]).await;
    let tariff = deployment.layout.tariff().clone();
    let homes = [("M-1", 0, 20), ("M-2", 1, 110), ("M-3", 513, 300)];
    let mut oracle = Vec::new();
    for (meter, position, base) in homes {
        oracle.push(deployment.meter_month(meter, position, base, &[]).await);
    }
    let utility = deployment.token(Identity::Utility);
    let report = deployment.bill(&utility).await.expect("billing run");
    assert_eq!(report.closing_homes, 3);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert!(
        report.result_verified,
        "the key authority verified our result"
    );
    assert_eq!(report.requests, 1);
    assert_eq!(
        report.evaluation_key_bytes, deployment.galois_bytes,
        "exactly the published Galois keys were fetched"
    );
    let labels = cell_labels(&tariff);
    assert_eq!(report.released.len(), 3);
    for ((bill, (meter, _, _)), cells) in report.released.iter().zip(homes).zip(&oracle) {
        assert_eq!(bill.meter_id.as_str(), meter);
        assert_eq!(bill.closing_sequence, 3);
        let plaintext = tariff.bill_cells(cells).expect("bill").total();
        assert_eq!(bill.amount_paise, plaintext.get(), "{meter}");
        assert_eq!(
            bill.slabs.iter().map(|s| s.wh).collect::<Vec<_>>(),
            wh_list(cells),
            "{meter}"
        );
        assert_eq!(
            bill.slabs
                .iter()
                .map(|s| s.label.clone())
                .collect::<Vec<_>>(),
            labels
        );
    }
    // The homes span the slabs: the oracle is not trivially the first slab.
    assert!(oracle[2].cells()[3].get() > 0, "{:?}", oracle[2]);
    // Stored, with the cells.
    let stored = deployment
        .store
        .bills(PERIOD.parse().expect("period"))
        .await
        .expect("bills");
    assert_eq!(stored, report.released);
    let json = serde_json::to_value(&report).expect("json");
    eprintln!(
        "billing report: circuit_ms {} (per home {}), release_ms {}, evaluation_key_bytes {}",
        json["circuit_ms"],
        json["circuit_ms_per_home"],
        json["release_time"],
        json["evaluation_key_bytes"]
    );
    assert_eq!(json["released"][0]["kwh_per_slab"][0]["label"], "0-50 kWh");
    assert!(json["circuit_ms"].is_number() && json["circuit_ms_per_home"].is_number());

    // Again (a rerun, as after a lost answer): the key authority answers from its releases —
    // the same bills, the same audit entries — and nothing is stored twice.
    let again = deployment.bill(&utility).await.expect("second run");
    assert!(again.refused.is_empty(), "{:?}", again.refused);
    assert_eq!(again.released.len(), 3);
    for (a, first) in again.released.iter().zip(&report.released) {
        assert_eq!(
            (&a.meter_id, a.amount_paise, a.audit_sequence, &a.slabs),
            (
                &first.meter_id,
                first.amount_paise,
                first.audit_sequence,
                &first.slabs
            )
        );
    }
    assert_eq!(
        deployment
            .store
            .bills(PERIOD.parse().expect("period"))
            .await
            .expect("bills"),
        stored
    );

    // A household token may not ask for releases.
    let household = deployment.token(Identity::Household {
        meter_id: "M-1".into(),
    });
    match deployment.bill(&household).await {
        Err(JobError::Release { code, .. }) => assert_eq!(code, tonic::Code::PermissionDenied),
        other => panic!("a household obtained releases: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_writing_into_a_neighbours_block_changes_nothing_of_the_neighbours() {
    let deployment = deploy(vec![1, 2]).await;
    let tariff = deployment.layout.tariff().clone();
    let honest = deployment.meter_month("M-1", 0, 40, &[]).await;
    // M-2 at position 1 adds 3 kWh to M-1's second slab in its closing lane: the circuit
    // multiplies M-2's lane by the indicator of M-2's own cells, so the 3 kWh count for nobody.
    let own = deployment.meter_month("M-2", 1, 40, &[(1, 3_000.0)]).await;
    let utility = deployment.token(Identity::Utility);
    let report = deployment.bill(&utility).await.expect("billing run");
    assert!(report.result_verified);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.released.len(), 2);
    for (bill, (meter, cells)) in report
        .released
        .iter()
        .zip([("M-1", &honest), ("M-2", &own)])
    {
        assert_eq!(bill.meter_id.as_str(), meter);
        assert_eq!(
            bill.amount_paise,
            tariff.bill_cells(cells).expect("bill").total().get(),
            "{meter}"
        );
        assert_eq!(
            bill.slabs.iter().map(|s| s.wh).collect::<Vec<_>>(),
            wh_list(cells),
            "{meter}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_home_is_taken_out_and_the_rest_asked_for_again() {
    let deployment = deploy(vec![1, 2]).await;
    let tariff = deployment.layout.tariff().clone();
    let m1 = deployment.meter_month("M-1", 0, 40, &[]).await;
    let m3 = deployment.meter_month("M-3", 2, 90, &[]).await;
    // The utility holds another lane for M-2 than the one M-2's receipt names.
    let _ = deployment
        .meter_month_storing("M-2", 1, 60, &[], true)
        .await;
    let utility = deployment.token(Identity::Utility);
    let report = deployment.bill(&utility).await.expect("billing run");
    // The first request (all three) is refused as a whole: M-2 for its lane, the others
    // withheld; the job asks again for M-1 and M-3 alone, which are released and verified.
    assert_eq!(report.requests, 2);
    assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
    assert_eq!(report.refused[0].meter_id, "M-2");
    assert!(
        report.refused[0].reason.contains("BLAKE3 differs"),
        "{:?}",
        report.refused
    );
    assert!(report.result_verified);
    let released: Vec<(&str, i64)> = report
        .released
        .iter()
        .map(|b| (b.meter_id.as_str(), b.amount_paise))
        .collect();
    assert_eq!(
        released,
        [
            ("M-1", tariff.bill_cells(&m1).expect("bill").total().get()),
            ("M-3", tariff.bill_cells(&m3).expect("bill").total().get()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rotations_are_refused_before_anything_is_sent() {
    // A key set with rotations, but not the circuit's: the key authority itself refuses to
    // start without them, so build the utility's view against a key authority with steps 1
    // and 2 and a utility layout needing more (a 5-cell tariff: block width 8, steps 1, 2, 4).
    let deployment = deploy(vec![1, 2]).await;
    let _ = deployment.meter_month("M-1", 0, 40, &[]).await;
    let five_cells = Tariff::try_new(seer_core::tariff::TariffConfig {
        name: "five".into(),
        slabs: [
            (Some(10.0), 100),
            (Some(20.0), 200),
            (Some(30.0), 300),
            (Some(40.0), 400),
        ]
        .into_iter()
        .chain([(None, 500)])
        .map(|(up_to_kwh, rate_paise)| seer_core::tariff::SlabConfig {
            up_to_kwh,
            rate_paise,
        })
        .collect(),
        bands: Vec::new(),
    })
    .expect("tariff");
    let lanes = LaneValidator::new(billing::PARAMETER_SET, billing::PARAMETER_SET, &five_cells)
        .expect("lanes");
    let error = bill_group(
        &deployment.store,
        &lanes,
        &deployment.ka_url,
        &deployment.token(Identity::Utility),
        PERIOD.parse().expect("period"),
        0,
    )
    .await
    .expect_err("no keys for step 4");
    let message = error.to_string();
    assert!(
        matches!(error, JobError::Keys(_)) && message.contains("rotation steps [4]"),
        "{message}"
    );
}
