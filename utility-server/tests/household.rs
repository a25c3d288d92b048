//! `seer.v1.HomeResults` over real gRPC: released daily forecasts and anomaly results stored
//! as the daily job stores them (`Store::record_daily_release`), read back per home — a
//! household reads its own meter only (another meter: PERMISSION_DENIED, whether or not it has
//! results), the utility and administrators any meter, auditors none (refused at the gate),
//! anonymous callers nothing.
//!
//! As in the bills tests, a test `Authenticator` reads the principal from an
//! `x-test-principal` header.

use std::sync::Arc;

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::HomeResultsRequest;
use seer_proto::v1::home_results_client::HomeResultsClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use utility_server::auth::{Authenticator, Principal};
use utility_server::batch::MeterId;
use utility_server::store::{DailyAnomaly, DailyForecast};
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

fn forecast(meter: &str, hour: &str, kwh_milli: i64, audit_seq: u64) -> DailyForecast {
    DailyForecast {
        meter_id: meter.into(),
        hour: hour.into(),
        model_blake3: "ab".repeat(32),
        kwh_milli,
        // Every hour here is of 2010-01-02: the input of 2010-01-01 produced it.
        input_day: "2010-01-01".into(),
        group: 0,
        audit_seq,
    }
}

fn anomaly(meter: &str, day: &str, flagged: bool, audit_seq: u64) -> DailyAnomaly {
    DailyAnomaly {
        meter_id: meter.into(),
        day: day.into(),
        model_blake3: "ab".repeat(32),
        score_milli: if flagged { 910 } else { 120 },
        flagged,
        explanation: flagged.then(|| r#"{"sentence":"evening use far above usual"}"#.into()),
        group: 0,
        audit_seq,
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

fn range(meter: &str, from: &str, to: &str) -> HomeResultsRequest {
    HomeResultsRequest {
        meter_id: meter.into(),
        from_day: from.into(),
        to_day: to.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_reads_its_own_home_results_only() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.database.url = format!("sqlite://{}/seer.db", dir.path().display());
    let app = Application::build(settings)
        .await
        .expect("build the application")
        .with_authenticator(Arc::new(HeaderAuthenticator));
    let address = format!("http://{}", app.local_addr());
    let store: Store = app.store().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    // Meter A: two hours of 2010-01-02 (from the input of 01-01) and one flagged day; meter B:
    // its own hour and day.
    let forecasts = [
        forecast("meter-a", "2010-01-02T07:00", 1_234, 11),
        forecast("meter-a", "2010-01-02T08:00", 987, 11),
        forecast("meter-b", "2010-01-02T07:00", 5_555, 12),
    ];
    let anomalies = [
        anomaly("meter-a", "2010-01-01", true, 11),
        anomaly("meter-b", "2010-01-01", false, 12),
    ];
    store
        .record_daily_release(&[], &forecasts, &anomalies)
        .await
        .expect("store the release");

    let client: HomeResultsClient<Channel> = HomeResultsClient::connect(address)
        .await
        .expect("connect")
        .with_seer_limits();
    let hours = |principal: Option<&'static str>, meter: &'static str| {
        let mut c = client.clone();
        async move {
            c.daily_forecasts(as_principal(
                range(meter, "2010-01-01", "2010-01-03"),
                principal,
            ))
            .await
            .map(|r| r.into_inner().hours)
        }
    };
    let days = |principal: Option<&'static str>, meter: &'static str| {
        let mut c = client.clone();
        async move {
            c.daily_anomalies(as_principal(
                range(meter, "2010-01-01", "2010-01-03"),
                principal,
            ))
            .await
            .map(|r| r.into_inner().days)
        }
    };

    // Its own: exactly the stored values.
    let own = hours(Some("household:meter-a"), "meter-a")
        .await
        .expect("own forecasts");
    let got: Vec<(String, i64, u64)> = own
        .iter()
        .map(|h| (h.hour.clone(), h.kwh_milli, h.audit_sequence))
        .collect();
    assert_eq!(
        got,
        vec![
            ("2010-01-02T07:00".to_owned(), 1_234, 11),
            ("2010-01-02T08:00".to_owned(), 987, 11)
        ]
    );
    let own_days = days(Some("household:meter-a"), "meter-a")
        .await
        .expect("own anomalies");
    assert_eq!(own_days.len(), 1);
    assert!(own_days[0].flagged);
    assert_eq!(own_days[0].score_milli, 910);
    assert!(own_days[0].explanation_json.contains("evening use"));

    // Another home: refused, both RPCs, and for a meter without results alike.
    for meter in ["meter-b", "meter-z"] {
        let e = hours(Some("household:meter-a"), meter).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{meter}: {e:?}");
        let e = days(Some("household:meter-a"), meter).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{meter}: {e:?}");
    }
    // Utility and admin read any home; meter B's values are its own.
    for role in ["utility", "admin"] {
        let b = hours(Some(role), "meter-b").await.expect("staff read");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].kwh_milli, 5_555);
        let b = days(Some(role), "meter-b").await.expect("staff read");
        assert_eq!(b.len(), 1);
        assert!(!b[0].flagged);
    }
    // Auditors none; anonymous callers nothing.
    let e = hours(Some("auditor"), "meter-a").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = days(None, "meter-a").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A bad range is refused.
    let mut c = client.clone();
    let e = c
        .daily_forecasts(as_principal(
            range("meter-a", "2010-01-03", "2010-01-01"),
            Some("household:meter-a"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}
