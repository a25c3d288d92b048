//! The storage lifecycle (pruning, the storage report, the partitioning migration) on both
//! backends, and exactly once across replicas on PostgreSQL: several [`Store`]s — separate
//! pools, as separate `utility-server` processes have — on one database.

use std::collections::BTreeSet;

use seer_proto::v1::UploadBatch;

use super::tests::{TestDb, batch_in, bill, meter};
use super::*;

/// Released long ago / recently, in µs since the Unix epoch; the prunes below cut at
/// [`CUTOFF`], between the two.
const OLD_RELEASE: i64 = 1_000_000;
const RECENT_RELEASE: i64 = 9_000_000;
const CUTOFF: i64 = 5_000_000;

/// The batch of `meter` that closes `period` (ends at midnight starting the next month, in
/// the meter's offset), as sequence `sequence`.
fn closing(meter: &str, sequence: u64, period: &str, lane: &[u8]) -> Batch {
    let period_value: Period = period.parse().expect("period");
    let last = period_value.end_day().pred_opt().expect("a day before");
    let wire = UploadBatch {
        meter_id: meter.into(),
        sequence,
        period: period.into(),
        start: format!("{last}T00:00:00+05:30"),
        end: format!("{}T00:00:00+05:30", period_value.end_day()),
        readings: 48,
        billing_lane: lane.to_vec(),
        billing_position: 3,
        billing_group: 0,
        analytics_lane: vec![0x5A; 16],
        epsilon_spent: 0.25,
        ..UploadBatch::default()
    };
    Batch::try_from_wire(wire, 1024).expect("a valid closing batch")
}

/// Stores `days` daily batches of `meter` in `period` and its closing batch; the lanes
/// stored, in sequence order.
async fn store_month(
    store: &Store,
    meter: &str,
    first: u64,
    days: u64,
    period: &str,
) -> Vec<Vec<u8>> {
    let mut lanes = Vec::new();
    for sequence in first..first + days {
        let lane =
            format!("lane {meter} {sequence} {}", "x".repeat(sequence as usize)).into_bytes();
        let outcome = store
            .insert_batch(&batch_in(meter, sequence, period, 0, &lane))
            .await
            .expect("insert");
        assert_eq!(outcome, InsertOutcome::Inserted);
        lanes.push(lane);
    }
    let lane = format!("closing lane of {meter} {period}").into_bytes();
    let outcome = store
        .insert_batch(&closing(meter, first + days, period, &lane))
        .await
        .expect("insert the closing batch");
    assert_eq!(outcome, InsertOutcome::Inserted);
    lanes.push(lane);
    lanes
}

fn released(meter_id: &str, period: &str, at_us: i64) -> StoredBill {
    StoredBill {
        released_at_us: at_us,
        ..bill(meter_id, period, 12_345, &[("0-50 kWh", 42_000)])
    }
}

async fn stored_lanes(store: &Store, meter_id: &str, period: &str) -> Vec<Option<Vec<u8>>> {
    sqlx::query_scalar(
        "SELECT billing_lane FROM batches WHERE meter_id = $1 AND period = $2 ORDER BY sequence",
    )
    .bind(meter_id)
    .bind(period)
    .fetch_all(&store.pool)
    .await
    .expect("read lanes")
}

async fn evidence(store: &Store) -> Vec<(String, i64, String, Option<Vec<u8>>, Vec<u8>)> {
    let rows = sqlx::query(
        "SELECT meter_id, sequence, content_digest, billing_lane_blake3, analytics_lane \
         FROM batches ORDER BY meter_id, sequence",
    )
    .fetch_all(&store.pool)
    .await
    .expect("read the evidence");
    rows.iter()
        .map(|row| {
            (
                row.try_get("meter_id").expect("meter"),
                row.try_get("sequence").expect("sequence"),
                row.try_get("content_digest").expect("digest"),
                row.try_get("billing_lane_blake3").expect("lane digest"),
                row.try_get("analytics_lane").expect("analytics lane"),
            )
        })
        .collect()
}

