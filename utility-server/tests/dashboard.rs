//! The utility dashboard over real HTTP: `Application::build` on port 0 with a fresh SQLite
//! database and a test JWT key (pinned, as in production), seeded with known bills (amounts
//! worked out by hand from the test tariff), batches, daily results and group totals; log in
//! through `POST /login`, follow with the cookie, and check each view's numbers against what
//! was seeded, the CSV against the seeded rows, every role's limits, refused tokens, and a
//! live update after a new batch is stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use seer_auth::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, DEFAULT_ISSUER, Identity, JwtSigningKey,
    TokenIssuer, TokenRequest,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use utility_server::batch::{MeterId, Period};
use utility_server::store::{SlabEnergy, StoredBill};
use utility_server::{Application, Settings, Store};

const PERIOD: &str = "2026-11";

/// The test tariff: 4.00 ₹/kWh up to 50 kWh, 6.00 ₹/kWh above.
fn tariff() -> seer_core::tariff::Tariff {
    serde_json::from_value(serde_json::json!({
        "name": "test-two-slab",
        "slabs": [{ "up_to_kwh": 50.0, "rate_paise": 400 }, { "rate_paise": 600 }]
    }))
    .expect("test tariff")
}

struct TestApp {
    address: std::net::SocketAddr,
    issuer: TokenIssuer,
    store: Store,
    db_url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    async fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let key = Arc::new(JwtSigningKey::generate().expect("JWT key"));
        let pem = key.public_key_pem().expect("public key PEM");
        let key_file = dir.path().join("jwt-public.pem");
        std::fs::write(&key_file, &pem).expect("write the public key");
        let mut settings = Settings::default();
        settings.server.port = 0;
        settings.dashboard.port = 0;
        settings.dashboard.address_file = Some(dir.path().join("dashboard-address"));
        settings.dashboard.grid.default_capacity_kw = utility_server::dashboard::Kw(100.0);
        settings.tariff = tariff();
        let db_url = format!("sqlite://{}/seer.db", dir.path().display());
        settings.database.url = db_url.clone();
        settings.auth.jwt_public_key_file = Some(key_file);
        settings.auth.jwt_public_key_sha256 =
            Some(seer_auth::fingerprint::public_key_fingerprint(&pem).expect("fingerprint"));
        let app = Application::build(settings).await.expect("build");
        let url = app.dashboard_url().expect("the dashboard is on by default");
        let written = std::fs::read_to_string(dir.path().join("dashboard-address"))
            .expect("the address file");
        assert_eq!(written.trim(), url);
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let port = app.dashboard_port().expect("port");
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let store = app.store().clone();
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            issuer: TokenIssuer::new(key, DEFAULT_ISSUER),
            store,
            db_url,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    fn token(&self, identity: Identity) -> String {
        let mut request = TokenRequest::new(identity, Duration::from_secs(600));
        request.audience = vec![AUDIENCE_UTILITY_SERVER.to_owned()];
        self.issuer.issue(&request).expect("issue").token
    }

    /// Logs in with `token`; the session cookie (`name=value`) when the login succeeds.
    async fn login(&self, token: &str) -> (u16, Option<String>) {
        let body = format!("token={token}");
        let response = self.request("POST", "/login", None, Some(&body), &[]).await;
        let cookie = response
            .header("set-cookie")
            .and_then(|c| c.split(';').next().map(str::to_owned));
        if let Some(set) = response.header("set-cookie") {
            assert!(set.contains("HttpOnly"), "{set}");
            assert!(set.contains("SameSite=Strict"), "{set}");
        }
        (response.status, cookie)
    }

    async fn logged_in(&self, identity: Identity) -> String {
        let (status, cookie) = self.login(&self.token(identity)).await;
        assert_eq!(status, 303);
        cookie.expect("a session cookie")
    }

