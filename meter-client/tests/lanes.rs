//! The lanes against independent oracles, month-boundary cutting and the restart of the lane
//! state, on queued (not uploaded) batches: the billing lane's decrypted period-to-date cells
//! against the plaintext tariff on the same readings (the closing batch against the whole
//! period's bill); the analytics lane at its window slots against the same shares drawn
//! independently and, statistically, against the readings fed in; the noise plan through the
//! outbox and the signature; ε accounting, the privacy ledger and the budget's refusal.

mod common;

use clap::Parser as _;
use common::*;
use meter_client::queue::StateStore;
use meter_client::run_with_noise;
use meter_client::synthetic::SyntheticHome;
use seer_core::circuits::billing::BillingLayout;
use seer_core::data::Period;
use seer_core::dp::{BudgetPeriod, PrivacyAccountant, SharePlan};
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
) -> Vec<(Period, seer_core::tariff::Bill)> {
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
        let period: Period = period.parse().unwrap();
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

/// The share plan the tests' meters use: [`privacy`] against the billing layout.
fn test_plan(p: &meter_client::batch::PrivacySettings) -> SharePlan {
    let layout = BillingLayout::try_new(&Tariff::bescom(), &keys().ctx).unwrap();
    p.share_plan(layout.capacity()).unwrap()
}

/// The decrypted analytics lane of `batch`, each slot rounded to whole Wh after checking it is
/// within 10⁻³ of one (CKKS's error on a fresh ciphertext is far below).
fn decrypted_lane(batch: &meter_client::batch::SealedBatch) -> Vec<i64> {
    keys()
        .decrypt(&batch.analytics_lane)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let r = v.round();
            assert!(
                (v - r).abs() < 1e-3,
                "batch {} slot {i}: {v}",
                batch.sequence
            );
            r as i64
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_lane_is_the_window_slots_plus_shares_and_charges_epsilon_once() {
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

    // The oracle: the same seed through the same plan, with an independent accountant; the
    // meter draws nothing else from its generator, so the shares are the same draws.
    let p = privacy();
    let plan = test_plan(&p);
    let (n, t) = (plan.group_size(), plan.tolerated());
    assert_eq!(t, n / 10, "the default tolerance");
    let mut noise = seeded_noise(42);
    let mut accountant =
        PrivacyAccountant::new("oracle", BudgetPeriod::Month, p.monthly_budget, from);
    let readings = oracle_readings(from, until);
    for (b, day) in batches.iter().zip(readings.chunks(96)) {
        let span: Vec<Option<Wh>> = day.iter().map(|(_, w)| Some(*w)).collect();
        let lane = noise
            .shared_lane(&plan, &span, day[0].0.date(), &mut accountant)
            .unwrap();
        assert_eq!(b.readings, 96);
        assert_eq!(b.epsilon_spent, lane.epsilon_spent());
        assert!((b.epsilon_spent - 96.0 * EPSILON).abs() < 1e-9);
        // Daily windows: the batch is its whole window, slots 0..96.
        let plan_stmt = b.noise.as_ref().expect("a noise plan");
        assert_eq!(
            (
                plan_stmt.group_size,
                plan_stmt.tolerated,
                plan_stmt.window_slots,
                plan_stmt.first_slot,
                plan_stmt.slot_count,
                plan_stmt.interval_seconds,
            ),
            (n, t, 96, 0, 96, 900)
        );
        assert_eq!(plan_stmt.sensitivity_wh, SENSITIVITY_WH);
        assert_eq!(plan_stmt.epsilon, EPSILON);
        assert_eq!(
            plan_stmt.window_start,
            format!("{}T00:00:00+00:00", day[0].0.date())
        );
        let slots = decrypted_lane(b);
        for (i, want) in lane.readings().iter().enumerate() {
            assert_eq!(slots[i], want.get(), "{}: slot {i}", b.start);
        }
        // Only the window's 96 slots are used.
        assert!(slots[96..].iter().all(|v| *v == 0));
    }

    // The persisted accountant: the month restarted on April 1st, one day charged since.
    let store = StateStore::open(dir.path()).await.unwrap();
    let summary = store.summary().await.unwrap();
    store.close().await;
    let a = summary.accountant.unwrap();
    assert_eq!(a.period_start(), date(2024, 4, 1));
    assert!((a.spent() - 96.0 * EPSILON).abs() < 1e-9);
}

/// (a) Against the readings fed in (an oracle independent of the noise): over a year of
/// monthly windows (35,136 slots, 12 builds), every slot decrypts to the clamped reading plus
/// a share whose mean is 0 and whose variance is the plan's.
///
/// The bounds: the sample mean of m independent shares has standard error √(v/m); the sample
/// variance has relative standard error √((κ₄/σ⁴ + 2)/m), where a Pólya(r) − Pólya(r) share
/// has κ₄/σ⁴ = (1 + 4q + q²)/(2rq) ≤ 3/r (q < 1 close to 1). Both are checked within 5
/// standard errors (a false alarm below 10⁻⁶).
#[tokio::test(flavor = "multi_thread")]
async fn shares_average_to_zero_with_the_plan_variance() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (from, until) = (date(2024, 1, 1), date(2025, 1, 1));
    let mut s = settings(dir.path(), &ka, None, from, until);
    s.batch_days = 31;
    // A small group: shares of a quarter draw, whose moments converge quickly.
    s.privacy.noise_group_size = Some(4);
    s.privacy.noise_tolerated = Some(0);
    let plan = test_plan(&s.privacy);
    assert!((plan.share().shape() - 0.25).abs() < 1e-15);
    let (observer, _) = collector();
    run_with_noise(s, seeded_noise(7), observer).await.unwrap();
    let batches = queued_batches(dir.path()).await;
    assert_eq!(batches.len(), 12, "one batch per monthly window");

    let readings = oracle_readings(from, until);
    let delta = SENSITIVITY_WH;
    let mut shares = Vec::with_capacity(readings.len());
    let mut clamped = 0;
    for b in &batches {
        let lane = decrypted_lane(b);
        let stmt = b.noise.as_ref().unwrap();
        let month: Vec<_> = readings
            .iter()
            .filter(|(t, _)| b.period.contains(*t))
            .collect();
        assert_eq!(month.len() as u32, stmt.window_slots);
        assert_eq!((stmt.first_slot, stmt.slot_count), (0, stmt.window_slots));
        for (i, (_, wh)) in month.iter().enumerate() {
            let x = wh.get().min(delta);
            if x != wh.get() {
                clamped += 1;
            }
            shares.push(lane[i] - x);
        }
        assert!(lane[month.len()..].iter().all(|v| *v == 0));
    }
    assert_eq!(shares.len(), readings.len());
    let m = shares.len() as f64;
    let mean = shares.iter().map(|v| *v as f64).sum::<f64>() / m;
    let var = shares
        .iter()
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / (m - 1.0);
    let want = plan.share().variance();
    let se_mean = (want / m).sqrt();
    let rel_se_var = ((3.0 / plan.share().shape() + 2.0) / m).sqrt();
    eprintln!(
        "{m} shares ({clamped} readings clamped): mean {mean:.1} ± {se_mean:.1}, variance \
         {var:.4e} vs {want:.4e} (relative ± {rel_se_var:.3})"
    );
    assert!(mean.abs() < 5.0 * se_mean, "mean {mean} ± {se_mean}");
    assert!(
        (var / want - 1.0).abs() < 5.0 * rel_se_var,
        "variance {var} vs {want} (relative ± {rel_se_var})"
    );
}

/// Writes a 15-minute `timestamp,kwh` file of `rows` (local time, `None`: a missing reading).
fn write_csv(path: &std::path::Path, rows: &[(chrono::NaiveDateTime, Option<f64>)]) {
    let mut text = String::from("timestamp,kwh\n");
    for (t, kwh) in rows {
        match kwh {
            Some(k) => text.push_str(&format!("{},{k}\n", t.format("%Y-%m-%dT%H:%M:%S"))),
            None => text.push_str(&format!("{},?\n", t.format("%Y-%m-%dT%H:%M:%S"))),
        }
    }
    std::fs::write(path, text).unwrap();
}

/// (b) A batch starting mid-window, with a gap inside: readings at their window slots, the
/// gap's slots holding a share alone, nothing outside the span; (c) the plan round-trips
/// through the outbox and the statement rebuilt from the wire verifies; (d) `meter-client
/// privacy` reports readings × ε per day, counted by hand.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_mid_window_fills_its_span_and_is_accounted_per_day() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("home.csv");
    // January 3rd 06:00 to January 5th 17:45, except 10:00–11:45 on the 4th (8 readings);
    // one reading of 5 kWh (above Δ = 3.45 kWh) at 12:00 on the 4th.
    let at = |d: u32, h: u32, m: u32| date(2024, 1, d).and_hms_opt(h, m, 0).unwrap();
    let (gap_from, gap_until, big) = (at(4, 10, 0), at(4, 12, 0), at(4, 12, 0));
    let mut rows = Vec::new();
    let mut t = at(3, 6, 0);
    while t <= at(5, 17, 45) {
        let kwh = if (gap_from..gap_until).contains(&t) {
            None
        } else if t == big {
            Some(5.0)
        } else {
            Some(0.2 + 0.001 * f64::from(chrono::Timelike::minute(&t)))
        };
        rows.push((t, kwh));
        t += chrono::TimeDelta::minutes(15);
    }
    write_csv(&csv, &rows);
    let state = dir.path().join("state");
    let mut s = settings(&state, &ka, None, date(2024, 1, 1), date(2024, 1, 8));
    s.source = meter_client::source::SourceSpec::Csv(csv);
    s.batch_days = 7;
    // A small group, whose shares (a quarter draw) are rarely 0; a full billing group's
    // (1/922 of a draw) are 0 in 99 % of slots.
    s.privacy.noise_group_size = Some(4);
    s.privacy.noise_tolerated = Some(0);
    let (observer, _) = collector();
    run_with_noise(s.clone(), seeded_noise(5), observer)
        .await
        .unwrap();
    let batches = queued_batches(&state).await;
    assert_eq!(batches.len(), 1);
    let b = &batches[0];

    // The window is January 1st–7th: 672 slots; the span is from the 3rd 06:00 (slot
    // 2·96 + 24 = 216) to the 5th 17:45 (slot 4·96 + 71 = 455), 240 slots.
    let stmt = b.noise.clone().expect("a plan");
    assert_eq!(stmt.window_start, "2024-01-01T00:00:00+00:00");
    assert_eq!(
        (
            stmt.group_size,
            stmt.tolerated,
            stmt.window_slots,
            stmt.first_slot,
            stmt.slot_count,
            stmt.interval_seconds
        ),
        (4, 0, 672, 216, 240, 900)
    );
    assert_eq!(b.readings, 240 - 8);
    let lane = decrypted_lane(b);
    let slot = |t: chrono::NaiveDateTime| ((t - at(1, 0, 0)).num_minutes() / 15) as usize;
    for (i, v) in lane.iter().enumerate() {
        if !(216..456).contains(&i) {
            assert_eq!(*v, 0, "slot {i} outside the span");
        }
    }
    // The shares, against the readings fed in: each slot of the span is min(reading, Δ) (0 in
    // the gap) plus a share; the gap's shares are not all zero.
    let mut gap_shares = Vec::new();
    for (t, kwh) in &rows {
        let x = kwh.map_or(0, |k| ((k * 1000.0).round() as i64).min(SENSITIVITY_WH));
        let share = lane[slot(*t)] - x;
        if kwh.is_none() {
            gap_shares.push(share);
        }
        // Not bounded, but a quarter draw of scale 69,000 Wh beyond 10⁷ Wh has probability
        // below e⁻¹⁴⁰.
        assert!(share.abs() < 10_000_000, "{t}: {share}");
    }
    assert_eq!(gap_shares.len(), 8);
    assert!(gap_shares.iter().any(|s| *s != 0), "{gap_shares:?}");
    assert!((b.epsilon_spent - 232.0 * EPSILON).abs() < 1e-9);

    // (c) The signed statement, rebuilt from the wire message as the utility and the key
    // authority rebuild it, is the meter's, plan included, and verifies.
    let wire = meter_client::upload::to_wire("meter-7", b);
    assert_eq!(
        wire.noise_plan
            .as_ref()
            .map(seer_proto::statements::noise_plan_statement),
        Some(stmt.clone())
    );
    let from_wire = seer_proto::statements::batch_statement(&wire, b.billing_lane_blake3());
    let meter_side = meter_client::signing::batch_statement("meter-7", b);
    assert_eq!(from_wire, meter_side);
    let key = seer_auth::device::DeviceKey::generate().unwrap();
    let signature = key.sign(&meter_side);
    key.public_key().verify(&from_wire, &signature).unwrap();
    // A plan altered on the way no longer verifies.
    let mut altered = wire.clone();
    if let Some(p) = altered.noise_plan.as_mut() {
        p.first_slot = 0;
    }
    let altered = seer_proto::statements::batch_statement(&altered, b.billing_lane_blake3());
    assert!(key.public_key().verify(&altered, &signature).is_err());

    // (d) The privacy ledger, as the household reads it: 72 + 88 + 72 readings, by hand.
    let cli = meter_client::Cli::try_parse_from([
        "meter-client",
        "privacy",
        "--state",
        state.to_str().unwrap(),
    ])
    .unwrap();
    let mut out = Vec::new();
    meter_client::execute(&cli, &mut out, Box::new(std::io::sink()))
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["meter_id"], "meter-7");
    let analytics = &report["lanes"][0];
    assert_eq!(analytics["lane"], "analytics");
    assert_eq!(analytics["epsilon_per_reading"], EPSILON);
    assert!(
        analytics["explanation"]
            .as_str()
            .unwrap()
            .contains("exactly one released interval total")
    );
    let days: Vec<(String, u64, f64)> = analytics["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_owned(),
                d["readings"].as_u64().unwrap(),
                d["epsilon"].as_f64().unwrap(),
            )
        })
        .collect();
    let by_hand: [(&str, u32); 3] = [("2024-01-03", 72), ("2024-01-04", 88), ("2024-01-05", 72)];
    assert_eq!(days.len(), by_hand.len());
    for ((date, readings, epsilon), (want_date, want)) in days.iter().zip(by_hand) {
        assert_eq!((date.as_str(), *readings), (want_date, u64::from(want)));
        assert!(
            (epsilon - f64::from(want) * EPSILON).abs() < 1e-12,
            "{date}: {epsilon}"
        );
    }
    let month = &analytics["month"];
    assert_eq!(month["start"], "2024-01-01");
    assert!((month["spent"].as_f64().unwrap() - 232.0 * EPSILON).abs() < 1e-9);
    assert!((month["budget"].as_f64().unwrap() - 2976.0 * EPSILON).abs() < 1e-9);
    // No forecast lane has charged anything.
    assert_eq!(report["lanes"].as_array().unwrap().len(), 1);
}