fn bytes(lanes: &[Vec<u8>]) -> u64 {
    lanes.iter().map(|lane| lane.len() as u64).sum()
}

// ---- pruning ---------------------------------------------------------------------------

async fn prune_drops_the_lanes_of_old_released_bills_only(db: &TestDb) {
    let store = db.open().await;
    // m1: January billed long ago, February billed recently; m2: January billed recently;
    // m3: January never billed.
    let m1_jan = store_month(&store, "m1", 1, 3, "2007-01").await;
    let m1_feb = store_month(&store, "m1", 5, 2, "2007-02").await;
    let m2_jan = store_month(&store, "m2", 1, 4, "2007-01").await;
    let m3_jan = store_month(&store, "m3", 1, 2, "2007-01").await;
    store
        .record_bill(&released("m1", "2007-01", OLD_RELEASE))
        .await
        .expect("bill");
    store
        .record_bill(&released("m1", "2007-02", RECENT_RELEASE))
        .await
        .expect("bill");
    store
        .record_bill(&released("m2", "2007-01", RECENT_RELEASE))
        .await
        .expect("bill");
    let evidence_before = evidence(&store).await;
    let january: Period = "2007-01".parse().expect("period");
    let closing_before = store.closing_batches(january, 0).await.expect("closing");
    assert_eq!(closing_before.len(), 3, "m1, m2 and m3 closed January");

    // A dry run counts and changes nothing.
    let plan = store
        .prune_billing_lanes_before(CUTOFF, true)
        .await
        .expect("dry run");
    assert!(plan.dry_run);
    assert_eq!(plan.home_months, 1);
    assert_eq!(plan.lanes_pruned, m1_jan.len() as u64);
    assert_eq!(plan.bytes_freed, bytes(&m1_jan));
    assert_eq!(plan.months, ["2007-01"]);
    assert!(plan.months_fully_pruned.is_empty());
    let all_kept = |lanes: &[Vec<u8>]| lanes.iter().cloned().map(Some).collect::<Vec<_>>();
    assert_eq!(
        stored_lanes(&store, "m1", "2007-01").await,
        all_kept(&m1_jan)
    );

    let report = store
        .prune_billing_lanes_before(CUTOFF, false)
        .await
        .expect("prune");
    assert_eq!(
        (report.home_months, report.lanes_pruned, report.bytes_freed),
        (plan.home_months, plan.lanes_pruned, plan.bytes_freed),
        "the dry run foretold the prune"
    );
    assert!(!report.dry_run);
    assert_eq!(report.months, ["2007-01"]);
    assert!(
        report.months_fully_pruned.is_empty(),
        "m2 and m3 keep theirs"
    );
    assert_eq!(
        stored_lanes(&store, "m1", "2007-01").await,
        vec![None; m1_jan.len()]
    );
    assert_eq!(
        stored_lanes(&store, "m1", "2007-02").await,
        all_kept(&m1_feb)
    );
    assert_eq!(
        stored_lanes(&store, "m2", "2007-01").await,
        all_kept(&m2_jan)
    );
    assert_eq!(
        stored_lanes(&store, "m3", "2007-01").await,
        all_kept(&m3_jan)
    );
    // The rows, their digests and the analytics lanes stay: the evidence.
    assert_eq!(evidence(&store).await, evidence_before);
    assert_eq!(
        store
            .usage_summary(&meter("m1"), january)
            .await
            .expect("summary")
            .batches,
        m1_jan.len() as u64
    );
    // The billing job's reads leave the pruned lanes out.
    let closing_after = store.closing_batches(january, 0).await.expect("closing");
    let closing_meters: Vec<&str> = closing_after.iter().map(|b| b.meter_id.as_str()).collect();
    assert_eq!(closing_meters, ["m2", "m3"]);
    assert_eq!(closing_after[..], closing_before[1..]);
    let page = store
        .group_batches(january, 0, None, MAX_PAGE_SIZE)
        .await
        .expect("page");
    assert!(page.iter().all(|b| b.meter_id.as_str() != "m1"));
    assert_eq!(page.len(), m2_jan.len() + m3_jan.len());
    // Bills and the dashboard's reads are untouched.
    assert_eq!(store.bills(january).await.expect("bills").len(), 2);
    let counts = store.storage_report().await.expect("report");
    assert_eq!(counts.pruned_lanes, m1_jan.len() as u64);
    assert_eq!(
        counts.billing_lane_bytes,
        bytes(&m1_feb) + bytes(&m2_jan) + bytes(&m3_jan)
    );

    // A second run finds nothing left to do: each bill is visited once.
    let again = store
        .prune_billing_lanes_before(CUTOFF, false)
        .await
        .expect("prune again");
    assert_eq!(
        (again.home_months, again.lanes_pruned, again.bytes_freed),
        (0, 0, 0)
    );

    // Later the other bills age past the cutoff: January empties of lanes except m3's (no
    // bill), February empties entirely.
    let report = store
        .prune_billing_lanes_before(RECENT_RELEASE + 1, false)
        .await
        .expect("prune the rest");
    assert_eq!(report.home_months, 2);
    assert_eq!(report.lanes_pruned, (m1_feb.len() + m2_jan.len()) as u64);
    assert_eq!(report.bytes_freed, bytes(&m1_feb) + bytes(&m2_jan));
    assert_eq!(report.months, ["2007-01", "2007-02"]);
    assert_eq!(report.months_fully_pruned, ["2007-02"]);
    let compacted = store
        .compact_months(&report_periods(&report.months_fully_pruned).expect("periods"))
        .await
        .expect("compact");
    match store.backend() {
        Backend::Postgres => assert_eq!(compacted, ["batches_p2007_02"]),
        Backend::Sqlite => assert!(compacted.is_empty()),
    }
    // Still readable after the rewrite, and new batches of an old month still insert.
    assert_eq!(
        stored_lanes(&store, "m1", "2007-02").await,
        vec![None; m1_feb.len()]
    );
    assert_eq!(evidence(&store).await, evidence_before);
}

