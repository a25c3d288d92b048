//! The committed model (`forecast/models/uci-lstm.json`, written by
//! `scripts/train-forecast.sh`) loads, round-trips exactly, carries its metadata, reproduces
//! its recorded test MAE on the committed 2010 series, and bad model files are rejected with
//! a clear error.

use seer_ckks::ParameterSet;
use seer_forecast::data::load_hourly_csv;
use seer_forecast::model::{FORMAT_VERSION, HIDDEN, HISTORY, STEPS, anchors, mae};
use seer_forecast::{ForecastError, ForecastModel, forecast_series};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/uci-lstm.json");
/// The UCI household's hourly series 2009-12-01 … 2010-11-26 20:00 (written by
/// `cargo run --release -p seer-forecast --example evaluate -- --write-hourly 2009-12-01 PATH`).
const SERIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/uci-hourly-2009-12-2010.csv"
);
/// Hours of December 2009 before the test period.
const DECEMBER: usize = 31 * 24;

fn committed() -> (String, ForecastModel) {
    let json = std::fs::read_to_string(MODEL).expect("committed model");
    let model = ForecastModel::from_json(&json).expect("valid model");
    (json, model)
}

#[test]
fn committed_model_round_trips_and_carries_metadata() {
    let (json, model) = committed();
    assert_eq!(model.to_json().unwrap(), json, "exact round trip");
    assert_eq!(
        ForecastModel::from_json(&model.to_json().unwrap()).unwrap(),
        model
    );
    assert_eq!(model.format_version, FORMAT_VERSION);
    let arch = &model.architecture;
    assert_eq!((arch.steps, arch.hidden, arch.horizon), (STEPS, HIDDEN, 1));
    assert_eq!(arch.circuit_depth, 17);
    assert!(arch.circuit_depth <= ParameterSet::N32768_L19_SEC128.levels());
    assert_eq!(arch.parameter_set, ParameterSet::N32768_L19_SEC128.id());
    let lags: Vec<usize> = (1..=24).chain([168]).collect();
    assert_eq!(model.linear.lags, lags);
    let meta = &model.meta;
    assert_eq!(meta.epsilon, None);
    assert!(meta.data.contains("UCI"));
    assert!(meta.train[0].starts_with("2006-12") && meta.train[1].starts_with("2009-09-30"));
    assert!(
        meta.validation[0].starts_with("2009-10-01")
            && meta.validation[1].starts_with("2009-12-31")
    );
    assert!(meta.test[0].starts_with("2010-01-01"));
    assert!(meta.best_epoch >= 1 && meta.best_epoch <= meta.epochs);
    // The target, ahead of every anchor.
    assert!(meta.metrics.test_mae <= 0.350, "{:?}", meta.metrics);
    assert!(meta.metrics.test_mae < meta.metrics.test_linear_mae);
}

#[test]
fn committed_model_reproduces_its_test_mae_and_beats_the_anchors() {
    let (_, model) = committed();
    let series = load_hourly_csv(SERIES).unwrap();
    assert_eq!(series.start.to_string(), "2009-12-01 00:00:00");
    let y = &series.kwh;
    let test = DECEMBER..y.len();
    const { assert!(DECEMBER >= HISTORY) };
    let f = forecast_series(&model, y);
    let got = mae(|p| f.get(p).unwrap(), y, test.clone());
    // The file holds the same hours rounded to 0.1 Wh: the MAE agrees far below its digits.
    assert!(
        (got - model.meta.metrics.test_mae).abs() < 1e-5,
        "{got} vs recorded {}",
        model.meta.metrics.test_mae
    );
    let persistence = mae(|p| anchors::persistence(y, p), y, test.clone());
    let seasonal = mae(|p| anchors::seasonal_day(y, p), y, test.clone());
    let linear = mae(|p| model.linear.at(y, p), y, test.clone());
    assert!(
        got < persistence && got < seasonal && got < linear,
        "{got} {persistence} {seasonal} {linear}"
    );
    // The forecast past the end of the series exists and is a plausible load.
    let next = f.get(y.len()).unwrap();
    assert!((0.0..10.0).contains(&next), "{next}");
    assert_eq!(f.positions(), HISTORY..y.len() + 1);
}

fn rejected(json: &str) -> String {
    match ForecastModel::from_json(json) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted a bad model"),
    }
}

fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let (json, _) = committed();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    edit(&mut v);
    v.to_string()
}

#[test]
fn bad_model_files_are_rejected_with_a_clear_error() {
    assert!(matches!(
        ForecastModel::from_json("{\"format_version\": 1}"),
        Err(ForecastError::Json(_))
    ));
    assert!(rejected("not json").contains("model json"));
    let msg = rejected(&edited(|v| v["format_version"] = 7.into()));
    assert!(msg.contains("format version 7"), "{msg}");
    let msg = rejected(&edited(|v| v["architecture"]["steps"] = 5.into()));
    assert!(msg.contains("5 steps"), "{msg}");
    let msg = rejected(&edited(|v| v["architecture"]["horizon"] = 30.into()));
    assert!(msg.contains("horizon 30"), "{msg}");
    let msg = rejected(&edited(|v| v["architecture"]["circuit_depth"] = 12.into()));
    assert!(msg.contains("depth 12"), "{msg}");
    let msg = rejected(&edited(|v| {
        v["gates"]["forget"]["bias"].as_array_mut().unwrap().pop();
    }));
    assert!(msg.contains("gate forget"), "{msg}");
    let msg = rejected(&edited(|v| {
        v["gates"]["cell"]["u"][3]
            .as_array_mut()
            .unwrap()
            .push(0.5.into());
    }));
    assert!(
        msg.contains("gate cell") && msg.contains("recurrent"),
        "{msg}"
    );
    let msg = rejected(&edited(|v| v["normalization"]["std"] = 0.0.into()));
    assert!(msg.contains("normalisation"), "{msg}");
    let msg = rejected(&edited(|v| v["linear"]["lags"][0] = 0.into()));
    assert!(msg.contains("lag 0"), "{msg}");
    let msg = rejected(&edited(|v| v["linear"]["lags"][1] = 1.into()));
    assert!(msg.contains("duplicate lag"), "{msg}");
    let msg = rejected(&edited(|v| {
        v["linear"]["coefficients"].as_array_mut().unwrap().pop();
    }));
    assert!(msg.contains("one coefficient per lag"), "{msg}");
    let msg = rejected(&edited(|v| {
        v["readout"]["weights"].as_array_mut().unwrap().pop();
    }));
    assert!(msg.contains("hidden units"), "{msg}");
    // Load from a path names the file.
    let dir = std::env::temp_dir().join(format!("seer-forecast-bad-{}", std::process::id()));
    std::fs::write(&dir, edited(|v| v["format_version"] = 2.into())).unwrap();
    let msg = ForecastModel::load(&dir).unwrap_err().to_string();
    std::fs::remove_file(&dir).unwrap();
    assert!(
        msg.contains(&dir.display().to_string()) && msg.contains("format version 2"),
        "{msg}"
    );
}
