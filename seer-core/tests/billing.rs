//! The homomorphic bill against its oracles: the reading-level plaintext calculator
//! (`Tariff::bill`), the circuit's plaintext twin, and bills computed by hand.
//!
//! Keys are generated once per test binary (a `OnceLock`); each test builds an evaluator with
//! exactly the Galois keys its layout asks for, so a missing step would fail the test.

mod common;

use std::sync::OnceLock;

use chrono::{NaiveDateTime, TimeDelta};
use seer_ckks::{CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator};
use seer_core::Error;
use seer_core::circuits::billing::{
    self, BillingLayout, CELL_TOLERANCE_WH, GroupAccumulator, MAX_CELL_WH, PARAMETER_SET,
};
use seer_core::data::{LoadOptions, load_uci};
use seer_core::tariff::{CellEnergy, Paise, SlabAccumulator, Tariff, TariffConfig, WhRegister};
use seer_core::units::Wh;

struct Keys {
    ctx: CkksContext,
    keygen: KeyGenerator,
    encryptor: Encryptor,
    decryptor: Decryptor,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ctx = CkksContext::new(PARAMETER_SET).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        let encryptor = Encryptor::new(&ctx, &keygen.public_key().expect("pk")).expect("enc");
        let decryptor = Decryptor::new(&ctx, &keygen.secret_key().expect("sk")).expect("dec");
        Keys {
            ctx,
            keygen,
            encryptor,
            decryptor,
        }
    })
}

/// What the utility holds: Galois keys for the layout's steps only, no relinearization keys.
fn server_evaluator(layout: &BillingLayout) -> Evaluator {
    let k = keys();
    let galois = k
        .keygen
        .galois_keys(&layout.galois_steps())
        .expect("galois");
    Evaluator::new(&k.ctx, None, Some(galois))
}

fn layout(tariff: &Tariff) -> BillingLayout {
    BillingLayout::try_new(tariff, &keys().ctx).expect("layout")
}

fn at(s: &str) -> NaiveDateTime {
    common::at(s)
}

fn wh(v: i64) -> Wh {
    Wh::try_new(v).expect("wh")
}

/// BESCOM slabs with a 120 % evening peak and an 80 % night band (06:00–18:00 is standard).
fn tou_tariff() -> Tariff {
    toml::from_str(
        r#"
        name = "BESCOM with time of day"
        [[slabs]]
        up_to_kwh = 50
        rate_paise = 415
        [[slabs]]
        up_to_kwh = 100
        rate_paise = 560
        [[slabs]]
        up_to_kwh = 200
        rate_paise = 715
        [[slabs]]
        rate_paise = 820
        [[bands]]
        name = "peak"
        hours = ["18:00-22:00"]
        rate_percent = 120
        [[bands]]
        name = "night"
        hours = ["22:00-06:00"]
        rate_percent = 80
        "#,
    )
    .expect("tou tariff")
}

/// Splits a period's readings into batches: one per calendar day (`daily`) or one in all.
fn batches(tariff: &Tariff, readings: &[(NaiveDateTime, Wh)], daily: bool) -> Vec<CellEnergy> {
    let mut acc = SlabAccumulator::new(tariff);
    let mut out = Vec::new();
    let mut day = readings.first().map(|r| r.0.date());
    for &(start, energy) in readings {
        if daily && Some(start.date()) != day {
            out.push(acc.take_batch());
            day = Some(start.date());
        }
        acc.push(start, energy).expect("push");
    }
    out.push(acc.take_batch());
    out
}