/// The retention API: a retention of zero prunes every released bill, a long one none.
async fn prune_by_retention_uses_the_clock(db: &TestDb) {
    let store = db.open().await;
    let lanes = store_month(&store, "m1", 1, 1, "2007-01").await;
    let now = chrono::Utc::now().timestamp_micros();
    store
        .record_bill(&released("m1", "2007-01", now - 3_600_000_000))
        .await
        .expect("bill");
    let day = std::time::Duration::from_secs(86_400);
    let none = store
        .prune_billing_lanes(day)
        .await
        .expect("a day's retention");
    assert_eq!((none.home_months, none.lanes_pruned), (0, 0));
    let plan = store
        .plan_billing_lane_prune(std::time::Duration::ZERO)
        .await
        .expect("plan");
    assert_eq!((plan.home_months, plan.lanes_pruned), (1, 2));
    let all = store
        .prune_billing_lanes(std::time::Duration::ZERO)
        .await
        .expect("no retention");
    assert_eq!(
        (all.home_months, all.lanes_pruned, all.bytes_freed),
        (1, 2, bytes(&lanes))
    );
}

// ---- the storage report ----------------------------------------------------------------

async fn storage_report_counts_rows_and_bytes(db: &TestDb) {
    let store = db.open().await;
    let empty = store.storage_report().await.expect("empty report");
    assert_eq!((empty.batches, empty.home_months), (0, 0));
    assert_eq!(empty.batch_bytes_per_home_month, 0.0);
    let mut lanes = store_month(&store, "m1", 1, 2, "2007-01").await;
    lanes.extend(store_month(&store, "m1", 4, 1, "2007-02").await);
    lanes.extend(store_month(&store, "m2", 1, 3, "2007-01").await);
    let report = store.storage_report().await.expect("report");
    assert_eq!(report.batches, lanes.len() as u64);
    assert_eq!(
        (report.meters, report.periods, report.home_months),
        (2, 2, 3)
    );
    assert_eq!(report.billing_lane_bytes, bytes(&lanes));
    assert_eq!(report.analytics_lane_bytes, 16 * lanes.len() as u64);
    assert_eq!(report.pruned_lanes, 0);
    let names: BTreeSet<&str> = report.tables.iter().map(|t| t.name.as_str()).collect();
    match store.backend() {
        Backend::Postgres => {
            assert_eq!(report.backend, "postgres");
            // Both months' partitions, and the next month's, made ahead.
            for name in ["batches_p2007_01", "batches_p2007_02", "batches_p2007_03"] {
                assert!(names.contains(name), "{name} in {names:?}");
            }
            assert!(
                !names.contains("batches"),
                "the parent has no storage of its own"
            );
        }
        Backend::Sqlite => {
            assert_eq!(report.backend, "sqlite");
            assert!(names.contains("batches"), "{names:?}");
        }
    }
    assert!(
        names.contains("meters") && names.contains("bills"),
        "{names:?}"
    );
    let listed: u64 = report.tables.iter().map(|t| t.bytes).sum();
    assert!(report.batch_bytes > 0);
    assert!(report.batch_bytes <= listed && listed <= report.database_bytes);
    assert!(
        report.tables.windows(2).all(|w| w[0].bytes >= w[1].bytes),
        "largest first"
    );
    assert_eq!(
        report.batch_bytes_per_home_month,
        report.batch_bytes as f64 / 3.0
    );
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["home_months"], 3);
}

