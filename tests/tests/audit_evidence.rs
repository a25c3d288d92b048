//! The audit log as evidence, across real processes: the key authority (`key-authority`), an
//! auditor with only its public key (`seer audit verify`), and tampering with the log's
//! SQLite file behind their backs. Each tampering is named by the auditor from public material
//! and stops the key authority from releasing (its appends halt, or its start is refused).
//!
//! Entries are made cheaply: a `Release.ReleaseBills` call without a token is recorded as a
//! refusal. (A deleted `releases` row is covered by `key-authority/tests/audit_anchor.rs` and
//! the release policy's fallback to the chain; it needs a granted bill, which needs meters.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use seer_proto::v1;
use seer_proto::v1::release_client::ReleaseClient;
use seer_tests::{ServerProcess, bin_path, runtime};
use sqlx::Row as _;

/// A key authority's files in a temporary directory, and the process when it runs.
struct Authority {
    dir: tempfile::TempDir,
    process: Option<ServerProcess>,
}

impl Authority {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            process: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn env(&self) -> Vec<(String, String)> {
        let var = |k: &str, v: String| (format!("SEER_KEY_AUTHORITY__{k}"), v);
        vec![
            var("SERVER__PORT", "0".into()),
            var("KEYS__DIR", self.path("keys").display().to_string()),
            var(
                "AUTH__SIGNING_KEY_FILE",
                self.path("jwt.pem").display().to_string(),
            ),
            var(
                "AUDIT__DATABASE_URL",
                format!("sqlite:{}", self.path("audit.db").display()),
            ),
            var("LOG__FILTER", "warn".into()),
        ]
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.process = Some(ServerProcess::spawn_with("key-authority", &self.env())?);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().expect("kill");
        }
    }

    fn uri(&self) -> String {
        self.process.as_ref().expect("running").uri()
    }

    fn command(&self, args: &[&str]) -> Output {
        let mut env = self.env();
        env.retain(|(k, _)| !k.ends_with("__PORT"));
        Command::new(bin_path("key-authority").expect("binary"))
            .args(args)
            .envs(env)
            .output()
            .expect("run key-authority")
    }

    fn auditor_token(&self) -> String {
        let out = self.command(&["issue-token", "--role", "auditor", "--lifetime", "1h"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    /// `seer audit verify` with the auditor's saved anchor; the process output.
    fn audit_verify(&self) -> Output {
        let pem = self.path("ka-public.pem");
        if !pem.exists() {
            let out = self.command(&["jwt-public-key"]);
            assert!(out.status.success(), "{out:?}");
            std::fs::write(&pem, out.stdout).expect("write the public key");
        }
        let mut env = self.env();
        env.retain(|(k, _)| !k.ends_with("__PORT"));
        let fingerprints = seer_tests::pki::key_authority_fingerprints(&env).expect("fingerprints");
        Command::new(bin_path("seer").expect("binary"))
            .args(["audit", "verify", "--key-authority", &self.uri(), "--token"])
            .arg(self.auditor_token())
            .arg("--public-key")
            .arg(&pem)
            .arg("--public-key-sha256")
            .arg(&fingerprints.jwt_public_key_sha256)
            .arg("--anchor")
            .arg(self.path("auditor-anchor"))
            .output()
            .expect("run seer audit verify")
    }

    /// A release request with a household's token (a role that may not ask): recorded as a
    /// refusal of its own entry (a request without a token would only be counted in an
    /// aggregate, see `bounded_work.rs`). The gRPC code.
    fn request_release(&self) -> tonic::Code {
        let uri = self.uri();
        let out = self.command(&[
            "issue-token",
            "--role",
            "household",
            "--meter-id",
            "M-1",
            "--lifetime",
            "1h",
        ]);
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8(out.stdout).expect("utf-8");
        runtime().expect("runtime").block_on(async move {
            let mut client = ReleaseClient::connect(uri).await.expect("connect");
            let mut request = tonic::Request::new(v1::ReleaseBillsRequest {
                period: "2007-01".into(),
                billing_group: 0,
                inputs: vec![v1::BillInput {
                    meter_id: "M-1".into(),
                    sequence: 1,
                    billing_lane: vec![1, 2, 3],
                }],
                result: Vec::new(),
                cells: Vec::new(),
            });
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {}", token.trim()).parse().expect("header"),
            );
            let status = client
                .release_bills(request)
                .await
                .expect_err("a household's token, no release");
            status.code()
        })
    }

    fn sql(&self, statements: &str) {
        let url = format!("sqlite://{}", self.path("audit.db").display());
        let statements = statements.to_owned();
        runtime().expect("runtime").block_on(async move {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url)
                .await
                .expect("open the database");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statements))
                .execute(&pool)
                .await
                .expect("tamper");
            pool.close().await;
        });
    }

    fn head_row(&self) -> String {
        let url = format!("sqlite://{}", self.path("audit.db").display());
        runtime().expect("runtime").block_on(async move {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url)
                .await
                .expect("open the database");
            let row = sqlx::query("SELECT last_seq, last_hash, key_id, signature FROM audit_head")
                .fetch_one(&pool)
                .await
                .expect("head");
            let update = format!(
                "UPDATE audit_head SET last_seq = {}, last_hash = '{}', key_id = '{}', \
                 signature = '{}'",
                row.get::<i64, _>(0),
                row.get::<String, _>(1),
                row.get::<String, _>(2),
                row.get::<String, _>(3)
            );
            pool.close().await;
            update
        })
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_verified(authority: &Authority, head: u64) {
    let out = authority.audit_verify();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["head_sequence"], head, "{report}");
}

