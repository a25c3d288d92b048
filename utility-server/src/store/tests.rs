//! One storage suite, run against SQLite (a fresh file per test) and PostgreSQL (a fresh
//! database per test, dropped afterwards).
//!
//! PostgreSQL: `SEER_TEST_POSTGRES_URL` names an administrative URL (one that may `CREATE
//! DATABASE`); without it `postgres://postgres@127.0.0.1:5432/test` (then user `root`) is
//! used. When the variable is unset and nothing listens on 127.0.0.1:5432, the PostgreSQL
//! variants print a note and pass without running — except under `CI=true`, where they fail.

use seer_proto::v1::{NoisePlan, UploadBatch};
use seer_service::testing::{PostgresDatabase, postgres_admin_url};

use super::*;

/// Where one test's store lives; dropping it removes the database.
pub(super) enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres(PostgresDatabase),
}

impl TestDb {
    pub(super) fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        // A directory that does not exist yet: the store creates it.
        let url = format!("sqlite://{}/nested/dir/seer.db", dir.path().display());
        Self::Sqlite { _dir: dir, url }
    }

    pub(super) async fn postgres() -> Option<Self> {
        let admin_url = postgres_admin_url("storage").await?;
        Some(Self::Postgres(
            PostgresDatabase::create(&admin_url, "seer_utility_store").await,
        ))
    }

    pub(super) fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } => url,
            Self::Postgres(db) => db.url(),
        }
    }

    pub(super) async fn open(&self) -> Store {
        let store = Store::connect(self.url()).await.expect("open the store");
        let expected = match self {
            Self::Sqlite { .. } => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        };
        assert_eq!(store.backend(), expected);
        store
    }
}

fn batch(meter: &str, sequence: u64, lane: &[u8]) -> Batch {
    batch_in(meter, sequence, "2007-01", 0, lane)
}

pub(super) fn batch_in(meter: &str, sequence: u64, period: &str, group: u32, lane: &[u8]) -> Batch {
    let day = (sequence - 1) % 28 + 1;
    let wire = UploadBatch {
        meter_id: meter.into(),
        sequence,
        period: period.into(),
        start: format!("{period}-{day:02}T00:00:00+05:30"),
        end: format!("{period}-{day:02}T12:00:00+05:30"),
        readings: 48,
        billing_lane: lane.to_vec(),
        billing_position: 7,
        billing_group: group,
        analytics_lane: vec![0xA5; 16],
        epsilon_spent: 0.25,
        ..UploadBatch::default()
    };
    Batch::try_from_wire(wire, 1024).expect("a valid test batch")
}

pub(super) fn meter(id: &str) -> MeterId {
    MeterId::try_new(id).expect("valid meter id")
}

fn january() -> Period {
    "2007-01".parse().expect("period")
}

async fn count_batches(store: &Store, meter_id: &str) -> u64 {
    store
        .usage_summary(&meter(meter_id), january())
        .await
        .expect("summary")
        .batches
}

async fn count_meters(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM meters")
        .fetch_one(&store.pool)
        .await
        .expect("count meters")
}

// ---- the suite -------------------------------------------------------------------------

async fn inserts_in_order_and_keeps_the_cursor(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.last_sequence(&meter("m1")).await.expect("cursor"), 0);
    for sequence in 1..=3 {
        let outcome = store
            .insert_batch(&batch("m1", sequence, &[sequence as u8]))
            .await
            .expect("insert");
        assert_eq!(outcome, InsertOutcome::Inserted);
        assert_eq!(
            store.last_sequence(&meter("m1")).await.expect("cursor"),
            sequence
        );
    }
    assert_eq!(store.last_sequence(&meter("m2")).await.expect("cursor"), 0);
    // Reopening (migrations run again, as at every start) keeps everything.
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.last_sequence(&meter("m1")).await.expect("cursor"), 3);
    assert_eq!(count_batches(&store, "m1").await, 3);
}

async fn a_resend_with_the_same_digest_is_a_duplicate(db: &TestDb) {
    let store = db.open().await;
    store
        .insert_batch(&batch("m1", 1, b"one"))
        .await
        .expect("1");
    store
        .insert_batch(&batch("m1", 2, b"two"))
        .await
        .expect("2");
    for sequence in [1, 2] {
        let lane: &[u8] = if sequence == 1 { b"one" } else { b"two" };
        assert_eq!(
            store
                .insert_batch(&batch("m1", sequence, lane))
                .await
                .expect("resend"),
            InsertOutcome::Duplicate { last: 2 }
        );
    }
    assert_eq!(count_batches(&store, "m1").await, 2);
    assert_eq!(store.last_sequence(&meter("m1")).await.expect("cursor"), 2);
}

async fn different_content_for_a_stored_sequence_is_a_conflict(db: &TestDb) {
    let store = db.open().await;
    store
        .insert_batch(&batch("m1", 1, b"original"))
        .await
        .expect("1");
    assert_eq!(
        store
            .insert_batch(&batch("m1", 1, b"tampered"))
            .await
            .expect("conflict"),
        InsertOutcome::Conflict { last: 1 }
    );
    let stored = store
        .group_batches(january(), 0, None, 10)
        .await
        .expect("read back");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].billing_lane, b"original");
}

async fn a_gap_is_refused_and_stores_nothing(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(
        store
            .insert_batch(&batch("m1", 2, b"x"))
            .await
            .expect("gap"),
        InsertOutcome::Gap { expected: 1 }
    );
    assert_eq!(store.last_sequence(&meter("m1")).await.expect("cursor"), 0);
    assert_eq!(
        count_meters(&store).await,
        0,
        "a refused batch registers no meter"
    );
    store.insert_batch(&batch("m1", 1, b"x")).await.expect("1");
    assert_eq!(
        store
            .insert_batch(&batch("m1", 3, b"x"))
            .await
            .expect("gap"),
        InsertOutcome::Gap { expected: 2 }
    );
    assert_eq!(count_batches(&store, "m1").await, 1);
}