// ---- the migration keeps every row -----------------------------------------------------

/// Everything of every batch row, as text (bytes as hex), ordered.
async fn all_rows(pool: &AnyPool) -> Vec<String> {
    let rows = sqlx::query(
        "SELECT meter_id, sequence, period, start_us, end_us, utc_offset_s, readings, \
         billing_group, billing_position, billing_lane, analytics_lane, epsilon_spent, \
         content_digest, received_at_us, signature, meter_certificate, start_text, end_text, \
         billing_lane_blake3, noise_group_size, noise_window_utc \
         FROM batches ORDER BY meter_id, sequence",
    )
    .fetch_all(pool)
    .await
    .expect("read every row");
    rows.iter()
        .map(|row| {
            let hex = |column: &str| {
                row.try_get::<Option<Vec<u8>>, _>(column)
                    .expect("bytes")
                    .map(|b| blake3::hash(&b).to_hex().to_string())
            };
            let int = |column: &str| row.try_get::<Option<i64>, _>(column).expect("integer");
            let text = |column: &str| row.try_get::<Option<String>, _>(column).expect("text");
            format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} \
                 {:?} {:?} {:?} {:?} {:?}",
                text("meter_id"),
                int("sequence"),
                text("period"),
                int("start_us"),
                int("end_us"),
                int("utc_offset_s"),
                int("readings"),
                int("billing_group"),
                int("billing_position"),
                hex("billing_lane"),
                hex("analytics_lane"),
                row.try_get::<f64, _>("epsilon_spent").expect("epsilon"),
                text("content_digest"),
                int("received_at_us"),
                hex("signature"),
                hex("meter_certificate"),
                text("start_text"),
                text("end_text"),
                hex("billing_lane_blake3"),
                int("noise_group_size"),
                text("noise_window_utc"),
            )
        })
        .collect()
}

