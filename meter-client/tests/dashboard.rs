//! The household dashboard's HTTP routes against a state directory written by a real
//! `run` (a synthetic home, batches queued, not uploaded), with independent oracles: the
//! readings through a fresh `WhRegister` (whole Wh as the billing lane carries them), the
//! analytics lane as sent read back by **decrypting** the queued batches' lanes, the plaintext
//! tariff's bill, the ε budget computed by hand; the access key and its cookie; bad input;
//! the live-update notification when a new batch lands; and the Green Button export validated
//! against the ESPI schema with `xmllint`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::NaiveDateTime;
use common::*;
use http_body_util::BodyExt as _;
use meter_client::dashboard::{DashboardSettings, DashboardState, router, spawn_watcher};
use meter_client::run_with_noise;
use meter_client::synthetic::SyntheticHome;
use seer_core::dp::Epsilon;
use seer_core::tariff::{Tariff, WhRegister};
use seer_core::units::Wh;
use tokio_stream::StreamExt as _;
use tower::ServiceExt as _;

/// The synthetic home's readings in `[from, until)` in whole Wh, as the meter's register makes
/// them (the register carries sub-Wh remainders from reading to reading).
fn oracle(from: chrono::NaiveDate, until: chrono::NaiveDate) -> Vec<(NaiveDateTime, Wh)> {
    let mut register = WhRegister::new();
    SyntheticHome::new(11, 5)
        .readings(date(2024, 1, 1), until)
        .into_iter()
        .map(|r| (r.start, register.advance(r.energy)))
        .filter(|(t, _)| t.date() >= from)
        .collect()
}

fn dashboard_settings(state: &Path) -> DashboardSettings {
    DashboardSettings {
        state_dir: state.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tariff: Tariff::bescom(),
        sensitivity: Wh::try_new(SENSITIVITY_WH).unwrap(),
        epsilon: Epsilon::try_new(EPSILON).unwrap(),
        monthly_budget: Epsilon::try_new(EPSILON * 2976.0).unwrap(),
        poll: Duration::from_millis(100),
        utc_offset: chrono::FixedOffset::east_opt(0).unwrap(),
        utility: None,
    }
}

