//! `seer.v1.Bills` over real gRPC: the utility server built by `Application::build` on port 0
//! with a fresh SQLite database, bills with their per-slab energy stored as the billing job
//! stores them, and every role rule — a household reads its own meter only, the utility and
//! administrators any meter, auditors none, anonymous callers nothing.
//!
//! As in the ingest tests, a test [`Authenticator`] reads the principal from an
//! `x-test-principal` header, so the handlers see exactly what they see behind the JWT
//! verifier: a `Principal` in the request's extensions.

use std::sync::Arc;

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::bills_client::BillsClient;
use seer_proto::v1::{GetUsageSummaryRequest, ListBillsRequest, UploadBatch};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use utility_server::auth::{Authenticator, Principal};
use utility_server::batch::{Batch, MeterId};
use utility_server::store::{SlabEnergy, StoredBill};
use utility_server::{Application, Settings, Store};

/// Reads `x-test-principal: household:METER | utility | auditor | admin`.
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
            _ => match value {
                "utility" => Principal::Utility,
                "auditor" => Principal::Auditor,
                "admin" => Principal::Admin,
                _ => return Err(Status::unauthenticated("unknown test principal")),
            },
        }))
    }
}

struct TestApp {
    client: BillsClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    async fn spawn() -> (Self, Store) {
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
        let client = BillsClient::connect(address)
            .await
            .expect("connect")
            .with_seer_limits();
        (
            Self {
                client,
                stop: Some(stop),
                server: Some(server),
                _dir: dir,
            },
            store,
        )
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server");
        }
    }

    async fn list(
        &self,
        principal: Option<&str>,
        meter: &str,
        period: Option<&str>,
    ) -> Result<Vec<seer_proto::v1::StoredBill>, Status> {
        let request = ListBillsRequest {
            meter_id: meter.into(),
            period: period.map(str::to_owned),
        };
        self.client
            .clone()
            .list_bills(as_principal(request, principal))
            .await
            .map(|r| r.into_inner().bills)
    }

    async fn summary(
        &self,
        principal: Option<&str>,
        meter: &str,
    ) -> Result<seer_proto::v1::GetUsageSummaryResponse, Status> {
        let request = GetUsageSummaryRequest {
            meter_id: meter.into(),
        };
        self.client
            .clone()
            .get_usage_summary(as_principal(request, principal))
            .await
            .map(tonic::Response::into_inner)
    }
}

fn as_principal<T>(message: T, principal: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(principal) = principal {
        request.metadata_mut().insert(
            "x-test-principal",
            principal.parse().expect("ascii header value"),
        );
    }
    request
}

/// Registers `meter` in the store (bills reference their meter) through one stored batch.
async fn register(store: &Store, meter: &str) {
    let wire = UploadBatch {
        meter_id: meter.into(),
        sequence: 1,
        period: "2007-01".into(),
        start: "2007-01-01T00:00:00+05:30".into(),
        end: "2007-01-02T00:00:00+05:30".into(),
        readings: 96,
        billing_lane: b"lane".to_vec(),
        billing_position: 0,
        billing_group: 0,
        analytics_lane: b"lane".to_vec(),
        epsilon_spent: 0.5,
        ..UploadBatch::default()
    };
    store
        .insert_batch(&Batch::try_from_wire(wire, 1024).expect("batch"))
        .await
        .expect("insert");
}

fn bill(meter: &str, period: &str, amount_paise: i64, cells: [u64; 4]) -> StoredBill {
    let labels = ["0-50 kWh", "50-100 kWh", "100-200 kWh", "200+ kWh"];
    StoredBill {
        meter_id: MeterId::try_new(meter).expect("meter"),
        period: period.parse().expect("period"),
        amount_paise,
        closing_sequence: 31,
        audit_sequence: 9,
        released_at_us: 1_700_000_000_000_000,
        slabs: labels
            .iter()
            .zip(cells)
            .map(|(label, wh)| SlabEnergy {
                label: (*label).to_owned(),
                wh,
            })
            .collect(),
    }
}

/// The bill of `cells` under the BESCOM slabs, in paise, by hand: the oracle the stored
/// amounts are chosen from (the service itself only reads what was stored).
fn bescom_paise(cells: [u64; 4]) -> i64 {
    let exact: u64 = cells
        .iter()
        .zip([415_u64, 560, 715, 820])
        .map(|(wh, rate)| wh * rate)
        .sum();
    // paise × 1000 per kWh; round half up.
    i64::try_from((exact + 500) / 1000).expect("fits")
}