async fn the_partition_migration_keeps_every_row(db: &TestDb) {
    const BEFORE: i64 = 20_270_201_000_000;
    sqlx::any::install_default_drivers();
    let (url, migrator) = match db {
        TestDb::Sqlite { .. } => (
            prepare_sqlite_url(db.url()).expect("sqlite url"),
            &SQLITE_MIGRATOR,
        ),
        TestDb::Postgres(_) => (db.url().to_owned(), &POSTGRES_MIGRATOR),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connect");
    migrator
        .run_to(BEFORE, &pool)
        .await
        .expect("the schema before");
    sqlx::query("INSERT INTO meters (meter_id, first_seen_us, last_sequence) VALUES ('m1', 1, 3), ('m2', 1, 1)")
        .execute(&pool)
        .await
        .expect("meters");
    for (meter, sequence, period, signed) in [
        ("m1", 1, "2007-01", true),
        ("m1", 2, "2007-01", false),
        ("m1", 3, "2007-02", true),
        ("m2", 1, "2007-02", false),
    ] {
        sqlx::query(
            "INSERT INTO batches (meter_id, sequence, period, start_us, end_us, utc_offset_s, \
             readings, billing_group, billing_position, billing_lane, analytics_lane, \
             epsilon_spent, content_digest, received_at_us, signature, meter_certificate, \
             start_text, end_text, billing_lane_blake3, noise_group_size, noise_window_utc) \
             VALUES ($1, $2, $3, $4, $5, 19800, 48, 2, 5, $6, $7, 0.5, $8, 77, $9, $10, $11, \
             $12, $13, $14, $15)",
        )
        .bind(meter)
        .bind(sequence)
        .bind(period)
        .bind(sequence * 1_000)
        .bind(sequence * 1_000 + 500)
        .bind(format!("billing {meter} {sequence}").into_bytes())
        .bind(format!("analytics {meter} {sequence}").into_bytes())
        .bind(format!("digest {meter} {sequence}"))
        .bind(signed.then(|| vec![1_u8, 2, 3]))
        .bind(signed.then(|| vec![4_u8, 5]))
        .bind(signed.then(|| "2007-01-01T00:00:00+05:30".to_owned()))
        .bind(signed.then(|| "2007-01-02T00:00:00+05:30".to_owned()))
        .bind(signed.then(|| vec![9_u8; 32]))
        .bind(signed.then_some(4_i64))
        .bind(signed.then(|| "2006-12-31T18:30:00Z".to_owned()))
        .execute(&pool)
        .await
        .expect("an old row");
    }
    let before = all_rows(&pool).await;
    assert_eq!(before.len(), 4);
    pool.close().await;

    // The store migrates the rest at start.
    let store = db.open().await;
    assert_eq!(
        all_rows(&store.pool).await,
        before,
        "every row, every column"
    );
    if store.backend() == Backend::Postgres {
        assert_eq!(
            store.batch_partitions().await.expect("partitions"),
            ["batches_p2007_01", "batches_p2007_02"]
        );
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(indexname AS TEXT) FROM pg_indexes WHERE tablename = 'batches' \
             ORDER BY 1",
        )
        .fetch_all(&store.pool)
        .await
        .expect("indexes");
        assert_eq!(
            indexes,
            [
                "batches_dashboard_meter_received",
                "batches_dashboard_period",
                "batches_dashboard_received",
                "batches_group_window",
                "batches_meter_period",
                "batches_period_group",
                "batches_pkey",
            ]
        );
    }
    // The cursors carry on from the old rows.
    assert_eq!(
        store
            .insert_batch(&batch_in("m1", 4, "2007-02", 0, b"after"))
            .await
            .expect("insert"),
        InsertOutcome::Inserted
    );
    assert_eq!(
        store
            .insert_batch(&batch_in("m1", 3, "2007-02", 0, b"other"))
            .await
            .expect("insert"),
        InsertOutcome::Conflict { last: 4 }
    );
    // Reopening runs the migrations again: nothing changes.
    store.close().await;
    let store = db.open().await;
    assert_eq!(all_rows(&store.pool).await.len(), 5);
    assert_eq!(all_rows(&store.pool).await[..3], before[..3]);
}