/// Encrypts every home's batches at positions `0..`, evaluates the group, decrypts and
/// decodes: `(raw rupees, rounded paise)` per home. Also checks the cells output against the
/// plaintext sum of each home's batches (the twin of step 1), to the Wh.
fn run_group(layout: &BillingLayout, homes: &[Vec<CellEnergy>]) -> Vec<(f64, Paise)> {
    let k = keys();
    let ev = server_evaluator(layout);
    let mut acc = GroupAccumulator::new(layout, &ev).expect("accumulator");
    for (position, home) in homes.iter().enumerate() {
        for batch in home {
            let ct = layout
                .encrypt_batch(&k.encryptor, position, batch)
                .expect("encrypt");
            acc.add(position, &ct).expect("add");
        }
    }
    let out = acc.finish().expect("circuit");
    assert_eq!(out.cells.level().0, 1, "the cell indicators use one level");
    assert_eq!(out.bills.level().0, 0, "the circuit uses both levels");
    let cells = k.decryptor.decrypt_values(&out.cells).expect("decrypt");
    for (position, home) in homes.iter().enumerate() {
        let mut total = CellEnergy::zeros(layout.tariff());
        for batch in home {
            total.try_add(batch).expect("add cells");
        }
        let want: Vec<u64> = total.cells().iter().map(|c| c.get() as u64).collect();
        assert_eq!(
            layout.decode_cells(&cells, position).expect("cells"),
            want,
            "home {position}: cells output"
        );
    }
    let slots = k.decryptor.decrypt_values(&out.bills).expect("decrypt");
    let raw = layout.decode_raw(&slots, homes.len()).expect("raw");
    let paise = layout.decode_bills(&slots, homes.len()).expect("bills");
    raw.into_iter().zip(paise).collect()
}

/// Checks each home's encrypted bill against the reading-level oracle and the twin; returns
/// the largest absolute error in rupees.
fn check_against_oracle(
    tariff: &Tariff,
    readings: &[Vec<(NaiveDateTime, Wh)>],
    home_batches: &[Vec<CellEnergy>],
    encrypted: &[(f64, Paise)],
) -> f64 {
    let mut worst: f64 = 0.0;
    for (i, ((r, b), (raw, paise))) in readings.iter().zip(home_batches).zip(encrypted).enumerate()
    {
        let oracle = tariff.bill(r.iter().copied()).expect("oracle");
        let twin = billing::plaintext_bill(tariff, b).expect("twin");
        assert_eq!(twin, oracle, "home {i}: twin and oracle disagree");
        let err = (raw - oracle.amount().to_rupees()).abs();
        assert!(
            err <= 0.005,
            "home {i}: encrypted {raw} vs exact {} (error {err})",
            oracle.amount()
        );
        assert_eq!(*paise, oracle.total(), "home {i}: rounded bills differ");
        worst = worst.max(err);
    }
    worst
}

// --- Synthetic homes --------------------------------------------------------------------------

/// splitmix64: a small deterministic generator for synthetic loads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// `days` days of 15-minute readings from 2024-01-01 for home `home`: each reading up to a
/// home-specific maximum (0 for every 97th home), so monthly totals range from 0 to ~1000 kWh
/// and cover every slab.
fn synthetic_home(home: usize, days: u32) -> Vec<(NaiveDateTime, Wh)> {
    let mut rng = Rng(home as u64 * 7919 + 1);
    let max_wh = if home.is_multiple_of(97) {
        0
    } else {
        (home as u64 * 131) % 900
    };
    let start = at("2024-01-01 00:00");
    (0..days as i64 * 96)
        .map(|i| {
            let t = start + TimeDelta::minutes(15 * i);
            (t, wh(rng.below(max_wh + 1) as i64))
        })
        .collect()
}

// --- Hand-computed bills ----------------------------------------------------------------------

#[test]
fn bill_computed_by_hand_237_5_kwh_under_bescom() {
    // 237.5 kWh under BESCOM:
    //    50   kWh × ₹4.15 =  ₹207.50
    //    50   kWh × ₹5.60 =  ₹280.00
    //   100   kWh × ₹7.15 =  ₹715.00
    //    37.5 kWh × ₹8.20 =  ₹307.50
    //                        ─────────
    //                        ₹1510.00
    // (207.50 + 280.00 = 487.50; + 715.00 = 1202.50; + 307.50 = 1510.00.)
    const HAND: Paise = Paise::new(151_000);
    let tariff = Tariff::bescom();
    // Ten readings of 23.75 kWh, one every 2 hours: several of them straddle thresholds.
    let readings: Vec<_> = (0..10)
        .map(|i| (at("2024-03-01 00:00") + TimeDelta::hours(2 * i), wh(23_750)))
        .collect();
    let bill = tariff.bill(readings.iter().copied()).expect("bill");
    assert_eq!(bill.total(), HAND);
    assert_eq!(bill.amount().to_string(), "₹1510.0000000");
    let kwh: Vec<f64> = bill.kwh_per_slab().iter().map(|k| k.get()).collect();
    assert_eq!(kwh, [50.0, 50.0, 100.0, 37.5]);

    // Encrypted, as home 3 of a group with its day split into two batches.
    let layout = layout(&tariff);
    let mut homes = vec![Vec::new(); 4];
    let mut acc = SlabAccumulator::new(&tariff);
    for (i, &(t, e)) in readings.iter().enumerate() {
        acc.push(t, e).expect("push");
        if i == 4 {
            homes[3].push(acc.take_batch());
        }
    }
    homes[3].push(acc.take_batch());
    let out = run_group(&layout, &homes);
    assert_eq!(out[3].1, HAND);
    assert!((out[3].0 - 1510.0).abs() <= 0.005, "{}", out[3].0);
    for (raw, paise) in &out[..3] {
        assert_eq!(*paise, Paise::ZERO);
        assert!(raw.abs() < 1e-4);
    }
}

