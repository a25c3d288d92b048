//! Training smoke test (feature `tch`): a few epochs on about a month of the committed series;
//! the loss decreases, and the exported model's plain-Rust forward pass equals tch's forward.
#![cfg(feature = "tch")]

use seer_forecast::ForecastModel;
use seer_forecast::data::{Split, load_hourly_csv};
use seer_forecast::model::HISTORY;
use seer_forecast::train::{TrainOptions, Trainer, TrainingData, train};

const SERIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/uci-hourly-2009-12-2010.csv"
);

#[test]
fn a_few_epochs_on_a_month_reduce_the_loss_and_export_faithfully() {
    tch::set_num_threads(1);
    let series = load_hourly_csv(SERIES).unwrap();
    let y = &series.kwh[..HISTORY + 31 * 24];
    // Train on the month after the history, validate on its last week, "test" on it too.
    let end = y.len();
    let split = Split {
        train: HISTORY..end - 168,
        validation: end - 168..end,
        test: end - 168..end,
    };
    let label = || [String::from("smoke"), String::from("smoke")];
    let data = TrainingData {
        inputs: y,
        targets: y,
        split: split.clone(),
        labels: [label(), label(), label()],
        data: "committed UCI sample".into(),
        epsilon: None,
        sensitivity_wh: None,
    };
    let options = TrainOptions {
        epochs: 6,
        batch_size: 64,
        learning_rate: 3e-3,
        seed: 7,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(data.clone(), options.clone()).unwrap();
    let losses: Vec<f64> = (0..options.epochs)
        .map(|_| trainer.epoch().unwrap().loss)
        .collect();
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        losses[losses.len() - 1] < losses[0],
        "loss did not decrease: {losses:?}"
    );

    // The exported model: JSON round trip, and Rust forward == tch forward.
    let model = trainer.export(options.epochs).unwrap();
    let model = ForecastModel::from_json(&model.to_json().unwrap()).unwrap();
    let positions: Vec<usize> = (HISTORY..end).collect();
    let torch = trainer.predict(&positions).unwrap();
    for (p, t) in positions.iter().zip(&torch) {
        let r = model.forecast_at(y, *p).unwrap();
        assert!((r - t).abs() < 1e-9, "position {p}: rust {r} vs tch {t}");
    }
    // The best-epoch driver returns a valid model with consistent metrics.
    let best = train(data, options, |_| {}).unwrap();
    assert!(best.meta.best_epoch >= 1);
    assert!(best.meta.metrics.validation_mae.is_finite());
}
