//! The lanes against independent oracles, month-boundary cutting and the restart of the lane
//! state, on queued (not uploaded) batches: the billing lane's decrypted period-to-date cells
//! against the plaintext tariff on the same readings (the closing batch against the whole
//! period's bill); the analytics lane against the same noise drawn independently; ε
//! accounting.

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

/// The decrypted billing cells of `batch` at home position `position` (checking that nothing
/// lies outside the home's block).
fn decrypted_cells(
    batch: &meter_client::batch::SealedBatch,
    layout: &BillingLayout,
    position: usize,
) -> Vec<f64> {
    let width = layout.block_width();
    let slots = keys().decrypt(&batch.billing_lane);
    for (i, v) in slots.iter().enumerate().take(layout.slots()) {
        if i / width != position {
            assert!(v.abs() < 1e-3, "slot {i} outside the block holds {v}");
        }
    }
    slots[position * width..(position + 1) * width].to_vec()
}

/// Checks every batch's decrypted billing lane against [`Tariff::bill`] of the oracle readings
/// of its period up to the batch's end (the period to date), and that exactly the batches
/// ending at their period's end close it. Returns each closing batch's period and bill.
fn check_period_to_date(
    batches: &[meter_client::batch::SealedBatch],
    readings: &[(chrono::NaiveDateTime, Wh)],
    tariff: &Tariff,
) -> Vec<(YearMonth, seer_core::tariff::Bill)> {
    let layout = BillingLayout::try_new(tariff, &keys().ctx).unwrap();
    let position = layout.locate(5).position;
    let mut closing = Vec::new();
    for b in batches {
        let got = decrypted_cells(b, &layout, position);
        let to_date = readings
            .iter()
            .copied()
            .filter(|(t, _)| b.period.contains(*t) && *t < b.end);
        let bill = tariff.bill(to_date).unwrap();
        for (c, want) in bill.cells().cells().iter().enumerate() {
            assert!(
                (got[c] - want.get() as f64).abs() < 0.01,
                "batch {} ({}) cell {c}: decrypted {}, plaintext period to date {want}",
                b.sequence,
                b.period,
                got[c]
            );
        }
        assert_eq!(
            b.closes_period(),
            b.end == b.period.end(),
            "batch {}",
            b.sequence
        );
        if b.closes_period() {
            closing.push((b.period, bill));
        }
    }
    closing
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
    let readings = oracle_readings(from, until);
    let closing = check_period_to_date(&batches, &readings, &tariff);
    // January (from the 20th) is closed by its last day's batch, sequence 12; February is
    // still open on the 10th.
    let closers: Vec<u64> = batches
        .iter()
        .filter(|b| b.closes_period())
        .map(|b| b.sequence)
        .collect();
    assert_eq!(closers, vec![12]);
    assert_eq!(closing.len(), 1);
    let (period, bill) = &closing[0];
    assert_eq!(period.to_string(), "2024-01");
    // The closing batch alone carries the whole period's bill.
    let whole = tariff
        .bill(
            readings
                .iter()
                .copied()
                .filter(|(t, _)| period.contains(*t)),
        )
        .unwrap();
    assert_eq!(bill.cells(), whole.cells());
    // Each period's last batch holds its period to date, and both reach the upper slabs
    // (January from the 20th, February by the 9th): the split is not trivial.
    for period in ["2024-01", "2024-02"] {
        let period: YearMonth = period.parse().unwrap();
        let last = batches.iter().rfind(|b| b.period == period).unwrap();
        let got = decrypted_cells(last, &layout, home.position);
        let to_date = tariff
            .bill(
                readings
                    .iter()
                    .copied()
                    .filter(|(t, _)| period.contains(*t)),
            )
            .unwrap();
        for (c, want) in to_date.cells().cells().iter().enumerate() {
            assert!(
                (got[c] - want.get() as f64).abs() < 0.01,
                "{period} cell {c}"
            );
        }
        assert!(
            to_date
                .cells()
                .cells()
                .iter()
                .filter(|w| w.get() > 0)
                .count()
                >= 2
        );
    }
    // Period to date, not per batch: each batch holds at least its predecessor's energy.
    let totals: Vec<f64> = batches
        .iter()
        .map(|b| decrypted_cells(b, &layout, home.position).iter().sum())
        .collect();
    assert!(totals[1] > totals[0] + 100.0);
    assert!(totals[12] < totals[11], "February restarts from zero");
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
    // Only the batch ending on February 1st closes its period.
    assert_eq!(
        batches
            .iter()
            .map(|b| b.closes_period())
            .collect::<Vec<_>>(),
        vec![false, false, true, false, false]
    );
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
    let readings = oracle_readings(date(2024, 5, 1), date(2024, 6, 1));
    // Every batch, across the restart, holds May to date; the last one closes May with the
    // whole month's bill.
    let closing = check_period_to_date(&batches, &readings, &tariff);
    let bill = tariff.bill(readings.iter().copied()).unwrap();
    assert_eq!(closing.len(), 1);
    assert_eq!(closing[0].0, "2024-05".parse::<YearMonth>().unwrap());
    assert_eq!(closing[0].1.cells(), bill.cells());
    assert!(batches[30].closes_period());
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