#[test]
fn bill_computed_by_hand_with_time_of_use_bands() {
    // BESCOM slabs; peak 18:00–22:00 at 120 %, night 22:00–06:00 at 80 %, standard otherwise.
    //   10:00  40     kWh standard: 40 kWh slab 1 at ₹4.15               = ₹166.00
    //   19:00  20     kWh peak:     10 kWh slab 1 at ₹4.15 × 1.2 = 4.98   =  ₹49.80
    //                               10 kWh slab 2 at ₹5.60 × 1.2 = 6.72   =  ₹67.20
    //   23:00  50.001 kWh night:    40 kWh slab 2 at ₹5.60 × 0.8 = 4.48   = ₹179.20
    //                           10.001 kWh slab 3 at ₹7.15 × 0.8 = 5.72   =  ₹57.20572
    //   total 166.00 + 49.80 + 67.20 + 179.20 + 57.20572 = ₹519.40572 → ₹519.41
    let tariff = tou_tariff();
    let readings = [
        (at("2024-03-01 10:00"), wh(40_000)),
        (at("2024-03-01 19:00"), wh(20_000)),
        (at("2024-03-01 23:00"), wh(50_001)),
    ];
    let bill = tariff.bill(readings).expect("bill");
    assert_eq!(bill.amount().to_string(), "₹519.4057200");
    assert_eq!(bill.total(), Paise::new(51_941));
    // Bands in configuration order, then the implicit standard band.
    let names: Vec<&str> = tariff.bands().iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["peak", "night", "standard"]);
    let (peak, night, standard) = (0, 1, 2);
    assert_eq!(bill.cells().get(0, standard), wh(40_000));
    assert_eq!(bill.cells().get(0, peak), wh(10_000));
    assert_eq!(bill.cells().get(1, peak), wh(10_000));
    assert_eq!(bill.cells().get(1, night), wh(40_000));
    assert_eq!(bill.cells().get(2, night), wh(10_001));

    let layout = layout(&tariff);
    assert_eq!(layout.block_width(), 16); // 4 slabs × 3 bands = 12 cells
    assert_eq!(layout.capacity(), 256);
    assert_eq!(layout.galois_steps(), [1, 2, 4, 8]);
    let homes = vec![
        vec![CellEnergy::zeros(&tariff)],
        batches(&tariff, &readings, true),
    ];
    let out = run_group(&layout, &homes);
    assert_eq!(out[1].1, Paise::new(51_941));
    assert!((out[1].0 - 519.40572).abs() <= 0.005);
    assert_eq!(out[0].1, Paise::ZERO);
}

#[test]
fn half_paisa_bills_round_up_in_both_the_twin_and_the_circuit() {
    // 100 Wh × ₹4.15/kWh = ₹0.415 exactly: half a paisa, which rounds up to ₹0.42.
    // 300 Wh = ₹1.245 → ₹1.25; 10 Wh = ₹0.0415 → ₹0.04.
    let tariff = Tariff::bescom();
    let cases = [(100, 42), (300, 125), (10, 4), (1, 0)];
    let homes: Vec<Vec<CellEnergy>> = cases
        .iter()
        .map(|&(e, _)| batches(&tariff, &[(at("2024-03-01 00:00"), wh(e))], false))
        .collect();
    let out = run_group(&layout(&tariff), &homes);
    for ((e, hand), (_, paise)) in cases.iter().zip(&out) {
        let plain = tariff
            .bill([(at("2024-03-01 00:00"), wh(*e))])
            .expect("bill");
        assert_eq!(plain.total(), Paise::new(*hand), "{e} Wh plaintext");
        assert_eq!(*paise, Paise::new(*hand), "{e} Wh encrypted");
    }
}

