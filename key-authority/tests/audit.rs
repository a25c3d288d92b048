//! The audit log's storage suite, run against SQLite (a temporary file) and PostgreSQL (a fresh
//! database per test, dropped afterwards): appending, listing, verification, every kind of
//! tampering, and failing loudly when the log cannot be written.
//!
//! PostgreSQL: `SEER_TEST_POSTGRES_URL` names an administrative URL (one that may `CREATE
//! DATABASE`); without it, `postgres://postgres@127.0.0.1:5432/test` (then user `root`) is
//! used. When the variable is unset and nothing listens on 127.0.0.1:5432, the PostgreSQL
//! tests print a note and pass without running, except under `CI=true`, where they fail.

#[macro_use]
mod common;

use std::sync::Arc;

use key_authority::audit::{
    Anchor, AuditEntry, AuditError, AuditLog, Backend, Decision, EntryCaller, EntryHash,
    InputDigest, ListQuery, NewEntry, ProblemKind, RequestKind, SignedHead, VerifyReport,
};
use key_authority::auth::{Caller, Identity, JwtSigningKey, Role};
use seer_service::testing::{PostgresDatabase, postgres_admin_url};
use sqlx::AnyPool;

// ---------------------------------------------------------------------------------------------
// The backends

/// One fresh database of either backend, and the signing key of its log.
struct TestDb {
    url: String,
    backend: Backend,
    key: Arc<JwtSigningKey>,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<PostgresDatabase>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}",
            dir.path().join("db").join("audit.db").display()
        );
        Self {
            url,
            backend: Backend::Sqlite,
            key: Arc::new(JwtSigningKey::generate().expect("key")),
            _sqlite_dir: Some(dir),
            _postgres: None,
        }
    }

    /// `None` (after printing why) when PostgreSQL is not available and need not be.
    async fn postgres() -> Option<Self> {
        let admin_url = postgres_admin_url("audit").await?;
        let database = PostgresDatabase::create(&admin_url, "seer_ka_audit").await;
        Some(Self {
            url: database.url().to_owned(),
            backend: Backend::Postgres,
            key: Arc::new(JwtSigningKey::generate().expect("key")),
            _sqlite_dir: None,
            _postgres: Some(database),
        })
    }

    async fn open(&self) -> AuditLog {
        let log = AuditLog::connect(&self.url, Arc::clone(&self.key))
            .await
            .expect("open the audit log");
        assert_eq!(log.backend(), self.backend);
        log
    }

    /// A separate connection pool, for tampering behind the log's back.
    async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url).await.expect("raw connection")
    }

    async fn exec(&self, sql: &'static str) {
        let pool = self.raw().await;
        sqlx::raw_sql(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    }
}