async fn concurrent_inserts_from_two_connections_store_exactly_once(db: &TestDb) {
    let first = db.open().await;
    let second = db.open().await;
    for sequence in 1..=12_u64 {
        // Even sequences: the same batch from both (a resend racing the original); odd: two
        // different contents for one sequence.
        let a = batch("m1", sequence, b"from a");
        let b = if sequence % 2 == 0 {
            a.clone()
        } else {
            batch("m1", sequence, b"from b")
        };
        let (ra, rb) = tokio::join!(first.insert_batch(&a), second.insert_batch(&b));
        let mut outcomes = [ra.expect("first"), rb.expect("second")];
        outcomes.sort_by_key(|o| !matches!(o, InsertOutcome::Inserted));
        let loser = if sequence % 2 == 0 {
            InsertOutcome::Duplicate { last: sequence }
        } else {
            InsertOutcome::Conflict { last: sequence }
        };
        assert_eq!(
            outcomes,
            [InsertOutcome::Inserted, loser],
            "sequence {sequence}"
        );
    }
    assert_eq!(count_batches(&first, "m1").await, 12);
    assert_eq!(first.last_sequence(&meter("m1")).await.expect("cursor"), 12);
}

async fn many_meters_in_parallel(db: &TestDb) {
    let store = db.open().await;
    let tasks: Vec<_> = (0..8)
        .map(|m| {
            let store = store.clone();
            tokio::spawn(async move {
                for sequence in 1..=10 {
                    let outcome = store
                        .insert_batch(&batch(&format!("meter-{m}"), sequence, b"x"))
                        .await
                        .expect("insert");
                    assert_eq!(outcome, InsertOutcome::Inserted);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(count_meters(&store).await, 8);
    for m in 0..8 {
        let id = format!("meter-{m}");
        assert_eq!(store.last_sequence(&meter(&id)).await.expect("cursor"), 10);
    }
}

async fn an_abandoned_transaction_leaves_nothing(db: &TestDb) {
    let store = db.open().await;
    // Every statement of the insert runs, then the transaction is dropped without a commit,
    // as a crash between the last statement and the commit would leave it.
    let outcome = store
        .insert_batch_then(&batch("m1", 1, b"lost"), Finish::Abandon)
        .await
        .expect("abandoned insert");
    assert_eq!(outcome, InsertOutcome::Inserted);
    assert_eq!(store.last_sequence(&meter("m1")).await.expect("cursor"), 0);
    assert_eq!(count_batches(&store, "m1").await, 0);
    assert_eq!(count_meters(&store).await, 0);
    // The resend after the "crash" is stored normally, and so is the next one.
    assert_eq!(
        store
            .insert_batch(&batch("m1", 1, b"kept"))
            .await
            .expect("1"),
        InsertOutcome::Inserted
    );
    store
        .insert_batch_then(&batch("m1", 2, b"lost"), Finish::Abandon)
        .await
        .expect("abandoned insert");
    assert_eq!(store.last_sequence(&meter("m1")).await.expect("cursor"), 1);
    assert_eq!(
        store
            .insert_batch(&batch("m1", 2, b"kept"))
            .await
            .expect("2"),
        InsertOutcome::Inserted
    );
    let stored = store
        .group_batches(january(), 0, None, 10)
        .await
        .expect("read back");
    assert!(stored.iter().all(|b| b.billing_lane == b"kept"));
    assert_eq!(stored.len(), 2);
}

async fn group_batches_pages_through_a_group_and_period(db: &TestDb) {
    let store = db.open().await;
    for meter_id in ["b", "a", "c"] {
        for sequence in 1..=3 {
            let lane = format!("{meter_id}{sequence}");
            store
                .insert_batch(&batch_in(meter_id, sequence, "2007-01", 0, lane.as_bytes()))
                .await
                .expect("insert");
        }
    }
    // Other groups and periods are not read.
    store
        .insert_batch(&batch_in("d", 1, "2007-01", 1, b"d1"))
        .await
        .expect("group 1");
    store
        .insert_batch(&batch_in("a", 4, "2007-02", 0, b"a4"))
        .await
        .expect("february");

    let mut seen = Vec::new();
    let mut after: Option<BatchKey> = None;
    loop {
        let page = store
            .group_batches(january(), 0, after.as_ref(), 4)
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        let last = page.last().expect("non-empty");
        after = Some(BatchKey {
            meter_id: last.meter_id.clone(),
            sequence: last.sequence,
        });
        seen.extend(page.into_iter().map(|b| {
            assert_eq!(b.billing_position, 7);
            String::from_utf8(b.billing_lane).expect("utf-8")
        }));
    }
    assert_eq!(seen, ["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3"]);
    let february: Period = "2007-02".parse().expect("period");
    let other = store
        .group_batches(february, 0, None, 100)
        .await
        .expect("february");
    assert_eq!(other.len(), 1);
}

async fn usage_summaries_count_without_decrypting(db: &TestDb) {
    let store = db.open().await;
    let empty = store
        .usage_summary(&meter("m1"), january())
        .await
        .expect("empty summary");
    assert_eq!(
        (
            empty.batches,
            empty.readings,
            empty.first_start,
            empty.last_end
        ),
        (0, 0, None, None)
    );
    assert!(empty.epsilon_spent.abs() < f64::EPSILON);
    for sequence in 1..=3 {
        store
            .insert_batch(&batch("m1", sequence, b"x"))
            .await
            .expect("insert");
    }
    store
        .insert_batch(&batch_in("m1", 4, "2007-02", 0, b"x"))
        .await
        .expect("february");
    let summary = store
        .usage_summary(&meter("m1"), january())
        .await
        .expect("summary");
    assert_eq!(summary.batches, 3);
    assert_eq!(summary.readings, 3 * 48);
    assert!((summary.epsilon_spent - 0.75).abs() < 1e-12);
    assert_eq!(
        summary.first_start.map(|t| t.to_rfc3339()).as_deref(),
        Some("2006-12-31T18:30:00+00:00")
    );
    assert_eq!(
        summary.last_end.map(|t| t.to_rfc3339()).as_deref(),
        Some("2007-01-03T06:30:00+00:00")
    );
    let via_library = crate::usage_summary(&store, &meter("m1"), january())
        .await
        .expect("library function");
    assert_eq!(via_library, summary);
}

pub(super) fn bill(
    meter_id: &str,
    period: &str,
    amount_paise: i64,
    cells: &[(&str, u64)],
) -> StoredBill {
    StoredBill {
        meter_id: meter(meter_id),
        period: period.parse().expect("period"),
        amount_paise,
        closing_sequence: 31,
        audit_sequence: 7,
        released_at_us: 1_700_000_000_000_000,
        slabs: cells
            .iter()
            .map(|&(label, wh)| SlabEnergy {
                label: label.to_owned(),
                wh,
            })
            .collect(),
    }
}

async fn bills_keep_their_cells_and_summarize_by_period(db: &TestDb) {
    let store = db.open().await;
    // Bills reference their meter: register the meters through ingest.
    for (m, sequence) in [("m1", 1), ("m2", 1)] {
        store
            .insert_batch(&batch(m, sequence, b"x"))
            .await
            .expect("meter");
    }
    let slabs = [
        ("0-50 kWh", 50_000),
        ("50-100 kWh", 50_000),
        ("100-200 kWh", 12_345),
        ("200+ kWh", 0),
    ];
    let january_m1 = bill("m1", "2007-01", 57_577, &slabs);
    let february_m1 = bill("m1", "2007-02", 20_750, &[("0-50 kWh", 50_000)]);
    let january_m2 = bill("m2", "2007-01", 4_150, &[("0-50 kWh", 10_000)]);
    for b in [&february_m1, &january_m2, &january_m1] {
        store.record_bill(b).await.expect("record");
    }
    // Recording again keeps the first record, cells and all.
    let mut changed = january_m1.clone();
    changed.amount_paise = 1;
    changed.slabs[0].wh = 1;
    store.record_bill(&changed).await.expect("idempotent");

    let january_bills = store.bills(january()).await.expect("bills");
    assert_eq!(january_bills, [january_m1.clone(), january_m2.clone()]);
    assert_eq!(
        store.meter_bills(&meter("m1"), None).await.expect("m1"),
        [january_m1.clone(), february_m1.clone()]
    );
    assert_eq!(
        store
            .meter_bills(&meter("m1"), Some("2007-02".parse().expect("period")))
            .await
            .expect("february"),
        std::slice::from_ref(&february_m1)
    );
    assert!(
        store
            .meter_bills(&meter("m3"), None)
            .await
            .expect("none")
            .is_empty()
    );
    let usage = store.billed_usage(&meter("m1")).await.expect("usage");
    assert_eq!(
        usage,
        [
            BilledPeriod {
                period: january(),
                total_wh: 112_345,
                amount_paise: 57_577,
            },
            BilledPeriod {
                period: "2007-02".parse().expect("period"),
                total_wh: 50_000,
                amount_paise: 20_750,
            },
        ]
    );
    assert_eq!(january_m1.total_wh(), 112_345);
    // A bill released before cells were (no cells) reads back with none and a zero total.
    store
        .record_bill(&bill("m2", "2007-02", 100, &[]))
        .await
        .expect("no cells");
    let usage = store.billed_usage(&meter("m2")).await.expect("usage");
    assert_eq!(usage[1].total_wh, 0);
}

fn analytics_input(meter: &str, input_id: &str, offset: u32, cts: &[&[u8]]) -> AnalyticsInput {
    AnalyticsInput {
        header: InputHeader {
            kind: "forecast".into(),
            meter_id: meter.into(),
            input_id: input_id.into(),
            model_blake3: "ab".repeat(32),
            slot_offset: offset,
            slot_count: 216,
            first_period: "2024-03-04T00:00".into(),
            group: 0,
        },
        ciphertexts: cts.iter().map(|c| c.to_vec()).collect(),
    }
}

async fn analytics_inputs_are_stored_once_and_decided_once(db: &TestDb) {
    let store = db.open().await;
    let model = "ab".repeat(32);
    let a = analytics_input("m1", "d1", 0, &[&[1, 2, 3], &[0xFF; 300]]);
    assert_eq!(
        store.insert_analytics_input(&a).await.expect("insert"),
        InputOutcome::Stored
    );
    assert_eq!(
        store.insert_analytics_input(&a).await.expect("resend"),
        InputOutcome::Duplicate
    );
    // Other bytes, or the same bytes at another block, under the same id: a conflict.
    let bytes = analytics_input("m1", "d1", 0, &[&[1, 2, 4], &[0xFF; 300]]);
    let block = analytics_input("m1", "d1", 216, &[&[1, 2, 3], &[0xFF; 300]]);
    for conflicting in [bytes, block] {
        assert_eq!(
            store
                .insert_analytics_input(&conflicting)
                .await
                .expect("insert"),
            InputOutcome::Conflict
        );
    }
    let b = analytics_input("m2", "d1", 216, &[&[9; 70_000]]);
    store.insert_analytics_input(&b).await.expect("insert");

    let pending = store
        .analytics_inputs("forecast", &model, Some("pending"))
        .await
        .expect("pending");
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].header, a.header);
    assert_eq!(pending[0].inputs, 2);
    assert_eq!(pending[1].header, b.header);
    assert_eq!(pending[1].status, InputStatus::Pending);
    assert_eq!(
        store
            .analytics_input_ciphertexts(&a.header)
            .await
            .expect("read"),
        a.ciphertexts
    );
    assert_eq!(
        store
            .analytics_input_ciphertexts(&b.header)
            .await
            .expect("read"),
        b.ciphertexts
    );
    // Other kinds and models are not listed.
    assert!(
        store
            .analytics_inputs("anomaly", &model, None)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .analytics_inputs("forecast", &"cd".repeat(32), None)
            .await
            .expect("list")
            .is_empty()
    );

    let released = InputStatus::Released { audit_seq: 17 };
    let refused = InputStatus::Refused {
        reason: "no receipt".into(),
        audit_seq: Some(18),
    };
    store
        .decide_analytics_input(&a.header, &released)
        .await
        .expect("decide");
    store
        .decide_analytics_input(&b.header, &refused)
        .await
        .expect("decide");
    // A decided input keeps its first decision.
    store
        .decide_analytics_input(&a.header, &refused)
        .await
        .expect("decide again");
    assert!(
        store
            .analytics_inputs("forecast", &model, Some("pending"))
            .await
            .expect("pending")
            .is_empty()
    );
    let all = store
        .analytics_inputs("forecast", &model, None)
        .await
        .expect("all");
    assert_eq!(all[0].status, released);
    assert_eq!(all[1].status, refused);
}

/// The noise plan of half `half` (0: 00:00 to 12:00, 1: 12:00 to 24:00, local +05:30) of day
/// `day` of January 2007, in quarter-hours of the day's window.
fn noise_plan(day: u32, half: u32, epsilon: f64) -> NoisePlan {
    NoisePlan {
        group_size: 100,
        tolerated: 10,
        sensitivity_wh: 3_450,
        epsilon,
        window_start: format!("2007-01-{day:02}T00:00:00+05:30"),
        interval_seconds: 900,
        window_slots: 96,
        first_slot: half * 48,
        slot_count: 48,
    }
}

/// A plan-carrying batch on the grid of [`noise_plan`], as its meter sent it.
fn planned_wire(
    meter: &str,
    sequence: u64,
    group: u32,
    day: u32,
    half: u32,
    epsilon: f64,
) -> UploadBatch {
    let (start, end) = if half == 0 {
        (
            format!("2007-01-{day:02}T00:00:00+05:30"),
            format!("2007-01-{day:02}T12:00:00+05:30"),
        )
    } else {
        (
            format!("2007-01-{day:02}T12:00:00+05:30"),
            format!("2007-01-{:02}T00:00:00+05:30", day + 1),
        )
    };
    UploadBatch {
        meter_id: meter.into(),
        sequence,
        period: "2007-01".into(),
        start,
        end,
        readings: 48,
        billing_lane: format!("billing {meter} {sequence}").into_bytes(),
        billing_position: 3,
        billing_group: group,
        analytics_lane: format!("analytics {meter} {sequence}").into_bytes(),
        epsilon_spent: 0.0,
        signature: vec![0x51; 64],
        meter_certificate: format!("certificate of {meter}").into_bytes(),
        noise_plan: Some(noise_plan(day, half, epsilon)),
    }
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("an RFC 3339 instant")
        .with_timezone(&Utc)
}

/// Day `day`'s window (midnight +05:30) in UTC.
fn window(day: u32) -> DateTime<Utc> {
    utc(&format!("2007-01-{day:02}T00:00:00+05:30"))
}

async fn noise_plans_round_trip_and_are_read_by_window(db: &TestDb) {
    let store = db.open().await;
    // Two meters' day 1 in group 0, one of its batches under another ε; one meter of group 1;
    // a day 2 batch; a batch without a plan.
    let mut sent = vec![
        planned_wire("m-b", 1, 0, 1, 0, 0.5),
        planned_wire("m-b", 2, 0, 1, 1, 0.5),
        planned_wire("m-a", 1, 0, 1, 0, 0.5),
        planned_wire("m-a", 2, 0, 1, 1, 0.25),
        planned_wire("m-c", 1, 1, 1, 0, 0.5),
        planned_wire("m-a", 3, 0, 2, 0, 0.5),
    ];
    // `start` is stored as sent, whatever RFC 3339 form the meter chose.
    sent[0].start = "2007-01-01T00:00:00.000+05:30".into();
    for wire in &sent {
        let batch = Batch::try_from_wire(wire.clone(), 1024).expect("a valid planned batch");
        assert_eq!(
            store.insert_batch(&batch).await.expect("insert"),
            InsertOutcome::Inserted
        );
    }
    store
        .insert_batch(&batch_in("m-d", 1, "2007-01", 0, b"old"))
        .await
        .expect("a batch without a plan");
    let unplanned: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM batches \
         WHERE noise_window_utc IS NULL AND noise_group_size IS NULL",
    )
    .fetch_one(&store.pool)
    .await
    .expect("count");
    assert_eq!(unplanned, 1, "a batch without a plan has none stored");
    // A resend of a planned batch is a duplicate; the same batch under another plan conflicts.
    let resend = Batch::try_from_wire(sent[2].clone(), 1024).expect("valid");
    assert_eq!(
        store.insert_batch(&resend).await.expect("resend"),
        InsertOutcome::Duplicate { last: 3 }
    );
    let mut other_plan = sent[2].clone();
    other_plan.noise_plan = Some(noise_plan(1, 0, 0.75));
    let other_plan = Batch::try_from_wire(other_plan, 1024).expect("valid");
    assert_eq!(
        store.insert_batch(&other_plan).await.expect("conflict"),
        InsertOutcome::Conflict { last: 3 }
    );

    let plans = store.window_plans(0, window(1)).await.expect("plans");
    let expected = |epsilon, batches, meters| PlanCount {
        plan: NoisePlan {
            first_slot: 0,
            slot_count: 0,
            ..noise_plan(1, 0, epsilon)
        },
        batches,
        meters,
    };
    assert_eq!(plans, [expected(0.5, 3, 2), expected(0.25, 1, 1)]);
    assert_eq!(
        store.window_plans(1, window(1)).await.expect("plans"),
        [expected(0.5, 1, 1)]
    );
    assert!(
        store
            .window_plans(0, window(3))
            .await
            .expect("plans")
            .is_empty()
    );

    // Group 0's day 1, two at a time: every batch as sent, billing lane by its digest.
    let mut read = Vec::new();
    let mut after: Option<BatchKey> = None;
    loop {
        let page = store
            .window_batches(0, window(1), after.as_ref(), 2)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        after = Some(last.key().expect("key"));
        read.extend(page);
    }
    let order: Vec<(&str, u64)> = read
        .iter()
        .map(|b| (b.batch.meter_id.as_str(), b.batch.sequence))
        .collect();
    assert_eq!(order, [("m-a", 1), ("m-a", 2), ("m-b", 1), ("m-b", 2)]);
    for stored in &read {
        let original = sent
            .iter()
            .find(|w| w.meter_id == stored.batch.meter_id && w.sequence == stored.batch.sequence)
            .expect("sent");
        assert_eq!(
            stored.billing_lane_blake3,
            *blake3::hash(&original.billing_lane).as_bytes()
        );
        assert_eq!(
            stored.batch,
            UploadBatch {
                billing_lane: Vec::new(),
                ..original.clone()
            }
        );
    }
    assert_eq!(read[2].batch.start, "2007-01-01T00:00:00.000+05:30");

    // Every window has ended by 2008; day 2's had not by the end of day 1.
    let pending = store
        .pending_group_windows(utc("2008-01-01T00:00:00Z"))
        .await
        .expect("pending");
    let listed: Vec<(u32, DateTime<Utc>, u32, u32)> = pending
        .iter()
        .map(|w| (w.group, w.window_start, w.hours, w.released))
        .collect();
    assert_eq!(
        listed,
        [
            (0, window(1), 24, 0),
            (0, window(2), 24, 0),
            (1, window(1), 24, 0)
        ]
    );
    let by_day_two = store
        .pending_group_windows(window(2))
        .await
        .expect("pending");
    assert_eq!(by_day_two.len(), 2);
    // Released hours count; a window released in full is no longer pending.
    for hour in 0..24 {
        let total = group_total(1, window(1) + chrono::TimeDelta::hours(hour), 1_000, &[]);
        store.record_group_total(&total).await.expect("record");
    }
    let total = group_total(0, window(1), 1_000, &[]);
    store.record_group_total(&total).await.expect("record");
    let pending = store
        .pending_group_windows(utc("2008-01-01T00:00:00Z"))
        .await
        .expect("pending");
    let listed: Vec<(u32, DateTime<Utc>, u32)> = pending
        .iter()
        .map(|w| (w.group, w.window_start, w.released))
        .collect();
    assert_eq!(listed, [(0, window(1), 1), (0, window(2), 0)]);
}

fn group_total(
    group: u32,
    hour_start: DateTime<Utc>,
    total_wh: i64,
    intervals: &[i64],
) -> GroupTotal {
    GroupTotal {
        billing_group: group,
        hour_start,
        total_wh,
        interval_wh: intervals.to_vec(),
        min_present: 812,
        epsilon: 0.5,
        noise_scale_wh: 6_900.0,
        audit_seq: 41,
        released_at_us: 1_700_000_000_000_000,
    }
}

async fn group_totals_are_recorded_once_and_read_by_range(db: &TestDb) {
    let store = db.open().await;
    let hour = |h: i64| window(1) + chrono::TimeDelta::hours(h);
    let first = group_total(0, hour(0), 12_345, &[3_000, -2, 4_000, 5_347]);
    let second = group_total(0, hour(1), -17, &[]);
    let other_group = group_total(1, hour(0), 99, &[]);
    for total in [&second, &other_group, &first] {
        assert_eq!(
            store.record_group_total(total).await.expect("record"),
            RecordOutcome::Inserted
        );
    }
    // The same release again (another audit entry, another time): unchanged.
    let again = GroupTotal {
        audit_seq: 42,
        released_at_us: 1,
        ..first.clone()
    };
    assert_eq!(
        store.record_group_total(&again).await.expect("again"),
        RecordOutcome::Unchanged
    );
    // Without its intervals it is the same release too.
    let without = GroupTotal {
        interval_wh: Vec::new(),
        ..first.clone()
    };
    assert_eq!(
        store.record_group_total(&without).await.expect("again"),
        RecordOutcome::Unchanged
    );
    // The intervals of an hour stored without them are added.
    let with = GroupTotal {
        interval_wh: vec![-20, 3, 0, 0],
        ..second.clone()
    };
    assert_eq!(
        store.record_group_total(&with).await.expect("intervals"),
        RecordOutcome::IntervalsAdded
    );
    // Other values: a conflict, and the stored row is kept.
    for changed in [
        GroupTotal {
            total_wh: 12_346,
            ..first.clone()
        },
        GroupTotal {
            epsilon: 0.25,
            ..first.clone()
        },
        GroupTotal {
            min_present: 811,
            ..first.clone()
        },
        GroupTotal {
            interval_wh: vec![3_000, -2, 4_000, 5_346],
            ..first.clone()
        },
    ] {
        assert_eq!(
            store.record_group_total(&changed).await.expect("conflict"),
            RecordOutcome::Conflict(Box::new(first.clone()))
        );
    }
    let read = store
        .group_totals(0, hour(0), hour(24))
        .await
        .expect("read");
    assert_eq!(read, [first.clone(), with.clone()]);
    assert_eq!(
        store.group_totals(0, hour(1), hour(2)).await.expect("read"),
        [with]
    );
    assert!(
        store
            .group_totals(0, hour(2), hour(24))
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        store
            .group_totals(1, hour(-5), hour(5))
            .await
            .expect("read"),
        [other_group]
    );
    let json = serde_json::to_value(&first).expect("json");
    assert_eq!(json["hour_start"], "2006-12-31T18:30:00Z");
    assert_eq!(
        json["interval_wh"],
        serde_json::json!([3_000, -2, 4_000, 5_347])
    );
}

async fn daily_releases_are_stored_with_their_decisions_and_summed_per_group(db: &TestDb) {
    let store = db.open().await;
    let model = "cd".repeat(32);
    let daily_input = |meter: &str, block: u32, group: u32| AnalyticsInput {
        header: InputHeader {
            kind: "daily".into(),
            meter_id: meter.into(),
            input_id: "daily-2024-03-12".into(),
            model_blake3: model.clone(),
            slot_offset: block * 512,
            slot_count: 512,
            first_period: "2024-03-12".into(),
            group,
        },
        ciphertexts: vec![vec![block as u8; 64]],
    };
    let inputs = [
        daily_input("a", 0, 0),
        daily_input("b", 1, 0),
        daily_input("c", 0, 1),
    ];
    for input in &inputs {
        store.insert_analytics_input(input).await.expect("insert");
    }
    let forecast = |meter: &str, hour: u32, milli: i64, group: u32| DailyForecast {
        meter_id: meter.into(),
        hour: format!("2024-03-13T{hour:02}:00"),
        model_blake3: model.clone(),
        kwh_milli: milli,
        input_day: "2024-03-12".into(),
        group,
        audit_seq: 9,
    };
    let forecasts = vec![
        forecast("a", 0, 100, 0),
        forecast("a", 1, 150, 0),
        forecast("b", 0, 250, 0),
        forecast("c", 0, 1_000, 1),
    ];
    let anomalies = vec![DailyAnomaly {
        meter_id: "a".into(),
        day: "2024-03-12".into(),
        model_blake3: model.clone(),
        score_milli: 812,
        flagged: true,
        explanation: Some(r#"{"features":[]}"#.into()),
        group: 0,
        audit_seq: 9,
    }];
    let decisions = vec![
        (
            inputs[0].header.clone(),
            InputStatus::Released { audit_seq: 9 },
        ),
        (
            inputs[1].header.clone(),
            InputStatus::Released { audit_seq: 9 },
        ),
        (
            inputs[2].header.clone(),
            InputStatus::Released { audit_seq: 9 },
        ),
    ];
    assert_eq!(
        store
            .record_daily_release(&decisions, &forecasts, &anomalies)
            .await
            .expect("record"),
        (4, 1)
    );
    // The same rows again (a rerun after a crash between release and answer) are kept once.
    assert_eq!(
        store
            .record_daily_release(&[], &forecasts, &anomalies)
            .await
            .expect("record again"),
        (0, 0)
    );
    let all = DailyFilter::default();
    assert_eq!(
        store.daily_forecasts(all).await.expect("forecasts"),
        forecasts
    );
    assert_eq!(
        store.daily_anomalies(all).await.expect("anomalies"),
        anomalies
    );
    let totals = store.daily_forecast_totals(all).await.expect("totals");
    let totals: Vec<(u32, &str, u64, i64)> = totals
        .iter()
        .map(|t| (t.group, t.hour.as_str(), t.homes, t.kwh_milli))
        .collect();
    assert_eq!(
        totals,
        vec![
            (0, "2024-03-13T00:00", 2, 350),
            (0, "2024-03-13T01:00", 1, 150),
            (1, "2024-03-13T00:00", 1, 1_000),
        ]
    );
    let other_day = DailyFilter {
        input_day: Some("2024-03-13"),
        model_blake3: None,
    };
    assert!(
        store
            .daily_forecasts(other_day)
            .await
            .expect("none")
            .is_empty()
    );
    assert!(
        store
            .daily_anomalies(other_day)
            .await
            .expect("none")
            .is_empty()
    );
    let statuses = store
        .analytics_inputs("daily", &model, Some("released"))
        .await
        .expect("released");
    assert_eq!(statuses.len(), 3);
}

async fn daily_group_forecasts_are_stored_once_and_read_by_day(db: &TestDb) {
    let store = db.open().await;
    let model = "ef".repeat(32);
    let hour = |group: u32, day: &str, h: u32, milli: i64| GroupForecastHour {
        group,
        hour: format!("{day}T{h:02}:00"),
        model_blake3: model.clone(),
        kwh_milli: milli,
        homes: 3,
        input_day: "2024-03-12".into(),
        audit_seq: 41,
    };
    assert!(
        !store
            .has_daily_group_forecast(0, "2024-03-12", &model)
            .await
            .expect("look up")
    );
    let hours: Vec<GroupForecastHour> = (0..24)
        .map(|h| hour(0, "2024-03-13", h, 300 + i64::from(h)))
        .collect();
    assert_eq!(
        store
            .record_daily_group_forecast(&hours)
            .await
            .expect("record"),
        24
    );
    // Stored once: a second write of the same hours (other values) changes nothing.
    let revised: Vec<GroupForecastHour> =
        (0..24).map(|h| hour(0, "2024-03-13", h, 9_999)).collect();
    assert_eq!(
        store
            .record_daily_group_forecast(&revised)
            .await
            .expect("record again"),
        0
    );
    assert!(
        store
            .has_daily_group_forecast(0, "2024-03-12", &model)
            .await
            .expect("look up")
    );
    assert!(
        !store
            .has_daily_group_forecast(1, "2024-03-12", &model)
            .await
            .expect("look up")
    );
    let by_day = DailyFilter {
        input_day: Some("2024-03-12"),
        model_blake3: Some(&model),
    };
    assert_eq!(
        store.daily_group_forecasts(by_day).await.expect("read"),
        hours
    );
    let other_day = DailyFilter {
        input_day: Some("2024-03-13"),
        model_blake3: None,
    };
    assert!(
        store
            .daily_group_forecasts(other_day)
            .await
            .expect("read")
            .is_empty()
    );
}

async fn dashboard_reads_aggregate_in_sql(db: &TestDb) {
    let store = db.open().await;
    let mut changes = store.subscribe_changes();
    let before = store.dashboard_change_counter().await.expect("counter");
    // m1: two batches in January (ε 0.25 each), m2 one, m3 one; bills for m1 and m2.
    for (m, sequence) in [("m1", 1), ("m1", 2), ("m2", 1), ("m3", 1)] {
        store
            .insert_batch(&batch(m, sequence, b"x"))
            .await
            .expect("batch");
    }
    assert_eq!(changes.recv().await.expect("a change"), "batch");
    let after = store.dashboard_change_counter().await.expect("counter");
    assert_ne!(before, after, "the counter moves with every batch");
    store
        .record_bill(&bill(
            "m1",
            "2007-01",
            35_300,
            &[("a", 50_000), ("b", 25_500)],
        ))
        .await
        .expect("bill");
    store
        .record_bill(&bill("m2", "2007-01", 12_000, &[("a", 30_000), ("b", 0)]))
        .await
        .expect("bill");
    store
        .record_bill_refusal("m3", january(), "refused")
        .await
        .expect("refusal");
    for (m, day, flagged) in [
        ("m1", "2007-01-05", 1),
        ("m2", "2007-01-05", 0),
        ("m1", "2007-02-01", 1),
    ] {
        sqlx::query(
            "INSERT INTO daily_anomalies (meter_id, day, model_blake3, score_milli, flagged, \
             explanation, input_group, audit_seq, released_at_us) \
             VALUES ($1, $2, 'model', 900, $3, NULL, 0, 1, 0)",
        )
        .bind(m)
        .bind(day)
        .bind(flagged)
        .execute(&store.pool)
        .await
        .expect("anomaly");
    }
    assert_eq!(
        store.dashboard_latest_period().await.expect("latest"),
        Some(january())
    );
    let counts = store.dashboard_overview(january()).await.expect("overview");
    assert_eq!(
        counts,
        OverviewCounts {
            homes: 3,
            batches: 4,
            bills_released: 2,
            bills_refused: 1,
            billed_wh: 105_500,
            billed_paise: 47_300,
            anomalies_flagged: 1,
        }
    );
    let query = |sort, descending, offset, limit, meter| HomesQuery {
        period: january(),
        cells: 2,
        sort,
        descending,
        offset,
        limit,
        meter,
    };
    let rows = store
        .dashboard_homes(&query(HomeSort::Amount, true, 0, None, None))
        .await
        .expect("homes");
    let ids: Vec<&str> = rows.iter().map(|r| r.meter_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"], "amount descending, no bill last");
    assert_eq!(rows[0].cell_wh, [Some(50_000), Some(25_500)]);
    assert_eq!(rows[0].total_wh, Some(75_500));
    assert_eq!(rows[0].amount_paise, Some(35_300));
    assert_eq!(rows[0].batches, 2);
    assert!((rows[0].epsilon - 0.5).abs() < 1e-12);
    assert_eq!(rows[0].anomalies, 1, "February's flag is not January's");
    assert!(rows[0].last_batch_us.is_some());
    assert_eq!(rows[2].cell_wh, [None, None]);
    assert_eq!(rows[2].amount_paise, None);
    let rows = store
        .dashboard_homes(&query(HomeSort::Cell(1), false, 0, None, None))
        .await
        .expect("homes");
    let ids: Vec<&str> = rows.iter().map(|r| r.meter_id.as_str()).collect();
    assert_eq!(ids, ["m2", "m1", "m3"], "cell 1 ascending");
    let rows = store
        .dashboard_homes(&query(HomeSort::Meter, false, 1, Some(1), None))
        .await
        .expect("page");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].meter_id, "m2");
    let own = meter("m2");
    let rows = store
        .dashboard_homes(&query(HomeSort::Meter, false, 0, None, Some(&own)))
        .await
        .expect("one home");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        store.dashboard_home_count(Some(&own)).await.expect("count"),
        1
    );
    assert_eq!(store.dashboard_home_count(None).await.expect("count"), 3);
    let flagged = store
        .dashboard_flagged_days(None, Some(january()), 10)
        .await
        .expect("flagged");
    assert_eq!(flagged.len(), 1);
    assert_eq!(
        (flagged[0].meter_id.as_str(), flagged[0].day.as_str()),
        ("m1", "2007-01-05")
    );
    assert!((flagged[0].score - 0.9).abs() < 1e-9);
    let per_hour = store.dashboard_batches_per_hour(0).await.expect("per hour");
    assert_eq!(per_hour.iter().map(|h| h.batches).sum::<u64>(), 4);
    let refusals = store.bill_refusals(january(), 10).await.expect("refusals");
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].meter_id, "m3");
    // Group hours: a forecast and a total of group 2 line up by hour text.
    store
        .record_daily_group_forecast(&[GroupForecastHour {
            group: 2,
            hour: "2007-01-06T05:00".into(),
            model_blake3: "model".into(),
            kwh_milli: 4_200,
            homes: 3,
            input_day: "2007-01-05".into(),
            audit_seq: 3,
        }])
        .await
        .expect("group forecast");
    sqlx::query(
        "INSERT INTO group_totals (billing_group, hour_start, total_wh, interval_wh, \
         min_present, epsilon, noise_scale_wh, audit_seq, released_at_us) \
         VALUES (2, '2007-01-06T05:00:00Z', 4100, '', 3, 0.5, 10.0, 4, 0)",
    )
    .execute(&store.pool)
    .await
    .expect("group total");
    assert_eq!(
        store.dashboard_latest_group_day().await.expect("day"),
        Some("2007-01-06".to_owned())
    );
    let hours = store
        .dashboard_group_hours("2007-01-06")
        .await
        .expect("hours");
    assert_eq!(
        hours,
        [GroupHour {
            group: 2,
            hour: "2007-01-06T05".into(),
            forecast_milli_kwh: Some(4_200),
            forecast_homes: Some(3),
            actual_wh: Some(4_100),
        }]
    );
    for (hour, milli, day, audit) in [
        ("2007-01-06T00:00", 900, "2007-01-05", 5),
        ("2007-01-07T00:00", 410, "2007-01-06", 6),
        ("2007-01-07T01:00", 380, "2007-01-06", 6),
    ] {
        sqlx::query(
            "INSERT INTO daily_forecasts (meter_id, hour, model_blake3, kwh_milli, input_day, \
             input_group, audit_seq, released_at_us) VALUES ('m1', $1, 'model', $2, $3, 0, $4, 0)",
        )
        .bind(hour)
        .bind(milli)
        .bind(day)
        .bind(audit)
        .execute(&store.pool)
        .await
        .expect("forecast");
    }
    assert_eq!(
        store
            .dashboard_home_forecast(&meter("m1"))
            .await
            .expect("forecast"),
        [
            ("2007-01-07T00:00".to_owned(), 410),
            ("2007-01-07T01:00".to_owned(), 380)
        ]
    );
    assert!(
        store
            .dashboard_home_forecast(&meter("m2"))
            .await
            .expect("none")
            .is_empty()
    );
    assert!(
        store
            .dashboard_group_hours("2007-01-07")
            .await
            .expect("none")
            .is_empty()
    );
}