macro_rules! lifecycle_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

lifecycle_suite!(
    prune_drops_the_lanes_of_old_released_bills_only,
    prune_by_retention_uses_the_clock,
    storage_report_counts_rows_and_bytes,
    the_partition_migration_keeps_every_row,
);

// ---- exactly once across replicas (PostgreSQL) -----------------------------------------

/// Three replicas: three stores, each with its own pool and partition cache.
async fn replicas(db: &TestDb) -> [Store; 3] {
    [db.open().await, db.open().await, db.open().await]
}

async fn sequences_of(store: &Store, meter_id: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT sequence FROM batches WHERE meter_id = $1 ORDER BY sequence")
        .bind(meter_id)
        .fetch_all(&store.pool)
        .await
        .expect("sequences")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_store_exactly_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let stores = replicas(&db).await;

    // (a) The same batch from every replica, many times at once.
    let same = batch_in("a", 1, "2007-01", 0, b"the one");
    let mut tasks = Vec::new();
    for round in 0..30 {
        let store = stores[round % 3].clone();
        let batch = same.clone();
        tasks.push(tokio::spawn(
            async move { store.insert_batch(&batch).await },
        ));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task").expect("insert"));
    }
    let inserted = outcomes
        .iter()
        .filter(|o| **o == InsertOutcome::Inserted)
        .count();
    assert_eq!(inserted, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            InsertOutcome::Inserted | InsertOutcome::Duplicate { last: 1 }
        )),
        "{outcomes:?}"
    );
    assert_eq!(sequences_of(&stores[0], "a").await, [1]);

    // (b) One meter's consecutive sequences, every replica sending all of them in order.
    const N: u64 = 25;
    let mut tasks = Vec::new();
    for store in &stores {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for sequence in 1..=N {
                let lane = format!("b {sequence}").into_bytes();
                let outcome = store
                    .insert_batch(&batch_in("b", sequence, "2007-01", 0, &lane))
                    .await
                    .expect("insert");
                mine.push((sequence, outcome));
            }
            mine
        }));
    }
    let mut inserted = Vec::new();
    for task in tasks {
        for (sequence, outcome) in task.await.expect("task") {
            match outcome {
                InsertOutcome::Inserted => inserted.push(sequence),
                InsertOutcome::Duplicate { last } => assert!(last >= sequence),
                other => panic!("sequence {sequence}: {other:?}"),
            }
        }
    }
    inserted.sort_unstable();
    assert_eq!(
        inserted,
        (1..=N).collect::<Vec<_>>(),
        "each sequence inserted once"
    );
    assert_eq!(
        sequences_of(&stores[1], "b").await,
        (1..=N as i64).collect::<Vec<_>>(),
        "no gap, no double"
    );
    assert_eq!(
        stores[2].last_sequence(&meter("b")).await.expect("cursor"),
        N
    );

    // (c) Conflicting payloads under one sequence, from every replica at once.
    for sequence in 1..=5_u64 {
        let mut tasks = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            for copy in 0..3 {
                let store = store.clone();
                let lane = format!("c from replica {i} copy {copy}").into_bytes();
                tasks.push(tokio::spawn(async move {
                    let batch = batch_in("c", sequence, "2007-01", 0, &lane);
                    let outcome = store.insert_batch(&batch).await.expect("insert");
                    (outcome, batch.digest().to_hex())
                }));
            }
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (outcome, digest) = task.await.expect("task");
            match outcome {
                InsertOutcome::Inserted => winners.push(digest),
                InsertOutcome::Conflict { last } => assert_eq!(last, sequence),
                other => panic!("sequence {sequence}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "sequence {sequence}");
        let stored: String = sqlx::query_scalar(
            "SELECT content_digest FROM batches WHERE meter_id = 'c' AND sequence = $1",
        )
        .bind(sequence as i64)
        .fetch_one(&stores[0].pool)
        .await
        .expect("stored digest");
        assert_eq!(stored, winners[0]);
    }

    // (d) The first batches of brand-new months, from every replica at once: new meters
    // (all stored) and one batch sent by all (stored once). Months two apart, so that no
    // partition was made ahead by an earlier one.
    for (round, period) in ["2031-05", "2031-07", "2031-09", "2031-11"]
        .iter()
        .enumerate()
    {
        let mut tasks = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            for m in 0..3 {
                let store = store.clone();
                let meter_id = format!("d{round}-{i}-{m}");
                let period = (*period).to_owned();
                tasks.push(tokio::spawn(async move {
                    store
                        .insert_batch(&batch_in(&meter_id, 1, &period, 0, b"new month"))
                        .await
                }));
            }
            let store = store.clone();
            let shared = batch_in(&format!("d{round}-shared"), 1, period, 0, b"shared");
            tasks.push(tokio::spawn(
                async move { store.insert_batch(&shared).await },
            ));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("task").expect("insert in a new month"));
        }
        let inserted = outcomes
            .iter()
            .filter(|o| **o == InsertOutcome::Inserted)
            .count();
        assert_eq!(inserted, 9 + 1, "{period}: {outcomes:?}");
        let count: i64 =
            sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM batches WHERE period = $1")
                .bind(*period)
                .fetch_one(&stores[0].pool)
                .await
                .expect("count");
        assert_eq!(count, 10, "{period}");
    }
    let partitions = stores[0].batch_partitions().await.expect("partitions");
    let expected: Vec<&str> = vec![
        "batches_p2007_01",
        "batches_p2007_02",
        "batches_p2031_05",
        "batches_p2031_06",
        "batches_p2031_07",
        "batches_p2031_08",
        "batches_p2031_09",
        "batches_p2031_10",
        "batches_p2031_11",
        "batches_p2031_12",
    ];
    assert_eq!(partitions, expected);
}