backend_suite!(
    appends_and_verifies,
    lists_with_filters_and_pages,
    detects_an_altered_field,
    detects_an_altered_row_with_a_recomputed_hash,
    detects_a_deleted_middle_row,
    detects_a_deleted_last_row,
    detects_a_deleted_last_row_with_the_head_rewound,
    detects_a_row_inserted_past_the_head,
    detects_a_row_inserted_in_the_middle,
    detects_reordered_rows,
    detects_a_rewritten_chain_without_the_key,
    detects_a_malformed_row,
    anchors_detect_a_rollback,
    append_refuses_to_extend_a_broken_chain,
    append_fails_when_the_pool_is_closed,
    append_fails_when_the_table_is_gone,
    concurrent_appends_form_one_chain,
    hostile_strings_are_stored_safely,
    the_log_persists_and_belongs_to_its_key,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn household(meter: &str) -> Caller {
    Caller::new(
        format!("household:{meter}"),
        Identity::Household {
            meter_id: meter.into(),
        },
    )
}

fn utility() -> Caller {
    Caller::new("utility", Identity::Utility)
}

/// Five varied entries: granted and refused, with and without caller, digest, period.
fn five_entries() -> Vec<NewEntry> {
    vec![
        NewEntry::new(RequestKind::BILL, Decision::Granted)
            .caller(&utility())
            .meter("M-1")
            .period("2007-01")
            .input(InputDigest::sha256(b"bill M-1 2007-01")),
        NewEntry::new(RequestKind::BILL, Decision::refused("already released"))
            .caller(&utility())
            .meter("M-1")
            .period("2007-01")
            .input(InputDigest::sha256(b"bill M-1 2007-01")),
        NewEntry::new(RequestKind::BILL, Decision::refused("missing bearer token"))
            .meter("M-2")
            .period("2007-01"),
        NewEntry::new(
            RequestKind::BILL,
            Decision::refused("household may not act for meter M-1"),
        )
        .caller(&household("M-2"))
        .meter("M-1")
        .period("2007-02"),
        NewEntry::new(RequestKind::FORECAST, Decision::Granted)
            .caller(&utility())
            .meter("M-2")
            .period("2007-02-01..2007-02-07")
            .input(InputDigest::sha256(b"forecast")),
    ]
}

async fn log_with_five(db: &TestDb) -> (AuditLog, Vec<AuditEntry>) {
    let log = db.open().await;
    let mut stored = Vec::new();
    for entry in five_entries() {
        stored.push(log.append(entry).await.expect("append"));
    }
    (log, stored)
}

async fn all_entries(log: &AuditLog) -> Vec<AuditEntry> {
    log.list(&ListQuery {
        limit: 1000,
        ..ListQuery::default()
    })
    .await
    .expect("list")
    .entries
}

#[track_caller]
fn assert_problem(report: &VerifyReport, row: u64, expected: impl Fn(&ProblemKind) -> bool) {
    let problem = report.problem.as_ref().unwrap_or_else(|| {
        panic!("tampering went unnoticed: {report:?}");
    });
    assert_eq!(problem.row, row, "{problem}");
    assert!(expected(&problem.kind), "unexpected problem: {problem}");
    assert!(!report.is_intact());
}

/// Inserts `entry` as it stands, bypassing the log.
async fn insert_raw(db: &TestDb, entry: &AuditEntry) {
    let pool = db.raw().await;
    sqlx::query(
        "INSERT INTO audit_entries (seq, recorded_at_us, caller_subject, caller_role, \
         request_kind, meter_id, period, input_digest, decision, reason, prev_hash, entry_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(i64::try_from(entry.sequence).expect("small"))
    .bind(entry.recorded_at.timestamp_micros())
    .bind(entry.caller.as_ref().map(|c| c.subject.clone()))
    .bind(entry.caller.as_ref().map(|c| c.role.as_str().to_owned()))
    .bind(entry.kind.as_str().to_owned())
    .bind(entry.meter_id.clone())
    .bind(entry.period.clone())
    .bind(entry.input_digest.map(|d| d.to_string()))
    .bind(entry.decision.as_str().to_owned())
    .bind(entry.decision.reason().map(str::to_owned))
    .bind(entry.previous_hash.to_string())
    .bind(entry.entry_hash.to_string())
    .execute(&pool)
    .await
    .expect("raw insert");
    pool.close().await;
}

/// Overwrites row `sequence` with `entry`'s meter and hashes.
async fn rewrite_raw(db: &TestDb, sequence: u64, entry: &AuditEntry) {
    let pool = db.raw().await;
    sqlx::query(
        "UPDATE audit_entries SET meter_id = $1, prev_hash = $2, entry_hash = $3 WHERE seq = $4",
    )
    .bind(entry.meter_id.clone())
    .bind(entry.previous_hash.to_string())
    .bind(entry.entry_hash.to_string())
    .bind(i64::try_from(sequence).expect("small"))
    .execute(&pool)
    .await
    .expect("raw update");
    pool.close().await;
}

async fn set_head_raw(db: &TestDb, head: &SignedHead) {
    let pool = db.raw().await;
    sqlx::query(
        "UPDATE audit_head SET last_seq = $1, last_hash = $2, key_id = $3, signature = $4 \
         WHERE id = 1",
    )
    .bind(i64::try_from(head.sequence).expect("small"))
    .bind(head.entry_hash.to_string())
    .bind(head.key_id.clone())
    .bind(head.signature.clone())
    .execute(&pool)
    .await
    .expect("raw head update");
    pool.close().await;
}

fn rehashed(mut entry: AuditEntry) -> AuditEntry {
    entry.entry_hash = entry.compute_hash();
    entry
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn appends_and_verifies(db: TestDb) {
    let log = db.open().await;
    let empty = log.verify(None).await.expect("verify");
    assert!(empty.is_intact(), "{empty:?}");
    assert_eq!(empty.entries_checked, 0);
    assert_eq!(empty.head.as_ref().expect("head").sequence, 0);

    let mut stored = Vec::new();
    for entry in five_entries() {
        stored.push(log.append(entry).await.expect("append"));
    }
    for (i, entry) in stored.iter().enumerate() {
        assert_eq!(entry.sequence, i as u64 + 1);
        assert_eq!(entry.entry_hash, entry.compute_hash());
        let previous = if i == 0 {
            EntryHash::ZERO
        } else {
            stored[i - 1].entry_hash
        };
        assert_eq!(entry.previous_hash, previous);
        if i > 0 {
            assert!(entry.recorded_at >= stored[i - 1].recorded_at);
        }
    }
    assert_eq!(
        stored[2].caller, None,
        "an unauthenticated request has no caller"
    );
    assert_eq!(
        stored[3].caller,
        Some(EntryCaller {
            subject: "household:M-2".into(),
            role: Role::Household
        })
    );
    assert_eq!(stored[1].decision.reason(), Some("already released"));

    // What was returned is what was stored.
    assert_eq!(all_entries(&log).await, stored);

    let report = log.verify(None).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries_checked, 5);
    let head = report.head.expect("head");
    assert_eq!(head.sequence, 5);
    assert_eq!(head.entry_hash, stored[4].entry_hash);
    assert_eq!(head.key_id.as_deref(), Some(db.key.key_id()));
    head.check_signature(&db.key.verifying_key())
        .expect("signed head");

    // The head is a valid anchor for the next verification.
    let anchored = log.verify(Some(head.anchor())).await.expect("verify");
    assert!(anchored.is_intact(), "{anchored:?}");
    let empty_anchor = Anchor {
        sequence: 0,
        entry_hash: EntryHash::ZERO,
    };
    assert!(
        log.verify(Some(empty_anchor))
            .await
            .expect("verify")
            .is_intact()
    );
    log.close().await;
}

async fn lists_with_filters_and_pages(db: TestDb) {
    let (log, stored) = log_with_five(&db).await;
    let list = |query: ListQuery| {
        let log = &log;
        async move { log.list(&query).await.expect("list") }
    };
    let sequences = |entries: &[AuditEntry]| entries.iter().map(|e| e.sequence).collect::<Vec<_>>();

    let page = list(ListQuery::default()).await;
    assert_eq!(sequences(&page.entries), [1, 2, 3, 4, 5]);
    assert_eq!(page.next_after_sequence, None);

    let by_meter = list(ListQuery {
        meter_id: Some("M-1".into()),
        ..ListQuery::default()
    })
    .await;
    assert_eq!(sequences(&by_meter.entries), [1, 2, 4]);

    let by_kind = list(ListQuery {
        kind: Some(RequestKind::FORECAST),
        ..ListQuery::default()
    })
    .await;
    assert_eq!(sequences(&by_kind.entries), [5]);

    let both = list(ListQuery {
        meter_id: Some("M-2".into()),
        kind: Some(RequestKind::BILL),
        ..ListQuery::default()
    })
    .await;
    assert_eq!(sequences(&both.entries), [3]);

    // Time range: [recorded_at of 2, recorded_at of 4) holds at least 2 and 3 (timestamps
    // may tie, so entries with equal times come along).
    let from = stored[1].recorded_at;
    let to = stored[3].recorded_at;
    let in_range = list(ListQuery {
        from: Some(from),
        to: Some(to),
        ..ListQuery::default()
    })
    .await;
    assert!(
        in_range
            .entries
            .iter()
            .all(|e| e.recorded_at >= from && e.recorded_at < to)
    );
    if to > stored[2].recorded_at && from < to {
        assert!(sequences(&in_range.entries).contains(&3));
    }
    let none = list(ListQuery {
        from: Some(stored[4].recorded_at + chrono::Duration::seconds(1)),
        ..ListQuery::default()
    })
    .await;
    assert!(none.entries.is_empty());

    // Pages of two.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = list(ListQuery {
            after_sequence: after,
            limit: 2,
            ..ListQuery::default()
        })
        .await;
        assert!(page.entries.len() <= 2);
        seen.extend(sequences(&page.entries));
        match page.next_after_sequence {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);

    // Pages combine with filters.
    let first = list(ListQuery {
        meter_id: Some("M-1".into()),
        limit: 2,
        ..ListQuery::default()
    })
    .await;
    assert_eq!(sequences(&first.entries), [1, 2]);
    assert_eq!(first.next_after_sequence, Some(2));
    let second = list(ListQuery {
        meter_id: Some("M-1".into()),
        limit: 2,
        after_sequence: 2,
        ..ListQuery::default()
    })
    .await;
    assert_eq!(sequences(&second.entries), [4]);
    assert_eq!(second.next_after_sequence, None);

    assert!(matches!(
        log.list(&ListQuery {
            limit: 1001,
            ..ListQuery::default()
        })
        .await,
        Err(AuditError::InvalidQuery(_))
    ));
    log.close().await;
}

