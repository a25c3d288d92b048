//! The prepared circuit (weight plaintexts encoded once per block and reused) against the
//! reference [`evaluate`] (a plaintext encoded per product): the serialized outputs must be
//! identical byte for byte, since the key authority re-executes the utility's evaluation and
//! compares bytes. Real UCI days (`tests/data/uci-hourly-2010-01.csv`) and the registered
//! model `models/uci-daily.json`.

use std::sync::Arc;

use seer_ckks::{Ciphertext, CkksContext, Evaluator};
use seer_daily::circuit::{
    CircuitCache, PreparedCircuit, active_rows, block_outputs, encrypt, evaluate,
};
use seer_daily::history::HomeHistory;
use seer_daily::layout::BLOCKS_PER_CIPHERTEXT;
use seer_daily::model::DailyInput;
use seer_daily::{DailyError, DailyModel};

mod common;
use common::{fixture, keys, model};

/// The inputs of the last `n` fixture days.
fn inputs(m: &DailyModel, n: usize) -> Vec<DailyInput> {
    let days = fixture();
    let history = HomeHistory::from_hourly_days(&days).unwrap();
    days[days.len() - n..]
        .iter()
        .map(|(d, _)| m.prepare(&history, *d).unwrap())
        .collect()
}

fn bytes(ct: &Ciphertext) -> Vec<u8> {
    ct.to_bytes_uncompressed(&keys().ctx).unwrap()
}

#[test]
fn the_prepared_circuit_gives_the_reference_bytes_in_every_block_order() {
    let m = model();
    let k = keys();
    let xs = inputs(&m, 8);
    let prepared = PreparedCircuit::new(&m);
    assert_eq!(
        prepared.encoded_blocks(),
        0,
        "nothing is encoded before it is needed"
    );
    // Two requests of four homes each (other days, so other ciphertexts), then partial and
    // permuted requests: every output identical to the reference, byte for byte.
    let cts: Vec<Ciphertext> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| encrypt(&k.encryptor, x, i % BLOCKS_PER_CIPHERTEXT).unwrap())
        .collect();
    let requests: Vec<Vec<(usize, &Ciphertext)>> = vec![
        (0..4).map(|i| (i, &cts[i])).collect(),
        (4..8).map(|i| (i - 4, &cts[i])).collect(),
        vec![(2, &cts[2]), (0, &cts[4])],
        vec![(3, &cts[7]), (1, &cts[1]), (0, &cts[0]), (2, &cts[6])],
        vec![(1, &cts[5])],
    ];
    for (i, meters) in requests.iter().enumerate() {
        let reference = evaluate(&m, &k.evaluator, meters).unwrap();
        let cached = prepared.evaluate(&k.evaluator, meters).unwrap();
        assert_eq!(bytes(&cached), bytes(&reference), "request {i}");
        assert_eq!(
            cached.to_bytes(&k.ctx).unwrap(),
            reference.to_bytes(&k.ctx).unwrap(),
            "request {i}, compressed (what the utility sends)"
        );
        if i == 0 {
            assert_eq!(prepared.encoded_blocks(), BLOCKS_PER_CIPHERTEXT);
        }
    }
    // And it is the circuit: each block decrypts to the plaintext twin.
    let out = prepared.evaluate(&k.evaluator, &requests[0]).unwrap();
    let plain = k.decryptor.decrypt_values(&out).unwrap();
    for (b, x) in xs[..4].iter().enumerate() {
        let got = block_outputs(&plain, b).unwrap();
        for (g, t) in got.iter().zip(m.evaluate_plain(x)) {
            assert!((g - t).abs() < 1e-3, "block {b}: {g} vs {t}");
        }
    }
}

#[test]
fn the_prepared_circuit_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PreparedCircuit>();
    send_sync::<CircuitCache>();
    let m = model();
    let k = keys();
    let xs = inputs(&m, 4);
    let cts: Arc<Vec<Ciphertext>> = Arc::new(
        xs.iter()
            .enumerate()
            .map(|(b, x)| encrypt(&k.encryptor, x, b).unwrap())
            .collect(),
    );
    let meters: Vec<(usize, &Ciphertext)> = cts.iter().enumerate().collect();
    let reference = bytes(&evaluate(&m, &k.evaluator, &meters).unwrap());
    let prepared = Arc::new(PreparedCircuit::new(&m));
    // Four threads race to encode the same blocks: all outputs identical.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (prepared, cts) = (Arc::clone(&prepared), Arc::clone(&cts));
            std::thread::spawn(move || {
                let meters: Vec<(usize, &Ciphertext)> = cts.iter().enumerate().collect();
                bytes(&prepared.evaluate(&keys().evaluator, &meters).unwrap())
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), reference);
    }
}

#[test]
fn the_cache_keeps_one_models_circuit_and_follows_a_change() {
    let m = model();
    let cache = CircuitCache::new();
    let a = cache.get(&m);
    let b = cache.get(&m);
    assert!(
        Arc::ptr_eq(&a, &b),
        "the same model: the same prepared circuit"
    );
    assert!(a.is_for(&m));
    // Another model (one weight changed): prepared again, and the old one is not for it.
    let mut other = m.clone();
    other.weights[0][0] *= 2.0;
    assert_eq!(active_rows(&other), active_rows(&m));
    assert!(!a.is_for(&other));
    let c = cache.get(&other);
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(c.is_for(&other));
    assert!(Arc::ptr_eq(&c, &cache.get(&other)));
}

#[test]
fn the_prepared_circuit_refuses_what_evaluate_refuses() {
    let m = model();
    let k = keys();
    let x = &inputs(&m, 1)[0];
    let ct = encrypt(&k.encryptor, x, 0).unwrap();
    let prepared = PreparedCircuit::new(&m);
    for meters in [
        vec![(0, &ct), (0, &ct)],
        vec![(BLOCKS_PER_CIPHERTEXT, &ct)],
        vec![],
    ] {
        assert!(matches!(
            prepared.evaluate(&k.evaluator, &meters),
            Err(DailyError::InvalidInput { .. })
        ));
    }
    let other = CkksContext::new(seer_ckks::ParameterSet::N8192_L2_SEC128).unwrap();
    assert!(matches!(
        prepared.evaluate(&Evaluator::new(&other, None, None), &[(0, &ct)]),
        Err(DailyError::InvalidInput { .. })
    ));
}