/// (e) A batch past the month's budget is refused, and the state — lane state, accountant,
/// outbox, ledger — is exactly as before the refused run.
#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_budget_refuses_the_batch_and_changes_nothing() {
    let (ka, _) = start_key_authority(keys().public_key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &ka, None, date(2024, 6, 1), date(2024, 6, 2));
    // A day and a half of readings: the second day does not fit.
    s.privacy.monthly_budget = seer_core::dp::Epsilon::try_new(144.0 * EPSILON).unwrap();
    let (observer, _) = collector();
    run_with_noise(s.clone(), seeded_noise(1), observer.clone())
        .await
        .unwrap();
    let snapshot = |dir: std::path::PathBuf| async move {
        let store = StateStore::open(&dir).await.unwrap();
        let summary = store.summary().await.unwrap();
        let lane = store.lane_state(&Tariff::bescom()).await.unwrap();
        let ledger = store.privacy_ledger().await.unwrap();
        let mut queued = Vec::new();
        for seq in store.queued_sequences().await.unwrap() {
            queued.push(store.batch(seq).await.unwrap().unwrap());
        }
        store.close().await;
        (summary, lane, ledger, queued)
    };
    let before = snapshot(dir.path().to_path_buf()).await;
    assert_eq!(before.3.len(), 1);
    assert_eq!(before.2.len(), 1);
    let mut more = s.clone();
    more.range.until = Some(date(2024, 6, 3));
    let err = run_with_noise(more, seeded_noise(2), observer)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            meter_client::Error::Core(seer_core::Error::BudgetExhausted { .. })
        ),
        "{err}"
    );
    let after = snapshot(dir.path().to_path_buf()).await;
    assert_eq!(after, before);
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
    assert_eq!(closing[0].0, "2024-05".parse::<Period>().unwrap());
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
