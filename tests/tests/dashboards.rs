//! The dashboards in a real browser: headless Chromium (Debian's, through chromedriver)
//! against the programs started as separate processes over TLS.
//!
//! Three synthetic homes stream January 2024 into a deployment; the month is billed by the key
//! authority; each billing group's hourly totals are released. Then, in Chromium:
//! - the utility logs in and every view loads; the amounts shown equal the released bills and
//!   the plaintext tariff computed here on the same readings; the CSV export holds every home;
//! - a fourth home is billed while the homes page is open: the page shows the new bill
//!   without a reload (server-sent events), and the delay is printed;
//! - a household logs in and sees its own home, never another's; an auditor, an expired
//!   token, a token of a foreign key and a tampered token are refused;
//! - the household's own dashboard (`meter-client dashboard` on its state directory) shows its
//!   readings, the ε preview changes when the control moves, and the battery what-if answers.
//!
//! Screenshots go to `SEER_SCREENSHOTS` (the README's `docs/screenshots/`) or
//! `target/screenshots/`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use seer_core::tariff::Tariff;
use seer_tests::browser::Browser;
use seer_tests::deployment::{Deployment, DeploymentOptions};
use seer_tests::oracle::{monthly_bills, readings};
use seer_tests::{bin_path, runtime};
use seer_tls::PartyKind;

const PERIOD: &str = "2024-01";
const HOMES: [(&str, &str); 3] = [
    ("dash-0", "synthetic:41:0"),
    ("dash-1", "synthetic:41:1"),
    ("dash-2", "synthetic:41:2"),
];
/// The household's own tariff for the battery what-if: BESCOM's slabs, dearer in the evening
/// peak and cheaper at night.
const TOU_TARIFF: &str = r#"
name = "BESCOM with time of use"
[[slabs]]
up_to_kwh = 50.0
rate_paise = 415
[[slabs]]
up_to_kwh = 100.0
rate_paise = 560
[[slabs]]
up_to_kwh = 200.0
rate_paise = 715
[[slabs]]
rate_paise = 820
[[bands]]
name = "peak"
hours = ["18:00-22:00"]
rate_percent = 120
[[bands]]
name = "night"
hours = ["22:00-06:00"]
rate_percent = 80
"#;

/// Billed while the homes page is open.
const LATE_HOME: (&str, &str) = ("dash-3", "synthetic:41:3");

/// The committed daily model, by absolute path.
fn daily_model() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../daily/models/uci-daily.json")
        .canonicalize()
        .expect("the daily model")
        .display()
        .to_string()
}

fn from_until() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"),
        NaiveDate::from_ymd_opt(2024, 2, 1).expect("date"),
    )
}

/// The plaintext bill of `source`'s January, in paise (the independent oracle).
fn plaintext_paise(source: &str) -> i64 {
    let (from, until) = from_until();
    let stream = readings(source, Some(from), Some(until)).expect("readings");
    let bills = monthly_bills(&Tariff::bescom(), stream.readings()).expect("bills");
    bills.values().next().expect("one month").paise
}

/// `₹1,234.56` → 123456.
fn paise_of(text: &str) -> i64 {
    let digits: String = text
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    let (rupees, paise) = digits.split_once('.').expect("an amount with paise");
    rupees.parse::<i64>().expect("rupees") * 100 + paise.parse::<i64>().expect("paise")
}

fn run_meter(deployment: &Deployment, meter: &str, source: &str, index: usize) {
    let (from, until) = from_until();
    let token = deployment.token("household", Some(meter)).expect("token");
    deployment
        .meter(meter, source)
        .token(&token)
        .args(["--from", &from.to_string(), "--until", &until.to_string()])
        .args(["--home-index", &index.to_string(), "--batch-days", "7"])
        // The noise group is the billing group of this test: four homes, one tolerated
        // absent (the late home joins after the group's totals are released).
        .args(["--noise-group-size", "4", "--noise-tolerated", "1"])
        .run()
        .expect("the meter streams its month");
}

fn main_text(browser: &Browser, runtime: &tokio::runtime::Runtime) -> String {
    runtime.block_on(browser.page_text()).expect("page text")
}