fn start_refusal(authority: &mut Authority) -> String {
    let error = authority
        .start()
        .expect_err("the key authority must refuse to start");
    format!("{error:#}")
}

fn copy_database(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in ["audit.db", "audit.db-wal"] {
        let source = from.join(name);
        if source.exists() {
            std::fs::copy(&source, to.join(name)).expect("copy");
        }
    }
    let _ = std::fs::remove_file(to.join("audit.db-shm"));
}

#[test]
fn an_edited_middle_entry_is_named_by_the_auditor_and_stops_releases() {
    let mut authority = Authority::new();
    authority.start().expect("start");
    for _ in 0..3 {
        assert_eq!(authority.request_release(), tonic::Code::PermissionDenied);
    }
    assert_verified(&authority, 3);

    authority.sql("UPDATE audit_entries SET meter_id = 'M-9' WHERE seq = 2");
    let out = authority.audit_verify();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("entry 2: stored hash")
            && stderr(&out).contains("a field was altered"),
        "{}",
        stderr(&out)
    );
    // The key authority's own verification (run for the auditor) halted its appends.
    assert_eq!(authority.request_release(), tonic::Code::FailedPrecondition);
    authority.stop();
    let refusal = start_refusal(&mut authority);
    assert!(
        refusal.contains("the audit log is damaged") && refusal.contains("sequence 2"),
        "{refusal}"
    );
}

