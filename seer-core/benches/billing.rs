//! Server time of the homomorphic bill, per home-month, amortized over a full packing group.
//!
//! `cargo bench -p seer-core --bench billing`
//!
//! Scenarios (BESCOM slabs, `N8192_L2_SEC128`, 1024 homes per ciphertext):
//! - `add_batch`: one batch ciphertext added into a group's running sum (the per-batch cost);
//! - `finish`: rates, block sums and mask, once per group and period;
//! - `group_month/daily_batches`: a full group, 31 daily batches per home (31,744 additions)
//!   plus `finish`;
//! - `group_month/one_batch_per_home`: a full group where each home sends one batch per period
//!   (or the server keeps only each home's latest period-to-date batch): 1024 additions plus
//!   `finish`.
//!
//! The group scenarios report throughput in home-months per second; the amortized time per
//! home-month is printed at the start, from a direct timing of each scenario. Additions cycle
//! over a pool of 64 distinct batch ciphertexts (25 MB, beyond the caches), which costs the
//! server the same as 31,744 distinct ones without holding 12 GB of them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seer_ckks::{Ciphertext, CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator};
use seer_core::circuits::billing::{BillingLayout, GroupAccumulator, PARAMETER_SET};
use seer_core::tariff::{CellEnergy, Tariff};
use seer_core::units::Wh;

const DAYS: usize = 31;
const POOL: usize = 64;

struct Setup {
    layout: BillingLayout,
    evaluator: Evaluator,
    decryptor: Decryptor,
    pool: Vec<Ciphertext>,
    pool_cells: Vec<(usize, CellEnergy)>,
    galois_bytes: usize,
    ciphertext_bytes: usize,
    ctx: CkksContext,
}

fn setup() -> Setup {
    let ctx = CkksContext::new(PARAMETER_SET).expect("context");
    let keygen = KeyGenerator::new(&ctx).expect("keygen");
    let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("encryptor");
    let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("decryptor");
    let tariff = Tariff::bescom();
    let layout = BillingLayout::try_new(&tariff, &ctx).expect("layout");
    let galois = keygen.galois_keys(&layout.galois_steps()).expect("galois");
    let galois_bytes = galois.serialized_len();
    // The utility's evaluator: the layout's Galois keys only, no relinearization keys.
    let evaluator = Evaluator::new(&ctx, None, Some(galois));
    let mut pool = Vec::with_capacity(POOL);
    let mut pool_cells = Vec::with_capacity(POOL);
    for i in 0..POOL {
        let position = i * (layout.capacity() / POOL);
        let cells: Vec<Wh> = (0..4)
            .map(|c| Wh::try_new(((i * 7 + c * 13) % 40) as i64 * 250).expect("wh"))
            .collect();
        let cells = CellEnergy::try_from_cells(&tariff, cells).expect("cells");
        pool.push(
            layout
                .encrypt_batch(&encryptor, position, &cells)
                .expect("encrypt"),
        );
        pool_cells.push((position, cells));
    }
    let ciphertext_bytes = pool[0].to_bytes(&ctx).expect("serialize").len();
    Setup {
        layout,
        evaluator,
        decryptor,
        pool,
        pool_cells,
        galois_bytes,
        ciphertext_bytes,
        ctx,
    }
}

fn group_month(s: &Setup, batches_per_home: usize) -> Ciphertext {
    let mut acc = GroupAccumulator::new(&s.layout, &s.evaluator).expect("accumulator");
    let total = s.layout.capacity() * batches_per_home;
    for i in 0..total {
        acc.add(s.pool_cells[i % POOL].0, &s.pool[i % POOL])
            .expect("add");
    }
    acc.finish().expect("finish").bills
}

/// The circuit as it was before lanes were masked inside it (sum, rates, block sums, output
/// mask): timed beside [`group_month`] in the same run, so that the cost of block isolation
/// is a ratio measured on one machine at one moment.
fn unmasked_group_month(s: &Setup, batches_per_home: usize) -> Ciphertext {
    let ev = &s.evaluator;
    let total = s.layout.capacity() * batches_per_home;
    let mut sum = s.pool[0].try_clone().expect("clone");
    for i in 1..total {
        ev.add_assign(&mut sum, &s.pool[i % POOL]).expect("add");
    }
    let charged = ev
        .multiply_plain(&sum, s.layout.rate_vector())
        .expect("rates");
    let totals = ev
        .sum_slots(&charged, s.layout.block_width())
        .expect("sums");
    let mask: Vec<f64> = (0..s.layout.slots())
        .map(|slot| f64::from(u8::from(slot % s.layout.block_width() == 0)))
        .collect();
    ev.multiply_plain(&totals, &mask).expect("mask")
}

