//! The pipeline across three separate processes: the key authority issues tokens and serves
//! the public key, the utility server verifies the tokens with the key authority's published
//! JWT key, and `meter-client run` encrypts a synthetic home's days, streams them and records
//! their receipts. Checked over real gRPC: the cursor, exactly-once delivery on a rerun, the
//! refusals (another meter's token, no token), and a month's bill released by the key
//! authority against the plaintext tariff on the same readings.

use std::process::{Command, Output};
use std::time::Duration;

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::GetCursorRequest;
use seer_proto::v1::ingest_client::IngestClient;
use seer_tests::{ServerProcess, bin_path};
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

struct Deployment {
    dir: tempfile::TempDir,
    utility_db: String,
    authority: ServerProcess,
    utility: ServerProcess,
}

fn ka_env(dir: &tempfile::TempDir) -> Vec<(String, String)> {
    let d = dir.path().display();
    vec![
        ("SEER_KEY_AUTHORITY__SERVER__PORT".into(), "0".into()),
        (
            "SEER_KEY_AUTHORITY__KEYS__DIR".into(),
            format!("{d}/ka/keys"),
        ),
        (
            "SEER_KEY_AUTHORITY__AUTH__SIGNING_KEY_FILE".into(),
            format!("{d}/ka/jwt.pem"),
        ),
        (
            "SEER_KEY_AUTHORITY__AUDIT__DATABASE_URL".into(),
            format!("sqlite:{d}/ka/audit.db"),
        ),
    ]
}

fn key_authority_cli(dir: &tempfile::TempDir, args: &[&str]) -> String {
    let output = Command::new(bin_path("key-authority").expect("built"))
        .args(args)
        .envs(ka_env(dir))
        .output()
        .expect("key-authority runs");
    assert!(
        output.status.success(),
        "key-authority {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn token(dir: &tempfile::TempDir, role: &str, meter: Option<&str>) -> String {
    let mut args = vec!["issue-token", "--role", role, "--lifetime", "1h"];
    if let Some(meter) = meter {
        args.extend(["--meter-id", meter]);
    }
    key_authority_cli(dir, &args).trim().to_owned()
}

fn deploy() -> Deployment {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("ka")).expect("ka dir");
    let authority = ServerProcess::spawn_with("key-authority", &ka_env(&dir)).expect("ka starts");
    let pem = key_authority_cli(&dir, &["jwt-public-key"]);
    let pem_file = dir.path().join("ka-jwt-public.pem");
    std::fs::write(&pem_file, pem).expect("write pem");
    let d = dir.path().display();
    let utility_db = format!("sqlite://{d}/utility.db");
    let utility = ServerProcess::spawn_with(
        "utility-server",
        &[
            ("SEER_UTILITY__SERVER__PORT".into(), "0".into()),
            ("SEER_UTILITY__DATABASE__URL".into(), utility_db.clone()),
            (
                "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_FILE".into(),
                pem_file.display().to_string(),
            ),
        ],
    )
    .expect("utility starts");
    Deployment {
        dir,
        utility_db,
        authority,
        utility,
    }
}

impl Deployment {
    /// `utility-server bill` or `bills` against the running deployment's database.
    fn utility_cli(&self, args: &[&str], token: &str) -> Output {
        Command::new(bin_path("utility-server").expect("built"))
            .args(args)
            .env("SEER_UTILITY__DATABASE__URL", &self.utility_db)
            .env("SEER_UTILITY_TOKEN", token)
            .env("SEER_UTILITY__LOG__FILTER", "warn")
            .output()
            .expect("utility-server runs")
    }

    /// `utility-server bill` for January, group 0, against this deployment's key authority.
    fn bill_january(&self, token: &str) -> Output {
        self.utility_cli(
            &[
                "bill",
                "--period",
                "2024-01",
                "--group",
                "0",
                "--key-authority",
                &self.authority.uri(),
            ],
            token,
        )
    }

    fn meter_client(&self, meter: &str, token: Option<&str>, state: &str, until: &str) -> Output {
        let mut command = Command::new(bin_path("meter-client").expect("built"));
        command
            .args([
                "run",
                "--meter-id",
                meter,
                "--source",
                "synthetic:7:3",
                "--from",
                "2024-01-01",
                "--until",
                until,
                "--key-authority",
                &self.authority.uri(),
                "--utility",
                &self.utility.uri(),
                "--state",
                &self.dir.path().join(state).display().to_string(),
                "--max-attempts",
                "3",
            ])
            .env_remove("SEER_METER_TOKEN");
        if let Some(token) = token {
            command.env("SEER_METER_TOKEN", token);
        }
        command.output().expect("meter-client runs")
    }

