//! The encrypted scorer against its plaintext twin: encrypt a test set of days, evaluate,
//! decrypt, compare scores within 0.01 and flags away from the threshold.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use seer_anomaly::circuit::{EncryptedScorer, EncryptedValue, ROTATION_STEPS, hour_planes};
use seer_anomaly::features::{DayProfile, DayRecord, FeatureSet, HISTORY_DAYS, HOURS};
use seer_anomaly::forest::ForestOptions;
use seer_anomaly::inject::{AnomalyKind, inject_day};
use seer_anomaly::model::{AnomalyModel, TrainOptions};
use seer_anomaly::step::StepApprox;
use seer_ckks::{CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator, ParameterSet};

const CAP: f64 = 5.0;

/// A household with an evening peak, random day-to-day variation and weekly rhythm.
fn days(n: usize, rng: &mut StdRng) -> Vec<[f64; HOURS]> {
    (0..n)
        .map(|d| {
            let level = if d % 7 >= 5 { 1.2 } else { 1.0 } * rng.random_range(0.8..1.2);
            let mut h = [0.0; HOURS];
            for (i, v) in h.iter_mut().enumerate() {
                let base: f64 = match i {
                    0..=5 => 0.3,
                    6..=8 => 0.9,
                    17..=21 => 1.8,
                    _ => 0.6,
                };
                *v = (base * level * rng.random_range(0.7..1.3)).min(CAP);
            }
            h
        })
        .collect()
}

#[test]
fn deep_encrypted_scores_match_the_smooth_twin() {
    let mut rng = StdRng::seed_from_u64(42);
    let train: Vec<DayProfile> = days(200, &mut rng)
        .into_iter()
        .map(|h| DayProfile::try_new(h).unwrap())
        .collect();
    let options = TrainOptions {
        // Linear, ratio, previous-week and squared features all appear.
        features: FeatureSet::named("spread").unwrap(),
        forest: ForestOptions {
            trees: 8,
            subsample: 32,
            seed: 9,
        },
        grid_size: 6,
        step: StepApprox::g7_stages(3),
        ..TrainOptions::exact(CAP)
    };
    let model = AnomalyModel::train(&DayRecord::from_days(&train), &options).unwrap();
    // 2 (margins with squares) + 9 (step) + ⌈5/2⌉ + 1 (trees of height 5).
    assert_eq!(model.forest.height(), 5);
    assert_eq!(model.circuit_depth(), 2 + 9 + 3 + 1);

    // Test set: 40 days, every third one after the history with an injected anomaly.
    let mut test = days(40, &mut rng);
    for (i, d) in test.iter_mut().enumerate().skip(HISTORY_DAYS) {
        if i % 3 == 0 {
            let kind = AnomalyKind::ALL[(i / 3) % 4];
            inject_day(d, kind, &mut rng);
            for v in d.iter_mut() {
                *v = v.clamp(0.0, CAP);
            }
        }
    }
    let profiles: Vec<DayProfile> = test
        .iter()
        .map(|h| DayProfile::try_new(*h).unwrap())
        .collect();
    let records = DayRecord::from_days(&profiles);
    let twin: Vec<_> = records.iter().map(|r| model.score_smooth(r)).collect();

    let ctx = CkksContext::new(ParameterSet::N32768_L19_SEC128).unwrap();
    let keygen = KeyGenerator::new(&ctx).unwrap();
    let encryptor = Encryptor::new(&ctx, &keygen.public_key().unwrap()).unwrap();
    let evaluator = Evaluator::new(
        &ctx,
        Some(keygen.relin_keys().unwrap()),
        Some(keygen.galois_keys(&ROTATION_STEPS).unwrap()),
    );
    let decryptor = Decryptor::new(&ctx, &keygen.secret_key().unwrap()).unwrap();
    let planes: Vec<_> = hour_planes(&test)
        .iter()
        .map(|p| encryptor.encrypt_values(p).unwrap())
        .collect();
    let scorer = EncryptedScorer::try_new(&model, &evaluator).unwrap();
    let out = scorer.score(&planes).unwrap();
    let path = decryptor.decrypt_values(&out.path_sum).unwrap();
    let splits: Vec<Vec<f64>> = out
        .isolation_credit
        .iter()
        .map(|v| match v {
            EncryptedValue::Encrypted(c) => decryptor.decrypt_values(c).unwrap(),
            EncryptedValue::Public(x) => vec![*x; test.len()],
        })
        .collect();

    let (mut compared_flags, mut compared_flagged) = (0, 0);
    for (j, t) in twin.iter().enumerate() {
        let slot = j + HISTORY_DAYS;
        let score = model.score_from_path_sum(path[slot]);
        assert!(
            (score - t.score).abs() < 0.01,
            "day {slot}: encrypted {score} vs twin {}",
            t.score
        );
        // The path sum itself agrees far more tightly than the 0.01 asked of the score.
        assert!((path[slot] - t.path_sum).abs() < 1e-3, "day {slot}");
        for (f, v) in t.isolation_credit.iter().enumerate() {
            assert!((splits[f][slot] - v).abs() < 1e-3, "day {slot} feature {f}");
        }
        if (t.score - model.flag_threshold).abs() > 0.01 {
            assert_eq!(
                model.flags(score),
                model.flags(t.score),
                "flag of day {slot}"
            );
            compared_flags += 1;
            compared_flagged += usize::from(model.flags(t.score));
        }
    }
    // Both outcomes are exercised away from the threshold.
    assert!(compared_flags >= 10, "{compared_flags} flags compared");
    assert!(compared_flagged > 0 && compared_flagged < compared_flags);
}

