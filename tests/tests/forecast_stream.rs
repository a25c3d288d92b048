//! Streamed forecasting end to end, every party a separate process: the key authority
//! (analytics enabled, the shipped day-ahead model registered), the utility server, three
//! `meter-client forecast` runs and the `utility-server forecast` job.
//!
//! Homes 0 and 1 share evaluation group 0 (blocks at slots 0 and 216 of one ciphertext),
//! home 8 is alone in group 1. A rogue meter uploads a ciphertext at home 2's block without
//! recording a receipt: the job packs it with homes 0 and 1, the key authority refuses that
//! request as a whole (the rogue input for its missing receipt, homes 0 and 1 withheld), and
//! the job asks again for homes 0 and 1 alone. Three requests, every result verified byte for
//! byte; 24 hours stored for each of the three homes.
//!
//! Oracle: the plaintext day-ahead model (`forecast_series`) on the hourly sums of the
//! synthetic homes' readings, computed here from the generator, rounded and clipped like a
//! release; the totals over homes are their sums per hour. Bad uploads (a corrupted
//! ciphertext, another household's token, different inputs under a stored id) are refused
//! with their statuses and store nothing; a rerun of a meter resends the same ciphertext
//! (duplicates everywhere); a second job run finds nothing pending.

use std::process::Command;

use chrono::{NaiveDate, TimeDelta};
use meter_client::analytics::upload_input;
use meter_client::forecast::encrypt_series;
use meter_client::grpc::{BearerToken, fetch_public_key};
use meter_client::synthetic::SyntheticHome;
use seer_ckks::{CkksContext, ParameterSet, PublicKey};
use seer_forecast::release::{RegisteredForecast, round_kwh};
use seer_forecast::{ForecastModel, forecast_series};
use seer_proto::v1::AnalyticsInputHeader;
use seer_tests::audit::{audit_entries, grants, has_refusal};
use seer_tests::bin_path;
use seer_tests::deployment::{Deployment, DeploymentOptions, deep_analytics_env};
use seer_tests::signing::signed_header;
use serde_json::Value;
use utility_server::analytics::model_digest;

const STEPS: [i64; 4] = [-1, -8, -32, -128];
const SEED: u64 = 41;
/// The homes (home index = synthetic home number).
const HOMES: [u32; 3] = [0, 1, 8];

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 12).expect("date")
}

/// The oracle: the plaintext model's forecasts of `day`'s 24 hours for synthetic home
/// `home`, from the hourly sums of the generator's readings of the 8 days before.
fn expected(model: &ForecastModel, home: u32) -> Vec<f64> {
    let from = day() - TimeDelta::days(8);
    let readings = SyntheticHome::new(SEED, home).readings(from, day());
    assert_eq!(readings.len(), 8 * 96, "the generator yields whole days");
    let hours: Vec<f64> = readings
        .chunks(4)
        .map(|q| q.iter().map(|r| r.energy.to_kwh().get()).sum::<f64>())
        .collect();
    assert_eq!(hours.len(), 192);
    let mut block = hours.clone();
    block.extend([0.0; 24]);
    let f = forecast_series(model, &block);
    (192..216)
        .map(|p| round_kwh(f.get(p).expect("forecast").max(0.0)))
        .collect()
}

fn meter_forecast(deployment: &Deployment, home: u32, model: &std::path::Path) -> Vec<Value> {
    let id = format!("home-{home}");
    let token = deployment.token("household", Some(&id)).expect("token");
    let state = deployment.dir().join(&id);
    deployment.enrol_into(&id, &state).expect("enrolled");
    let output = Command::new(bin_path("meter-client").expect("meter-client"))
        .args([
            "forecast",
            "--meter-id",
            &id,
            "--source",
            &format!("synthetic:{SEED}:{home}"),
            "--day",
            &day().to_string(),
            "--model",
            &model.display().to_string(),
            "--utility",
            &deployment.utility().uri(),
            "--key-authority",
            &deployment.authority().uri(),
            "--state",
            &state.display().to_string(),
            "--json",
        ])
        .env("SEER_METER_TOKEN", token)
        .envs(deployment.meter_env(&id).expect("the meter's certificate"))
        .output()
        .expect("meter-client runs");
    assert!(
        output.status.success(),
        "meter-client forecast for {id}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per day"))
        .collect()
}

