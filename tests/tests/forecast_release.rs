//! The `forecast` release end to end, with the key authority as a separate process (analytics
//! enabled, the shipped day-ahead model and the ε = 1 model registered): two meters encrypt
//! their hourly series at disjoint blocks, each reserving the 24-hour horizon, and record
//! receipts; the utility fetches the deep keys, evaluates the forecaster once for both homes
//! and asks for the release; the key authority re-executes, compares, decrypts and releases
//! only the 24 hours after each exact series.
//!
//! Oracle: the plaintext model (`forecast_series`) on the same clamped hours, rounded and
//! clipped like a release. Refusals (a household token, inputs on another lane than the
//! model's, a model registered for another lane, a second release of the same hours) are
//! checked in the answers and in the key authority's audit database. The deep key set is
//! generated once per target directory (a key cache).

use chrono::NaiveDateTime;
use meter_client::forecast::{ForecastLane, encrypt_series, lane_series, receipt, record_receipt};
use meter_client::grpc::{BearerToken, fetch_public_key};
use seer_ckks::{CkksContext, ParameterSet, PublicKey};
use seer_forecast::data::{Series, load_hourly_csv};
use seer_forecast::release::{RegisteredForecast, round_kwh};
use seer_forecast::{ForecastModel, forecast_series};
use seer_tests::audit::{audit_entries, grants, has_refusal};
use seer_tests::deployment::{Deployment, DeploymentOptions, deep_analytics_env};
use seer_tests::signing::signed_receipt;
use utility_server::analytics::{
    JobError, MeterInputs, connect, fetch_deep_keys, model_digest, request_release,
};
use utility_server::forecast::{ForecastStore, evaluate, hour_forecasts};

const STEPS: [i64; 4] = [-1, -8, -32, -128];
/// Hours of each home's series (10 days).
const HOURS: usize = 240;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn hour(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").expect("hour")
}

struct Home {
    id: &'static str,
    series: Series,
}