#[test]
fn scorer_rejects_bad_input() {
    let mut rng = StdRng::seed_from_u64(1);
    let train: Vec<DayProfile> = days(60, &mut rng)
        .into_iter()
        .map(|h| DayProfile::try_new(h).unwrap())
        .collect();
    let options = TrainOptions {
        forest: ForestOptions {
            trees: 2,
            subsample: 8,
            seed: 1,
        },
        grid_size: 2,
        step: StepApprox::g7_stages(3),
        ..TrainOptions::exact(CAP)
    };
    let model = AnomalyModel::train(&DayRecord::from_days(&train), &options).unwrap();
    // 1 + 9 + 3 levels: more than n = 8192 offers.
    let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).unwrap();
    let evaluator = Evaluator::new(&ctx, None, None);
    assert!(matches!(
        EncryptedScorer::try_new(&model, &evaluator),
        Err(seer_anomaly::AnomalyError::DepthExceeded { .. })
    ));
}

#[test]
fn encrypted_zscore_matches_the_plaintext_detector() {
    use seer_anomaly::zscore::{ZScoreCircuit, rolling_zscore, zscore_from_parts};
    let mut rng = StdRng::seed_from_u64(5);
    let mut test = days(80, &mut rng);
    // A theft day and a spike day after the window.
    test[50] = test[50].map(|v| v * 0.3);
    test[60][19] = CAP;
    let circuit = ZScoreCircuit::try_new(16).unwrap();
    let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).unwrap();
    let keygen = KeyGenerator::new(&ctx).unwrap();
    let encryptor = Encryptor::new(&ctx, &keygen.public_key().unwrap()).unwrap();
    let evaluator = Evaluator::new(
        &ctx,
        Some(keygen.relin_keys().unwrap()),
        Some(keygen.galois_keys(&circuit.rotation_steps()).unwrap()),
    );
    let decryptor = Decryptor::new(&ctx, &keygen.secret_key().unwrap()).unwrap();
    let planes: Vec<_> = hour_planes(&test)
        .iter()
        .map(|p| encryptor.encrypt_values(p).unwrap())
        .collect();
    let out = circuit.evaluate(&evaluator, &planes).unwrap();
    let r = decryptor.decrypt_values(&out.residual).unwrap();
    let v = decryptor.decrypt_values(&out.variance).unwrap();
    let totals: Vec<f64> = test.iter().map(|d| d.iter().sum()).collect();
    let expected = rolling_zscore(&totals, 16);
    for i in 16..test.len() {
        let want = expected[i].unwrap();
        let got = zscore_from_parts(r[i], v[i]).unwrap();
        assert!(
            (got - want).abs() < 1e-3 * want.max(1.0),
            "day {i}: {got} vs {want}"
        );
    }
    // The theft day stands out.
    assert!(expected[50].unwrap() > 3.0);
}
