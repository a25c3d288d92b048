//! The audit log as evidence, on SQLite and PostgreSQL: the anchor file outside the database,
//! the start-up refusals (log deleted, rolled back, damaged, anchor missing), the halt of
//! appends after an integrity failure, and the release tables bound to the chain.
//!
//! PostgreSQL as in `audit.rs` (`SEER_TEST_POSTGRES_URL`, else the local server; skipped with
//! a note when none runs, except under `CI=true`).

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use key_authority::audit::{
    AnchorFile, AuditError, AuditLog, Decision, EmptyLog, NewEntry, ProblemKind, RequestKind,
    StartupProblem,
};
use key_authority::auth::JwtSigningKey;
use seer_service::testing::{PostgresDatabase, postgres_admin_url};
use sqlx::{AnyPool, Row as _};

/// One fresh database of either backend, the log's key and the anchor file's directory.
struct TestDb {
    url: String,
    key: Arc<JwtSigningKey>,
    dir: tempfile::TempDir,
    _postgres: Option<PostgresDatabase>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            url: format!("sqlite://{}", dir.path().join("audit.db").display()),
            key: Arc::new(JwtSigningKey::generate().expect("key")),
            dir,
            _postgres: None,
        }
    }

    async fn postgres() -> Option<Self> {
        let admin_url = postgres_admin_url("audit_anchor").await?;
        let database = PostgresDatabase::create(&admin_url, "seer_ka_anchor").await;
        Some(Self {
            url: database.url().to_owned(),
            key: Arc::new(JwtSigningKey::generate().expect("key")),
            dir: tempfile::tempdir().expect("tempdir"),
            _postgres: Some(database),
        })
    }

    /// A second, empty database of the same backend (the log "deleted"), same key and anchor.
    async fn replacement(&self) -> Self {
        let mut other = if self._postgres.is_some() {
            Self::postgres().await.expect("postgres available")
        } else {
            Self::sqlite()
        };
        other.key = Arc::clone(&self.key);
        other.dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(self.anchor(), other.anchor()).expect("copy the anchor");
        other
    }

    fn anchor(&self) -> PathBuf {
        self.dir.path().join("audit-anchor")
    }

    async fn open(&self, empty: EmptyLog) -> Result<AuditLog, AuditError> {
        AuditLog::open_anchored(&self.url, Arc::clone(&self.key), &self.anchor(), empty).await
    }

    async fn exec(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&self.url).await.expect("raw connection");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .expect(sql);
        pool.close().await;
    }

    async fn head_row(&self) -> (i64, String, String, String) {
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&self.url).await.expect("raw connection");
        let row = sqlx::query("SELECT last_seq, last_hash, key_id, signature FROM audit_head")
            .fetch_one(&pool)
            .await
            .expect("head");
        let head = (
            row.get(0),
            row.get::<String, _>(1),
            row.get::<String, _>(2),
            row.get::<String, _>(3),
        );
        pool.close().await;
        head
    }
}

backend_suite!(
    a_new_deployment_initializes_and_anchors_every_append,
    an_empty_log_beside_key_material_is_refused,
    a_deleted_log_is_refused,
    a_rolled_back_log_is_refused,
    an_edited_middle_entry_is_refused_and_halts_appends,
    a_head_ahead_of_the_anchor_is_accepted,
    a_log_without_anchor_is_adopted_only_by_init_audit,
    a_deleted_release_row_is_detected_and_still_counts,
    a_rollback_while_running_halts_appends,
);

fn bill(meter: &str, period: &str) -> NewEntry {
    NewEntry::new(RequestKind::BILL, Decision::refused("test entry"))
        .meter(meter)
        .period(period)
}

async fn append_n(log: &AuditLog, n: usize) {
    for i in 0..n {
        log.append(bill(&format!("M-{i}"), "2007-01"))
            .await
            .expect("append");
    }
}

fn anchored_sequence(db: &TestDb) -> u64 {
    AnchorFile::new(db.anchor())
        .read(&db.key.verifying_key())
        .expect("read anchor")
        .expect("anchor exists")
        .sequence
}