#[test]
fn forecasts_are_released_past_each_series_and_refused_otherwise() {
    let day_ahead_path = repo("forecast/models/uci-lstm-day-ahead.json");
    let eps1_path = repo("forecast/models/uci-lstm-eps1.json");
    let day_ahead_bytes = std::fs::read(&day_ahead_path).expect("model");
    let day_ahead = model_digest(&day_ahead_bytes);
    let eps1 = model_digest(&std::fs::read(&eps1_path).expect("model"));
    let model = ForecastModel::from_json(std::str::from_utf8(&day_ahead_bytes).expect("utf-8"))
        .expect("model");
    let computation = RegisteredForecast::try_new(model.clone()).expect("computation");
    assert_eq!(model.horizon(), 24);

    // Two homes on the same hours: the UCI household's first ten days of January 2010, and a
    // scaled, shifted copy of them (another load shape).
    let uci = load_hourly_csv(repo("forecast/tests/data/uci-hourly-2009-12-2010.csv"))
        .expect("hourly series");
    assert_eq!(uci.start, hour("2009-12-01T00:00"));
    let window = |from: usize, f: &dyn Fn(f64) -> f64| Series {
        start: uci.time_of(from),
        interval: uci.interval,
        kwh: uci.kwh[from..from + HOURS].iter().map(|v| f(*v)).collect(),
    };
    let homes = [
        Home {
            id: "meter-a",
            series: window(31 * 24, &|v| v),
        },
        Home {
            id: "meter-b",
            series: window(31 * 24, &|v| 0.6 * v + 0.15),
        },
    ];

    // The key authority with analytics enabled (keys from the cache), as a process.
    let ctx = CkksContext::new(ParameterSet::N32768_L19_SEC128).expect("context");
    let key_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("forecast-release-keys");
    let env = deep_analytics_env(&key_dir, &STEPS, &[], &[&day_ahead_path, &eps1_path], &[])
        .expect("deep key set");
    let deployment = Deployment::start_with_authority_env(&DeploymentOptions::default(), &env)
        .expect("deployment");
    let url = deployment.authority().uri();
    let utility_token = deployment.token("utility", None).expect("utility token");
    let runtime = seer_tests::runtime().expect("runtime");

    runtime.block_on(async {
        // Meters: the exact lane, encryption at disjoint blocks with the horizon reserved.
        let pk = fetch_public_key(&url, None, ctx.parameter_set_id())
            .await
            .expect("public key");
        let pk = PublicKey::from_bytes(&ctx, &pk).expect("public key parses");
        let mut meters = Vec::new();
        let mut lanes = Vec::new();
        let mut offset = 0;
        for home in &homes {
            let lane = lane_series(&home.series, ForecastLane::Exact, computation.input_range())
                .expect("lane");
            let encrypted =
                encrypt_series(&ctx, &pk, &lane.hours, offset, model.horizon()).expect("encrypt");
            assert_eq!(encrypted.slot_count, HOURS + 24);
            let token = deployment
                .household_token(home.id, "seer-key-authority")
                .expect("token");
            let duplicate = seer_tls::with_client_identity(
                &seer_tests::pki::files(seer_tls::PartyKind::Meter, home.id).expect("certificate"),
                record_receipt(
                    &url,
                    BearerToken::try_new(&token).expect("bearer"),
                    signed_receipt(&deployment, receipt(home.id, "jan", &encrypted, &lane))
                        .expect("signed"),
                ),
            )
            .await
            .expect("the meter's identity")
            .expect("receipt");
            assert!(!duplicate);
            offset += encrypted.slot_count;
            meters.push(MeterInputs {
                meter_id: home.id.into(),
                input_id: "jan".into(),
                inputs: vec![encrypted.input.clone()],
            });
            lanes.push((lane, encrypted));
        }
        // Meter L records meter A's ciphertext as analytics-lane input: the model forecasts
        // from the exact lane.
        let mut l_receipt = receipt("meter-l", "jan", &lanes[0].1, &lanes[0].0);
        l_receipt.lane = "analytics".into();
        l_receipt.epsilon = 1.0;
        l_receipt.readings_per_day = 96;
        let l_token = deployment
            .household_token("meter-l", "seer-key-authority")
            .expect("token");
        seer_tls::with_client_identity(
            &seer_tests::pki::files(seer_tls::PartyKind::Meter, "meter-l").expect("certificate"),
            record_receipt(
                &url,
                BearerToken::try_new(&l_token).expect("bearer"),
                signed_receipt(&deployment, l_receipt).expect("signed"),
            ),
        )
        .await
        .expect("the meter's identity")
        .expect("receipt l");

        // The utility: deep keys, one evaluation for both homes.
        let channel = connect(&url).await.expect("channel");
        let (evaluator, _) = fetch_deep_keys(channel.clone(), &ctx, &computation.galois_steps())
            .await
            .expect("deep keys");
        let inputs: Vec<(std::ops::Range<usize>, Vec<Vec<u8>>)> = lanes
            .iter()
            .zip(&meters)
            .map(|((_, e), m)| {
                (
                    e.slot_offset..e.slot_offset + e.slot_count,
                    m.inputs.clone(),
                )
            })
            .collect();
        let comp = computation.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || evaluate(&comp, &evaluator, &inputs))
            .await
            .expect("task")
            .expect("evaluate");
        eprintln!(
            "utility evaluation: {:.1} s",
            started.elapsed().as_secs_f64()
        );

        // Refused: a household token asking for a release (audited before the answer).
        let household_a = deployment
            .household_token("meter-a", "seer-key-authority")
            .expect("token");
        // From meter A's own connection (its certificate), so that the role is what refuses.
        let meter_a_channel = seer_tls::with_client_identity(
            &seer_tests::pki::files(seer_tls::PartyKind::Meter, "meter-a").expect("certificate"),
            connect(&url),
        )
        .await
        .expect("the meter's identity")
        .expect("channel");
        match request_release(
            meter_a_channel,
            &household_a,
            "forecast",
            &day_ahead,
            meters[..1].to_vec(),
            result.clone(),
        )
        .await
        {
            Err(JobError::Release { code, .. }) => {
                assert_eq!(code, tonic::Code::PermissionDenied);
            }
            other => panic!("a household token must be refused: {other:?}"),
        }

        // Refused before the circuit: analytics-lane inputs for the exact model, and exact
        // inputs for the ε = 1 model.
        let wrong_lane = request_release(
            channel.clone(),
            &utility_token,
            "forecast",
            &day_ahead,
            vec![MeterInputs {
                meter_id: "meter-l".into(),
                ..meters[0].clone()
            }],
            result.clone(),
        )
        .await
        .expect("answered");
        assert!(!wrong_lane.meters[0].granted);
        assert!(
            wrong_lane.meters[0].refusal.contains("exact lane"),
            "{wrong_lane:?}"
        );
        let wrong_model = request_release(
            channel.clone(),
            &utility_token,
            "forecast",
            &eps1,
            meters[..1].to_vec(),
            result.clone(),
        )
        .await
        .expect("answered");
        assert!(!wrong_model.meters[0].granted);
        assert!(
            wrong_model.meters[0].refusal.contains("analytics lane"),
            "{wrong_model:?}"
        );

        // Granted: the honest result, verified byte for byte; 24 hours after each series.
        let started = std::time::Instant::now();
        let released = request_release(
            channel.clone(),
            &utility_token,
            "forecast",
            &day_ahead,
            meters.clone(),
            result.clone(),
        )
        .await
        .expect("answered");
        eprintln!(
            "release (re-execution): {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(released.result_verified, "{released:?}");
        for (home, (lane, _)) in homes.iter().zip(&lanes) {
            let meter = released
                .meters
                .iter()
                .find(|m| m.meter_id == home.id)
                .expect("outcome");
            assert!(meter.granted, "{meter:?}");
            assert_eq!(meter.lane, "exact");
            assert!(meter.days.is_empty());
            assert_eq!(meter.forecasts.len(), 24);
            let twin = forecast_series(&model, &lane.hours);
            for (j, f) in meter.forecasts.iter().enumerate() {
                let position = HOURS + j;
                let at = lane.start + chrono::TimeDelta::hours(position as i64);
                assert_eq!(f.hour, at.format("%Y-%m-%dT%H:00").to_string());
                let want = round_kwh(twin.get(position).expect("twin").max(0.0));
                assert!(
                    (f.kwh - want).abs() <= 0.0015,
                    "{} {}: released {} vs plaintext {want}",
                    home.id,
                    f.hour,
                    f.kwh
                );
            }
        }

        // The utility stores what was released.
        let store = ForecastStore::connect(&format!(
            "sqlite://{}",
            deployment.dir().join("utility-forecast.db").display()
        ))
        .await
        .expect("store");
        assert_eq!(
            store.record(&day_ahead, &released).await.expect("stored"),
            48
        );
        let stored = store.forecasts("meter-b", &day_ahead).await.expect("read");
        let want: Vec<_> = hour_forecasts(&released)
            .into_iter()
            .filter(|f| f.meter_id == "meter-b")
            .collect();
        assert_eq!(stored, want);
        // The forecast of the sum over both homes, per hour.
        let totals = store.totals(&day_ahead).await.expect("totals");
        assert_eq!(totals.len(), 24);
        let a = store.forecasts("meter-a", &day_ahead).await.expect("read");
        for ((t, fa), fb) in totals.iter().zip(&a).zip(&stored) {
            assert_eq!((t.hour.as_str(), t.homes), (fa.hour.as_str(), 2));
            assert_eq!(fb.hour, fa.hour);
            assert!((t.kwh - (fa.kwh + fb.kwh)).abs() < 1e-9, "{t:?}");
        }

        // Refused: a second release of the same hours.
        let again = request_release(
            channel,
            &utility_token,
            "forecast",
            &day_ahead,
            meters[..1].to_vec(),
            result,
        )
        .await
        .expect("answered");
        assert!(!again.meters[0].granted);
        assert!(
            again.meters[0].refusal.contains("already released"),
            "{again:?}"
        );

        // The audit log: every refusal was recorded, and the grants.
        let audit = audit_entries(&deployment.dir().join("ka/audit.db"))
            .await
            .expect("audit entries");
        let refused =
            |meter: Option<&str>, needle: &str| has_refusal(&audit, "forecast", meter, needle);
        // The household's request is refused at the gate, from its token alone (its body, and
        // so its meters, never read): one entry of its own, under the RPC's kind.
        assert!(
            has_refusal(
                &audit,
                "analytics",
                None,
                "role household may not call this"
            ),
            "{audit:?}"
        );
        assert!(refused(Some("meter-l"), "exact lane"), "{audit:?}");
        assert!(refused(Some("meter-a"), "analytics lane"), "{audit:?}");
        assert!(refused(Some("meter-a"), "already released"), "{audit:?}");
        let grants = grants(&audit, "forecast");
        assert_eq!(grants, 2);
    });
}
