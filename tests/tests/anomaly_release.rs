//! The `anomaly` release end to end, with the key authority as a separate process (analytics
//! enabled, a small model registered): meters encrypt hour planes at their blocks and record
//! receipts, the utility fetches the deep keys, scores both homes in one evaluation and asks
//! for the release, and the key authority re-executes, compares, decrypts and releases.
//!
//! Oracle: the model's plaintext smooth twin (`score_smooth`) on the same (clamped) days, and
//! the plaintext rolling z-score of their totals. The refusals are checked in the answers and
//! in the key authority's audit database.
//!
//! The model is small (8 trees, ψ = 16, grid 2, the default features and step) so that the
//! three evaluations at N32768 (the utility's, the key authority's re-execution of a tampered
//! result, its re-execution of the good one) stay within a few minutes on two cores. The deep
//! key set is generated once per target directory (a key cache).

use chrono::NaiveDate;
use meter_client::anomaly::{AnomalyLane, HOURS, encrypt_days, lane_days, receipt, record_receipt};
use meter_client::grpc::{BearerToken, fetch_public_key};
use seer_anomaly::features::{DayProfile, DayRecord};
use seer_anomaly::forest::ForestOptions;
use seer_anomaly::model::{AnomalyModel, TrainOptions};
use seer_anomaly::release::{RegisteredAnomaly, round_to};
use seer_anomaly::zscore::rolling_zscore;
use seer_ckks::{CkksContext, ParameterSet, PublicKey};
use seer_proto::v1::AnalyticsReleaseResponse;
use seer_tests::audit::{audit_entries, grants, has_refusal};
use seer_tests::deployment::{Deployment, DeploymentOptions, deep_analytics_env};
use seer_tests::rng::SplitMix64;
use seer_tests::signing::signed_receipt;
use utility_server::analytics::{
    JobError, MeterInputs, connect, fetch_deep_keys, model_digest, request_release,
};
use utility_server::anomaly::{AnomalyScores, score};

const CAP_KWH: f64 = 4.0;
const WINDOW: usize = 8;
const STEPS: [i64; 3] = [-1, -2, -4];

fn uniform(rng: &mut SplitMix64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A household with an evening peak and day-to-day variation.
fn normal_days(n: usize, seed: u64) -> Vec<[f64; HOURS]> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let level = uniform(&mut rng, 0.8, 1.2);
            let mut h = [0.0; HOURS];
            for (i, v) in h.iter_mut().enumerate() {
                let base = match i {
                    0..=5 => 0.3,
                    6..=8 => 0.9,
                    17..=21 => 1.8,
                    _ => 0.6,
                };
                *v = base * level * uniform(&mut rng, 0.8, 1.2);
            }
            h
        })
        .collect()
}

fn records(days: &[[f64; HOURS]]) -> Vec<DayRecord> {
    let profiles: Vec<DayProfile> = days
        .iter()
        .map(|d| DayProfile::try_new(*d).expect("finite"))
        .collect();
    DayRecord::from_days(&profiles)
}