fn assert_code(result: Result<impl std::fmt::Debug, Status>, code: Code, mentions: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(mentions), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_are_served_by_role_with_their_slabs() {
    let (app, store) = TestApp::spawn().await;
    for meter in ["M-1", "M-2"] {
        register(&store, meter).await;
    }
    let january = [50_000, 50_000, 12_345, 0];
    let february = [41_000, 0, 0, 0];
    let other = [50_000, 20_000, 0, 0];
    for stored in [
        bill("M-1", "2007-02", bescom_paise(february), february),
        bill("M-1", "2007-01", bescom_paise(january), january),
        bill("M-2", "2007-01", bescom_paise(other), other),
    ] {
        store.record_bill(&stored).await.expect("record");
    }
    assert_eq!(bescom_paise(january), 57_577);

    // The household reads its own bills, oldest first, with per-slab energy.
    let own = Some("household:M-1");
    let bills = app.list(own, "M-1", None).await.expect("own bills");
    assert_eq!(
        bills.iter().map(|b| b.period.as_str()).collect::<Vec<_>>(),
        ["2007-01", "2007-02"]
    );
    assert_eq!(bills[0].meter_id, "M-1");
    assert_eq!(bills[0].amount_paise, 57_577);
    assert_eq!(bills[0].closing_sequence, 31);
    assert_eq!(bills[0].audit_sequence, 9);
    let slabs: Vec<(&str, u64)> = bills[0]
        .slabs
        .iter()
        .map(|s| (s.label.as_str(), s.wh))
        .collect();
    assert_eq!(
        slabs,
        [
            ("0-50 kWh", 50_000),
            ("50-100 kWh", 50_000),
            ("100-200 kWh", 12_345),
            ("200+ kWh", 0)
        ]
    );
    let only = app
        .list(own, "M-1", Some("2007-02"))
        .await
        .expect("one period");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].amount_paise, bescom_paise(february));
    assert!(
        app.list(own, "M-1", Some("2007-03"))
            .await
            .expect("no bill")
            .is_empty()
    );
    let summary = app.summary(own, "M-1").await.expect("own summary");
    assert_eq!(summary.meter_id, "M-1");
    let periods: Vec<(&str, u64, &str, i64)> = summary
        .periods
        .iter()
        .map(|p| {
            (
                p.period.as_str(),
                p.total_wh,
                p.total_kwh.as_str(),
                p.amount_paise,
            )
        })
        .collect();
    assert_eq!(
        periods,
        [
            ("2007-01", 112_345, "112.345", 57_577),
            ("2007-02", 41_000, "41.000", bescom_paise(february)),
        ]
    );

    // Not another household's.
    assert_code(
        app.list(own, "M-2", None).await,
        Code::PermissionDenied,
        "may not read the bills for meter M-2",
    );
    assert_code(
        app.summary(own, "M-2").await,
        Code::PermissionDenied,
        "may not read the bills for meter M-2",
    );

    // The utility and administrators read any meter.
    for staff in ["utility", "admin"] {
        let bills = app.list(Some(staff), "M-2", None).await.expect("staff");
        assert_eq!(bills.len(), 1);
        assert_eq!(bills[0].amount_paise, bescom_paise(other));
        let summary = app.summary(Some(staff), "M-1").await.expect("staff");
        assert_eq!(summary.periods.len(), 2);
        // A meter without bills has none.
        assert!(
            app.list(Some(staff), "M-9", None)
                .await
                .expect("empty")
                .is_empty()
        );
    }

    // Auditors read no bills; anonymous callers nothing at all.
    assert_code(
        app.list(Some("auditor"), "M-1", None).await,
        Code::PermissionDenied,
        "an auditor may not read the bills",
    );
    assert_code(
        app.summary(Some("auditor"), "M-1").await,
        Code::PermissionDenied,
        "an auditor may not read the bills",
    );
    assert_code(
        app.list(None, "M-1", None).await,
        Code::Unauthenticated,
        "not authenticated",
    );
    assert_code(
        app.summary(None, "not a meter id!").await,
        Code::Unauthenticated,
        "not authenticated",
    );

    // Malformed arguments.
    assert_code(
        app.list(Some("utility"), "M-1", Some("2007-13")).await,
        Code::InvalidArgument,
        "2007-13",
    );
    assert_code(
        app.list(Some("utility"), "", None).await,
        Code::InvalidArgument,
        "",
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_bills_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.database.url = format!("sqlite://{}/seer.db", dir.path().display());
    let app = Application::build(settings).await.expect("build");
    let address = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(address)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let response = health
        .check(HealthCheckRequest {
            service: "seer.v1.Bills".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let _ = stop.send(());
    server.await.expect("task").expect("server");
}