    async fn get(&self, path: &str, cookie: &str) -> Response {
        self.request("GET", path, Some(cookie), None, &[]).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut stream = TcpStream::connect(self.address).await.expect("connect");
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(cookie) = cookie {
            head.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = form.unwrap_or("");
        if form.is_some() {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("response in time")
            .expect("read");
        Response::parse(&raw)
    }

    /// Stores one batch row directly in the database, as another process would.
    async fn seed_batch(&self, meter: &str, sequence: i64, received_at_us: i64, epsilon: f64) {
        let pool = sqlx::AnyPool::connect(&self.db_url).await.expect("connect");
        sqlx::query(
            "INSERT INTO meters (meter_id, first_seen_us, last_sequence) VALUES ($1, $2, $3) \
             ON CONFLICT (meter_id) DO UPDATE SET last_sequence = $3",
        )
        .bind(meter)
        .bind(received_at_us)
        .bind(sequence)
        .execute(&pool)
        .await
        .expect("meter row");
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .expect("start")
            .timestamp_micros()
            + (sequence - 1) * 7 * 86_400_000_000;
        sqlx::query(
            "INSERT INTO batches (meter_id, sequence, period, start_us, end_us, utc_offset_s, \
             readings, billing_group, billing_position, billing_lane, analytics_lane, \
             epsilon_spent, content_digest, received_at_us) \
             VALUES ($1, $2, $3, $4, $5, 0, 672, 0, 0, $6, $7, $8, 'digest', $9)",
        )
        .bind(meter)
        .bind(sequence)
        .bind(PERIOD)
        .bind(start)
        .bind(start + 7 * 86_400_000_000)
        .bind(vec![0u8; 4])
        .bind(vec![0u8; 4])
        .bind(epsilon)
        .bind(received_at_us)
        .execute(&pool)
        .await
        .expect("batch row");
        pool.close().await;
    }

    async fn seed(&self) {
        let now = chrono::Utc::now().timestamp_micros();
        let hour = 3_600_000_000;
        // m1: two batches (ε 0.5 each), m2: one (ε 0.25), m3: one (ε 0.125).
        self.seed_batch("m1", 1, now - 3 * hour, 0.5).await;
        self.seed_batch("m1", 2, now - hour, 0.5).await;
        self.seed_batch("m2", 1, now - 2 * hour, 0.25).await;
        self.seed_batch("m3", 1, now - 2 * hour, 0.125).await;
        let period: Period = PERIOD.parse().expect("period");
        let labels = utility_server::billing::cell_labels(&tariff());
        let bill = |meter: &str, paise: i64, cells: [u64; 2], audit: u64| StoredBill {
            meter_id: MeterId::try_new(meter).expect("meter"),
            period,
            amount_paise: paise,
            closing_sequence: 1,
            audit_sequence: audit,
            released_at_us: now,
            slabs: labels
                .iter()
                .zip(cells)
                .map(|(label, wh)| SlabEnergy {
                    label: label.clone(),
                    wh,
                })
                .collect(),
        };
        // By hand: m1 = 50 kWh × 4.00 + 25.5 kWh × 6.00 = 200.00 + 153.00 = ₹353.00;
        //          m2 = 30 kWh × 4.00 = ₹120.00.
        self.store
            .record_bill(&bill("m1", 35_300, [50_000, 25_500], 7))
            .await
            .expect("bill m1");
        self.store
            .record_bill(&bill("m2", 12_000, [30_000, 0], 8))
            .await
            .expect("bill m2");
        self.store
            .record_bill_refusal("m3", period, "implausible cells")
            .await
            .expect("refusal m3");
        let pool = sqlx::AnyPool::connect(&self.db_url).await.expect("connect");
        let explanation = r#"[{"feature":"night_load","hours":[1,2,3],"usual_low":2.5,"usual_high":3.1,"text":"01:00–04:00 used 2.5–3.1× its usual energy"}]"#;
        for (meter, day, score, flagged, explanation) in [
            ("m1", "2026-11-05", 812, 1, Some(explanation)),
            ("m2", "2026-11-05", 120, 0, None),
        ] {
            sqlx::query(
                "INSERT INTO daily_anomalies (meter_id, day, model_blake3, score_milli, flagged, \
                 explanation, input_group, audit_seq, released_at_us) \
                 VALUES ($1, $2, 'model', $3, $4, $5, 0, 9, $6)",
            )
            .bind(meter)
            .bind(day)
            .bind(score)
            .bind(flagged)
            .bind(explanation)
            .bind(now)
            .execute(&pool)
            .await
            .expect("anomaly row");
        }
        // m1's released next-day forecast, two input days: the latest (2026-11-06's hours)
        // is shown.
        for (hour, milli, day) in [
            ("2026-11-06T00:00", 900, "2026-11-05"),
            ("2026-11-07T00:00", 410, "2026-11-06"),
            ("2026-11-07T01:00", 380, "2026-11-06"),
        ] {
            sqlx::query(
                "INSERT INTO daily_forecasts (meter_id, hour, model_blake3, kwh_milli, input_day, \
                 input_group, audit_seq, released_at_us) VALUES ('m1', $1, 'model', $2, $3, 0, 12, $4)",
            )
            .bind(hour)
            .bind(milli)
            .bind(day)
            .bind(now)
            .execute(&pool)
            .await
            .expect("forecast row");
        }
        // Group 0's forecast for 2026-11-06: 1.5, 2.5 and 150 kWh (over the 100 kW capacity at
        // 02:00); actual totals 1.4 and 2.6 kWh for the first two hours.
        for (hour, milli) in [("00", 1_500), ("01", 2_500), ("02", 150_000)] {
            sqlx::query(
                "INSERT INTO daily_group_forecasts (input_group, hour, model_blake3, kwh_milli, \
                 homes, input_day, audit_seq, released_at_us) \
                 VALUES (0, $1, 'model', $2, 3, '2026-11-05', 10, $3)",
            )
            .bind(format!("2026-11-06T{hour}:00"))
            .bind(milli)
            .bind(now)
            .execute(&pool)
            .await
            .expect("group forecast row");
        }
        for (hour, wh) in [("00", 1_400), ("01", 2_600)] {
            sqlx::query(
                "INSERT INTO group_totals (billing_group, hour_start, total_wh, interval_wh, \
                 min_present, epsilon, noise_scale_wh, audit_seq, released_at_us) \
                 VALUES (0, $1, $2, '', 3, 0.5, 10.0, 11, $3)",
            )
            .bind(format!("2026-11-06T{hour}:00:00Z"))
            .bind(wh)
            .bind(now)
            .execute(&pool)
            .await
            .expect("group total row");
        }
        pool.close().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Self {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The text of the element with `data-testid="id"`.
    fn testid(&self, id: &str) -> String {
        let marker = format!("data-testid=\"{id}\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no element {id} in\n{}", self.body));
        let rest = &self.body[at..];
        let start = rest.find('>').expect("element end") + 1;
        let end = rest[start..].find('<').expect("text end");
        rest[start..start + end].to_owned()
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test]
async fn the_utility_sees_every_view_with_the_seeded_numbers() {
    let app = TestApp::spawn().await;
    app.seed().await;
    let cookie = app.logged_in(Identity::Utility).await;

    let page = app.get("/", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.testid("period"), PERIOD);
    assert_eq!(page.testid("homes"), "3");
    assert_eq!(page.testid("billed-kwh"), "105.500");
    assert_eq!(page.testid("billed-amount"), "₹473.00");
    assert_eq!(page.testid("bills-released"), "2");
    assert_eq!(page.testid("bills-refused"), "1");
    assert_eq!(page.testid("anomalies-flagged"), "1");
    assert!(page.body.contains("id=\"overview-chart\""), "{}", page.body);
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");

    let page = app.get("/homes?sort=amount&dir=desc", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.testid("amount-m1"), "₹353.00");
    assert_eq!(page.testid("cell0-m1"), "50.000");
    assert_eq!(page.testid("cell1-m1"), "25.500");
    assert_eq!(page.testid("kwh-m1"), "75.500");
    assert_eq!(page.testid("epsilon-m1"), "1.000");
    assert_eq!(page.testid("anomalies-m1"), "1");
    assert_eq!(page.testid("amount-m2"), "₹120.00");
    assert_eq!(page.testid("amount-m3"), "—");
    assert_eq!(page.testid("epsilon-m3"), "0.125");
    let order: Vec<usize> = ["home-row-m1", "home-row-m2", "home-row-m3"]
        .iter()
        .map(|id| page.body.find(id).expect("row"))
        .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "amount, descending"
    );
    let page = app.get("/homes?sort=epsilon&dir=asc", &cookie).await;
    let (m3, m2) = (
        page.body.find("home-row-m3").expect("m3"),
        page.body.find("home-row-m2").expect("m2"),
    );
    assert!(m3 < m2, "ε ascending: m3 (0.125) before m2 (0.25)");
    let page = app
        .get("/homes?sort=meter&dir=asc&page=2&per_page=1", &cookie)
        .await;
    assert_eq!(page.testid("pages"), "3");
    assert!(page.body.contains("home-row-m2"));
    assert!(!page.body.contains("home-row-m1") && !page.body.contains("home-row-m3"));
    assert_eq!(app.get("/homes?sort=nope", &cookie).await.status, 400);
    assert_eq!(app.get("/homes?period=2026-13", &cookie).await.status, 400);

    let csv = app.get("/homes.csv?sort=meter", &cookie).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.header("content-type")
            .is_some_and(|t| t.starts_with("text/csv"))
    );
    let lines: Vec<&str> = csv.body.split("\r\n").collect();
    let labels = utility_server::billing::cell_labels(&tariff());
    assert_eq!(
        lines[0],
        format!(
            "meter_id,{} kWh,{} kWh,total_kwh,amount_rupees,last_batch_utc,batches,epsilon_spent,anomalies",
            labels[0], labels[1]
        )
    );
    assert!(
        lines[1].starts_with("m1,50.000,25.500,75.500,353.00,"),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(",2,1,1"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("m2,30.000,0.000,30.000,120.00,"),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with(",1,0.25,0"), "{}", lines[2]);
    assert!(lines[3].starts_with("m3,,,,,"), "{}", lines[3]);
    assert!(lines[3].ends_with(",1,0.125,0"), "{}", lines[3]);
    assert_eq!(lines[4], "");

    let page = app.get("/billing?period=2026-11", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("tariff-name"), "test-two-slab");
    assert_eq!(page.testid("slab-rate-0"), "400");
    assert_eq!(page.testid("slab-rate-1"), "600");
    assert_eq!(page.testid("billing-amount-m1"), "₹353.00");
    assert_eq!(page.testid("billing-cell1-m1"), "25.500");
    assert_eq!(page.testid("billing-kwh-m2"), "30.000");

    let page = app.get("/forecasting", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("day"), "2026-11-06");
    assert_eq!(page.testid("forecast-0-00"), "1.500");
    assert_eq!(page.testid("actual-0-00"), "1.400");
    assert_eq!(page.testid("forecast-0-02"), "150.000");
    assert_eq!(page.testid("actual-0-02"), "—");
    assert!(page.body.contains("id=\"forecast-chart-0\""));

    let page = app.get("/grid?day=2026-11-06", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("capacity-0"), "100.000");
    assert_eq!(page.testid("peak-forecast-0"), "150.000");
    assert_eq!(page.testid("peak-actual-0"), "2.600");
    assert_eq!(page.testid("over-forecast-0"), "02:00");
    assert_eq!(page.testid("over-actual-0"), "—");
    assert!(page.body.contains("over capacity"));

    let page = app.get("/anomalies", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("anomaly-count"), "1");
    assert_eq!(page.testid("anomaly-score-m1-2026-11-05"), "0.812");
    assert_eq!(
        page.testid("anomaly-explanation-m1-2026-11-05"),
        "01:00–04:00 used 2.5–3.1× its usual energy"
    );

    let page = app.get("/ingest", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("meters-seen"), "3");
    assert_eq!(page.testid("batches-total"), "4");
    assert_eq!(page.testid("batches-24h"), "4");

    let page = app.get("/homes/m1", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("bill-amount-m1-2026-11"), "₹353.00");
    assert_eq!(page.testid("bill-cell0-m1-2026-11"), "50.000");
    let pdf = app
        .get("/homes/m1/statement.pdf?period=2026-11", &cookie)
        .await;
    assert_eq!(pdf.status, 200);
    assert_eq!(pdf.header("content-type"), Some("application/pdf"));
    assert!(pdf.body.starts_with("%PDF-"));
    assert_eq!(
        app.get("/homes/m3/statement.pdf?period=2026-11", &cookie)
            .await
            .status,
        404,
        "m3 has no released bill"
    );
}

#[tokio::test]
async fn a_household_sees_its_own_home_only() {
    let app = TestApp::spawn().await;
    app.seed().await;
    let cookie = app
        .logged_in(Identity::Household {
            meter_id: "m1".into(),
        })
        .await;
    let page = app.get("/", &cookie).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/homes/m1"));
    let page = app.get("/homes/m1", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("bill-amount-m1-2026-11"), "₹353.00");
    assert_eq!(page.testid("home-forecast-00"), "0.410");
    assert_eq!(page.testid("home-forecast-01"), "0.380");
    assert_eq!(page.testid("home-flagged"), "1");
    assert!(
        page.body
            .contains("01:00–04:00 used 2.5–3.1× its usual energy")
    );
    assert_eq!(
        app.get("/homes/m1/statement.pdf?period=2026-11", &cookie)
            .await
            .status,
        200
    );
    for path in [
        "/homes/m2",
        "/homes/m3",
        "/homes/nobody",
        "/homes/m2/statement.pdf?period=2026-11",
    ] {
        let page = app.get(path, &cookie).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(
            !page.body.contains("m2") && !page.body.contains("120"),
            "{}",
            page.body
        );
    }
    let page = app.get("/homes", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("amount-m1"), "₹353.00");
    assert!(
        !page.body.contains("m2") && !page.body.contains("m3"),
        "{}",
        page.body
    );
    let csv = app.get("/homes.csv", &cookie).await;
    assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);
    assert!(csv.body.contains("\r\nm1,"));
    let page = app.get("/billing", &cookie).await;
    assert_eq!(page.testid("billing-amount-m1"), "₹353.00");
    assert!(!page.body.contains("billing-row-m2"));
    let page = app.get("/anomalies", &cookie).await;
    assert_eq!(page.testid("anomaly-count"), "1");
    for path in ["/forecasting", "/grid", "/ingest"] {
        assert_eq!(app.get(path, &cookie).await.status, 403, "{path}");
    }
}

#[tokio::test]
async fn an_auditor_sees_aggregates_only() {
    let app = TestApp::spawn().await;
    app.seed().await;
    let cookie = app.logged_in(Identity::Auditor).await;
    let page = app.get("/", &cookie).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.testid("homes"), "3");
    assert!(
        !page.body.contains("m1") && !page.body.contains("m2"),
        "{}",
        page.body
    );
    let page = app.get("/ingest", &cookie).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("m1"), "{}", page.body);
    for path in [
        "/homes",
        "/homes.csv",
        "/homes/m1",
        "/billing",
        "/forecasting",
        "/anomalies",
        "/grid",
    ] {
        let page = app.get(path, &cookie).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(!page.body.contains("353"), "{path}");
    }
}

