//! Property tests of the billing lane's plaintext side: splitting conserves energy exactly,
//! batches add up to the whole-period split, and bills agree with formulas written here
//! independently of the code under test.

use chrono::{NaiveDateTime, TimeDelta, Timelike};
use proptest::prelude::*;
use seer_core::circuits::billing;
use seer_core::tariff::{BandConfig, SlabAccumulator, SlabConfig, Tariff, TariffConfig};
use seer_core::units::Wh;

/// A random valid tariff: 1–6 slabs with increasing whole-kWh thresholds and 0–3 bands made
/// of disjoint whole-hour ranges. Also returns, per hour of the day, the index of the band the
/// test itself assigns (configured bands in order, then the standard band).
fn tariff_strategy() -> impl Strategy<Value = (Tariff, Vec<usize>)> {
    (
        prop::collection::vec((1u32..150, 0i64..2_000), 0..6),
        0i64..2_000,
        prop::collection::vec(0usize..4, 24),
        prop::collection::vec(0i64..300, 3),
    )
        .prop_map(|(steps, last_rate, hour_owner, percents)| {
            let mut slabs = Vec::new();
            let mut threshold = 0u32;
            for (step, rate) in steps {
                threshold += step;
                slabs.push(SlabConfig {
                    up_to_kwh: Some(f64::from(threshold)),
                    rate_paise: rate,
                });
            }
            slabs.push(SlabConfig {
                up_to_kwh: None,
                rate_paise: last_rate,
            });
            // hour_owner: 0..3 = configured band, 3 = no band (standard).
            let mut bands = Vec::new();
            let mut band_index = [usize::MAX; 3];
            for (b, percent) in percents.iter().enumerate() {
                let hours: Vec<String> = (0..24)
                    .filter(|h| hour_owner[*h] == b)
                    .map(|h| format!("{h:02}:00-{:02}:00", h + 1))
                    .collect();
                if !hours.is_empty() {
                    band_index[b] = bands.len();
                    bands.push(BandConfig {
                        name: format!("band{b}"),
                        hours,
                        rate_percent: *percent,
                    });
                }
            }
            let configured = bands.len();
            let of_hour = hour_owner
                .iter()
                .map(|&o| if o < 3 { band_index[o] } else { configured })
                .collect();
            let tariff = Tariff::try_new(TariffConfig {
                name: "random".into(),
                slabs,
                bands,
            })
            .expect("valid random tariff");
            (tariff, of_hour)
        })
}

/// Readings: strictly increasing starts (gaps of 1 to 180 minutes) and energies up to 60 kWh,
/// some of them zero; plus batch cut points.
fn readings_strategy() -> impl Strategy<Value = (Vec<(NaiveDateTime, Wh)>, Vec<bool>)> {
    prop::collection::vec(
        (
            1i64..180,
            prop_oneof![Just(0i64), 0i64..2_000, 0i64..60_000],
            any::<bool>(),
        ),
        0..200,
    )
    .prop_map(|items| {
        let mut t =
            NaiveDateTime::parse_from_str("2024-02-01 00:00", "%Y-%m-%d %H:%M").expect("start");
        let mut readings = Vec::new();
        let mut cuts = Vec::new();
        for (gap, energy, cut) in items {
            t += TimeDelta::minutes(gap);
            readings.push((t, Wh::try_new(energy).expect("wh")));
            cuts.push(cut);
        }
        (readings, cuts)
    })
}

/// The slab amount written directly from the definition, in units of 10⁻⁵ paisa:
/// `Σ_s rate_s × 100 × |[0, total) ∩ [lo_s, hi_s)|`.
fn direct_slab_units(tariff: &Tariff, total: i64) -> i128 {
    tariff
        .slabs()
        .iter()
        .map(|s| {
            let lo = s.from.get();
            let hi = s.to.map_or(i64::MAX, |w| w.get());
            let inside = (total.min(hi) - lo).max(0);
            i128::from(inside) * i128::from(s.rate_paise) * 100
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn splitting_conserves_energy_and_batches_add_up(
        (tariff, of_hour) in tariff_strategy(),
        (readings, cuts) in readings_strategy(),
    ) {
        let mut acc = SlabAccumulator::new(&tariff);
        let mut batches = Vec::new();
        for (&(t, e), &cut) in readings.iter().zip(&cuts) {
            acc.push(t, e).expect("push");
            if cut {
                batches.push(acc.take_batch());
            }
        }
        batches.push(acc.take_batch());
        let period = acc.period_cells().clone();

        // Energy is conserved exactly, per batch and overall.
        let total: i64 = readings.iter().map(|r| r.1.get()).sum();
        prop_assert_eq!(period.total().get(), total);
        prop_assert_eq!(acc.consumed().get(), total);
        let batch_sum: i64 = batches.iter().map(|b| b.total().get()).sum();
        prop_assert_eq!(batch_sum, total);

        // The batches add up, cell by cell, to the whole-period split, which is what the
        // reading-level calculator bills.
        let twin = billing::plaintext_bill(&tariff, &batches).expect("twin");
        let whole = tariff.bill(readings.iter().copied()).expect("whole");
        prop_assert_eq!(twin.cells(), &period);
        prop_assert_eq!(whole.cells(), &period);
        prop_assert_eq!(twin.amount(), whole.amount());

        // Per slab: the total split by the slab thresholds, computed directly.
        for (s, slab) in tariff.slabs().iter().enumerate() {
            let lo = slab.from.get();
            let hi = slab.to.map_or(i64::MAX, |w| w.get());
            prop_assert_eq!(period.slab_total(s).get(), (total.min(hi) - lo).max(0));
        }
        // Per band: the energy of the readings starting in the band's hours.
        for b in 0..tariff.band_count() {
            let expected: i64 = readings
                .iter()
                .filter(|r| of_hour[r.0.hour() as usize] == b)
                .map(|r| r.1.get())
                .sum();
            prop_assert_eq!(period.band_total(b).get(), expected);
        }
        // At 100 % everywhere, the bill is the slab formula.
        if tariff.bands().iter().all(|b| b.rate_percent == 100) {
            prop_assert_eq!(whole.amount().units(), direct_slab_units(&tariff, total));
        }
        prop_assert_eq!(
            tariff.slab_amount_for_total(Wh::try_new(total).expect("wh")).units(),
            direct_slab_units(&tariff, total)
        );
    }

    #[test]
    fn resuming_an_accumulator_continues_the_split(
        (tariff, _) in tariff_strategy(),
        (readings, _) in readings_strategy(),
        split in 0usize..200,
    ) {
        let split = split.min(readings.len());
        let mut whole = SlabAccumulator::new(&tariff);
        for &(t, e) in &readings {
            whole.push(t, e).expect("push");
        }
        let mut first = SlabAccumulator::new(&tariff);
        for &(t, e) in &readings[..split] {
            first.push(t, e).expect("push");
        }
        let mut resumed = SlabAccumulator::resume(
            &tariff,
            first.period_cells().clone(),
            first.last_reading(),
        )
        .expect("resume");
        for &(t, e) in &readings[split..] {
            resumed.push(t, e).expect("push");
        }
        prop_assert_eq!(resumed.period_cells(), whole.period_cells());
    }
}