#[test]
fn a_reading_straddling_every_threshold_is_split_exactly() {
    // 10 kWh, then one reading of 250 kWh: 40 kWh in slab 1, 50 in slab 2, 100 in slab 3 and
    // 60 in slab 4 → 10×4.15 + 40×4.15 + 50×5.60 + 100×7.15 + 60×8.20
    //            = 41.50 + 166.00 + 280.00 + 715.00 + 492.00 = ₹1694.50.
    let tariff = Tariff::bescom();
    let readings = [
        (at("2024-03-01 00:00"), wh(10_000)),
        (at("2024-03-02 00:00"), wh(250_000)),
    ];
    let bill = tariff.bill(readings).expect("bill");
    assert_eq!(bill.total(), Paise::new(169_450));
    let slab_wh: Vec<i64> = (0..4).map(|s| bill.cells().slab_total(s).get()).collect();
    assert_eq!(slab_wh, [50_000, 50_000, 100_000, 60_000]);

    // Daily batches: the second day's batch alone holds four slabs.
    let daily = batches(&tariff, &readings, true);
    assert_eq!(daily.len(), 2);
    let day2: Vec<i64> = daily[1].cells().iter().map(|w| w.get()).collect();
    assert_eq!(day2, [40_000, 50_000, 100_000, 60_000]);
    let out = run_group(&layout(&tariff), &[daily]);
    assert_eq!(out[0].1, Paise::new(169_450));
}

// --- Many homes -------------------------------------------------------------------------------

#[test]
fn many_synthetic_homes_over_two_groups_match_the_plaintext_bill() {
    // A full group and a few homes of a second one: monthly batches (the meter encrypts its
    // period's cells once), BESCOM slabs, 31 days of 15-minute readings per home.
    let tariff = Tariff::bescom();
    let layout = layout(&tariff);
    assert_eq!(layout.capacity(), 1024);
    let homes = layout.capacity() + 6;
    assert_eq!(layout.groups_for(homes), 2);
    let readings: Vec<_> = (0..homes).map(|h| synthetic_home(h, 31)).collect();
    let home_batches: Vec<_> = readings
        .iter()
        .map(|r| batches(&tariff, r, false))
        .collect();
    let mut worst: f64 = 0.0;
    for group in 0..2 {
        let members: Vec<usize> = (0..homes)
            .filter(|&h| layout.locate(h).group == group)
            .collect();
        assert!(
            members
                .iter()
                .enumerate()
                .all(|(i, &h)| layout.locate(h).position == i)
        );
        let group_batches: Vec<_> = members.iter().map(|&h| home_batches[h].clone()).collect();
        let group_readings: Vec<_> = members.iter().map(|&h| readings[h].clone()).collect();
        let out = run_group(&layout, &group_batches);
        worst = worst.max(check_against_oracle(
            &tariff,
            &group_readings,
            &group_batches,
            &out,
        ));
    }
    // Every slab is exercised and some homes use nothing.
    let totals: Vec<i64> = readings
        .iter()
        .map(|r| r.iter().map(|x| x.1.get()).sum())
        .collect();
    assert!(totals.contains(&0));
    assert!(totals.iter().any(|t| *t > 200_000));
    eprintln!("largest error over {homes} homes: ₹{worst:e}");
}

#[test]
fn daily_batches_with_time_of_use_match_the_plaintext_bill() {
    let tariff = tou_tariff();
    let layout = layout(&tariff);
    let homes = 24;
    let readings: Vec<_> = (0..homes).map(|h| synthetic_home(h * 41 + 5, 31)).collect();
    let home_batches: Vec<_> = readings.iter().map(|r| batches(&tariff, r, true)).collect();
    assert!(home_batches.iter().all(|b| b.len() == 31));
    let out = run_group(&layout, &home_batches);
    let worst = check_against_oracle(&tariff, &readings, &home_batches, &out);
    eprintln!("largest error over {homes} homes × 31 daily batches: ₹{worst:e}");
}