#[test]
fn a_rolled_back_log_is_refused_and_named_by_the_auditor() {
    let mut authority = Authority::new();
    authority.start().expect("start");
    for _ in 0..2 {
        authority.request_release();
    }
    authority.stop();
    let backup = authority.path("backup");
    copy_database(authority.dir.path(), &backup);
    authority.start().expect("restart");
    for _ in 0..2 {
        authority.request_release();
    }
    assert_verified(&authority, 4);
    authority.stop();

    // The old database file copied over the current one.
    copy_database(&backup, authority.dir.path());
    let refusal = start_refusal(&mut authority);
    assert!(
        refusal.contains("ends at sequence 2")
            && refusal.contains("anchor records sequence 4")
            && refusal.contains("rolled back"),
        "{refusal}"
    );

    // Even with the key authority's anchor removed and the old log adopted deliberately, the
    // auditor's saved anchor names the rollback.
    std::fs::remove_file(authority.path("audit-anchor")).expect("remove the anchor");
    let refusal = start_refusal(&mut authority);
    assert!(refusal.contains("no anchor file"), "{refusal}");
    let out = authority.command(&["init-audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    authority.start().expect("start after init-audit");
    let out = authority.audit_verify();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "rolled back: the saved anchor records sequence 4, the log's \
                                signed head is at 2"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_rollback_while_running_halts_releases() {
    let mut authority = Authority::new();
    authority.start().expect("start");
    authority.request_release();
    let old_head = authority.head_row();
    authority.request_release();
    authority.request_release();
    assert_verified(&authority, 3);
    authority.sql(&format!(
        "DELETE FROM audit_entries WHERE seq > 1; {old_head}"
    ));
    let out = authority.audit_verify();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rolled back: the saved anchor records sequence 3"),
        "{}",
        stderr(&out)
    );
    // The next append sees the head behind the anchor; every later one is refused.
    let first = authority.request_release();
    assert!(
        matches!(
            first,
            tonic::Code::Internal | tonic::Code::FailedPrecondition
        ),
        "{first:?}"
    );
    assert_eq!(authority.request_release(), tonic::Code::FailedPrecondition);
    authority.stop();
    let refusal = start_refusal(&mut authority);
    assert!(refusal.contains("rolled back"), "{refusal}");
}

#[test]
fn a_deleted_log_is_refused_and_a_replacement_is_named_by_the_auditor() {
    let mut authority = Authority::new();
    authority.start().expect("start");
    for _ in 0..3 {
        authority.request_release();
    }
    assert_verified(&authority, 3);
    authority.stop();
    for name in ["audit.db", "audit.db-wal", "audit.db-shm"] {
        let _ = std::fs::remove_file(authority.path(name));
    }
    let refusal = start_refusal(&mut authority);
    assert!(
        refusal.contains("the audit log is empty")
            && refusal.contains("records sequence 3")
            && refusal.contains("init-audit"),
        "{refusal}"
    );
    // init-audit does not adopt a new log while the anchor exists.
    let out = authority.command(&["init-audit"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the audit log is empty"),
        "{}",
        stderr(&out)
    );

    // The anchor removed too and a new log started deliberately: the auditor names it.
    std::fs::remove_file(authority.path("audit-anchor")).expect("remove the anchor");
    let out = authority.command(&["init-audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    authority.start().expect("start the new log");
    let out = authority.audit_verify();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "rolled back: the saved anchor records sequence 3, the log's \
                                signed head is at 0"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_audit_database_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut authority = Authority::new();
    authority.start().expect("start");
    authority.request_release();
    for name in ["audit.db", "audit.db-wal", "audit-anchor", "jwt.pem"] {
        let path = authority.path(name);
        if path.exists() {
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{name} has mode {:o}", mode & 0o777);
        }
    }
    assert!(authority.path("audit.db").exists());
}

#[test]
fn a_deleted_release_row_is_named_by_the_auditor_and_stops_releases() {
    use seer_tests::{Deployment, DeploymentOptions};
    const METER: &str = "AUD-0000";
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let household = deployment.token("household", Some(METER)).expect("token");
    deployment
        .meter(METER, "synthetic:41:0")
        .token(&household)
        .args(["--from", "2024-01-01", "--until", "2024-02-01"])
        .args(["--batch-days", "7", "--max-attempts", "3"])
        .run()
        .expect("the meter uploads January");
    let utility = deployment.token("utility", None).expect("token");
    let report = deployment.bill("2024-01", 0, &utility).expect("bill");
    assert_eq!(
        report["released"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );

    let verify = || {
        Command::new(bin_path("seer").expect("binary"))
            .args(["audit", "verify", "--key-authority"])
            .arg(deployment.authority().uri())
            .arg("--token")
            .arg(deployment.token("auditor", None).expect("token"))
            .arg("--public-key")
            .arg(deployment.dir().join("ka-jwt-public.pem"))
            .arg("--public-key-sha256")
            .arg(&deployment.fingerprints().jwt_public_key_sha256)
            .arg("--anchor")
            .arg(deployment.dir().join("auditor-anchor"))
            .envs(seer_tests::pki::auditor_env("auditor").expect("auditor certificate"))
            .output()
            .expect("run seer audit verify")
    };
    let out = verify();
    assert!(out.status.success(), "{}", stderr(&out));

    // The release record deleted behind the key authority's back.
    let database = deployment.dir().join("ka/audit.db");
    runtime().expect("runtime").block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&format!("sqlite://{}", database.display()))
            .await
            .expect("open");
        let deleted = sqlx::query("DELETE FROM releases WHERE meter_id = $1")
            .bind(METER)
            .execute(&pool)
            .await
            .expect("delete");
        assert_eq!(deleted.rows_affected(), 1);
        pool.close().await;
    });
    let out = verify();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("AUDIT_PROBLEM_KIND_RELEASE_MISSING")
            && stderr(&out).contains(&format!(
                "meter {METER} and period 2024-01 has no releases row"
            )),
        "{}",
        stderr(&out)
    );
    // The damage halted the key authority: nothing more is released or recorded (asked by
    // the utility, so that the request reaches the release policy).
    let uri = deployment.authority().uri();
    let utility = deployment.token("utility", None).expect("token");
    let code = runtime().expect("runtime").block_on(async move {
        // Over mutual TLS, with the test process's (the utility's) certificate.
        let channel = seer_tls::endpoint(&uri)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = ReleaseClient::new(channel);
        let mut request = tonic::Request::new(v1::ReleaseBillsRequest {
            period: "2024-01".into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {utility}").parse().expect("header"),
        );
        client
            .release_bills(request)
            .await
            .expect_err("halted")
            .code()
    });
    assert_eq!(code, tonic::Code::FailedPrecondition);
}
