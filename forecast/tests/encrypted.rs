//! The encrypted forecaster against its plaintext twin: the committed model on the UCI
//! household's 2010 test period (one ciphertext, one evaluation), every position within
//! 1e-3 kWh; the sum over two homes; too few levels refused.

use seer_ckks::{CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator, Level};
use seer_forecast::circuit::{self, PARAMETER_SET, ROTATION_STEPS};
use seer_forecast::data::load_hourly_csv;
use seer_forecast::model::HISTORY;
use seer_forecast::{ForecastError, ForecastModel, forecast_series};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/uci-lstm.json");
const SERIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/uci-hourly-2009-12-2010.csv"
);
/// Hours of December 2009 before the test period.
const DECEMBER: usize = 31 * 24;

#[test]
fn deep_encrypted_forecasts_match_the_twin_on_every_test_position() {
    let model = ForecastModel::load(MODEL).unwrap();
    let series = load_hourly_csv(SERIES).unwrap();
    // The 2010 test period with its history: home A.
    let a = &series.kwh[DECEMBER - HISTORY..];
    let test_hours = a.len() - HISTORY;
    assert!(test_hours > 7900, "{test_hours}");
    // Home B: another load shape on the same hours (a scaled, shifted copy), shorter.
    let b: Vec<f64> = series.kwh[..3000].iter().map(|v| 0.6 * v + 0.15).collect();

    let ctx = CkksContext::new(PARAMETER_SET).unwrap();
    circuit::check_series_len(&model, a.len(), ctx.slots()).unwrap();
    let keygen = KeyGenerator::new(&ctx).unwrap();
    let encryptor = Encryptor::new(&ctx, &keygen.public_key().unwrap()).unwrap();
    let ev = Evaluator::new(
        &ctx,
        Some(keygen.relin_keys().unwrap()),
        Some(keygen.galois_keys(&ROTATION_STEPS).unwrap()),
    );
    let decryptor = Decryptor::new(&ctx, &keygen.secret_key().unwrap()).unwrap();

    let out_a = circuit::evaluate(&ev, &model, &encryptor.encrypt_values(a).unwrap()).unwrap();
    let enc =
        circuit::forecasts_from_slots(&model, &decryptor.decrypt_values(&out_a).unwrap(), a.len())
            .unwrap();
    let twin = forecast_series(&model, a);
    assert_eq!(enc.positions(), twin.positions());
    // Every test hour and the hour after the series.
    assert_eq!(twin.values.len(), test_hours + 1);
    let mut worst = 0.0f64;
    for p in twin.positions() {
        let (e, t) = (enc.get(p).unwrap(), twin.get(p).unwrap());
        assert!(
            (e - t).abs() < 1e-3,
            "position {p}: encrypted {e} vs twin {t}"
        );
        worst = worst.max((e - t).abs());
    }
    eprintln!(
        "max deviation over {} positions: {worst:e} kWh",
        twin.values.len()
    );

    // The sum over homes: slot-wise sum of the output ciphertexts.
    let out_b = circuit::evaluate(&ev, &model, &encryptor.encrypt_values(&b).unwrap()).unwrap();
    let total = circuit::sum_homes(&ev, &[out_a, out_b]).unwrap();
    let total = decryptor.decrypt_values(&total).unwrap();
    let twin_b = forecast_series(&model, &b);
    for (p, got) in total.iter().enumerate().take(b.len() + 1).skip(HISTORY) {
        let want = twin.get(p).unwrap() + twin_b.get(p).unwrap();
        assert!((got - want).abs() < 2e-3, "position {p}: {got} vs {want}");
    }
}

#[test]
fn too_few_levels_and_too_long_series_are_refused() {
    let model = ForecastModel::load(MODEL).unwrap();
    let ctx = CkksContext::new(PARAMETER_SET).unwrap();
    let keygen = KeyGenerator::new(&ctx).unwrap();
    let encryptor = Encryptor::new(&ctx, &keygen.public_key().unwrap()).unwrap();
    let ev = Evaluator::new(&ctx, Some(keygen.relin_keys().unwrap()), None);
    let ct = encryptor.encrypt_values(&[1.0; 400]).unwrap();
    let low = ev.mod_switch_to(&ct, Level(16)).unwrap();
    assert!(matches!(
        circuit::evaluate(&ev, &model, &low),
        Err(ForecastError::DepthExceeded {
            needed: 17,
            available: 16
        })
    ));
    assert!(circuit::check_series_len(&model, ctx.slots(), ctx.slots()).is_err());
    assert!(circuit::check_series_len(&model, 100, ctx.slots()).is_err());
    assert!(circuit::check_series_len(&model, ctx.slots() - 1, ctx.slots()).is_ok());
}