async fn detects_an_altered_field(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    // Turn the refusal of entry 2 into a grant.
    db.exec("UPDATE audit_entries SET decision = 'granted', reason = NULL WHERE seq = 2")
        .await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 2, |kind| {
        matches!(kind, ProblemKind::EntryHashMismatch { .. })
    });
    assert_eq!(report.problem.as_ref().expect("problem").sequence, Some(2));
    log.close().await;

    // Each column, one at a time, on a fresh log.
    for (sql, row) in [
        ("UPDATE audit_entries SET meter_id = 'M-9' WHERE seq = 4", 4),
        (
            "UPDATE audit_entries SET period = '2007-03' WHERE seq = 1",
            1,
        ),
        (
            "UPDATE audit_entries SET caller_subject = 'admin' WHERE seq = 5",
            5,
        ),
        (
            "UPDATE audit_entries SET caller_role = 'admin' WHERE seq = 3",
            3,
        ),
        (
            "UPDATE audit_entries SET recorded_at_us = recorded_at_us + 1 WHERE seq = 3",
            3,
        ),
        (
            "UPDATE audit_entries SET request_kind = 'forecast' WHERE seq = 1",
            1,
        ),
        ("UPDATE audit_entries SET reason = 'other' WHERE seq = 2", 2),
        (
            "UPDATE audit_entries SET input_digest = NULL WHERE seq = 5",
            5,
        ),
    ] {
        db.exec("DELETE FROM audit_entries").await;
        db.exec(
            "UPDATE audit_head SET last_seq = 0, \
             last_hash = '0000000000000000000000000000000000000000000000000000000000000000', \
             key_id = NULL, signature = NULL",
        )
        .await;
        let (log, _) = log_with_five(&db).await;
        assert!(log.verify(None).await.expect("verify").is_intact());
        db.exec(sql).await;
        let report = log.verify(None).await.expect("verify");
        // caller_role on a row without caller makes it malformed rather than mismatched.
        assert_problem(&report, row, |kind| {
            matches!(
                kind,
                ProblemKind::EntryHashMismatch { .. } | ProblemKind::MalformedRow { .. }
            )
        });
        log.close().await;
    }
}