/// Asserts that an upload was refused by the utility with `code` and a message holding
/// `needle`.
fn refused<T: std::fmt::Debug>(
    result: Result<T, meter_client::error::Error>,
    code: tonic::Code,
    needle: &str,
) {
    match result {
        Err(meter_client::error::Error::Rpc {
            code: got, message, ..
        }) => {
            assert_eq!(got, code, "{message}");
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        other => panic!("expected a {code:?} refusal, got {other:?}"),
    }
}

fn json(output: &std::process::Output, what: &str) -> Value {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn deep_meters_upload_daily_series_and_the_job_releases_their_day_ahead_forecasts() {
    let model_path = repo("forecast/models/uci-lstm-day-ahead.json");
    let model_bytes = std::fs::read(&model_path).expect("model");
    let digest = model_digest(&model_bytes);
    let model =
        ForecastModel::from_json(std::str::from_utf8(&model_bytes).expect("utf-8")).expect("model");
    let computation = RegisteredForecast::try_new(model.clone()).expect("computation");
    let ctx = CkksContext::new(ParameterSet::N32768_L19_SEC128).expect("context");

    let key_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("forecast-stream-keys");
    let env = deep_analytics_env(&key_dir, &STEPS, &[], &[&model_path], &[]).expect("deep key set");
    let deployment = Deployment::start_with_authority_env(&DeploymentOptions::default(), &env)
        .expect("deployment");

    // The meters, as processes: one day each, at their fixed blocks.
    for home in HOMES {
        let days = meter_forecast(&deployment, home, &model_path);
        assert_eq!(days.len(), 1);
        let d = &days[0];
        let (group, offset) = computation.block(u64::from(home), ctx.slots());
        assert_eq!(d["group"], group, "{d}");
        assert_eq!(d["slot_offset"], offset, "{d}");
        assert_eq!(d["slot_count"], 216, "{d}");
        assert_eq!(d["first_hour"], "2024-03-04T00:00", "{d}");
        assert_eq!(d["lane"], "exact", "{d}");
        assert_eq!(d["resent"], false, "{d}");
        assert_eq!(d["receipt_duplicate"], false, "{d}");
        assert_eq!(d["upload_duplicate"], false, "{d}");
    }
    // A rerun resends the kept ciphertext: the same receipt, the same upload.
    let again = meter_forecast(&deployment, 0, &model_path);
    assert_eq!(again[0]["resent"], true);
    assert_eq!(again[0]["receipt_duplicate"], true);
    assert_eq!(again[0]["upload_duplicate"], true);

    let runtime = seer_tests::runtime().expect("runtime");
    let utility_url = deployment.utility().uri();
    // The rogue uploads as meter "rogue" (its household token with its own certificate).
    let rogue_identity =
        seer_tests::pki::files(seer_tls::PartyKind::Meter, "rogue").expect("certificate");
    runtime
        .block_on(seer_tls::with_client_identity(&rogue_identity, async {
            let pk = fetch_public_key(&deployment.authority().uri(), None, ctx.parameter_set_id())
                .await
                .expect("public key");
            let pk = PublicKey::from_bytes(&ctx, &pk).expect("public key parses");
            let rogue_offset = 2 * computation.block_len();
            let series = vec![1.0; 192];
            let ct = encrypt_series(&ctx, &pk, &series, rogue_offset, 24).expect("encrypt");
            let header = |meter: &str, input_id: &str| AnalyticsInputHeader {
                kind: "forecast".into(),
                meter_id: meter.into(),
                input_id: input_id.into(),
                model_blake3: digest.clone(),
                slot_offset: rogue_offset as u32,
                slot_count: 216,
                first_period: "2024-03-04T00:00".into(),
                group: 0,
                inputs: 1,
                lane: "exact".into(),
                ..AnalyticsInputHeader::default()
            };
            // The rogue meter signs its own uploads (a meter may lie about itself).
            let signed = |h: AnalyticsInputHeader, inputs: &[Vec<u8>]| {
                signed_header(&deployment, h, inputs).expect("signed")
            };
            let rogue =
                BearerToken::try_new(&deployment.token("household", Some("rogue")).expect("token"))
                    .expect("bearer");

            // Refused uploads store nothing.
            let mut corrupt = ct.input.clone();
            let middle = corrupt.len() / 2;
            corrupt[middle] ^= 0x40;
            refused(
                upload_input(
                    &utility_url,
                    rogue.clone(),
                    signed(header("rogue", "x"), std::slice::from_ref(&corrupt)),
                    &[corrupt],
                )
                .await,
                tonic::Code::InvalidArgument,
                "is not a ciphertext",
            );
            refused(
                upload_input(
                    &utility_url,
                    rogue.clone(),
                    header("home-0", "x"),
                    std::slice::from_ref(&ct.input),
                )
                .await,
                tonic::Code::PermissionDenied,
                "may not upload",
            );

            // The rogue upload is stored (the utility cannot see that it lacks a receipt) ...
            let ack = upload_input(
                &utility_url,
                rogue.clone(),
                signed(
                    header("rogue", "2024-03-12"),
                    std::slice::from_ref(&ct.input),
                ),
                std::slice::from_ref(&ct.input),
            )
            .await
            .expect("stored");
            assert!(!ack.duplicate);
            // ... and different inputs under its id are a conflict.
            let other = encrypt_series(&ctx, &pk, &series, rogue_offset, 24).expect("encrypt");
            refused(
                upload_input(
                    &utility_url,
                    rogue,
                    signed(
                        header("rogue", "2024-03-12"),
                        std::slice::from_ref(&other.input),
                    ),
                    &[other.input],
                )
                .await,
                tonic::Code::AlreadyExists,
                "already stored",
            );
        }))
        .expect("the rogue's identity");

    // The job: group 0 with the rogue input is refused as a whole (the rogue input has no
    // receipt, homes 0 and 1 are withheld) and asked for again without it; group 1 alone.
    let utility_token = deployment.token("utility", None).expect("utility token");
    let model_arg = model_path.display().to_string();
    let authority = deployment.authority().uri();
    let job = || {
        json(
            &deployment
                .utility_cli(
                    &[
                        "forecast",
                        "--model",
                        &model_arg,
                        "--key-authority",
                        &authority,
                    ],
                    &utility_token,
                )
                .expect("utility-server forecast"),
            "utility-server forecast",
        )
    };
    let started = std::time::Instant::now();
    let report = job();
    eprintln!(
        "forecast job: {:.1} s, {report}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report["model_blake3"], digest.as_str());
    assert_eq!(report["pending"], 4);
    assert_eq!(report["requests"], 3);
    assert_eq!(report["released"], 3);
    assert_eq!(report["hours_stored"], 72);
    let refused = report["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 1, "{report}");
    assert_eq!(refused[0]["meter_id"], "rogue");
    assert!(
        refused[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("receipt"),
        "{report}"
    );
    // Every release came from a request whose result the key authority verified byte for
    // byte: the comparison is never skipped.
    assert_eq!(report["all_verified"], true);

    // What was stored equals the plaintext model, hour by hour; the totals are the sums.
    let listing = json(
        &deployment
            .utility_cli(&["forecasts", "--model", &model_arg], &utility_token)
            .expect("utility-server forecasts"),
        "utility-server forecasts",
    );
    let forecasts = listing["forecasts"].as_array().expect("forecasts");
    assert_eq!(forecasts.len(), 72);
    let mut totals = [0.0; 24];
    for home in HOMES {
        let id = format!("home-{home}");
        let want = expected(&model, home);
        let got: Vec<&Value> = forecasts.iter().filter(|f| f["meter_id"] == id).collect();
        assert_eq!(got.len(), 24, "{id}");
        for (h, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g["hour"], format!("2024-03-12T{h:02}:00"), "{id}");
            let kwh = g["kwh"].as_f64().expect("kwh");
            assert!(
                (kwh - w).abs() <= 0.0015,
                "{id} hour {h}: released {kwh}, plaintext {w}"
            );
            totals[h] += kwh;
        }
    }
    let listed_totals = listing["totals"].as_array().expect("totals");
    assert_eq!(listed_totals.len(), 24);
    for (h, t) in listed_totals.iter().enumerate() {
        assert_eq!(t["homes"], 3);
        assert!((t["kwh"].as_f64().expect("kwh") - totals[h]).abs() < 1e-9);
    }
    let statuses: Vec<(String, String)> = listing["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| {
            (
                i["meter_id"].as_str().expect("meter").to_owned(),
                i["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    assert_eq!(statuses.len(), 4);
    for (meter, status) in &statuses {
        let want = if meter == "rogue" {
            "refused"
        } else {
            "released"
        };
        assert_eq!(status, want, "{meter}");
    }

    // Nothing is left to do.
    let rerun = job();
    assert_eq!(rerun["pending"], 0);
    assert_eq!(rerun["requests"], 0);

    // The key authority's audit log holds the three grants and the refusal.
    let audit = runtime
        .block_on(audit_entries(&deployment.dir().join("ka/audit.db")))
        .expect("audit log");
    assert_eq!(grants(&audit, "forecast"), 3);
    assert!(has_refusal(&audit, "forecast", Some("rogue"), "receipt"));
}
