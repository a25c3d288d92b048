//! Criterion benchmarks of every engine operation at n = 8192, 16384 and 32768, with a
//! `sealy` baseline (SEAL's multiply + relinearize called through `sealy`) to show the
//! engine's overhead. Run: `cargo bench -p seer-ckks --bench ops` (results in BENCHMARKS.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benches fail loudly"
)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use seer_ckks::*;

fn values(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i as f64) * 0.001).sin()).collect()
}

fn engine(c: &mut Criterion) {
    for set in ParameterSet::NAMED {
        let n = set.degree();
        let ctx = CkksContext::new(set).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("enc");
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("dec");
        let evaluator = Evaluator::new(
            &ctx,
            Some(keygen.relin_keys().expect("relin")),
            Some(keygen.galois_keys(&[1]).expect("galois")),
        );
        let v = values(ctx.slots());
        let a = encryptor.encrypt_values(&v).expect("a");
        let b = encryptor.encrypt_values(&v).expect("b");
        let raw_product = evaluator.multiply_without_rescale(&a, &b).expect("raw");
        let bytes = a.to_bytes(&ctx).expect("bytes");
        let bytes_plain = a.to_bytes_uncompressed(&ctx).expect("bytes");

        let mut g = c.benchmark_group(format!("ckks/n{n}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.bench_function("encode+encrypt", |bch| {
            bch.iter(|| encryptor.encrypt_values(&v).expect("enc"))
        });
        g.bench_function("decrypt+decode", |bch| {
            bch.iter(|| decryptor.decrypt_values(&a).expect("dec"))
        });
        g.bench_function("add", |bch| {
            bch.iter(|| evaluator.add(&a, &b).expect("add"))
        });
        g.bench_function("add_plain", |bch| {
            bch.iter(|| evaluator.add_plain(&a, &v).expect("addp"))
        });
        g.bench_function("multiply_plain+rescale", |bch| {
            bch.iter(|| evaluator.multiply_plain(&a, &v).expect("mulp"))
        });
        g.bench_function("multiply_scalar+rescale", |bch| {
            bch.iter(|| evaluator.multiply_scalar(&a, 1.5).expect("muls"))
        });
        g.bench_function("multiply+relinearize", |bch| {
            bch.iter(|| evaluator.multiply_without_rescale(&a, &b).expect("mul"))
        });
        g.bench_function("rescale", |bch| {
            bch.iter(|| evaluator.rescale(&raw_product).expect("rescale"))
        });
        g.bench_function("multiply+relinearize+rescale", |bch| {
            bch.iter(|| evaluator.multiply(&a, &b).expect("mul"))
        });
        g.bench_function("rotate", |bch| {
            bch.iter(|| evaluator.rotate(&a, 1).expect("rot"))
        });
        g.bench_function("serialize", |bch| {
            bch.iter(|| a.to_bytes(&ctx).expect("ser"))
        });
        g.bench_function("deserialize", |bch| {
            bch.iter(|| Ciphertext::from_bytes(&ctx, &bytes).expect("de"))
        });
        g.bench_function("deserialize_uncompressed", |bch| {
            bch.iter(|| Ciphertext::from_bytes(&ctx, &bytes_plain).expect("de"))
        });
        let p = Polynomial::try_new(vec![0.5, 0.25, -0.125, 0.0625]).expect("poly");
        g.bench_function("polynomial_degree3", |bch| {
            bch.iter(|| evaluator.evaluate_polynomial(&a, &p).expect("poly"))
        });
        g.finish();
        println!(
            "n{n}: ciphertext {} bytes serialized, relin keys {} bytes, one galois key {} bytes",
            bytes.len(),
            evaluator_relin_len(&keygen),
            evaluator
                .galois_keys()
                .map(|k| k.serialized_len())
                .unwrap_or(0)
        );
    }
}

fn evaluator_relin_len(keygen: &KeyGenerator) -> usize {
    keygen.relin_keys().map(|k| k.serialized_len()).unwrap_or(0)
}

/// SEAL's multiply + relinearize called through `sealy` directly, for the overhead check.
fn sealy_baseline(c: &mut Criterion) {
    use sealy::{
        CKKSEncoder, CKKSEncryptionParametersBuilder, CKKSEvaluator, CoefficientModulusFactory,
        Context, DegreeType, Encryptor as SEncryptor, Evaluator as _,
        KeyGenerator as SKeyGenerator, SecurityLevel,
    };
    for (degree, bits) in [
        (DegreeType::D8192, vec![60, 40, 40, 60]),
        (
            DegreeType::D16384,
            [vec![60], vec![40; 7], vec![60]].concat(),
        ),
        (
            DegreeType::D32768,
            [vec![60], vec![40; 19], vec![60]].concat(),
        ),
    ] {
        let n = u64::from(degree);
        let params = CKKSEncryptionParametersBuilder::new()
            .set_poly_modulus_degree(degree)
            .set_coefficient_modulus(
                CoefficientModulusFactory::build(degree, &bits).expect("moduli"),
            )
            .build()
            .expect("params");
        let ctx = Context::new(&params, true, SecurityLevel::TC128).expect("ctx");
        let keygen = SKeyGenerator::new(&ctx).expect("keygen");
        let encoder = CKKSEncoder::new(&ctx, 2f64.powi(40)).expect("encoder");
        let encryptor =
            SEncryptor::with_public_key(&ctx, &keygen.create_public_key()).expect("enc");
        let relin = keygen.create_relinearization_keys().expect("relin");
        let evaluator = CKKSEvaluator::new(&ctx).expect("eval");
        let v = values(n as usize / 2);
        let pt = encoder.encode_f64(&v).expect("encode");
        let a = encryptor.encrypt(&pt).expect("a");
        let b = encryptor.encrypt(&pt).expect("b");
        let mut g = c.benchmark_group(format!("sealy-baseline/n{n}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.bench_function(BenchmarkId::from_parameter("multiply+relinearize"), |bch| {
            bch.iter(|| {
                let p = evaluator.multiply(&a, &b).expect("mul");
                evaluator.relinearize(&p, &relin).expect("relin")
            })
        });
        g.bench_function(BenchmarkId::from_parameter("add"), |bch| {
            bch.iter(|| evaluator.add(&a, &b).expect("add"))
        });
        g.finish();
    }
}

criterion_group!(benches, engine, sealy_baseline);
criterion_main!(benches);