fn day(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

struct Home {
    id: &'static str,
    first_day: NaiveDate,
    days: Vec<[f64; HOURS]>,
}

fn granted_days(response: &AnalyticsReleaseResponse, meter: &str) -> usize {
    response
        .meters
        .iter()
        .find(|m| m.meter_id == meter)
        .map_or(0, |m| m.days.len())
}

#[test]
fn anomaly_scores_are_released_once_and_match_the_plaintext_twin() {
    // The model: trained on a normal household, saved as the registered file.
    let training = normal_days(400, 11);
    let options = TrainOptions {
        forest: ForestOptions {
            trees: 8,
            subsample: 16,
            seed: 5,
        },
        grid_size: 2,
        ..TrainOptions::exact(CAP_KWH)
    };
    let model = AnomalyModel::train(&records(&training), &options).expect("training");
    let model_dir = tempfile::tempdir().expect("temp dir");
    let model_path = model_dir.path().join("model.json");
    let model_json = model.to_json().expect("json");
    std::fs::write(&model_path, &model_json).expect("model file");
    let model_blake3 = blake3_hex(model_json.as_bytes());
    let computation = RegisteredAnomaly::try_new(model.clone(), WINDOW).expect("computation");

    // Two homes; home A with anomalies injected: theft, a night shift, a spike.
    let mut a = normal_days(40, 21);
    a[20] = a[20].map(|v| v * 0.25);
    for h in 17..=21 {
        a[28][h] = 0.3;
        a[28][h - 16] += 1.5;
    }
    a[34][19] += 3.5;
    a[34][20] += 3.5;
    let homes = [
        Home {
            id: "meter-a",
            first_day: day("2026-01-01"),
            days: a,
        },
        Home {
            id: "meter-b",
            first_day: day("2026-01-01"),
            days: normal_days(36, 31),
        },
    ];

    // The key authority with analytics enabled (keys from the cache), as a process.
    let ctx = CkksContext::new(ParameterSet::N32768_L19_SEC128).expect("context");
    let key_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("anomaly-release-keys");
    let env = deep_analytics_env(
        &key_dir,
        &STEPS,
        &[&model_path],
        &[],
        &[("ZSCORE_WINDOW", WINDOW.to_string())],
    )
    .expect("deep key set");
    let deployment = Deployment::start_with_authority_env(&DeploymentOptions::default(), &env)
        .expect("deployment");
    let url = deployment.authority().uri();
    let utility_token = deployment.token("utility", None).expect("utility token");
    let runtime = seer_tests::runtime().expect("runtime");

    runtime.block_on(async {
        // Meters: lanes, encryption at their blocks, receipts.
        let pk = fetch_public_key(&url, None, ctx.parameter_set_id())
            .await
            .expect("public key");
        let pk = PublicKey::from_bytes(&ctx, &pk).expect("public key parses");
        let mut planes = Vec::new();
        let mut lanes = Vec::new();
        let mut encrypted_homes = Vec::new();
        let mut offset = 0;
        for home in &homes {
            let lane = lane_days(&home.days, AnomalyLane::Exact, model.hour_range).expect("lane");
            let encrypted = encrypt_days(&ctx, &pk, &lane.days, offset).expect("encrypt");
            let token = deployment
                .household_token(home.id, "seer-key-authority")
                .expect("token");
            // As the meter: a household token only with its own meter's certificate.
            let duplicate = seer_tls::with_client_identity(
                &seer_tests::pki::files(seer_tls::PartyKind::Meter, home.id).expect("certificate"),
                record_receipt(
                    &url,
                    BearerToken::try_new(&token).expect("bearer"),
                    signed_receipt(
                        &deployment,
                        receipt(home.id, "jan", home.first_day, &encrypted, &lane),
                    )
                    .expect("signed"),
                ),
            )
            .await
            .expect("the meter's identity")
            .expect("receipt");
            assert!(!duplicate);
            encrypted_homes.push(encrypted.clone());
            planes.push(MeterInputs {
                meter_id: home.id.into(),
                input_id: "jan".into(),
                inputs: encrypted.planes,
            });
            lanes.push(lane);
            offset += home.days.len();
        }
        // Meter C lies about itself: its receipt claims slots 16000..16010, but it writes 20
        // days of heavy use into slots 0..20 — meter A's block. Nobody decrypts its planes to
        // check: the circuit multiplies them by the indicator of C's own block, so A's scores
        // stay A's own (checked against A's twin below) and C's release reflects only what
        // it put into its own block (nothing).
        let c_days: Vec<[f64; HOURS]> = normal_days(20, 41)
            .into_iter()
            .map(|d| d.map(|v| (v * 3.0).min(CAP_KWH)))
            .collect();
        let c_lane = lane_days(&c_days, AnomalyLane::Exact, model.hour_range).expect("lane");
        let c = encrypt_days(&ctx, &pk, &c_lane.days, 0).expect("encrypt");
        let mut c_receipt = receipt("meter-c", "jan", day("2026-01-01"), &c, &c_lane);
        c_receipt.slot_offset = 16000;
        c_receipt.slot_count = 10;
        let c_token = deployment
            .household_token("meter-c", "seer-key-authority")
            .expect("token");
        seer_tls::with_client_identity(
            &seer_tests::pki::files(seer_tls::PartyKind::Meter, "meter-c").expect("certificate"),
            record_receipt(
                &url,
                BearerToken::try_new(&c_token).expect("bearer"),
                signed_receipt(&deployment, c_receipt).expect("signed"),
            ),
        )
        .await
        .expect("the meter's identity")
        .expect("receipt c");

        // Meter L records meter A's planes as analytics-lane inputs: the model scores the exact
        // lane, so its release would not carry the privacy cost the receipt states.
        let mut l_receipt = receipt(
            "meter-l",
            "jan",
            homes[0].first_day,
            &encrypted_homes[0],
            &lanes[0],
        );
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

        // The utility: deep keys, one evaluation for the three meters (A and B at their
        // blocks, C at the block its receipt claims).
        planes.push(MeterInputs {
            meter_id: "meter-c".into(),
            input_id: "jan".into(),
            inputs: c.planes.clone(),
        });
        let mut blocks: Vec<std::ops::Range<usize>> = Vec::new();
        let mut at = 0;
        for home in &homes {
            blocks.push(at..at + home.days.len());
            at += home.days.len();
        }
        blocks.push(16000..16010);
        let channel = connect(&url).await.expect("channel");
        let (evaluator, _) = fetch_deep_keys(channel.clone(), &ctx, &computation.galois_steps())
            .await
            .expect("deep keys");
        let inputs: Vec<(std::ops::Range<usize>, Vec<Vec<u8>>)> = blocks
            .iter()
            .cloned()
            .zip(planes.iter().map(|m| m.inputs.clone()))
            .collect();
        let comp = computation.clone();
        let evaluator = std::sync::Arc::new(evaluator);
        let ev = std::sync::Arc::clone(&evaluator);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || score(&comp, &ev, &inputs))
            .await
            .expect("task")
            .expect("score");
        eprintln!("utility scoring: {:.1} s", started.elapsed().as_secs_f64());

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
            "anomaly",
            &model_blake3,
            planes[..1].to_vec(),
            result.clone(),
        )
        .await
        {
            Err(JobError::Release { code, .. }) => {
                assert_eq!(code, tonic::Code::PermissionDenied);
            }
            other => panic!("a household token must be refused: {other:?}"),
        }

        // Refused: an unregistered model.
        let unknown = request_release(
            channel.clone(),
            &utility_token,
            "anomaly",
            &"0".repeat(64),
            planes[..1].to_vec(),
            result.clone(),
        )
        .await;
        assert!(
            matches!(unknown, Err(JobError::Release { .. })),
            "{unknown:?}"
        );

        // Refused: an input without a receipt (meter-n never recorded one).
        let no_receipt = request_release(
            channel.clone(),
            &utility_token,
            "anomaly",
            &model_blake3,
            vec![MeterInputs {
                meter_id: "meter-n".into(),
                ..planes[0].clone()
            }],
            result.clone(),
        )
        .await
        .expect("answered");
        assert!(!no_receipt.meters[0].granted);
        assert!(
            no_receipt.meters[0].refusal.contains("no anomaly receipt"),
            "{no_receipt:?}"
        );

        // Refused: inputs on another lane than the model's.
        let wrong_lane = request_release(
            channel.clone(),
            &utility_token,
            "anomaly",
            &model_blake3,
            vec![MeterInputs {
                meter_id: "meter-l".into(),
                ..planes[0].clone()
            }],
            result.clone(),
        )
        .await
        .expect("answered");
        assert!(!wrong_lane.meters[0].granted);
        assert!(
            wrong_lane.meters[0]
                .refusal
                .contains("the model reads the exact lane"),
            "{wrong_lane:?}"
        );

        // Refused as a whole: a request mixing valid inputs with one that has no receipt is
        // not evaluated at all; the valid inputs come back withheld, nothing is released.
        let mut mixed = planes.clone();
        mixed.push(MeterInputs {
            meter_id: "meter-n".into(),
            ..planes[0].clone()
        });
        let mixed = request_release(
            channel.clone(),
            &utility_token,
            "anomaly",
            &model_blake3,
            mixed,
            result.clone(),
        )
        .await
        .expect("answered");
        assert!(!mixed.result_verified);
        for m in &mixed.meters {
            assert!(!m.granted && m.days.is_empty(), "{m:?}");
            assert_eq!(m.withheld, m.meter_id != "meter-n", "{m:?}");
        }

        // Refused: the utility's result altered in one bit (every input refused).
        let started = std::time::Instant::now();
        let mut altered = result.clone();
        let last = altered[0].len() - 1;
        altered[0][last] ^= 1;
        let tampered = request_release(
            channel.clone(),
            &utility_token,
            "anomaly",
            &model_blake3,
            planes.clone(),
            altered,
        )
        .await
        .expect("answered");
        eprintln!(
            "tampered release (re-execution): {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(!tampered.result_verified);
        for m in &tampered.meters {
            assert!(!m.granted, "{m:?}");
            assert!(m.refusal.contains("differs"), "{}", m.refusal);
        }

        // Granted: the honest result, verified byte for byte.
        let released = request_release(
            channel.clone(),
            &utility_token,
            "anomaly",
            &model_blake3,
            planes.clone(),
            result.clone(),
        )
        .await
        .expect("answered");
        assert!(released.result_verified);
        let mut compared_flags = 0;
        let mut flagged = 0;
        for (home, lane) in homes.iter().zip(&lanes) {
            let meter = released
                .meters
                .iter()
                .find(|m| m.meter_id == home.id)
                .expect("outcome");
            assert!(meter.granted, "{meter:?}");
            assert_eq!(meter.lane, "exact");
            assert_eq!(meter.days.len(), home.days.len() - 7);
            let twins = records(&lane.days);
            let totals: Vec<f64> = lane.days.iter().map(|d| d.iter().sum()).collect();
            let z = rolling_zscore(&totals, WINDOW);
            for (j, d) in meter.days.iter().enumerate() {
                let position = j + 7;
                assert_eq!(
                    d.day,
                    (home.first_day + chrono::Days::new(position as u64)).to_string()
                );
                let twin = model.score_smooth(&twins[j]).score;
                assert!(
                    (d.score - round_to(twin, 0.001)).abs() <= 0.01,
                    "{} {}: released {} vs twin {twin}",
                    home.id,
                    d.day,
                    d.score
                );
                if (twin - model.flag_threshold).abs() > 0.01 {
                    compared_flags += 1;
                    assert_eq!(
                        d.flagged,
                        twin >= model.flag_threshold,
                        "{} {}",
                        home.id,
                        d.day
                    );
                }
                if d.flagged {
                    flagged += 1;
                    assert!(!d.explanation.is_empty() && !d.explanation_hours.is_empty());
                } else {
                    assert!(d.explanation.is_empty() && d.explanation_hours.is_empty());
                }
                match z[position] {
                    Some(want) if position >= WINDOW => {
                        assert!(d.has_zscore);
                        assert!(
                            (d.zscore - want).abs() <= 0.01 * want.max(1.0),
                            "z {} vs {want}",
                            d.zscore
                        );
                    }
                    _ => assert!(!d.has_zscore),
                }
            }
        }
        assert!(compared_flags > 50, "{compared_flags}");
        // Meter C's writes into A's block changed nothing of A's (checked above); C itself
        // gets the days of its own block after the 7 days of history — scores of the empty
        // block it actually wrote.
        let c_out = released
            .meters
            .iter()
            .find(|m| m.meter_id == "meter-c")
            .expect("meter c");
        assert!(c_out.granted, "{c_out:?}");
        assert_eq!(c_out.days.len(), 3);
        assert!(
            flagged >= 2,
            "the injected theft and night shift should be flagged"
        );

        // The utility stores what was released.
        let store = AnomalyScores::connect(&format!(
            "sqlite://{}",
            deployment.dir().join("utility-anomaly.db").display()
        ))
        .await
        .expect("store");
        let stored = store
            .record(&model_blake3, &released)
            .await
            .expect("stored");
        assert_eq!(
            stored,
            granted_days(&released, "meter-a")
                + granted_days(&released, "meter-b")
                + granted_days(&released, "meter-c")
        );

        // Refused: a second release of the same days.
        let again = request_release(
            channel.clone(),
            &utility_token,
            "anomaly",
            &model_blake3,
            planes[..1].to_vec(),
            result.clone(),
        )
        .await
        .expect("answered");
        assert!(!again.meters[0].granted);
        assert!(
            again.meters[0].refusal.contains("already released"),
            "{again:?}"
        );
        // The chain is the record: with meter-a's release rows deleted behind the key
        // authority's back, its days are still released once only.
        {
            let database = deployment.dir().join("ka/audit.db");
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new().filename(&database),
            )
            .await
            .expect("open the key authority's database");
            let deleted = sqlx::query("DELETE FROM analytics_releases WHERE meter_id = $1")
                .bind("meter-a")
                .execute(&pool)
                .await
                .expect("delete");
            assert!(deleted.rows_affected() > 0);
            pool.close().await;
        }
        let after_delete = request_release(
            channel,
            &utility_token,
            "anomaly",
            &model_blake3,
            planes[..1].to_vec(),
            result,
        )
        .await
        .expect("answered");
        assert!(!after_delete.meters[0].granted, "{after_delete:?}");
        assert!(
            after_delete.meters[0].refusal.contains("already released"),
            "{after_delete:?}"
        );

        // The audit log: every refusal was recorded, and the grants.
        let audit = audit_entries(&deployment.dir().join("ka/audit.db"))
            .await
            .expect("audit entries");
        let refused =
            |meter: Option<&str>, needle: &str| has_refusal(&audit, "anomaly", meter, needle);
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
        assert!(refused(None, "no registered"), "{audit:?}");
        assert!(refused(Some("meter-n"), "no anomaly receipt"), "{audit:?}");
        assert!(refused(Some("meter-l"), "exact lane"), "{audit:?}");
        assert!(refused(Some("meter-b"), "withheld"), "{audit:?}");
        assert!(refused(Some("meter-b"), "differs"), "{audit:?}");
        assert!(refused(Some("meter-a"), "already released"), "{audit:?}");
        let grants = grants(&audit, "anomaly");
        assert_eq!(grants, 3);
    });
}

fn blake3_hex(bytes: &[u8]) -> String {
    model_digest(bytes)
}