#[test]
fn dashboards_in_a_browser() {
    let runtime = runtime().expect("runtime");
    // The key authority registers the daily model by its absolute path (the test runs in
    // tests/).
    let deployment = Deployment::start_with_authority_env(
        &DeploymentOptions::default(),
        &[(
            "SEER_KEY_AUTHORITY__ANALYTICS__DAILY_MODELS".to_owned(),
            format!("[{:?}]", daily_model()),
        )],
    )
    .expect("deployment");
    for (index, (meter, source)) in HOMES.iter().enumerate() {
        run_meter(&deployment, meter, source, index);
    }
    let utility_token = deployment.token("utility", None).expect("token");
    let report = deployment.bill(PERIOD, 0, &utility_token).expect("bill");
    let released: BTreeMap<String, i64> = report["released"]
        .as_array()
        .expect("released bills")
        .iter()
        .map(|bill| {
            (
                bill["meter_id"].as_str().expect("meter").to_owned(),
                bill["amount_paise"].as_i64().expect("paise"),
            )
        })
        .collect();
    assert_eq!(released.len(), HOMES.len(), "{report}");
    let slabs_wh: BTreeMap<String, Vec<i64>> = report["released"]
        .as_array()
        .expect("released bills")
        .iter()
        .map(|bill| {
            (
                bill["meter_id"].as_str().expect("meter").to_owned(),
                bill["kwh_per_slab"]
                    .as_array()
                    .expect("kWh per slab")
                    .iter()
                    .map(|slab| slab["wh"].as_i64().expect("Wh"))
                    .collect(),
            )
        })
        .collect();
    for (meter, source) in HOMES {
        assert_eq!(released[meter], plaintext_paise(source), "{meter}");
    }

    let (forecast_day, group_forecast) = daily_lane_and_group_totals(&deployment, &utility_token);

    let dashboard = deployment.utility_dashboard().expect("dashboard address");
    let utility_cert = seer_tests::pki::files(PartyKind::Utility, "utility")
        .expect("utility certificate")
        .cert_file;
    let browser = runtime
        .block_on(Browser::start(&[&utility_cert]))
        .expect("headless Chromium starts");

    // The utility: every view, the numbers against the releases.
    let landed = runtime
        .block_on(browser.login(&dashboard, &utility_token))
        .expect("login");
    assert!(!landed.contains("/login"), "login failed: {landed}");
    assert_eq!(
        runtime.block_on(browser.text("homes")).expect("home count"),
        HOMES.len().to_string()
    );
    assert_eq!(
        runtime
            .block_on(browser.text("bills-released"))
            .expect("bills released"),
        HOMES.len().to_string()
    );
    let billed = runtime
        .block_on(browser.text("billed-amount"))
        .expect("amount billed");
    assert_eq!(
        paise_of(&billed),
        released.values().sum::<i64>(),
        "{billed}"
    );
    runtime
        .block_on(browser.screenshot("utility-overview"))
        .expect("shot");
    // The session cookie is HttpOnly: no script on the page can read it.
    let cookies = runtime
        .block_on(browser.script("return document.cookie;", vec![]))
        .expect("script");
    assert!(
        !cookies.as_str().unwrap_or("").contains("seer_session"),
        "{cookies}"
    );

    runtime
        .block_on(browser.open(&format!("{dashboard}/homes")))
        .expect("homes");
    for (meter, _) in HOMES {
        let shown = runtime
            .block_on(browser.text(&format!("amount-{meter}")))
            .expect("amount");
        assert_eq!(paise_of(&shown), released[meter], "{meter}: {shown}");
    }
    runtime
        .block_on(browser.screenshot("utility-homes"))
        .expect("shot");
    // The CSV export, fetched by the page's own session.
    let csv = runtime
        .block_on(browser.script(
            "return fetch('/homes.csv', {credentials: 'same-origin'}).then(r => r.text());",
            vec![],
        ))
        .expect("csv");
    let csv = csv.as_str().expect("text");
    for (meter, _) in HOMES {
        assert!(
            csv.lines().any(|l| l.starts_with(meter)),
            "{meter} missing: {csv}"
        );
    }

    runtime
        .block_on(browser.open(&format!("{dashboard}/billing?period={PERIOD}")))
        .expect("billing");
    for (meter, _) in HOMES {
        let shown = runtime
            .block_on(browser.text(&format!("billing-amount-{meter}")))
            .expect("billing amount");
        assert_eq!(paise_of(&shown), released[meter], "{meter}: {shown}");
    }
    runtime
        .block_on(browser.screenshot("utility-billing"))
        .expect("shot");
    // The group's released forecast total, hour by hour, and the released actual beside it.
    runtime
        .block_on(browser.open(&format!("{dashboard}/forecasting?day={forecast_day}")))
        .expect("forecasting");
    for (hour, kwh) in &group_forecast {
        let shown = runtime
            .block_on(browser.text(&format!("forecast-0-{hour:02}")))
            .expect("forecast hour");
        let shown: f64 = shown.parse().unwrap_or_else(|_| panic!("{hour}: {shown}"));
        assert!(
            (shown - kwh).abs() < 5e-4,
            "{hour}: shown {shown}, released {kwh}"
        );
    }
    let actual = runtime
        .block_on(browser.text("actual-0-12"))
        .expect("actual at noon");
    assert!(
        actual.parse::<f64>().is_ok(),
        "no released actual at noon: {actual}"
    );
    runtime
        .block_on(browser.screenshot("utility-forecasting"))
        .expect("shot");
    for (path, shot) in [
        ("/anomalies", "utility-anomalies"),
        ("/grid", "utility-grid"),
        ("/ingest", "utility-ingest"),
    ] {
        runtime
            .block_on(browser.open(&format!("{dashboard}{path}")))
            .unwrap_or_else(|e| panic!("{path}: {e:#}"));
        let text = main_text(&browser, &runtime);
        assert!(!text.contains("Forbidden"), "{path}: {text}");
        runtime.block_on(browser.screenshot(shot)).expect("shot");
    }

    // A release while the homes page is open reaches it without a reload.
    run_meter(&deployment, LATE_HOME.0, LATE_HOME.1, HOMES.len());
    runtime
        .block_on(browser.open(&format!("{dashboard}/homes")))
        .expect("homes");
    let started = Instant::now();
    let late = deployment
        .bill(PERIOD, 0, &utility_token)
        .expect("bill the late home");
    let billed = Instant::now();
    let late_paise = late["released"]
        .as_array()
        .and_then(|bills| bills.iter().find(|b| b["meter_id"] == LATE_HOME.0))
        .and_then(|bill| bill["amount_paise"].as_i64())
        .unwrap_or_else(|| panic!("the late home is released: {late}"));
    assert_eq!(late_paise, plaintext_paise(LATE_HOME.1));
    let id = format!("amount-{}", LATE_HOME.0);
    let shown = loop {
        if let Ok(text) = runtime.block_on(browser.text(&id))
            && text.contains('.')
        {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the new bill never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let shown_at = Instant::now();
    assert_eq!(paise_of(&shown), late_paise);
    eprintln!(
        "dashboards: the bill command took {:.0} ms; the open page showed the release {:.0} ms after it returned",
        (billed - started).as_secs_f64() * 1e3,
        shown_at.saturating_duration_since(billed).as_secs_f64() * 1e3
    );

    // The utility's statements for the whole group: one PDF per home with a released bill,
    // each holding that home's released amount.
    let out = deployment.dir().join("statements");
    let output = deployment
        .utility_cli(
            &[
                "statements",
                "--period",
                PERIOD,
                "--group",
                "0",
                "--out",
                &out.display().to_string(),
            ],
            &utility_token,
        )
        .expect("utility-server statements");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let written = written["written"].as_array().expect("written");
    assert_eq!(written.len(), HOMES.len() + 1, "{written:?}");
    for statement in written {
        let meter = statement["meter_id"].as_str().expect("meter");
        let paise = if meter == LATE_HOME.0 {
            late_paise
        } else {
            released[meter]
        };
        let file = std::path::Path::new(statement["file"].as_str().expect("file"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(file)
                .expect("statement file")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{} is readable by others", file.display());
        let text = pdf_text(file);
        assert!(text.contains(&indian(paise)), "{meter}: {text}");
        assert!(text.contains(meter), "{meter}: {text}");
    }

    // A household: its own home only.
    let (own, _) = HOMES[0];
    let (other, _) = HOMES[1];
    let household = deployment.token("household", Some(own)).expect("token");
    runtime
        .block_on(browser.client().delete_all_cookies())
        .expect("log out");
    let landed = runtime
        .block_on(browser.login(&dashboard, &household))
        .expect("household login");
    assert!(
        !landed.contains("/login"),
        "{landed}: {}",
        main_text(&browser, &runtime)
    );
    runtime
        .block_on(browser.open(&format!("{dashboard}/homes/{own}")))
        .expect("own home");
    let text = main_text(&browser, &runtime);
    assert!(text.contains(own) && !text.contains("Forbidden"), "{text}");
    runtime
        .block_on(browser.screenshot("utility-household-home"))
        .expect("shot");
    statement_text_holds_the_bill(
        &runtime,
        &browser,
        &dashboard,
        own,
        released[own],
        &slabs_wh[own],
    );
    runtime
        .block_on(browser.open(&format!("{dashboard}/homes/{other}")))
        .expect("other home");
    let text = main_text(&browser, &runtime);
    assert!(text.contains("Forbidden"), "{text}");
    assert!(!text.contains(other) || text.contains("own home"), "{text}");
    runtime
        .block_on(browser.open(&format!("{dashboard}/homes")))
        .expect("homes as household");
    let text = main_text(&browser, &runtime);
    for (meter, _) in &HOMES[1..] {
        assert!(!text.contains(meter), "a household sees {meter}: {text}");
    }

    // Refused tokens: never a page of data.
    runtime
        .block_on(browser.client().delete_all_cookies())
        .expect("log out");
    let auditor = deployment.token("auditor", None).expect("token");
    let mut tampered = utility_token.clone();
    let last = tampered.pop().expect("a token");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let foreign = seer_tests::deployment::issue_token(
        tempfile::tempdir().expect("dir").path(),
        "utility",
        None,
    )
    .expect("a token of another key");
    // Signed with the deployment's own key, but expired an hour ago (past any leeway).
    let expired = {
        let key = seer_auth::JwtSigningKey::load(&deployment.dir().join("ka/jwt.pem"))
            .expect("the deployment's signing key");
        let issuer =
            seer_auth::TokenIssuer::new(std::sync::Arc::new(key), seer_auth::DEFAULT_ISSUER);
        let mut request = seer_auth::TokenRequest::new(
            seer_auth::Identity::try_new(seer_auth::Role::Utility, None).expect("identity"),
            Duration::from_secs(3600),
        );
        request.audience = vec![seer_auth::AUDIENCE_UTILITY_SERVER.to_owned()];
        issuer
            .issue_at(
                &request,
                std::time::SystemTime::now() - Duration::from_secs(7200),
            )
            .expect("token")
            .token
    };
    for (name, token) in [
        ("tampered", tampered.as_str()),
        ("foreign", foreign.as_str()),
        ("expired", expired.as_str()),
    ] {
        let landed = runtime
            .block_on(browser.login(&dashboard, token))
            .expect("login form");
        let error = runtime.block_on(browser.text("login-error"));
        assert!(error.is_ok(), "{name} token: no refusal shown at {landed}");
        runtime
            .block_on(browser.open(&format!("{dashboard}/homes")))
            .expect("homes");
        let text = main_text(&browser, &runtime);
        for (meter, _) in HOMES {
            assert!(!text.contains(meter), "{name} token saw {meter}: {text}");
        }
    }
    runtime
        .block_on(browser.screenshot("utility-login-refused"))
        .expect("shot");

    // An auditor sees the counts that name no home, and is refused every page that does.
    let landed = runtime
        .block_on(browser.login(&dashboard, &auditor))
        .expect("auditor login");
    assert!(
        !landed.contains("/login"),
        "{landed}: {}",
        main_text(&browser, &runtime)
    );
    assert_eq!(
        runtime
            .block_on(browser.text("bills-released"))
            .expect("counts"),
        (HOMES.len() + 1).to_string()
    );
    for path in ["/homes", "/billing", "/anomalies", "/forecasting", "/grid"] {
        runtime
            .block_on(browser.open(&format!("{dashboard}{path}")))
            .expect("page");
        let text = main_text(&browser, &runtime);
        assert!(text.contains("Forbidden"), "auditor opened {path}: {text}");
        for (meter, _) in HOMES {
            assert!(!text.contains(meter), "auditor saw {meter} on {path}");
        }
    }
    runtime
        .block_on(browser.client().delete_all_cookies())
        .expect("log out");

    household_dashboard(&deployment, &runtime, &browser, own, released[own]);
    auditor_view(
        &deployment,
        &runtime,
        &browser,
        &auditor,
        released.len() + 1,
    );
    runtime.block_on(browser.close()).expect("close");
}

/// The daily lane for the homes' 29th and 30th of January (each with 28 days of history), the
/// utility's `daily` job, and the group's hourly totals of the last window released: returns
/// the forecast day (the 31st) and the group forecast total the key authority released for
/// each of its hours.
fn daily_lane_and_group_totals(
    deployment: &Deployment,
    utility: &str,
) -> (String, BTreeMap<u32, f64>) {
    let model = daily_model();
    for (index, (meter, source)) in HOMES.iter().enumerate() {
        let token = deployment.token("household", Some(meter)).expect("token");
        let state = deployment.dir().join(format!("meter-{meter}"));
        let output = Command::new(bin_path("meter-client").expect("meter-client"))
            .args(["daily", "--meter-id", meter, "--source", source])
            .args(["--home-index", &index.to_string()])
            .args([
                "--from",
                "2024-01-29",
                "--through",
                "2024-01-30",
                "--model",
                &model,
            ])
            .args(["--utility", &deployment.utility().uri()])
            .args(["--key-authority", &deployment.authority().uri()])
            .arg("--state")
            .arg(&state)
            .env("SEER_METER_TOKEN", token)
            .envs(deployment.meter_env(meter).expect("certificate"))
            .env("RUST_LOG", "warn")
            .output()
            .expect("meter-client daily runs");
        assert!(
            output.status.success(),
            "meter-client daily for {meter}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let key_cache = deployment.dir().join("daily-keys").display().to_string();
    let json = |args: &[&str]| -> serde_json::Value {
        let output = deployment
            .utility_cli(args, utility)
            .expect("utility-server runs");
        assert!(
            output.status.success(),
            "utility-server {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    };
    let ka = deployment.authority().uri();
    let report = json(&[
        "daily",
        "--model",
        &model,
        "--key-authority",
        &ka,
        "--key-cache",
        &key_cache,
    ]);
    assert_eq!(
        report["group_forecasts_released"].as_u64(),
        Some(2),
        "{report}"
    );
    json(&[
        "group-totals",
        "--group",
        "0",
        "--window",
        "2024-01-29T00:00:00+00:00",
        "--per-interval",
        "--key-authority",
        &ka,
    ]);
    let results = json(&["daily-results", "--day", "2024-01-30"]);
    let mut hours = BTreeMap::new();
    let mut day = None;
    for row in results["group_forecasts"]
        .as_array()
        .expect("group forecasts")
    {
        let hour = row["hour"].as_str().expect("hour");
        day.get_or_insert_with(|| hour[..10].to_owned());
        hours.insert(
            hour[11..13].parse::<u32>().expect("hour of day"),
            row["kwh"].as_f64().expect("kWh"),
        );
    }
    assert_eq!(hours.len(), 24, "{results}");
    (day.expect("a forecast day"), hours)
}

/// `seer audit serve` on the auditor's side: the chain verifies from the key authority's
/// public key alone, and every released bill is a granted `bill` entry.
fn auditor_view(
    deployment: &Deployment,
    runtime: &tokio::runtime::Runtime,
    browser: &Browser,
    auditor_token: &str,
    bills: usize,
) {
    let mut child = Command::new(bin_path("seer").expect("seer"))
        .args([
            "audit",
            "serve",
            "--key-authority",
            &deployment.authority().uri(),
        ])
        .args(["--token", auditor_token, "--public-key"])
        .arg(deployment.dir().join("ka-jwt-public.pem"))
        .args([
            "--public-key-sha256",
            &deployment.fingerprints().jwt_public_key_sha256,
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(seer_tests::pki::auditor_env("dashboards").expect("auditor certificate"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("seer audit serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("listening on ").map(str::to_owned))
        .expect("seer audit serve prints its address");
    runtime
        .block_on(browser.open(&url))
        .expect("the audit view");
    let verdict = runtime
        .block_on(browser.wait_for("[data-testid=\"audit-verdict\"]"))
        .expect("a verdict");
    let verified = runtime
        .block_on(verdict.attr("data-verified"))
        .expect("attribute");
    assert_eq!(
        verified.as_deref(),
        Some("true"),
        "{}",
        main_text(browser, runtime)
    );
    runtime
        .block_on(browser.open(&format!("{url}/?kind=bill&outcome=granted")))
        .expect("filtered");
    let granted = runtime
        .block_on(browser.client().find_all(fantoccini::Locator::Css(
            "[data-testid^=\"audit-entry-\"][data-outcome=\"granted\"]",
        )))
        .expect("rows");
    assert_eq!(granted.len(), bills, "{}", main_text(browser, runtime));
    runtime
        .block_on(browser.screenshot("auditor-log"))
        .expect("shot");
    let _ = child.kill();
    let _ = child.wait();
}

/// The text of a PDF, as `pdftotext -layout` extracts it.
fn pdf_text(file: &std::path::Path) -> String {
    let output = Command::new("pdftotext")
        .args(["-layout"])
        .arg(file)
        .arg("-")
        .output()
        .expect("pdftotext (scripts/test-tools.sh installs poppler-utils)");
    assert!(
        output.status.success(),
        "pdftotext failed on {}",
        file.display()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `1,23,456.78` for 12345678 paise (the statement's Indian digit grouping).
fn indian(paise: i64) -> String {
    let rupees = (paise / 100).to_string();
    let grouped = if rupees.len() <= 3 {
        rupees
    } else {
        let (head, tail) = rupees.split_at(rupees.len() - 3);
        let mut groups: Vec<String> = head
            .as_bytes()
            .rchunks(2)
            .map(|c| String::from_utf8(c.to_vec()).expect("digits"))
            .collect();
        groups.reverse();
        format!("{},{tail}", groups.join(","))
    };
    format!("{grouped}.{:02}", paise % 100)
}

/// The household's statement PDF, downloaded by its logged-in page and read back with
/// `pdftotext`: the released amount and each slab's kWh are in its text.
fn statement_text_holds_the_bill(
    runtime: &tokio::runtime::Runtime,
    browser: &Browser,
    dashboard: &str,
    meter: &str,
    paise: i64,
    slabs_wh: &[i64],
) {
    use base64::Engine as _;
    let url = format!("{dashboard}/homes/{meter}/statement.pdf?period={PERIOD}");
    let encoded = runtime
        .block_on(browser.script(
            "return fetch(arguments[0], {credentials: 'same-origin'}).then(r => { \
               if (!r.ok) throw new Error('HTTP ' + r.status); return r.arrayBuffer(); }) \
             .then(b => { let s = ''; new Uint8Array(b).forEach(x => s += String.fromCharCode(x)); \
               return btoa(s); });",
            vec![serde_json::Value::String(url)],
        ))
        .expect("the statement downloads");
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_str().expect("base64"))
        .expect("base64");
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("statement.pdf");
    std::fs::write(&file, &pdf).expect("write");
    let text = pdf_text(&file);
    assert!(
        text.contains(&indian(paise)),
        "{} missing from:\n{text}",
        indian(paise)
    );
    for wh in slabs_wh {
        let kwh = format!("{}.{:03}", wh / 1000, wh % 1000);
        assert!(text.contains(&kwh), "{kwh} kWh missing from:\n{text}");
    }
}

/// `meter-client dashboard` on the first home's state directory, reading its released
/// results from the utility with the household's own token and certificate.
fn household_dashboard(
    deployment: &Deployment,
    runtime: &tokio::runtime::Runtime,
    browser: &Browser,
    meter: &str,
    released_paise: i64,
) {
    let state = deployment.dir().join(format!("meter-{meter}"));
    let token = deployment.token("household", Some(meter)).expect("token");
    // The battery what-if bills with the household's own tariff: here the BESCOM slabs with
    // time-of-use bands, so that shifting load pays.
    let tariff_file = deployment.dir().join("tou-tariff.toml");
    std::fs::write(&tariff_file, TOU_TARIFF).expect("tariff file");
    let mut child: Child = Command::new(bin_path("meter-client").expect("meter-client"))
        .args(["dashboard", "--state"])
        .arg(&state)
        .arg("--tariff")
        .arg(&tariff_file)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--utility",
            &deployment.utility().uri(),
        ])
        .envs(deployment.meter_env(meter).expect("meter environment"))
        .env("SEER_METER_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meter-client dashboard starts");
    // It prints the address to open (with its access key) on stderr.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("http://127.0.0.1:"))
                .map(str::to_owned)
        })
        .expect("the dashboard prints its address");
    std::thread::spawn(move || lines.for_each(drop));
    let base = url.split("/?").next().expect("base").to_owned();

    // Without the access key: nothing.
    runtime
        .block_on(browser.client().delete_all_cookies())
        .expect("no cookies");
    runtime
        .block_on(browser.client().goto(&format!("{base}/results")))
        .expect("open");
    let text = main_text(browser, runtime);
    assert!(!text.contains(meter), "without the key: {text}");

    // Readings, and the ε preview moving with the control.
    runtime
        .block_on(browser.open(&url))
        .expect("household dashboard");
    let text = main_text(browser, runtime);
    assert!(text.contains(meter), "{text}");
    runtime
        .block_on(browser.text("latest-wh"))
        .expect("the latest reading");
    let before = runtime
        .block_on(browser.text("preview-scale"))
        .unwrap_or_default();
    let slider_range = runtime
        .block_on(browser.script(
            "var s = document.getElementById('epsilon'); return [s.min, s.max];",
            vec![],
        ))
        .expect("the ε control");
    let max = slider_range[1].as_str().expect("max").to_owned();
    runtime
        .block_on(browser.script(
            "var s = document.getElementById('epsilon'); s.value = arguments[0]; \
             s.dispatchEvent(new Event('input', {bubbles: true}));",
            vec![serde_json::Value::String(max.clone())],
        ))
        .expect("moving the ε control");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = runtime
            .block_on(browser.text("preview-scale"))
            .unwrap_or_default();
        if !now.is_empty() && now != before {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the preview did not change from {before}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The Laplace scale is Δ/ε: a larger ε, a smaller scale.
    let number = |t: &str| t.trim().parse::<f64>().unwrap_or(f64::NAN);
    if !before.is_empty() {
        assert!(
            number(&after) < number(&before),
            "scale {before} -> {after} at ε {max}"
        );
    }
    let shown_epsilon = runtime
        .block_on(browser.text("preview-epsilon"))
        .expect("ε shown");
    assert!(
        (number(&shown_epsilon) - number(&max)).abs() < 1e-3,
        "{shown_epsilon} vs {max}"
    );
    runtime
        .block_on(browser.screenshot("household-readings"))
        .expect("shot");

    // The released bill, read from the utility with the household's token.
    runtime
        .block_on(browser.open(&format!("{base}/results")))
        .expect("results");
    let shown = runtime
        .block_on(browser.text(&format!("bill-amount-{PERIOD}")))
        .expect("the released bill");
    assert_eq!(paise_of(&shown), released_paise, "{shown}");
    runtime
        .block_on(browser.screenshot("household-results"))
        .expect("shot");

    // The battery what-if: without the battery it is the plaintext time-of-use bill of the
    // home's readings to the paisa; with one, cheaper.
    runtime
        .block_on(browser.open(&format!(
            "{base}/battery?capacity=5&power=2&efficiency=90&period={PERIOD}"
        )))
        .expect("battery");
    let without = runtime
        .block_on(browser.text("bill-without"))
        .expect("without");
    let with = runtime.block_on(browser.text("bill-with")).expect("with");
    let tou = Tariff::try_new(toml::from_str(TOU_TARIFF).expect("TOML")).expect("tariff");
    let source = HOMES
        .iter()
        .find(|(m, _)| *m == meter)
        .map(|(_, source)| *source)
        .expect("the home's source");
    let (from, until) = from_until();
    let stream = readings(source, Some(from), Some(until)).expect("readings");
    let tou_paise = monthly_bills(&tou, stream.readings())
        .expect("bills")
        .values()
        .next()
        .expect("a month")
        .paise;
    assert_eq!(paise_of(&without), tou_paise, "{without}");
    assert!(
        paise_of(&with) < paise_of(&without),
        "{with} is no saving on {without}"
    );
    runtime
        .block_on(browser.screenshot("household-battery"))
        .expect("shot");

    // Green Button: the page's own session downloads its readings as ESPI XML.
    let xml = runtime
        .block_on(browser.script(
            "return fetch('/espi.xml', {credentials: 'same-origin'}).then(r => r.text());",
            vec![],
        ))
        .expect("espi");
    let xml = xml.as_str().expect("text");
    assert!(
        xml.contains("IntervalReading"),
        "{}",
        &xml[..xml.len().min(400)]
    );

    let _ = child.kill();
    let _ = child.wait();
}