async fn detects_an_altered_row_with_a_recomputed_hash(db: TestDb) {
    let (log, stored) = log_with_five(&db).await;
    let mut forged = stored[2].clone();
    forged.meter_id = Some("M-9".into());
    let forged = rehashed(forged);
    rewrite_raw(&db, 3, &forged).await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 4, |kind| {
        matches!(kind, ProblemKind::PreviousHashMismatch { expected, stored: s }
            if *expected == forged.entry_hash && *s == stored[2].entry_hash)
    });
    log.close().await;
}

async fn detects_a_deleted_middle_row(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    db.exec("DELETE FROM audit_entries WHERE seq = 3").await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 3, |kind| {
        matches!(
            kind,
            ProblemKind::SequenceGap {
                expected: 3,
                found: 4
            }
        )
    });
    assert!(
        report
            .problem
            .expect("problem")
            .to_string()
            .contains("expected sequence 3, found 4")
    );
    log.close().await;
}

async fn detects_a_deleted_last_row(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    db.exec("DELETE FROM audit_entries WHERE seq = 5").await;
    let report = log.verify(None).await.expect("verify");
    assert_eq!(report.entries_checked, 4);
    assert_problem(&report, 5, |kind| {
        matches!(
            kind,
            ProblemKind::Truncated {
                head_sequence: 5,
                last_sequence: 4
            }
        )
    });
    log.close().await;

    // All rows deleted.
    db.exec("DELETE FROM audit_entries").await;
    let log = db.open().await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 1, |kind| {
        matches!(
            kind,
            ProblemKind::Truncated {
                head_sequence: 5,
                last_sequence: 0
            }
        )
    });
    log.close().await;
}

