//! Times the encrypted `daily` computation for a request of four meters (one ciphertext of
//! four homes), as the utility evaluates it: median of 31 evaluations, per home-day, with the
//! weight plaintexts encoded per product ([`evaluate`]) and encoded once and reused
//! ([`PreparedCircuit`]), interleaved. Ignored by default (a measurement, not a check):
//!
//! ```text
//! cargo test --release -p seer-daily --test evaluate_time -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use seer_ckks::{Ciphertext, CkksContext, Encryptor, Evaluator, KeyGenerator};
use seer_daily::PARAMETERS;
use seer_daily::circuit::{PreparedCircuit, all_galois_steps, encrypt, evaluate};
use seer_daily::history::HomeHistory;

mod common;
use common::{fixture, model};

const RUNS: usize = 31;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn evaluation_time_per_home_day_of_a_four_meter_request() {
    let m = model();
    let ctx = CkksContext::new(PARAMETERS).unwrap();
    let keygen = KeyGenerator::new(&ctx).unwrap();
    let encryptor = Encryptor::new(&ctx, &keygen.public_key().unwrap()).unwrap();
    let evaluator = Evaluator::new(
        &ctx,
        None,
        Some(keygen.galois_keys(&all_galois_steps()).unwrap()),
    );
    let days = fixture();
    let history = HomeHistory::from_hourly_days(&days).unwrap();
    let n = days.len();
    let cts: Vec<Ciphertext> = (0..4)
        .map(|b| {
            encrypt(
                &encryptor,
                &m.prepare(&history, days[n - 4 + b].0).unwrap(),
                b,
            )
            .unwrap()
        })
        .collect();
    let meters: Vec<(usize, &Ciphertext)> = cts.iter().enumerate().collect();
    let prepared = PreparedCircuit::new(&m);
    // The first evaluation encodes the plaintexts: timed apart.
    let t = Instant::now();
    let first = prepared.evaluate(&evaluator, &meters).unwrap();
    let first_call = t.elapsed();
    let (mut uncached, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = evaluate(&m, &evaluator, &meters).unwrap();
        uncached.push(t.elapsed());
        let t = Instant::now();
        let again = prepared.evaluate(&evaluator, &meters).unwrap();
        cached.push(t.elapsed());
        assert_eq!(
            out.to_bytes(&ctx).unwrap(),
            again.to_bytes(&ctx).unwrap(),
            "identical outputs"
        );
    }
    assert_eq!(
        first.to_bytes(&ctx).unwrap(),
        evaluate(&m, &evaluator, &meters)
            .unwrap()
            .to_bytes(&ctx)
            .unwrap()
    );
    let (uncached, cached) = (median(uncached), median(cached));
    eprintln!(
        "daily evaluate, 4 meters, median of {RUNS}: weights encoded per product {uncached:?} \
         per request, {:?} per home-day; encoded once {cached:?} per request, {:?} per \
         home-day (first call, encoding included: {first_call:?})",
        uncached / 4,
        cached / 4
    );
}
