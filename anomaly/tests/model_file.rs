//! The committed model (`anomaly/models/uci-exact.json`, written by
//! `cargo run --release -p seer-anomaly --example evaluate -- --save-model ...`) loads,
//! validates, round-trips, fits the n = 32768 parameter set and carries its metadata.

use seer_anomaly::AnomalyModel;
use seer_anomaly::features::{DayProfile, DayRecord, HISTORY_DAYS, HOURS};
use seer_anomaly::forest::average_path_length;
use seer_anomaly::model::Lane;
use seer_ckks::ParameterSet;

fn committed() -> (String, AnomalyModel) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/uci-exact.json");
    let json = std::fs::read_to_string(path).expect("committed model");
    let model = AnomalyModel::from_json(&json).expect("valid model");
    (json, model)
}

#[test]
fn committed_model_is_consistent() {
    let (json, model) = committed();
    // Exact round trip: the key authority re-executing the circuit uses the same numbers.
    assert_eq!(model.to_json().unwrap(), json);
    assert_eq!(model.lane, Lane::Exact);
    assert_eq!(model.meta.forest.trees, 100);
    assert_eq!(model.forest.subsample, 256);
    assert_eq!(model.forest.height_limit, 8);
    assert_eq!(model.meta.threshold_quantile, 0.95);
    assert!(model.meta.train_from.is_some() && model.meta.train_to.is_some());
    assert!(model.meta.data.contains("UCI"));
    assert!(model.circuit_depth() <= ParameterSet::N32768_L19_SEC128.levels());
    // Thresholds are scores: between the score of the longest and the shortest path.
    for t in [model.flag_threshold, model.hard_flag_threshold] {
        assert!(t > 0.3 && t < 0.9, "{t}");
    }
    assert!((model.path_normalizer() - average_path_length(256)).abs() < 1e-12);
}

#[test]
fn committed_model_scores_days_sensibly() {
    let (_, model) = committed();
    // A plain evening-peak day repeated for a week, then the same day, a theft day (0.3×) and
    // a day with its evening load moved to 01:00–05:00.
    let mut hours = [0.3; HOURS];
    hours[7..9].fill(1.2);
    hours[18..22].fill(2.0);
    let normal = DayProfile::try_new(hours).unwrap();
    let theft = DayProfile::try_new(hours.map(|v| v * 0.3)).unwrap();
    let mut shifted = hours;
    for h in 18..22 {
        shifted[h] = 0.3;
        shifted[h - 17] += 1.7;
    }
    let shifted = DayProfile::try_new(shifted).unwrap();
    let mut days = vec![normal; HISTORY_DAYS];
    days.extend([normal, theft, shifted]);
    // Each scored against the same normal week.
    let records: Vec<DayRecord> = DayRecord::from_days(&days)
        .into_iter()
        .map(|mut r| {
            r.prev_week = [0.0; HOURS];
            for (w, x) in r.prev_week.iter_mut().zip(normal.hours()) {
                *w = 7.0 * x;
            }
            r
        })
        .collect();
    let smooth: Vec<f64> = records
        .iter()
        .map(|r| model.score_smooth(r).score)
        .collect();
    let hard: Vec<f64> = records.iter().map(|r| model.score_hard(r)).collect();
    assert!(!model.flags(smooth[0]), "normal day flagged: {smooth:?}");
    assert!(model.flags(smooth[1]), "theft not flagged: {smooth:?}");
    assert!(model.flags(smooth[2]), "load shift not flagged: {smooth:?}");
    assert!(hard[1] > model.hard_flag_threshold && hard[2] > model.hard_flag_threshold);
    let why = model.explain(&model.score_smooth(&records[2]).isolation_credit);
    assert!(why.hours.contains(&2), "{why:?}");
}

/// The analytics lane keeps its model-file form (tag `lane`, ε, Δ in Wh, readings per hour):
/// files written before `seer_core::Lane` load, and writing them again gives the same bytes.
#[test]
fn analytics_lane_keeps_its_file_form() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(with = "seer_anomaly::model::lane_file")]
        lane: Lane,
    }
    let text = r#"{"lane":{"lane":"analytics","epsilon":5.0,"sensitivity_wh":2500,"readings_per_hour":4}}"#;
    let holder: Holder = serde_json::from_str(text).expect("file form");
    assert_eq!(
        holder.lane,
        Lane::Analytics {
            epsilon: 5.0,
            sensitivity_wh: Some(2500),
            readings_per_day: Some(96),
        }
    );
    assert_eq!(serde_json::to_string(&holder).expect("writes"), text);
    let exact = r#"{"lane":{"lane":"exact"}}"#;
    let holder: Holder = serde_json::from_str(exact).expect("file form");
    assert_eq!(holder.lane, Lane::Exact);
    assert_eq!(serde_json::to_string(&holder).expect("writes"), exact);
    // A lane the file form cannot state is refused rather than written differently.
    let partial = Holder {
        lane: Lane::analytics(1.0),
    };
    assert!(serde_json::to_string(&partial).is_err());
}