async fn detects_a_deleted_last_row_with_the_head_rewound(db: TestDb) {
    let (log, stored) = log_with_five(&db).await;
    let head = log.head().await.expect("head");
    db.exec("DELETE FROM audit_entries WHERE seq = 5").await;
    // Point the head at entry 4, keeping the (now wrong) signature.
    set_head_raw(
        &db,
        &SignedHead {
            sequence: 4,
            entry_hash: stored[3].entry_hash,
            ..head
        },
    )
    .await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 0, |kind| {
        matches!(kind, ProblemKind::HeadSignatureInvalid { .. })
    });
    // Removing the signature altogether does not help either.
    db.exec("UPDATE audit_head SET signature = NULL").await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(
        &report,
        0,
        |kind| matches!(kind, ProblemKind::HeadSignatureInvalid { detail } if detail.contains("not signed")),
    );
    db.exec("DELETE FROM audit_head").await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 0, |kind| matches!(kind, ProblemKind::HeadMissing));
    log.close().await;
}

async fn detects_a_row_inserted_past_the_head(db: TestDb) {
    let (log, stored) = log_with_five(&db).await;
    // A well-formed, correctly chained sixth entry, inserted behind the log's back.
    let mut extra = stored[0].clone();
    extra.sequence = 6;
    extra.previous_hash = stored[4].entry_hash;
    extra.recorded_at = stored[4].recorded_at;
    let extra = rehashed(extra);
    insert_raw(&db, &extra).await;
    let report = log.verify(None).await.expect("verify");
    assert_eq!(report.entries_checked, 6);
    assert_problem(&report, 6, |kind| {
        matches!(
            kind,
            ProblemKind::EntriesBeyondHead {
                head_sequence: 5,
                sequence: 6
            }
        )
    });
    log.close().await;
}