fn refusal(result: Result<AuditLog, AuditError>) -> StartupProblem {
    match result {
        Err(AuditError::StartRefused { problem }) => problem,
        Err(other) => panic!("expected a start refusal, got {other:?}"),
        Ok(_) => panic!("expected a start refusal, the log opened"),
    }
}

async fn a_new_deployment_initializes_and_anchors_every_append(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    assert_eq!(anchored_sequence(&db), 0);
    append_n(&log, 3).await;
    assert_eq!(anchored_sequence(&db), 3);
    assert_eq!(log.anchored().expect("anchored").sequence, 3);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(db.anchor())
            .expect("anchor")
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    log.close().await;
    // A restart with everything in place works.
    let log = db
        .open(EmptyLog::Refuse { evidence: "keys" })
        .await
        .expect("restart");
    assert!(log.verify(None).await.expect("verify").is_intact());
    log.close().await;
}

async fn an_empty_log_beside_key_material_is_refused(db: TestDb) {
    let problem = refusal(
        db.open(EmptyLog::Refuse {
            evidence: "the key store holds keys",
        })
        .await,
    );
    assert!(
        matches!(
            &problem,
            StartupProblem::LogMissing {
                anchor_sequence: None,
                evidence
            } if evidence.contains("key store")
        ),
        "{problem:?}"
    );
    assert!(problem.to_string().contains("init-audit"), "{problem}");
    // The operator's explicit init-audit starts it; then the start succeeds.
    let anchor = AuditLog::init_audit(&db.url, Arc::clone(&db.key), &db.anchor())
        .await
        .expect("init-audit");
    assert_eq!(anchor.sequence, 0);
    db.open(EmptyLog::Refuse { evidence: "keys" })
        .await
        .expect("start after init-audit")
        .close()
        .await;
}

async fn a_deleted_log_is_refused(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    append_n(&log, 4).await;
    log.close().await;
    // The database is gone (a new, empty one in its place); the anchor remains.
    let replaced = db.replacement().await;
    for empty in [EmptyLog::Initialize, EmptyLog::Refuse { evidence: "keys" }] {
        let problem = refusal(replaced.open(empty).await);
        assert!(
            matches!(
                problem,
                StartupProblem::LogMissing {
                    anchor_sequence: Some(4),
                    ..
                }
            ),
            "{problem:?}"
        );
    }
    // init-audit does not adopt a new log while the anchor exists.
    let error = AuditLog::init_audit(&replaced.url, Arc::clone(&db.key), &replaced.anchor())
        .await
        .expect_err("init-audit refuses");
    assert!(
        matches!(
            error,
            AuditError::StartRefused {
                problem: StartupProblem::LogMissing { .. }
            }
        ),
        "{error:?}"
    );
}

async fn a_rolled_back_log_is_refused(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    append_n(&log, 2).await;
    let (seq, hash, key_id, signature) = db.head_row().await;
    append_n(&log, 3).await;
    log.close().await;
    // An old backup restored: entries 3..5 gone, the old (validly signed) head back.
    db.exec(&format!(
        "DELETE FROM audit_entries WHERE seq > 2; UPDATE audit_head SET last_seq = {seq}, \
         last_hash = '{hash}', key_id = '{key_id}', signature = '{signature}'"
    ))
    .await;
    // The database alone is consistent...
    let plain = AuditLog::connect(&db.url, Arc::clone(&db.key))
        .await
        .expect("open");
    assert!(plain.verify(None).await.expect("verify").is_intact());
    plain.close().await;
    // ...the anchor is not.
    let problem = refusal(db.open(EmptyLog::Initialize).await);
    assert_eq!(
        problem,
        StartupProblem::RolledBack {
            anchor_sequence: 5,
            head_sequence: 2
        }
    );
}