/// Generates each test of the suite once per backend.
macro_rules! storage_suite {
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

storage_suite!(
    dashboard_reads_aggregate_in_sql,
    daily_group_forecasts_are_stored_once_and_read_by_day,
    inserts_in_order_and_keeps_the_cursor,
    a_resend_with_the_same_digest_is_a_duplicate,
    different_content_for_a_stored_sequence_is_a_conflict,
    a_gap_is_refused_and_stores_nothing,
    concurrent_inserts_from_two_connections_store_exactly_once,
    many_meters_in_parallel,
    an_abandoned_transaction_leaves_nothing,
    group_batches_pages_through_a_group_and_period,
    usage_summaries_count_without_decrypting,
    bills_keep_their_cells_and_summarize_by_period,
    analytics_inputs_are_stored_once_and_decided_once,
    noise_plans_round_trip_and_are_read_by_window,
    group_totals_are_recorded_once_and_read_by_range,
    daily_releases_are_stored_with_their_decisions_and_summed_per_group,
);

#[test]
fn bills_serialize_with_rupees_and_kwh_per_slab() {
    let json = serde_json::to_value(bill(
        "m1",
        "2007-01",
        123_456,
        &[("0-50 kWh", 50_000), ("50-100 kWh", 1_234)],
    ))
    .expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "meter_id": "m1",
            "period": "2007-01",
            "amount_paise": 123_456,
            "amount_rupees": "1234.56",
            "closing_sequence": 31,
            "audit_sequence": 7,
            "released_at_us": 1_700_000_000_000_000_i64,
            "kwh_per_slab": [
                {"label": "0-50 kWh", "wh": 50_000, "kwh": "50.000"},
                {"label": "50-100 kWh", "wh": 1_234, "kwh": "1.234"},
            ],
        })
    );
    assert_eq!(format_rupees(5), "0.05");
    assert_eq!(format_rupees(-105), "-1.05");
    assert_eq!(format_rupees(0), "0.00");
    assert_eq!(format_kwh(0), "0.000");
    assert_eq!(format_kwh(7), "0.007");
    assert_eq!(format_kwh(1_000_001), "1000.001");
}