#[test]
fn the_committed_uci_sample_bills_exactly() {
    let loaded = load_uci(
        common::sample("uci-householdpower-sample.csv"),
        &LoadOptions::default(),
    )
    .expect("uci sample");
    let series = loaded.series;
    // The meter's register turns exact joules into whole Wh without losing any.
    let mut register = WhRegister::new();
    let readings: Vec<(NaiveDateTime, Wh)> = series
        .readings()
        .iter()
        .map(|r| (r.start, register.advance(r.energy)))
        .collect();
    let wh_total: i64 = readings.iter().map(|r| r.1.get()).sum();
    assert_eq!(
        wh_total * 3_600 + register.remainder().get(),
        series.total().get()
    );

    // The sample is only ~2.5 days (some 60 kWh): BESCOM reaches its second slab; a tariff
    // with small thresholds and bands exercises every cell.
    let small: Tariff = toml::from_str(
        r#"
        name = "small thresholds"
        [[slabs]]
        up_to_kwh = 10
        rate_paise = 300
        [[slabs]]
        up_to_kwh = 25.5
        rate_paise = 555
        [[slabs]]
        rate_paise = 975
        [[bands]]
        name = "peak"
        hours = ["06:00-10:00", "18:00-22:00"]
        rate_percent = 125
        "#,
    )
    .expect("tariff");
    for tariff in [Tariff::bescom(), small] {
        let layout = layout(&tariff);
        let daily = batches(&tariff, &readings, true);
        assert!(daily.len() >= 3, "{} days", daily.len());
        // Home 0: the UCI household with daily batches; home 1: the same month-to-date in one
        // batch.
        let home_batches = vec![daily, batches(&tariff, &readings, false)];
        let out = run_group(&layout, &home_batches);
        let both = vec![readings.clone(), readings.clone()];
        check_against_oracle(&tariff, &both, &home_batches, &out);
        eprintln!("UCI sample under {:?}: {}", tariff.name(), out[0].1);
    }
}

// --- Zero, capacity, mismatches ---------------------------------------------------------------

#[test]
fn a_group_of_homes_with_zero_consumption_bills_zero() {
    let tariff = Tariff::bescom();
    let zeros = vec![vec![CellEnergy::zeros(&tariff); 3]; 5];
    let out = run_group(&layout(&tariff), &zeros);
    for (raw, paise) in out {
        assert_eq!(paise, Paise::ZERO);
        assert!(raw.abs() < 1e-4, "{raw}");
    }
}

#[test]
fn homes_beyond_a_groups_capacity_are_refused() {
    let tariff = Tariff::bescom();
    let layout = layout(&tariff);
    let cells = CellEnergy::zeros(&tariff);
    let cap = layout.capacity();
    assert_eq!(cap, keys().ctx.slots() / 4);
    assert!(layout.encode_batch(cap - 1, &cells).is_ok());
    let err = layout.encode_batch(cap, &cells).unwrap_err();
    assert!(
        matches!(err, Error::HomeOutsideGroup { position, capacity } if position == cap && capacity == cap),
        "{err}"
    );
    // The next home starts the next group.
    let slot = layout.locate(cap);
    assert_eq!((slot.group, slot.position), (1, 0));
    // Decoding more homes than a group holds is refused too.
    let slots = vec![0.0; layout.slots()];
    assert!(layout.decode_bills(&slots, cap).is_ok());
    assert!(matches!(
        layout.decode_bills(&slots, cap + 1),
        Err(Error::HomeOutsideGroup { .. })
    ));
}

#[test]
fn mismatched_inputs_are_refused() {
    let bescom = Tariff::bescom();
    let tou = tou_tariff();
    let layout = layout(&bescom);
    // Cells of another tariff.
    assert!(matches!(
        layout.encode_batch(0, &CellEnergy::zeros(&tou)),
        Err(Error::CellShapeMismatch { .. })
    ));
    // A slot vector of the wrong length, a garbage decryption.
    assert!(matches!(
        layout.decode_bills(&[0.0; 8], 1),
        Err(Error::BillingLayout { .. })
    ));
    let mut slots = vec![0.0; layout.slots()];
    slots[4] = -3.0;
    assert!(matches!(
        layout.decode_bills(&slots, 2),
        Err(Error::BillOutOfRange { position: 1, .. })
    ));
    slots[4] = f64::NAN;
    assert!(layout.decode_bills(&slots, 2).is_err());
    // No batches at all.
    let ev = server_evaluator(&layout);
    assert!(layout.evaluate(&ev, []).is_err());
    // A position outside the group.
    let zero = layout
        .encrypt_batch(&keys().encryptor, 0, &CellEnergy::zeros(&bescom))
        .expect("encrypt");
    assert!(matches!(
        layout.evaluate(&ev, [(layout.capacity(), &zero)]),
        Err(Error::HomeOutsideGroup { .. })
    ));
    // An evaluator without the Galois keys cannot run the circuit.
    let bare = Evaluator::new(&keys().ctx, None, None);
    let ct = layout
        .encrypt_batch(&keys().encryptor, 0, &CellEnergy::zeros(&bescom))
        .expect("encrypt");
    assert!(matches!(
        layout.evaluate(&bare, [(0, &ct)]),
        Err(Error::Ckks(seer_ckks::CkksError::MissingGaloisKeys { .. }))
    ));
    // A batch whose charge alone exceeds the circuit's range.
    let huge =
        CellEnergy::try_from_cells(&bescom, vec![Wh::ZERO, Wh::ZERO, Wh::ZERO, wh(40_000_000)])
            .expect("cells");
    assert!(matches!(
        layout.encode_batch(0, &huge),
        Err(Error::BillOutOfRange { .. })
    ));
}