    async fn cursor(&self, meter: &str, token: &str) -> Result<u64, tonic::Status> {
        let channel = Endpoint::from_shared(self.utility.uri())
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connects");
        let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("header");
        let mut client =
            IngestClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                Ok(request)
            })
            .with_seer_limits();
        Ok(client
            .get_cursor(GetCursorRequest {
                meter_id: meter.into(),
            })
            .await?
            .into_inner()
            .last)
    }
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "meter-client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_meter_streams_its_days_exactly_once_across_three_processes() {
    let deployment = deploy();
    let household = token(&deployment.dir, "household", Some("M-0003"));
    let utility = token(&deployment.dir, "utility", None);

    // Three days, one batch per day.
    let run = deployment.meter_client("M-0003", Some(&household), "meter", "2024-01-04");
    assert_success(&run);
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        3
    );
    // The household may read its own cursor, not another meter's.
    assert_eq!(
        deployment
            .cursor("M-0003", &household)
            .await
            .expect("own cursor"),
        3
    );
    let denied = deployment.cursor("M-0004", &household).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // Rerun with the same state and two more days: only the new days are sent.
    let rerun = deployment.meter_client("M-0003", Some(&household), "meter", "2024-01-06");
    assert_success(&rerun);
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        5
    );
}

#[tokio::test]
async fn tokens_for_another_meter_or_none_are_refused() {
    let deployment = deploy();
    let other = token(&deployment.dir, "household", Some("M-0009"));
    let utility = token(&deployment.dir, "utility", None);

    let wrong = deployment.meter_client("M-0003", Some(&other), "wrong", "2024-01-02");
    assert!(
        !wrong.status.success(),
        "a token for M-0009 must not upload for M-0003"
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(
        stderr.contains("permission") || stderr.contains("denied"),
        "{stderr}"
    );

    let none = deployment.meter_client("M-0003", None, "none", "2024-01-02");
    assert!(!none.status.success(), "no token must not upload");

    // Nothing was stored for M-0003.
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        0
    );
    // A forged token (signed by another key authority) is refused outright.
    let other_ka = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(other_ka.path().join("ka")).expect("dir");
    let forged = token(&other_ka, "utility", None);
    let status = deployment.cursor("M-0003", &forged).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

/// The plaintext oracle: the synthetic home's January bill in paise, from the same readings
/// (whole Wh) through the exact tariff.
fn january_bill_paise() -> i64 {
    let from = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let until = chrono::NaiveDate::from_ymd_opt(2024, 2, 1).expect("date");
    let readings = meter_client::synthetic::SyntheticHome::new(7, 3)
        .readings(from, until)
        .into_iter()
        .map(|r| (r.start, r.energy.round_to_wh()));
    seer_core::tariff::Tariff::bescom()
        .bill(readings)
        .expect("plaintext bill")
        .total()
        .get()
}

#[tokio::test]
async fn a_closed_month_is_billed_by_the_key_authority_to_the_paisa() {
    let deployment = deploy();
    let household = token(&deployment.dir, "household", Some("M-0003"));
    let utility = token(&deployment.dir, "utility", None);

    // The whole of January: 31 daily batches, the last one closes the month.
    let run = deployment.meter_client("M-0003", Some(&household), "meter", "2024-02-01");
    assert_success(&run);
    assert_eq!(
        deployment.cursor("M-0003", &utility).await.expect("cursor"),
        31
    );

    let output = deployment.bill_january(&utility);
    assert!(
        output.status.success(),
        "bill failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["closing_homes"], 1, "{report}");
    assert_eq!(
        report["refused"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let released = &report["released"][0];
    assert_eq!(released["meter_id"], "M-0003");
    assert_eq!(released["period"], "2024-01");
    assert_eq!(released["amount_paise"], january_bill_paise(), "{report}");
    assert_eq!(released["closing_sequence"], 31);

    // Stored: `bills` prints the same bill.
    let output = deployment.utility_cli(&["bills", "--period", "2024-01"], &utility);
    assert!(output.status.success());
    let bills: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json bills");
    assert_eq!(bills[0]["amount_paise"], january_bill_paise());

    // A second release of the same bill is refused by the key authority (and logged there).
    let output = deployment.bill_january(&utility);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(
        report["released"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let reason = report["refused"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(reason.contains("already"), "{report}");

    // A household token cannot ask for releases.
    let output = deployment.bill_january(&household);
    assert!(
        !output.status.success(),
        "a household token must not obtain releases"
    );
}