#[tokio::test]
async fn missing_expired_wrong_audience_and_forged_tokens_are_refused() {
    let app = TestApp::spawn().await;
    app.seed().await;
    // No session: a browser goes to the login page, anything else gets 401.
    let page = app.request("GET", "/homes", None, None, &[]).await;
    assert_eq!(page.status, 401);
    assert!(!page.body.contains("m1"));
    let page = app
        .request("GET", "/homes", None, None, &[("Accept", "text/html")])
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));

    let mut expired = TokenRequest::new(Identity::Utility, Duration::from_secs(60));
    expired.audience = vec![AUDIENCE_UTILITY_SERVER.to_owned()];
    let expired = app
        .issuer
        .issue_at(&expired, SystemTime::now() - Duration::from_secs(3600))
        .expect("expired token")
        .token;
    let mut other_audience = TokenRequest::new(Identity::Utility, Duration::from_secs(600));
    other_audience.audience = vec![AUDIENCE_KEY_AUTHORITY.to_owned()];
    let other_audience = app.issuer.issue(&other_audience).expect("token").token;
    let forger = TokenIssuer::new(
        Arc::new(JwtSigningKey::generate().expect("another key")),
        DEFAULT_ISSUER,
    );
    let mut forged = TokenRequest::new(Identity::Utility, Duration::from_secs(600));
    forged.audience = vec![AUDIENCE_UTILITY_SERVER.to_owned()];
    let forged = forger.issue(&forged).expect("forged").token;
    for (name, token) in [
        ("expired", expired),
        ("wrong audience", other_audience),
        ("bad signature", forged),
        ("garbage", "not-a-jwt".to_owned()),
    ] {
        let (status, cookie) = app.login(&token).await;
        assert_eq!(status, 401, "{name}");
        assert!(cookie.is_none(), "{name}");
        // Nor does the token work when put in the cookie by hand.
        let page = app
            .get(
                "/homes",
                &format!("{}={token}", seer_web::session::COOKIE_NAME),
            )
            .await;
        assert_eq!(page.status, 401, "{name}");
        assert!(!page.body.contains("353"), "{name}");
    }
}