async fn an_edited_middle_entry_is_refused_and_halts_appends(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    append_n(&log, 4).await;
    db.exec("UPDATE audit_entries SET meter_id = 'M-X' WHERE seq = 2")
        .await;
    // The running key authority: a verification finds it and halts appends.
    let report = log.verify(None).await.expect("verify");
    let problem = report.problem.expect("damage found");
    assert!(
        matches!(problem.kind, ProblemKind::EntryHashMismatch { .. }),
        "{problem:?}"
    );
    assert_eq!(problem.sequence, Some(2));
    let error = log
        .append(bill("M-9", "2007-02"))
        .await
        .expect_err("halted");
    assert!(
        matches!(&error, AuditError::Halted { reason } if reason.contains("sequence 2")),
        "{error:?}"
    );
    assert_eq!(
        tonic::Status::from(error).code(),
        tonic::Code::FailedPrecondition
    );
    log.close().await;
    // A restart is refused.
    let problem = refusal(db.open(EmptyLog::Initialize).await);
    assert!(
        matches!(&problem, StartupProblem::Damaged { problem } if problem.contains("sequence 2")),
        "{problem:?}"
    );
}

async fn a_head_ahead_of_the_anchor_is_accepted(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    append_n(&log, 3).await;
    let second = log
        .list(&key_authority::audit::ListQuery::default())
        .await
        .expect("list")
        .entries[1]
        .clone();
    log.close().await;
    // A crash after the commit of entry 3, before its anchor write: the anchor says 2.
    AnchorFile::new(db.anchor())
        .write(
            &key_authority::audit::Anchor {
                sequence: 2,
                entry_hash: second.entry_hash,
            },
            &db.key,
        )
        .expect("write anchor");
    let log = db
        .open(EmptyLog::Refuse { evidence: "keys" })
        .await
        .expect("a head ahead of its anchor is accepted");
    assert_eq!(log.anchored().expect("anchored").sequence, 3);
    assert_eq!(anchored_sequence(&db), 3);
    log.close().await;
    // But a head ahead whose anchored entry was rewritten is not.
    AnchorFile::new(db.anchor())
        .write(
            &key_authority::audit::Anchor {
                sequence: 2,
                entry_hash: key_authority::audit::EntryHash([7; 32]),
            },
            &db.key,
        )
        .expect("write anchor");
    let problem = refusal(db.open(EmptyLog::Initialize).await);
    assert!(
        matches!(problem, StartupProblem::AnchorMismatch { sequence: 2, .. }),
        "{problem:?}"
    );
}

async fn a_log_without_anchor_is_adopted_only_by_init_audit(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    append_n(&log, 2).await;
    log.close().await;
    std::fs::remove_file(db.anchor()).expect("remove the anchor");
    let problem = refusal(db.open(EmptyLog::Initialize).await);
    assert_eq!(problem, StartupProblem::AnchorMissing { head_sequence: 2 });
    let anchor = AuditLog::init_audit(&db.url, Arc::clone(&db.key), &db.anchor())
        .await
        .expect("init-audit adopts a verified log");
    assert_eq!(anchor.sequence, 2);
    db.open(EmptyLog::Refuse { evidence: "keys" })
        .await
        .expect("start")
        .close()
        .await;
    // An anchor signed by another key is refused.
    let stranger = JwtSigningKey::generate().expect("key");
    AnchorFile::new(db.anchor())
        .write(&anchor, &stranger)
        .expect("write");
    assert!(matches!(
        db.open(EmptyLog::Initialize).await,
        Err(AuditError::AnchorInvalid { .. })
    ));
}

async fn a_deleted_release_row_is_detected_and_still_counts(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    let granted = log
        .append(
            NewEntry::new(RequestKind::BILL, Decision::Granted)
                .meter("M-1")
                .period("2007-01"),
        )
        .await
        .expect("append");
    db.exec(&format!(
        "INSERT INTO releases (kind, meter_id, period, receipt_sequence, amount, audit_seq, \
         released_at_us) VALUES ('bill', 'M-1', '2007-01', 1, 12345, {}, 0)",
        granted.sequence
    ))
    .await;
    assert!(log.verify(None).await.expect("verify").is_intact());
    assert_eq!(
        log.released_in_chain(&RequestKind::BILL, "M-1", "2007-01")
            .await
            .expect("query"),
        Some(granted.sequence)
    );
    assert_eq!(
        log.released_in_chain(&RequestKind::BILL, "M-1", "2007-02")
            .await
            .expect("query"),
        None
    );

    // A release row naming no granted entry is found too (checked on a copy of the row).
    db.exec(
        "INSERT INTO releases (kind, meter_id, period, receipt_sequence, amount, audit_seq, \
         released_at_us) VALUES ('bill', 'M-2', '2007-01', 1, 1, 1, 0)",
    )
    .await;
    let report = log.verify(None).await.expect("verify");
    assert!(
        matches!(
            report.problem.as_ref().map(|p| &p.kind),
            Some(ProblemKind::ReleaseNotInChain { meter_id, .. }) if meter_id == "M-2"
        ),
        "{report:?}"
    );
    log.close().await;
    db.exec("DELETE FROM releases").await;
    // The row deleted: the restart refuses, and the chain still says "released".
    let problem = refusal(db.open(EmptyLog::Initialize).await);
    assert!(
        matches!(&problem, StartupProblem::Damaged { problem } if problem.contains("releases row")),
        "{problem:?}"
    );
    let plain = AuditLog::connect(&db.url, Arc::clone(&db.key))
        .await
        .expect("open");
    assert_eq!(
        plain
            .released_in_chain(&RequestKind::BILL, "M-1", "2007-01")
            .await
            .expect("query"),
        Some(granted.sequence)
    );
    plain.close().await;
}