// ---- SQLite specifics and URLs -----------------------------------------------------------

#[tokio::test]
async fn sqlite_creates_the_file_in_wal_mode() {
    let db = TestDb::sqlite();
    let store = db.open().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .expect("journal mode");
    assert_eq!(mode.to_lowercase(), "wal");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&store.pool)
        .await
        .expect("busy timeout");
    assert_eq!(busy, 10_000);
    let TestDb::Sqlite { url, .. } = &db else {
        unreachable!("a SQLite test database")
    };
    let path = url.trim_start_matches("sqlite://");
    assert!(std::path::Path::new(path).is_file(), "{path} exists");
}

#[test]
fn urls_name_their_backend_and_hide_passwords() {
    assert_eq!(backend_of("sqlite:x.db").expect("sqlite"), Backend::Sqlite);
    assert_eq!(
        backend_of("postgresql://h/db").expect("postgres"),
        Backend::Postgres
    );
    let error = backend_of("mysql://u:secret@h/db").expect_err("mysql");
    assert!(!error.to_string().contains("secret"), "{error}");
    assert_eq!(
        redact_url("postgres://seer:hunter2@db:5432/u?sslmode=require"),
        "postgres://seer:***@db:5432/u?sslmode=require"
    );
}

/// The two migration directories differ only in the ciphertext column type (and the header
/// comment that says so) — except [`PARTITIONING_MIGRATION`], which partitions `batches` in
/// PostgreSQL and, in SQLite, rebuilds it to make the billing lane nullable: the same version
/// in both, different SQL.
#[test]
fn the_backends_migrations_are_kept_in_step() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/utility-server");
    let list = |backend: &str| {
        let mut names: Vec<String> = std::fs::read_dir(root.join(backend))
            .expect("migration directory")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    };
    let (sqlite, postgres) = (list("sqlite"), list("postgres"));
    assert_eq!(sqlite, postgres, "the same migrations in both directories");
    let body = |backend: &str, name: &str| {
        std::fs::read_to_string(root.join(backend).join(name))
            .expect("migration")
            .lines()
            .filter(|line| !line.starts_with("--"))
            .map(|line| line.replace("BYTEA", "BLOB"))
            .collect::<Vec<_>>()
    };
    assert!(sqlite.iter().any(|name| name == PARTITIONING_MIGRATION));
    for name in sqlite.iter().filter(|name| *name != PARTITIONING_MIGRATION) {
        assert_eq!(body("sqlite", name), body("postgres", name), "{name}");
    }
}

/// The one migration whose SQL differs between the backends beyond the binary type.
const PARTITIONING_MIGRATION: &str = "20270202000000_batch_partitions.sql";