#[tokio::test]
async fn plaintext_is_refused_off_loopback_and_the_dashboard_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.database.url = format!("sqlite://{}/seer.db", dir.path().display());
    settings.dashboard.host = std::net::IpAddr::from([0, 0, 0, 0]);
    let error = Application::build(settings.clone())
        .await
        .expect_err("plaintext on every interface");
    assert!(format!("{error:#}").contains("without TLS"), "{error:#}");
    settings.dashboard.enabled = false;
    let app = Application::build(settings).await.expect("no dashboard");
    assert_eq!(app.dashboard_port(), None);
    assert_eq!(app.dashboard_url(), None);
}

#[tokio::test]
async fn with_server_tls_the_dashboard_speaks_https_with_the_server_certificate() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    let dir = tempfile::tempdir().expect("temporary directory");
    let pki =
        seer_tls::LocalPki::open_or_create(&dir.path().join("pki"), "dashboard-test").expect("PKI");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.server.tls = Some(pki.utility().expect("the utility's certificate"));
    settings.database.url = format!("sqlite://{}/seer.db", dir.path().display());
    let app = Application::build(settings).await.expect("build");
    let url = app.dashboard_url().expect("url");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], app.dashboard_port().expect("port")));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    // The deployment CA as the only root, and no client certificate (browsers hold none).
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(pki.ca_file()).expect("CA file") {
        roots
            .add(certificate.expect("CA certificate"))
            .expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.expect("connect");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("a TLS handshake without a client certificate");
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw)).await;
    let response = Response::parse(&raw);
    assert_eq!(response.status, 200);
    assert!(response.body.contains("login-form"), "{}", response.body);

    // Plain HTTP on the TLS port gets no page.
    let mut plain = TcpStream::connect(address).await.expect("connect");
    plain
        .write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("login-form"));
    let _ = stop.send(());
    server.abort();
}