async fn get(
    app: &axum::Router,
    uri: &str,
    cookie: Option<&str>,
) -> (StatusCode, String, Vec<(String, String)>) {
    let mut request = Request::get(uri).header(header::ACCEPT, "text/html");
    if let Some(c) = cookie {
        request = request.header(header::COOKIE, format!("seer_session={c}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every `data-testid="ID">VALUE<` of `html`, in order.
fn testids(html: &str, id: &str) -> Vec<String> {
    let needle = format!("data-testid=\"{id}\">");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest[..rest.find('<').unwrap()].to_owned()
        })
        .collect()
}

/// The schema directory committed with the crate.
fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/espi")
}

/// Validates `xml` against espiDerived.xsd (+ atom.xsd, xml.xsd through the local catalog)
/// with xmllint, offline. Fails, never skips, when xmllint is missing.
pub fn validate_espi(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.xml");
    std::fs::write(&file, xml).unwrap();
    let schema = schema_dir();
    let output = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(schema.join("espiDerived.xsd"))
        .arg(&file)
        .env("XML_CATALOG_FILES", schema.join("catalog.xml"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "xmllint is needed to validate the Green Button export ({e}); install \
                 libxml2-utils (scripts/setup.sh does)"
            )
        });
    assert!(
        output.status.success(),
        "the export does not validate against the ESPI schema:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_meters_own_data_to_the_key_holder_only() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (from, until) = (date(2024, 1, 1), date(2024, 1, 4));
    let (observer, _) = collector();
    run_with_noise(
        settings(dir.path(), &ka, None, from, until),
        seeded_noise(3),
        observer,
    )
    .await
    .unwrap();
    let readings = oracle(from, until);
    assert_eq!(readings.len(), 3 * 96);

    // The analytics lane as sent: decrypt the queued lanes at their window slots.
    let mut sent: Vec<(NaiveDateTime, i64)> = Vec::new();
    for b in queued_batches(dir.path()).await {
        let plan = b.noise.as_ref().unwrap();
        let slots = keys().decrypt(&b.analytics_lane);
        for j in 0..plan.slot_count as usize {
            let start = b.start + chrono::TimeDelta::minutes(15 * j as i64);
            let value = slots[plan.first_slot as usize + j].round() as i64;
            sent.push((start, value));
        }
    }

    let state = DashboardState::open(dashboard_settings(dir.path()))
        .await
        .unwrap();
    let key = state.key().expose().to_owned();
    assert_eq!(key.len(), 64);
    let app = router(state.clone());

    // No session: the browser goes to the login page; a wrong key is refused; every data
    // route needs the session.
    let (status, _, headers) = get(&app, "/", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(header(&headers, "location"), Some("/login"));
    let (status, _, _) = get(&app, "/?key=00", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for uri in ["/preview?epsilon=1", "/battery", "/espi.xml"] {
        let (status, body, _) = get(&app, uri, Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
    // The key link sets an HttpOnly, SameSite=Strict cookie and leaves the address bar.
    let (status, _, headers) = get(&app, &format!("/?key={key}"), None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(header(&headers, "location"), Some("/"));
    let cookie = header(&headers, "set-cookie").unwrap();
    assert!(cookie.starts_with(&format!("seer_session={key};")));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));

    // The page: the last day's readings and the lane as sent, equal to the oracles.
    let (status, html, headers) = get(&app, "/", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(header(&headers, "content-security-policy").is_some());
    let shown_wh = testids(&html, "reading-wh");
    let shown_sent = testids(&html, "reading-sent");
    assert_eq!(shown_wh.len(), 96);
    let last_day = &readings[readings.len() - 96..];
    let want_wh: Vec<String> = last_day
        .iter()
        .map(|(_, wh)| wh.get().to_string())
        .collect();
    assert_eq!(shown_wh, want_wh);
    let want_sent: Vec<String> = sent[sent.len() - 96..]
        .iter()
        .map(|(_, v)| v.to_string())
        .collect();
    assert_eq!(shown_sent, want_sent);
    assert_eq!(
        testids(&html, "latest-wh"),
        vec![last_day[95].1.get().to_string()]
    );
    assert!(html.contains("id=\"epsilon\"") && html.contains("type=\"range\""));
    assert!(html.contains("id=\"chart-daily\"") && html.contains("id=\"chart-lanes\""));
    // ε spent: 288 readings at 0.05.
    assert_eq!(testids(&html, "epsilon-spent"), vec!["14.4000".to_owned()]);

    // The preview: scale Δ/ε, and the month's budget left over ε, by hand.
    let (status, json, headers) = get(&app, "/preview?epsilon=0.5", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let p: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(p["scale_wh"].as_f64().unwrap(), 6900.0);
    let left = EPSILON * 2976.0 - EPSILON * 288.0;
    assert_eq!(
        p["readings_left"].as_u64().unwrap(),
        (left / 0.5).floor() as u64
    );
    let points = p["points"].as_array().unwrap();
    assert_eq!(points.len(), 96);
    for (q, (_, wh)) in points.iter().zip(last_day) {
        assert_eq!(q["wh"].as_i64().unwrap(), wh.get());
    }
    // Fresh draws each time: two previews differ.
    let (_, json2, _) = get(&app, "/preview?epsilon=0.5", Some(&key)).await;
    assert_ne!(json, json2);
    for bad in ["abc", "0", "-1", "11", "NaN"] {
        let (status, _, _) = get(&app, &format!("/preview?epsilon={bad}"), Some(&key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "epsilon={bad}");
    }

    // Battery: the bill without the battery is the plaintext tariff's; a slab-only tariff
    // saves nothing.
    let (status, html, _) = get(
        &app,
        "/battery?capacity=2&power=1&efficiency=80&period=2024-01",
        Some(&key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let bill = Tariff::bescom().bill(readings.iter().copied()).unwrap();
    let want = seer_web::page::rupees(bill.amount().round_to_paise().get());
    assert_eq!(testids(&html, "bill-without"), vec![want.clone()]);
    assert_eq!(testids(&html, "bill-with"), vec![want]);
    assert_eq!(testids(&html, "saving"), vec!["₹0.00".to_owned()]);
    assert!(html.contains("id=\"battery-form\""));
    for bad in ["capacity=-1", "power=abc", "efficiency=0", "period=2024-13"] {
        let (status, _, _) = get(&app, &format!("/battery?{bad}"), Some(&key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Green Button: the range's readings, valid against the ESPI schema.
    let (status, xml, headers) =
        get(&app, "/espi.xml?from=2024-01-02&to=2024-01-03", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("application/atom+xml")
    );
    assert_eq!(xml.matches("<espi:IntervalReading>").count(), 96);
    let values: Vec<i64> = xml
        .match_indices("<espi:value>")
        .map(|(i, _)| {
            let rest = &xml[i + 12..];
            rest[..rest.find('<').unwrap()].parse().unwrap()
        })
        .collect();
    let want: Vec<i64> = readings[96..192].iter().map(|(_, wh)| wh.get()).collect();
    assert_eq!(values, want);
    validate_espi(&xml);
    let (status, _, _) = get(&app, "/espi.xml?from=2024-01-03&to=2024-01-02", Some(&key)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Live: a new batch lands while the dashboard is open, and open pages are told.
    let mut events = Box::pin(state.events().stream());
    let watcher = spawn_watcher(&state);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (observer, _) = collector();
    run_with_noise(
        settings(dir.path(), &ka, None, from, date(2024, 1, 5)),
        seeded_noise(4),
        observer,
    )
    .await
    .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("a live update within 20 s");
    assert!(event.is_some());
    watcher.abort();
    let (_, html, _) = get(&app, "/", Some(&key)).await;
    let newest = oracle(date(2024, 1, 4), date(2024, 1, 5));
    assert_eq!(
        testids(&html, "reading-wh"),
        newest
            .iter()
            .map(|(_, wh)| wh.get().to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_month_of_readings_exports_as_valid_espi() {
    let mut register = WhRegister::new();
    let readings: Vec<meter_client::batch::QueuedReading> = SyntheticHome::new(3, 1)
        .readings(date(2010, 1, 1), date(2010, 2, 1))
        .into_iter()
        .map(|r| meter_client::batch::QueuedReading {
            start: r.start,
            energy: register.advance(r.energy),
            interval_s: 900,
            analytics: None,
            sequence: 1,
        })
        .collect();
    let export = meter_client::espi::Export {
        meter_id: "meter-7",
        utc_offset: chrono::FixedOffset::east_opt(19_800).unwrap(),
        updated: date(2010, 2, 1).and_hms_opt(0, 0, 0).unwrap(),
    };
    let xml = meter_client::espi::feed(&export, &readings).unwrap();
    assert_eq!(xml.matches("<espi:IntervalBlock>").count(), 31);
    validate_espi(&xml);
    // A broken document is refused by the same check (the validation can fail).
    let broken = xml.replacen("<espi:value>", "<espi:valu>", 1);
    let result = std::panic::catch_unwind(|| validate_espi(&broken));
    assert!(result.is_err());
}

// ---------------------------------------------------------------------------------------------
// Released results from the utility
// ---------------------------------------------------------------------------------------------

mod fake_utility {
    use seer_proto::v1::bills_server::{Bills, BillsServer};
    use seer_proto::v1::home_results_server::{HomeResults, HomeResultsServer};
    use seer_proto::v1::{
        DailyAnomaliesResponse, DailyForecastsResponse, GetUsageSummaryRequest,
        GetUsageSummaryResponse, HomeAnomalyDay, HomeForecastHour, HomeResultsRequest,
        ListBillsRequest, ListBillsResponse, SlabEnergy, StoredBill,
    };
    use tonic::{Request, Response, Status};

    /// A utility that answers `meter-7` with the tests' token only, as the real one does.
    #[derive(Clone)]
    pub struct Fake;

    fn check<T>(request: &Request<T>, meter: &str) -> Result<(), Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {}", super::TOKEN)) {
            return Err(Status::unauthenticated("bad token"));
        }
        if meter != "meter-7" {
            return Err(Status::permission_denied("another meter"));
        }
        Ok(())
    }

    #[tonic::async_trait]
    impl Bills for Fake {
        async fn list_bills(
            &self,
            request: Request<ListBillsRequest>,
        ) -> Result<Response<ListBillsResponse>, Status> {
            check(&request, &request.get_ref().meter_id)?;
            let wh = [50_000, 1_234, 0, 0];
            let labels = ["0-50 kWh", "50-100 kWh", "100-200 kWh", "above 200 kWh"];
            Ok(Response::new(ListBillsResponse {
                bills: vec![StoredBill {
                    meter_id: "meter-7".into(),
                    period: "2024-01".into(),
                    amount_paise: 21_441,
                    closing_sequence: 31,
                    audit_sequence: 77,
                    released_at_us: 1_706_745_600_000_000,
                    slabs: labels
                        .iter()
                        .zip(wh)
                        .map(|(l, wh)| SlabEnergy {
                            label: (*l).into(),
                            wh,
                        })
                        .collect(),
                }],
            }))
        }

        async fn get_usage_summary(
            &self,
            _request: Request<GetUsageSummaryRequest>,
        ) -> Result<Response<GetUsageSummaryResponse>, Status> {
            Err(Status::unimplemented("not used"))
        }
    }

    #[tonic::async_trait]
    impl HomeResults for Fake {
        async fn daily_forecasts(
            &self,
            request: Request<HomeResultsRequest>,
        ) -> Result<Response<DailyForecastsResponse>, Status> {
            check(&request, &request.get_ref().meter_id)?;
            Ok(Response::new(DailyForecastsResponse {
                hours: (0..24)
                    .map(|h| HomeForecastHour {
                        hour: format!("2024-01-03T{h:02}:00"),
                        kwh_milli: 100 + h,
                        input_day: "2024-01-02".into(),
                        model_blake3: "ab".repeat(32),
                        audit_sequence: 50,
                    })
                    .collect(),
            }))
        }

        async fn daily_anomalies(
            &self,
            request: Request<HomeResultsRequest>,
        ) -> Result<Response<DailyAnomaliesResponse>, Status> {
            check(&request, &request.get_ref().meter_id)?;
            Ok(Response::new(DailyAnomaliesResponse {
                days: vec![HomeAnomalyDay {
                    day: "2024-01-02".into(),
                    score_milli: 912,
                    flagged: true,
                    explanation_json:
                        r#"[{"feature":"evening","text":"Evening use was far above usual."}]"#
                            .into(),
                    model_blake3: "ab".repeat(32),
                    audit_sequence: 51,
                }],
            }))
        }
    }

    /// Starts the fake on a free port; its URL.
    pub async fn start() -> String {
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(BillsServer::new(Fake))
                .add_service(HomeResultsServer::new(Fake))
                .serve_with_incoming(incoming),
        );
        format!("http://{addr}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_forecasts_anomalies_and_the_statement_come_from_the_utility() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (from, until) = (date(2024, 1, 1), date(2024, 1, 4));
    let (observer, _) = collector();
    run_with_noise(
        settings(dir.path(), &ka, None, from, until),
        seeded_noise(5),
        observer,
    )
    .await
    .unwrap();
    let readings = oracle(from, until);
    let url = fake_utility::start().await;

    let mut s = dashboard_settings(dir.path());
    s.utility = Some(meter_client::dashboard::utility::UtilityAccess {
        url: url.clone(),
        token: meter_client::grpc::BearerToken::try_new(TOKEN).unwrap(),
    });
    let state = DashboardState::open(s).await.unwrap();
    let key = state.key().expose().to_owned();
    let app = router(state);

    let (status, html, _) = get(&app, "/results", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(
        testids(&html, "bill-amount-2024-01"),
        vec!["₹214.41".to_owned()]
    );
    assert_eq!(
        testids(&html, "slab-kwh-2024-01-0"),
        vec!["50.000".to_owned()]
    );
    assert_eq!(
        testids(&html, "slab-kwh-2024-01-1"),
        vec!["1.234".to_owned()]
    );
    assert_eq!(
        testids(&html, "forecast-kwh-2024-01-03T07:00"),
        vec!["0.107".to_owned()]
    );
    // The actual hour: the four readings of 07:00–08:00 on 2024-01-03, summed.
    let hour: i64 = readings
        .iter()
        .filter(|(t, _)| t.format("%Y-%m-%dT%H").to_string() == "2024-01-03T07")
        .map(|(_, wh)| wh.get())
        .sum();
    assert_eq!(
        testids(&html, "actual-kwh-2024-01-03T07:00"),
        vec![seer_web::page::kwh(hour)]
    );
    assert_eq!(
        testids(&html, "anomaly-flag-2024-01-02"),
        vec!["flagged".to_owned()]
    );
    assert_eq!(
        testids(&html, "anomaly-why-2024-01-02"),
        vec!["Evening use was far above usual.".to_owned()]
    );
    assert!(html.contains("id=\"chart-forecast\""));

    // The statement of a released month is a PDF; of another month, not found.
    let (status, pdf, headers) = get(&app, "/statement.pdf?period=2024-01", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{pdf}");
    assert_eq!(header(&headers, "content-type"), Some("application/pdf"));
    assert!(pdf.starts_with("%PDF-"));
    let (status, _, _) = get(&app, "/statement.pdf?period=2024-02", Some(&key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&app, "/statement.pdf?period=2024-1", Some(&key)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A wrong token: the utility refuses, and the page says so.
    let mut s = dashboard_settings(dir.path());
    s.utility = Some(meter_client::dashboard::utility::UtilityAccess {
        url,
        token: meter_client::grpc::BearerToken::try_new("not-the-token").unwrap(),
    });
    let state = DashboardState::open(s).await.unwrap();
    let key = state.key().expose().to_owned();
    let (status, html, _) = get(&router(state), "/results", Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(testids(&html, "results-error").len(), 1, "{html}");
}

/// The readings of a batch are stored in the transaction that commits it: a commit refused
/// (the lane state is not at the batch's sequence) stores none of them; an accepted one all.
#[tokio::test]
async fn readings_are_stored_with_their_batch_or_not_at_all() {
    use meter_client::batch::{BuiltBatch, LaneState, QueuedReading, SealedBatch};
    use meter_client::dashboard::store::StateReader;
    use meter_client::queue::StateStore;

    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).await.unwrap();
    let t0 = date(2024, 1, 1).and_hms_opt(0, 0, 0).unwrap();
    let built = |sequence: u64| {
        let start = t0 + chrono::TimeDelta::days(i64::try_from(sequence).unwrap() - 1);
        BuiltBatch {
            batch: SealedBatch {
                sequence,
                period: "2024-01".parse().unwrap(),
                start,
                end: start + chrono::TimeDelta::days(1),
                utc_offset: chrono::FixedOffset::east_opt(0).unwrap(),
                readings: 2,
                billing_group: 0,
                billing_position: 5,
                billing_lane: vec![1; 64],
                analytics_lane: vec![9; 64],
                epsilon_spent: 0.1,
                noise: None,
            },
            next: LaneState {
                next_sequence: sequence + 1,
                ..LaneState::default()
            },
            ledger: Vec::new(),
            readings: (0..2)
                .map(|i| QueuedReading {
                    start: start + chrono::TimeDelta::minutes(15 * i),
                    energy: Wh::try_new(100 + i).unwrap(),
                    interval_s: 900,
                    analytics: Some(-7 + i),
                    sequence,
                })
                .collect(),
        }
    };
    // Sequence 2 before 1: refused, nothing stored.
    assert!(store.commit_batch(&built(2)).await.is_err());
    let reader = StateReader::open(dir.path()).await.unwrap();
    let all = |r: &StateReader| {
        let r = r.clone();
        async move {
            r.readings(t0, t0 + chrono::TimeDelta::days(10))
                .await
                .unwrap()
        }
    };
    assert!(all(&reader).await.is_empty());
    store.commit_batch(&built(1)).await.unwrap();
    let stored = all(&reader).await;
    assert_eq!(stored, built(1).readings);
    store.close().await;
}