async fn detects_a_row_inserted_in_the_middle(db: TestDb) {
    let (log, stored) = log_with_five(&db).await;
    // Make room at 3 by renumbering 3..=5 to 4..=6 (in two steps: the key is unique).
    db.exec("UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 3")
        .await;
    db.exec("UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000")
        .await;
    let mut inserted = stored[0].clone();
    inserted.sequence = 3;
    inserted.previous_hash = stored[1].entry_hash;
    inserted.decision = Decision::Granted;
    inserted.meter_id = Some("M-1".into());
    let inserted = rehashed(inserted);
    insert_raw(&db, &inserted).await;
    let report = log.verify(None).await.expect("verify");
    // Row 3 (the insertion) chains correctly; row 4 (the old entry 3) names entry 2 as its
    // predecessor.
    assert_problem(&report, 4, |kind| {
        matches!(kind, ProblemKind::PreviousHashMismatch { expected, stored: s }
            if *expected == inserted.entry_hash && *s == stored[1].entry_hash)
    });
    log.close().await;
}

async fn detects_reordered_rows(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    // Swap entries 2 and 3.
    db.exec("UPDATE audit_entries SET seq = 1002 WHERE seq = 2")
        .await;
    db.exec("UPDATE audit_entries SET seq = 2 WHERE seq = 3")
        .await;
    db.exec("UPDATE audit_entries SET seq = 3 WHERE seq = 1002")
        .await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 2, |kind| {
        matches!(kind, ProblemKind::PreviousHashMismatch { .. })
    });
    log.close().await;
}

async fn detects_a_rewritten_chain_without_the_key(db: TestDb) {
    let (log, stored) = log_with_five(&db).await;
    let head = log.head().await.expect("head");
    // Rewrite entries 3..=5 consistently (each rehashed and chained) and move the head's hash.
    let mut previous = stored[1].entry_hash;
    let mut last = EntryHash::ZERO;
    for (i, original) in stored.iter().enumerate().skip(2) {
        let mut forged = original.clone();
        forged.meter_id = Some(format!("M-forged-{i}"));
        forged.previous_hash = previous;
        let forged = rehashed(forged);
        rewrite_raw(&db, forged.sequence, &forged).await;
        previous = forged.entry_hash;
        last = forged.entry_hash;
    }
    set_head_raw(
        &db,
        &SignedHead {
            entry_hash: last,
            ..head.clone()
        },
    )
    .await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 0, |kind| {
        matches!(kind, ProblemKind::HeadSignatureInvalid { .. })
    });

    // Keeping the old, validly signed head instead: its hash is not the forged last entry's.
    set_head_raw(&db, &head).await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 5, |kind| {
        matches!(kind, ProblemKind::HeadHashMismatch { sequence: 5, .. })
    });
    log.close().await;
}

async fn detects_a_malformed_row(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    db.exec("UPDATE audit_entries SET decision = 'maybe' WHERE seq = 2")
        .await;
    let report = log.verify(None).await.expect("verify");
    assert_problem(&report, 2, |kind| {
        matches!(kind, ProblemKind::MalformedRow { .. })
    });
    // Listing that row is an error, not a silently skipped entry.
    assert!(matches!(
        log.list(&ListQuery::default()).await,
        Err(AuditError::Corrupt { sequence: 2, .. })
    ));
    log.close().await;
}

async fn anchors_detect_a_rollback(db: TestDb) {
    let log = db.open().await;
    let mut entries = five_entries().into_iter();
    for entry in entries.by_ref().take(3) {
        log.append(entry).await.expect("append");
    }
    let old_head = log.head().await.expect("head");
    for entry in entries {
        log.append(entry).await.expect("append");
    }
    let report = log.verify(None).await.expect("verify");
    let anchor = report.head.expect("head").anchor();
    assert_eq!(anchor.sequence, 5);

    // Roll the database back to its state after entry 3, old signed head included.
    db.exec("DELETE FROM audit_entries WHERE seq > 3").await;
    set_head_raw(&db, &old_head).await;
    // The log alone cannot tell...
    assert!(log.verify(None).await.expect("verify").is_intact());
    // ...the anchor can.
    let report = log.verify(Some(anchor)).await.expect("verify");
    assert_problem(&report, 0, |kind| {
        matches!(kind, ProblemKind::AnchorMismatch { found: None, .. })
    });
    let wrong = Anchor {
        sequence: 2,
        entry_hash: EntryHash([7; 32]),
    };
    let report = log.verify(Some(wrong)).await.expect("verify");
    assert_problem(&report, 0, |kind| {
        matches!(kind, ProblemKind::AnchorMismatch { found: Some(_), .. })
    });
    log.close().await;
}