async fn a_rollback_while_running_halts_appends(db: TestDb) {
    let log = db.open(EmptyLog::Initialize).await.expect("new log");
    append_n(&log, 2).await;
    let (seq, hash, key_id, signature) = db.head_row().await;
    append_n(&log, 2).await;
    db.exec(&format!(
        "DELETE FROM audit_entries WHERE seq > 2; UPDATE audit_head SET last_seq = {seq}, \
         last_hash = '{hash}', key_id = '{key_id}', signature = '{signature}'"
    ))
    .await;
    let error = log
        .append(bill("M-9", "2007-02"))
        .await
        .expect_err("rolled back");
    assert!(
        matches!(&error, AuditError::ChainBroken { detail } if detail.contains("behind the anchor")),
        "{error:?}"
    );
    let error = log
        .append(bill("M-9", "2007-02"))
        .await
        .expect_err("halted");
    assert!(matches!(error, AuditError::Halted { .. }), "{error:?}");
    assert!(log.halted().is_some());
    log.close().await;
}

/// A small tmpfs mounted for one test (root only), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after a note) when this process may not mount (not root, no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => Some(Self { dir }),
            _ => {
                eprintln!("note: cannot mount a tmpfs here (needs root); disk-full test skipped");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_recovers_from_a_full_disk_without_a_restart() {
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    let key = Arc::new(JwtSigningKey::generate().expect("key"));
    let url = format!("sqlite://{}", disk.dir.path().join("audit.db").display());
    let anchor = disk.dir.path().join("audit-anchor");
    let log = AuditLog::open_anchored(&url, Arc::clone(&key), &anchor, EmptyLog::Initialize)
        .await
        .expect("open");
    // Fill the disk, leaving a little room.
    let filler = disk.dir.path().join("filler");
    let free = {
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0_u8; 4096];
        let mut written = 0_u64;
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {
            written += 4096;
        }
        // Room for a few entries: the disk fills up in the middle of the appends.
        file.set_len(written.saturating_sub(64 * 1024))
            .expect("truncate the filler");
        let _ = file.sync_all();
        written
    };
    assert!(free > 0);
    // Appends with long reasons until the disk is full.
    let reason = "x".repeat(2000);
    let mut appended = 0_u64;
    let mut failure = None;
    for _ in 0..10_000 {
        match log
            .append(NewEntry::new(
                RequestKind::BILL,
                Decision::refused(reason.clone()),
            ))
            .await
        {
            Ok(_) => appended += 1,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let failure = failure.expect("the disk filled up");
    assert!(appended > 0, "some entries fit before the disk was full");
    assert!(
        matches!(failure, AuditError::Write(_)),
        "a full disk is a write error: {failure:?}"
    );
    // Verification is either a correct verdict or an error, never a false one.
    if let Ok(report) = log.verify(None).await {
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.entries_checked, appended);
    }
    // Space is back: the same log appends and verifies without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    let entry = log
        .append(bill("M-1", "2007-03"))
        .await
        .expect("appends again once space is back");
    assert_eq!(entry.sequence, appended + 1);
    let report = log.verify(None).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries_checked, appended + 1);
    assert_eq!(log.halted(), None);
    log.close().await;
}