/// Prints the masked circuit's time against the unmasked one's, median of `runs`, one run.
fn report_isolation_cost(s: &Setup, batches_per_home: usize, runs: usize) {
    let homes = s.layout.capacity() as f64;
    let median = |f: &dyn Fn() -> Ciphertext| {
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                black_box(f());
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[runs / 2]
    };
    let masked = median(&|| group_month(s, batches_per_home));
    let unmasked = median(&|| unmasked_group_month(s, batches_per_home));
    println!(
        "billing: {batches_per_home} lane(s) per home, median of {runs}: masked {masked:.1} ms \
         per group-month ({:.4} ms per home-month), unmasked {unmasked:.1} ms ({:.4} ms per \
         home-month): block isolation costs {:.2}x",
        masked / homes,
        unmasked / homes,
        masked / unmasked
    );
}

/// Times one run of a group scenario and prints the amortized figures; checks the result
/// against the plaintext sums (each pool ciphertext was added `total / POOL` times; the same
/// ciphertext added repeatedly grows its noise linearly, a pessimistic case).
fn report(s: &Setup, batches_per_home: usize) {
    let homes = s.layout.capacity();
    let start = Instant::now();
    let out = group_month(s, batches_per_home);
    let elapsed = start.elapsed();
    let repeats = (homes * batches_per_home / POOL) as i128;
    let slots = s.decryptor.decrypt_values(&out).expect("decrypt");
    let raw = s.layout.decode_raw(&slots, homes).expect("decode");
    let mut worst: f64 = 0.0;
    for (position, cells) in &s.pool_cells {
        let units: i128 = cells
            .cells()
            .iter()
            .enumerate()
            .map(|(c, w)| i128::from(w.get()) * s.layout.tariff().cell_units_per_wh(c))
            .sum();
        let exact = (units * repeats) as f64 / 1e7;
        worst = worst.max((raw[*position] - exact).abs());
    }
    println!(
        "billing: {batches_per_home} batch(es) per home × {homes} homes = {} additions: \
         {:.1} ms per group-month, {:.4} ms per home-month amortized; largest error ₹{worst:.2e}",
        homes * batches_per_home,
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3 / homes as f64,
    );
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let homes = s.layout.capacity();
    println!(
        "billing: parameter set {}, {} slots, block width {}, {} homes per ciphertext, \
         Galois steps {:?} ({} bytes of Galois keys), batch ciphertext {} bytes",
        s.ctx.parameter_set_id(),
        s.layout.slots(),
        s.layout.block_width(),
        homes,
        s.layout.galois_steps(),
        s.galois_bytes,
        s.ciphertext_bytes,
    );
    report(&s, DAYS);
    report(&s, 1);
    report_isolation_cost(&s, 1, 5);

    let mut g = c.benchmark_group("billing");
    g.sample_size(20);
    // One lane into the group: multiplied by its home's cell indicator, added.
    g.bench_function("add_lane", |b| {
        let mut acc = GroupAccumulator::new(&s.layout, &s.evaluator).expect("accumulator");
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % POOL;
            acc.add(s.pool_cells[i].0, black_box(&s.pool[i]))
                .expect("add");
        });
    });
    let sum = s.evaluator.add_many(&s.pool).expect("sum");
    g.bench_function("finish", |b| {
        b.iter(|| {
            let mut acc = GroupAccumulator::new(&s.layout, &s.evaluator).expect("accumulator");
            acc.add(s.pool_cells[0].0, black_box(&sum)).expect("add");
            acc.finish().expect("finish")
        });
    });
    g.finish();

    let mut g = c.benchmark_group("billing/group_month");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(homes as u64));
    g.bench_function("daily_batches", |b| b.iter(|| group_month(&s, DAYS)));
    g.bench_function("one_batch_per_home", |b| b.iter(|| group_month(&s, 1)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