/// Many replicas making the same new partitions at once, with nothing cached: all succeed,
/// each partition exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_for_new_partitions_all_succeed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let stores = replicas(&db).await;
    let months: Vec<Period> = (1..=12)
        .map(|m| Period::try_new(2040, m).expect("period"))
        .collect();
    let mut tasks = Vec::new();
    for store in &stores {
        for &month in &months {
            let store = store.clone();
            tasks.push(tokio::spawn(
                async move { store.ensure_partition(month).await },
            ));
        }
    }
    for task in tasks {
        task.await.expect("task").expect("ensure the partition");
    }
    let partitions = stores[0].batch_partitions().await.expect("partitions");
    let mut expected: Vec<String> = months
        .iter()
        .map(|&m| partitions::partition_name(m))
        .collect();
    expected.push("batches_p2041_01".to_owned());
    assert_eq!(partitions, expected);
    // A partition dropped behind a replica's back: the failed insert forgets it, the retry
    // makes it again.
    sqlx::raw_sql("DROP TABLE batches_p2040_03")
        .execute(&stores[0].pool)
        .await
        .expect("drop");
    let lost = batch_in("late", 1, "2040-03", 0, b"late");
    stores[1]
        .insert_batch(&lost)
        .await
        .expect_err("no partition");
    assert_eq!(
        stores[1].insert_batch(&lost).await.expect("the retry"),
        InsertOutcome::Inserted
    );
}

#[test]
fn partition_names_round_trip() {
    let period = Period::try_new(2027, 1).expect("period");
    assert_eq!(partitions::partition_name(period), "batches_p2027_01");
    assert_eq!(
        partitions::partition_period("batches_p2027_01"),
        Some(period)
    );
    for other in [
        "batches",
        "batches_p2027_1",
        "batches_p2027_13",
        "bills",
        "batches_p27_01",
    ] {
        assert_eq!(partitions::partition_period(other), None, "{other}");
    }
}