async fn append_refuses_to_extend_a_broken_chain(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    db.exec("DELETE FROM audit_entries WHERE seq = 5").await;
    let error = log
        .append(NewEntry::new(RequestKind::BILL, Decision::Granted))
        .await
        .expect_err("a truncated log takes no more entries");
    assert!(matches!(error, AuditError::ChainBroken { .. }), "{error:?}");

    // The log is halted now: no append until a restart, even after a repair.
    let error = log
        .append(NewEntry::new(RequestKind::BILL, Decision::Granted))
        .await
        .expect_err("halted");
    assert!(
        matches!(&error, AuditError::Halted { reason } if reason.contains("entry 5")),
        "{error:?}"
    );
    log.close().await;

    // A head signed by someone else is refused too (by a fresh process).
    db.exec("UPDATE audit_head SET signature = NULL").await;
    let log = db.open().await;
    let error = log
        .append(NewEntry::new(RequestKind::BILL, Decision::Granted))
        .await
        .expect_err("an unsigned head takes no more entries");
    assert!(matches!(error, AuditError::ChainBroken { .. }), "{error:?}");
    log.close().await;
}

async fn append_fails_when_the_pool_is_closed(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    log.close().await;
    let error = log
        .append(NewEntry::new(RequestKind::BILL, Decision::Granted))
        .await
        .expect_err("closed");
    assert!(matches!(error, AuditError::Write(_)), "{error:?}");
    assert_eq!(tonic::Status::from(error).code(), tonic::Code::Unavailable);
    // Nothing was half-written.
    let log = db.open().await;
    let report = log.verify(None).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries_checked, 5);
    log.close().await;
}

async fn append_fails_when_the_table_is_gone(db: TestDb) {
    let (log, _) = log_with_five(&db).await;
    db.exec("DROP TABLE audit_entries").await;
    let error = log
        .append(NewEntry::new(RequestKind::BILL, Decision::Granted))
        .await
        .expect_err("no table");
    assert!(
        matches!(error, AuditError::Write(_) | AuditError::ChainBroken { .. }),
        "{error:?}"
    );
    // The head did not move.
    assert_eq!(log.head().await.expect("head").sequence, 5);
    log.close().await;
}

async fn concurrent_appends_form_one_chain(db: TestDb) {
    let first = Arc::new(db.open().await);
    // A second instance on the same database stands for a second process.
    let second = Arc::new(db.open().await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let log = Arc::clone(if i % 2 == 0 { &first } else { &second });
        tasks.push(tokio::spawn(async move {
            log.append(
                NewEntry::new(RequestKind::BILL, Decision::Granted)
                    .caller(&utility())
                    .meter(format!("M-{i}"))
                    .period("2007-01"),
            )
            .await
            .expect("append")
            .sequence
        }));
    }
    let mut sequences = Vec::new();
    for task in tasks {
        sequences.push(task.await.expect("task"));
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=24).collect::<Vec<u64>>());
    let report = first.verify(None).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries_checked, 24);
    first.close().await;
    second.close().await;
}

