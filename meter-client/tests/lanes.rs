//! The lanes against independent oracles, month-boundary cutting and the restart of the lane
//! state, on queued (not uploaded) batches: the billing lane's decrypted cells against the
//! plaintext tariff on the same readings; the analytics lane against the same noise drawn
//! independently; ε accounting.

mod common;

use common::*;
use meter_client::queue::StateStore;
use meter_client::run_with_noise;
use meter_client::synthetic::SyntheticHome;
use seer_core::circuits::billing::BillingLayout;
use seer_core::data::YearMonth;
use seer_core::dp::{BudgetPeriod, PrivacyAccountant};
use seer_core::tariff::Tariff;
use seer_core::units::Wh;

/// The plaintext oracle: the synthetic home's readings (whole Wh) in `[from, until)`.
fn oracle_readings(
    from: chrono::NaiveDate,
    until: chrono::NaiveDate,
) -> Vec<(chrono::NaiveDateTime, Wh)> {
    SyntheticHome::new(11, 5)
        .readings(from, until)
        .into_iter()
        .map(|r| (r.start, r.energy.round_to_wh()))
        .collect()
}

/// Sums the decrypted billing cells of `batches` per period, at home position `position`.
fn decrypted_cells(
    batches: &[meter_client::batch::SealedBatch],
    layout: &BillingLayout,
    position: usize,
) -> std::collections::BTreeMap<YearMonth, Vec<f64>> {
    let mut out = std::collections::BTreeMap::new();
    let width = layout.block_width();
    for b in batches {
        let slots = keys().decrypt(&b.billing_lane);
        // Nothing outside the home's block.
        for (i, v) in slots.iter().enumerate().take(layout.slots()) {
            if i / width != position {
                assert!(v.abs() < 1e-3, "slot {i} outside the block holds {v}");
            }
        }
        let cells: &mut Vec<f64> = out.entry(b.period).or_insert_with(|| vec![0.0; width]);
        for (c, cell) in cells.iter_mut().enumerate() {
            *cell += slots[position * width + c];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn billing_lane_matches_the_plaintext_tariff_across_a_month_boundary() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (from, until) = (date(2024, 1, 20), date(2024, 2, 10));
    let s = settings(dir.path(), &ka, None, from, until);
    let (observer, _) = collector();
    let report = run_with_noise(s, seeded_noise(1), observer).await.unwrap();
    assert_eq!(report.queued, 21, "one batch per day");
    assert_eq!(report.still_queued, 21);

    let batches = queued_batches(dir.path()).await;
    let seqs: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
    assert_eq!(
        seqs,
        (1..=21).collect::<Vec<_>>(),
        "sequences start at 1 without gaps"
    );
    let tariff = Tariff::bescom();
    let layout = BillingLayout::try_new(&tariff, &keys().ctx).unwrap();
    let home = layout.locate(5);
    for b in &batches {
        assert_eq!(b.billing_position as usize, home.position);
        assert_eq!(b.billing_group as usize, home.group);
    }
    let cells = decrypted_cells(&batches, &layout, home.position);
    let readings = oracle_readings(from, until);
    for (period, got) in cells {
        let period_readings = readings
            .iter()
            .copied()
            .filter(|(t, _)| period.contains(*t));
        let bill = tariff.bill(period_readings).unwrap();
        for (c, want) in bill.cells().cells().iter().enumerate() {
            let got = got[c];
            assert!(
                (got - want.get() as f64).abs() < 0.01,
                "{period} cell {c}: decrypted {got}, plaintext {want}"
            );
        }
        // January from the 20th reaches the upper slabs: the split is not trivial.
        assert!(bill.cells().cells().iter().filter(|w| w.get() > 0).count() >= 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_cut_at_month_boundaries() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &ka, None, date(2024, 1, 20), date(2024, 2, 10));
    s.batch_days = 7;
    let (observer, _) = collector();
    run_with_noise(s, seeded_noise(2), observer).await.unwrap();
    let batches = queued_batches(dir.path()).await;
    let spans: Vec<(String, String, u32)> = batches
        .iter()
        .map(|b| (b.start.to_string(), b.end.to_string(), b.readings))
        .collect();
    let t = |d: &str| format!("{d} 00:00:00");
    assert_eq!(
        spans,
        vec![
            (t("2024-01-20"), t("2024-01-22"), 2 * 96),
            (t("2024-01-22"), t("2024-01-29"), 7 * 96),
            (t("2024-01-29"), t("2024-02-01"), 3 * 96),
            (t("2024-02-01"), t("2024-02-08"), 7 * 96),
            (t("2024-02-08"), t("2024-02-10"), 2 * 96),
        ]
    );
    for b in &batches {
        assert!(b.period.contains(b.start));
        assert!(b.end <= b.period.end());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_lane_is_the_noisy_readings_and_charges_epsilon_once() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (from, until) = (date(2024, 3, 30), date(2024, 4, 2));
    let s = settings(dir.path(), &ka, None, from, until);
    let (observer, _) = collector();
    run_with_noise(s, seeded_noise(42), observer).await.unwrap();
    let batches = queued_batches(dir.path()).await;
    assert_eq!(batches.len(), 3);
    // The measured wire cost (BENCHMARKS.md material): one n = 8192 ciphertext per lane.
    let (billing, analytics) = (
        batches[0].billing_lane.len(),
        batches[0].analytics_lane.len(),
    );
    eprintln!(
        "per daily batch: billing lane {billing} B, analytics lane {analytics} B, \
         {:.0} B per 15-minute reading",
        (billing + analytics) as f64 / 96.0
    );
    assert!(billing < 500_000 && analytics < 500_000);

    // The oracle: the same seed through the same mechanism, with an independent accountant.
    let mut noise = seeded_noise(42);
    let p = privacy();
    let mut accountant =
        PrivacyAccountant::new("oracle", BudgetPeriod::Month, p.monthly_budget, from);
    let readings = oracle_readings(from, until);
    for (b, day) in batches.iter().zip(readings.chunks(96)) {
        let wh: Vec<Wh> = day.iter().map(|(_, w)| *w).collect();
        let lane = noise
            .analytics_lane(&wh, day[0].0.date(), &mut accountant)
            .unwrap();
        assert_eq!(b.readings, 96);
        assert_eq!(b.epsilon_spent, lane.epsilon_spent());
        assert!((b.epsilon_spent - 96.0 * EPSILON).abs() < 1e-9);
        let slots = keys().decrypt(&b.analytics_lane);
        for (i, want) in lane.readings().iter().enumerate() {
            let got = slots[i].round() as i64;
            assert_eq!(got, want.get(), "{}: slot {i}", b.start);
        }
        // Only the day's 96 slots are used.
        assert!(slots[96..].iter().all(|v| v.abs() < 1e-3));
    }

    // The persisted accountant: the month restarted on April 1st, one day charged since.
    let store = StateStore::open(dir.path()).await.unwrap();
    let summary = store.summary().await.unwrap();
    store.close().await;
    let a = summary.accountant.unwrap();
    assert_eq!(a.period_start(), date(2024, 4, 1));
    assert!((a.spent() - 96.0 * EPSILON).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_month_continues_the_slab_split_and_the_budget() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, _) = collector();
    let first = settings(dir.path(), &ka, None, date(2024, 5, 1), date(2024, 5, 12));
    let r1 = run_with_noise(first, seeded_noise(3), observer.clone())
        .await
        .unwrap();
    assert_eq!(r1.queued, 11);
    // Same source, wider range: only the new days are built.
    let second = settings(dir.path(), &ka, None, date(2024, 5, 1), date(2024, 6, 1));
    let r2 = run_with_noise(second.clone(), seeded_noise(4), observer.clone())
        .await
        .unwrap();
    assert_eq!(r2.queued, 20);
    // Nothing new: nothing built, nothing charged.
    let r3 = run_with_noise(second, seeded_noise(5), observer)
        .await
        .unwrap();
    assert_eq!(r3.queued, 0);

    let batches = queued_batches(dir.path()).await;
    assert_eq!(batches.len(), 31);
    let tariff = Tariff::bescom();
    let layout = BillingLayout::try_new(&tariff, &keys().ctx).unwrap();
    let cells = decrypted_cells(&batches, &layout, layout.locate(5).position);
    let bill = tariff
        .bill(oracle_readings(date(2024, 5, 1), date(2024, 6, 1)))
        .unwrap();
    let got = &cells[&"2024-05".parse::<YearMonth>().unwrap()];
    for (c, want) in bill.cells().cells().iter().enumerate() {
        assert!((got[c] - want.get() as f64).abs() < 0.01, "cell {c}");
    }
    let store = StateStore::open(dir.path()).await.unwrap();
    let a = store.summary().await.unwrap().accountant.unwrap();
    store.close().await;
    assert!(
        (a.spent() - 31.0 * 96.0 * EPSILON).abs() < 1e-6,
        "{}",
        a.spent()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_directory_refuses_another_meter() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, _) = collector();
    let s = settings(dir.path(), &ka, None, date(2024, 5, 1), date(2024, 5, 2));
    run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap();
    let mut other = s.clone();
    other.meter_id = "meter-8".into();
    let err = run_with_noise(other, seeded_noise(1), observer.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            meter_client::Error::StateMismatch {
                field: "meter id",
                ..
            }
        ),
        "{err}"
    );
    let mut moved = s;
    moved.home_index = 6;
    let err = run_with_noise(moved, seeded_noise(1), observer)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("home index"), "{err}");
}