#[tokio::test]
async fn a_stored_batch_reaches_open_pages_as_an_event() {
    let app = TestApp::spawn().await;
    app.seed().await;
    let cookie = app.logged_in(Identity::Utility).await;
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    stream
        .write_all(
            format!(
                "GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\
                 Cookie: {cookie}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    // The response head first.
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("head in time")
            .expect("read");
        assert!(n > 0, "closed");
        seen.extend_from_slice(&buffer[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    // Let the poller take its baseline, then store a batch as another process would.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored_at = std::time::Instant::now();
    app.seed_batch("m4", 1, chrono::Utc::now().timestamp_micros(), 0.5)
        .await;
    let deadline = Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout(deadline, stream.read(&mut buffer))
            .await
            .expect("an event within 5 s")
            .expect("read");
        assert!(n > 0, "closed");
        seen.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&seen).contains("event: changed") {
            break;
        }
    }
    eprintln!("event after {:?}", stored_at.elapsed());
    let page = app.get("/ingest", &cookie).await;
    assert_eq!(page.testid("meters-seen"), "4");
}

/// The homes page with 1,000 homes: each with a month of daily batches (30; small lanes — the
/// dashboard's reads never touch the ciphertext columns, covering indexes keep them off the
/// rows), a released bill over the default (BESCOM) tariff's cells and 30 daily anomaly
/// results. Measures the whole request (login cookie check, one count and one aggregating
/// query, rendering, HTTP) and prints the median of 20 for the default page (50 rows, sorted
/// by amount), the last page, the full CSV and the overview.
///
/// `cargo test --release -p utility-server --test dashboard -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about a minute): run it with --ignored to record the figure in BENCHMARKS.md"]
async fn homes_page_with_1000_homes_renders_in_well_under_300_ms() {
    const HOMES: i64 = 1_000;
    const DAYS: i64 = 30;
    let dir = tempfile::tempdir().expect("temporary directory");
    let key = Arc::new(JwtSigningKey::generate().expect("JWT key"));
    let pem = key.public_key_pem().expect("public key PEM");
    let key_file = dir.path().join("jwt-public.pem");
    std::fs::write(&key_file, &pem).expect("write the public key");
    let mut settings = Settings::default();
    settings.server.port = 0;
    let db_url = format!("sqlite://{}/seer.db", dir.path().display());
    settings.database.url = db_url.clone();
    settings.auth.jwt_public_key_file = Some(key_file);
    settings.auth.jwt_public_key_sha256 =
        Some(seer_auth::fingerprint::public_key_fingerprint(&pem).expect("fingerprint"));
    let labels = utility_server::billing::cell_labels(&settings.tariff);
    let app = Application::build(settings).await.expect("build");
    let port = app.dashboard_port().expect("port");
    let store = app.store().clone();
    let seeded = std::time::Instant::now();
    {
        let pool = sqlx::AnyPool::connect(&db_url).await.expect("connect");
        let mut tx = pool.begin().await.expect("transaction");
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .expect("start")
            .timestamp_micros();
        let day_us = 86_400_000_000_i64;
        let lane = vec![0x5Au8; 1024];
        for home in 0..HOMES {
            let meter = format!("home-{home:04}");
            sqlx::query(
                "INSERT INTO meters (meter_id, first_seen_us, last_sequence) VALUES ($1, $2, $3)",
            )
            .bind(&meter)
            .bind(start)
            .bind(DAYS)
            .execute(&mut *tx)
            .await
            .expect("meter");
            for day in 0..DAYS {
                let from = start + day * day_us;
                sqlx::query(
                    "INSERT INTO batches (meter_id, sequence, period, start_us, end_us, \
                     utc_offset_s, readings, billing_group, billing_position, billing_lane, \
                     analytics_lane, epsilon_spent, content_digest, received_at_us) \
                     VALUES ($1, $2, '2026-11', $3, $4, 0, 96, $5, $6, $7, $8, 0.05, 'd', $9)",
                )
                .bind(&meter)
                .bind(day + 1)
                .bind(from)
                .bind(from + day_us)
                .bind(home / 100)
                .bind(home % 100)
                .bind(lane.clone())
                .bind(lane.clone())
                .bind(from + day_us + home)
                .execute(&mut *tx)
                .await
                .expect("batch");
                sqlx::query(
                    "INSERT INTO daily_anomalies (meter_id, day, model_blake3, score_milli, \
                     flagged, explanation, input_group, audit_seq, released_at_us) \
                     VALUES ($1, $2, 'model', 100, $3, NULL, 0, 1, 0)",
                )
                .bind(&meter)
                .bind(format!("2026-11-{:02}", day + 1))
                .bind(i64::from((home + day) % 17 == 0))
                .execute(&mut *tx)
                .await
                .expect("anomaly");
            }
            sqlx::query(
                "INSERT INTO bills (meter_id, period, amount_paise, closing_sequence, \
                 audit_sequence, released_at_us) VALUES ($1, '2026-11', $2, $3, $4, 0)",
            )
            .bind(&meter)
            .bind(10_000 + home * 37 % 90_000)
            .bind(DAYS)
            .bind(home + 1)
            .execute(&mut *tx)
            .await
            .expect("bill");
            for (cell, label) in labels.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO bill_cells (meter_id, period, cell, label, wh) \
                     VALUES ($1, '2026-11', $2, $3, $4)",
                )
                .bind(&meter)
                .bind(cell as i64)
                .bind(label)
                .bind((home * 13 + cell as i64 * 1_000) % 50_000)
                .execute(&mut *tx)
                .await
                .expect("cell");
            }
        }
        tx.commit().await.expect("commit");
        pool.close().await;
    }
    eprintln!(
        "seeded {HOMES} homes × {DAYS} batches in {:?}",
        seeded.elapsed()
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let harness = TestApp {
        address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        issuer: TokenIssuer::new(key, DEFAULT_ISSUER),
        store,
        db_url,
        stop: Some(stop),
        server: Some(server),
        _dir: dir,
    };
    let cookie = harness.logged_in(Identity::Utility).await;
    let mut medians = Vec::new();
    for path in [
        "/homes?sort=amount&dir=desc",
        "/homes?sort=meter&page=20&per_page=50",
        "/homes?sort=anomalies&dir=desc&per_page=500",
        "/homes.csv?sort=kwh",
        "/",
    ] {
        // One warm-up request, then 20 measured.
        let page = harness.get(path, &cookie).await;
        assert_eq!(page.status, 200, "{path}");
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = std::time::Instant::now();
            let page = harness.get(path, &cookie).await;
            times.push(started.elapsed());
            assert_eq!(page.status, 200, "{path}");
        }
        times.sort();
        let median = (times[9] + times[10]) / 2;
        eprintln!(
            "{path}: median {:.1} ms (min {:.1}, max {:.1}) over 20",
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[19].as_secs_f64() * 1e3
        );
        medians.push((path, median));
    }
    let page = harness.get("/homes?sort=meter", &cookie).await;
    assert_eq!(page.testid("home-count"), HOMES.to_string());
    assert_eq!(page.testid("pages"), "20");
    for (path, median) in medians {
        if path.starts_with("/homes?") {
            assert!(
                median < Duration::from_millis(300),
                "{path}: {median:?} is not under 300 ms"
            );
        }
    }
}