// --- Tariff configuration -----------------------------------------------------------------------

#[test]
fn the_bescom_toml_equals_the_default_tariff() {
    let parsed: Tariff = toml::from_str(
        r#"
        name = "BESCOM domestic"
        [[slabs]]
        up_to_kwh = 50
        rate_paise = 415
        [[slabs]]
        up_to_kwh = 100
        rate_paise = 560
        [[slabs]]
        up_to_kwh = 200
        rate_paise = 715
        [[slabs]]
        rate_paise = 820
        "#,
    )
    .expect("parse");
    assert_eq!(parsed, Tariff::default());
    // And back through TOML.
    let text = toml::to_string(&tou_tariff()).expect("serialize");
    let again: Tariff = toml::from_str(&text).expect("reparse");
    assert_eq!(again, tou_tariff());
}

#[test]
fn bad_tariff_configs_are_rejected_with_their_location() {
    let slabs_ok = "[[slabs]]\nup_to_kwh = 50\nrate_paise = 415\n[[slabs]]\nrate_paise = 820\n";
    let cases: &[(&str, String)] = &[
        ("slabs", "name = \"x\"\nslabs = []\n".into()),
        (
            "slabs[1].up_to_kwh",
            "[[slabs]]\nup_to_kwh = 50\nrate_paise = 1\n[[slabs]]\nup_to_kwh = 40\nrate_paise = 2\n[[slabs]]\nrate_paise = 3\n".into(),
        ),
        (
            "slabs[1].up_to_kwh",
            "[[slabs]]\nup_to_kwh = 50\nrate_paise = 1\n[[slabs]]\nup_to_kwh = 50\nrate_paise = 2\n[[slabs]]\nrate_paise = 3\n".into(),
        ),
        (
            "slabs[0].rate_paise",
            "[[slabs]]\nup_to_kwh = 50\nrate_paise = -415\n[[slabs]]\nrate_paise = 820\n".into(),
        ),
        (
            "slabs[0].up_to_kwh",
            "[[slabs]]\nrate_paise = 415\n[[slabs]]\nrate_paise = 820\n".into(),
        ),
        (
            "slabs[1].up_to_kwh",
            "[[slabs]]\nup_to_kwh = 50\nrate_paise = 415\n[[slabs]]\nup_to_kwh = 90\nrate_paise = 820\n".into(),
        ),
        (
            "slabs[0].up_to_kwh",
            "[[slabs]]\nup_to_kwh = 50.0005\nrate_paise = 415\n[[slabs]]\nrate_paise = 820\n".into(),
        ),
        (
            "slabs[0].up_to_kwh",
            "[[slabs]]\nup_to_kwh = -5\nrate_paise = 415\n[[slabs]]\nrate_paise = 820\n".into(),
        ),
        (
            "bands[1].hours[0]",
            format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = [\"06:00-10:00\"]\nrate_percent = 120\n[[bands]]\nname = \"b\"\nhours = [\"09:00-11:00\"]\nrate_percent = 90\n"),
        ),
        (
            "bands[0].hours[1]",
            format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = [\"22:00-06:00\", \"05:00-07:00\"]\nrate_percent = 80\n"),
        ),
        (
            "bands[0].hours[0]",
            format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = [\"6:00-10:00\"]\nrate_percent = 120\n"),
        ),
        (
            "bands[0].hours[0]",
            format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = [\"10:00-10:00\"]\nrate_percent = 120\n"),
        ),
        (
            "bands[0].rate_percent",
            format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = [\"06:00-10:00\"]\nrate_percent = -20\n"),
        ),
        (
            "bands[0].name",
            format!("{slabs_ok}[[bands]]\nname = \"standard\"\nhours = [\"06:00-10:00\"]\nrate_percent = 120\n"),
        ),
        (
            "bands[1].name",
            format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = [\"06:00-10:00\"]\nrate_percent = 120\n[[bands]]\nname = \"a\"\nhours = [\"11:00-12:00\"]\nrate_percent = 120\n"),
        ),
        (
            "bands[0].hours",
            format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = []\nrate_percent = 120\n"),
        ),
    ];
    for (location, text) in cases {
        let err = toml::from_str::<Tariff>(text).expect_err(text).to_string();
        assert!(
            err.contains(&format!("invalid tariff: {location}:")),
            "expected an error at {location} for\n{text}\ngot: {err}"
        );
    }
    // Unknown fields anywhere are rejected by serde.
    for text in [
        format!("colour = \"red\"\n{slabs_ok}"),
        "[[slabs]]\nup_to_kwh = 50\nrate_paise = 415\nrate_rupees = 4\n[[slabs]]\nrate_paise = 820\n".to_owned(),
        format!("{slabs_ok}[[bands]]\nname = \"a\"\nhours = [\"06:00-10:00\"]\nrate_percent = 120\nextra = 1\n"),
    ] {
        let err = toml::from_str::<Tariff>(&text).expect_err(&text).to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
    // The same checks through the typed constructor.
    let err = Tariff::try_new(TariffConfig {
        name: " ".into(),
        slabs: vec![],
        bands: vec![],
    })
    .unwrap_err();
    assert!(matches!(err, Error::InvalidTariff { .. }), "{err}");
}

#[test]
fn bands_that_partition_the_day_have_no_standard_band() {
    let tariff: Tariff = toml::from_str(
        r#"
        [[slabs]]
        rate_paise = 600
        [[bands]]
        name = "day"
        hours = ["06:00-22:00"]
        rate_percent = 100
        [[bands]]
        name = "night"
        hours = ["22:00-24:00", "00:00-06:00"]
        rate_percent = 50
        "#,
    )
    .expect("tariff");
    assert_eq!(tariff.band_count(), 2);
    assert!(tariff.boundaries_aligned_to(60));
    assert!(!tariff.boundaries_aligned_to(7 * 60));
    // A flat single-slab tariff with two bands: 2 cells, block width 2, one Galois step.
    let layout = layout(&tariff);
    assert_eq!(layout.block_width(), 2);
    assert_eq!(layout.galois_steps(), [1]);
    // 3 kWh at 12:00 at ₹6.00 + 2 kWh at 23:00 at ₹3.00 = ₹18.00 + ₹6.00 = ₹24.00.
    let readings = [
        (at("2024-03-01 12:00"), wh(3_000)),
        (at("2024-03-01 23:00"), wh(2_000)),
    ];
    assert_eq!(
        tariff.bill(readings).expect("bill").total(),
        Paise::new(2_400)
    );
    let out = run_group(&layout, &[batches(&tariff, &readings, true)]);
    assert_eq!(out[0].1, Paise::new(2_400));
}

#[test]
fn the_plaintext_bill_is_independent_of_the_start_date_and_day_boundaries() {
    // Thresholds apply per period, not per day: the same readings shifted by a day bill the
    // same, whatever the batch boundaries.
    let tariff = Tariff::bescom();
    let base = synthetic_home(12, 3);
    let shifted: Vec<_> = base
        .iter()
        .map(|&(t, e)| (t + TimeDelta::days(1), e))
        .collect();
    let a = tariff.bill(base.iter().copied()).expect("a");
    let b = tariff.bill(shifted.iter().copied()).expect("b");
    assert_eq!(a, b);
}

// --- Block isolation inside the circuit -------------------------------------------------------

/// A meter that encrypts values into its neighbour's block, into its own padding and far away
/// (what no honest `encode_batch` produces) changes nothing but its own cells: the circuit
/// multiplies every lane by its home's cell indicator, so the neighbour's cells and bill are
/// exactly what its own lane says (oracle: the plaintext tariff on the neighbour's cells).
#[test]
fn a_lane_writing_outside_its_block_changes_no_other_home() {
    let k = keys();
    // Three slabs: a block of four slots, the last one padding.
    let tariff: Tariff = toml::from_str(
        "name = \"three\"\n[[slabs]]\nup_to_kwh = 50\nrate_paise = 400\n[[slabs]]\nup_to_kwh = 100\nrate_paise = 500\n[[slabs]]\nrate_paise = 600\n",
    )
    .expect("tariff");
    let layout = layout(&tariff);
    assert_eq!(layout.block_width(), 4);
    let ev = server_evaluator(&layout);
    let neighbour =
        CellEnergy::try_from_cells(&tariff, vec![wh(50_000), wh(20_000), wh(0)]).expect("cells");
    let honest = layout
        .encrypt_batch(&k.encryptor, 6, &neighbour)
        .expect("encrypt");
    // The rogue home at position 5: its own cells 1, 2, 3 Wh, plus 250 kWh into the
    // neighbour's first cell, 7 Wh into its own padding and 99 Wh into a far block.
    let mut rogue_slots = vec![0.0; layout.slots()];
    rogue_slots[5 * 4..5 * 4 + 3].copy_from_slice(&[1.0, 2.0, 3.0]);
    rogue_slots[6 * 4] = 250_000.0;
    rogue_slots[5 * 4 + 3] = 7.0;
    rogue_slots[1000 * 4 + 1] = 99.0;
    let rogue = k.encryptor.encrypt_values(&rogue_slots).expect("encrypt");
    let out = layout
        .evaluate(&ev, [(5, &rogue), (6, &honest)])
        .expect("circuit");
    let cells = k.decryptor.decrypt_values(&out.cells).expect("decrypt");
    assert_eq!(
        layout.decode_cells(&cells, 6).expect("cells"),
        [50_000, 20_000, 0]
    );
    assert_eq!(layout.decode_cells(&cells, 5).expect("cells"), [1, 2, 3]);
    for (slot, value) in cells.iter().enumerate() {
        let own = (5 * 4..5 * 4 + 3).contains(&slot) || (6 * 4..6 * 4 + 3).contains(&slot);
        if !own {
            assert!(value.abs() < CELL_TOLERANCE_WH, "slot {slot} leaks {value}");
        }
    }
    let bills = k.decryptor.decrypt_values(&out.bills).expect("decrypt");
    assert_eq!(
        layout.decode_bill_at(&bills, 6).expect("bill"),
        tariff.bill_cells(&neighbour).expect("plaintext").total()
    );
}

/// The decrypted cells of an output are judged on their own: whole, non-negative, plausible
/// Wh; the refusal names the cell, never the value.
#[test]
fn implausible_cells_are_refused_without_their_value() {
    let tariff = Tariff::bescom();
    let layout = layout(&tariff);
    let with = |cells: [f64; 4]| {
        let mut slots = vec![0.0; layout.slots()];
        slots[8..12].copy_from_slice(&cells);
        slots
    };
    assert_eq!(
        layout
            .decode_cells(&with([50_000.000_000_4, 12_345.999_999_6, 0.0, 7.0]), 2)
            .expect("honest"),
        [50_000, 12_346, 0, 7]
    );
    for (cells, problem) in [
        ([100.5, 0.0, 0.0, 0.0], "not a whole number"),
        ([0.0, -3.0, 0.0, 0.0], "negative"),
        ([0.0, 0.0, f64::NAN, 0.0], "not a whole number"),
        ([0.0, 0.0, 0.0, (MAX_CELL_WH + 1) as f64], "exceeds"),
    ] {
        let err = layout.decode_cells(&with(cells), 2).expect_err(problem);
        let text = err.to_string();
        assert!(text.contains(problem), "{text}");
        assert!(!text.contains("100.5") && !text.contains("-3"), "{text}");
        assert!(
            matches!(err, Error::ImplausibleCell { position: 2, .. }),
            "{err}"
        );
    }
    assert_eq!(
        layout
            .decode_cells(&with([0.0, 0.0, 0.0, MAX_CELL_WH as f64]), 2)
            .expect("largest"),
        [0, 0, 0, MAX_CELL_WH]
    );
    assert!(matches!(
        layout.decode_cells(&with([0.0; 4]), layout.capacity()),
        Err(Error::HomeOutsideGroup { .. })
    ));
}
