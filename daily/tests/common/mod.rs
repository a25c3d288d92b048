//! Helpers of the `seer-daily` integration tests: one cached key set at the daily lane's
//! parameters, the registered model and the UCI fixture days.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]

use std::sync::OnceLock;

use chrono::NaiveDate;
use seer_ckks::{CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator};
use seer_daily::circuit::all_galois_steps;
use seer_daily::{DailyModel, PARAMETERS};

/// Keys of one test process.
pub struct Keys {
    pub ctx: CkksContext,
    pub encryptor: Encryptor,
    pub evaluator: Evaluator,
    pub decryptor: Decryptor,
}

/// The cached key set.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ctx = CkksContext::new(PARAMETERS).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().unwrap()).unwrap();
        let galois = keygen.galois_keys(&all_galois_steps()).unwrap();
        let evaluator = Evaluator::new(&ctx, None, Some(galois));
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().unwrap()).unwrap();
        Keys {
            ctx,
            encryptor,
            evaluator,
            decryptor,
        }
    })
}

/// The registered model.
pub fn model() -> DailyModel {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/uci-daily.json");
    DailyModel::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture's days and hourly kWh.
pub fn fixture() -> Vec<(NaiveDate, [f64; 24])> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/uci-hourly-2010-01.csv"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut fields = l.split(',');
            let day: NaiveDate = fields.next().unwrap().parse().unwrap();
            let mut h = [0.0; 24];
            for (v, f) in h.iter_mut().zip(fields) {
                *v = f.parse().unwrap();
            }
            (day, h)
        })
        .collect()
}