async fn hostile_strings_are_stored_safely(db: TestDb) {
    let log = db.open().await;
    let hostile_meter = format!("M\0-1\u{1b}[31m{}", "x".repeat(10_000));
    let stored = log
        .append(
            NewEntry::new(RequestKind::BILL, Decision::refused("bad meter id\0"))
                .meter(hostile_meter)
                .period("é".repeat(1000)),
        )
        .await
        .expect("a hostile request is still recorded");
    let meter = stored.meter_id.as_deref().expect("meter");
    assert!(meter.starts_with("M\\u{0}-1\\u{1b}[31m"));
    assert!(meter.contains("…[truncated"));
    assert!(stored.period.as_deref().expect("period").len() < 300);
    assert_eq!(stored.decision.reason(), Some("bad meter id\\u{0}"));
    assert_eq!(all_entries(&log).await, vec![stored]);
    assert!(log.verify(None).await.expect("verify").is_intact());
    log.close().await;
}

async fn the_log_persists_and_belongs_to_its_key(db: TestDb) {
    let (log, stored) = log_with_five(&db).await;
    log.close().await;
    let reopened = db.open().await;
    assert_eq!(all_entries(&reopened).await, stored);
    let sixth = reopened
        .append(NewEntry::new(RequestKind::ANOMALY, Decision::Granted).meter("M-3"))
        .await
        .expect("append");
    assert_eq!(sixth.sequence, 6);
    assert_eq!(sixth.previous_hash, stored[4].entry_hash);
    assert!(reopened.verify(None).await.expect("verify").is_intact());
    reopened.close().await;

    // Another key (a regenerated key file) cannot vouch for this log.
    let stranger = AuditLog::connect(&db.url, Arc::new(JwtSigningKey::generate().expect("key")))
        .await
        .expect("open");
    let report = stranger.verify(None).await.expect("verify");
    assert_problem(
        &report,
        0,
        |kind| matches!(kind, ProblemKind::HeadSignatureInvalid { detail } if detail.contains("signing key")),
    );
    // The failed verification halted the stranger's appends.
    assert!(matches!(
        stranger
            .append(NewEntry::new(RequestKind::BILL, Decision::Granted))
            .await,
        Err(AuditError::Halted { .. })
    ));
    stranger.close().await;
}

// ---------------------------------------------------------------------------------------------
// SQLite only

#[tokio::test]
async fn sqlite_creates_the_file_and_its_directory() {
    let db = TestDb::sqlite();
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    assert!(!std::path::Path::new(&path).exists());
    let log = db.open().await;
    assert!(std::path::Path::new(&path).is_file());
    log.close().await;
}

#[tokio::test]
async fn sqlite_read_only_database_refuses_appends() {
    let db = TestDb::sqlite();
    let (log, _) = log_with_five(&db).await;
    log.close().await;
    let read_only = format!("{}?mode=ro", db.url);
    match AuditLog::connect(&read_only, Arc::clone(&db.key)).await {
        // Opening may already fail...
        Err(error) => eprintln!("read-only open refused: {error}"),
        // ...otherwise appending must.
        Ok(log) => {
            assert!(log.verify(None).await.expect("verify").is_intact());
            let error = log
                .append(NewEntry::new(RequestKind::BILL, Decision::Granted))
                .await
                .expect_err("read-only");
            assert!(matches!(error, AuditError::Write(_)), "{error:?}");
            log.close().await;
        }
    }
    let log = db.open().await;
    assert_eq!(log.verify(None).await.expect("verify").entries_checked, 5);
    log.close().await;
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let key = Arc::new(JwtSigningKey::generate().expect("key"));
    for url in ["mysql://localhost/x", "audit.db", "http://x"] {
        assert!(matches!(
            AuditLog::connect(url, Arc::clone(&key)).await,
            Err(AuditError::UnsupportedUrl { .. })
        ));
    }
    let error = AuditLog::connect("postgres://u:secret@127.0.0.1:1/x", key)
        .await
        .expect_err("nothing listens on port 1");
    assert!(!error.to_string().contains("secret"), "{error}");
}
